//! Signed policies against a real API server, the operator's own run loop
//! with `--policy-trust-secret`: a module signed by a trusted key loads;
//! every way a module or the trust can fail keeps the running policy (the
//! bundled default at start) with a Warning Event of its own reason on the
//! ConfigMap and the reload counter by cause; a key rotation keeps the
//! module of the remaining key and refuses the removed key's at its next
//! load; the shadow candidate is held to the same; and an operator that
//! may not read the Secret loads nothing.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use msp_policy_engine::bundled;
use msp_policy_engine::signature::{generate_key_pair, sign};
use msp_tests::operator::{
    Operator, WAIT, create_pool, kubectl_stdin, pool_events, pool_status, start_cluster, wait_for,
    wait_pool,
};
use sha2::{Digest, Sha256};

const LIVE: &str = "msp-policy";
const SHADOW: &str = "msp-policy-shadow";
const TRUST: &str = "msp-policy-trust";
const KEY: &str = "policy.wasm";
const SIG: &str = "policy.wasm.sig";
const FLAG: &str = "--policy-trust-secret=msp-policy-trust";
/// The right to read the trust Secret and nothing else, as policy/README.md
/// "Signed policies" gives it.
const TRUST_RBAC: &str = "
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: msp-operator-policy-trust
  namespace: mayastor
rules:
  - apiGroups: [\"\"]
    resources: [\"secrets\"]
    resourceNames: [\"msp-policy-trust\"]
    verbs: [\"get\", \"list\", \"watch\"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: msp-operator-policy-trust
  namespace: mayastor
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: msp-operator-policy-trust
subjects:
  - kind: ServiceAccount
    name: msp-operator
    namespace: mayastor
";

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn trust_secret(keys: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(TRUST.into()),
            namespace: Some("mayastor".into()),
            ..Default::default()
        },
        data: Some(
            keys.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    }
}

/// Makes the trust Secret hold exactly `keys` (created when missing).
async fn set_trust(admin: &Client, keys: &[(&str, &str)]) -> anyhow::Result<()> {
    let api: Api<Secret> = Api::namespaced(admin.clone(), "mayastor");
    match api.get_opt(TRUST).await? {
        None => {
            api.create(&PostParams::default(), &trust_secret(keys))
                .await?;
        }
        Some(old) => {
            let mut new = trust_secret(keys);
            new.metadata.resource_version = old.metadata.resource_version;
            api.replace(TRUST, &PostParams::default(), &new).await?;
        }
    }
    Ok(())
}

/// Puts `module` and `signature` (none: no signature key) into ConfigMap
/// `name`, creating it when missing; an update, so the running policy stays
/// whatever the content.
async fn put(
    admin: &Client,
    name: &str,
    module: &[u8],
    signature: Option<&[u8]>,
) -> anyhow::Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(admin.clone(), "mayastor");
    let mut binary = BTreeMap::from([(KEY.to_string(), ByteString(module.to_vec()))]);
    if let Some(sig) = signature {
        binary.insert(SIG.to_string(), ByteString(sig.to_vec()));
    }
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("mayastor".into()),
            ..Default::default()
        },
        binary_data: Some(binary),
        ..Default::default()
    };
    match api.get_opt(name).await? {
        None => {
            api.create(&PostParams::default(), &cm).await?;
        }
        Some(old) => {
            let mut new = cm;
            new.metadata.resource_version = old.metadata.resource_version;
            api.replace(name, &PostParams::default(), &new).await?;
        }
    }
    Ok(())
}

/// The live (`msp_policy_info`) or shadow (`msp_policy_shadow_info`) info line.
async fn info(op: &Operator, shadow: bool) -> String {
    let prefix = if shadow {
        "msp_policy_shadow_info{"
    } else {
        "msp_policy_info{"
    };
    let (_, text) = op.http_get("/metrics").await.unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_default()
        .to_string()
}

/// The reload counter of `cause` (live or shadow), 0 when absent.
async fn reloads(op: &Operator, shadow: bool, cause: &str) -> u64 {
    let family = if shadow {
        "msp_policy_shadow_reloads_total"
    } else {
        "msp_policy_reloads_total"
    };
    op.metric(&format!("{family}{{error=\"{cause}\"}}"))
        .await
        .map_or(0, |v| v as u64)
}

