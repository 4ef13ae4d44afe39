//! Every way CreatePool (and its neighbours) can fail answers with the right
//! gRPC code and a message that says why, through both the v1 and v0 APIs.

use std::os::unix::fs::{FileExt, OpenOptionsExt};

use msp_proto::{v0, v1};
use msp_tests::loopdev::LoopDevice;
use msp_tests::storage_node::label::{Label, LabelRead};
use msp_tests::storage_node::process::{StorageNodeOptions, StorageNodeProcess};
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");
const MIB: u64 = 1024 * 1024;

type Client = v1::pool_rpc_client::PoolRpcClient<tonic::transport::Channel>;

fn expect<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, text: &str) {
    match r {
        Ok(v) => panic!("expected {code:?} ({text}), got Ok({v:?})"),
        Err(e) => {
            assert_eq!(e.code(), code, "{text}: {e:?}");
            assert!(
                e.message().contains(text),
                "message {:?} should contain {text:?}",
                e.message()
            );
        }
    }
}

fn req(name: &str, disks: &[String]) -> v1::CreatePoolRequest {
    v1::CreatePoolRequest {
        name: name.into(),
        disks: disks.to_vec(),
        ..Default::default()
    }
}

async fn create(c: &mut Client, name: &str, disks: &[String]) -> Result<v1::Pool, tonic::Status> {
    c.create_pool(req(name, disks))
        .await
        .map(|r| r.into_inner())
}

fn label_at(path: &std::path::Path) -> LabelRead {
    let mut buf = vec![0u8; 4096];
    match std::fs::File::open(path).and_then(|f| f.read_exact_at(&mut buf, 0)) {
        Ok(()) => Label::decode(&buf),
        Err(e) => panic!("reading {}: {e}", path.display()),
    }
}

