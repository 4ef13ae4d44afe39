//! The [`Context`] every reconcile shares: the caches and parts it reads and
//! calls ([`Parts`]), its timing ([`ControllerSettings`]), and what is kept
//! between reconciles (error counts for the backoff, the state last reported).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use msp_policy_sdk::model::Decision;

use super::decide::Decider;
use super::observe::Sources;
use super::operations::Operations;
use crate::metrics::Metrics;
use crate::nodes::client::BlockDeviceInfo;
use crate::nodes::registry::NodeRegistry;
use crate::state::cache::PoolCache;
use crate::state::crd::{MayastorPool, PoolState};
use crate::state::ledger::Ledger;

/// Timing of reconciles.
#[derive(Clone, Debug)]
pub struct ControllerSettings {
    /// Requeues the policy asks for are bounded to [min_requeue, max_requeue].
    pub min_requeue: Duration,
    pub max_requeue: Duration,
    /// Requeue when the policy asks for none (changes wake pools anyway).
    pub resync: Duration,
    /// Retry after a failed policy decision.
    pub policy_retry: Duration,
    /// First and last retry delay after a reconcile error.
    pub error_backoff_min: Duration,
    pub error_backoff_max: Duration,
    /// Longest wait before a pool a safety rail refused is looked at again
    /// (the first wait is `min_requeue`, doubling): a disk holding data is
    /// not asked about every second, and a wiped one is used within this.
    pub refusal_backoff_max: Duration,
    /// After a start, storage nodes need a heartbeat to register again: until
    /// this has passed, a created pool whose node the registry has not seen
    /// keeps its status instead of flapping to offline.
    pub startup_grace: Duration,
    /// The namespace whose MayastorPools are watched: only ledger entries of
    /// this namespace are swept (another's resources are not in the cache,
    /// and would look deleted).
    pub namespace: String,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        ControllerSettings {
            min_requeue: Duration::from_millis(200),
            max_requeue: Duration::from_secs(300),
            resync: Duration::from_secs(60),
            policy_retry: Duration::from_secs(10),
            error_backoff_min: Duration::from_millis(500),
            error_backoff_max: Duration::from_secs(60),
            refusal_backoff_max: Duration::from_secs(10),
            startup_grace: Duration::ZERO,
            // The default of `--namespace`.
            namespace: "mayastor".into(),
        }
    }
}

/// The parts a reconcile reads and calls, named so that the one place that
/// builds a [`Context`] (`run`, or a test fixture) says which is which.
pub struct Parts {
    pub client: Client,
    pub pools: PoolCache,
    pub nodes: Store<Node>,
    pub registry: NodeRegistry,
    pub ledger: Arc<Ledger>,
    pub decider: Arc<dyn Decider>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
}

/// Shared by every reconcile and the sweep.
pub struct Context {
    pub(super) client: Client,
    pub(super) pools: PoolCache,
    pub(super) nodes: Store<Node>,
    pub(super) registry: NodeRegistry,
    pub(super) ledger: Arc<Ledger>,
    pub(super) decider: Arc<dyn Decider>,
    pub(super) recorder: Recorder,
    pub(super) metrics: Arc<Metrics>,
    pub(super) operations: Operations,
    pub(super) settings: ControllerSettings,
    /// Consecutive reconcile errors per resource uid, for the backoff.
    pub(super) errors: Streaks,
    /// Consecutive safety-rail refusals per resource uid, for their backoff.
    pub(super) refusals: Streaks,
    /// The state last reported per resource uid: the watch cache may not
    /// show our own status write yet, and a transition is announced once.
    reported: Mutex<HashMap<String, PoolState>>,
    /// The status last written per resource uid, as (resourceVersion of the
    /// copy it was written over, [`report::status_digest`]): a reconcile that
    /// still sees that copy has nothing newer to act on.
    written: Mutex<HashMap<String, (String, u64)>>,
    /// Per resource uid, what the disk identity check already said: a
    /// kernel name pointed out (once), and the spec.disks last found to
    /// name other disks than the pool's (not listed again until edited).
    disk_notes: Mutex<HashMap<String, DiskNotes>>,
    /// Per node, its block devices as last listed, and when: a create that
    /// only pins its disks uses a listing a moment old (see
    /// `apply::Loading::check_identity`).
    devices: Mutex<HashMap<String, (Instant, Vec<BlockDeviceInfo>)>>,
    started: Instant,
}

/// How old a node's device listing may be for pinning a new pool's disks.
const RECENT_DEVICES: Duration = Duration::from_secs(5);

/// What the disk identity check already said about one resource.
#[derive(Default)]
struct DiskNotes {
    kernel_names_told: bool,
    other_disks: Option<Vec<String>>,
}

impl Context {
    /// The context of a controller starting now.
    pub fn new(parts: Parts, settings: ControllerSettings) -> Context {
        let Parts {
            client,
            pools,
            nodes,
            registry,
            ledger,
            decider,
            recorder,
            metrics,
        } = parts;
        Context {
            client,
            pools,
            nodes,
            registry,
            ledger,
            decider,
            recorder,
            metrics,
            operations: Operations::default(),
            settings,
            errors: Streaks::default(),
            refusals: Streaks::default(),
            reported: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
            disk_notes: Mutex::new(HashMap::new()),
            devices: Mutex::new(HashMap::new()),
            started: Instant::now(),
        }
    }

