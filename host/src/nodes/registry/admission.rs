//! Who may register as a node: a Register for node N is accepted only when the
//! host of its advertised endpoint is one of Kubernetes Node N's addresses
//! (`status.addresses`). Otherwise any process that reaches the Registration
//! port could name itself node N and point the operator's pool calls for N,
//! and the pool states it reports, at an endpoint of its choice.
//!
//! The endpoint is read by the URI parser the node's gRPC client uses
//! ([`endpoint_uri`]), and the host checked is the one the client will
//! connect to; user-info, paths and queries are refused.
//!
//! The gRPC peer address of a Register is logged, and checked only when
//! asked: behind NAT or a Service it need not be the node's own. A
//! Deregister carries nothing but a node name, so its peer address is all
//! that tells who sent it: it is accepted only from the host of the endpoint
//! the node registered (or another of its Node's addresses). Refused, the
//! node still goes offline when its heartbeats stop.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::runtime::reflector::{ObjectRef, Store};

use crate::nodes::client::{endpoint_uri, uri_host};

/// How the check is configured (flags of `msp-operator run`).
#[derive(Clone, Debug)]
pub struct AdmissionSettings {
    /// Check the advertised endpoint against the Node's addresses.
    pub check_endpoint: bool,
    /// Also require the peer address to be one of the Node's addresses.
    pub require_peer: bool,
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        AdmissionSettings {
            check_endpoint: true,
            require_peer: false,
        }
    }
}

/// Why a registration was refused; `kind` is the metric label (bounded:
/// the node name comes from the caller and is never a label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: &'static str,
    pub message: String,
}

impl Refusal {
    /// The gRPC status the caller gets: PERMISSION_DENIED, or UNAVAILABLE
    /// while the operator cannot tell yet (it retries at its next heartbeat).
    pub fn status(&self) -> tonic::Status {
        if self.kind == "not_ready" {
            tonic::Status::unavailable(self.message.clone())
        } else {
            tonic::Status::permission_denied(self.message.clone())
        }
    }
}

/// The check, over the operator's Node cache.
#[derive(Clone)]
pub struct Admission {
    nodes: Store<Node>,
    settings: AdmissionSettings,
    /// When each node's last refusal Event was published (rate limit).
    last_event: Arc<Mutex<HashMap<String, Instant>>>,
}

/// Most one Warning Event per node in this long: a caller retrying every
/// heartbeat must not flood the API server.
pub const EVENT_INTERVAL: Duration = Duration::from_secs(60);

impl Admission {
    pub fn new(nodes: Store<Node>, settings: AdmissionSettings) -> Self {
        Admission {
            nodes,
            settings,
            last_event: Arc::default(),
        }
    }

    /// The addresses of Kubernetes Node `node`, once the Nodes are listed.
    fn addresses_of(&self, node: &str) -> Result<Vec<String>, Refusal> {
        // Until the first complete list, a missing Node proves nothing.
        if !matches!(self.nodes.wait_until_ready().now_or_never(), Some(Ok(()))) {
            return Err(Refusal {
                kind: "not_ready",
                message: "the operator has not listed the Kubernetes Nodes yet; retry".into(),
            });
        }
        let Some(object) = self.nodes.get(&ObjectRef::new(node)) else {
            return Err(Refusal {
                kind: "unknown_node",
                message: format!("there is no Kubernetes Node {node:?}"),
            });
        };
        Ok(node_addresses(&object))
    }

    /// Accepts or refuses a registration of `node` advertising `endpoint`
    /// ("ip:port" or "host:port"), sent from `peer`.
    pub fn check(&self, node: &str, endpoint: &str, peer: Option<IpAddr>) -> Result<(), Refusal> {
        if !self.settings.check_endpoint && !self.settings.require_peer {
            return Ok(());
        }
        let addresses = self.addresses_of(node)?;
        if self.settings.check_endpoint {
            let uri = endpoint_uri(endpoint).map_err(|e| Refusal {
                kind: "bad_endpoint",
                message: e.to_string(),
            })?;
            let host = uri_host(&uri);
            if !addresses.iter().any(|a| same_host(a, host)) {
                return Err(Refusal {
                    kind: "endpoint_not_on_node",
                    message: format!(
                        "endpoint {endpoint} is not on Kubernetes Node {node:?} (its addresses: {})",
                        list(&addresses)
                    ),
                });
            }
        }
        if self.settings.require_peer {
            let from = peer.map(|p| p.to_string()).unwrap_or_default();
            if !addresses.iter().any(|a| same_host(a, &from)) {
                return Err(Refusal {
                    kind: "peer_not_on_node",
                    message: format!(
                        "the registration for {node:?} came from {} and not from one of the Node's addresses ({})",
                        if from.is_empty() {
                            "an unknown address"
                        } else {
                            &from
                        },
                        list(&addresses)
                    ),
                });
            }
        }
        Ok(())
    }