/// Argument errors need no disks at all, nor root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argument_errors() -> anyhow::Result<()> {
    let node = StorageNodeProcess::start(BIN, StorageNodeOptions::new("sn-err-args"))?;
    let mut c = Client::connect(node.uri()).await?;
    let dev = |s: &str| vec![s.to_owned()];

    expect(
        create(&mut c, "p", &[]).await,
        Code::InvalidArgument,
        "Missing devices",
    );
    expect(
        create(&mut c, "", &dev("/dev/loop0")).await,
        Code::InvalidArgument,
        "pool name",
    );
    expect(
        create(&mut c, &"n".repeat(256), &dev("/dev/loop0")).await,
        Code::InvalidArgument,
        "pool name",
    );
    expect(
        create(&mut c, "p", &dev("/etc/passwd")).await,
        Code::InvalidArgument,
        "outside",
    );
    expect(
        create(&mut c, "p", &dev("/dev/../etc/passwd")).await,
        Code::InvalidArgument,
        "'..'",
    );
    expect(
        create(&mut c, "p", &dev("loop0")).await,
        Code::InvalidArgument,
        "not absolute",
    );
    expect(
        create(&mut c, "p", &dev("nvmf://10.0.0.1:4420/nqn")).await,
        Code::InvalidArgument,
        "scheme",
    );
    expect(
        create(&mut c, "p", &dev("malloc:///m")).await,
        Code::InvalidArgument,
        "size_mb",
    );
    expect(
        create(
            &mut c,
            "p",
            &["/dev/loop0".into(), "aio:///dev/loop0".into()],
        )
        .await,
        Code::InvalidArgument,
        "named twice",
    );
    expect(
        c.create_pool(v1::CreatePoolRequest {
            uuid: Some("not-a-uuid".into()),
            ..req("p", &dev("malloc:///m?size_mb=8"))
        })
        .await,
        Code::InvalidArgument,
        "invalid pool uuid",
    );
    expect(
        c.create_pool(v1::CreatePoolRequest {
            pooltype: v1::PoolType::Lvm as i32,
            ..req("p", &dev("malloc:///m?size_mb=8"))
        })
        .await,
        Code::InvalidArgument,
        "pool type",
    );
    expect(
        create(&mut c, "p", &dev("/dev/msp-no-such-disk")).await,
        Code::NotFound,
        "does not exist",
    );
    expect(
        create(&mut c, "p", &dev("/dev/null")).await,
        Code::FailedPrecondition,
        "not a block device",
    );
    expect(
        create(&mut c, "p", &dev("malloc:///tiny?size_mb=2")).await,
        Code::FailedPrecondition,
        "bytes, less than",
    );

    // Neighbours.
    expect(
        c.import_pool(v1::ImportPoolRequest {
            name: "p".into(),
            disks: dev("malloc:///blank?size_mb=8"),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "nothing to import",
    );
    expect(
        c.export_pool(v1::ExportPoolRequest {
            name: "unknown".into(),
            uuid: None,
        })
        .await,
        Code::NotFound,
        "not found",
    );
    expect(
        c.grow_pool(v1::GrowPoolRequest {
            name: "p".into(),
            uuid: None,
        })
        .await,
        Code::Unimplemented,
        "GrowPool",
    );
    // As on the io-engine.
    expect(
        c.destroy_pool(v1::DestroyPoolRequest {
            name: "unknown".into(),
            uuid: None,
        })
        .await,
        Code::NotFound,
        "not found",
    );

    // The same through v0.
    let mut c0 = v0::mayastor_client::MayastorClient::connect(node.uri()).await?;
    let v0req = |disks: Vec<String>| v0::CreatePoolRequest {
        name: "p".into(),
        disks,
    };
    expect(
        c0.create_pool(v0req(vec![])).await,
        Code::InvalidArgument,
        "Missing devices",
    );
    expect(
        c0.create_pool(v0req(dev("/tmp/x"))).await,
        Code::InvalidArgument,
        "outside",
    );
    expect(
        c0.create_pool(v0req(dev("/dev/msp-nope"))).await,
        Code::NotFound,
        "does not exist",
    );
    expect(
        c0.destroy_pool(v0::DestroyPoolRequest {
            name: "unknown".into(),
        })
        .await,
        Code::NotFound,
        "not found",
    );
    Ok(())
}

/// Conflicts between pools, uuids and labels, on malloc disks (no root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_errors_on_malloc_disks() -> anyhow::Result<()> {
    let node = StorageNodeProcess::start(BIN, StorageNodeOptions::new("sn-err-conflict"))?;
    let mut c = Client::connect(node.uri()).await?;
    let m = |n: &str| format!("malloc:///{n}?size_mb=16");

    let x = create(&mut c, "x", &[m("a")]).await?;
    assert_eq!(x.capacity, 15 * MIB);
    // Same name on other disks: invalid, as on the io-engine.
    expect(
        create(&mut c, "x", &[m("b")]).await,
        Code::InvalidArgument,
        "already exists",
    );
    // Another name on a disk of a loaded pool: busy, as on the io-engine.
    expect(
        create(&mut c, "y", &[m("a")]).await,
        Code::InvalidArgument,
        "volume is busy",
    );
    // Same name and disk, other uuid.
    expect(
        c.create_pool(v1::CreatePoolRequest {
            uuid: Some(uuid::Uuid::new_v4().to_string()),
            ..req("x", &[m("a")])
        })
        .await,
        Code::InvalidArgument,
        "uuid mismatch",
    );
    // Exported: the label (not the memory) now speaks.
    c.export_pool(v1::ExportPoolRequest {
        name: "x".into(),
        uuid: None,
    })
    .await?;
    expect(
        create(&mut c, "y", &[m("a")]).await,
        Code::InvalidArgument,
        "pool name mismatch",
    );
    expect(
        c.import_pool(v1::ImportPoolRequest {
            name: "x".into(),
            uuid: Some(uuid::Uuid::new_v4().to_string()),
            disks: vec![m("a")],
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "uuid mismatch",
    );
    let back = c
        .import_pool(v1::ImportPoolRequest {
            name: "x".into(),
            uuid: Some(x.uuid.clone()),
            disks: vec![m("a")],
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(back.uuid, x.uuid);

    // A two-disk pool, exported, then named with one disk or with a blank one.
    let two = create(&mut c, "two", &[m("c"), m("d")]).await?;
    c.export_pool(v1::ExportPoolRequest {
        name: "two".into(),
        uuid: Some(two.uuid.clone()),
    })
    .await?;
    expect(
        create(&mut c, "two", &[m("c")]).await,
        Code::FailedPrecondition,
        "spans 2 disks",
    );
    expect(
        create(&mut c, "two", &[m("c"), m("blank")]).await,
        Code::FailedPrecondition,
        "carries no pool label",
    );
    // Disk order does not matter on import.
    let again = create(&mut c, "two", &[m("d"), m("c")]).await?;
    assert_eq!(again.uuid, two.uuid);
    assert_eq!(again.disks, two.disks, "reported in label order");

    // ListPools filters.
    let only = c
        .list_pools(v1::ListPoolOptions {
            name: Some("two".into()),
            ..Default::default()
        })
        .await?
        .into_inner()
        .pools;
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].name, "two");
    let by_uuid = c
        .list_pools(v1::ListPoolOptions {
            uuid: Some(x.uuid.clone()),
            ..Default::default()
        })
        .await?
        .into_inner()
        .pools;
    assert_eq!(
        by_uuid.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["x"]
    );
    Ok(())
}

/// Errors that need real block devices: read-only, too small, in use, a
/// damaged label; and a failed multi-disk create leaves no label behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_device_errors() -> anyhow::Result<()> {
    if !msp_tests::require("root and loop devices (losetup)", LoopDevice::available()) {
        return Ok(());
    }
    let node = StorageNodeProcess::start(BIN, StorageNodeOptions::new("sn-err-block"))?;
    let mut c = Client::connect(node.uri()).await?;

    let small = LoopDevice::create(2 * MIB)?;
    expect(
        create(&mut c, "s", &[small.path_str()]).await,
        Code::FailedPrecondition,
        "less than",
    );

    let ro = LoopDevice::create(16 * MIB)?;
    ro.set_readonly(true)?;
    expect(
        create(&mut c, "r", &[ro.path_str()]).await,
        Code::FailedPrecondition,
        "read-only",
    );
    ro.set_readonly(false)?;

    // Held open exclusively by someone else (as a mount would): busy.
    let first = LoopDevice::create(16 * MIB)?;
    let busy = LoopDevice::create(16 * MIB)?;
    let holder = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(busy.path())?;
    expect(
        create(&mut c, "b", &[first.path_str(), busy.path_str()]).await,
        Code::FailedPrecondition,
        "in use",
    );
    drop(holder);
    assert_eq!(label_at(first.path()), LabelRead::Absent, "rolled back");
    assert_eq!(label_at(busy.path()), LabelRead::Absent);

    // Our magic with a bad checksum: never overwritten, never imported.
    let damaged = LoopDevice::create(16 * MIB)?;
    {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(damaged.path())?;
        f.write_all_at(b"MSPPOOL1garbage", 0)?;
        f.sync_all()?;
    }
    let before = damaged.sha256_hex()?;
    expect(
        create(&mut c, "d", &[damaged.path_str()]).await,
        Code::FailedPrecondition,
        "damaged pool label",
    );
    assert_eq!(damaged.sha256_hex()?, before);

    // After all that, the blank disks still make a pool.
    let ok = create(&mut c, "b", &[first.path_str(), busy.path_str()]).await?;
    assert_eq!(ok.disks.len(), 2);
    c.destroy_pool(v1::DestroyPoolRequest {
        name: "b".into(),
        uuid: None,
    })
    .await?;
    assert_eq!(label_at(first.path()), LabelRead::Absent);
    assert_eq!(label_at(busy.path()), LabelRead::Absent);
    Ok(())
}

/// Outside /dev only with --allow-path-prefix, and then regular files work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlisted_regular_files() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img)?.set_len(16 * MIB)?;
    let img = img.to_string_lossy().into_owned();

    let plain = StorageNodeProcess::start(BIN, StorageNodeOptions::new("sn-err-noallow"))?;
    let mut c = Client::connect(plain.uri()).await?;
    expect(
        create(&mut c, "f", std::slice::from_ref(&img)).await,
        Code::InvalidArgument,
        "outside",
    );

    let mut opts = StorageNodeOptions::new("sn-err-allow");
    opts.allow_path_prefixes = vec![dir.path().to_owned()];
    let allowed = StorageNodeProcess::start(BIN, opts)?;
    let mut c = Client::connect(allowed.uri()).await?;
    let p = create(&mut c, "f", std::slice::from_ref(&img)).await?;
    assert_eq!(p.capacity, 15 * MIB);
    assert_eq!(p.state, v1::PoolState::PoolOnline as i32);
    assert!(
        matches!(label_at(std::path::Path::new(&img)), LabelRead::Valid(l) if l.pool_name == "f")
    );
    // The backing file removed: faulted.
    std::fs::remove_file(&img)?;
    let pools = c
        .list_pools(v1::ListPoolOptions::default())
        .await?
        .into_inner()
        .pools;
    assert_eq!(pools[0].state, v1::PoolState::PoolFaulted as i32);
    Ok(())
}
