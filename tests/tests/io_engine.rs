//! The operator on the real OpenEBS Mayastor io-engine, end to end on a real
//! kube-apiserver and loop devices: the seed's lifecycle (create, list,
//! delete with the pool gone from the engine), deletion while the operator
//! is down, a SIGKILLed engine (offline, restarted, the pool re-imported with
//! the bytes written before intact), no disk holding data formatted, and a
//! pool holding replicas kept past its resource's deletion (and an engine
//! restart) until they are gone, with a data pattern written through one of
//! them (NVMe-oF over loopback, the test's own NVMe/TCP host) read back
//! intact 30 s after the delete and after the restart.
//!
//! Each test takes the machine's io-engine slot (one engine at a time), so
//! they run one after the other even within this binary.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::DeleteParams;
use msp_operator::state::crd::{MayastorPool, PoolState};
use msp_proto::v1;
use msp_tests::io_engine::{EngineScene, IoEngine, host, require_io_engine};
use msp_tests::loopdev::{LoopDevice, MIB, pattern, read_at, write_at};
use msp_tests::operator::{
    Operator, WAIT, create_pool, ledger_pools, online, pool_status, wait_for, wait_pool,
};
use msp_tests::sh;

/// Large enough for an lvs pool with room to spare (4 MiB clusters).
const DISK: u64 = 128 * MIB;