    /// Whether a caller must be one of its Node's addresses.
    pub fn requires_peer(&self) -> bool {
        self.settings.require_peer
    }

    /// Accepts or refuses a Deregister of `node` sent from `peer`, the node
    /// registered at `registered` (its endpoint; None when it is not
    /// registered). Only the node itself may deregister: the peer must be
    /// the host of the registered endpoint or one of the Node's addresses.
    pub fn check_deregister(
        &self,
        node: &str,
        registered: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<(), Refusal> {
        if !self.settings.check_endpoint && !self.settings.require_peer {
            return Ok(());
        }
        let mut addresses = self.addresses_of(node)?;
        if let Some(uri) = registered.and_then(|e| endpoint_uri(e).ok()) {
            addresses.push(uri_host(&uri).to_string());
        }
        let from = peer.map(|p| p.to_string()).unwrap_or_default();
        if addresses.iter().any(|a| same_host(a, &from)) {
            return Ok(());
        }
        Err(Refusal {
            kind: "deregister_not_from_node",
            message: format!(
                "a Deregister of {node:?} is accepted only from the node itself ({}), not from {}",
                list(&addresses),
                if from.is_empty() {
                    "an unknown address"
                } else {
                    &from
                }
            ),
        })
    }

    /// The Node to put a refusal's Warning Event on, when it exists and no
    /// Event about it was published within [`EVENT_INTERVAL`].
    pub fn event_due(&self, node: &str) -> Option<ObjectReference> {
        let object = self.nodes.get(&ObjectRef::new(node))?;
        let now = Instant::now();
        let mut last = self.last_event.lock().unwrap_or_else(|p| p.into_inner());
        if last
            .get(node)
            .is_some_and(|at| now.duration_since(*at) < EVENT_INTERVAL)
        {
            return None;
        }
        last.insert(node.to_string(), now);
        Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: object.metadata.name.clone(),
            uid: object.metadata.uid.clone(),
            ..Default::default()
        })
    }
}

/// The addresses of a Node (InternalIP, ExternalIP, Hostname, ...).
fn node_addresses(node: &Node) -> Vec<String> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(|a| a.iter().map(|a| a.address.clone()).collect())
        .unwrap_or_default()
}

/// Same address (IPs compared as IPs, so `::ffff:10.0.0.1` is `10.0.0.1`),
/// or the same host name, case-insensitively.
fn same_host(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a.to_canonical() == b.to_canonical(),
        _ => !a.is_empty() && a.eq_ignore_ascii_case(b),
    }
}

