//! `linechat`: the chat server. Maps flags, `LINECHAT_*` variables and the config file onto
//! [`Config`] (`settings`), sets up logging, raises the open-file limit, opens the listeners,
//! the metrics endpoint and the transcript when asked, tells systemd it is ready, and runs
//! until SIGINT or SIGTERM. SIGHUP reopens the transcript and reloads the configuration and the TLS
//! certificate.
//!
//! `--generate` prints the man page, shell completions or the example config file, from the
//! same clap definitions as `--help`: run from the binary (as ripgrep's `--generate` is), they
//! describe exactly the build that prints them, with no build script that would have to
//! compile these definitions a second time and no extra crate for an xtask.

mod service;
mod settings;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::builder::RangedU64ValueParser;
use clap::{FromArgMatches, Parser, ValueEnum};
use linechat::cluster;
use linechat::config::Fsync;
use linechat::net::listen::{self, ListenUrl, Scheme};
use linechat::net::tls::Certs;
use linechat::ops::transcript::{self, Transcript};
use linechat::server::{Extras, Listener};
use linechat::store::{self, Log};
use linechat::Config;

/// One chat hub for netcat and IRC: `nc localhost 4000`, or point an IRC client at port 6667.
#[derive(Debug, Parser)]
#[command(version = VERSION, about, long_about = None)]
struct Args {
    /// Read settings from this TOML file. Each key is a long flag without its dashes, with the
    /// same meaning (`max-clients = 500`; a repeatable flag takes a list); flags and LINECHAT_*
    /// variables override it. linechat.example.toml lists them all.
    #[arg(long, env = "LINECHAT_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,

    /// Check the configuration (flags, environment and the --config file), print the settings
    /// in effect with secrets masked, and exit: 0 if it is valid, 1 if not.
    #[arg(long)]
    check_config: bool,

    /// Print the man page, a shell's completions or the example config file, and exit.
    #[arg(long, value_enum, value_name = "WHAT", hide = true)]
    generate: Option<Generate>,

    /// A listener, as URL: `line://HOST:PORT` (or a bare HOST:PORT) for netcat, `irc://HOST:PORT`
    /// for IRC clients, `http://HOST:PORT` for browsers (the web client at `/`, WebSocket at
    /// `/ws`); `line+tls://`, `ircs://` and `https://` the same over TLS (these need
    /// --tls-cert and --tls-key as well). Repeatable. Without any, linechat serves
    /// line://[::]:4000, irc://[::]:6667 and http://[::]:8080 (a busy default port is skipped
    /// with a warning). Port 0 picks a free
    /// port (the log says which).
    #[arg(long, env = "LINECHAT_LISTEN", value_delimiter = ',')]
    listen: Vec<String>,

    /// The TLS certificate chain (PEM, the server's certificate first) for line+tls://, ircs://
    /// and https:// listeners. SIGHUP reloads it and the --tls-key file.
    #[arg(
        long,
        env = "LINECHAT_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, or RSA or EC keys).
    #[arg(
        long,
        env = "LINECHAT_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,

