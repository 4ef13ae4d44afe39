//! Differential test: one scripted sequence of v1 pool and replica calls
//! (create, repeat, conflict, list, export, import, replicas created,
//! repeated, on an unknown pool, destroyed, a pool destroyed with its
//! replica, destroy again, bad paths) run
//! against the stand-in storage node and against the real io-engine, each on
//! fresh loop devices of its own. Both must answer each step with the same
//! gRPC code and list the same pools and replicas afterwards, except the differences
//! documented in [`DIFFERENCES`] (deliberate, and in the README).

use std::collections::BTreeMap;

use msp_proto::v1;
use msp_tests::io_engine::{IoEngine, IoEngineOptions, require_io_engine};
use msp_tests::loopdev::{LoopDevice, MIB};
use msp_tests::storage_node::process::{StorageNodeOptions, StorageNodeProcess};
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");

/// Steps whose answer differs on purpose: (step, stand-in's code, engine's code, why).
const DIFFERENCES: &[(&str, Code, Code, &str)] = &[(
    "create on an ext4 disk",
    Code::FailedPrecondition,
    Code::Ok,
    "the stand-in never formats a disk holding data; the engine does (the operator's disk safety check stops it first)",
)];

/// What one step answered: its code, and the pools listed after it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    code: Code,
    listed: Vec<String>,
}

fn code<T>(r: Result<T, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => {
            eprintln!("    {:?}: {}", s.code(), s.message());
            s.code()
        }
    }
}