/// What a step expects: refused for `cause` with a Warning Event of
/// `reason` whose note holds `hint`, while the policy whose info line holds
/// `kept` keeps deciding.
struct Refusal<'a> {
    cm: &'a str,
    cause: &'a str,
    reason: &'a str,
    hint: &'a str,
    kept: &'a str,
}

/// Waits for the refusal `r` (counted past `before`), then checks the
/// running policy is still `r.kept`.
async fn refused(
    op: &Operator,
    admin: &Client,
    r: &Refusal<'_>,
    before: u64,
) -> anyhow::Result<()> {
    let shadow = r.cm == SHADOW;
    let counted = wait_for(&format!("{} counted", r.cause), WAIT, || async {
        reloads(op, shadow, r.cause).await > before
    })
    .await;
    let events = pool_events(admin, r.cm).await.unwrap_or_default();
    counted.map_err(|e| e.context(format!("events on {}: {events:?}", r.cm)))?;
    let found = wait_for(&format!("a {} Event", r.reason), WAIT, || async {
        pool_events(admin, r.cm)
            .await
            .unwrap_or_default()
            .iter()
            .any(|(reason, note)| reason == r.reason && note.contains(r.hint))
    })
    .await;
    let events = pool_events(admin, r.cm).await.unwrap_or_default();
    found.map_err(|e| e.context(format!("events on {}: {events:?}", r.cm)))?;
    let line = info(op, shadow).await;
    assert!(
        line.contains(r.kept),
        "after {}: {line:?}, want {:?} kept",
        r.cause,
        r.kept
    );
    eprintln!("{}: {} kept: {line}", r.cause, r.kept);
    Ok(())
}

async fn expect_refused(
    op: &Operator,
    admin: &Client,
    r: Refusal<'_>,
    change: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let before = reloads(op, r.cm == SHADOW, r.cause).await;
    change.await?;
    refused(op, admin, &r, before).await
}

