//! `policy/README.md`'s "Your first policy" runs as written: an author crate
//! outside the workspace, depending on the SDK and the default policy by
//! path (a checkout of this repository beside it, as the page says), built,
//! unit-tested, componentized, checked, tested against its cases, diffed,
//! evaluated and benchmarked with `msp-policy`, then shadowed on the demo
//! (`msp-demo`, the README's main job), promoted and rolled back with
//! kubectl. The page's own blocks are the script (`msp_tests::walkthrough`
//! says how each kind of block runs); the test stands in only for what the
//! reader does once or in another shell: `msp-policy` on PATH (built here,
//! debug) and the demo's `export` lines. Then it checks what the page says
//! the reader would see on the node: the pool labelled keep=true is still
//! there, forgotten by the operator.
//!
//! Bounded: the build of `msp-policy` and the script end after
//! [`BUILD_LIMIT`] and [`SCRIPT_LIMIT`], the demo must be up in [`DEMO_UP`],
//! each `eventually` block passes within a minute.
//! Cargo runs offline (the crates the workspace uses are in the local
//! cache), and the author crate's registry dependencies are compiled into a
//! build directory kept under the target directory, so that a second run
//! rebuilds only the crates of paths.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use msp_tests::control_plane::ControlPlane;
use msp_tests::docs;
use msp_tests::operator::node_pools;
use msp_tests::walkthrough::{self, Provided};

const DEMO: &str = env!("CARGO_BIN_EXE_msp-demo");
/// The most the walkthrough's script may take. Measured on the shared
/// 2-core machine (load 6-12): 80-110 s with the build directory empty (the
/// wasm build of the author crate's dependencies is most of it), 24-27 s
/// with it kept.
const SCRIPT_LIMIT: Duration = Duration::from_secs(20 * 60);
const DEMO_UP: Duration = Duration::from_secs(120);
const BUILD_LIMIT: Duration = Duration::from_secs(20 * 60);

/// The target directory this test binary was built in (`<target>/debug/deps/walkthrough-…`).
fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow::anyhow!("no target directory above {}", exe.display()))
}

/// Builds `msp-policy` (the author's tool, crate policy/cli) into the test's
/// own target directory, as the tests are built; returns a directory holding
/// only it, for PATH.
fn build_msp_policy(target: &Path, work: &Path) -> anyhow::Result<PathBuf> {
    let started = Instant::now();
    // Bounded too: a first build in this target directory compiles the
    // CLI's own feature set of wasmtime (3 min on 2 loaded cores).
    let status = Command::new("timeout")
        .args(["--kill-after=10", &BUILD_LIMIT.as_secs().to_string()])
        .arg(env!("CARGO"))
        .args([
            "build",
            "--locked",
            "-p",
            "msp-policy-cli",
            "--bin",
            "msp-policy",
        ])
        .current_dir(docs::repo_root())
        .env("CARGO_TARGET_DIR", target)
        .status()?;
    anyhow::ensure!(status.success(), "building msp-policy: {status}");
    let bin = work.join("bin");
    std::fs::create_dir_all(&bin)?;
    std::os::unix::fs::symlink(target.join("debug/msp-policy"), bin.join("msp-policy"))?;
    eprintln!("msp-policy built in {:.1?}", started.elapsed());
    Ok(bin)
}

/// The demo, running until dropped (SIGTERM, then SIGKILL).
struct Demo {
    child: std::process::Child,
    /// What it printed up to "Press Ctrl-C".
    out: String,
    log: PathBuf,
}

