//! Apply: carries out a plan ([`apply`]; [`deleted`] for the sweep), the one
//! place that writes the ledger and calls the storage node: the ledger's
//! record of a live resource brought up to date ([`remember`]), then the
//! policy's action, after the host's own safety rails, which no policy can
//! turn off:
//! - a pool is destroyed only when the ledger says this operator created it
//!   for a resource uid that no longer exists, never when a live resource
//!   names it (same node and pool name), and never when the node's pool of
//!   that name sits on other disks than the ledger recorded;
//! - a deleted resource's pool is destroyed only when the node lists it
//!   loaded and empty, unless the admin purged it
//!   ([`crate::nodes::data_safety`]); otherwise it is kept, held in the ledger;
//! - nothing is created or imported on a disk another pool claims;
//! - nothing is created on a disk the node reports holding data, or one
//!   it cannot tell about ([`crate::nodes::disk_safety`]);
//! - the ledger entry is written before CreatePool, so a crash in between
//!   leaves a record, never an untracked pool, and before the disk check,
//!   so that the check's answer is at most one round trip old when
//!   CreatePool is sent;
//! - nothing is created or imported on a path that now names another disk
//!   than the one pinned at creation, or while the node's answer cannot
//!   tell ([`crate::nodes::disk_identity`]);
//! - CreatePool and ImportPool carry the pool's uuid (v1): a pool of the
//!   name that the operator did not create, found on the disks, is never
//!   imported as the resource's, only adopted by the admin's annotation;
//!   a destroy touches only the pool of the recorded uuid
//!   ([`crate::nodes::pool_identity`]).

mod deleted;
mod live;

use std::collections::BTreeMap;

use kube::ResourceExt;
use msp_policy_sdk::model::{Action, ErrorKind, OperationError};

use super::context::Context;
use super::error::Error;
use super::plan::Plan;
use crate::nodes::client::{NodeClient, NodeError};
use crate::nodes::registry::PoolUpdate;
use crate::state::crd::MayastorPool;
use crate::state::ledger::{LedgerEntry, LedgerError};

pub use deleted::{deleted, deleted_ref, destroy_refusal};
pub use live::{follow_rename, live, remember};

/// What actuation did.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// No call to the node.
    Nothing,
    /// The action succeeded.
    Done(Action),
    /// The node call failed; the error is recorded as the last operation.
    Failed(Action, OperationError),
    /// A safety rail refused the action; the string says which and why.
    Refused(Action, String),
}

/// The name of an action in logs, metrics and reasons.
pub fn action_name(action: Action) -> &'static str {
    match action {
        Action::None => "none",
        Action::Create => "create",
        Action::Import => "import",
        Action::Destroy => "destroy",
        Action::Retain => "retain",
    }
}

/// A safety rail refused `action`, on either path: counted, logged, and the
/// note that says so returned (for the live pool's event).
pub fn refused(ctx: &Context, action: Action, why: &str) -> String {
    ctx.metrics.rail_refusal(action_name(action), "refused");
    let note = refused_note(action, why);
    tracing::warn!(%note, "safety rail");
    note
}

/// What the reason and the Event of a pool say when a safety rail refused
/// `action` because of `why`.
pub fn refused_note(action: Action, why: &str) -> String {
    format!(
        "the operator refused to {} the pool: {why}",
        action_name(action)
    )
}

/// The client of `node`, or the failed outcome recorded as `uid`'s last
/// operation when the node is not online.
pub(super) fn client_or_failed(
    ctx: &Context,
    node: &str,
    uid: &str,
    action: Action,
) -> Result<NodeClient, Outcome> {
    ctx.registry.client(node).map_err(|err| {
        let error = OperationError {
            kind: ErrorKind::Unavailable,
            message: err.to_string(),
        };
        ctx.operations.record(uid, action, Some(error.clone()));
        Outcome::Failed(action, error)
    })
}

