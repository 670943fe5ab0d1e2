//! A real server on 127.0.0.1:0 and a line-oriented test client that talks to it over TCP.

use std::net::SocketAddr;
use std::time::Duration;

use linechat::server::Extras;
use linechat::Config;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const PROMPT: &str = "Please enter your nickname: ";

/// Long enough for a loaded 2-core CI machine, short enough that a hang fails fast. Under
/// paused time this is virtual, so timer tests are unaffected.
pub const WAIT: Duration = Duration::from_secs(10);

/// Serves one 127.0.0.1:0 listener per scheme until the sender is used or dropped; their
/// addresses in the same order.
#[allow(dead_code)] // the fault suite shares this file and does not use it
pub async fn serve_schemes(
    schemes: &[linechat::net::listen::Scheme],
    extras: Extras,
    config: Config,
) -> (Vec<SocketAddr>, oneshot::Sender<()>, JoinHandle<()>) {
    let mut listeners = Vec::new();
    for &scheme in schemes {
        let socket = linechat::server::bind("127.0.0.1:0".parse().unwrap())
            .await
            .expect("bind 127.0.0.1:0");
        listeners.push(linechat::server::Listener {
            scheme,
            tls: false,
            socket,
        });
    }
    let addrs = listeners
        .iter()
        .map(|l| l.socket.local_addr().unwrap())
        .collect();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(linechat::server::serve(
        listeners,
        extras,
        config,
        async move {
            let _ = rx.await;
        },
    ));
    (addrs, tx, task)
}

