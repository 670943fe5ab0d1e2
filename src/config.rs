//! Server configuration and its defaults. The binary maps command-line flags (and the config
//! file) onto this; tests build it directly, so nothing here knows about clap. [`Live`] holds
//! the part a reload may change while the server runs.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

/// Everything a running server needs to know. `Config::default()` is what `linechat` runs with
/// when given no flags.
#[derive(Debug, Clone)]
pub struct Config {
    /// Longest line accepted, in bytes, not counting the `\n` or `\r\n` ending.
    pub max_line: usize,
    /// A joined client that sends nothing for this long is disconnected. `None` = never.
    pub idle_timeout: Option<Duration>,
    /// A connection that has not chosen a nickname within this time is closed, so half-open
    /// prompts cannot pile up and hold connection slots.
    pub register_timeout: Duration,
    /// Open connections at most, counting those still at the nickname prompt.
    pub max_clients: usize,
    /// Connections still at the nickname prompt (or IRC registration) at most, so that
    /// connections that never choose a name cannot take every slot. `None` = half of
    /// [`Config::max_clients`], rounded up.
    pub max_prompt: Option<usize>,
    /// Open connections from one source address at most (IPv6: one /64); 0 = no limit.
    pub max_per_ip: usize,
    /// New connections one source address may open per second, sustained; `None` = no limit.
    pub connect_rate: Option<f64>,
    /// New connections one source address may open at once before the rate applies.
    pub connect_burst: u32,
    /// Source addresses the per-address limits do not apply to.
    pub ip_exempt: Vec<crate::net::cidr::Cidr>,
    /// Bound on the bytes waiting to be written to one client. A client whose queue would grow
    /// past it is disconnected as a slow consumer.
    pub queue_bytes: usize,
    /// Sustained lines per second one client may send; `None` turns flood control off.
    pub rate_limit: Option<f64>,
    /// Lines a client may send at once before the rate applies (a pasted block of text).
    pub rate_burst: u32,
    /// How long shutdown waits for queued output to reach clients before closing anyway.
    pub shutdown_grace: Duration,
    /// Rooms with more listeners than this hear no individual join and leave notices, only a
    /// summary every [`Config::presence_interval`]; 0 = always individual notices.
    pub announce_limit: usize,
    /// How often big rooms get their presence summary.
    pub presence_interval: Duration,
    /// TCP keepalive: a connection silent this long is probed, and one whose peer answers
    /// none of four probes a ninth of this apart is dropped, so a peer that vanished (power
    /// cut, cable pulled, NAT entry expired) leaves even when nobody sends to it. `None` = off.
    /// (`net::sockopt::user_timeout` has why four.)
    pub keepalive: Option<Duration>,
    /// Output that the peer does not acknowledge (or a send buffer that does not drain) for
    /// this long ends the connection: the bound on how long a dead peer with pending output
    /// keeps its queue. Applied as the writer's own deadline, and as `TCP_USER_TIMEOUT`
    /// raised to the keepalive bound when that is longer. `None` = off.
    pub write_timeout: Option<Duration>,
    /// How often each connection's `TCP_INFO` is sampled for the latency figures, besides the
    /// samples taken on `/ping` and `/metrics`.
    pub rtt_sample_interval: Duration,
    /// Messages of a room shown to a client entering it (the lobby included, at connect);
    /// 0 = no scrollback.
    pub history: usize,
    /// Messages kept per room for scrollback and `/history`; 0 = none.
    pub history_retain: usize,
    /// Most bytes the history of all rooms may hold together; past it the oldest messages,
    /// whatever their room, are forgotten first. Without it, a few thousand clients each
    /// filling a room of their own reach gigabytes.
    pub history_bytes: usize,
    /// Rooms one client may create per minute; 0 = no limit.
    pub rooms_per_minute: u32,
    /// Where rooms, topics and history are kept across restarts; `None` = memory only.
    pub data_dir: Option<std::path::PathBuf>,
    /// When what the store wrote is forced to the disk (see [`Fsync`]).
    pub fsync: Fsync,
    /// Messages older than this are let go of (from the store and, at restart, memory).
    pub history_max_age: Option<Duration>,
    /// The most bytes all rooms' stored messages may take on disk; past it the oldest go.
    pub store_bytes: u64,
    /// The name IRC replies carry as their source.
    pub server_name: String,
    /// When set, a private server: IRC clients must send it with `PASS`, netcat users are
    /// asked for it before the nickname prompt.
    pub server_password: Option<String>,
    /// Server operators' `OPER` credentials, `(name, password)` (`--oper`).
    pub opers: Vec<(String, String)>,
    /// The message of the day (`--motd`), one entry a line, checked by [`parse_motd`]: shown
    /// to IRC clients at registration and on `MOTD`, and to netcat users after the welcome.
    /// `None`: IRC clients get a built-in one, netcat users none.
    pub motd: Option<Arc<[String]>>,
    /// Server operators from `--opers FILE`: `(name, argon2 hash)`.
    pub oper_hashes: Vec<(String, String)>,
    /// The shortest password `/register` and `/password` accept, in characters
    /// (`--min-password-length`).
    pub min_password: usize,
    /// A connection to a TLS listener that has not completed its handshake in this time is
    /// closed (it holds a prompt slot meanwhile, as a silent prompt does).
    pub tls_handshake_timeout: Duration,
    /// The `Origin`s a browser may open a WebSocket from (`https://chat.example.org`);
    /// empty = any. A client that sends no `Origin` (not a browser) is not restricted.
    pub web_origins: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_line: 1024,
            idle_timeout: Some(Duration::from_secs(600)),
            register_timeout: Duration::from_secs(60),
            max_clients: 10_000,
            max_prompt: None,
            // Ergo's default; a household or a small office behind one NAT fits in it.
            max_per_ip: 16,
            // A person reconnecting is never held up, the office behind one NAT can all connect
            // at once (the burst is --max-per-ip), and a loop gets 2 a second: 7 200 an hour.
            connect_rate: Some(2.0),
            connect_burst: 16,
            ip_exempt: crate::net::cidr::default_exempt(),
            // 256 KiB is some 250 full-length lines or several thousand chat-sized ones: a burst
            // a reading client absorbs easily, while 10 000 stalled clients stay under 2.5 GiB.
            queue_bytes: 256 * 1024,
            // No typist reaches 20 lines/s; a burst of 50 lets a pasted block through at once.
            rate_limit: Some(20.0),
            rate_burst: 50,
            shutdown_grace: Duration::from_secs(5),
            // A vanished idle peer is gone within 40 s (probed after 30 s of silence, 3 s
            // between probes); a vanished peer with output pending within 30 s. Long enough that a brief outage
            // (Wi-Fi roaming, a router reboot) does not cut anyone off.
            keepalive: Some(Duration::from_secs(30)),
            write_timeout: Some(Duration::from_secs(30)),
            rtt_sample_interval: Duration::from_secs(10),
            // Beyond a hundred people a notice per arrival is noise, and it is where the
            // N²/2 cost of announcing joins starts to dominate (Twitch stops at 1000).
            announce_limit: 100,
            presence_interval: Duration::from_secs(10),
            // A screenful: enough to pick up a conversation without burying the present.
            history: 20,
            // At most some 1 MB of 1 KiB lines per room; chat-sized lines far less.
            history_retain: 1000,
            history_bytes: 64 << 20,
            rooms_per_minute: 10,
            data_dir: None,
            // Redis's `appendfsync everysec`: a power loss costs at most a second of chat.
            fsync: Fsync::Every(Duration::from_secs(1)),
            history_max_age: None,
            // Some ten million chat-sized messages.
            store_bytes: 1 << 30,
            server_name: "linechat.local".to_owned(),
            server_password: None,
            opers: Vec::new(),
            motd: None,
            oper_hashes: Vec::new(),
            min_password: crate::accounts::MIN_PASSWORD,
            // A handshake is two round trips; ten seconds covers a satellite link and a slow
            // client machine, and bounds what a client that opens and says nothing holds.
            tls_handshake_timeout: Duration::from_secs(10),
            web_origins: Vec::new(),
        }
    }
}