async fn engine_pool_names(engine: &IoEngine) -> Vec<String> {
    let mut names: Vec<String> = engine
        .pools()
        .await
        .map(|p| p.into_iter().map(|p| p.name).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_lifecycle_and_deletion_while_down_on_the_real_engine() -> anyhow::Result<()> {
    if !require_io_engine() {
        return Ok(());
    }
    let mut scene = EngineScene::start("node1").await?;
    eprintln!(
        "io-engine: gRPC answering {:?} after spawn",
        scene.engine.started_in()
    );
    let admin = scene.admin.clone();
    let disk = LoopDevice::create(DISK)?;

    // Create: online, with the resource's path in status while the engine
    // reports the disk as a URI.
    let t = Instant::now();
    create_pool(&admin, "my-new-pool", "node1", &[disk.path_str()]).await?;
    let s = wait_pool(&admin, "my-new-pool", WAIT, "online", online).await?;
    eprintln!("create -> online on the real io-engine: {:?}", t.elapsed());
    assert_eq!(s.disks, Some(vec![disk.path_str()]));
    assert!(s.capacity.is_some_and(|c| c > 0), "{s:?}");
    let pools = scene.engine.pools().await?;
    assert_eq!(pools.len(), 1, "{pools:?}");
    assert_eq!(pools[0].name, "my-new-pool");
    let uri = &pools[0].disks[0];
    assert!(
        uri.starts_with(&format!("aio://{}?uuid=", disk.path_str())),
        "the engine reports {uri}"
    );
    assert_eq!(ledger_pools(&admin, "node1").await?, vec!["my-new-pool"]);

    // The seed's list.
    let mut get = scene.cp.kubectl();
    get.args(["-n", "mayastor", "get", "msp"]);
    let listed = msp_tests::control_plane::run(get).await?;
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("my-new-pool") && l.contains("online")),
        "{listed}"
    );

    // Delete: the pool is gone from the engine and from the ledger.
    let api: Api<MayastorPool> = Api::namespaced(admin.clone(), "mayastor");
    api.delete("my-new-pool", &DeleteParams::default()).await?;
    wait_for("my-new-pool destroyed on the engine", WAIT, || async {
        engine_pool_names(&scene.engine).await.is_empty()
    })
    .await?;
    wait_for("ledger empty", WAIT, || async {
        ledger_pools(&admin, "node1")
            .await
            .is_ok_and(|l| l.is_empty())
    })
    .await?;

    // Deleted while the operator is down: destroyed once it is back.
    create_pool(&admin, "doomed", "node1", &[disk.path_str()]).await?;
    wait_pool(&admin, "doomed", WAIT, "online", online).await?;
    let registration = scene.op.registration_addr();
    scene.op.stop().await?;
    api.delete("doomed", &DeleteParams::default()).await?;
    wait_for("resource gone", WAIT, || async {
        api.get_opt("doomed").await.is_ok_and(|p| p.is_none())
    })
    .await?;
    assert_eq!(engine_pool_names(&scene.engine).await, vec!["doomed"]);
    let reg = format!("--registration-addr={registration}");
    scene.op = Operator::start(admin.clone(), &[&reg, "--startup-grace=10s"]).await?;
    scene.op.wait_ready(WAIT).await?;
    wait_for("doomed destroyed after the restart", WAIT, || async {
        engine_pool_names(&scene.engine).await.is_empty()
    })
    .await?;
    wait_for("ledger empty again", WAIT, || async {
        ledger_pools(&admin, "node1")
            .await
            .is_ok_and(|l| l.is_empty())
    })
    .await?;

    // A clean stop of the engine deregisters it.
    let status = scene.engine.terminate();
    assert!(
        status.is_some_and(|s| s.success()),
        "io-engine exit after SIGTERM: {status:?}"
    );
    scene.op.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_engine_goes_offline_and_the_pool_is_reimported_with_its_data() -> anyhow::Result<()>
{
    if !require_io_engine() {
        return Ok(());
    }
    let mut scene = EngineScene::start("node1").await?;
    let admin = scene.admin.clone();
    let disk = LoopDevice::create(DISK)?;
    create_pool(&admin, "pool-1", "node1", &[disk.path_str()]).await?;
    wait_pool(&admin, "pool-1", WAIT, "online", online).await?;
    // Bytes in the pool's unallocated clusters (the last MiB): no pool
    // operation writes there, so an import that formatted the disk, or
    // wrote where it should not, shows here.
    let data = pattern(0x5A, MIB as usize);
    let at = DISK - MIB;
    write_at(disk.path(), at, &data)?;

    scene.engine.kill();
    let killed = Instant::now();
    let s = wait_pool(
        &admin,
        "pool-1",
        Duration::from_secs(15),
        "offline within 15 s of SIGKILL",
        |s| s.state == Some(PoolState::Offline),
    )
    .await?;
    eprintln!("io-engine SIGKILL -> offline in {:?}", killed.elapsed());
    assert!(
        s.reason.as_deref().is_some_and(|r| r.contains("node1")),
        "{s:?}"
    );

    tokio::task::block_in_place(|| scene.engine.restart())?;
    let restarted = Instant::now();
    let s = wait_pool(&admin, "pool-1", WAIT, "online after restart", online).await?;
    eprintln!(
        "io-engine restart -> pool re-imported and online in {:?} (engine up in {:?})",
        restarted.elapsed(),
        scene.engine.started_in()
    );
    assert_eq!(s.disks, Some(vec![disk.path_str()]));
    assert_eq!(engine_pool_names(&scene.engine).await, vec!["pool-1"]);
    assert_eq!(
        read_at(disk.path(), at, data.len())?,
        data,
        "bytes changed across the kill and the re-import"
    );
    scene.op.stop().await?;
    Ok(())
}

/// Unmounts a directory on drop, so that a failing test leaves no mount
/// (declared after the loop devices: it drops first).
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        host::unmount(&self.0);
    }
}