/// Runs the script against the node at `uri`; each entry is a step name and
/// what it answered.
async fn script(uri: String) -> anyhow::Result<Vec<(String, Answer)>> {
    let d1 = LoopDevice::create(128 * MIB)?;
    let d2 = LoopDevice::create(128 * MIB)?;
    let ext4 = LoopDevice::create(128 * MIB)?;
    let out = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(ext4.path())
        .output()?;
    anyhow::ensure!(out.status.success(), "mkfs.ext4 failed");
    let mut c = v1::pool_rpc_client::PoolRpcClient::connect(uri.clone()).await?;
    let mut r = v1::replica_rpc_client::ReplicaRpcClient::connect(uri).await?;
    let replica = |uuid: &str, pool: &str, size: u64| v1::CreateReplicaRequest {
        name: uuid.into(),
        uuid: uuid.into(),
        pooluuid: pool.into(),
        size,
        ..Default::default()
    };
    let (r1, r2) = (
        "11111111-1111-4111-8111-111111111111",
        "22222222-2222-4222-8222-222222222222",
    );
    let create = |name: &str, disks: Vec<String>| v1::CreatePoolRequest {
        name: name.into(),
        disks,
        ..Default::default()
    };
    let import = |name: &str, disks: Vec<String>| v1::ImportPoolRequest {
        name: name.into(),
        disks,
        ..Default::default()
    };
    let destroy = |name: &str| v1::DestroyPoolRequest {
        name: name.into(),
        uuid: None,
    };
    let (a, b) = (d1.path_str(), d2.path_str());
    let mut answers = Vec::new();
    macro_rules! step {
        ($name:expr, $call:expr) => {{
            eprintln!("  {}", $name);
            let code = code($call.await);
            let mut listed: Vec<String> = c
                .list_pools(v1::ListPoolOptions::default())
                .await?
                .into_inner()
                .pools
                .into_iter()
                .map(|p| {
                    format!(
                        "{} on {}",
                        p.name,
                        p.disks.join(",").split('?').next().unwrap_or("")
                    )
                })
                .collect();
            listed.sort();
            // What the pools hold, too (replica steps, and a destroyed pool's).
            let mut replicas: Vec<String> = r
                .list_replicas(v1::ListReplicaOptions::default())
                .await?
                .into_inner()
                .replicas
                .into_iter()
                .map(|x| format!("replica {} on {} {}", x.uuid, x.poolname, x.size))
                .collect();
            replicas.sort();
            listed.extend(replicas);
            answers.push(($name.to_string(), Answer { code, listed }));
        }};
    }
    step!("create", c.create_pool(create("a", vec![a.clone()])));
    step!("create again", c.create_pool(create("a", vec![a.clone()])));
    step!(
        "create again as a URI",
        c.create_pool(create("a", vec![format!("aio://{a}")]))
    );
    step!(
        "create another name on a claimed disk",
        c.create_pool(create("b", vec![a.clone()]))
    );
    step!(
        "create the same name on another disk",
        c.create_pool(create("a", vec![b.clone()]))
    );
    step!(
        "export",
        c.export_pool(v1::ExportPoolRequest {
            name: "a".into(),
            uuid: None
        })
    );
    step!("import", c.import_pool(import("a", vec![a.clone()])));
    step!("import again", c.import_pool(import("a", vec![a.clone()])));
    step!(
        "import from a blank disk",
        c.import_pool(import("c", vec![b.clone()]))
    );
    step!(
        "replica create",
        r.create_replica(replica(r1, "a", 32 * MIB))
    );
    step!(
        "replica create again",
        r.create_replica(replica(r1, "a", 32 * MIB))
    );
    step!(
        "replica create on an unknown pool",
        r.create_replica(replica(r2, "nowhere", 32 * MIB))
    );
    step!(
        "replica destroy of an unknown uuid",
        r.destroy_replica(v1::DestroyReplicaRequest {
            uuid: r2.into(),
            pool: None
        })
    );
    step!(
        "replica create, second",
        r.create_replica(replica(r2, "a", 32 * MIB))
    );
    step!(
        "replica destroy",
        r.destroy_replica(v1::DestroyReplicaRequest {
            uuid: r2.into(),
            pool: None
        })
    );
    step!("destroy", c.destroy_pool(destroy("a")));
    step!(
        "import the destroyed pool",
        c.import_pool(import("a", vec![a.clone()]))
    );
    step!("destroy again", c.destroy_pool(destroy("a")));
    step!("create with no disks", c.create_pool(create("d", vec![])));
    step!(
        "create on a missing device",
        c.create_pool(create("e", vec!["/dev/msp-no-such-disk".into()]))
    );
    step!(
        "import from a missing device",
        c.import_pool(import("e", vec!["/dev/msp-no-such-disk".into()]))
    );
    step!(
        "create with an unknown scheme",
        c.create_pool(create("f", vec!["bogus:///dev/x".into()]))
    );
    step!(
        "create on an ext4 disk",
        c.create_pool(create("g", vec![ext4.path_str()]))
    );
    // Whatever the last step did, leave no pool behind.
    for name in ["a", "b", "c", "d", "e", "f", "g"] {
        let _ = c.destroy_pool(destroy(name)).await;
    }
    // Disk names differ between the two runs: compare by role.
    for (_, answer) in &mut answers {
        for l in &mut answer.listed {
            *l = l.replace(&a, "d1").replace(&b, "d2");
            *l = l.replace("aio://", "");
        }
    }
    Ok(answers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stand_in_answers_as_the_real_engine() -> anyhow::Result<()> {
    if !require_io_engine() {
        return Ok(());
    }
    eprintln!("stand-in:");
    let node = StorageNodeProcess::start(BIN, StorageNodeOptions::new("diff-sn"))?;
    let stand_in = script(node.uri()).await?;
    drop(node);
    eprintln!("io-engine:");
    let engine = tokio::task::block_in_place(|| IoEngine::start(IoEngineOptions::new("diff-ioe")))?;
    let real = script(engine.uri()).await?;
    drop(engine);

    let differences: BTreeMap<&str, (Code, Code)> = DIFFERENCES
        .iter()
        .map(|(s, a, b, _)| (*s, (*a, *b)))
        .collect();
    let mut mismatches = Vec::new();
    for ((step, ours), (_, theirs)) in stand_in.iter().zip(&real) {
        let line = format!(
            "{step:45} stand-in {:?} {:?} | io-engine {:?} {:?}",
            ours.code, ours.listed, theirs.code, theirs.listed
        );
        eprintln!("{line}");
        match differences.get(step.as_str()) {
            Some(&(want_ours, want_theirs))
                if ours.code != want_ours || theirs.code != want_theirs =>
            {
                mismatches.push(format!("documented difference changed: {line}"));
            }
            Some(_) => {}
            None if ours != theirs => mismatches.push(line),
            None => {}
        }
    }
    assert_eq!(stand_in.len(), real.len());
    assert!(
        mismatches.is_empty(),
        "differences:\n{}",
        mismatches.join("\n")
    );
    Ok(())
}