fn list(addresses: &[String]) -> String {
    if addresses.is_empty() {
        "none".into()
    } else {
        addresses.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};
    use kube::api::ObjectMeta;
    use kube::runtime::reflector;
    use kube::runtime::watcher;

    fn node(name: &str, addresses: &[&str]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            status: Some(NodeStatus {
                addresses: Some(
                    addresses
                        .iter()
                        .map(|a| NodeAddress {
                            address: a.to_string(),
                            type_: "InternalIP".into(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The check over a Node cache holding node1 and node2, its first list
    /// complete when `synced`. The writer is returned: while it lives, the
    /// cache is a live one.
    fn admission(
        settings: AdmissionSettings,
        synced: bool,
    ) -> (Admission, reflector::store::Writer<Node>) {
        let (store, mut writer) = reflector::store::<Node>();
        writer.apply_watcher_event(&watcher::Event::Init);
        for n in [
            node("node1", &["10.0.0.1", "node1.example"]),
            node("node2", &["10.0.0.2"]),
        ] {
            writer.apply_watcher_event(&watcher::Event::InitApply(n));
        }
        if synced {
            writer.apply_watcher_event(&watcher::Event::InitDone);
        }
        (Admission::new(store, settings), writer)
    }

    #[test]
    fn only_an_endpoint_on_the_named_node_is_accepted() {
        let (a, _w) = admission(AdmissionSettings::default(), true);
        assert_eq!(a.check("node1", "10.0.0.1:10124", None), Ok(()));
        assert_eq!(a.check("node1", "node1.example:10124", None), Ok(()));
        assert_eq!(a.check("node1", "[::ffff:10.0.0.1]:10124", None), Ok(()));
        // Another node's address, or none of the cluster's.
        let refused = a
            .check("node1", "10.0.0.2:10124", None)
            .expect_err("other node");
        assert_eq!(refused.kind, "endpoint_not_on_node");
        assert_eq!(refused.status().code(), tonic::Code::PermissionDenied);
        assert!(
            refused.message.contains("10.0.0.1, node1.example"),
            "{refused:?}"
        );
        assert!(a.check("node1", "10.0.0.100:10124", None).is_err());
        let refused = a
            .check("nodeX", "10.0.0.1:10124", None)
            .expect_err("no such node");
        assert_eq!(refused.kind, "unknown_node");
    }

    #[test]
    fn the_host_checked_is_the_one_the_client_connects_to() {
        let (a, _w) = admission(AdmissionSettings::default(), true);
        for endpoint in [
            "[10.0.0.1]@10.0.0.9:10124",
            "10.0.0.1@10.0.0.9:10124",
            "10.0.0.1:10124/x",
            "10.0.0.1:10124?x=1",
        ] {
            let refused = a.check("node1", endpoint, None).expect_err(endpoint);
            assert_eq!(refused.status().code(), tonic::Code::PermissionDenied);
        }
    }

    #[test]
    fn only_the_node_itself_may_deregister() {
        let (a, _w) = admission(AdmissionSettings::default(), true);
        let ip = |s: &str| Some(s.parse().expect("ip"));
        assert_eq!(
            a.check_deregister("node1", Some("10.0.0.1:10124"), ip("10.0.0.1")),
            Ok(())
        );
        // Registered under a host name: the Node's addresses still count.
        assert_eq!(
            a.check_deregister("node1", Some("node1.example:1"), ip("10.0.0.1")),
            Ok(())
        );
        for peer in [ip("10.0.0.2"), ip("192.168.9.9"), None] {
            let refused = a
                .check_deregister("node1", Some("10.0.0.1:10124"), peer)
                .expect_err("a stranger deregistered node1");
            assert_eq!(refused.kind, "deregister_not_from_node");
            assert_eq!(refused.status().code(), tonic::Code::PermissionDenied);
        }
    }

    #[test]
    fn before_the_node_list_the_caller_is_told_to_retry() {
        let (a, _w) = admission(AdmissionSettings::default(), false);
        let refused = a
            .check("node1", "10.0.0.1:10124", None)
            .expect_err("not synced");
        assert_eq!(refused.status().code(), tonic::Code::Unavailable);
    }

    #[test]
    fn the_peer_is_checked_only_when_asked_and_the_check_can_be_turned_off() {
        let peer = Some("192.168.9.9".parse().expect("ip"));
        let (a, _w) = admission(AdmissionSettings::default(), true);
        assert_eq!(a.check("node1", "10.0.0.1:1", peer), Ok(()));
        let (strict, _ws) = admission(
            AdmissionSettings {
                check_endpoint: true,
                require_peer: true,
            },
            true,
        );
        assert_eq!(
            strict
                .check("node1", "10.0.0.1:1", peer)
                .map_err(|r| r.kind),
            Err("peer_not_on_node")
        );
        assert_eq!(
            strict.check("node1", "10.0.0.1:1", Some("10.0.0.1".parse().expect("ip"))),
            Ok(())
        );
        let (off, _wo) = admission(
            AdmissionSettings {
                check_endpoint: false,
                require_peer: false,
            },
            false,
        );
        assert_eq!(off.check("nodeX", "1.2.3.4:1", peer), Ok(()));
    }

    #[test]
    fn refusal_events_are_rate_limited_per_node() {
        let (a, _w) = admission(AdmissionSettings::default(), true);
        assert!(a.event_due("node1").is_some());
        assert!(a.event_due("node1").is_none());
        assert!(a.event_due("node2").is_some());
        assert!(a.event_due("nodeX").is_none(), "no Node to put it on");
    }
}
