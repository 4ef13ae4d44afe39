//! Seeded generator of varied observations, shared by the differential test
//! (wasm and native must agree on every one) and the benchmark.
//!
//! Each field is drawn from a small domain so that every branch of a policy is
//! reached often; a tiny SplitMix64 keeps it deterministic without a
//! dependency.

use std::collections::{BTreeMap, BTreeSet};

use msp_policy_sdk::model::{
    Action, ErrorKind, K8sNode, LAST_APPLIED_ANNOTATION, LastOperation, Observation,
    OperationError, PoolResource, PoolState, ReportedPool, ReportedState, StorageNode,
};

/// SplitMix64: small, fast, good enough to spread test inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
const DISKS: [&str; 5] = [
    "/dev/disk/by-id/ata-1",
    "/dev/disk/by-id/ata-2",
    "/dev/sdb",
    "/dev/nvme0n1",
    "/dev/loop3",
];
const STATES: [PoolState; 5] = [
    PoolState::Pending,
    PoolState::Online,
    PoolState::Degraded,
    PoolState::Faulted,
    PoolState::Offline,
];
const KINDS: [ErrorKind; 9] = [
    ErrorKind::InvalidArgument,
    ErrorKind::FailedPrecondition,
    ErrorKind::AlreadyExists,
    ErrorKind::NotFound,
    ErrorKind::Unavailable,
    ErrorKind::DeadlineExceeded,
    ErrorKind::ResourceExhausted,
    ErrorKind::Internal,
    ErrorKind::Other,
];
const ACTIONS: [Action; 5] = [
    Action::None,
    Action::Create,
    Action::Import,
    Action::Destroy,
    Action::Retain,
];
const REPORTED: [ReportedState; 4] = [
    ReportedState::Unknown,
    ReportedState::Online,
    ReportedState::Degraded,
    ReportedState::Faulted,
];

/// Heartbeat deadlines a host may run with (`--node-deadline`).
const DEADLINES: [u64; 3] = [2_000, 10_000, 30_000];

fn disks(rng: &mut Rng) -> Vec<String> {
    (0..1 + rng.below(3))
        .map(|_| rng.pick(&DISKS).to_string())
        .collect()
}

/// The label and annotation keys observations carry (each on about one in
/// five), with the values drawn for each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    pub labels: BTreeMap<String, BTreeSet<String>>,
    pub annotations: BTreeMap<String, BTreeSet<String>>,
}

impl Default for Metadata {
    /// `team` (team-0, team-1, team-2) and `example.com/retain` (true).
    fn default() -> Self {
        let values = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        Metadata {
            labels: BTreeMap::from([("team".to_string(), values(&["team-0", "team-1", "team-2"]))]),
            annotations: BTreeMap::from([("example.com/retain".to_string(), values(&["true"]))]),
        }
    }
}

impl Metadata {
    /// Adds `key` with `values` (with none: "true", "false" and "").
    pub fn add(
        map: &mut BTreeMap<String, BTreeSet<String>>,
        key: &str,
        values: impl IntoIterator<Item = String>,
    ) {
        let set = map.entry(key.to_string()).or_default();
        set.extend(values);
    }

    /// Every key without a value gets "true", "false" and "" (what a flag
    /// or a key test of a policy most likely reads).
    pub fn fill_values(&mut self) {
        for set in self
            .labels
            .values_mut()
            .chain(self.annotations.values_mut())
        {
            if set.is_empty() {
                set.extend(["true".to_string(), "false".to_string(), String::new()]);
            }
        }
    }
}

fn draw_metadata(
    rng: &mut Rng,
    keys: &BTreeMap<String, BTreeSet<String>>,
    into: &mut BTreeMap<String, String>,
) {
    for (key, values) in keys {
        if key == LAST_APPLIED_ANNOTATION || !rng.chance(20) {
            continue;
        }
        let values: Vec<&String> = values.iter().collect();
        // One value is no draw (the sequence of a seed stays as it was).
        let value = match values.len() {
            0 => String::new(),
            1 => values[0].clone(),
            n => values[rng.below(n as u64) as usize].clone(),
        };
        into.insert(key.clone(), value);
    }
}

/// One observation drawn from `rng`, with the default [`Metadata`].
pub fn observation(rng: &mut Rng) -> Observation {
    observation_with(rng, &Metadata::default())
}