pub struct TestServer {
    pub addr: SocketAddr,
    /// The HTTP endpoint, when started with [`TestServer::with_metrics`].
    pub metrics_addr: Option<SocketAddr>,
    /// The IRC listener, when started with [`TestServer::with_irc`].
    #[allow(dead_code)] // the fault suite shares this file and does not use it
    pub irc_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestServer {
    pub async fn start(config: Config) -> Self {
        Self::start_with(config, Extras::default()).await
    }

    /// Starts with a metrics endpoint on 127.0.0.1:0, plus whatever `extras` holds.
    pub async fn with_metrics(config: Config, mut extras: Extras) -> Self {
        let metrics = linechat::server::bind_metrics("127.0.0.1:0".parse().unwrap())
            .await
            .expect("bind metrics on 127.0.0.1:0");
        extras.metrics = Some(metrics);
        Self::start_with(config, extras).await
    }

    pub async fn start_with(config: Config, extras: Extras) -> Self {
        let listener = linechat::server::bind("127.0.0.1:0".parse().unwrap())
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let metrics_addr = extras.metrics.as_ref().map(|l| l.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(linechat::server::run_with(
            listener,
            extras,
            config,
            async move {
                let _ = rx.await;
            },
        ));
        TestServer {
            addr,
            metrics_addr,
            irc_addr: None,
            shutdown: Some(tx),
            task,
        }
    }

    /// Serves the line protocol and IRC, each on its own 127.0.0.1:0 listener.
    #[allow(dead_code)] // the fault suite shares this file and does not use it
    pub async fn with_irc(config: Config) -> Self {
        Self::with_irc_extras(config, Extras::default()).await
    }

    /// [`TestServer::with_irc`], with `extras` (a store, a transcript).
    #[allow(dead_code)] // the fault suite shares this file and does not use it
    pub async fn with_irc_extras(config: Config, extras: Extras) -> Self {
        use linechat::net::listen::Scheme;
        let (addrs, shutdown, task) =
            serve_schemes(&[Scheme::Line, Scheme::Irc], extras, config).await;
        TestServer {
            addr: addrs[0],
            metrics_addr: None,
            irc_addr: Some(addrs[1]),
            shutdown: Some(shutdown),
            task,
        }
    }

    /// Connects an IRC client to the IRC listener (without registering).
    #[allow(dead_code)] // the fault suite shares this file and does not use it
    pub async fn irc(&self) -> IrcClient {
        IrcClient::connect(self.irc_addr.expect("started with_irc")).await
    }

    /// Connects an IRC client and registers it as `nick`, asking for `caps` first.
    #[allow(dead_code)] // the fault suite shares this file and does not use it
    pub async fn irc_join(&self, nick: &str, caps: &[&str]) -> IrcClient {
        let mut c = self.irc().await;
        c.register(nick, caps).await;
        c
    }

    /// Starts shutdown without waiting for it to finish.
    pub fn begin_stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Serves on a listener the test made itself (in a network namespace, say).
    #[allow(dead_code)] // used by the fault suite, which shares this file
    pub async fn with_listener(listener: std::net::TcpListener, config: Config) -> Self {
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let listener = tokio::net::TcpListener::from_std(listener).expect("register listener");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(linechat::server::run(listener, config, async move {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            metrics_addr: None,
            irc_addr: None,
            shutdown: Some(tx),
            task,
        }
    }

    /// The defaults, but without flood control, so tests can send as fast as they like.
    pub async fn unthrottled() -> Self {
        Self::start(Config {
            rate_limit: None,
            ..Config::default()
        })
        .await
    }

    /// Triggers shutdown and waits for `run` to return.
    pub async fn stop(mut self) {
        self.begin_stop();
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("server stopped in time")
            .expect("server task did not panic");
    }

    pub async fn join(&self, nick: &str) -> Client {
        Client::join(self.addr, nick).await
    }
}

pub struct Client {
    pub nick: String,
    /// How long to wait for a line. Paused-time tests raise it: their clock jumps straight to
    /// the next timer, so a long virtual wait costs nothing and a hang still fails at once.
    pub wait: Duration,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Client::from_stream(stream)
    }

    /// Connects with a tiny receive buffer, so a client that does not read fills up quickly
    /// instead of hiding megabytes in the kernel.
    pub async fn connect_small_buffer(addr: SocketAddr) -> Client {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        Client::from_stream(socket.connect(addr).await.expect("connect"))
    }

    /// Wraps a connection the test made itself (in a network namespace, through a proxy).
    #[allow(dead_code)] // used by the fault suite, which shares this file
    pub fn from_std(stream: std::net::TcpStream) -> Client {
        stream.set_nonblocking(true).expect("non-blocking stream");
        Client::from_stream(TcpStream::from_std(stream).expect("register stream"))
    }

    fn from_stream(stream: TcpStream) -> Client {
        let (r, w) = stream.into_split();
        Client {
            nick: String::new(),
            wait: WAIT,
            reader: BufReader::new(r),
            writer: w,
        }
    }

    /// Connects, answers the prompt and reads the welcome.
    pub async fn join(addr: SocketAddr, nick: &str) -> Client {
        let mut c = Client::connect(addr).await;
        c.register(nick).await;
        c
    }

    /// The two halves, for a test that reads and writes at once.
    #[allow(dead_code)] // used by the fault suite
    pub fn into_parts(self) -> (BufReader<OwnedReadHalf>, OwnedWriteHalf) {
        (self.reader, self.writer)
    }

    pub async fn register(&mut self, nick: &str) {
        self.expect_prompt().await;
        self.choose(nick).await;
    }

    /// Connects, answers the prompt with `nick` and reads the welcome's first two lines,
    /// leaving what follows them (a message of the day, who is here) to the test.
    #[allow(dead_code)] // the fault suite shares this file and does not use it
    pub async fn greeted(addr: SocketAddr, nick: &str) -> Client {
        let mut c = Client::connect(addr).await;
        c.expect_prompt().await;
        c.send(nick).await;
        c.expect(&format!("Welcome to the chat, {nick}!")).await;
        c.expect("Type /help for the list of commands.").await;
        c.nick = nick.to_owned();
        c
    }

    /// Answers a prompt already read with `nick` and reads the welcome.
    pub async fn choose(&mut self, nick: &str) {
        self.send(nick).await;
        self.expect(&format!("Welcome to the chat, {nick}!")).await;
        self.expect("Type /help for the list of commands.").await;
        let here = self.line().await;
        assert!(
            here.starts_with("You are in lobby ("),
            "{nick}: the welcome should say who is here: {here}"
        );
        self.nick = nick.to_owned();
    }

    pub async fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes()).await;
    }

    /// Sends `lines` lines `N payload` (N counting from 0) in writes of about 32 KiB: a flood
    /// as fast as the socket takes it.
    #[allow(dead_code)] // the fault suite shares this file and does not use it
    pub async fn flood(&mut self, lines: usize, payload: &str) {
        let mut batch = String::new();
        for i in 0..lines {
            batch.push_str(&format!("{i} {payload}\n"));
            if batch.len() > 32 * 1024 {
                self.send_raw(batch.as_bytes()).await;
                batch.clear();
            }
        }
        self.send_raw(batch.as_bytes()).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    /// Like [`Client::send_raw`], for tests where the server may be gone.
    #[allow(dead_code)] // used by the fault suite, which shares this file
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes).await
    }