/// Waits until the info line (live or shadow) holds every one of `words`.
async fn wait_info(op: &Operator, shadow: bool, words: &[&str]) -> anyhow::Result<()> {
    let waited = wait_for(&format!("info with {words:?}"), WAIT, || async {
        let line = info(op, shadow).await;
        words.iter().all(|w| line.contains(w))
    })
    .await;
    let line = info(op, shadow).await;
    waited.map_err(|e| e.context(format!("info is {line:?}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_signed_module_decides_and_every_failure_keeps_the_running_policy()
-> anyhow::Result<()> {
    let (_cp, admin) = start_cluster().await?;
    let (a_sk, a_pk) = generate_key_pair();
    let (b_sk, _) = generate_key_pair();
    set_trust(&admin, &[("release.pem", &a_pk)]).await?;
    let mut op = Operator::start(admin.clone(), &[FLAG]).await?;
    op.wait_ready(WAIT).await?;
    let (_, ready) = op.http_get("/readyz").await?;
    assert!(
        ready.contains(
            "policies must be signed by a key of trust Secret msp-policy-trust (release.pem)"
        ),
        "{ready}"
    );
    wait_info(
        &op,
        false,
        &["name=\"msp-default\"", "signature=\"bundled\""],
    )
    .await?;

    let retain = bundled::read_built("retain")?;
    let default = bundled::DEFAULT_COMPONENT;
    // A pool (pending: its node does not exist) whose status names the
    // digest of the module that decided.
    create_pool(&admin, "pool-d", "node-x", &["/dev/none".into()]).await?;
    let bundled_digest = format!("sha256:{}", sha256(default));
    wait_pool(&admin, "pool-d", WAIT, "the bundled digest", |s| {
        s.policy_digest.as_deref() == Some(bundled_digest.as_str())
    })
    .await?;
    let good = sign(&retain, a_sk.as_bytes())?;
    let bundled_kept = "name=\"msp-default\"";

    // Each fault of the module or its signature, the bundled default kept.
    let r = |cause: &'static str, reason: &'static str, hint: &'static str| Refusal {
        cm: LIVE,
        cause,
        reason,
        hint,
        kept: bundled_kept,
    };
    expect_refused(
        &op,
        &admin,
        r("signature-missing", "PolicySignatureMissing", "not signed"),
        put(&admin, LIVE, &retain, None),
    )
    .await?;
    let by_b = sign(&retain, b_sk.as_bytes())?;
    expect_refused(
        &op,
        &admin,
        r(
            "signature-untrusted",
            "PolicySignatureUntrusted",
            "none of the 1 trusted key(s) (release.pem)",
        ),
        put(&admin, LIVE, &retain, Some(&by_b[..])),
    )
    .await?;
    let over_default = sign(default, a_sk.as_bytes())?;
    expect_refused(
        &op,
        &admin,
        r(
            "signature-mismatch",
            "PolicySignatureMismatch",
            "over other bytes",
        ),
        put(&admin, LIVE, &retain, Some(&over_default[..])),
    )
    .await?;
    expect_refused(
        &op,
        &admin,
        r(
            "signature-malformed",
            "PolicySignatureMalformed",
            "truncated",
        ),
        put(&admin, LIVE, &retain, Some(&good[..good.len() - 5])),
    )
    .await?;
    // Duplicated and empty: the same cause again, each counted.
    let twice = [good.clone(), good.clone()].concat();
    for bad in [twice.as_slice(), &[]] {
        let before = reloads(&op, false, "signature-malformed").await;
        put(&admin, LIVE, &retain, Some(bad)).await?;
        refused(
            &op,
            &admin,
            &r(
                "signature-malformed",
                "PolicySignatureMalformed",
                "malformed",
            ),
            before,
        )
        .await?;
    }

    // Signed by the trusted key: it decides, and says which build it is.
    let digest = format!("digest=\"sha256:{}\"", sha256(&retain));
    put(&admin, LIVE, &retain, Some(&good[..])).await?;
    wait_info(
        &op,
        false,
        &[
            "name=\"msp-retain\"",
            digest.as_str(),
            "signature=\"verified\"",
        ],
    )
    .await?;
    let loaded = wait_for("a PolicyLoaded Event", WAIT, || async {
        pool_events(&admin, LIVE)
            .await
            .unwrap_or_default()
            .iter()
            .any(|(reason, note)| {
                reason == "PolicyLoaded"
                    && note.contains(&format!("sha256:{}", sha256(&retain)))
                    && note.contains("signature verified against trust Secret msp-policy-trust")
            })
    })
    .await;
    let events = pool_events(&admin, LIVE).await?;
    loaded.map_err(|e| e.context(format!("{events:?}")))?;
    let retain_digest = format!("sha256:{}", sha256(&retain));
    let status = wait_pool(&admin, "pool-d", WAIT, "retain's digest", |s| {
        s.policy_digest.as_deref() == Some(retain_digest.as_str())
    })
    .await?;
    assert!(
        status
            .policy
            .as_deref()
            .is_some_and(|p| p.starts_with("msp-retain@")),
        "{status:?}"
    );
    // Written once on the change, not on every reconcile.
    let writes = op.metric("msp_status_writes_total").await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(op.metric("msp_status_writes_total").await, writes);

    // With retain running, a module that fails keeps retain.
    let kept = "name=\"msp-retain\"";
    let default_by_b = sign(default, b_sk.as_bytes())?;
    expect_refused(
        &op,
        &admin,
        Refusal {
            cm: LIVE,
            cause: "signature-untrusted",
            reason: "PolicySignatureUntrusted",
            // An Event series keeps its first note: the cause, not who is kept.
            hint: "none of the 1 trusted",
            kept,
        },
        put(&admin, LIVE, default, Some(&default_by_b[..])),
    )
    .await?;
    put(&admin, LIVE, &retain, Some(&good[..])).await?;

    // Each fault of the trust: no configuration turns the check off, and
    // retain keeps deciding.
    let t = |cause: &'static str, reason: &'static str, hint: &'static str| Refusal {
        cm: LIVE,
        cause,
        reason,
        hint,
        kept,
    };
    expect_refused(
        &op,
        &admin,
        t("trust-key-format", "PolicyTrustKeyFormat", "\"verify\""),
        set_trust(&admin, &[("verify", "false")]),
    )
    .await?;
    expect_refused(
        &op,
        &admin,
        t(
            "trust-key-format",
            "PolicyTrustKeyFormat",
            "not an Ed25519 public key",
        ),
        set_trust(&admin, &[("release.pem", &a_pk), ("skip", "")]),
    )
    .await?;
    expect_refused(
        &op,
        &admin,
        t("trust-empty", "PolicyTrustEmpty", "no data"),
        set_trust(&admin, &[]),
    )
    .await?;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "mayastor");
    expect_refused(
        &op,
        &admin,
        t(
            "trust-secret-missing",
            "PolicyTrustSecretMissing",
            "does not exist",
        ),
        async {
            secrets.delete(TRUST, &DeleteParams::default()).await?;
            Ok::<(), anyhow::Error>(())
        },
    )
    .await?;
    let (_, ready) = op.http_get("/readyz").await?;
    assert!(ready.contains("none loads"), "{ready}");
    let status = pool_status(&admin, "pool-d").await?;
    assert_eq!(
        status.policy_digest.as_deref(),
        Some(retain_digest.as_str())
    );

    // The key back: a new module signed by it loads.
    set_trust(&admin, &[("release.pem", &a_pk)]).await?;
    put(&admin, LIVE, default, Some(&over_default[..])).await?;
    let digest = format!("digest=\"sha256:{}\"", sha256(default));
    wait_info(
        &op,
        false,
        &[
            "name=\"msp-default\"",
            digest.as_str(),
            "signature=\"verified\"",
        ],
    )
    .await?;
    // Every failure in between kept retain's digest on the pool; now the
    // new module's.
    wait_pool(&admin, "pool-d", WAIT, "the default's digest again", |s| {
        s.policy_digest.as_deref() == Some(bundled_digest.as_str())
    })
    .await?;
    op.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_keeps_the_remaining_keys_module_live_and_in_shadow() -> anyhow::Result<()> {
    let (_cp, admin) = start_cluster().await?;
    let (a_sk, a_pk) = generate_key_pair();
    let (b_sk, b_pk) = generate_key_pair();
    set_trust(&admin, &[("a.pem", &a_pk)]).await?;
    let retain = bundled::read_built("retain")?;
    let labelled = bundled::read_built("keep-labelled")?;
    let default = bundled::DEFAULT_COMPONENT;
    // Started with a module signed by A already there: loaded at start.
    put(
        &admin,
        LIVE,
        &retain,
        Some(&sign(&retain, a_sk.as_bytes())?[..]),
    )
    .await?;
    let mut op = Operator::start(admin.clone(), &[FLAG]).await?;
    op.wait_ready(WAIT).await?;
    wait_info(
        &op,
        false,
        &["name=\"msp-retain\"", "signature=\"verified\""],
    )
    .await?;

    // The Secret gains B; a module signed by B loads, live and as the candidate.
    set_trust(&admin, &[("a.pem", &a_pk), ("b.pem", &b_pk)]).await?;
    wait_for("the second key seen", WAIT, || async {
        op.http_get("/readyz")
            .await
            .is_ok_and(|(_, r)| r.contains("(a.pem, b.pem)"))
    })
    .await?;
    put(
        &admin,
        LIVE,
        default,
        Some(&sign(default, b_sk.as_bytes())?[..]),
    )
    .await?;
    let default_digest = format!("digest=\"sha256:{}\"", sha256(default));
    wait_info(
        &op,
        false,
        &["name=\"msp-default\"", default_digest.as_str()],
    )
    .await?;
    put(
        &admin,
        SHADOW,
        &labelled,
        Some(&sign(&labelled, b_sk.as_bytes())?[..]),
    )
    .await?;
    let labelled_name = "name=\"msp-keep-labelled\"";
    wait_info(&op, true, &[labelled_name, "signature=\"verified\""]).await?;

    // The Secret loses A: B's modules keep running, nothing refused.
    let untrusted_before = reloads(&op, false, "signature-untrusted").await;
    let shadow_before = reloads(&op, true, "signature-untrusted").await;
    set_trust(&admin, &[("b.pem", &b_pk)]).await?;
    // The change is seen when readyz names the remaining key only.
    wait_for("the trust change seen", WAIT, || async {
        op.http_get("/readyz")
            .await
            .is_ok_and(|(_, r)| r.contains("(b.pem)"))
    })
    .await?;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(
        reloads(&op, false, "signature-untrusted").await,
        untrusted_before
    );
    assert_eq!(
        reloads(&op, true, "signature-untrusted").await,
        shadow_before
    );
    assert!(info(&op, false).await.contains(&default_digest));
    assert!(info(&op, true).await.contains(labelled_name));

    // A's signature is refused at the next load, live and as the candidate.
    expect_refused(
        &op,
        &admin,
        Refusal {
            cm: LIVE,
            cause: "signature-untrusted",
            reason: "PolicySignatureUntrusted",
            hint: "(b.pem)",
            kept: &default_digest,
        },
        put(
            &admin,
            LIVE,
            &retain,
            Some(&sign(&retain, a_sk.as_bytes())?[..]),
        ),
    )
    .await?;
    expect_refused(
        &op,
        &admin,
        Refusal {
            cm: SHADOW,
            cause: "signature-untrusted",
            reason: "PolicySignatureUntrusted",
            hint: "keeps shadowing",
            kept: labelled_name,
        },
        put(
            &admin,
            SHADOW,
            &retain,
            Some(&sign(&retain, a_sk.as_bytes())?[..]),
        ),
    )
    .await?;
    // An unsigned candidate is refused as a live module is.
    expect_refused(
        &op,
        &admin,
        Refusal {
            cm: SHADOW,
            cause: "signature-missing",
            reason: "PolicySignatureMissing",
            hint: "not signed",
            kept: labelled_name,
        },
        put(&admin, SHADOW, &retain, None),
    )
    .await?;
    // B signs it: the candidate loads.
    put(
        &admin,
        SHADOW,
        &retain,
        Some(&sign(&retain, b_sk.as_bytes())?[..]),
    )
    .await?;
    wait_info(&op, true, &["name=\"msp-retain\""]).await?;
    op.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trust_secret_the_operator_may_not_read_refuses_every_module() -> anyhow::Result<()> {
    let (cp, admin) = start_cluster().await?;
    // deploy/rbac/operator.yaml grants no Secret: the Secret is there, and
    // unreadable to the operator's own identity.
    let rbac = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rbac/operator.yaml");
    let mut apply = cp.kubectl();
    apply.arg("apply").arg("-f").arg(&rbac);
    msp_tests::control_plane::run(apply).await?;
    let identity = cp.service_account("mayastor", "msp-operator")?;
    let restricted = identity.client().await?;
    let (a_sk, a_pk) = generate_key_pair();
    set_trust(&admin, &[("release.pem", &a_pk)]).await?;
    let mut op = Operator::start(restricted, &[FLAG]).await?;
    op.wait_ready(WAIT).await?;
    let retain = bundled::read_built("retain")?;
    expect_refused(
        &op,
        &admin,
        Refusal {
            cm: LIVE,
            cause: "trust-unreadable",
            reason: "PolicyTrustUnreadable",
            hint: "cannot be read",
            kept: "name=\"msp-default\"",
        },
        put(
            &admin,
            LIVE,
            &retain,
            Some(&sign(&retain, a_sk.as_bytes())?[..]),
        ),
    )
    .await?;
    let (_, ready) = op.http_get("/readyz").await?;
    assert!(ready.contains("none loads"), "{ready}");

    // Granted the documented Role (this Secret only), the watch's retry
    // reads it and the signed module loads.
    kubectl_stdin(&cp, &["apply", "-f", "-"], TRUST_RBAC)?;
    let waited = wait_for("the Secret read and retain loaded", WAIT * 2, || async {
        info(&op, false).await.contains("name=\"msp-retain\"")
    })
    .await;
    let (_, ready) = op.http_get("/readyz").await?;
    waited.map_err(|e| e.context(ready.clone()))?;
    assert!(ready.contains("(release.pem)"), "{ready}");
    op.stop().await?;
    Ok(())
}
