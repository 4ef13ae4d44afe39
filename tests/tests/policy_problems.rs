//! Every problem with the policy ConfigMap is reported while the bundled
//! default runs, each as itself: a Warning Event on the ConfigMap whose
//! reason and message are that cause (a later cause never shows an earlier
//! one's message) and the reload metric by cause. The bundled policy keeps
//! deciding throughout. Real API server, the operator's own run loop.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use msp_policy_engine::bundled;
use msp_tests::operator::{Operator, WAIT, pool_events, start_cluster, wait_for};

const NAME: &str = "msp-policy";
const KEY: &str = "policy.wasm";

/// The policy ConfigMap with `binary` under binaryData and `text` under data.
fn config_map(binary: &[(&str, Vec<u8>)], text: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(NAME.into()),
            namespace: Some("mayastor".into()),
            ..Default::default()
        },
        binary_data: Some(
            binary
                .iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.clone())))
                .collect::<BTreeMap<_, _>>(),
        ),
        data: Some(
            text.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    }
}

/// The counter `msp_policy_reloads_total` for `cause`, 0 when absent.
async fn reloads(op: &Operator, cause: &str) -> u64 {
    let series = format!("msp_policy_reloads_total{{error=\"{cause}\"}}");
    op.metric(&series).await.map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_configmap_problem_is_reported_as_itself() -> anyhow::Result<()> {
    let (_cp, admin) = start_cluster().await?;
    // A module limit between the bundled policy's size and a larger
    // example's, so "too large" is reachable with a module that fits a
    // ConfigMap.
    let big = bundled::read_built("stable-disk-names")?;
    let limit = (bundled::DEFAULT_COMPONENT.len() + big.len()) / 2;
    assert!(
        bundled::DEFAULT_COMPONENT.len() < limit && limit < big.len(),
        "bundled {} B, example {} B",
        bundled::DEFAULT_COMPONENT.len(),
        big.len()
    );
    let mut op = Operator::start(admin.clone(), &[&format!("--policy-max-bytes={limit}")]).await?;
    op.wait_ready(WAIT).await?;
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "mayastor");

    // An empty core module: valid wasm, but not a component.
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    let limit_text = limit.to_string();
    let cases: Vec<(&str, &str, ConfigMap, &str)> = vec![
        (
            "key-missing",
            "PolicyKeyMissing",
            config_map(&[("module.wasm", bundled::read_built("retain")?)], &[]),
            "module.wasm",
        ),
        (
            "key-under-data",
            "PolicyKeyUnderData",
            config_map(&[], &[(KEY, "AGFzbQ==")]),
            "binaryData",
        ),
        (
            "too-large",
            "PolicyTooLarge",
            config_map(&[(KEY, big)], &[]),
            &limit_text,
        ),
        (
            "not-a-component",
            "PolicyNotAComponent",
            config_map(&[(KEY, core_module)], &[]),
            "component",
        ),
        (
            "unknown-version",
            "PolicyUnknownVersion",
            config_map(&[(KEY, bundled::read_built("hostile-wrong-version")?)], &[]),
            "contract",
        ),
        (
            "conformance",
            "PolicyConformance",
            config_map(
                &[(KEY, bundled::read_built("hostile-fails-self-test")?)],
                &[],
            ),
            "reason",
        ),
    ];
    for (cause, reason, cm, hint) in &cases {
        let before = reloads(&op, cause).await;
        // Each problem arrives as a new ConfigMap, as an admin's apply after
        // a delete would bring it.
        let _ = cms.delete(NAME, &DeleteParams::default()).await;
        wait_for("the ConfigMap gone", WAIT, || async {
            cms.get_opt(NAME).await.is_ok_and(|c| c.is_none())
        })
        .await?;
        cms.create(&PostParams::default(), cm).await?;

        let reason = reason.to_string();
        let events = || async { pool_events(&admin, NAME).await.unwrap_or_default() };
        let found = wait_for(
            &format!("a {reason} Event on the ConfigMap"),
            WAIT,
            || async { events().await.iter().any(|(r, _)| *r == reason) },
        )
        .await;
        let seen = events().await;
        found.map_err(|e| e.context(format!("events on {NAME}: {seen:?}")))?;
        let (_, note) = seen
            .iter()
            .rev()
            .find(|(r, _)| *r == reason)
            .cloned()
            .unwrap_or_default();
        eprintln!("{cause}: {reason}: {note}");
        assert!(note.contains(hint), "{reason} says {note:?}, want {hint:?}");
        assert!(
            note.contains("bundled") || note.contains("msp-default"),
            "{reason} does not say the bundled policy decides: {note:?}"
        );
        // Every earlier cause's Event keeps its own message.
        for (_, other_reason, _, other_hint) in &cases {
            for (r, n) in seen.iter().filter(|(r, _)| r == other_reason) {
                assert!(n.contains(other_hint), "{r} shows {n:?}");
            }
        }
        wait_for(&format!("the {cause} reload counted"), WAIT, || async {
            reloads(&op, cause).await > before
        })
        .await?;
        let (_, metrics) = op.http_get("/metrics").await?;
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("msp_policy_info{") && l.contains("msp-default")),
            "the bundled policy is no longer active after {cause}"
        );
    }
    op.stop().await?;
    Ok(())
}
