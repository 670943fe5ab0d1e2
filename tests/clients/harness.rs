//! What both client tests share: the linechat binary with an IRC and a line listener, the
//! netcat user on the other side, child processes that die with the test, bounded waiting, and
//! the skip-or-fail rule for missing clients.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{listening_addr, skip_outside_ci, KeyKind, TempPath, TestCert, PROMPT};

/// The longest a single wait may take before the test fails and says what it saw. Generous:
/// a real client starting on a loaded 2-core machine; a passing step takes well under a second.
pub const WAIT: Duration = Duration::from_secs(30);

/// How often a wait looks again (at a screen, a log file, the lines received).
const POLL: Duration = Duration::from_millis(100);

/// The channel the clients join: the room `lobby`, where every netcat user starts.
pub const CHANNEL: &str = "#lobby";

const LINECHAT_BIN: &str = env!("CARGO_BIN_EXE_linechat");

/// Whether every client program runs (`program probe-argument` exits 0), and the other things
/// the test needs (`extra`: what is missing, if anything). If not, the test is skipped outside
/// CI and fails in CI (see [`skip_outside_ci`]).
pub fn available(test: &str, programs: &[(&str, &str)], extra: Option<&str>) -> bool {
    let mut missing: Vec<&str> = programs
        .iter()
        .filter(|(program, probe)| {
            !Command::new(program)
                .arg(probe)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|(program, _)| *program)
        .collect();
    missing.extend(extra);
    if missing.is_empty() {
        return true;
    }
    skip_outside_ci(
        test,
        &missing.join(", "),
        "scripts/test-deps.sh installs them (as root, with apt-get)",
    );
    false
}

/// Polls `check` until it gives a value, for at most [`WAIT`]; then fails with what was
/// awaited and `context()` (what was seen instead), built only then.
pub fn wait_for<T>(
    what: &str,
    mut check: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    since_start();
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            // The test's timeline (when each wait ended, how long it took), shown with the
            // rest of its output when it fails.
            eprintln!("[{:>9.2?}] {what} ({:.2?})", since_start(), start.elapsed());
            return v;
        }
        if start.elapsed() >= WAIT {
            panic!("timed out after {WAIT:?} waiting for {what}\n{}", context());
        }
        thread::sleep(POLL);
    }
}

/// Time since the first wait in this test binary (the tests in it run at once).
fn since_start() -> Duration {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// A temporary directory (removed on drop, also on panic) to use as a client's `HOME`, so no
/// configuration of the person running the tests leaks in.
pub struct Home(TempPath);

impl Home {
    pub fn new(client: &str) -> Home {
        let home = TempPath::new(client);
        std::fs::create_dir(&home.0).unwrap_or_else(|e| panic!("create {}: {e}", home.0.display()));
        Home(home)
    }

    pub fn path(&self) -> &Path {
        &self.0 .0
    }

    /// A file or directory inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    /// `command` with nothing of the caller's environment but `PATH`: `HOME` is this
    /// directory, the locale UTF-8.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .env("LANG", "C.UTF-8")
            .current_dir(self.path())
            .stdin(Stdio::null());
        cmd
    }
}

/// A child process, killed (SIGKILL, by its PID) and reaped on drop, so no test leaves a
/// server or a client behind, whatever happened.
#[derive(Debug)]
pub struct Proc {
    pub name: &'static str,
    pub child: Child,
}

impl Proc {
    pub fn spawn(name: &'static str, cmd: &mut Command) -> Proc {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        Proc { name, child }
    }

    /// Fails with `context` if the process has ended (a client that crashed or quit early).
    pub fn assert_running(&mut self, context: impl Fn() -> String) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status})\n{}", self.name, context());
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines read from a stream by a thread of their own, with what has come of a line not yet
/// ended (a prompt), and whether the stream has ended.
#[derive(Debug, Default)]
struct Received {
    lines: Vec<String>,
    partial: String,
    closed: Option<String>,
}

type Shared = Arc<Mutex<Received>>;

/// Reads `from` until it ends, into `into`, line by line (without `\r\n`).
fn collect(mut from: impl Read + Send + 'static, into: Shared) {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => {
                    into.lock().unwrap().closed = Some("end of stream".into());
                    return;
                }
                Ok(n) => n,
                Err(e) => {
                    into.lock().unwrap().closed = Some(e.to_string());
                    return;
                }
            };
            let mut r = into.lock().unwrap();
            r.partial += &String::from_utf8_lossy(&buf[..n]);
            while let Some(at) = r.partial.find('\n') {
                let line: String = r.partial.drain(..=at).collect();
                r.lines.push(line.trim_end_matches(['\r', '\n']).to_owned());
            }
        }
    });
}

