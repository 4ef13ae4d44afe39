//! Times the storage node's pool operations on a loop device, through the
//! real `storage-node` binary and its gRPC API: CreatePool of a new pool,
//! CreatePool that imports (after ExportPool, as after a restart), and
//! ListPools with one pool (which reads each disk's label and read-only flag).
//! Prints the numbers; asserts nothing about them.
//!
//! Run: `cargo bench -p msp-tests --bench storage_node` (as root).

use std::time::{Duration, Instant};

use msp_policy_engine::percentile::percentile;
use msp_proto::v1;
use msp_tests::loopdev::LoopDevice;
use msp_tests::storage_node::process::{StorageNodeOptions, StorageNodeProcess};

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");
const ROUNDS: usize = 30;
const LISTS_PER_ROUND: usize = 20;

fn summary(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let pct = |p: f64| percentile(&v, p).unwrap_or_default();
    println!(
        "{name:<32} n={:<4} p50={:>9.3?} p90={:>9.3?} max={:>9.3?}",
        v.len(),
        pct(50.0),
        pct(90.0),
        pct(100.0)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if !msp_tests::require("root and loop devices (losetup)", LoopDevice::available()) {
        return Ok(());
    }
    let disk = LoopDevice::create(256 * 1024 * 1024)?;
    println!(
        "storage node on {} (256 MiB loop device), gRPC round trips:",
        disk.path().display()
    );
    run(&disk, "", Vec::new()).await?;
    // The same without the extra `blkid -p` probe (a fork and exec per disk).
    run(&disk, " --no-blkid", vec!["--no-blkid".into()]).await
}

async fn run(disk: &LoopDevice, label: &str, extra_args: Vec<String>) -> anyhow::Result<()> {
    let mut opts = StorageNodeOptions::new("bench-node");
    opts.extra_args = extra_args;
    let node = StorageNodeProcess::start(BIN, opts)?;
    let mut c = v1::pool_rpc_client::PoolRpcClient::connect(node.uri()).await?;
    let (mut create, mut import, mut list) = (Vec::new(), Vec::new(), Vec::new());

    for round in 0..ROUNDS {
        let name = format!("bench-{round}");
        let req = v1::CreatePoolRequest {
            name: name.clone(),
            disks: vec![disk.path_str()],
            ..Default::default()
        };
        let t = Instant::now();
        c.create_pool(req.clone()).await?;
        create.push(t.elapsed());

        for _ in 0..LISTS_PER_ROUND {
            let t = Instant::now();
            let pools = c
                .list_pools(v1::ListPoolOptions::default())
                .await?
                .into_inner();
            list.push(t.elapsed());
            anyhow::ensure!(pools.pools.len() == 1, "one pool expected");
        }

        c.export_pool(v1::ExportPoolRequest {
            name: name.clone(),
            uuid: None,
        })
        .await?;
        let t = Instant::now();
        c.create_pool(req).await?;
        import.push(t.elapsed());

        c.destroy_pool(v1::DestroyPoolRequest { name, uuid: None })
            .await?;
    }
    summary(&format!("CreatePool (new){label}"), create);
    summary(&format!("CreatePool (imports){label}"), import);
    summary(&format!("ListPools (1 pool){label}"), list);
    Ok(())
}