    /// The MayastorPool cache the controller reconciles from.
    pub fn pools(&self) -> &PoolCache {
        &self.pools
    }

    /// How long to hold `pool`'s status because its node may still register,
    /// or has registered but its pool list has not arrived yet (a look in
    /// between would write a passing "waiting for the pool list" reason).
    pub(super) fn startup_hold(&self, pool: &MayastorPool) -> Option<Duration> {
        let left = self
            .settings
            .startup_grace
            .checked_sub(self.started.elapsed())?;
        let node = pool.effective_node();
        let unheard = !self.registry.knows(node) || self.registry.view(node).pools.is_none();
        (pool.placement_cached() && unheard && !left.is_zero()).then_some(left)
    }

    /// What observe reads from.
    pub(super) fn sources(&self) -> Sources<'_> {
        Sources {
            pools: &self.pools,
            nodes: &self.nodes,
            registry: &self.registry,
            ledger: &self.ledger,
            operations: &self.operations,
        }
    }

    /// The bounded requeue for a decision.
    pub(super) fn requeue_after(&self, decision: &Decision) -> Duration {
        bounded_requeue(decision.requeue_after_ms, &self.settings)
    }

    /// The state last reported for `uid`, and records `state` as the new one.
    pub(super) fn swap_reported(&self, uid: &str, state: PoolState) -> Option<PoolState> {
        self.reported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.to_string(), state)
    }

    /// Whether a status of `digest` was written for `uid` over the copy at
    /// `version` (so a reconcile still seeing that copy would repeat it).
    pub(super) fn wrote_over(&self, uid: &str, version: &str, digest: u64) -> bool {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .is_some_and(|(v, d)| v == version && *d == digest)
    }

    /// Records a status of `digest` written for `uid` over the copy at `version`.
    pub(super) fn record_written(&self, uid: &str, version: &str, digest: u64) {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.to_string(), (version.to_string(), digest));
    }

    /// Forgets what was reported and written for resources `keep` rejects
    /// (gone ones).
    pub(super) fn retain_reported(&self, keep: impl Fn(&str) -> bool) {
        self.reported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|uid, _| keep(uid));
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|uid, _| keep(uid));
        self.disk_notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|uid, _| keep(uid));
    }

    /// `node`'s block devices, when listed less than a few seconds ago.
    pub(super) fn recent_devices(&self, node: &str) -> Option<Vec<BlockDeviceInfo>> {
        self.devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .filter(|(at, _)| at.elapsed() < RECENT_DEVICES)
            .map(|(_, devices)| devices.clone())
    }

    /// Notes `node`'s block devices as listed now.
    pub(super) fn note_devices(&self, node: &str, devices: &[BlockDeviceInfo]) {
        self.devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.to_string(), (Instant::now(), devices.to_vec()));
    }

    /// True the first time it is asked for `uid`: a kernel name in a
    /// resource's disks is pointed out once.
    pub(super) fn first_kernel_note(&self, uid: &str) -> bool {
        let mut notes = self.disk_notes.lock().unwrap_or_else(|e| e.into_inner());
        let note = notes.entry(uid.to_string()).or_default();
        !std::mem::replace(&mut note.kernel_names_told, true)
    }

    /// Whether `disks` (an edited spec.disks of `uid`) were found to name
    /// other disks than the pool's already.
    pub(super) fn other_disks_known(&self, uid: &str, disks: &[String]) -> bool {
        self.disk_notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .and_then(|n| n.other_disks.as_deref())
            == Some(disks)
    }

    /// Notes that `disks` (an edited spec.disks of `uid`) name other disks.
    pub(super) fn note_other_disks(&self, uid: &str, disks: &[String]) {
        self.disk_notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(uid.to_string())
            .or_default()
            .other_disks = Some(disks.to_vec());
    }
}

/// The requeue a policy asked for, bounded; the resync period when it asked none.
pub fn bounded_requeue(requested_ms: Option<u64>, settings: &ControllerSettings) -> Duration {
    match requested_ms {
        Some(ms) => Duration::from_millis(ms).clamp(settings.min_requeue, settings.max_requeue),
        None => settings.resync,
    }
}

/// When to look again at a pool a safety rail refused for the `n`th time in a
/// row: the policy would ask again as soon as it asked the first time, and
/// each look costs the node a ListBlockDevices. Doubling from what it asked,
/// at most `refusal_backoff_max` (never less than it asked).
pub fn refused_retry(n: u32, asked: Duration, settings: &ControllerSettings) -> Duration {
    super::error::backoff(n, asked, settings.refusal_backoff_max.max(asked))
}

/// Counts per resource uid of something that keeps happening in a row.
#[derive(Default)]
pub(super) struct Streaks(Mutex<HashMap<String, u32>>);

impl Streaks {
    /// One more for `uid`; returns how many in a row now.
    pub(super) fn bump(&self, uid: &str) -> u32 {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(uid.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// The streak of `uid` is over.
    pub(super) fn clear(&self, uid: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
    }
}