/// The last `n` lines of `text`, for failure messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The linechat binary serving IRC and the line protocol on 127.0.0.1, each on a port the
/// kernel picked (`:0`), as its log announces them.
pub struct Server {
    pub irc: SocketAddr,
    pub line: SocketAddr,
    /// The `ircs://` listener and its certificate, when started with [`Server::start_tls`].
    pub ircs: Option<(SocketAddr, TestCert)>,
    log: Arc<Mutex<Vec<String>>>,
    _proc: Proc,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(None)
    }

    /// Also an `ircs://` listener, with a certificate for 127.0.0.1 and localhost.
    pub fn start_tls() -> Server {
        Server::start_with(Some(TestCert::new("localhost", 30, KeyKind::EcPkcs8)))
    }

    fn start_with(cert: Option<TestCert>) -> Server {
        let tls: Vec<&std::ffi::OsStr> = match &cert {
            Some(cert) => vec![
                "--listen".as_ref(),
                "ircs://127.0.0.1:0".as_ref(),
                "--tls-cert".as_ref(),
                cert.chain.as_os_str(),
                "--tls-key".as_ref(),
                cert.key.as_os_str(),
            ],
            None => Vec::new(),
        };
        let mut proc = Proc::spawn(
            "linechat",
            Command::new(LINECHAT_BIN)
                .args([
                    "--listen",
                    "irc://127.0.0.1:0",
                    "--listen",
                    "line://127.0.0.1:0",
                ])
                .args(tls)
                // The clients have flood queues of their own; the server's is not under test.
                .args(["--server-name", "irc.test", "--rate-limit", "0"])
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = BufReader::new(proc.child.stderr.take().expect("piped stderr"));
        let sink = log.clone();
        // Drains the log for as long as the server runs, so it never blocks on a full pipe.
        thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { return };
                sink.lock().unwrap().push(line);
            }
        });
        let shown = |log: &Arc<Mutex<Vec<String>>>| {
            format!("--- linechat's log ---\n{}", log.lock().unwrap().join("\n"))
        };
        let listener = |protocol: &str| {
            let tag = format!("protocol=\"{protocol}\"");
            log.lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(&tag))
                .and_then(|l| listening_addr(l))
        };
        let (irc, line, ircs) = wait_for(
            "linechat's log to announce its irc:// and line:// (and ircs://) listeners",
            || {
                proc.assert_running(|| shown(&log));
                let ircs = match cert {
                    Some(_) => Some(listener("ircs")?),
                    None => None,
                };
                Some((listener("irc")?, listener("line")?, ircs))
            },
            || shown(&log),
        );
        Server {
            irc,
            line,
            ircs: ircs.zip(cert),
            log,
            _proc: proc,
        }
    }

    /// The server's log so far, for failure messages.
    pub fn log_text(&self) -> String {
        format!(
            "--- linechat's log (end) ---\n{}",
            tail(&self.log.lock().unwrap().join("\n"), 40)
        )
    }
}

/// A netcat user: the line protocol over plain TCP, as `nc` speaks it. Starts in the lobby.
#[derive(Debug)]
pub struct Netcat {
    pub nick: &'static str,
    stream: TcpStream,
    received: Shared,
    /// Lines before this index have been matched by an earlier wait.
    next: usize,
}

impl Netcat {
    /// Connects, answers the nickname prompt and waits for the welcome.
    pub fn join(server: &Server, nick: &'static str) -> Netcat {
        let stream = TcpStream::connect_timeout(&server.line, WAIT)
            .unwrap_or_else(|e| panic!("{nick}: connect to {}: {e}", server.line));
        stream.set_write_timeout(Some(WAIT)).unwrap();
        let received = Shared::default();
        collect(
            stream.try_clone().expect("clone the stream"),
            received.clone(),
        );
        let mut user = Netcat {
            nick,
            stream,
            received,
            next: 0,
        };
        wait_for(
            &format!("{nick} to get the prompt {PROMPT:?}"),
            || (user.received.lock().unwrap().partial == PROMPT).then_some(()),
            || user.transcript(server),
        );
        user.received.lock().unwrap().partial.clear();
        user.send(nick);
        user.expect(server, &format!("Welcome to the chat, {nick}!"));
        user
    }

    pub fn send(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .unwrap_or_else(|e| panic!("{}: send {line:?}: {e}", self.nick));
    }

    /// Waits for a line equal to `line`, after the lines earlier waits matched.
    pub fn expect(&mut self, server: &Server, line: &str) {
        self.expect_seeing(server, line, String::new);
    }

    /// [`Netcat::expect`], whose failure also shows `client()` (the IRC client's side).
    pub fn expect_seeing(&mut self, server: &Server, line: &str, client: impl Fn() -> String) {
        let nick = self.nick;
        let from = self.next;
        let at = wait_for(
            &format!("{nick} (netcat) to receive the line {line:?}"),
            || {
                let r = self.received.lock().unwrap();
                let at = r.lines[from..].iter().position(|l| l == line);
                if at.is_none() {
                    if let Some(why) = &r.closed {
                        panic!(
                            "{nick}'s connection ended ({why}) while waiting for {line:?}\n{}\n{}",
                            self.transcript(server),
                            client()
                        );
                    }
                }
                at
            },
            || format!("{}\n{}", self.transcript(server), client()),
        );
        self.next = from + at + 1;
    }

    fn transcript(&self, server: &Server) -> String {
        let r = self.received.lock().unwrap();
        format!(
            "--- what {} (netcat) received ---\n{}\n(unended: {:?})\n{}",
            self.nick,
            r.lines.join("\n"),
            r.partial,
            server.log_text()
        )
    }
}

impl Drop for Netcat {
    fn drop(&mut self) {
        // Ends the reading thread too.
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}
