//! A two-host network made of Linux network namespaces: a "server" namespace and a "client"
//! namespace joined by a veth pair, with nftables rules to lose packets or black-hole a flow.
//!
//! Everything is created by the test that uses it, under names unique to this process and lab,
//! and removed when the [`Lab`] is dropped (also when the test panics). Addresses are IPv4
//! link-local (169.254.0.0/16): they exist only on the veth inside the two namespaces, so no
//! packet can leave them. Sockets are created on a thread that has entered the namespace with
//! `setns`; a socket stays in the namespace it was made in, so the test's tokio runtime can then
//! use it like any other.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT_LAB: AtomicU32 = AtomicU32::new(1);

/// Whether this machine can build labs. Outside CI a missing capability skips the test with a
/// message; in CI (`CI` set) it fails, so a fault test can never pass by silently not running.
pub fn available(test: &str) -> bool {
    let missing = if unsafe { libc::geteuid() } != 0 {
        Some("root (network namespaces and nftables need it)")
    } else if !tool_works("ip", &["-V"]) {
        Some("the `ip` tool (iproute2)")
    } else if !tool_works("nft", &["--version"]) {
        Some("the `nft` tool (nftables)")
    } else {
        None
    };
    match missing {
        None => true,
        Some(what) => {
            crate::support::skip_outside_ci(
                test,
                what,
                "run as root after scripts/test-deps.sh (CI runs as root)",
            );
            false
        }
    }
}

fn tool_works(tool: &str, args: &[&str]) -> bool {
    Command::new(tool)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[derive(Debug)]
pub struct Lab {
    pub server_ns: String,
    pub client_ns: String,
    pub server_ip: Ipv4Addr,
    pub client_ip: Ipv4Addr,
}

/// The veth end in each namespace (names are per namespace, so they need not be unique).
pub const SERVER_IF: &str = "vsrv";
pub const CLIENT_IF: &str = "vcli";

impl Lab {
    pub fn new() -> Lab {
        sweep_stale();
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let lab = Lab {
            server_ns: format!("linechat-{pid}-{n}-srv"),
            client_ns: format!("linechat-{pid}-{n}-cli"),
            // A /24 per lab in 169.254/16, so labs of concurrent tests never clash.
            server_ip: Ipv4Addr::new(169, 254, (n % 250) as u8 + 1, 1),
            client_ip: Ipv4Addr::new(169, 254, (n % 250) as u8 + 1, 2),
        };
        // From here on, Drop removes whatever was made, even if a later step fails.
        run(&["ip", "netns", "add", &lab.server_ns]);
        run(&["ip", "netns", "add", &lab.client_ns]);
        let (s, c) = (&lab.server_ns, &lab.client_ns);
        run(&[
            "ip", "-n", s, "link", "add", SERVER_IF, "type", "veth", "peer", "name", CLIENT_IF,
            "netns", c,
        ]);
        for (ns, dev, ip) in [(s, SERVER_IF, lab.server_ip), (c, CLIENT_IF, lab.client_ip)] {
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                dev,
            ]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    /// Runs `f` on a thread inside namespace `ns`; sockets it makes belong to that namespace.
    pub fn within<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
        let handle = File::open(format!("/var/run/netns/{ns}")).expect("open netns");
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: setns on a descriptor we hold; it changes only this thread's
                    // network namespace, and the thread ends when `f` returns.
                    let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                    f()
                })
                .join()
                .expect("namespace thread panicked")
        })
    }

    /// A listener on every address of the server namespace (its veth and its own loopback).
    pub fn listen(&self) -> TcpListener {
        Lab::within(&self.server_ns, || {
            TcpListener::bind("0.0.0.0:0").expect("bind in server namespace")
        })
    }

    /// A connection from the client namespace, across the veth.
    pub fn connect_across(&self, port: u16) -> TcpStream {
        let addr = SocketAddr::from((self.server_ip, port));
        Lab::within(&self.client_ns, || {
            TcpStream::connect(addr).expect("connect across")
        })
    }

    /// A connection from inside the server namespace over its loopback: the clean path.
    pub fn connect_local(&self, port: u16) -> TcpStream {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        Lab::within(&self.server_ns, || {
            TcpStream::connect(addr).expect("connect local")
        })
    }

    /// Runs an nft command inside `ns`.
    pub fn nft(&self, ns: &str, command: &str) {
        run(&[
            "ip",
            "netns",
            "exec",
            ns,
            "sh",
            "-c",
            &format!("nft {command}"),
        ]);
    }

    /// Creates the `chaos` input chain in `ns`, where the loss and black-hole rules go.
    fn chaos_chain(&self, ns: &str) {
        self.nft(ns, "add table inet chaos");
        self.nft(
            ns,
            "'add chain inet chaos in { type filter hook input priority 0; policy accept; }'",
        );
    }

    /// Drops `percent` % of the packets arriving on the veth, in both namespaces (so both
    /// directions lose packets).
    pub fn lose(&self, percent: u32) {
        for (ns, dev) in [(&self.server_ns, SERVER_IF), (&self.client_ns, CLIENT_IF)] {
            self.chaos_chain(ns);
            self.nft(
                ns,
                &format!(
                    "add rule inet chaos in iifname {dev} numgen random mod 100 '<' {percent} counter drop"
                ),
            );
        }
    }

    /// Packets dropped so far by the loss rules, (server side, client side).
    pub fn dropped(&self) -> (u64, u64) {
        let count = |ns: &str| {
            let out = Command::new("ip")
                .args(["netns", "exec", ns, "nft", "list", "table", "inet", "chaos"])
                .output()
                .expect("nft list");
            let text = String::from_utf8_lossy(&out.stdout);
            text.split_whitespace()
                .skip_while(|w| *w != "packets")
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        (count(&self.server_ns), count(&self.client_ns))
    }

    /// From now on the server hears nothing from the client's port `client_port`: no data, no
    /// ACK, no FIN, no RST. The peer has vanished as far as the server can tell.
    pub fn black_hole(&self, client_port: u16) {
        let ns = &self.server_ns;
        if !self.has_chaos(ns) {
            self.chaos_chain(ns);
        }
        self.nft(
            ns,
            &format!("add rule inet chaos in tcp sport {client_port} counter drop"),
        );
    }

    /// From now on nothing the server sends reaches the client's port `client_port` (data,
    /// ACKs, keepalive probes), until [`Lab::heal`]: a lossy path, not a vanished peer.
    pub fn drop_server_packets(&self, client_port: u16) {
        let ns = &self.client_ns;
        if !self.has_chaos(ns) {
            self.chaos_chain(ns);
        }
        self.nft(
            ns,
            &format!("add rule inet chaos in tcp dport {client_port} counter drop"),
        );
    }

    /// Removes every loss and black-hole rule, in both namespaces.
    pub fn heal(&self) {
        for ns in [&self.server_ns, &self.client_ns] {
            if self.has_chaos(ns) {
                self.nft(ns, "delete table inet chaos");
            }
        }
    }

    fn has_chaos(&self, ns: &str) -> bool {
        Command::new("ip")
            .args(["netns", "exec", ns, "nft", "list", "table", "inet", "chaos"])
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

/// Removes namespaces left by earlier test processes that were killed before their labs could
/// be dropped (SIGKILL, a timeout): their names carry the PID, and that PID is gone.
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir("/var/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("linechat-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace destroys its veth end, which takes the peer with it, and its
        // nftables rules; sockets still open in it keep it alive only until they close.
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
