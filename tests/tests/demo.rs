//! The README's main job, `msp-demo`, run as a user runs it: it comes up with
//! the seed's example online, prints how to use kubectl against it, logs
//! without colour codes when its output is not a terminal, and stops cleanly
//! on SIGTERM.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_msp-demo");

#[test]
fn demo_comes_up_with_the_example_online_and_stops_on_sigterm() {
    let mut child = Command::new(BIN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning msp-demo");
    let pid = child.id() as libc::pid_t;
    // Kills the demo if an assertion below fails first.
    struct Kill(libc::pid_t);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: a signal to our own child's pid.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
    let _kill = Kill(pid);

    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let (lines, seen) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let logs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let started = Instant::now();
    let mut out = Vec::new();
    let up = loop {
        let left = Duration::from_secs(120).saturating_sub(started.elapsed());
        match seen.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains("Press Ctrl-C");
                out.push(line);
                if done {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let out = out.join("\n");
    assert!(up, "the demo did not come up in 120 s:\n{out}");
    eprintln!("demo up in {:?}", started.elapsed());
    // `kubectl -n mayastor get msp` as printed: the example, online.
    assert!(
        out.lines()
            .any(|l| l.starts_with("my-new-pool") && l.contains("online")),
        "{out}"
    );
    assert!(out.contains("export KUBECONFIG="), "{out}");

    // SAFETY: a signal to our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the demo") {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit 60 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let logs = logs.join().unwrap_or_default();
    assert!(status.success(), "demo exit {status:?}:\n{logs}");
    assert!(
        !logs.contains('\x1b'),
        "colour codes in the demo's log written to a pipe: {logs:?}"
    );
}