    /// The origins a browser may open the web client's WebSocket from, separated by commas
    /// (e.g. `https://chat.example.org,http://localhost:8080`); default: any.
    #[arg(
        long,
        env = "LINECHAT_WEB_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGINS"
    )]
    web_origins: Vec<String>,

    /// The netcat port (the original server's flag): replaces the port of the first line://
    /// listener, or of the default one.
    #[arg(long, env = "LINECHAT_PORT")]
    port: Option<u16>,

    /// The name IRC replies carry as their source; default: this machine's host name.
    #[arg(long, env = "LINECHAT_SERVER_NAME")]
    server_name: Option<String>,

    /// Make the server private: IRC clients must send this with PASS, netcat users are asked
    /// for it before the nickname prompt. Off unless given.
    #[arg(long, env = "LINECHAT_SERVER_PASSWORD", value_name = "PASSWORD")]
    server_password: Option<String>,

    /// A server operator's name and password, NAME:PASSWORD, for IRC `OPER` and netcat
    /// `/oper`; repeatable. A plain password on the command line: prefer --opers FILE.
    #[arg(long, env = "LINECHAT_OPER", value_name = "NAME:PASSWORD")]
    oper: Vec<String>,

    /// A message of the day: a text file shown to IRC clients at registration (and on MOTD)
    /// and to netcat users after the welcome, at most 100 lines of 400 bytes. SIGHUP reads it
    /// again. Default: a short built-in one for IRC clients.
    #[arg(long, env = "LINECHAT_MOTD", value_name = "PATH")]
    motd: Option<PathBuf>,
    /// Server operators from a file: one `NAME HASH` a line, the hash as --hash-password
    /// prints it (`#` starts a comment). Operators have a room operator's rights in every room they are
    /// in, and /kill (IRC `KILL`). Read again on reload.
    #[arg(long, env = "LINECHAT_OPERS", value_name = "FILE")]
    opers: Option<PathBuf>,

    /// Read a password from standard input, print its argon2id hash (for --opers FILE) and
    /// exit.
    #[arg(long)]
    hash_password: bool,

    /// Longest line accepted, in bytes, not counting the line ending.
    #[arg(long, env = "LINECHAT_MAX_LINE", default_value_t = Config::default().max_line,
          value_parser = RangedU64ValueParser::<usize>::new().range(16..=1 << 20))]
    max_line: usize,

    /// Disconnect a client after this many seconds without input; 0 = never. The warning (an
    /// IRC client: a PING) comes 30 s before, or at 90 % of a timeout under 300 s.
    #[arg(long, env = "LINECHAT_IDLE_TIMEOUT", value_name = "SECS",
          default_value_t = Config::default().idle_timeout.map_or(0, |d| d.as_secs()))]
    idle_timeout: u64,

    /// Close a connection that has not chosen a nickname within this many seconds. Never 0:
    /// connections that never register would hold their slots for ever.
    #[arg(long, env = "LINECHAT_REGISTER_TIMEOUT", value_name = "SECS",
          default_value_t = Config::default().register_timeout.as_secs(),
          value_parser = register_timeout)]
    register_timeout: u64,

    /// The shortest password /register and /password accept, in characters (passwords
    /// registered before are not judged again).
    #[arg(long, env = "LINECHAT_MIN_PASSWORD_LENGTH", value_name = "N",
          default_value_t = Config::default().min_password,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=64))]
    min_password_length: usize,

    /// Most open connections at once, counting those still at the nickname prompt.
    #[arg(long, env = "LINECHAT_MAX_CLIENTS", default_value_t = Config::default().max_clients,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    max_clients: usize,

    /// Most connections still at the nickname prompt (IRC: not yet registered) at once, so
    /// connections that never choose a name cannot take every slot; default: half of
    /// --max-clients.
    #[arg(long, env = "LINECHAT_MAX_PROMPT", value_name = "N",
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    max_prompt: Option<usize>,

    /// Most open connections from one source address (IPv6: one /64); 0 = no limit. Over it, a
    /// connection gets one line saying so and is closed.
    #[arg(long, env = "LINECHAT_MAX_PER_IP", value_name = "N",
          default_value_t = Config::default().max_per_ip)]
    max_per_ip: usize,

    /// New connections one source address may open per second, sustained (after
    /// --connect-burst at once); 0 = no limit. Over it, one line saying so and a close.
    #[arg(long, env = "LINECHAT_CONNECT_RATE", value_name = "PER_SEC",
          default_value_t = Config::default().connect_rate.unwrap_or(0.0))]
    connect_rate: f64,

    /// New connections one source address may open at once before --connect-rate applies.
    #[arg(long, env = "LINECHAT_CONNECT_BURST", value_name = "N",
          default_value_t = Config::default().connect_burst,
          value_parser = clap::value_parser!(u32).range(1..))]
    connect_burst: u32,

    /// Source addresses the per-address limits do not apply to: CIDRs separated by commas
    /// (e.g. 127.0.0.0/8,::1,10.0.0.0/8), or `none`.
    #[arg(
        long,
        env = "LINECHAT_IP_EXEMPT",
        value_name = "CIDRS",
        default_value = "127.0.0.0/8,::1"
    )]
    ip_exempt: String,

    /// Bytes of output that may wait for one client; a client that falls further behind is
    /// disconnected as a slow consumer.
    #[arg(long, env = "LINECHAT_QUEUE_BYTES", value_name = "BYTES",
          default_value_t = Config::default().queue_bytes,
          value_parser = RangedU64ValueParser::<usize>::new().range(4096..=1 << 30))]
    queue_bytes: usize,

    /// Flood control: lines per second one client may send, sustained; 0 = off. A faster
    /// sender is read more slowly; nothing it sends is dropped.
    #[arg(long, env = "LINECHAT_RATE_LIMIT", value_name = "MSGS_PER_SEC",
          default_value_t = Config::default().rate_limit.unwrap_or(0.0))]
    rate_limit: f64,

    /// Flood control: lines a client may send at once before --rate-limit applies.
    #[arg(long, env = "LINECHAT_RATE_BURST", default_value_t = Config::default().rate_burst,
          value_parser = clap::value_parser!(u32).range(1..))]
    rate_burst: u32,

    /// Seconds shutdown waits for queued output to reach clients.
    #[arg(long, env = "LINECHAT_SHUTDOWN_GRACE", value_name = "SECS",
          default_value_t = Config::default().shutdown_grace.as_secs())]
    shutdown_grace: u64,

    /// Messages of a room shown to a client entering it (the lobby at connect, or /join);
    /// 0 = no scrollback.
    #[arg(long, env = "LINECHAT_HISTORY", value_name = "N",
          default_value_t = Config::default().history,
          value_parser = RangedU64ValueParser::<usize>::new().range(0..=100_000))]
    history: usize,

    /// Messages kept per room for scrollback and /history; 0 = keep none.
    #[arg(long, env = "LINECHAT_HISTORY_RETAIN", value_name = "N",
          default_value_t = Config::default().history_retain,
          value_parser = RangedU64ValueParser::<usize>::new().range(0..=100_000))]
    history_retain: usize,

    /// Most bytes all rooms' history may hold together (suffix K, M or G: KiB, MiB, GiB); past
    /// it the oldest messages, whatever their room, are forgotten first.
    #[arg(long, env = "LINECHAT_HISTORY_BYTES", value_name = "BYTES",
          default_value = "64M", value_parser = parse_bytes)]
    history_bytes: usize,

    /// Keep rooms, topics and history in this directory, so a restart (or a crash) loses none
    /// of them; it is created if missing, and one server at a time may use it. Without it,
    /// history lives in memory only.
    #[arg(long, env = "LINECHAT_DATA_DIR", value_name = "PATH")]
    data_dir: Option<PathBuf>,

    /// With --data-dir, how often what was written is forced to the disk (e.g. 1s, 200ms), or
    /// `always` (before each delivery). A crash of the server loses nothing delivered either
    /// way; a power loss loses at most this much.
    #[arg(long, env = "LINECHAT_FSYNC_INTERVAL", value_name = "INTERVAL|always",
          default_value = "1s", value_parser = parse_fsync)]
    fsync_interval: Fsync,

    /// With --data-dir, messages older than this are let go of (e.g. 30d, 12h, 90m); 0 = keep
    /// them however old (the count and byte limits still apply).
    #[arg(long, env = "LINECHAT_HISTORY_MAX_AGE", value_name = "AGE",
          default_value = "0", value_parser = parse_age)]
    history_max_age: Duration,

    /// With --data-dir, the most bytes all rooms' stored messages may take (K, M, G); past it
    /// the oldest messages of all rooms go first.
    #[arg(long, env = "LINECHAT_STORE_BYTES", value_name = "BYTES",
          default_value = "1G", value_parser = parse_bytes)]
    store_bytes: usize,

    /// Rooms one client may create per minute (joining existing rooms is not limited);
    /// 0 = no limit.
    #[arg(long, env = "LINECHAT_ROOMS_PER_MINUTE", value_name = "N",
          default_value_t = Config::default().rooms_per_minute)]
    rooms_per_minute: u32,

    /// Rooms with more people than this get a summary of arrivals and departures every 10 s
    /// instead of a notice for each (any room does past 30 notices in 10 s); 0 = always a
    /// notice for each, whatever the rate.
    #[arg(long, env = "LINECHAT_ANNOUNCE_LIMIT", value_name = "N",
          default_value_t = Config::default().announce_limit)]
    announce_limit: usize,

    /// Worker threads; 0 = one per CPU core. One thread, like Redis, delivers the most per
    /// CPU-second (no cross-thread wakeups, more lines per write) and ~10M lines/s in
    /// BENCHMARKS.md; more help only when that one core is saturated.
    #[arg(long, env = "LINECHAT_THREADS", default_value_t = 1)]
    threads: usize,

    /// Serve Prometheus metrics (GET /metrics) and a health check (GET /healthz) over HTTP on
    /// HOST:PORT, e.g. 127.0.0.1:9464. Off unless given.
    #[arg(long, env = "LINECHAT_METRICS_ADDR", value_name = "HOST:PORT")]
    metrics_addr: Option<String>,

    /// Append every chat event (messages, actions, joins, leaves, room moves, nickname changes) to this file as JSON
    /// lines. SIGHUP reopens it, for log rotation. Off unless given.
    #[arg(long, env = "LINECHAT_TRANSCRIPT", value_name = "PATH")]
    transcript: Option<PathBuf>,

    /// Share one chat with the other linechat servers that use this NATS broker (nats-server
    /// with JetStream, -js), e.g. nats://127.0.0.1:4222; give it once per server of a NATS
    /// cluster. Not with --data-dir yet (docs/CLUSTER.md). Off unless given.
    #[arg(
        long,
        env = "LINECHAT_CLUSTER",
        value_name = "nats://HOST:PORT",
        value_delimiter = ','
    )]
    cluster: Vec<String>,

    /// This server's name in the cluster, shown as the host of its people; letters, digits,
    /// `.`, `_` and `-`. Default: the host name and the first listener's port.
    #[arg(long, env = "LINECHAT_NODE_NAME", value_name = "NAME")]
    node_name: Option<String>,

    /// The NATS credentials file (.creds) that --cluster connects with (a secret is never a
    /// flag's value).
    #[arg(long, env = "LINECHAT_CLUSTER_CREDS", value_name = "PATH")]
    cluster_creds: Option<PathBuf>,
    /// Probe a connection silent for this many seconds with TCP keepalive, so a peer that
    /// vanished without closing is dropped: within this plus 4 probe intervals of SECS/9
    /// (at least 1 s), 42 s by default; a peer may miss three probes in a row and stay; 0 = off.
    #[arg(long, env = "LINECHAT_KEEPALIVE", value_name = "SECS",
          default_value_t = Config::default().keepalive.map_or(0, |d| d.as_secs()))]
    keepalive: u64,

    /// Drop a connection whose output goes unacknowledged for this many seconds (a dead peer
    /// with messages pending). The kernel's TCP_USER_TIMEOUT is at least the keepalive bound
    /// above, as on Linux it would otherwise cut keepalive short; 0 = off.
    #[arg(long, env = "LINECHAT_WRITE_TIMEOUT", value_name = "SECS",
          default_value_t = Config::default().write_timeout.map_or(0, |d| d.as_secs()))]
    write_timeout: u64,

    /// Log format: text for people, json for a log pipeline.
    #[arg(long, env = "LINECHAT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Log verbosity: error, warn, info, debug or trace, or a filter such as
    /// info,linechat=debug. Default: RUST_LOG, else info.
    #[arg(long, env = "LINECHAT_LOG_LEVEL", value_name = "FILTER", value_parser = service::log_filter)]
    log_level: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// What `--generate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Generate {
    /// The man page, linechat.1 (roff).
    Man,
    Bash,
    Zsh,
    Fish,
    /// linechat.example.toml.
    ExampleConfig,
}