impl Demo {
    fn start(log: PathBuf) -> anyhow::Result<Demo> {
        let started = Instant::now();
        let mut child = Command::new(DEMO)
            // Its own log filter: the test reads the operator's info lines.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (lines, seen) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut demo = Demo {
            child,
            out: String::new(),
            log,
        };
        loop {
            let left = DEMO_UP.saturating_sub(started.elapsed());
            let Ok(line) = seen.recv_timeout(left) else {
                anyhow::bail!(
                    "the demo did not come up in {DEMO_UP:?}:\n{}\n{}",
                    demo.out,
                    demo.log_tail(40)
                );
            };
            demo.out.push_str(&line);
            demo.out.push('\n');
            if line.contains("Press Ctrl-C") {
                break;
            }
        }
        eprintln!("demo up in {:.1?}", started.elapsed());
        Ok(demo)
    }

    /// The `export …` lines it prints for another shell.
    fn exports(&self) -> Vec<String> {
        self.out
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("export "))
            .map(str::to_string)
            .collect()
    }

    /// Its storage node's address.
    fn storage_node(&self) -> anyhow::Result<std::net::SocketAddr> {
        let line = self
            .out
            .lines()
            .find_map(|l| l.trim().strip_prefix("storage node node1"))
            .ok_or_else(|| anyhow::anyhow!("no storage node line in:\n{}", self.out))?;
        let addr = line.split_whitespace().next().unwrap_or_default();
        Ok(addr.parse()?)
    }

    fn log_tail(&self, lines: usize) -> String {
        tail(
            &std::fs::read_to_string(&self.log).unwrap_or_default(),
            lines,
        )
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signals to our own child's pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Removes from the kept build directory what a run of the crates of paths
/// left (each run's temp path makes them new crates; the registry's are kept,
/// which is what the directory is for): the author's crate (`my-policy`, as
/// the page names it), the SDK and the default policy, and incremental state.
fn prune_build_dir(build_dir: &Path) -> std::io::Result<()> {
    const PATH_CRATES: &[&str] = &["my_policy", "my-policy", "msp_policy", "msp-policy"];
    for profile in ["debug", "release"] {
        let _ = std::fs::remove_dir_all(build_dir.join(profile).join("incremental"));
        for kind in ["deps", ".fingerprint", "build"] {
            let Ok(entries) = std::fs::read_dir(build_dir.join(profile).join(kind)) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                let name = entry.file_name().to_string_lossy().into_owned();
                let name = name.strip_prefix("lib").unwrap_or(&name);
                if PATH_CRATES.iter().any(|c| name.starts_with(c)) {
                    let path = entry.path();
                    if path.is_dir() {
                        std::fs::remove_dir_all(path)?;
                    } else {
                        std::fs::remove_file(path)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Runs the script in `dir`, output to `log`, killed (its whole process
/// group, by `timeout`) past [`SCRIPT_LIMIT`]. Cargo's own variables for this
/// test are not passed on: the author's cargo is a plain one.
fn run_script(
    script: &Path,
    dir: &Path,
    log: &Path,
    build_dir: &Path,
) -> anyhow::Result<std::process::ExitStatus> {
    let mut cmd = Command::new("timeout");
    cmd.arg("--kill-after=10")
        .arg(SCRIPT_LIMIT.as_secs().to_string())
        .arg("bash")
        .arg(script)
        .current_dir(dir)
        .stdin(Stdio::null());
    let out = std::fs::File::create(log)?;
    cmd.stderr(out.try_clone()?).stdout(out);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if (key.starts_with("CARGO") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key.contains("RUSTFLAGS")
        {
            cmd.env_remove(&*key);
        }
    }
    cmd.env("CARGO_NET_OFFLINE", "true")
        .env("CARGO_BUILD_BUILD_DIR", build_dir)
        // kubectl's discovery cache for this demo, not ~/.kube's (keyed by
        // host and port, which later control planes reuse).
        .env("KUBECACHEDIR", dir.join("kube-cache"));
    Ok(cmd.status()?)
}

#[test]
fn your_first_policy_runs_as_written() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    if !msp_tests::require(
        "the control plane binaries (KUBEBUILDER_ASSETS or tests/setup.sh)",
        runtime.block_on(ControlPlane::binaries_available()),
    ) {
        return Ok(());
    }
    let started = Instant::now();
    let root = docs::repo_root();
    let page = std::fs::read_to_string(root.join(walkthrough::PAGE))?;
    let steps = walkthrough::plan(&page).map_err(anyhow::Error::msg)?;

    // The reader's directory: a checkout of this repository as
    // msp-operator/, the crate made beside it.
    let work = tempfile::Builder::new()
        .prefix("msp-walkthrough-")
        .tempdir()?;
    std::os::unix::fs::symlink(&root, work.path().join("msp-operator"))?;
    let target = target_dir()?;
    let bin = build_msp_policy(&target, work.path())?;
    let demo = Demo::start(work.path().join("demo.log"))?;
    let script = walkthrough::script(
        &steps,
        &Provided {
            msp_policy_dir: bin,
            demo_exports: demo.exports(),
        },
    )
    .map_err(anyhow::Error::msg)?;
    let script_path = work.path().join("walkthrough.sh");
    std::fs::write(&script_path, &script)?;

    let log = work.path().join("walkthrough.log");
    let build_dir = target.join("walkthrough-build");
    prune_build_dir(&build_dir)?;
    let ran = Instant::now();
    let status = run_script(&script_path, work.path(), &log, &build_dir)?;
    let took = ran.elapsed();
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    // Kept after the temp dir goes, to read what the reader would see.
    let kept = target.join("walkthrough.log");
    if std::fs::write(&kept, &output).is_ok() {
        eprintln!("the walkthrough's output: {}", kept.display());
    }
    anyhow::ensure!(
        status.success(),
        "the walkthrough failed ({status}) after {took:.1?}; its output (the last `:::` line \
         names the block):\n{}\n\nthe demo's log:\n{}",
        tail(&output, 120),
        demo.log_tail(40)
    );
    eprintln!("the walkthrough's script ran in {took:.1?}");

    // What the page says the reader would see: the pool labelled keep=true
    // outlived its resource; the example's was destroyed under the default.
    let pools = runtime.block_on(node_pools(demo.storage_node()?))?;
    anyhow::ensure!(
        pools == ["kept-pool"],
        "node1's pools after the walkthrough: {pools:?}\n{}",
        demo.log_tail(40)
    );
    let logged = std::fs::read_to_string(&demo.log)?;
    anyhow::ensure!(
        logged.contains("pool retained on the node and forgotten"),
        "the demo's log does not say what the page says it does:\n{}",
        demo.log_tail(40)
    );
    drop(demo);
    eprintln!(
        "walkthrough test: {:.1?} in all (script {took:.1?})",
        started.elapsed()
    );
    Ok(())
}