/// The most lines a message of the day may have: it is sent to everyone who connects.
pub const MOTD_MAX_LINES: usize = 100;

/// The longest line of a message of the day, in bytes: an IRC `372` carries it after the
/// server's name, the nickname and `:- `, and the whole must fit IRC's 512 bytes.
pub const MOTD_MAX_LINE: usize = 400;

/// A message of the day from the text of its file: one entry a line, trailing blank lines
/// dropped, tabs as spaces. Refused, with the line number and why: more than
/// [`MOTD_MAX_LINES`] lines, a line over [`MOTD_MAX_LINE`] bytes, or a control character
/// (what would let the file repaint a netcat user's terminal or end an IRC line early).
pub fn parse_motd(text: &str) -> Result<Vec<String>, String> {
    let mut lines: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if let Some(c) = line.chars().find(|c| c.is_control() && *c != '\t') {
            return Err(format!(
                "line {n}: control character U+{:04X}; a message of the day is plain text",
                c as u32
            ));
        }
        let line = line.replace('\t', "    ");
        if line.len() > MOTD_MAX_LINE {
            return Err(format!(
                "line {n}: {} bytes, over the {MOTD_MAX_LINE} an IRC line leaves for it",
                line.len()
            ));
        }
        lines.push(line);
    }
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    if lines.len() > MOTD_MAX_LINES {
        return Err(format!(
            "{} lines, over the {MOTD_MAX_LINES} sent to everyone who connects",
            lines.len()
        ));
    }
    Ok(lines)
}