impl Args {
    /// Everything but the listeners, checked.
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = self.limits()?;
        config.server_name = self
            .server_name
            .clone()
            .unwrap_or_else(linechat::config::host_name);
        config.server_password = self.server_password.clone();
        for oper in &self.oper {
            let (name, password) = oper
                .split_once(':')
                .with_context(|| format!("--oper {oper}: expected NAME:PASSWORD"))?;
            config.opers.push((name.to_owned(), password.to_owned()));
        }
        if let Some(path) = &self.motd {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--motd {}: cannot read it", path.display()))?;
            let lines = linechat::config::parse_motd(&text)
                .map_err(|e| anyhow::anyhow!("--motd {}: {e}", path.display()))?;
            config.motd = Some(lines.into());
        }
        if let Some(file) = &self.opers {
            config.oper_hashes = read_opers(file)?;
        }
        Ok(config)
    }

    fn limits(&self) -> anyhow::Result<Config> {
        anyhow::ensure!(
            self.rate_limit.is_finite() && self.rate_limit >= 0.0,
            "--rate-limit must be a number of lines per second, 0 or more"
        );
        anyhow::ensure!(
            self.queue_bytes > self.max_line + 64,
            "--queue-bytes ({}) must exceed --max-line ({}) with room to spare",
            self.queue_bytes,
            self.max_line
        );
        anyhow::ensure!(
            self.connect_rate.is_finite() && self.connect_rate >= 0.0,
            "--connect-rate must be a number of connections per second, 0 or more"
        );
        let ip_exempt = linechat::net::gate::parse_exempt(&self.ip_exempt)
            .map_err(|e| anyhow::anyhow!("--ip-exempt {e}"))?;
        Ok(Config {
            max_line: self.max_line,
            max_prompt: self.max_prompt,
            max_per_ip: self.max_per_ip,
            connect_rate: (self.connect_rate > 0.0).then_some(self.connect_rate),
            connect_burst: self.connect_burst,
            ip_exempt,
            idle_timeout: (self.idle_timeout > 0).then(|| Duration::from_secs(self.idle_timeout)),
            register_timeout: Duration::from_secs(self.register_timeout),
            min_password: self.min_password_length,
            max_clients: self.max_clients,
            queue_bytes: self.queue_bytes,
            rate_limit: (self.rate_limit > 0.0).then_some(self.rate_limit),
            rate_burst: self.rate_burst,
            shutdown_grace: Duration::from_secs(self.shutdown_grace),
            announce_limit: self.announce_limit,
            history: self.history,
            history_retain: self.history_retain,
            history_bytes: self.history_bytes,
            rooms_per_minute: self.rooms_per_minute,
            data_dir: self.data_dir.clone(),
            fsync: self.fsync_interval,
            history_max_age: (!self.history_max_age.is_zero()).then_some(self.history_max_age),
            store_bytes: self.store_bytes as u64,
            keepalive: (self.keepalive > 0).then(|| Duration::from_secs(self.keepalive)),
            write_timeout: (self.write_timeout > 0)
                .then(|| Duration::from_secs(self.write_timeout)),
            web_origins: self
                .web_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .collect(),
            ..Config::default()
        })
    }

    /// The listeners to open, and whether they are the defaults (a busy default port is
    /// skipped; a port asked for is an error).
    /// `--cluster`'s settings, checked: `None` without it.
    fn cluster(
        &self,
        listeners: &[(ListenUrl, SocketAddr)],
    ) -> anyhow::Result<Option<cluster::Settings>> {
        if self.cluster.is_empty() {
            anyhow::ensure!(
                self.node_name.is_none() && self.cluster_creds.is_none(),
                "--node-name and --cluster-creds need --cluster"
            );
            return Ok(None);
        }
        for url in &self.cluster {
            anyhow::ensure!(
                url.starts_with("nats://") && url.len() > "nats://".len(),
                "--cluster {url}: expected nats://HOST:PORT"
            );
        }
        // Accounts and the store are one server's files: a name registered on one node would
        // be anyone's on another, and history kept on one disk is not the cluster's.
        anyhow::ensure!(
            self.data_dir.is_none(),
            "--cluster cannot be used with --data-dir yet: accounts and history there are this \
             server's alone (docs/CLUSTER.md)"
        );
        let node = match &self.node_name {
            Some(name) => name.clone(),
            None => {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_default();
                let host = if host.is_empty() {
                    "linechat".to_owned()
                } else {
                    host
                };
                let port = listeners.first().map_or(0, |(_, a)| a.port());
                format!("{host}-{port}")
            }
        };
        anyhow::ensure!(
            !node.is_empty()
                && node.len() <= 64
                && node
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')),
            "--node-name {node}: 1-64 letters, digits, '.', '_' or '-'"
        );
        Ok(Some(cluster::Settings {
            urls: self.cluster.clone(),
            node,
            creds: self.cluster_creds.clone(),
        }))
    }

    fn listeners(&self) -> anyhow::Result<(Vec<(ListenUrl, SocketAddr)>, bool)> {
        let defaults = self.listen.is_empty();
        let urls = if defaults {
            listen::defaults()
        } else {
            self.listen
                .iter()
                .map(|text| ListenUrl::parse(text))
                .collect::<Result<_, _>>()?
        };
        let mut port = self.port;
        let mut out = Vec::new();
        for url in urls {
            if url.tls && self.tls_cert.is_none() {
                return Err(listen::Error::NoCertificate(url.to_string()).into());
            }
            let mut addr = url.resolve()?;
            if url.scheme == Scheme::Line && !url.tls {
                if let Some(port) = port.take() {
                    addr.set_port(port);
                }
            }
            out.push((url, addr));
        }
        if port.is_some() {
            anyhow::bail!("--port: no line:// listener to apply it to");
        }
        Ok((out, defaults))
    }
}