/// One disk prepared with data, what the refusal must name, and how to free it.
struct Holder {
    pool: &'static str,
    disk: LoopDevice,
    needle: &'static str,
    wipe: String,
    hash: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_disk_holding_data_is_formatted_by_the_real_engine() -> anyhow::Result<()> {
    if !require_io_engine() {
        return Ok(());
    }
    let scene = EngineScene::start("node1").await?;
    let admin = scene.admin.clone();
    let mnt = tempfile::tempdir()?;
    // No LVM devices file: the loop device must not be remembered by LVM.
    let lvm = "--config 'devices { use_devicesfile = 0 }'";

    // The io-engine sees a partition table only through the partitions the
    // kernel shows, and this machine's kernel parses none
    // (CONFIG_EFI_PARTITION and CONFIG_MSDOS_PARTITION are off). `partx -a`
    // reads the GPT in user space and adds its partitions with the BLKPG
    // ioctl: what the kernel's own scan does elsewhere, so the engine then
    // sees the table as it would on any machine.
    let mut holders = Vec::new();
    // Before the first mount, and after `holders` so that it drops first: a
    // failure half way must not leave a mount pinning a loop device.
    let _unmount = Unmount(mnt.path().to_path_buf());
    for (pool, needle, partitionable) in [
        ("p-ext4", "filesystem (ext4)", false),
        ("p-lvm", "LVM physical volume", false),
        ("p-mounted", "is mounted at", false),
        ("p-gpt", "partition table with partitions", true),
    ] {
        let disk = if partitionable {
            LoopDevice::create_partitionable(DISK)?
        } else {
            LoopDevice::create(DISK)?
        };
        let dev = disk.path_str();
        let mnt = mnt.path().display();
        let wipe = match pool {
            "p-ext4" => {
                sh(&format!("mkfs.ext4 -q -F {dev}"))?;
                format!("wipefs -a -q {dev}")
            }
            "p-lvm" => {
                sh(&format!("pvcreate -q {lvm} -ff -y {dev}"))?;
                format!("pvremove -q {lvm} -ff -y {dev} >/dev/null; wipefs -a -q {dev}")
            }
            "p-gpt" => {
                // (sgdisk -q writes nothing: no -q.)
                sh(&format!(
                    "sgdisk -n 1:0:+8M {dev} >/dev/null && partx -a {dev}"
                ))?;
                format!("partx -d {dev}; wipefs -a -q {dev}")
            }
            _ => {
                // Read-only, so that the kernel writes nothing either while
                // the hashes are compared.
                sh(&format!("mkfs.ext4 -q -F {dev} && mount -o ro {dev} {mnt}"))?;
                format!("umount {mnt} && wipefs -a -q {dev}")
            }
        };
        host::retrigger(disk.path());
        let hash = disk.sha256_hex()?;
        holders.push(Holder {
            pool,
            disk,
            needle,
            wipe,
            hash,
        });
    }
    for h in &holders {
        create_pool(&admin, h.pool, "node1", &[h.disk.path_str()]).await?;
    }
    for h in &holders {
        let s = wait_pool(&admin, h.pool, WAIT, "pending, naming the data", |s| {
            s.state == Some(PoolState::Pending)
                && s.reason.as_deref().is_some_and(|r| r.contains(h.needle))
        })
        .await?;
        eprintln!("{}: {}", h.pool, s.reason.unwrap_or_default());
    }
    // A few more rounds of retries, then nothing may have changed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for h in &holders {
        let s = pool_status(&admin, h.pool).await?;
        assert_eq!(s.state, Some(PoolState::Pending), "{}: {s:?}", h.pool);
        assert_eq!(h.disk.sha256_hex()?, h.hash, "{}: disk written", h.pool);
    }
    assert!(engine_pool_names(&scene.engine).await.is_empty());

    // The admin wipes the disks: the same resources come online untouched.
    for h in &holders {
        sh(&h.wipe)?;
        host::retrigger(h.disk.path());
    }
    for h in &holders {
        let s = wait_pool(&admin, h.pool, WAIT, "online after wipefs", online).await?;
        assert_eq!(s.disks, Some(vec![h.disk.path_str()]));
    }
    assert_eq!(
        engine_pool_names(&scene.engine).await,
        vec!["p-ext4", "p-gpt", "p-lvm", "p-mounted"]
    );
    scene.op.stop().await?;
    Ok(())
}

/// The `msp-operator` binary next to this test's binary (`cargo test
/// --workspace` builds it).
fn operator_binary() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("msp-operator");
    path.exists().then_some(path)
}

/// The operator binary as a child process, SIGKILLed on drop.
struct OperatorProcess(std::process::Child);