/// When the store's writes are forced to the disk. Either way a message is in the operating
/// system's hands before it is delivered, so a crash of the process loses nothing delivered;
/// this decides what a power loss or a kernel crash can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// `fsync` before delivery, once per group of messages written together.
    Always,
    /// `fsync` this often: a power loss loses at most this much.
    Every(Duration),
}

impl Config {
    /// When the idle warning is sent (see `idle_warning`).
    pub fn idle_warning_after(&self) -> Option<Duration> {
        self.idle_timeout.map(idle_warning)
    }
}

/// The settings a reload (SIGHUP, IRC `REHASH`) changes in a running server, by the name of
/// their flag and config-file key; every other setting needs a restart. Each is read where it
/// applies, so nobody is disconnected by a reload:
///
/// - `max-clients`, `max-prompt`, `max-per-ip`, `connect-rate`, `connect-burst`, `ip-exempt`:
///   the next connection admitted (open connections over a lowered limit stay);
/// - `idle-timeout`, `rate-limit`, `rate-burst`: every connection, from its next line or timer;
/// - `queue-bytes`: connections opened after the reload (an open one keeps the queue it has);
/// - `server-password`: connections that register (choose a nickname) after the reload;
/// - `oper`, `opers` (the file is read again): the next `OPER` or `/oper` (operators already
///   up stay operators);
/// - `motd`: read again, shown to whoever registers (or asks with IRC `MOTD`) after the reload.
pub const RELOADABLE: &[&str] = &[
    "max-clients",
    "max-prompt",
    "max-per-ip",
    "connect-rate",
    "connect-burst",
    "ip-exempt",
    "idle-timeout",
    "rate-limit",
    "rate-burst",
    "queue-bytes",
    "server-password",
    "oper",
    "motd",
    "opers",
];

impl Config {
    /// `self` with the [`RELOADABLE`] settings taken from `new`; the rest stays as it is, since
    /// the server cannot change it while running (listeners, history, the transcript...).
    pub fn reloaded(&self, new: &Config) -> Config {
        Config {
            max_clients: new.max_clients,
            max_prompt: new.max_prompt,
            max_per_ip: new.max_per_ip,
            connect_rate: new.connect_rate,
            connect_burst: new.connect_burst,
            ip_exempt: new.ip_exempt.clone(),
            idle_timeout: new.idle_timeout,
            rate_limit: new.rate_limit,
            rate_burst: new.rate_burst,
            queue_bytes: new.queue_bytes,
            server_password: new.server_password.clone(),
            opers: new.opers.clone(),
            motd: new.motd.clone(),
            oper_hashes: new.oper_hashes.clone(),
            ..self.clone()
        }
    }
}

/// Where a reload gets the new configuration from: the binary's implementation reads the
/// config file, the environment and the command line again (in their order of precedence).
pub trait Reloader: Send + Sync + std::fmt::Debug {
    /// The configuration as it now reads, with a report of what changed for the log; or why
    /// it cannot be used, in which case the running configuration stays as it is.
    fn reload(&self) -> Result<Reloaded, String>;