fn register_timeout(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err(
            "0 would let connections that never choose a nickname hold their slots \
                      for ever; give a number of seconds, 1 or more"
                .to_owned(),
        ),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn resolve(flag: &str, addr: &str) -> anyhow::Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("{flag} {addr}: expected HOST:PORT"))?
        .next()
        .with_context(|| format!("{flag} {addr}: no address found"))
}

/// `0.1.0 (commit 1a2b3c4d5e6f)`, so a bug report names the exact build.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("LINECHAT_GIT_COMMIT"),
    ")"
);

/// `--opers FILE`: `NAME HASH` lines, blank lines and `#` comments; anything else is refused
/// with the file and line, so a typo cannot leave an operator unable to log in unnoticed.
fn read_opers(file: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the operators file {}", file.display()))?;
    let mut opers = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = || format!("{}:{}", file.display(), n + 1);
        let (name, hash) = line
            .split_once(char::is_whitespace)
            .map(|(n, h)| (n, h.trim()))
            .with_context(|| format!("{}: expected NAME HASH", at()))?;
        anyhow::ensure!(
            linechat::accounts::is_hash(hash),
            "{}: the hash of {name} is not an argon2 hash (make one with linechat --hash-password)",
            at()
        );
        anyhow::ensure!(
            !opers.iter().any(|(other, _)| other == name),
            "{}: {name} is listed twice",
            at()
        );
        opers.push((name.to_owned(), hash.to_owned()));
    }
    Ok(opers)
}