impl OperatorProcess {
    fn start(
        bin: &std::path::Path,
        cp: &msp_tests::control_plane::ControlPlane,
        registration: std::net::SocketAddr,
    ) -> anyhow::Result<OperatorProcess> {
        let child = Command::new(bin)
            .arg("run")
            .arg(format!("--registration-addr={registration}"))
            .args([
                "--metrics-addr=127.0.0.1:0",
                "--namespace=mayastor",
                "--operator-namespace=mayastor",
                "--startup-grace=10s",
            ])
            .args(
                msp_tests::operator::FAST_FLAGS
                    .iter()
                    .filter(|f| !f.starts_with("--startup-grace")),
            )
            .env("KUBECONFIG", cp.kubeconfig())
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        Ok(OperatorProcess(child))
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Pool name → uuid on the engine.
async fn engine_uuids(engine: &IoEngine) -> BTreeMap<String, String> {
    engine
        .pools()
        .await
        .map(|p| p.into_iter().map(|p| (p.name, p.uuid)).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_killed_during_churn_converges_and_keeps_live_pools() -> anyhow::Result<()> {
    if !require_io_engine() {
        return Ok(());
    }
    let bin = operator_binary();
    if !msp_tests::require(
        "the msp-operator binary (cargo build -p msp-operator)",
        bin.is_some(),
    ) {
        return Ok(());
    }
    let bin = bin.expect("checked");
    // The in-process operator only brings the engine up; the binary does the churn.
    let scene = EngineScene::start("node1").await?;
    let registration = scene.op.registration_addr();
    let admin = scene.admin.clone();
    let disks: Vec<LoopDevice> = (0..5)
        .map(|_| LoopDevice::create(DISK))
        .collect::<Result<_, _>>()?;
    // Two pools that live through it all.
    for (i, name) in ["keep-0", "keep-1"].iter().enumerate() {
        create_pool(&admin, name, "node1", &[disks[i].path_str()]).await?;
    }
    for name in ["keep-0", "keep-1"] {
        wait_pool(&admin, name, WAIT, "online", online).await?;
    }
    let kept = engine_uuids(&scene.engine).await;
    scene.op.stop().await?;

    let api: Api<MayastorPool> = Api::namespaced(admin.clone(), "mayastor");
    let mut op = Some(OperatorProcess::start(&bin, &scene.cp, registration)?);
    let mut kills = 0;
    for round in 0..6u64 {
        let disk = &disks[2 + (round as usize % 3)];
        let name = format!("churn-{round}");
        // A new pool on the disk the previous round's pool may still hold:
        // it waits for the disk, or takes it once free.
        create_pool(&admin, &name, "node1", &[disk.path_str()]).await?;
        tokio::time::sleep(Duration::from_millis(150 * (round % 4))).await;
        if round % 2 == 1 {
            api.delete(&format!("churn-{}", round - 1), &DeleteParams::default())
                .await?;
        }
        tokio::time::sleep(Duration::from_millis(100 * (round % 3))).await;
        // kill -9 in the middle of it, then start again.
        drop(op.take());
        kills += 1;
        op = Some(OperatorProcess::start(&bin, &scene.cp, registration)?);
    }
    // Delete the rest of the churn, leave the keepers.
    for round in 0..6u64 {
        let _ = api
            .delete(&format!("churn-{round}"), &DeleteParams::default())
            .await;
    }
    wait_for("only the keepers on the engine", WAIT * 2, || async {
        engine_uuids(&scene.engine)
            .await
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            == vec!["keep-0", "keep-1"]
    })
    .await?;
    wait_for("ledger holds only the keepers", WAIT, || async {
        ledger_pools(&admin, "node1")
            .await
            .is_ok_and(|l| l == vec!["keep-0", "keep-1"])
    })
    .await?;
    // The keepers are the very pools made before (same uuids), online.
    assert_eq!(
        engine_uuids(&scene.engine).await,
        kept,
        "a live pool was re-made"
    );
    for name in ["keep-0", "keep-1"] {
        wait_pool(&admin, name, WAIT, "online", online).await?;
    }
    eprintln!("converged after {kills} kills of the operator");
    drop(op);
    Ok(())
}

/// The engine's answer to a replica call, for the note: OK or the code and message.
fn answer<T: std::fmt::Debug>(r: &Result<tonic::Response<T>, tonic::Status>) -> String {
    match r {
        Ok(_) => "OK".into(),
        Err(s) => format!("{:?}: {}", s.code(), s.message()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_holding_replicas_is_kept_on_the_real_engine() -> anyhow::Result<()> {
    if !require_io_engine() {
        return Ok(());
    }
    let mut scene = EngineScene::start("node1").await?;
    let admin = scene.admin.clone();
    let disk = LoopDevice::create(DISK)?;
    create_pool(&admin, "data", "node1", &[disk.path_str()]).await?;
    wait_pool(&admin, "data", WAIT, "online", online).await?;

    // Two replicas, as Mayastor's control plane makes them.
    let mut rep = v1::replica_rpc_client::ReplicaRpcClient::connect(scene.engine.uri()).await?;
    let create = |uuid: &str, pool: &str| v1::CreateReplicaRequest {
        name: uuid.into(),
        uuid: uuid.into(),
        pooluuid: pool.into(),
        size: 32 * MIB,
        ..Default::default()
    };
    let (u1, u2) = (
        "11111111-1111-4111-8111-111111111111",
        "22222222-2222-4222-8222-222222222222",
    );
    for u in [u1, u2] {
        rep.create_replica(create(u, "data")).await?;
    }
    let again = rep.create_replica(create(u1, "data")).await;
    eprintln!(
        "engine: CreateReplica of an existing uuid: {}",
        answer(&again)
    );
    let nowhere = rep
        .create_replica(create("33333333-3333-4333-8333-333333333333", "nowhere"))
        .await;
    eprintln!(
        "engine: CreateReplica on an unknown pool: {}",
        answer(&nowhere)
    );
    let unknown = rep
        .destroy_replica(v1::DestroyReplicaRequest {
            uuid: "44444444-4444-4444-8444-444444444444".into(),
            pool: None,
        })
        .await;
    eprintln!(
        "engine: DestroyReplica of an unknown uuid: {}",
        answer(&unknown)
    );
    let listed = |pool: &str| v1::ListReplicaOptions {
        poolname: Some(pool.into()),
        ..Default::default()
    };
    let of_unknown = rep.list_replicas(listed("nowhere")).await;
    eprintln!(
        "engine: ListReplicas of an unknown pool: {} {:?}",
        answer(&of_unknown),
        of_unknown.as_ref().map(|r| r.get_ref().replicas.len()).ok()
    );
    let on_pool = rep
        .list_replicas(listed("data"))
        .await?
        .into_inner()
        .replicas;
    eprintln!(
        "engine: ListReplicas of the pool: {:?}",
        on_pool
            .iter()
            .map(|r| (
                &r.uuid,
                &r.poolname,
                r.size,
                r.is_snapshot,
                r.is_clone,
                &r.uri
            ))
            .collect::<Vec<_>>()
    );
    assert_eq!(on_pool.len(), 2);
    // The operator's one listing of the node's replicas counts them.
    let counted = Instant::now();
    wait_pool(&admin, "data", WAIT, "2 replicas", |s| {
        s.replicas == Some(2)
    })
    .await?;
    eprintln!(
        "status.replicas at 2 {:?} after the replicas",
        counted.elapsed()
    );

    // A data pattern written through the first replica: the engine's own
    // NVMe-oF target on loopback, this test's NVMe/TCP host.
    let (offset, data) = (4 * MIB, pattern(0x5d, MIB as usize));
    let mut host = scene.engine.replica_host(u1).await?;
    eprintln!(
        "replica {u1} over NVMe/TCP: {} bytes in blocks of {}",
        host.size(),
        host.block_size()
    );
    let wrote = Instant::now();
    host.write(offset, &data).await?;
    eprintln!("1 MiB written through the replica in {:?}", wrote.elapsed());
    assert!(
        host.read(offset, data.len()).await? == data,
        "written, not read back"
    );
    drop(host);
    rep.unshare_replica(v1::UnshareReplicaRequest { uuid: u1.into() })
        .await?;

    // Deleted: kept, said, counted.
    let api: Api<MayastorPool> = Api::namespaced(admin.clone(), "mayastor");
    let deleted = Instant::now();
    api.delete("data", &DeleteParams::default()).await?;
    msp_tests::operator::wait_event(&admin, "data", "PoolKept").await?;
    eprintln!("PoolKept {:?} after the delete", deleted.elapsed());
    for (reason, note) in msp_tests::operator::pool_events(&admin, "data").await? {
        eprintln!("event {reason}: {note}");
    }
    let held = "msp_pools_held{node=\"node1\"}";
    wait_for("gauge of held pools at 1", WAIT, || async {
        scene.op.metric(held).await == Some(1.0)
    })
    .await?;
    // 30 s after the delete: the pool, both replicas, the pattern.
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(deleted.elapsed())).await;
    assert_eq!(engine_pool_names(&scene.engine).await, vec!["data"]);
    assert_eq!(
        rep.list_replicas(listed("data"))
            .await?
            .into_inner()
            .replicas
            .len(),
        2
    );
    assert!(
        scene.engine.read_replica(u1, offset, data.len()).await? == data,
        "the pattern changed on the held pool"
    );

    // The engine restarts (it loads no pool by itself): the held pool is
    // imported to be checked, and kept, with both replicas.
    tokio::task::block_in_place(|| scene.engine.restart())?;
    wait_for(
        "the held pool back on the engine with its replicas",
        WAIT,
        || async {
            let Ok(mut c) =
                v1::replica_rpc_client::ReplicaRpcClient::connect(scene.engine.uri()).await
            else {
                return false;
            };
            c.list_replicas(listed("data"))
                .await
                .is_ok_and(|r| r.get_ref().replicas.len() == 2)
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(engine_pool_names(&scene.engine).await, vec!["data"]);
    assert_eq!(ledger_pools(&admin, "node1").await?, vec!["data"]);
    assert!(
        scene.engine.read_replica(u1, offset, data.len()).await? == data,
        "the pattern changed across the engine's restart"
    );
    eprintln!("the pattern read back intact 30 s after the delete and after the restart");

    // Emptied: destroyed within a sweep period or so.
    let mut rep = v1::replica_rpc_client::ReplicaRpcClient::connect(scene.engine.uri()).await?;
    for u in [u1, u2] {
        rep.destroy_replica(v1::DestroyReplicaRequest {
            uuid: u.into(),
            pool: None,
        })
        .await?;
    }
    let emptied = Instant::now();
    wait_for("the emptied pool destroyed on the engine", WAIT, || async {
        engine_pool_names(&scene.engine).await.is_empty()
    })
    .await?;
    eprintln!(
        "held pool destroyed {:?} after its last replica",
        emptied.elapsed()
    );
    wait_for("ledger empty, gauge 0", WAIT, || async {
        ledger_pools(&admin, "node1")
            .await
            .is_ok_and(|l| l.is_empty())
            && scene.op.metric(held).await == Some(0.0)
    })
    .await?;
    // The rail's cost (printed, not asserted): a kept pool's time is the
    // listing alone; a destroyed one's includes DestroyPool.
    for step in ["contents", "destroy"] {
        let series = |s: &str| format!("msp_reconcile_step_seconds_{s}{{step=\"{step}\"}}");
        if let (Some(sum), Some(n)) = (
            scene.op.metric(&series("sum")).await,
            scene.op.metric(&series("count")).await,
        ) && n > 0.0
        {
            eprintln!(
                "deleted path on the engine, {step}: {n} times, mean {:.2} ms",
                sum / n * 1e3
            );
        }
    }
    scene.op.stop().await?;
    Ok(())
}