    /// What is read, for the person who asked (IRC `REHASH` replies with it).
    fn source(&self) -> String;

    /// Called once the reload has been applied and logged: for what the reloader applies
    /// itself and that would hide that log line (a lower log level).
    fn after(&self) {}
}

/// A configuration read by a [`Reloader`].
#[derive(Debug)]
pub struct Reloaded {
    pub config: Config,
    /// What changed, what of it took effect and what needs a restart, in one line.
    pub report: String,
}

/// The configuration as it stands after the last reload. The settings read on every pass of a
/// connection's loop are atomics, so that pass takes no lock; the rest are read from an
/// `Arc<Config>` under a lock taken once per connection or per command.
#[derive(Debug)]
pub struct Live {
    /// Bumped by every reload: a connection compares it with the one it last saw to know when
    /// to pick up a new flood-control rate, without a lock per line.
    generation: AtomicU64,
    /// `--idle-timeout` in milliseconds; 0 = never.
    idle_timeout_ms: AtomicU64,
    config: RwLock<Arc<Config>>,
}

impl Live {
    pub fn new(config: &Config) -> Live {
        Live {
            generation: AtomicU64::new(0),
            idle_timeout_ms: AtomicU64::new(idle_ms(config)),
            config: RwLock::new(Arc::new(config.clone())),
        }
    }

    /// The running configuration: the start-up one with the [`RELOADABLE`] settings of the last
    /// reload.
    pub fn get(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes the [`RELOADABLE`] settings of `new`; returns the configuration now running.
    pub fn set(&self, new: &Config) -> Arc<Config> {
        let mut config = self.config.write().unwrap_or_else(PoisonError::into_inner);
        *config = Arc::new(config.reloaded(new));
        self.idle_timeout_ms.store(idle_ms(&config), Relaxed);
        self.generation.fetch_add(1, Relaxed);
        config.clone()
    }

    /// How many reloads there have been.
    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    /// [`Config::idle_timeout`], as it stands.
    pub fn idle_timeout(&self) -> Option<Duration> {
        match self.idle_timeout_ms.load(Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// [`Config::idle_warning_after`], as it stands.
    pub fn idle_warning_after(&self) -> Option<Duration> {
        self.idle_timeout().map(idle_warning)
    }
}

fn idle_ms(config: &Config) -> u64 {
    config.idle_timeout.map_or(0, |d| {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
    })
}

/// When the idle warning is sent: 30 s before the disconnect, or at 90 % of a timeout shorter
/// than 300 s, so a short timeout still leaves the warning a useful lead.
fn idle_warning(timeout: Duration) -> Duration {
    let lead = Duration::from_secs(30).min(timeout / 10);
    timeout - lead
}

/// This machine's host name, for `--server-name`'s default; `linechat.local` if it has none
/// that IRC could carry (IRC server names contain a dot and no spaces).
pub fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|n| n.trim().to_owned())
        .filter(|n| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        });
    match name {
        Some(n) if n.contains('.') => n,
        Some(n) => format!("{n}.local"),
        None => "linechat.local".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_motd_file_is_lines_of_plain_text_within_bounds() {
        assert_eq!(
            parse_motd("Welcome.\r\n\tRules: be kind.\n\n\n").unwrap(),
            ["Welcome.", "    Rules: be kind."]
        );
        assert_eq!(parse_motd("").unwrap(), Vec::<String>::new());
        assert_eq!(
            parse_motd("ok\nbad \u{1b}[2J\n").unwrap_err(),
            "line 2: control character U+001B; a message of the day is plain text"
        );
        let long = format!("ok\n{}\n", "x".repeat(MOTD_MAX_LINE + 1));
        assert_eq!(
            parse_motd(&long).unwrap_err(),
            "line 2: 401 bytes, over the 400 an IRC line leaves for it"
        );
        assert!(parse_motd(&"x\n".repeat(MOTD_MAX_LINES)).is_ok());
        assert_eq!(
            parse_motd(&"x\n".repeat(MOTD_MAX_LINES + 1)).unwrap_err(),
            "101 lines, over the 100 sent to everyone who connects"
        );
    }
}
