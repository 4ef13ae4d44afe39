//! The cluster's network namespace: the node's address, the pod bridge,
//! Service IPs, iptables chains and `net.*` sysctls exist only in it, so the
//! cluster sends nothing to the machine's own interfaces and vanishes with it.
//!
//! The node IP sits on one end of a veth pair whose two ends are both inside,
//! with the default route: the kernel routes Service IPs (which kube-proxy
//! rewrites) and anything else arrives at the other end, which does not
//! forward, and is dropped there. (The kernel has no `dummy` driver.) Processes run in it through
//! `nsenter --net` (which execs the program, no fork, so the death signal set
//! before it still applies). Test code in the main namespace reaches a
//! service inside through [`Forward`]: a loopback listener whose connections
//! are opened from a thread that entered the namespace (a socket stays in the
//! namespace it was created in).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::HarnessError;

/// The node's address inside the namespace.
pub const NODE_IP: &str = "10.201.0.2";
const NODE_PREFIX: u8 = 24;
const NODE_LINK: &str = "node0";
const SINK_LINK: &str = "sink0";

/// A named network namespace (`/run/netns/NAME`), made by `ip netns add`.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace with loopback and the node's dummy interface up,
    /// IP forwarding on, and bridged traffic through iptables (a pod reaching
    /// a Service whose endpoint is on the same bridge).
    pub fn create(name: &str) -> Result<Netns, HarnessError> {
        ip(&["netns", "add", name])?;
        let netns = Netns {
            name: name.to_string(),
        };
        let address = format!("{NODE_IP}/{NODE_PREFIX}");
        for args in [
            vec!["link", "set", "lo", "up"],
            vec![
                "link", "add", NODE_LINK, "type", "veth", "peer", "name", SINK_LINK,
            ],
            vec!["addr", "add", address.as_str(), "dev", NODE_LINK],
            vec!["link", "set", NODE_LINK, "up"],
            vec!["link", "set", SINK_LINK, "up"],
            vec!["route", "add", "default", "dev", NODE_LINK],
        ] {
            let mut all = vec!["-n", name];
            all.extend(args);
            ip(&all)?;
        }
        let mut sysctl = netns.command("sysctl");
        // In this order: turning ip_forward on turns it on for every interface.
        sysctl.args([
            "-qw".to_string(),
            "net.ipv4.ip_forward=1".to_string(),
            format!("net.ipv4.conf.{SINK_LINK}.forwarding=0"),
            "net.bridge.bridge-nf-call-iptables=1".to_string(),
        ]);
        run_quiet(sysctl, "sysctl in the cluster namespace")?;
        Ok(netns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        path_of(&self.name)
    }

    /// `program` to be run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        command
    }

    /// A TCP connection to `target` opened inside the namespace.
    pub fn connect(&self, target: SocketAddr) -> std::io::Result<TcpStream> {
        connect_in(&self.path(), target)
    }
}

/// The path `ip netns` gives a namespace called `name`.
pub fn path_of(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Deletes the namespace `name` (its interfaces, routes and iptables go with
/// it once no process holds it). Missing is fine.
pub fn delete(name: &str) {
    if path_of(name).exists() {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(std::process::Stdio::null())
            .status();
    }
    // `ip netns add` bind-mounts /run/netns on first use; with no namespace
    // left in it, take that mount away too so nothing of the run stays.
    let dir = std::path::Path::new("/run/netns");
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none()) {
        let _ = Command::new("umount")
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Opens a TCP connection from inside the namespace at `netns`, on a thread of
/// its own (setns changes the calling thread's namespace for good).
fn connect_in(netns: &std::path::Path, target: SocketAddr) -> std::io::Result<TcpStream> {
    let netns = std::fs::File::open(netns)?;
    std::thread::spawn(move || {
        // SAFETY: setns only reads the fd we pass; it changes this thread's
        // namespace, and this thread ends right after the connect.
        if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        TcpStream::connect_timeout(&target, Duration::from_secs(5))
    })
    .join()
    .map_err(|_| std::io::Error::other("connect thread panicked"))?
}

/// A loopback port in the main namespace forwarded to an address inside the
/// cluster's namespace. Stops accepting on drop; open connections end when
/// either side closes.
pub struct Forward {
    local: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Forward {
    pub fn start(netns: &Netns, target: SocketAddr) -> Result<Forward, HarnessError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| HarnessError::io("binding a forwarding port", e))?;
        let local = listener
            .local_addr()
            .map_err(|e| HarnessError::io("binding a forwarding port", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let path = netns.path();
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(inbound) = inbound else { continue };
                let Ok(outbound) = connect_in(&path, target) else {
                    // The client sees the connection close, as if refused.
                    continue;
                };
                pipe(inbound, outbound);
            }
        });
        Ok(Forward { local, stop })
    }

    /// The loopback address to connect to.
    pub fn local(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.local);
    }
}

/// Copies bytes both ways between two sockets, one thread per direction.
fn pipe(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    std::thread::spawn(move || copy(a, b2));
    std::thread::spawn(move || copy(b, a2));
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn ip(args: &[&str]) -> Result<(), HarnessError> {
    let mut command = Command::new("ip");
    command.args(args);
    run_quiet(command, &format!("ip {}", args.join(" ")))
}

/// Runs a short setup command; its stderr in the error when it fails.
pub(crate) fn run_quiet(mut command: Command, what: &str) -> Result<(), HarnessError> {
    let output = command
        .output()
        .map_err(|e| HarnessError::io(format!("running {what}"), e))?;
    if !output.status.success() {
        return Err(HarnessError::Setup(format!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

/// The first IPv4 address the DNS server at `server` (inside the namespace)
/// gives for `name`, asked over UDP from a thread in the namespace. `None`
/// when it does not answer in a second or has no address.
pub fn resolve(netns: &Netns, server: SocketAddr, name: &str) -> Option<String> {
    let file = std::fs::File::open(netns.path()).ok()?;
    let name = name.to_string();
    std::thread::spawn(move || {
        // SAFETY: as in connect_in.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
        socket.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        socket.send_to(&dns_query(&name), server).ok()?;
        let mut reply = [0u8; 512];
        let n = socket.recv(&mut reply).ok()?;
        first_a_record(&reply[..n])
    })
    .join()
    .ok()
    .flatten()
}

/// A DNS query for the A record of `name` (id 0x6d73, recursion desired).
fn dns_query(name: &str) -> Vec<u8> {
    let mut q = vec![0x6d, 0x73, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The first A record's address in a reply to [`dns_query`].
fn first_a_record(reply: &[u8]) -> Option<String> {
    if reply.len() < 12 || reply[3] & 0x0f != 0 {
        return None;
    }
    let answers = u16::from_be_bytes([reply[6], reply[7]]);
    // Skip the question: its name, then type and class.
    let mut at = 12;
    at = skip_name(reply, at)? + 4;
    for _ in 0..answers {
        at = skip_name(reply, at)?;
        let header = reply.get(at..at + 10)?;
        let (kind, len) = (
            u16::from_be_bytes([header[0], header[1]]),
            u16::from_be_bytes([header[8], header[9]]) as usize,
        );
        let data = reply.get(at + 10..at + 10 + len)?;
        if kind == 1 && len == 4 {
            return Some(format!("{}.{}.{}.{}", data[0], data[1], data[2], data[3]));
        }
        at += 10 + len;
    }
    None
}

fn skip_name(reply: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *reply.get(at)? as usize;
        if len == 0 {
            return Some(at + 1);
        }
        if len & 0xc0 == 0xc0 {
            return Some(at + 2);
        }
        at += 1 + len;
    }
}