/// Brings the node's cached pool list up to date after an operation, so the
/// next observation sees the pool (or its absence) at once: the reply when
/// the call succeeded, a fresh list when it failed.
pub(super) async fn update_cache<T>(
    ctx: &Context,
    node: &str,
    result: &Result<T, NodeError>,
    update: impl FnOnce(&T) -> PoolUpdate,
) {
    match result {
        Ok(reply) => ctx.registry.apply_update(node, update(reply)),
        Err(_) => {
            if let Err(err) = ctx.registry.refresh(node).await {
                tracing::debug!(%node, error = %err, "pool list refresh after an operation failed");
            }
        }
    }
}

/// Carries out `plan` on `pool`: the ledger's record of the resource brought
/// up to date ([`remember`]), then the decided action. A refusal by a safety
/// rail is counted, logged and said in a Warning Event here; what the
/// reconcile reports of it is [`super::plan::after`]'s.
pub async fn apply(pool: &MayastorPool, plan: &Plan, ctx: &Context) -> Result<Outcome, Error> {
    let outcome = match plan {
        Plan::Wait(_) | Plan::LeaveAlone(_) => Outcome::Nothing,
        // The ledger keeps what it needs of the resource whatever the policy says.
        Plan::PolicyFailed(_) => {
            remember(pool, ctx).await?;
            Outcome::Nothing
        }
        Plan::Act(d) => {
            remember(pool, ctx).await?;
            live(pool, &d.obs, &d.decision, ctx).await?
        }
    };
    if let Outcome::Refused(action, why) = &outcome {
        let note = refused(ctx, *action, why);
        crate::controller::report::publish(pool, ctx, true, "Refused", &note).await;
    }
    Ok(outcome)
}

/// Why a create, an import or a destroy stopped before its end: an outcome
/// (a rail refused, the node is not online, the pool is kept) or an error.
pub(super) enum Stop {
    At(Outcome),
    Error(Error),
}

impl Stop {
    fn refused(action: Action, why: String) -> Stop {
        Stop::At(Outcome::Refused(action, why))
    }

    /// Refused `action` when there is a `why`.
    fn refused_if(action: Action, why: Option<String>) -> Result<(), Stop> {
        why.map_or(Ok(()), |why| Err(Stop::refused(action, why)))
    }
}

impl From<Error> for Stop {
    fn from(err: Error) -> Stop {
        Stop::Error(err)
    }
}

impl From<LedgerError> for Stop {
    fn from(err: LedgerError) -> Stop {
        Stop::Error(err.into())
    }
}

/// The ledger entry of `pool` created on `node` and `disks`, with what the
/// policy will need of its metadata once it is deleted.
pub(crate) fn ledger_entry(pool: &MayastorPool, node: &str, disks: &[String]) -> LedgerEntry {
    let (labels, annotations) = last_seen(pool);
    LedgerEntry {
        pool: pool.name_any(),
        namespace: pool.namespace().unwrap_or_default(),
        uid: pool.uid().unwrap_or_default(),
        node: node.to_string(),
        disks: disks.to_vec(),
        labels,
        annotations,
        ..Default::default()
    }
}

/// What the ledger keeps of `pool`'s labels and annotations (bounded).
pub(super) fn last_seen(
    pool: &MayastorPool,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    msp_policy_sdk::model::last_seen(pool.labels(), pool.annotations())
}

#[cfg(test)]
mod tests {
    use msp_policy_sdk::model::Decision;

    use super::live::other_resources;
    use super::*;
    use crate::controller::observe::{self, takes_over};
    use crate::state::crd::MayastorPoolSpec;

    fn entry() -> LedgerEntry {
        LedgerEntry {
            pool: "p".into(),
            namespace: "mayastor".into(),
            uid: "old".into(),
            node: "n1".into(),
            disks: vec!["/dev/loop0".into()],
            ..Default::default()
        }
    }

    #[test]
    fn never_destroys_a_pool_a_live_resource_names() {
        let mut live = MayastorPool::new(
            "p",
            MayastorPoolSpec {
                node: "n1".into(),
                disks: vec!["/dev/loop0".into()],
            },
        );
        live.metadata.namespace = Some("mayastor".into());
        let live = vec![std::sync::Arc::new(live)];
        assert!(destroy_refusal(&entry(), &live, None).is_some());
        // Same name on another node is another pool.
        let mut other = (*live[0]).clone();
        other.spec.node = "n2".into();
        assert!(destroy_refusal(&entry(), &[std::sync::Arc::new(other)], None).is_none());
    }

