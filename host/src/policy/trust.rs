//! Which policy modules may decide: with `--policy-trust-secret NAME`, only
//! a module whose detached signature verifies against one of the public
//! keys in Secret NAME (operator namespace; every `data` entry is one key,
//! named by its entry); without the flag, any module that passes the
//! engine's checks, as before (and `/readyz`, the PolicyLoaded Event and
//! `msp_policy_info` say so).
//!
//! Fail closed: with the flag given, a Secret that is missing, empty,
//! unreadable or holds an entry that is not a key refuses every module
//! (the running policy stays), and nothing in the Secret can turn the
//! check off. The Secret is watched: a change re-checks the policy
//! ConfigMap's module (see [`crate::policy::watch`]).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use msp_policy_engine::PolicyError;
use msp_policy_engine::signature::{KeyError, TrustedKeys};
use tokio::sync::watch;

/// What a module must pass before it is loaded.
#[derive(Debug, Clone, PartialEq)]
pub enum Trust {
    /// No trust configured: modules load unsigned.
    Unsigned,
    /// A module must be signed by one of `keys`, from Secret `secret`.
    Keys { secret: String, keys: TrustedKeys },
    /// Trust is configured but its keys cannot be had: every module is
    /// refused with `error` (a `PolicyError::Trust`).
    Closed { secret: String, error: PolicyError },
}

/// The current trust, as the Secret's watch last saw it.
pub type TrustWatch = watch::Receiver<Arc<Trust>>;

/// A trust that is and stays [`Trust::Unsigned`].
pub fn unsigned() -> TrustWatch {
    watch::channel(Arc::new(Trust::Unsigned)).1
}

/// A fixed trust (tests, tools).
pub fn fixed(trust: Trust) -> TrustWatch {
    watch::channel(Arc::new(trust)).1
}

fn closed(secret: &str, cause: &'static str, detail: String) -> Trust {
    Trust::Closed {
        secret: secret.to_string(),
        error: PolicyError::Trust { cause, detail },
    }
}

impl Trust {
    /// The trust Secret `name` holds (`None`: there is none).
    pub fn from_secret(name: &str, secret: Option<&Secret>) -> Trust {
        let Some(secret) = secret else {
            return closed(
                name,
                "trust-secret-missing",
                format!("trust Secret {name} (--policy-trust-secret) does not exist"),
            );
        };
        let entries = secret.data.iter().flatten();
        match TrustedKeys::parse(entries.map(|(k, v)| (k.as_str(), v.0.as_slice()))) {
            Ok(keys) => Trust::Keys {
                secret: name.to_string(),
                keys,
            },
            Err(KeyError::Empty) => closed(
                name,
                "trust-empty",
                format!("trust Secret {name} has no data: it must hold at least one public key"),
            ),
            Err(e @ KeyError::Format { .. }) => closed(
                name,
                "trust-key-format",
                format!("trust Secret {name}: {e}"),
            ),
        }
    }

    /// Checks `module` and its detached `signature` (from the ConfigMap):
    /// the names of the keys that signed it, none when trust is not
    /// configured.
    pub fn check(
        &self,
        module: &[u8],
        signature: Option<&[u8]>,
    ) -> Result<Vec<String>, PolicyError> {
        match self {
            Trust::Unsigned => Ok(Vec::new()),
            Trust::Keys { keys, .. } => keys
                .verify(module, signature)
                .map_err(PolicyError::Signature),
            Trust::Closed { error, .. } => Err(error.clone()),
        }
    }

    pub fn is_unsigned(&self) -> bool {
        matches!(self, Trust::Unsigned)
    }

    /// How a module from the ConfigMap is admitted, for `/readyz`, logs and
    /// the PolicyLoaded Event.
    pub fn describe(&self) -> String {
        match self {
            Trust::Unsigned => {
                "policies are unsigned: no trust configured (--policy-trust-secret)".into()
            }
            Trust::Keys { secret, keys } => format!(
                "policies must be signed by a key of trust Secret {secret} ({})",
                keys.names()
            ),
            Trust::Closed { error, .. } => {
                format!("policies must be signed, and {error}: none loads")
            }
        }
    }
}

