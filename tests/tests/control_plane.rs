//! The control plane harness leaves nothing behind: not when dropped, not when
//! the test panics, not when its process gets SIGTERM (the demo stops
//! cleanly) or SIGKILL (the kernel kills the children; the next start removes
//! the temp dir).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use msp_tests::control_plane::ControlPlane;
use msp_tests::loopdev::LoopDevice;

/// False (after a loud notice) when the binaries cannot be had and CI is not set.
async fn binaries() -> bool {
    let what = "etcd, kube-apiserver and kubectl (KUBEBUILDER_ASSETS, or Go to build them)";
    msp_tests::require(what, ControlPlane::binaries_available().await)
}

/// Pids of processes whose command line mentions `dir` (etcd's data dir and
/// the API server's cert dir are inside the control plane's temp dir).
fn processes_using(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(&needle)
                .then_some(pid)
        })
        .collect()
}

/// Waits up to 10 s for `done`; the kernel reaps killed processes asynchronously.
/// No process uses the control plane's temp dir, and the dir is gone.
fn assert_nothing_left(dir: &Path) {
    assert!(
        processes_using(dir).is_empty(),
        "left running: {:?}",
        processes_using(dir)
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
}

fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

#[tokio::test]
async fn drop_stops_both_processes_and_removes_the_temp_dir() -> anyhow::Result<()> {
    if !binaries().await {
        return Ok(());
    }
    let cp = ControlPlane::start().await?;
    let dir = cp.dir().to_path_buf();
    assert_eq!(
        processes_using(&dir).len(),
        2,
        "etcd and kube-apiserver should run"
    );
    let version = cp.client().await?.apiserver_version().await?;
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "34")
    );
    drop(cp);
    assert_nothing_left(&dir);
    Ok(())
}

#[test]
fn a_panicking_test_leaves_nothing_behind() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if !runtime.block_on(binaries()) {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
    let outcome = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let cp = ControlPlane::start().await.expect("control plane starts");
            tx.send(cp.dir().to_path_buf()).expect("send dir");
            panic!("a test fails while its control plane runs");
        })
    })
    .join();
    assert!(outcome.is_err(), "the thread should have panicked");
    let dir = rx.recv().expect("the control plane had started");
    assert_nothing_left(&dir);
}

type Lines = std::io::Lines<BufReader<std::process::ChildStdout>>;

/// Starts msp-demo and returns it with the temp dir its kubeconfig lives in
/// and the rest of its output (kept open: the demo prints when it stops).
fn start_demo() -> anyhow::Result<(std::process::Child, PathBuf, Lines)> {
    let mut demo = Command::new(env!("CARGO_BIN_EXE_msp-demo"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = demo
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut dir = None;
    let mut transcript = String::new();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line?;
        transcript.push_str(&line);
        transcript.push('\n');
        if let Some(path) = line.trim().strip_prefix("export KUBECONFIG=") {
            // <temp dir>/identities/0-admin/kubeconfig
            dir = Path::new(path).ancestors().nth(3).map(Path::to_path_buf);
        }
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    let dir = dir.ok_or_else(|| anyhow::anyhow!("demo printed no KUBECONFIG:\n{transcript}"))?;
    // The demo lists the seed's pool with the seed's command.
    assert!(
        transcript.contains("$ kubectl -n mayastor get msp"),
        "{transcript}"
    );
    assert!(
        transcript
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["my-new-pool", "node1"])),
        "{transcript}"
    );
    Ok((demo, dir, lines))
}

#[test]
fn demo_stops_cleanly_on_sigterm() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if !runtime.block_on(binaries()) {
        return Ok(());
    }
    let (mut demo, dir, rest) = start_demo()?;
    assert!(
        processes_using(&dir).len() >= 2,
        "etcd and kube-apiserver should run"
    );
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(demo.id() as libc::pid_t, libc::SIGTERM) };
    let rest: Vec<String> = rest.collect::<Result<_, _>>()?;
    let status = demo.wait()?;
    assert!(status.success(), "demo exited with {status}");
    // The demo says it stops (what it stops grows with the demo).
    assert!(
        rest.iter().any(|line| line.starts_with("Stopping")),
        "{rest:?}"
    );
    assert_nothing_left(&dir);
    Ok(())
}

#[tokio::test]
async fn children_die_with_a_killed_process_and_its_temp_dir_is_swept() -> anyhow::Result<()> {
    if !binaries().await {
        return Ok(());
    }
    let (mut demo, dir, _rest) = start_demo()?;
    assert!(
        processes_using(&dir).len() >= 2,
        "etcd and kube-apiserver should run"
    );
    // As root the demo's disk is a loop device; it must not outlive the sweep either.
    let with_loop = LoopDevice::available();
    let demo_loops = loop_devices_of(demo.id());
    assert_eq!(
        !demo_loops.is_empty(),
        with_loop,
        "demo loop devices: {demo_loops:?}"
    );
    demo.kill()?; // SIGKILL: no destructor runs
    demo.wait()?;
    assert_eq!(
        loop_devices_of(demo.id()),
        demo_loops,
        "nothing could detach them yet"
    );
    assert!(
        eventually(|| processes_using(&dir).is_empty()),
        "left running: {:?}",
        processes_using(&dir)
    );
    assert!(
        dir.exists(),
        "nothing could remove the dir of a killed process"
    );
    // The next start removes the dirs of dead runs.
    let _cp = ControlPlane::start().await?;
    assert!(!dir.exists(), "{} was not swept", dir.display());
    // The next loop device detaches the dead run's loop devices.
    if with_loop {
        let _disk = LoopDevice::create(1024 * 1024)?;
        assert_eq!(
            loop_devices_of(demo.id()),
            Vec::<String>::new(),
            "left attached"
        );
    }
    Ok(())
}

/// Loop devices backed by a file in a `LoopDevice` temp dir of process `pid`.
fn loop_devices_of(pid: u32) -> Vec<String> {
    let Ok(out) = Command::new("losetup").arg("-a").output() else {
        return Vec::new();
    };
    let marker = format!("/msp-loop-{pid}-");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| line.contains(&marker))
        .filter_map(|line| line.split(':').next().map(str::to_owned))
        .collect()
}