    fn live_pool(uid: &str, namespace: &str, disk: &str) -> MayastorPool {
        let mut p = MayastorPool::new(
            "p",
            MayastorPoolSpec {
                node: "n1".into(),
                disks: vec![disk.into()],
            },
        );
        p.metadata.namespace = Some(namespace.into());
        p.metadata.uid = Some(uid.into());
        p
    }

    /// Issue 23 item 2: a ledger entry is never overwritten by another
    /// resource's; only a re-create on the same disks takes the pool over.
    #[test]
    fn another_resources_entry_is_taken_over_only_from_the_same_disks() {
        let old = entry();
        // Re-created in the same namespace on the same disk: takes over.
        let same = live_pool("new", "mayastor", "/dev/loop0");
        assert!(takes_over(&same, &old));
        assert_eq!(other_resources(&same, &old), None);
        // On another disk: waits for the old pool, saying whose it is.
        let elsewhere = live_pool("new", "mayastor", "/dev/loop1");
        assert!(!takes_over(&elsewhere, &old));
        let why = other_resources(&elsewhere, &old).expect("waits");
        assert!(
            why.contains("deleted resource mayastor/p (uid old)"),
            "{why}"
        );
        assert!(why.contains("/dev/loop0"), "{why}");
        // Another namespace's pool of the name is never taken over.
        let other_ns = live_pool("new", "other", "/dev/loop0");
        assert!(!takes_over(&other_ns, &old));
        assert!(other_resources(&other_ns, &old).is_some());
        // Its own entry.
        assert_eq!(
            other_resources(&live_pool("old", "mayastor", "/dev/loop1"), &old),
            None
        );
        // A live resource naming the pool on other disks does not hold back
        // the old pool's destroy (it is waiting for it).
        let arc = std::sync::Arc::new(elsewhere);
        assert!(destroy_refusal(&old, &[arc], None).is_none());
    }

    #[test]
    fn never_destroys_a_same_named_pool_on_other_disks() {
        let other = vec!["/dev/loop9".to_string()];
        assert!(destroy_refusal(&entry(), &[], Some(&other)).is_some());
        let same = vec!["/dev/loop0".to_string()];
        assert!(destroy_refusal(&entry(), &[], Some(&same)).is_none());
        assert!(destroy_refusal(&entry(), &[], None).is_none());
        // The ledger keeps the resource's disk URI; the node reports a path.
        let malloc = LedgerEntry {
            disks: vec!["malloc:///m1?size_mb=16".into()],
            ..entry()
        };
        assert!(destroy_refusal(&malloc, &[], Some(&["/m1".to_string()])).is_none());
        assert!(destroy_refusal(&malloc, &[], Some(&["/m2".to_string()])).is_some());
    }

    /// A storage node that logs the calls it gets into `log` and lists
    /// `devices` as its block devices.
    #[derive(Clone, Default)]
    struct LoggingNode {
        log: std::sync::Arc<std::sync::Mutex<Vec<&'static str>>>,
        devices: std::sync::Arc<std::sync::Mutex<Vec<msp_proto::v1::BlockDevice>>>,
    }

    impl LoggingNode {
        fn push(&self, what: &'static str) {
            self.log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(what);
        }

        fn log(&self) -> Vec<&'static str> {
            self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
        }

