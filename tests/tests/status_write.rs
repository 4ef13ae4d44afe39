//! Item 3 of issue 23: a status write names the resource it was computed
//! for by uid as well as by name. A reconcile that read the resource before
//! it was deleted and re-created under the same name must not write its
//! status (node, disks: the old placement) onto the new resource.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kube::api::DeleteParams;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Api, ResourceExt};
use msp_operator::controller::report::write_status;
use msp_operator::controller::{Context, ControllerSettings, DecideError, Decider, Parts};
use msp_operator::metrics::Metrics;
use msp_operator::nodes::registry::{NodeRegistry, RegistrySettings};
use msp_operator::state::cache::pool_cache;
use msp_operator::state::crd::{MayastorPool, MayastorPoolStatus, PoolState};
use msp_operator::state::ledger::Ledger;
use msp_policy_sdk::model::{Decision, Observation};
use msp_tests::operator::{create_pool, start_cluster, wait_for};

/// No decision is asked for here.
struct NoPolicy;

impl Decider for NoPolicy {
    fn decide<'a>(
        &'a self,
        _: &'a Observation,
    ) -> Pin<Box<dyn Future<Output = Result<Decision, DecideError>> + Send + 'a>> {
        Box::pin(async { unreachable!("no decision in this test") })
    }
    fn active(&self) -> String {
        "none".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_computed_for_a_deleted_resource_is_not_written_on_its_successor()
-> anyhow::Result<()> {
    let (_cp, admin) = start_cluster().await?;
    let (pools, _writer) = pool_cache();
    let (nodes, _node_writer) = kube::runtime::reflector::store();
    let ctx = Context::new(
        Parts {
            client: admin.clone(),
            pools,
            nodes,
            registry: NodeRegistry::new(RegistrySettings::default()),
            ledger: Arc::new(Ledger::empty(admin.clone(), "mayastor")),
            decider: Arc::new(NoPolicy),
            recorder: Recorder::new(
                admin.clone(),
                Reporter {
                    controller: "msp-operator-test".into(),
                    instance: None,
                },
            ),
            metrics: Arc::new(Metrics::new()),
        },
        ControllerSettings::default(),
    );

    // The copy an old reconcile holds; then the resource is deleted and
    // re-created under the same name with other disks.
    let old = create_pool(&admin, "p", "node1", &["/dev/old".into()]).await?;
    let api: Api<MayastorPool> = Api::namespaced(admin.clone(), "mayastor");
    api.delete("p", &DeleteParams::default()).await?;
    wait_for("p gone", Duration::from_secs(10), || async {
        api.get_opt("p").await.is_ok_and(|p| p.is_none())
    })
    .await?;
    let new = create_pool(&admin, "p", "node1", &["/dev/new".into()]).await?;
    assert_ne!(old.uid(), new.uid());

    let stale = MayastorPoolStatus {
        state: Some(PoolState::Online),
        node: Some("node1".into()),
        disks: Some(vec!["/dev/old".into()]),
        reason: Some("the old resource's pool".into()),
        ..Default::default()
    };
    let written = write_status(&old, &stale, &ctx).await;
    assert!(
        written.is_err(),
        "a status for uid {:?} was written: {written:?}",
        old.uid()
    );
    let now = api.get("p").await?;
    assert_eq!(now.uid(), new.uid());
    assert_eq!(
        now.status, None,
        "the stale status landed on the new resource"
    );

    // The new resource's own status is written.
    let fresh = MayastorPoolStatus {
        state: Some(PoolState::Pending),
        reason: Some("fresh".into()),
        ..Default::default()
    };
    assert!(write_status(&new, &fresh, &ctx).await?);
    let now = api.get("p").await?;
    assert_eq!(now.status.and_then(|s| s.reason).as_deref(), Some("fresh"));
    Ok(())
}