/// The trust `secret` configures (`None`: unsigned), watched on a task in
/// `tasks` until `stop`. Returns once the Secret was first read (or found
/// missing or unreadable), so that no module is checked against a trust not
/// yet known.
pub async fn start(
    client: Client,
    namespace: &str,
    secret: Option<String>,
    tasks: &mut tokio::task::JoinSet<()>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> TrustWatch {
    let Some(name) = secret else {
        tracing::info!("policies are unsigned: no --policy-trust-secret");
        return unsigned();
    };
    let (tx, rx) = watch::channel(Arc::new(closed(
        &name,
        "trust-unreadable",
        format!("trust Secret {name} not read yet"),
    )));
    let (settled_tx, settled) = tokio::sync::oneshot::channel();
    let api: Api<Secret> = Api::namespaced(client, namespace);
    tasks.spawn(async move {
        tokio::select! { _ = stop => {} _ = watch_secret(api, name, tx, settled_tx) => {} }
    });
    // A closed channel means the task ended (stopped): the trust stays closed.
    let _ = settled.await;
    rx
}

/// Makes `trust` current; the watchers are woken only when it differs (a
/// key replaced under the same name differs).
fn set(tx: &watch::Sender<Arc<Trust>>, trust: Trust) {
    let described = trust.describe();
    let changed = tx.send_if_modified(|current| {
        if **current == trust {
            return false;
        }
        *current = Arc::new(trust);
        true
    });
    if changed {
        tracing::info!(trust = %described, "policy trust");
    }
}

async fn watch_secret(
    api: Api<Secret>,
    name: String,
    tx: watch::Sender<Arc<Trust>>,
    settled: tokio::sync::oneshot::Sender<()>,
) {
    let mut settled = Some(settled);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut seen = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => seen = false,
            Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                seen = true;
                set(&tx, Trust::from_secret(&name, Some(&s)));
            }
            Ok(watcher::Event::Delete(_)) => set(&tx, Trust::from_secret(&name, None)),
            Ok(watcher::Event::InitDone) => {
                if !seen {
                    set(&tx, Trust::from_secret(&name, None));
                }
                if let Some(settled) = settled.take() {
                    let _ = settled.send(());
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, secret = %name, "trust Secret watch failed; retrying");
                // Refused (no right to read it) or never read: closed. A
                // passing failure after a good read keeps the keys read.
                let refused = matches!(
                    &e,
                    watcher::Error::InitialListFailed(kube::Error::Api(s))
                        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
                        | watcher::Error::WatchFailed(kube::Error::Api(s))
                        | watcher::Error::WatchError(s)
                        if s.code == 401 || s.code == 403
                );
                if refused || settled.is_some() {
                    set(
                        &tx,
                        closed(
                            &name,
                            "trust-unreadable",
                            format!("trust Secret {name} cannot be read: {e}"),
                        ),
                    );
                }
                if let Some(settled) = settled.take() {
                    let _ = settled.send(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(entries: &[(&str, &[u8])]) -> Secret {
        Secret {
            data: Some(
                entries
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    fn cause(trust: &Trust) -> &'static str {
        match trust.check(b"\0asm\x0d\0\x01\0", Some(b"x")) {
            Err(e) => e.kind(),
            Ok(_) => "accepted",
        }
    }

    #[test]
    fn no_secret_content_turns_verification_off() {
        let (_, pk) = msp_policy_engine::signature::generate_key_pair();
        let cases: Vec<(Option<Secret>, &str)> = vec![
            (None, "trust-secret-missing"),
            (Some(Secret::default()), "trust-empty"),
            (Some(secret(&[])), "trust-empty"),
            (Some(secret(&[("key", b"")])), "trust-key-format"),
            (Some(secret(&[("verify", b"false")])), "trust-key-format"),
            (Some(secret(&[("enabled", b"off")])), "trust-key-format"),
            (
                Some(secret(&[("key", pk.as_bytes()), ("skip", b"true")])),
                "trust-key-format",
            ),
            (
                Some(secret(&[("key", pk.as_bytes())])),
                "signature-malformed",
            ),
        ];
        for (secret, want) in cases {
            let trust = Trust::from_secret("msp-policy-trust", secret.as_ref());
            assert_eq!(cause(&trust), want, "{secret:?}: {}", trust.describe());
            assert!(!trust.is_unsigned());
            assert!(
                trust
                    .check(b"\0asm\x0d\0\x01\0", None)
                    .is_err_and(
                        |e| e.kind().starts_with("trust-") || e.kind() == "signature-missing"
                    ),
                "{secret:?}"
            );
        }
        assert_eq!(cause(&Trust::Unsigned), "accepted");
    }
}