/// `--hash-password`: one line of standard input, hashed as accounts' passwords are.
fn hash_password() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("linechat: cannot read a password from standard input: {e}");
        return ExitCode::FAILURE;
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("linechat: give the password on standard input (echo PASSWORD | linechat --hash-password)");
        return ExitCode::FAILURE;
    }
    match linechat::accounts::hash_password(password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("linechat: {}", e.to_string().trim_start_matches("Error: "));
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cmd = settings::command::<Args>();
    // --generate needs no configuration: it works even beside a broken config file.
    if let Ok(first) = cmd.clone().try_get_matches_from(&argv) {
        if let Some(&what) = first.get_one::<Generate>("generate") {
            service::generate(what, cmd);
            return ExitCode::SUCCESS;
        }
        if first.get_flag("hash_password") {
            return hash_password();
        }
    }
    let (loaded, args) = match load(&cmd, &argv) {
        Ok(loaded) => loaded,
        Err(settings::Error::Clap(e)) => e.exit(),
        Err(settings::Error::File(e)) => {
            eprintln!("linechat: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.check_config {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(settings::effective(&cmd, &loaded).as_bytes());
        return match args.config().and_then(|_| args.listeners().map(drop)) {
            Ok(()) => {
                let _ = writeln!(out, "# configuration OK");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("linechat: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let log = service::init_logging(args.log_format, args.log_level.as_deref());
    let reloader = service::FileReloader::new(cmd, argv, &loaded, log);
    match run(args, reloader) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("linechat: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The command line, the environment and the config file, merged and read into [`Args`].
fn load(
    cmd: &clap::Command,
    argv: &[std::ffi::OsString],
) -> Result<(settings::Loaded, Args), settings::Error> {
    let loaded = settings::load(cmd, argv)?;
    let args = Args::from_arg_matches(&loaded.matches).map_err(settings::Error::Clap)?;
    Ok((loaded, args))
}

fn run(args: Args, reloader: service::FileReloader) -> anyhow::Result<()> {
    let config = args.config()?;
    let (listeners, defaults) = args.listeners()?;
    let cluster_settings = args.cluster(&listeners)?;
    let metrics_addr = match &args.metrics_addr {
        Some(a) => Some(resolve("--metrics-addr", a)?),
        None => None,
    };
    let transcript = match &args.transcript {
        Some(path) => Some(
            Transcript::open(path, transcript::DEFAULT_CAPACITY)
                .with_context(|| format!("cannot open the transcript file {}", path.display()))?,
        ),
        None => None,
    };
    // Before the listeners: a directory in use or unwritable is one line and exit 1, and
    // nobody is let in before the rooms they knew are back.
    let store = match &config.data_dir {
        Some(dir) => Some(Log::open(dir, store::Options::from_config(&config))?),
        None => None,
    };
    // A damaged accounts file would leave registered nicknames to whoever asks first.
    let accounts = linechat::accounts::Accounts::load(config.data_dir.as_deref())
        .map_err(anyhow::Error::msg)?
        .with_min_password(config.min_password);
    // rustls is built with ring alone; installing it as the process default is what makes
    // that explicit for anything that asks for the default (linechat's own configs name it).
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            if !listeners.iter().any(|(url, _)| url.tls) {
                tracing::warn!(
                    "--tls-cert is given but no --listen line+tls://, ircs:// or https://; it is unused"
                );
            }
            Some(Arc::new(Certs::load(cert, key)?))
        }
        _ => None,
    };
    raise_open_file_limit();
    // One thread means tokio's current-thread scheduler: no work-stealing machinery, and tasks
    // woken by a fan-out run in order after the sessions already ready, which lets more lines
    // share a write.
    let mut runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if args.threads > 0 {
            b.worker_threads(args.threads);
        }
        b
    };
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        tracing::info!(version = VERSION, "linechat starting");
        let mut bound = Vec::new();
        for (url, addr) in listeners {
            match listen::bind(addr) {
                Ok(socket) => bound.push(Listener {
                    scheme: url.scheme,
                    tls: url.tls,
                    socket,
                }),
                Err(e) if defaults => tracing::warn!("{e}; skipping the default listener {url}"),
                Err(e) => return Err(e.into()),
            }
        }
        anyhow::ensure!(!bound.is_empty(), "no listener could be opened");
        let metrics = match metrics_addr {
            Some(addr) => Some(linechat::server::bind_metrics(addr).await?),
            None => None,
        };
        // Before anyone is let in: a name taken here must already be the cluster's.
        let cluster = match &cluster_settings {
            Some(settings) => {
                let link = cluster::connect(settings).await?;
                tracing::info!(node = %settings.node, broker = %settings.urls.join(","), "joined the cluster");
                Some(link)
            }
            None => None,
        };
        let reload_requests = std::sync::Arc::new(tokio::sync::Notify::new());
        on_sighup(
            transcript.as_ref().map(Transcript::control),
            tls.clone(),
            reload_requests.clone(),
        );
        let extras = Extras {
            metrics,
            transcript,
            store,
            reloader: Some(Box::new(reloader)),
            reload_requests,
            tls,
            accounts: Some(accounts),
            cluster,
        };
        // Listening sockets are bound and accept from here on: what Type=notify waits for.
        service::notify_ready();
        let shutdown = async {
            shutdown_signal().await;
            service::notify_stopping();
        };
        linechat::server::serve(bound, extras, config, shutdown).await;
        Ok(())
    })
}

/// SIGHUP is always handled, so that it never kills the server (its default disposition).
/// It reloads the configuration (see `linechat::config::RELOADABLE`) and the TLS certificate
/// and key (after a renewal; a file that cannot be used is logged and the certificate in use
/// stays, `Certs::reload`), and, the logrotate convention, reopens the transcript: after the
/// file is moved away, SIGHUP makes the server write to a new one under the configured name.
fn on_sighup(
    control: Option<transcript::Control>,
    certs: Option<Arc<Certs>>,
    reload: std::sync::Arc<tokio::sync::Notify>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    match &control {
                        Some(control) => {
                            tracing::info!("SIGHUP received: reopening the transcript, reloading the configuration");
                            control.reopen();
                        }
                        None => tracing::info!(
                            "SIGHUP received: nothing to reopen; reloading the configuration"
                        ),
                    }
                    if let Some(certs) = &certs {
                        tracing::info!("SIGHUP received: reloading the TLS certificate");
                        // Reading two small files: brief enough for the runtime's thread.
                        let _ = certs.reload();
                    }
                    reload.notify_one();
                }
            });
        }
        Err(e) => tracing::warn!(
            error = %e,
            "cannot listen for SIGHUP; the transcript will not be reopened nor the TLS \
             certificate reloaded"
        ),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}