    /// Half-closes: the server sees EOF, we can still read.
    pub async fn close_write(&mut self) {
        self.writer.shutdown().await.expect("shutdown");
    }

    /// Closes with SO_LINGER 0, so the kernel sends RST instead of FIN.
    pub fn reset(self) {
        let stream = self.reader.into_inner().reunite(self.writer).unwrap();
        socket2::SockRef::from(&stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(stream);
    }

    /// The next line, without its `\n`. Panics on EOF or after [`WAIT`].
    pub async fn line(&mut self) -> String {
        match self.try_line().await {
            Some(line) => line,
            None => panic!("{}: connection closed while waiting for a line", self.nick),
        }
    }

    /// The next line, or `None` at EOF. Panics after [`WAIT`].
    pub async fn try_line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        let wait = self.wait;
        let n = tokio::time::timeout(wait, self.reader.read_until(b'\n', &mut buf))
            .await
            .unwrap_or_else(|_| panic!("{}: no line within {wait:?}", self.nick))
            .ok()?;
        if n == 0 {
            return None;
        }
        assert_eq!(buf.pop(), Some(b'\n'), "{}: line cut off at EOF", self.nick);
        Some(String::from_utf8(buf).expect("server sent UTF-8"))
    }

    pub async fn expect(&mut self, exact: &str) {
        let got = self.line().await;
        assert_eq!(got, exact, "{} got an unexpected line", self.nick);
    }

    /// Reads lines until one equals `exact`, returning those skipped.
    pub async fn skip_until(&mut self, exact: &str) -> Vec<String> {
        let mut skipped = Vec::new();
        loop {
            let line = self.line().await;
            if line == exact {
                return skipped;
            }
            skipped.push(line);
        }
    }

    /// Reads and discards everything up to EOF, returning how many bytes that was.
    pub async fn read_to_eof(&mut self) -> usize {
        let mut sink = Vec::new();
        self.reader.read_to_end(&mut sink).await.expect("read");
        sink.len()
    }

    /// The prompt has no line ending, so it is read byte-exact.
    pub async fn expect_prompt(&mut self) {
        self.expect_unended(PROMPT).await;
    }

    /// Text without a line ending (a prompt), read byte-exact.
    pub async fn expect_unended(&mut self, text: &str) {
        let mut buf = vec![0; text.len()];
        tokio::time::timeout(self.wait, self.reader.read_exact(&mut buf))
            .await
            .expect("prompt in time")
            .expect("prompt");
        assert_eq!(String::from_utf8_lossy(&buf), text);
    }

    /// The server closes the connection (after any lines still queued, which are returned).
    pub async fn expect_closed(&mut self) -> Vec<String> {
        let mut rest = Vec::new();
        while let Some(line) = self.try_line().await {
            rest.push(line);
        }
        rest
    }

    /// Sends `/echo` with a marker and returns every line that arrived before its echo: a
    /// round trip through the server proves nothing else was pending for us.
    pub async fn sync(&mut self) -> Vec<String> {
        let marker = format!("sync-{}", rand_token());
        self.send(&format!("/echo {marker}")).await;
        self.skip_until(&marker).await
    }