        /// The node lists these devices: (kernel name, links).
        fn lists(&self, devices: &[(&str, &[&str])]) {
            *self.devices.lock().unwrap_or_else(|e| e.into_inner()) = devices
                .iter()
                .map(|(name, links)| msp_proto::v1::BlockDevice {
                    devname: name.to_string(),
                    devlinks: links.iter().map(|l| l.to_string()).collect(),
                    size: 131_072,
                    available: true,
                    ..Default::default()
                })
                .collect();
        }
    }

    fn pool_reply(name: String, uuid: Option<String>, disks: Vec<String>) -> msp_proto::v1::Pool {
        msp_proto::v1::Pool {
            uuid: uuid.unwrap_or_default(),
            name,
            disks,
            state: 1,
            ..Default::default()
        }
    }

    #[tonic::async_trait]
    impl msp_proto::v1::host_rpc_server::HostRpc for LoggingNode {
        async fn list_block_devices(
            &self,
            _: tonic::Request<msp_proto::v1::ListBlockDevicesRequest>,
        ) -> Result<tonic::Response<msp_proto::v1::ListBlockDevicesResponse>, tonic::Status>
        {
            self.push("disk check");
            let devices = self
                .devices
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            Ok(tonic::Response::new(
                msp_proto::v1::ListBlockDevicesResponse { devices },
            ))
        }
    }

    #[tonic::async_trait]
    impl msp_proto::v1::pool_rpc_server::PoolRpc for LoggingNode {
        async fn create_pool(
            &self,
            req: tonic::Request<msp_proto::v1::CreatePoolRequest>,
        ) -> Result<tonic::Response<msp_proto::v1::Pool>, tonic::Status> {
            self.push("create");
            let req = req.into_inner();
            Ok(tonic::Response::new(pool_reply(
                req.name, req.uuid, req.disks,
            )))
        }
        async fn destroy_pool(
            &self,
            _: tonic::Request<msp_proto::v1::DestroyPoolRequest>,
        ) -> Result<tonic::Response<()>, tonic::Status> {
            self.push("destroy");
            Err(tonic::Status::unimplemented("destroy"))
        }
        async fn export_pool(
            &self,
            _: tonic::Request<msp_proto::v1::ExportPoolRequest>,
        ) -> Result<tonic::Response<()>, tonic::Status> {
            self.push("export");
            Err(tonic::Status::unimplemented("export"))
        }
        async fn import_pool(
            &self,
            req: tonic::Request<msp_proto::v1::ImportPoolRequest>,
        ) -> Result<tonic::Response<msp_proto::v1::Pool>, tonic::Status> {
            self.push("import");
            let req = req.into_inner();
            Ok(tonic::Response::new(pool_reply(
                req.name, req.uuid, req.disks,
            )))
        }
        async fn list_pools(
            &self,
            _: tonic::Request<msp_proto::v1::ListPoolOptions>,
        ) -> Result<tonic::Response<msp_proto::v1::ListPoolsResponse>, tonic::Status> {
            Ok(tonic::Response::new(Default::default()))
        }
        async fn grow_pool(
            &self,
            _: tonic::Request<msp_proto::v1::GrowPoolRequest>,
        ) -> Result<tonic::Response<msp_proto::v1::GrowPoolResponse>, tonic::Status> {
            self.push("grow");
            Err(tonic::Status::unimplemented("grow"))
        }
    }

    /// A context whose storage node n1 is `node` (v1) and whose API server
    /// is the returned one; the node's server task.
    async fn with_node(
        node: &LoggingNode,
    ) -> (
        Context,
        crate::controller::fixtures::ApiServer,
        tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    ) {
        use crate::controller::fixtures::Fixture;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(msp_proto::v1::host_rpc_server::HostRpcServer::new(
                    node.clone(),
                ))
                .add_service(msp_proto::v1::pool_rpc_server::PoolRpcServer::new(
                    node.clone(),
                ))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let (fx, api) = Fixture::with_api_server();
        fx.ctx
            .registry
            .register(&msp_proto::v1::RegisterRequest {
                id: "n1".into(),
                grpc_endpoint: addr.to_string(),
                api_version: vec![1],
                ..Default::default()
            })
            .expect("registered");
        (fx.ctx, api, server)
    }

    fn decision(action: Action) -> Decision {
        Decision {
            action,
            state: msp_policy_sdk::model::PoolState::Pending,
            reason: String::new(),
            requeue_after_ms: None,
            event: None,
        }
    }

    /// The ledger entry a request wrote for pool p.
    fn entry_written(sent: &crate::controller::fixtures::Sent) -> serde_json::Value {
        let entry = sent.body["data"]["p"].as_str().expect("the entry of p");
        serde_json::from_str(entry).expect("an entry")
    }

    const A: &str = "/dev/disk/by-id/msp-loop-a";
    const B: &str = "/dev/disk/by-id/msp-loop-b";

    /// Issue 23 item 6: the ledger write comes before the disk check, and
    /// the check right before CreatePool, so the check's answer is at most
    /// one round trip old when the node may format (a filesystem made while
    /// a slow ledger write was in flight is seen). Also: the CreatePool
    /// carries the uuid the entry records (item 5); issue 26: the entry pins
    /// the disk as the node listed it before (never by-diskseq), and the
    /// kernel name in the spec is pointed out once, with its link.
    #[tokio::test]
    async fn a_create_pins_records_then_checks_the_disks_then_creates() {
        use crate::controller::fixtures::pool;
        let node = LoggingNode::default();
        node.lists(&[
            ("/dev/loop0", &[A, "/dev/disk/by-diskseq/9"]),
            ("/dev/loop1", &[B]),
        ]);
        let (ctx, mut api, server) = with_node(&node).await;
        let p = pool("n1");
        let obs = observe::observe(&p, &ctx.sources());
        let (outcome, sent) = api
            .serve(live(&p, &obs, &decision(Action::Create), &ctx), |sent| {
                if sent.path.contains("configmaps") {
                    node.push("ledger");
                }
            })
            .await;
        assert_eq!(outcome.expect("no error"), Outcome::Done(Action::Create));
        assert_eq!(
            node.log(),
            vec!["disk check", "ledger", "disk check", "create"]
        );
        let event = sent
            .iter()
            .find(|s| s.path.contains("events"))
            .expect("an Event");
        assert_eq!(event.body["reason"], "KernelDiskName");
        assert_eq!(event.body["type"], "Normal");
        let note = event.body["note"].as_str().expect("a note");
        assert!(note.contains(&format!("/dev/loop0 is {A}")), "{note}");
        let ledger = sent
            .iter()
            .find(|s| s.path.contains("configmaps"))
            .expect("a ledger write");
        assert_eq!(ledger.method, http::Method::PATCH);
        let recorded = entry_written(ledger);
        let uuid = recorded["poolUuid"].as_str().expect("a pool uuid recorded");
        assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{uuid}");
        assert_eq!(
            recorded["diskIds"],
            serde_json::json!([{"disk": "/dev/loop0", "devname": "/dev/loop0",
                "links": [A], "size": 131_072 * 512}])
        );
        // Told once: another create of the same resource says nothing more.
        let obs = observe::observe(&p, &ctx.sources());
        let (_, sent) = api
            .serve(live(&p, &obs, &decision(Action::Create), &ctx), |_| {})
            .await;
        assert!(sent.iter().all(|s| !s.path.contains("events")), "{sent:?}");
        // Another new pool of the node a moment later pins from the last
        // listing: one listing, the disk check's, after its ledger write.
        let create = |name: &str, uid: &str, disk: &str| {
            let mut q = pool("n1");
            q.metadata.name = Some(name.into());
            q.metadata.uid = Some(uid.into());
            q.spec.disks = vec![disk.into()];
            q
        };
        let q = create("q", "u2", B);
        let before = node.log().len();
        let obs = observe::observe(&q, &ctx.sources());
        let (outcome, sent) = api
            .serve(live(&q, &obs, &decision(Action::Create), &ctx), |_| {})
            .await;
        assert_eq!(outcome.expect("no error"), Outcome::Done(Action::Create));
        assert_eq!(node.log()[before..], ["disk check", "create"]);
        let recorded: serde_json::Value =
            serde_json::from_str(sent[0].body["data"]["q"].as_str().expect("the entry of q"))
                .expect("an entry");
        assert_eq!(recorded["diskIds"][0]["links"], serde_json::json!([B]));
        // A link udev made after that listing: the disk check's listing
        // shows it, and the pin is recorded again with it before the create.
        const C: &str = "/dev/disk/by-id/msp-loop-c";
        node.lists(&[
            ("/dev/loop0", &[A]),
            ("/dev/loop1", &[B]),
            ("/dev/loop2", &[]),
        ]);
        let obs = observe::observe(&p, &ctx.sources());
        let _ = api
            .serve(live(&p, &obs, &decision(Action::Create), &ctx), |_| {})
            .await;
        node.lists(&[
            ("/dev/loop0", &[A]),
            ("/dev/loop1", &[B]),
            ("/dev/loop2", &[C]),
        ]);
        let r = create("r", "u3", "/dev/loop2");
        let before = node.log().len();
        let obs = observe::observe(&r, &ctx.sources());
        let (outcome, sent) = api
            .serve(live(&r, &obs, &decision(Action::Create), &ctx), |_| {})
            .await;
        assert_eq!(outcome.expect("no error"), Outcome::Done(Action::Create));
        assert_eq!(node.log()[before..], ["disk check", "disk check", "create"]);
        let ledger: Vec<_> = sent
            .iter()
            .filter(|s| s.path.contains("configmaps"))
            .collect();
        assert_eq!(ledger.len(), 2, "{sent:?}");
        let recorded: serde_json::Value = serde_json::from_str(
            ledger[1].body["data"]["r"]
                .as_str()
                .expect("the entry of r"),
        )
        .expect("an entry");
        assert_eq!(recorded["diskIds"][0]["links"], serde_json::json!([C]));
        server.abort();
    }

    /// Records `entry` in the context's ledger.
    async fn seed(
        ctx: &Context,
        api: &mut crate::controller::fixtures::ApiServer,
        entry: LedgerEntry,
    ) {
        let (written, _) = api.serve(ctx.ledger.record(entry, 0), |_| {}).await;
        written.expect("recorded");
    }

    /// The resource p (uid u1) created on /dev/loop0, pinned as A.
    fn pinned() -> LedgerEntry {
        LedgerEntry {
            uid: "u1".into(),
            pool_uuid: Some("6f1c2c1e-5d7a-4b7e-9a51-0d2b8f3e4c10".into()),
            disk_ids: vec![crate::state::ledger::DiskId {
                disk: "/dev/loop0".into(),
                devname: "/dev/loop0".into(),
                links: vec![A.into()],
                ..Default::default()
            }],
            ..entry()
        }
    }

    /// Issue 26 item 2: an import on a path that now names another disk
    /// calls nothing on it and says where the pool's disk is; a node answer
    /// that cannot tell (the link not there yet) is neither the same disk
    /// nor another: nothing called, and the import goes ahead once it tells.
    #[tokio::test]
    async fn an_import_calls_nothing_on_another_disk_nor_while_the_node_cannot_tell() {
        use crate::controller::fixtures::pool;
        let node = LoggingNode::default();
        let (ctx, mut api, server) = with_node(&node).await;
        seed(&ctx, &mut api, pinned()).await;
        let p = pool("n1");
        let import = decision(Action::Import);

        node.lists(&[("/dev/loop0", &[B]), ("/dev/loop5", &[A])]);
        let obs = observe::observe(&p, &ctx.sources());
        let (outcome, sent) = api.serve(live(&p, &obs, &import, &ctx), |_| {}).await;
        let Ok(Outcome::Refused(Action::Import, why)) = outcome else {
            panic!("refused: {outcome:?}");
        };
        assert!(
            why.starts_with(&format!(
                "/dev/loop0 is now another disk ({B}); the pool's disk is at /dev/loop5 ({A})"
            )),
            "{why}"
        );
        assert!(
            why.contains("point spec.disks at a persistent link"),
            "{why}"
        );
        assert!(sent.is_empty(), "nothing written: {sent:?}");
        assert_eq!(node.log(), vec!["disk check"]);

        node.lists(&[("/dev/loop0", &["/dev/disk/by-diskseq/40"])]);
        let (outcome, sent) = api.serve(live(&p, &obs, &import, &ctx), |_| {}).await;
        let Ok(Outcome::Refused(Action::Import, why)) = outcome else {
            panic!("refused: {outcome:?}");
        };
        assert!(
            why.contains("taken neither for the pool's disk nor for another"),
            "{why}"
        );
        assert!(sent.is_empty(), "nothing written: {sent:?}");
        assert_eq!(node.log(), vec!["disk check", "disk check"]);

        node.lists(&[("/dev/loop0", &[A, "/dev/disk/by-diskseq/41"])]);
        let (outcome, _) = api.serve(live(&p, &obs, &import, &ctx), |_| {}).await;
        server.abort();
        assert_eq!(outcome.expect("no error"), Outcome::Done(Action::Import));
        assert_eq!(
            node.log(),
            vec!["disk check", "disk check", "disk check", "import"]
        );
    }

    /// Issue 26 item 3: spec.disks edited from the kernel name to the
    /// disk's persistent link: the ledger and status take the new name
    /// (the old one kept as an alias), an Event says so, and the node is
    /// only asked for its devices. An edit to another disk changes nothing
    /// and is not asked about again.
    #[tokio::test]
    async fn a_path_edit_to_the_same_disk_is_followed_without_touching_the_pool() {
        use crate::controller::fixtures::pool;
        use crate::state::crd::MayastorPoolStatus;
        let node = LoggingNode::default();
        node.lists(&[("/dev/loop0", &[A]), ("/dev/loop5", &[B])]);
        let (ctx, mut api, server) = with_node(&node).await;
        seed(&ctx, &mut api, pinned()).await;
        let mut p = pool("n1");
        p.status = Some(MayastorPoolStatus {
            node: Some("n1".into()),
            disks: Some(vec!["/dev/loop0".into()]),
            ..Default::default()
        });
        p.spec.disks = vec![A.into()];
        let reply = serde_json::to_value(&p).expect("json");
        let (renamed, sent) = api
            .serve_with(follow_rename(&p, &ctx), |sent| {
                if sent.path.ends_with("/status") {
                    reply.clone()
                } else {
                    crate::controller::fixtures::default_reply(sent)
                }
            })
            .await;
        let view = renamed.expect("no error").expect("followed");
        let status = view.status.expect("status");
        assert_eq!(status.disks, Some(vec![A.to_string()]));
        assert_eq!(status.disk_ids, Some(vec![A.to_string()]));
        assert_eq!(node.log(), vec!["disk check"], "no node call that writes");
        let kinds: Vec<&str> = sent
            .iter()
            .map(|s| {
                if s.path.contains("configmaps") {
                    "ledger"
                } else if s.path.ends_with("/status") {
                    "status"
                } else if s.path.contains("events") {
                    "event"
                } else {
                    "other"
                }
            })
            .collect();
        assert_eq!(kinds, vec!["ledger", "status", "event"]);
        let recorded = entry_written(&sent[0]);
        assert_eq!(recorded["disks"], serde_json::json!([A]));
        assert_eq!(
            recorded["diskIds"][0]["aliases"],
            serde_json::json!(["/dev/loop0"])
        );
        assert_eq!(sent[1].body[1]["value"]["disks"], serde_json::json!([A]));
        assert_eq!(sent[2].body["reason"], "DisksRenamed");
        let entry = ctx.ledger.get("n1", "p").expect("entry");
        assert_eq!(
            entry.disk_names(),
            vec![A.to_string(), "/dev/loop0".to_string()]
        );

        // Another disk: nothing written, and not asked again.
        p.spec.disks = vec![B.into()];
        let (renamed, sent) = api.serve(follow_rename(&p, &ctx), |_| {}).await;
        assert!(renamed.expect("no error").is_none());
        assert!(sent.is_empty(), "{sent:?}");
        let (renamed, _) = api.serve(follow_rename(&p, &ctx), |_| {}).await;
        assert!(renamed.expect("no error").is_none());
        server.abort();
        assert_eq!(node.log(), vec!["disk check", "disk check"]);
    }
}