/// Each client holds a descriptor, and the usual soft limit of 1024 would cap the server far
/// below --max-clients; the hard limit is what an unprivileged process may raise it to.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            tracing::warn!("cannot read the open-file limit");
            return;
        }
        let before = limit.rlim_cur;
        if before >= limit.rlim_max {
            tracing::debug!(limit = before, "open-file limit already at its maximum");
            return;
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
            tracing::info!(
                from = before,
                to = limit.rlim_cur,
                "raised the open-file limit"
            );
        } else {
            tracing::warn!(limit = before, "cannot raise the open-file limit");
        }
    }
}

/// `always`, or an interval: `1s`, `200ms`, `2m`.
fn parse_fsync(text: &str) -> Result<Fsync, String> {
    if text.trim().eq_ignore_ascii_case("always") {
        return Ok(Fsync::Always);
    }
    match parse_duration(text) {
        Some(d) if !d.is_zero() => Ok(Fsync::Every(d)),
        _ => Err(format!(
            "{text:?}: `always` or an interval such as 1s, 200ms or 2m"
        )),
    }
}

/// `0` (no limit), or an age: `30d`, `12h`, `90m`, `45s`.
fn parse_age(text: &str) -> Result<Duration, String> {
    parse_duration(text).ok_or_else(|| format!("{text:?}: an age such as 30d, 12h or 90m, or 0"))
}

/// A number with a unit (`ms`, `s`, `m`, `h`, `d`); a bare `0` is zero.
fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let n: u64 = number.parse().ok()?;
    let secs = match unit {
        "" if n == 0 => 0,
        "ms" => return Some(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(secs).map(Duration::from_secs)
}

/// `65536`, `64K`, `64M`, `1G` (powers of 1024; `KiB`, `MiB`, `GiB` and lower case too).
fn parse_bytes(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        _ => {
            return Err(format!(
                "{text:?}: a number of bytes, optionally with K, M or G"
            ))
        }
    };
    let n: usize = number
        .parse()
        .map_err(|_| format!("{text:?}: a number of bytes, optionally with K, M or G"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}