    /// Runs a command and collects its reply lines (up to the sync marker).
    pub async fn command(&mut self, line: &str) -> Vec<String> {
        self.send(line).await;
        self.sync().await
    }
}

/// An IRC client over TCP: sends CRLF-terminated lines, reads lines with a timeout and, unless
/// told not to, answers the server's PING itself (and hides it).
#[allow(dead_code)] // the fault suite shares this file and does not use it
pub struct IrcClient {
    pub nick: String,
    pub wait: Duration,
    /// Answer `PING` with `PONG` and skip it; off for tests that watch the PING itself.
    pub auto_pong: bool,
    pub local_addr: SocketAddr,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

#[allow(dead_code)] // the fault suite shares this file and does not use it
impl IrcClient {
    pub async fn connect(addr: SocketAddr) -> IrcClient {
        let stream = TcpStream::connect(addr).await.expect("connect to IRC");
        let local_addr = stream.local_addr().unwrap();
        let (r, w) = stream.into_split();
        IrcClient {
            nick: "*".to_owned(),
            wait: WAIT,
            auto_pong: true,
            local_addr,
            reader: BufReader::new(r),
            writer: w,
        }
    }

    /// `CAP LS 302` and `CAP REQ` (when `caps` is not empty), `NICK`, `USER`, `CAP END`; then
    /// reads the welcome up to the end of the MOTD and returns it.
    pub async fn register(&mut self, nick: &str, caps: &[&str]) -> Vec<String> {
        if !caps.is_empty() {
            self.send("CAP LS 302").await;
            self.expect_command("CAP").await;
            self.send(&format!("CAP REQ :{}", caps.join(" "))).await;
            let ack = self.expect_command("CAP").await;
            assert!(
                ack.contains(" ACK "),
                "{nick}: caps not acknowledged: {ack}"
            );
        }
        self.send(&format!("NICK {nick}")).await;
        self.send(&format!("USER {nick} 0 * :{nick} the tester"))
            .await;
        if !caps.is_empty() {
            self.send("CAP END").await;
        }
        let mut welcome = Vec::new();
        loop {
            let line = self.line().await;
            let command = irc_command(&line).to_owned();
            welcome.push(line);
            match command.as_str() {
                "376" | "422" => break,
                "433" | "432" => panic!("{nick}: registration refused: {welcome:?}"),
                _ => {}
            }
        }
        assert_eq!(irc_command(&welcome[0]), "001", "{nick}: {welcome:?}");
        self.nick = nick.to_owned();
        welcome
    }

    pub async fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    /// The next line without its CRLF, or `None` at EOF. Panics after `wait`.
    pub async fn try_line(&mut self) -> Option<String> {
        loop {
            let mut buf = Vec::new();
            let wait = self.wait;
            let n = tokio::time::timeout(wait, self.reader.read_until(b'\n', &mut buf))
                .await
                .unwrap_or_else(|_| panic!("{}: no IRC line within {wait:?}", self.nick))
                .ok()?;
            if n == 0 {
                return None;
            }
            assert_eq!(buf.pop(), Some(b'\n'), "{}: line cut off at EOF", self.nick);
            assert_eq!(
                buf.pop(),
                Some(b'\r'),
                "{}: IRC lines end in CRLF",
                self.nick
            );
            let line = String::from_utf8(buf).expect("server sent UTF-8");
            if self.auto_pong && irc_command(&line) == "PING" {
                let token = line.rsplit(' ').next().unwrap_or("").to_owned();
                self.send(&format!("PONG {token}")).await;
                continue;
            }
            return Some(line);
        }
    }

    pub async fn line(&mut self) -> String {
        match self.try_line().await {
            Some(line) => line,
            None => panic!(
                "{}: IRC connection closed while waiting for a line",
                self.nick
            ),
        }
    }