/// One observation drawn from `rng`, carrying keys of `metadata`. Only
/// observations the host makes ([`Observation::possible`]): a deleted
/// resource is what its ledger entry kept ([`Observation::as_deleted`]).
pub fn observation_with(rng: &mut Rng, metadata: &Metadata) -> Observation {
    let now_ms = 1_700_000_000_000 + rng.below(1_000_000_000);
    let spec_node = rng.pick(&NODES).to_string();
    let spec_disks = disks(rng);
    let cached = rng.chance(50);
    let name = format!("pool-{}", rng.below(50));
    let mut o = Observation {
        now_ms,
        pool: PoolResource {
            name: name.clone(),
            namespace: "mayastor".into(),
            uid: format!("uid-{}", rng.below(1000)),
            generation: 1 + rng.below(4) as i64,
            status_state: rng.chance(80).then(|| *rng.pick(&STATES)),
            status_node: cached.then(|| {
                if rng.chance(80) {
                    spec_node.clone()
                } else {
                    rng.pick(&NODES).to_string()
                }
            }),
            status_disks: cached.then(|| {
                if rng.chance(80) {
                    spec_disks.clone()
                } else {
                    disks(rng)
                }
            }),
            status_reason: rng.chance(30).then(|| "some earlier reason".to_string()),
            deleted: rng.chance(15),
            spec_node,
            spec_disks,
            ..PoolResource::default()
        },
        node: K8sNode {
            exists: rng.chance(90),
            mayastor_enabled: rng.chance(85),
        },
        storage_node: StorageNode {
            registered: rng.chance(85),
            heartbeat_age_ms: rng.chance(90).then(|| rng.below(20_000)),
            reachable: rng.chance(90),
            endpoint: if rng.chance(90) {
                format!("10.0.0.{}:10124", rng.below(250))
            } else {
                String::new()
            },
        },
        pools_known: rng.chance(90),
        reported: rng.chance(50).then(|| ReportedPool {
            name,
            disks: vec![format!(
                "aio://{}?uuid={}",
                rng.pick(&DISKS),
                rng.below(1 << 20)
            )],
            state: *rng.pick(&REPORTED),
            capacity: rng.below(1 << 40),
            used: rng.below(1 << 30),
            replicas: rng.chance(80).then(|| {
                if rng.chance(50) {
                    0
                } else {
                    rng.below(8) as u32
                }
            }),
        }),
        in_ledger: rng.chance(50),
        last_operation: rng.chance(50).then(|| {
            let failed = rng.chance(60);
            let range = if rng.chance(10) { 1_000 } else { 12 };
            LastOperation {
                action: *rng.pick(&ACTIONS),
                error: failed.then(|| OperationError {
                    kind: *rng.pick(&KINDS),
                    message: format!("error {}", rng.below(100)),
                }),
                failures: if failed {
                    1 + rng.below(range) as u32
                } else {
                    0
                },
                at_ms: now_ms.saturating_sub(rng.below(600_000)),
            }
        }),
        conflicts: if rng.chance(15) {
            vec![format!("pool-{}", rng.below(50))]
        } else {
            vec![]
        },
        ..Observation::default()
    };
    // What 0.2 added, drawn last so earlier fields stay as 0.1-era seeds made them.
    o.settings.heartbeat_deadline_ms = *rng.pick(&DEADLINES);
    draw_metadata(rng, &metadata.labels, &mut o.pool.labels);
    draw_metadata(rng, &metadata.annotations, &mut o.pool.annotations);
    if o.pool.deleted {
        o = o.as_deleted();
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_observation_drawn_is_one_the_host_makes() {
        let mut metadata = Metadata::default();
        Metadata::add(&mut metadata.labels, "keep", []);
        metadata.fill_values();
        let mut rng = Rng::new(11);
        let (mut deleted, mut keep) = (0, 0);
        for _ in 0..5_000 {
            let o = observation_with(&mut rng, &metadata);
            assert_eq!(o.possible(), Ok(()), "{o:?}");
            deleted += usize::from(o.pool.deleted);
            keep += usize::from(o.pool.deleted && o.pool.labels.contains_key("keep"));
        }
        assert!(
            deleted > 500 && keep > 50,
            "{deleted} deleted, {keep} with keep"
        );
    }
}
