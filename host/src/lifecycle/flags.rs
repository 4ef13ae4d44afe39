//! The flags of `msp-operator run` ([`RunArgs`]) and how their durations are
//! written.

use std::net::SocketAddr;
use std::time::Duration;

use crate::controller::ControllerSettings;
use crate::lifecycle::election::ElectionSettings;
use crate::lifecycle::telemetry::LogFormat;
use crate::nodes::registry::RegistrySettings;
use crate::nodes::registry::admission::AdmissionSettings;
use crate::policy::shadow::ShadowSettings;

/// Parses a duration: jiff's friendly format (`500ms`, `10s`, `1m30s`,
/// `2h`) or ISO 8601 (`PT1M30S`), or a bare number of seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"));
    }
    let d: jiff::SignedDuration = s
        .parse()
        .map_err(|e| format!("not a duration: {s:?} ({e})"))?;
    Duration::try_from(d).map_err(|_| format!("{s:?} is negative"))
}

/// A Secret's name: not empty (an empty value must not read as "no trust").
fn non_empty_name(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("must name a Secret; leave the flag out to load policies unsigned".into());
    }
    Ok(s.to_string())
}

/// Flags of `msp-operator run`.
#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// Namespace whose MayastorPools are managed.
    #[arg(long, env = "MSP_NAMESPACE", default_value = "mayastor")]
    pub namespace: String,
    /// The operator's own namespace (ledger ConfigMaps, policy ConfigMap).
    #[arg(long, env = "POD_NAMESPACE", default_value = "mayastor")]
    pub operator_namespace: String,
    /// Address of the v1 Registration gRPC service storage nodes call.
    #[arg(long, alias = "registration-listen", default_value = "0.0.0.0:50051")]
    pub registration_addr: SocketAddr,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, alias = "http-listen", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Heartbeats older than this start a probe; a failed probe makes the node offline.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub node_deadline: Duration,
    /// How often each node's pool list is refreshed.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub node_sync_period: Duration,
    /// Deadline of a ListPools probe.
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    pub probe_timeout: Duration,
    /// Deadline of CreatePool, ImportPool and DestroyPool.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub rpc_timeout: Duration,
    /// How often the ledger is swept for pools of deleted resources (deletions
    /// seen by the watch are swept at once).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub sweep_period: Duration,
    /// Requeue of a pool when nothing asks for an earlier look.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub resync: Duration,
    /// After a start, how long a created pool whose node has not registered
    /// yet keeps its status (nodes re-register within a heartbeat).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub startup_grace: Duration,
    /// Reconciles run at once (0: unbounded).
    #[arg(long, default_value_t = 0)]
    pub concurrency: u16,
    /// ConfigMap (in the operator namespace) holding a custom policy.
    #[arg(long, default_value = "msp-policy")]
    pub policy_configmap: String,
    /// Key of the policy module in that ConfigMap.
    #[arg(long, default_value = "policy.wasm")]
    pub policy_key: String,
    /// Largest policy module accepted, in bytes (a ConfigMap holds at most
    /// 1 MiB, so only a lower value refuses a module that fits one).
    #[arg(long, default_value_t = msp_policy_engine::Limits::default().module_bytes)]
    pub policy_max_bytes: usize,
    /// ConfigMap (in the operator namespace) holding a candidate policy that
    /// decides beside the live one and is never acted upon (shadow mode);
    /// empty: no shadow mode.
    #[arg(long, default_value = "msp-policy-shadow")]
    pub policy_shadow_configmap: String,
    /// Key of the candidate module in that ConfigMap (default: --policy-key).
    #[arg(long)]
    pub policy_shadow_key: Option<String>,
    /// How often the candidate's decisions are summarised in an Event on its
    /// ConfigMap (when it decided anything since the last summary).
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    pub policy_shadow_summary: Duration,
    /// Secret (in the operator namespace) whose entries are the public keys
    /// a policy module must be signed by (each `data` entry one Ed25519 key,
    /// PEM); given, a module whose detached signature (`<key>.sig` in its
    /// ConfigMap) does not verify never decides, and a missing, empty or
    /// unreadable Secret refuses every module. Not given: modules load
    /// unsigned. No value turns the check off once given (empty is refused).
    #[arg(long, value_parser = non_empty_name)]
    pub policy_trust_secret: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Accept a registration as node N only when the host of the endpoint it
    /// advertises is one of Kubernetes Node N's addresses (status.addresses).
    /// Turn off (=false) only where storage nodes advertise addresses their
    /// Node does not list.
    #[arg(long, env = "MSP_CHECK_REGISTRATION_ENDPOINT", default_value_t = true,
        action = clap::ArgAction::Set)]
    pub check_registration_endpoint: bool,
    /// Also require a registration to come from one of the Node's addresses
    /// (the gRPC peer). Off by default: behind NAT or a Service the peer is
    /// not the node's own address.
    #[arg(long, env = "MSP_REQUIRE_REGISTRATION_PEER")]
    pub require_registration_peer: bool,
    /// Name of the Lease (in the operator namespace) the replicas elect a leader on.
    #[arg(long, default_value = "msp-operator")]
    pub lease_name: String,
    /// Holder identity in the Lease: the pod name (downward API), else the
    /// host name and process id.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How long the lease is valid for the other replicas after a renew.
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub lease_duration: Duration,
    /// The leader stops acting when it could not renew for this long
    /// (shorter than the lease duration).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub renew_deadline: Duration,
    /// How often the leader renews and a standby tries to take the lease.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub retry_period: Duration,
    /// The Registration endpoint a standby forwards storage nodes to while
    /// this replica leads ("ip:port"): by default `$POD_IP` and the port of
    /// --registration-addr, else that address when it names a host.
    #[arg(long, env = "MSP_REGISTRATION_ADVERTISE")]
    pub registration_advertise: Option<String>,
}