    pub async fn expect(&mut self, exact: &str) {
        let got = self.line().await;
        assert_eq!(got, exact, "{} got an unexpected IRC line", self.nick);
    }

    /// Reads until a line whose command (or numeric) is `command`; returns that line.
    pub async fn expect_command(&mut self, command: &str) -> String {
        loop {
            let line = self.line().await;
            if irc_command(&line) == command {
                return line;
            }
        }
    }

    /// Reads lines until `done` holds for one, returning those before it and that one.
    pub async fn until(&mut self, done: impl Fn(&str) -> bool) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await;
            let last = done(&line);
            lines.push(line);
            if last {
                return lines;
            }
        }
    }

    /// Sends `PING` with a marker and returns every line that arrived before its `PONG`.
    pub async fn sync(&mut self) -> Vec<String> {
        let marker = format!("sync-{}", rand_token());
        self.send(&format!("PING {marker}")).await;
        let mut lines = self
            .until(|l| irc_command(l) == "PONG" && l.ends_with(&marker))
            .await;
        lines.pop();
        lines
    }

    /// Reads to EOF, returning the lines that came first.
    pub async fn expect_closed(&mut self) -> Vec<String> {
        let mut rest = Vec::new();
        while let Some(line) = self.try_line().await {
            rest.push(line);
        }
        rest
    }
}

/// The command or numeric of an IRC line, past its tags and source.
#[allow(dead_code)] // the fault suite shares this file and does not use it
pub fn irc_command(line: &str) -> &str {
    let mut words = line.split(' ').filter(|w| !w.is_empty());
    let mut word = words.next().unwrap_or("");
    if word.starts_with('@') {
        word = words.next().unwrap_or("");
    }
    if word.starts_with(':') {
        word = words.next().unwrap_or("");
    }
    word
}

fn rand_token() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A plain HTTP/1.1 GET, as a monitoring system would send it: returns the status code and the
/// body. The server closes the connection after the response because the request asks it to.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path).await
}

pub async fn http_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect to metrics");
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        String::from_utf8(response).expect("HTTP response is UTF-8")
    };
    let response = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("HTTP response in time");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {response:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_owned())
}

/// A path under the system's temporary directory that no other test uses; removed on drop.
pub struct TempPath(pub std::path::PathBuf);

impl TempPath {
    pub fn new(name: &str) -> TempPath {
        let dir = std::env::temp_dir().join(format!(
            "linechat-test-{}-{}",
            std::process::id(),
            rand_token()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempPath(dir.join(name))
    }

    pub fn with_name(&self, name: &str) -> std::path::PathBuf {
        self.0.with_file_name(name)
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The rule for a test that cannot run here because `what` is missing (a tool, root): outside CI
/// it prints `SKIPPED <test>: needs <what>; <remedy>` and returns, and the caller returns too, so
/// the test passes; in CI (`CI` set) it fails, so no such test can pass there by not running.
#[allow(dead_code)] // used by the fault suite and the client tests, not by every includer
pub fn skip_outside_ci(test: &str, what: &str, remedy: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{test}: needs {what}; {remedy}");
    }
    // Straight to the process's stderr, not eprintln!: the test harness captures (and hides)
    // what passing tests print with the macros, and a skip should be seen.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: needs {what}; {remedy}");
}

/// A program a test drives (`nc`, `promtool`), probed by running it with `probe`. `.ci/run`
/// installs them (scripts/test-deps.sh), so in CI a missing one fails the test; elsewhere the
/// test says it skipped.
#[allow(dead_code)] // the fault suite shares this file and does not use it
pub fn required_tool(program: &'static str, probe: &str, package: &str) -> Option<&'static str> {
    let found = std::process::Command::new(program)
        .arg(probe)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is missing in CI: scripts/test-deps.sh should have installed {package}"
        );
        eprintln!("skipped: {program} not installed (apt-get install {package})");
        return None;
    }
    Some(program)
}

/// A `/proc/PID/status` figure in KiB, e.g. `VmRSS` (resident now) or `VmHWM` (peak).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// The address in the binary's `listening addr=… protocol=…` log line, if `line` is one.
#[allow(dead_code)] // used by the binary tests and the fault suite, not by every includer
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let at = line.find("listening addr=")? + "listening addr=".len();
    line[at..].split_whitespace().next()?.parse().ok()
}

/// A test certificate authority and a server certificate it signed, made with `openssl` at
/// test time (no private key is committed): `chain` holds the server's certificate then the
/// CA's, as `--tls-cert` wants it; clients trust `ca`.
#[allow(dead_code)] // used by the TLS and client tests, not by every includer
pub struct TestCert {
    pub dir: TempPath,
    pub ca: std::path::PathBuf,
    pub chain: std::path::PathBuf,
    pub key: std::path::PathBuf,
    /// The server certificate's DER, to compare with what a client was shown.
    pub der: Vec<u8>,
}

/// The server key's type and how its PEM is written.
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA P-256, PKCS#8 (`BEGIN PRIVATE KEY`).
    EcPkcs8,
    /// ECDSA P-256, SEC1 (`BEGIN EC PRIVATE KEY`).
    EcSec1,
    /// RSA 2048, PKCS#8.
    RsaPkcs8,
    /// RSA 2048, PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    RsaPkcs1,
}

