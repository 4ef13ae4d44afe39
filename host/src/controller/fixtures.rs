//! What the controller's unit tests build on: a [`Fixture`] context (the
//! native default policy, caches that count as synced, no registered node)
//! and an [`ApiServer`] that stands where kube-apiserver would and lets a
//! test assert the exact request a reconcile sends (method, path, query,
//! body), as controller-rs' fixtures do, instead of only that a write was
//! attempted.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Request, Response};
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::client::Body;
use kube::runtime::events::Recorder;
use tower_test::mock::{self, Handle};

use super::context::{Context, ControllerSettings, Parts};
use super::decide::{DecideError, Decider, NativePolicy};
use crate::metrics::Metrics;
use crate::nodes::registry::{NodeRegistry, RegistrySettings};
use crate::state::cache::PoolCacheWriter;
use crate::state::crd::{MayastorPool, MayastorPoolSpec};
use crate::state::ledger::Ledger;

/// How long a test waits for a request it expects before it fails.
const WAIT: Duration = Duration::from_secs(5);

/// A controller context without a control plane; its writers let a test add
/// MayastorPools and Nodes to the caches.
pub(crate) struct Fixture {
    pub ctx: Context,
    pub pools: PoolCacheWriter,
    pub nodes: kube::runtime::reflector::store::Writer<Node>,
}

impl Fixture {
    /// A context whose client fails every call (it points at a closed
    /// loopback port), for tests of the decision path alone.
    pub(crate) fn new() -> Fixture {
        let config = kube::Config::new("http://127.0.0.1:1".parse().expect("uri"));
        Fixture::with_client(
            Client::try_from(config).expect("client"),
            Arc::new(NativePolicy),
        )
    }

    /// A context whose client talks to the returned [`ApiServer`].
    pub(crate) fn with_api_server() -> (Fixture, ApiServer) {
        Fixture::with_api_server_and(Arc::new(NativePolicy))
    }

    /// The same, with `decider` in place of the native default policy.
    pub(crate) fn with_api_server_and(decider: Arc<dyn Decider>) -> (Fixture, ApiServer) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "mayastor");
        (Fixture::with_client(client, decider), ApiServer(handle))
    }

    fn with_client(client: Client, decider: Arc<dyn Decider>) -> Fixture {
        use kube::runtime::watcher::Event;
        let (pools, mut pool_writer) = crate::state::cache::pool_cache();
        let (nodes, mut node_writer) = kube::runtime::reflector::store();
        pool_writer.apply_watcher_event(&Event::Init);
        pool_writer.apply_watcher_event(&Event::InitDone);
        node_writer.apply_watcher_event(&Event::Init);
        node_writer.apply_watcher_event(&Event::InitDone);
        let recorder = Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: "msp-operator-test".into(),
                instance: None,
            },
        );
        let parts = Parts {
            ledger: Arc::new(Ledger::empty(client.clone(), "mayastor")),
            client,
            pools,
            nodes,
            registry: NodeRegistry::new(RegistrySettings::default()),
            decider,
            recorder,
            metrics: Arc::new(Metrics::new()),
        };
        Fixture {
            ctx: Context::new(parts, ControllerSettings::default()),
            pools: pool_writer,
            nodes: node_writer,
        }
    }
}

/// A test resource: `p` in namespace `mayastor` with uid `u1`, on `node`,
/// disk `/dev/loop0`, no status yet.
pub(crate) fn pool(node: &str) -> MayastorPool {
    let mut p = MayastorPool::new(
        "p",
        MayastorPoolSpec {
            node: node.into(),
            disks: vec!["/dev/loop0".into()],
        },
    );
    p.metadata.namespace = Some("mayastor".into());
    p.metadata.uid = Some("u1".into());
    p.metadata.resource_version = Some("1".into());
    p
}

/// What [`ApiServer::serve`] answers: a ledger write its ConfigMap,
/// anything else an empty object.
pub(crate) fn default_reply(sent: &Sent) -> serde_json::Value {
    if sent.path.contains("/configmaps/") {
        let name = sent.path.rsplit('/').next().unwrap_or_default();
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "mayastor"}})
    } else {
        serde_json::json!({})
    }
}

/// One request as the API server received it.
#[derive(Debug)]
pub(crate) struct Sent {
    pub method: http::Method,
    pub path: String,
    pub query: String,
    pub body: serde_json::Value,
}

/// The API server's side of the fixture's client.
pub(crate) struct ApiServer(Handle<Request<Body>, Response<Body>>);

impl ApiServer {
    /// The next request the client sends, answered with `reply` (200, JSON).
    /// Fails the test when none comes within a few seconds.
    pub(crate) async fn next(&mut self, reply: serde_json::Value) -> Sent {
        self.next_with(|_| reply).await
    }

    /// The requests the client sends while `work` runs, each answered with
    /// what `reply` makes of it; `work`'s output and the requests in order.
    pub(crate) async fn serve_with<T>(
        &mut self,
        work: impl std::future::Future<Output = T>,
        reply: impl Fn(&Sent) -> serde_json::Value,
    ) -> (T, Vec<Sent>) {
        let mut sent = Vec::new();
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return (out, sent),
                req = self.next_with(&reply) => sent.push(req),
            }
        }
    }

    /// [`Self::serve_with`] answering a ledger write with its ConfigMap and
    /// anything else with an empty object; `seen` is told of each request
    /// before it is answered.
    pub(crate) async fn serve<T>(
        &mut self,
        work: impl std::future::Future<Output = T>,
        seen: impl Fn(&Sent),
    ) -> (T, Vec<Sent>) {
        self.serve_with(work, |sent| {
            seen(sent);
            default_reply(sent)
        })
        .await
    }

    /// The next request, answered with what `reply` makes of it.
    async fn next_with(&mut self, reply: impl FnOnce(&Sent) -> serde_json::Value) -> Sent {
        let (request, respond) = tokio::time::timeout(WAIT, self.0.next_request())
            .await
            .expect("a request within the wait")
            .expect("the client is still there");
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("request body");
        let body = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON body")
        };
        let sent = Sent {
            method: parts.method,
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            body,
        };
        let response = Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Body::from(
                serde_json::to_vec(&reply(&sent)).expect("reply"),
            ))
            .expect("response");
        respond.send_response(response);
        sent
    }
}

/// A policy whose every decision fails, as a trapping module's would.
pub(crate) struct FailingPolicy;

impl Decider for FailingPolicy {
    fn decide<'a>(
        &'a self,
        _: &'a msp_policy_sdk::model::Observation,
    ) -> BoxFuture<'a, Result<msp_policy_sdk::model::Decision, DecideError>> {
        Box::pin(async {
            Err(DecideError {
                kind: "trap",
                message: "wasm trap: unreachable".into(),
            })
        })
    }

    fn active(&self) -> String {
        "failing@0.0.0".into()
    }
}
