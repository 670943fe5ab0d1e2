//! The `linechat` binary as a child process, so a test can watch what the operating system sees
//! of it (resident memory, open descriptors), limit it (`RLIMIT_NOFILE`), and signal it.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::{Client, WAIT};

const BIN: &str = env!("CARGO_BIN_EXE_linechat");

#[derive(Debug)]
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub pid: u32,
    /// Every log line so far (stderr), for tests that check what was logged.
    pub log: Arc<Mutex<Vec<String>>>,
}

#[derive(Debug, Default)]
pub struct Options<'a> {
    pub args: &'a [&'a str],
    /// Soft and hard `RLIMIT_NOFILE`; the server cannot raise it past the hard limit.
    pub max_fds: Option<u64>,
    /// A program (and its arguments) that runs the server: it is given the binary's path and
    /// arguments after its own, and must `exec` them (so the PID is the server's), e.g.
    /// `unshare -m sh -c 'mount … && exec "$0" "$@"'`.
    pub wrap: &'a [&'a str],
}

impl Server {
    pub async fn start(opts: Options<'_>) -> Server {
        let mut cmd = match opts.wrap {
            [] => Command::new(BIN),
            [program, args @ ..] => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(BIN);
                cmd
            }
        };
        cmd.args(["--listen", "127.0.0.1:0"])
            .args(opts.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(limit) = opts.max_fds {
            // SAFETY: setrlimit is async-signal-safe and touches only the child's own limits.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("start linechat");
        let pid = child.id().expect("running");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let addr = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                log.lock().unwrap().push(line.clone());
                if let Some(addr) = crate::support::listening_addr(&line) {
                    return addr;
                }
            }
            panic!("linechat exited without listening")
        })
        .await
        .expect("listening in time");
        // Keep draining the log so the server never blocks on a full pipe.
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Server {
            child,
            addr,
            pid,
            log,
        }
    }

    pub fn logged(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// alice and bob in the lobby, alice having seen bob arrive: most tests' two witnesses.
    pub async fn alice_and_bob(&self) -> (Client, Client) {
        let mut alice = Client::join(self.addr, "alice").await;
        let bob = Client::join(self.addr, "bob").await;
        alice.expect("bob has joined the chat.").await;
        (alice, bob)
    }

    /// Resident memory in KiB, from `/proc/PID/status`.
    pub fn rss_kib(&self) -> u64 {
        crate::support::proc_status_kib(self.pid, "VmRSS")
    }

    /// CPU time the server has used, user and system, from `/proc/PID/stat`.
    pub fn cpu_time(&self) -> std::time::Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap();
        // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        std::time::Duration::from_millis(ticks * 1000 / per_sec)
    }

    /// Open file descriptors, from `/proc/PID/fd`.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .unwrap()
            .count()
    }

    /// The address in the `serving metrics addr=…` log line (with `--metrics-addr …:0`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.log.lock().unwrap().iter().find_map(|l| {
            let at = l.find("serving metrics addr=")? + "serving metrics addr=".len();
            l[at..].split_whitespace().next()?.parse().ok()
        })
    }

    pub fn sigterm(&self) {
        // SAFETY: signalling the child we started, by its PID.
        assert_eq!(
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) },
            0
        );
    }
}

/// A figure in the report from a `/metrics` reply: the number after `label`.
pub fn figure(report: &[String], label: &str) -> u64 {
    report
        .iter()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{label} not in report: {report:#?}"))
}