#[allow(dead_code)]
impl TestCert {
    /// A certificate for `localhost` and 127.0.0.1 with subject `CN=<cn>`, valid for `days`.
    pub fn new(cn: &str, days: u32, key: KeyKind) -> TestCert {
        let dir = TempPath::new("tls");
        std::fs::create_dir_all(&dir.0).unwrap();
        let at = |name: &str| dir.0.join(name);
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&dir.0)
                .output()
                .unwrap_or_else(|e| panic!("openssl (scripts/test-deps.sh installs it): {e}"));
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let days = days.to_string();
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "30",
            "-subj",
            "/CN=linechat test CA",
        ]);
        let newkey: &[&str] = match key {
            KeyKind::EcPkcs8 | KeyKind::EcSec1 => {
                &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
            }
            KeyKind::RsaPkcs8 | KeyKind::RsaPkcs1 => &["-newkey", "rsa:2048"],
        };
        let subj = format!("/CN={cn}");
        openssl(
            &[
                &[
                    "req", "-nodes", "-keyout", "key.pem", "-out", "leaf.csr", "-subj", &subj,
                ],
                newkey,
            ]
            .concat(),
        );
        std::fs::write(
            at("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            &days,
            "-extfile",
            "ext.cnf",
        ]);
        match key {
            KeyKind::EcSec1 => openssl(&["ec", "-in", "key.pem", "-out", "key.pem"]),
            KeyKind::RsaPkcs1 => {
                openssl(&["rsa", "-traditional", "-in", "key.pem", "-out", "key.pem"])
            }
            _ => {}
        }
        openssl(&[
            "x509", "-in", "leaf.pem", "-outform", "DER", "-out", "leaf.der",
        ]);
        let chain = [
            std::fs::read(at("leaf.pem")).unwrap(),
            std::fs::read(at("ca.pem")).unwrap(),
        ]
        .concat();
        std::fs::write(at("chain.pem"), chain).unwrap();
        TestCert {
            ca: at("ca.pem"),
            chain: at("chain.pem"),
            key: at("key.pem"),
            der: std::fs::read(at("leaf.der")).unwrap(),
            dir,
        }
    }
}

/// `promtool check metrics` on a scrape: the exposition is what Prometheus accepts (skipped
/// outside CI without promtool, as [`required_tool`] says).
#[allow(dead_code)] // used by the monitoring and TLS tests
pub async fn promtool_check(text: &str) {
    use tokio::io::AsyncWriteExt;
    let Some(promtool) = required_tool("promtool", "--version", "prometheus") else {
        return;
    };
    let mut check = tokio::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start promtool");
    let mut stdin = check.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(WAIT, check.wait_with_output())
        .await
        .expect("promtool finished in time")
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}
