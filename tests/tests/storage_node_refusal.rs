//! The storage node refuses disks that hold something else, with
//! FAILED_PRECONDITION naming what it found, and writes not a byte to them
//! (SHA-256 of the whole device before and after).

use std::process::{Command, Stdio};

use msp_proto::v1;
use msp_tests::loopdev::LoopDevice;
use msp_tests::sh;
use msp_tests::storage_node::process::{StorageNodeOptions, StorageNodeProcess};

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");
const MIB: u64 = 1024 * 1024;

fn tool(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Puts a foreign signature on a fresh loop device with `setup` (where `{}`
/// is the device), then asks the node to create a pool on it.
async fn refused(
    node: &StorageNodeProcess,
    pool: &str,
    setup: &str,
    cleanup: Option<&str>,
    expect_in_message: &str,
) -> anyhow::Result<()> {
    refused_naming(
        node,
        pool,
        setup,
        cleanup,
        &[expect_in_message],
        tonic::Code::FailedPrecondition,
    )
    .await
}

/// [`refused`], with a message that must name each of `expect_in_message`,
/// and ImportPool answering `import_code` (a signature only libblkid sees is
/// looked for before writing; an import writes nothing and finds no label).
async fn refused_naming(
    node: &StorageNodeProcess,
    pool: &str,
    setup: &str,
    cleanup: Option<&str>,
    expect_in_message: &[&str],
    import_code: tonic::Code,
) -> anyhow::Result<()> {
    let d = LoopDevice::create(64 * MIB)?;
    let dev = d.path_str();
    sh(&setup.replace("{}", &dev))?;
    let before = d.sha256_hex()?;

    let mut c = v1::pool_rpc_client::PoolRpcClient::connect(node.uri()).await?;
    for disks in [vec![dev.clone()], vec![format!("aio://{dev}")]] {
        let err = c
            .create_pool(v1::CreatePoolRequest {
                name: pool.into(),
                disks,
                ..Default::default()
            })
            .await
            .expect_err("a disk with a foreign signature must be refused");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        for expected in expect_in_message {
            assert!(
                err.message().contains(expected),
                "message {:?} should name {expected:?}",
                err.message()
            );
        }
    }
    // ImportPool finds no label of ours either and touches nothing.
    let err = c
        .import_pool(v1::ImportPoolRequest {
            name: pool.into(),
            disks: vec![dev.clone()],
            ..Default::default()
        })
        .await
        .expect_err("nothing to import");
    assert_eq!(err.code(), import_code, "{err:?}");

    assert_eq!(d.sha256_hex()?, before, "the refused disk was written to");
    let listed = c.list_pools(v1::ListPoolOptions::default()).await?;
    assert!(listed.into_inner().pools.iter().all(|p| p.name != pool));
    if let Some(cleanup) = cleanup {
        sh(&cleanup.replace("{}", &dev))?;
    }
    Ok(())
}

fn start(name: &str) -> anyhow::Result<Option<StorageNodeProcess>> {
    if !msp_tests::require("root and loop devices (losetup)", LoopDevice::available()) {
        return Ok(None);
    }
    Ok(Some(StorageNodeProcess::start(
        BIN,
        StorageNodeOptions::new(name),
    )?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_ext4() -> anyhow::Result<()> {
    let Some(node) = start("sn-ref-ext4")? else {
        return Ok(());
    };
    if !msp_tests::require("mkfs.ext4 (e2fsprogs)", tool("mkfs.ext4")) {
        return Ok(());
    }
    refused(
        &node,
        "p-ext4",
        "mkfs.ext4 -q -F {}",
        None,
        "ext4 filesystem",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_lvm_pv() -> anyhow::Result<()> {
    let Some(node) = start("sn-ref-lvm")? else {
        return Ok(());
    };
    if !msp_tests::require("pvcreate (lvm2)", tool("pvcreate")) {
        return Ok(());
    }
    // No devices file: the loop device must not be remembered by LVM.
    let cfg = "--config 'devices { use_devicesfile = 0 }'";
    refused(
        &node,
        "p-lvm",
        &format!("pvcreate -q {cfg} -ff -y {{}}"),
        Some(&format!("pvremove -q {cfg} -ff -y {{}}")),
        "LVM2 physical volume",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_gpt() -> anyhow::Result<()> {
    let Some(node) = start("sn-ref-gpt")? else {
        return Ok(());
    };
    if !msp_tests::require("sgdisk (gdisk)", tool("sgdisk")) {
        return Ok(());
    }
    refused(
        &node,
        "p-gpt",
        "sgdisk -o -n 1:2048:0 {} >/dev/null",
        None,
        "GPT partition table",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_mbr_and_swap() -> anyhow::Result<()> {
    let Some(node) = start("sn-ref-mbr")? else {
        return Ok(());
    };
    if !msp_tests::require(
        "sfdisk (fdisk) and mkswap",
        tool("sfdisk") && tool("mkswap"),
    ) {
        return Ok(());
    }
    refused(
        &node,
        "p-mbr",
        "printf 'label: dos\\n,,L\\n' | sfdisk -q {} >/dev/null",
        None,
        "MBR (dos) partition table",
    )
    .await?;
    refused(&node, "p-swap", "mkswap {} >/dev/null", None, "swap area").await
}

/// An md-RAID 0.90 superblock lives in the last 64 KiB-aligned 64 KiB of the
/// disk, out of reach of the magic numbers at the start: only libblkid's
/// probe of the whole disk finds it. The superblock is written by hand (its
/// magic and version, what libblkid checks for 0.90) because mdadm cannot
/// write one without the kernel's md driver, which the CI machine lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_an_end_of_disk_signature() -> anyhow::Result<()> {
    let Some(node) = start("sn-ref-md")? else {
        return Ok(());
    };
    if !msp_tests::require("wipefs (util-linux)", tool("wipefs")) {
        return Ok(());
    }
    // magic 0xa92b4efc, major 0, minor 90, patch 0 (little-endian u32s)
    let superblock = r"\374\116\053\251\000\000\000\000\132\000\000\000\000\000\000\000";
    let offset = 64 * MIB - 64 * 1024;
    refused_naming(
        &node,
        "p-md",
        &format!(
            "printf '{superblock}' | dd of={{}} bs=16 seek={offset} oflag=seek_bytes conv=notrunc status=none"
        ),
        None,
        &["linux_raid_member signature", "found by libblkid"],
        tonic::Code::InvalidArgument,
    )
    .await
}

/// Two filesystems' signatures on one disk (bfs at 0, minix at 0x410),
/// neither of them in the stand-in's table: `blkid -p` calls that
/// "ambivalent" (exit 8) and names neither; libblkid's full listing names both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_disk_with_two_signatures() -> anyhow::Result<()> {
    let Some(node) = start("sn-ref-two")? else {
        return Ok(());
    };
    if !msp_tests::require(
        "wipefs, mkfs.minix and mkfs.bfs (util-linux)",
        tool("wipefs") && tool("mkfs.minix") && tool("mkfs.bfs"),
    ) {
        return Ok(());
    }
    // mkfs.bfs would overwrite the minix superblock: its first sector is
    // made on a scratch file and copied over.
    let file = tempfile::NamedTempFile::new()?;
    let scratch = file.path().display();
    refused_naming(
        &node,
        "p-two",
        &format!(
            "mkfs.minix {{}} >/dev/null && truncate -s 1M {scratch} && mkfs.bfs {scratch} >/dev/null 2>&1 \
             && dd if={scratch} of={{}} bs=512 count=1 conv=notrunc status=none"
        ),
        None,
        &["bfs signature", "minix signature", "found by libblkid"],
        tonic::Code::InvalidArgument,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_ext4_written_over_a_pool() -> anyhow::Result<()> {
    let Some(node) = start("sn-ref-over")? else {
        return Ok(());
    };
    if !msp_tests::require("mkfs.ext4 (e2fsprogs)", tool("mkfs.ext4")) {
        return Ok(());
    }
    let d = LoopDevice::create(32 * MIB)?;
    let mut c = v1::pool_rpc_client::PoolRpcClient::connect(node.uri()).await?;
    let req = v1::CreatePoolRequest {
        name: "over".into(),
        disks: vec![d.path_str()],
        ..Default::default()
    };
    c.create_pool(req.clone()).await?;
    c.export_pool(v1::ExportPoolRequest {
        name: "over".into(),
        uuid: None,
    })
    .await?;
    // Someone formats the pool's disk behind the node's back.
    sh(&format!("mkfs.ext4 -q -F {}", d.path_str()))?;
    let before = d.sha256_hex()?;
    let err = c
        .create_pool(req)
        .await
        .expect_err("a formatted disk is not a pool any more");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("ext4"), "{:?}", err.message());
    assert_eq!(d.sha256_hex()?, before);
    Ok(())
}

/// The node's ListBlockDevices (v1 and v0), as the operator's disk safety
/// check reads it: a blank disk available, a filesystem named and the disk
/// unavailable, partitions listed with their disk as parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_block_devices_with_what_they_hold() -> anyhow::Result<()> {
    let Some(node) = start("sn-ref-list")? else {
        return Ok(());
    };
    if !msp_tests::require("mkfs.ext4 and sgdisk", tool("mkfs.ext4") && tool("sgdisk")) {
        return Ok(());
    }
    let blank = LoopDevice::create(64 * MIB)?;
    let ext4 = LoopDevice::create(64 * MIB)?;
    let gpt = LoopDevice::create_partitionable(64 * MIB)?;
    sh(&format!("mkfs.ext4 -q -F {}", ext4.path_str()))?;
    sh(&format!(
        "sgdisk -o -n 1:2048:0 {} >/dev/null",
        gpt.path_str()
    ))?;
    let part = format!("{}p1", gpt.path_str());

    let mut host = v1::host_rpc_client::HostRpcClient::connect(node.uri()).await?;
    let devices = host
        .list_block_devices(v1::ListBlockDevicesRequest { all: true })
        .await?
        .into_inner()
        .devices;
    let find = |name: &str| {
        devices
            .iter()
            .find(|d| d.devname == name)
            .unwrap_or_else(|| panic!("{name} not listed"))
            .clone()
    };
    let d = find(&blank.path_str());
    assert!(d.available && d.filesystem.is_none(), "{d:?}");
    assert_eq!(d.size, 64 * MIB / 512);
    let d = find(&ext4.path_str());
    assert!(!d.available, "{d:?}");
    assert_eq!(d.filesystem.map(|f| f.fstype).as_deref(), Some("ext4"));
    // Unavailable by its table alone: kernels without partition parsers
    // (as on the project's CI machine) show no partitions of it.
    assert!(!find(&gpt.path_str()).available);
    if std::path::Path::new(&part).exists() {
        let p = find(&part);
        assert_eq!(p.devtype, "partition");
        assert_eq!(p.partition.map(|p| p.parent), Some(gpt.path_str()));
    }

    // Only the available ones without `all`; v0 answers the same.
    let available = host
        .list_block_devices(v1::ListBlockDevicesRequest { all: false })
        .await?
        .into_inner()
        .devices;
    assert!(available.iter().all(|d| d.available));
    assert!(available.iter().any(|d| d.devname == blank.path_str()));
    let mut v0 = msp_proto::v0::mayastor_client::MayastorClient::connect(node.uri()).await?;
    let listed = v0
        .list_block_devices(msp_proto::v0::ListBlockDevicesRequest { all: true })
        .await?
        .into_inner()
        .devices;
    let d = listed
        .iter()
        .find(|d| d.devname == ext4.path_str())
        .expect("listed on v0");
    assert_eq!(
        d.filesystem.as_ref().map(|f| f.fstype.as_str()),
        Some("ext4")
    );
    Ok(())
}