impl RunArgs {
    /// The node registry's timing.
    pub fn registry_settings(&self) -> RegistrySettings {
        RegistrySettings {
            deadline: self.node_deadline,
            sync_period: self.node_sync_period,
            probe_timeout: self.probe_timeout,
            rpc_timeout: self.rpc_timeout,
            connect_timeout: self.probe_timeout,
        }
    }

    /// Who may register as which node.
    pub fn admission_settings(&self) -> AdmissionSettings {
        AdmissionSettings {
            check_endpoint: self.check_registration_endpoint,
            require_peer: self.require_registration_peer,
        }
    }

    /// Shadow mode's candidate and summaries.
    pub fn shadow_settings(&self) -> ShadowSettings {
        ShadowSettings {
            namespace: self.operator_namespace.clone(),
            configmap: self.policy_shadow_configmap.clone(),
            key: self
                .policy_shadow_key
                .clone()
                .unwrap_or_else(|| self.policy_key.clone()),
            summary: self.policy_shadow_summary,
        }
    }

    /// The controller's timing.
    pub fn controller_settings(&self) -> ControllerSettings {
        ControllerSettings {
            resync: self.resync,
            startup_grace: self.startup_grace,
            namespace: self.namespace.clone(),
            ..Default::default()
        }
    }

    /// The leader election's settings; `registration` is the bound
    /// Registration address (its port when --registration-addr asked for 0).
    pub fn election_settings(&self, registration: SocketAddr) -> Result<ElectionSettings, String> {
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "--renew-deadline ({:?}) must be shorter than --lease-duration ({:?}): the leader must stop acting before another may take the lease",
                self.renew_deadline, self.lease_duration
            ));
        }
        let endpoint =
            self.registration_advertise
                .clone()
                .or_else(|| match std::env::var("POD_IP") {
                    Ok(ip) if !ip.is_empty() => {
                        Some(SocketAddr::new(ip.parse().ok()?, registration.port()).to_string())
                    }
                    _ => (!registration.ip().is_unspecified()).then(|| registration.to_string()),
                });
        Ok(ElectionSettings {
            lease_name: self.lease_name.clone(),
            namespace: self.operator_namespace.clone(),
            identity: self
                .identity
                .clone()
                .filter(|i| !i.is_empty())
                .unwrap_or_else(crate::lifecycle::election::default_identity),
            endpoint,
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
        })
    }

    /// The defaults, with `flags` as on the command line (for tests and the demo).
    pub fn from_flags<I, T>(flags: I) -> Result<RunArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: RunArgs,
        }
        let argv = std::iter::once(std::ffi::OsString::from("run"))
            .chain(flags.into_iter().map(Into::into));
        <Wrapper as clap::Parser>::try_parse_from(argv).map(|w| w.args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("PT1M30S"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn the_renew_deadline_must_be_shorter_than_the_lease() {
        let addr: SocketAddr = "10.0.0.5:50051".parse().expect("addr");
        let args = RunArgs::from_flags(["--identity=op-0"]).expect("defaults");
        let election = args.election_settings(addr).expect("defaults are valid");
        assert_eq!(
            (
                election.lease_duration,
                election.renew_deadline,
                election.retry_period
            ),
            (
                Duration::from_secs(15),
                Duration::from_secs(10),
                Duration::from_secs(2)
            )
        );
        assert_eq!(election.identity, "op-0");
        let args = RunArgs::from_flags(["--lease-duration=5s", "--renew-deadline=5s"])
            .expect("flags parse");
        assert!(args.election_settings(addr).is_err());
    }

    #[test]
    fn a_trust_secret_flag_given_is_never_empty() {
        let args = RunArgs::from_flags(Vec::<String>::new()).expect("defaults");
        assert_eq!(args.policy_trust_secret, None, "unsigned unless asked");
        for empty in ["--policy-trust-secret=", "--policy-trust-secret=  "] {
            assert!(RunArgs::from_flags([empty]).is_err(), "{empty}");
        }
        let args = RunArgs::from_flags(["--policy-trust-secret=msp-policy-trust"]).expect("named");
        assert_eq!(
            args.policy_trust_secret.as_deref(),
            Some("msp-policy-trust")
        );
    }
}
