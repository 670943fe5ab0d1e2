//! `linechat-bench`: a load generator for the linechat chat server, which can also drive NATS
//! and Redis pub/sub with the same workload so that the three can be compared fairly.
//!
//! Workload: `--clients N` connections join (linechat) or subscribe (NATS, Redis). The first
//! `--senders S` of them also publish. Every message carries its sender index, a per-sender
//! sequence number and its send time (ns since one `Instant` shared by the whole process), padded
//! to `--msg-size` bytes of payload. Each receiving connection tracks the sequence numbers per
//! sender, so the report counts deliveries, LOST, DUPLICATED and REORDERED messages exactly, and
//! puts the one-way latency of every delivery sent in the measured interval into a histogram.
//!
//! Expected deliveries: every message should reach every subscribed client except its sender's
//! own client, i.e. N-1 deliveries per message for all three protocols:
//! - linechat: the server relays a chat line to all other clients and never echoes it back;
//! - NATS: each client is one connection that subscribes to one subject and publishes on the
//!   same connection with `"echo":false` in CONNECT, so NATS does not send a client its own
//!   messages either (the exact analogue of linechat);
//! - Redis: a subscribed RESP2 connection cannot PUBLISH, so each sender publishes on a separate
//!   publisher connection; its own subscriber connection does receive its messages, which are
//!   discarded and reported as `self_deliveries`, not counted as deliveries. Redis thus does one
//!   extra delivery per message (N instead of N-1), about 1% more work at N = 100.
//!
//! `--senders 0` is the idle mode: N clients join and stay idle for `--duration`; with
//! `--server-pid` the report gives the server's RSS growth per connection.
//!
//! Only loopback addresses are accepted, client count and duration are capped, and every run
//! stops by itself.

use std::cell::RefCell;
use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::{BufMut, BytesMut};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use std::pin::Pin;
use std::task::Poll;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, timeout, timeout_at};

/// Hard caps that keep every run bounded.
const MAX_CLIENTS: usize = 20_000;
const MAX_DURATION_S: f64 = 600.0;
const MAX_MSG_SIZE: usize = 65_536;
/// Messages written per `write_all` at most (one TCP write carries many messages).
const MAX_BATCH: u64 = 256;
/// Size of the per-worker-thread read buffer shared by all connections on that thread.
const SCRATCH_BYTES: usize = 256 * 1024;
/// A connection's unparsed tail may not grow past this (protects against a runaway peer).
const MAX_PARTIAL: usize = 16 * 1024 * 1024;
/// Latency histogram shards (receivers pick one by index, so locks are rarely contended).
const HIST_SHARDS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Proto {
    Linechat,
    Nats,
    Redis,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Linechat => "linechat",
            Proto::Nats => "nats",
            Proto::Redis => "redis",
        }
    }
}

/// Load generator for linechat (with NATS and Redis pub/sub for comparison). Loopback only.
#[derive(Debug, Parser)]
#[command(name = "linechat-bench", version, about, long_about = None)]
struct Args {
    /// Server address; must be loopback (127.0.0.0/8, ::1 or localhost).
    #[arg(long, default_value = "127.0.0.1:4000")]
    addr: String,
    /// Connected clients (each joins / subscribes). At most 20000.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// How many of the clients also send. 0 = idle mode (join and hold, measure memory).
    #[arg(long, default_value_t = 10)]
    senders: usize,
    /// Total messages per second across all senders; 0 = as fast as the window allows.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Measured interval in seconds (after the warmup). At most 600.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Payload bytes per message (header + padding). linechat's default max line is 1024.
    #[arg(long, default_value_t = 64)]
    msg_size: usize,
    /// Wire protocol of the server under test.
    #[arg(long, value_enum, default_value_t = Proto::Linechat)]
    proto: Proto,
    /// PID of the server process: report its CPU time and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Rate 0 only: messages in flight per sender (sent but not yet delivered to every receiver).
    #[arg(long, default_value_t = 64)]
    window: u32,
    /// Seconds of load before the measured interval (not counted in rates or latency).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds to wait after the last send for messages still in flight; what is missing after
    /// that is lost.
    #[arg(long, default_value_t = 3.0)]
    drain: f64,
    /// Seconds allowed for one connection's connect + handshake.
    #[arg(long, default_value_t = 10.0)]
    connect_timeout: f64,
    /// Connections being set up at the same time.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// Window mode: give up waiting for a message's deliveries after this many ms (counted as a
    /// stall; the message is still counted lost if it never arrives).
    #[arg(long, default_value_t = 1000)]
    stall_timeout_ms: u64,
    /// Nickname prefix for linechat clients (client i is PREFIX<i>).
    #[arg(long, default_value = "b")]
    nick_prefix: String,
    /// NATS subject / Redis channel.
    #[arg(long, default_value = "linechat.bench")]
    subject: String,
    /// Max seconds to wait after joining for join notices etc. to stop flowing.
    #[arg(long, default_value_t = 15.0)]
    settle_max: f64,
    /// Tokio worker threads (default: number of cores).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("linechat-bench: error: {e:#}");
        std::process::exit(2);
    }
}

fn real_main() -> Result<()> {
    let args = Args::parse();
    let addr = validate(&args)?;
    let nofile = raise_nofile_limit();
    let needed = (args.clients + args.senders + 64) as libc::rlim_t;
    if let Some(limit) = nofile {
        if limit < needed {
            bail!(
                "open-file limit is {limit} but {needed} descriptors are needed for {} clients; \
                 raise the hard limit (ulimit -Hn) or use fewer clients",
                args.clients
            );
        }
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(t) = args.threads {
        rt.worker_threads(t.max(1));
    }
    let rt = rt.build().context("building the tokio runtime")?;
    let report = rt.block_on(run(args, addr))?;
    let json_out = report.json;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&report.value)?);
    } else {
        print!("{}", report.table);
    }
    // Do not wait for connection tasks to wind down.
    rt.shutdown_timeout(Duration::from_millis(200));
    Ok(())
}

/// Checks the arguments; returns the resolved loopback address.
fn validate(a: &Args) -> Result<SocketAddr> {
    let addr = parse_loopback(&a.addr)?;
    if a.clients == 0 || a.clients > MAX_CLIENTS {
        bail!("--clients must be between 1 and {MAX_CLIENTS}");
    }
    if a.senders > a.clients {
        bail!(
            "--senders ({}) cannot exceed --clients ({})",
            a.senders,
            a.clients
        );
    }
    if !(a.duration > 0.0 && a.duration <= MAX_DURATION_S) {
        bail!("--duration must be > 0 and at most {MAX_DURATION_S} s");
    }
    for (name, v) in [("--warmup", a.warmup), ("--drain", a.drain)] {
        if !(0.0..=60.0).contains(&v) {
            bail!("{name} must be between 0 and 60 s");
        }
    }
    if !(a.connect_timeout > 0.0 && a.connect_timeout <= 120.0) {
        bail!("--connect-timeout must be > 0 and at most 120 s");
    }
    if !(0.0..=120.0).contains(&a.settle_max) {
        bail!("--settle-max must be between 0 and 120 s");
    }
    if !(a.rate >= 0.0 && a.rate <= 50_000_000.0) {
        bail!("--rate must be between 0 and 50000000 (0 = window mode)");
    }
    if a.window == 0 || a.window > 1_000_000 {
        bail!("--window must be between 1 and 1000000");
    }
    if a.msg_size < 8 || a.msg_size > MAX_MSG_SIZE {
        bail!("--msg-size must be between 8 and {MAX_MSG_SIZE}");
    }
    if a.connect_concurrency == 0 {
        bail!("--connect-concurrency must be at least 1");
    }
    if a.subject.is_empty() || a.subject.bytes().any(|b| b <= b' ' || b == 0x7f) {
        bail!("--subject must be non-empty with no spaces or control characters");
    }
    if a.proto == Proto::Linechat {
        let p = a.nick_prefix.as_bytes();
        let longest = format!("{}{}", a.nick_prefix, a.clients - 1);
        if p.is_empty()
            || !p[0].is_ascii_alphabetic()
            || !p
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
            || longest.len() > 32
        {
            bail!("--nick-prefix must start with a letter, use only letters, digits, _ - ., and leave room for the client number within 32 characters");
        }
    }
    if let Some(pid) = a.server_pid {
        procfs::cpu_seconds(Some(pid))
            .with_context(|| format!("--server-pid {pid}: cannot read /proc/{pid}/stat"))?;
    }
    Ok(addr)
}

/// Accepts `host:port` where host is a loopback address or `localhost`.
fn parse_loopback(s: &str) -> Result<SocketAddr> {
    let refuse = || {
        anyhow!(
            "refusing --addr {s}: linechat-bench only targets loopback (127.0.0.0/8, [::1] or localhost), \
             e.g. --addr 127.0.0.1:4000"
        )
    };
    let addr = if let Some(port) = s.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .map_err(|_| anyhow!("bad port in --addr {s}"))?;
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
    } else {
        s.parse::<SocketAddr>().map_err(|_| refuse())?
    };
    if !addr.ip().is_loopback() {
        return Err(refuse());
    }
    if addr.port() == 0 {
        bail!("--addr needs a port");
    }
    Ok(addr)
}

/// Raises RLIMIT_NOFILE's soft limit to the hard limit; returns the resulting soft limit.
fn raise_nofile_limit() -> Option<libc::rlim_t> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass, which lives on our stack.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return None;
        }
        if rl.rlim_cur < rl.rlim_max {
            let want = libc::rlimit {
                rlim_cur: rl.rlim_max,
                rlim_max: rl.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                rl = want;
            }
        }
    }
    Some(rl.rlim_cur)
}

/// Reading CPU time and memory of a process from /proc.
mod procfs {
    /// utime + stime of `pid` (or of this process) in seconds.
    pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
        let path = match pid {
            Some(p) => format!("/proc/{p}/stat"),
            None => "/proc/self/stat".to_string(),
        };
        let text = std::fs::read_to_string(path).ok()?;
        // The command name (field 2) may contain spaces and parentheses: start after the last ')'.
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) / clk_tck())
    }

    /// Whether `pid` exists and is not a zombie.
    pub fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|t| {
                let rest = &t[t.rfind(')')? + 1..];
                rest.split_whitespace()
                    .next()
                    .map(|st| st != "Z" && st != "X")
            })
            .unwrap_or(false)
    }

    fn clk_tck() -> f64 {
        // SAFETY: sysconf has no preconditions.
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if t > 0 {
            t as f64
        } else {
            100.0
        }
    }

    /// (VmHWM, VmRSS) of `pid` in KiB.
    pub fn mem_kib(pid: Option<u32>) -> Option<(u64, u64)> {
        let path = match pid {
            Some(p) => format!("/proc/{p}/status"),
            None => "/proc/self/status".to_string(),
        };
        let text = std::fs::read_to_string(path).ok()?;
        let field = |name: &str| -> Option<u64> {
            let line = text.lines().find(|l| l.starts_with(name))?;
            line[name.len()..].split_whitespace().next()?.parse().ok()
        };
        Some((field("VmHWM:")?, field("VmRSS:")?))
    }
}

/// Per sender, per receiver sequence tracking.
mod track {
    /// What one arrival was.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Obs {
        /// A sequence number not seen before, higher than all seen so far.
        Fresh,
        /// A sequence number not seen before but lower than one already seen.
        Late,
        /// Seen before.
        Dup,
    }

    /// Sequence numbers start at 1. `max` is the highest seen; `gaps` holds the missing numbers
    /// below it as sorted, disjoint half-open ranges (almost always empty: TCP and a single
    /// server keep order).
    #[derive(Debug, Default, Clone)]
    pub struct SeqTrack {
        max: u64,
        gaps: Vec<(u64, u64)>,
    }

    impl SeqTrack {
        pub fn observe(&mut self, q: u64) -> Obs {
            if q == self.max + 1 {
                self.max = q;
                return Obs::Fresh;
            }
            if q > self.max {
                self.gaps.push((self.max + 1, q));
                self.max = q;
                return Obs::Fresh;
            }
            let i = self.gaps.partition_point(|&(_, end)| end <= q);
            match self.gaps.get(i).copied() {
                Some((a, b)) if a <= q => {
                    if a == q && q + 1 == b {
                        self.gaps.remove(i);
                    } else if a == q {
                        self.gaps[i].0 = q + 1;
                    } else if q + 1 == b {
                        self.gaps[i].1 = q;
                    } else {
                        self.gaps[i].1 = q;
                        self.gaps.insert(i + 1, (q + 1, b));
                    }
                    Obs::Late
                }
                _ => Obs::Dup,
            }
        }

        /// Distinct sequence numbers seen.
        pub fn distinct(&self) -> u64 {
            self.max - self.gaps.iter().map(|&(a, b)| b - a).sum::<u64>()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn in_order_gap_late_dup() {
            let mut t = SeqTrack::default();
            assert_eq!(t.observe(1), Obs::Fresh);
            assert_eq!(t.observe(2), Obs::Fresh);
            assert_eq!(t.observe(2), Obs::Dup);
            assert_eq!(t.observe(6), Obs::Fresh); // 3,4,5 missing
            assert_eq!(t.distinct(), 3);
            assert_eq!(t.observe(4), Obs::Late);
            assert_eq!(t.observe(4), Obs::Dup);
            assert_eq!(t.observe(3), Obs::Late);
            assert_eq!(t.observe(5), Obs::Late);
            assert_eq!(t.observe(5), Obs::Dup);
            assert_eq!(t.distinct(), 6);
            assert_eq!(t.observe(0), Obs::Dup);
        }
    }
}

use track::{Obs, SeqTrack};

/// Message payload: `~B<sender>,<seq>,<send_ns>,` padded with `x` to the payload size.
mod wire {
    use bytes::{BufMut, BytesMut};

    pub const MAGIC: &[u8] = b"~B";

    pub fn put_u64(out: &mut BytesMut, mut v: u64) {
        let mut b = [0u8; 20];
        let mut i = b.len();
        loop {
            i -= 1;
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        out.put_slice(&b[i..]);
    }

    pub fn put_payload(out: &mut BytesMut, sender: usize, seq: u64, ts: u64, size: usize) {
        let start = out.len();
        out.put_slice(MAGIC);
        put_u64(out, sender as u64);
        out.put_u8(b',');
        put_u64(out, seq);
        out.put_u8(b',');
        put_u64(out, ts);
        out.put_u8(b',');
        let len = out.len() - start;
        if len < size {
            out.put_bytes(b'x', size - len);
        }
    }

    /// Parses leading decimal digits: (value, digits used).
    pub fn parse_u64(b: &[u8]) -> Option<(u64, usize)> {
        let mut v: u64 = 0;
        let mut n = 0;
        for &c in b {
            if !c.is_ascii_digit() {
                break;
            }
            v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            n += 1;
        }
        (n > 0).then_some((v, n))
    }

    /// (sender, seq, send_ns) of a bench payload.
    pub fn parse_payload(p: &[u8]) -> Option<(usize, u64, u64)> {
        let rest = p.strip_prefix(MAGIC)?;
        let (s, n) = parse_u64(rest)?;
        let rest = rest[n..].strip_prefix(b",")?;
        let (q, n) = parse_u64(rest)?;
        let rest = rest[n..].strip_prefix(b",")?;
        let (ts, n) = parse_u64(rest)?;
        rest[n..].strip_prefix(b",")?;
        Some((usize::try_from(s).ok()?, q, ts))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn payload_round_trip() {
            let mut b = BytesMut::new();
            put_payload(&mut b, 7, 123456, 9_876_543_210, 64);
            assert_eq!(b.len(), 64);
            assert_eq!(parse_payload(&b), Some((7, 123456, 9_876_543_210)));
            assert_eq!(parse_payload(b"~B1,2"), None);
            assert_eq!(parse_payload(b"hello"), None);
            let mut b = BytesMut::new();
            put_payload(&mut b, 0, 0, 0, 8);
            assert_eq!(&b[..], b"~B0,0,0,");
        }
    }
}

/// State shared by all tasks of a run.
#[derive(Debug)]
struct Shared {
    start: Instant,
    senders: usize,
    /// Window size in window mode (rate 0), None in rate mode.
    window: Option<u32>,
    /// Measured interval as ns since `start` (u64::MAX until the senders are started).
    measure_start_ns: AtomicU64,
    measure_end_ns: AtomicU64,
    /// Distinct deliveries so far (all messages, warmup included).
    delivered: AtomicU64,
    /// Distinct deliveries of messages sent in the measured interval.
    measured: AtomicU64,
    /// Lines / frames that were not bench messages (join notices, help, ...).
    other: AtomicU64,
    /// Receiving connections still open.
    live: AtomicUsize,
    /// Whether sender s's own receiving connection is still open.
    own_alive: Vec<AtomicBool>,
    /// Messages written by each sender so far.
    sent: Vec<AtomicU64>,
    /// Window mode: per sender, `window` slots; slot q % W counts receivers that got seq q.
    acks: Vec<Box<[AtomicU32]>>,
    /// Wakes sender s when one of its messages has reached every receiver.
    wake: Vec<Notify>,
    hist: Vec<Mutex<Histogram<u64>>>,
}

impl Shared {
    fn new(start: Instant, senders: usize, window: Option<u32>) -> Self {
        Shared {
            start,
            senders,
            window,
            measure_start_ns: AtomicU64::new(u64::MAX),
            measure_end_ns: AtomicU64::new(u64::MAX),
            delivered: AtomicU64::new(0),
            measured: AtomicU64::new(0),
            other: AtomicU64::new(0),
            live: AtomicUsize::new(0),
            own_alive: (0..senders).map(|_| AtomicBool::new(false)).collect(),
            sent: (0..senders).map(|_| AtomicU64::new(0)).collect(),
            acks: (0..senders)
                .map(|_| {
                    (0..window.unwrap_or(0))
                        .map(|_| AtomicU32::new(0))
                        .collect::<Vec<_>>()
                        .into_boxed_slice()
                })
                .collect(),
            wake: (0..senders).map(|_| Notify::new()).collect(),
            hist: (0..HIST_SHARDS)
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
        }
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// How many receivers a message of sender s must reach right now.
    fn ack_target(&self, s: usize) -> usize {
        let own = usize::from(self.own_alive[s].load(Ordering::Acquire));
        self.live.load(Ordering::Acquire).saturating_sub(own)
    }

    fn receiver_gone(&self, own: Option<usize>) {
        self.live.fetch_sub(1, Ordering::AcqRel);
        if let Some(s) = own {
            self.own_alive[s].store(false, Ordering::Release);
        }
        for w in &self.wake {
            w.notify_one();
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 ns .. ~16 min, 3 significant digits.
    Histogram::new_with_bounds(1, 1_000_000_000_000, 3).expect("valid histogram bounds")
}

thread_local! {
    /// Read buffer shared by all connections served by one worker thread: an idle connection
    /// owns no buffer at all, a busy one reads up to 256 KiB per syscall.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Latency samples of the read being parsed, flushed to a histogram shard after it.
    static LAT: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// What a receiving connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Linechat,
    Nats,
    Redis,
    /// A Redis publisher connection: only PUBLISH integer replies come back.
    RedisPublisher,
}

#[derive(Debug, Default, Clone)]
struct RecvStats {
    distinct: u64,
    dup: u64,
    late: u64,
    self_deliveries: u64,
    other: u64,
    malformed: u64,
    server_errors: u64,
    last_server_error: Option<String>,
    closed_by_server: bool,
    io_error: Option<String>,
    /// Computed at the end: messages that should have arrived here and did not.
    lost: u64,
    expected: u64,
    publish_replies: u64,
}

/// One receiving connection's parser and tracker.
#[derive(Debug)]
struct Receiver {
    idx: usize,
    kind: Kind,
    /// Sender index whose messages this connection does not expect (its own).
    own: Option<usize>,
    partial: Vec<u8>,
    track: Vec<SeqTrack>,
    st: RecvStats,
    need_pong: bool,
    // Per-read batches flushed to the shared counters.
    b_delivered: u64,
    b_measured: u64,
    b_other: u64,
}

impl Receiver {
    fn new(idx: usize, kind: Kind, own: Option<usize>, leftover: Vec<u8>) -> Self {
        Receiver {
            idx,
            kind,
            own,
            partial: leftover,
            track: Vec::new(),
            st: RecvStats::default(),
            need_pong: false,
            b_delivered: 0,
            b_measured: 0,
            b_other: 0,
        }
    }

    fn counts_as_receiver(&self) -> bool {
        self.kind != Kind::RedisPublisher
    }

    /// Parses as many complete messages as `buf` holds; returns the bytes consumed.
    fn process(
        &mut self,
        buf: &[u8],
        now: u64,
        sh: &Shared,
        lat: &mut Vec<u64>,
    ) -> Result<usize, String> {
        match self.kind {
            Kind::Linechat => Ok(self.process_linechat(buf, now, sh, lat)),
            Kind::Nats => self.process_nats(buf, now, sh, lat),
            Kind::Redis | Kind::RedisPublisher => self.process_redis(buf, now, sh, lat),
        }
    }

    fn process_linechat(&mut self, buf: &[u8], now: u64, sh: &Shared, lat: &mut Vec<u64>) -> usize {
        let mut pos = 0;
        while let Some(off) = memchr::memchr(b'\n', &buf[pos..]) {
            let mut line = &buf[pos..pos + off];
            pos += off + 1;
            if let Some(l) = line.strip_suffix(b"\r") {
                line = l;
            }
            // `<nick>: <text>`; a nick holds no ':', so the first ": " ends it.
            match memchr::memchr(b':', line) {
                Some(c) if line[c + 1..].starts_with(b" ~B") => {
                    self.on_payload(&line[c + 2..], now, sh, lat);
                }
                _ => {
                    if line.starts_with(b"Error") {
                        self.server_error(line);
                    }
                    self.b_other += 1;
                }
            }
        }
        pos
    }

    fn process_nats(
        &mut self,
        buf: &[u8],
        now: u64,
        sh: &Shared,
        lat: &mut Vec<u64>,
    ) -> Result<usize, String> {
        let mut pos = 0;
        while let Some(off) = memchr::memchr(b'\n', &buf[pos..]) {
            let line_end = pos + off;
            let mut line = &buf[pos..line_end];
            if let Some(l) = line.strip_suffix(b"\r") {
                line = l;
            }
            if let Some(rest) = line.strip_prefix(b"MSG ") {
                // MSG <subject> <sid> [reply-to] <#bytes>
                let n_str = rest.rsplit(|&b| b == b' ').next().unwrap_or(b"");
                let n = match wire::parse_u64(n_str) {
                    Some((n, used)) if used == n_str.len() => n as usize,
                    _ => return Err(format!("bad NATS MSG line: {}", show(line))),
                };
                let body = line_end + 1;
                if buf.len() < body + n + 2 {
                    break; // payload not complete yet
                }
                self.on_payload(&buf[body..body + n], now, sh, lat);
                pos = body + n + 2;
                continue;
            }
            pos = line_end + 1;
            if line == b"PING" {
                self.need_pong = true;
            } else if line.starts_with(b"-ERR") {
                self.server_error(line);
            } else {
                self.b_other += 1; // +OK, PONG, INFO
            }
        }
        Ok(pos)
    }

    fn process_redis(
        &mut self,
        buf: &[u8],
        now: u64,
        sh: &Shared,
        lat: &mut Vec<u64>,
    ) -> Result<usize, String> {
        let mut pos = 0;
        loop {
            match resp::parse(buf, pos)? {
                None => return Ok(pos),
                Some((v, next)) => {
                    pos = next;
                    match v {
                        resp::Top::Array { n: 3, items } if items[0] == Some(b"message") => {
                            match items[2] {
                                Some(p) => self.on_payload(p, now, sh, lat),
                                None => self.st.malformed += 1,
                            }
                        }
                        resp::Top::Int => self.st.publish_replies += 1,
                        resp::Top::Error(e) => self.server_error(e),
                        _ => self.b_other += 1,
                    }
                }
            }
        }
    }

    fn server_error(&mut self, line: &[u8]) {
        self.st.server_errors += 1;
        if self.st.last_server_error.is_none() {
            self.st.last_server_error = Some(show(line));
        }
    }

    fn on_payload(&mut self, p: &[u8], now: u64, sh: &Shared, lat: &mut Vec<u64>) {
        let Some((s, q, ts)) = wire::parse_payload(p) else {
            self.b_other += 1;
            return;
        };
        if s >= sh.senders || q == 0 {
            self.st.malformed += 1;
            return;
        }
        if Some(s) == self.own {
            self.st.self_deliveries += 1;
            return;
        }
        if self.track.is_empty() {
            self.track = vec![SeqTrack::default(); sh.senders];
        }
        match self.track[s].observe(q) {
            Obs::Dup => {
                self.st.dup += 1;
                return;
            }
            Obs::Late => self.st.late += 1,
            Obs::Fresh => {}
        }
        self.st.distinct += 1;
        self.b_delivered += 1;
        let ms = sh.measure_start_ns.load(Ordering::Relaxed);
        let me = sh.measure_end_ns.load(Ordering::Relaxed);
        if ts >= ms && ts < me {
            self.b_measured += 1;
            lat.push(now.saturating_sub(ts).max(1));
        }
        if let Some(w) = sh.window {
            let slot = &sh.acks[s][(q % u64::from(w)) as usize];
            let got = slot.fetch_add(1, Ordering::AcqRel) as usize + 1;
            if got >= sh.ack_target(s) {
                sh.wake[s].notify_one();
            }
        }
    }

    fn flush_counters(&mut self, sh: &Shared) {
        if self.b_delivered > 0 {
            sh.delivered.fetch_add(self.b_delivered, Ordering::Relaxed);
            self.b_delivered = 0;
        }
        if self.b_measured > 0 {
            sh.measured.fetch_add(self.b_measured, Ordering::Relaxed);
            self.b_measured = 0;
        }
        if self.b_other > 0 {
            self.st.other += self.b_other;
            sh.other.fetch_add(self.b_other, Ordering::Relaxed);
            self.b_other = 0;
        }
    }

    /// Polls one read into the thread's scratch buffer (after the unparsed tail of the previous
    /// read) and parses it. Ready(Ok(false)) = the peer closed the connection. Uses `poll_read`,
    /// which clears tokio's readiness after a short read, so an idle wakeup costs one syscall.
    fn poll_read_process(
        &mut self,
        rd: &mut OwnedReadHalf,
        cx: &mut std::task::Context<'_>,
        sh: &Shared,
    ) -> Poll<std::io::Result<bool>> {
        let res = SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let pl = self.partial.len();
            if scratch.len() < pl + SCRATCH_BYTES {
                scratch.resize(pl + SCRATCH_BYTES, 0);
            }
            scratch[..pl].copy_from_slice(&self.partial);
            let mut rb = ReadBuf::new(&mut scratch[pl..]);
            match Pin::new(&mut *rd).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let n = rb.filled().len();
            if n == 0 {
                return Poll::Ready(Ok(false));
            }
            let total = pl + n;
            let now = sh.now_ns();
            let parsed = LAT.with(|lat| {
                let mut lat = lat.borrow_mut();
                let consumed = self
                    .process(&scratch[..total], now, sh, &mut lat)
                    .map_err(std::io::Error::other)?;
                self.partial.clear();
                self.partial.extend_from_slice(&scratch[consumed..total]);
                if self.partial.capacity() > 64 * 1024 && self.partial.len() < 4096 {
                    self.partial.shrink_to(4096);
                }
                if !lat.is_empty() {
                    let mut h = sh.hist[self.idx % HIST_SHARDS]
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    for &v in lat.iter() {
                        h.saturating_record(v);
                    }
                    lat.clear();
                }
                Ok::<(), std::io::Error>(())
            });
            if let Err(e) = parsed {
                return Poll::Ready(Err(e));
            }
            if self.partial.len() > MAX_PARTIAL {
                return Poll::Ready(Err(std::io::Error::other(
                    "incomplete message larger than 16 MiB",
                )));
            }
            Poll::Ready(Ok(true))
        });
        // Drop the scratch buffer of a thread if it grew for one huge message.
        if self.partial.len() > SCRATCH_BYTES {
            SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                if s.len() > 4 * SCRATCH_BYTES {
                    s.truncate(SCRATCH_BYTES);
                    s.shrink_to_fit();
                }
            });
        }
        self.flush_counters(sh);
        res
    }
}

/// A minimal RESP2 reader for pub/sub pushes and PUBLISH replies.
mod resp {
    #[derive(Debug)]
    pub enum Top<'a> {
        /// An array of `n` elements; the first three bulk strings (None = not a bulk string).
        Array {
            n: i64,
            items: [Option<&'a [u8]>; 3],
        },
        Int,
        Simple,
        Error(&'a [u8]),
        Nil,
    }

    fn line(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
        let off = memchr::memchr(b'\n', buf.get(pos..)?)?;
        let end = pos + off;
        let l = &buf[pos..end];
        Some((l.strip_suffix(b"\r").unwrap_or(l), end + 1))
    }

    fn int(b: &[u8]) -> Result<i64, String> {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad RESP integer {:?}", String::from_utf8_lossy(b)))
    }

    /// One element: Ok(None) = incomplete. Returns (bulk bytes if a bulk string, next pos).
    #[allow(clippy::type_complexity)]
    fn elem(buf: &[u8], pos: usize) -> Result<Option<(Option<&[u8]>, usize)>, String> {
        let Some((l, next)) = line(buf, pos) else {
            return Ok(None);
        };
        match l.first() {
            Some(b'$') => {
                let n = int(&l[1..])?;
                if n < 0 {
                    return Ok(Some((None, next)));
                }
                let n = n as usize;
                if buf.len() < next + n + 2 {
                    return Ok(None);
                }
                Ok(Some((Some(&buf[next..next + n]), next + n + 2)))
            }
            Some(b':' | b'+' | b'-') => Ok(Some((None, next))),
            _ => Err(format!(
                "unexpected RESP element {:?}",
                String::from_utf8_lossy(l)
            )),
        }
    }

    /// One top-level value from `pos`: Ok(None) = incomplete.
    pub fn parse(buf: &[u8], pos: usize) -> Result<Option<(Top<'_>, usize)>, String> {
        let Some((l, mut next)) = line(buf, pos) else {
            return Ok(None);
        };
        match l.first() {
            Some(b'*') => {
                let n = int(&l[1..])?;
                let mut items = [None; 3];
                for i in 0..n.max(0) {
                    match elem(buf, next)? {
                        None => return Ok(None),
                        Some((b, nx)) => {
                            if (i as usize) < 3 {
                                items[i as usize] = b;
                            }
                            next = nx;
                        }
                    }
                }
                Ok(Some((Top::Array { n, items }, next)))
            }
            Some(b':') => Ok(Some((Top::Int, next))),
            Some(b'+') => Ok(Some((Top::Simple, next))),
            Some(b'-') => Ok(Some((Top::Error(l), next))),
            Some(b'$') => match elem(buf, pos)? {
                None => Ok(None),
                Some((_, nx)) => Ok(Some((Top::Nil, nx))),
            },
            _ => Err(format!(
                "unexpected RESP reply {:?}",
                String::from_utf8_lossy(l)
            )),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn message_push_split_anywhere() {
            let msg: &[u8] = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n:3\r\n";
            for cut in 0..msg.len() - 4 {
                let r = parse(&msg[..cut], 0).unwrap();
                assert!(r.is_none(), "cut {cut}");
            }
            let (v, next) = parse(msg, 0).unwrap().unwrap();
            match v {
                Top::Array { n: 3, items } => {
                    assert_eq!(items[0], Some(&b"message"[..]));
                    assert_eq!(items[2], Some(&b"hello"[..]));
                }
                other => panic!("{other:?}"),
            }
            assert!(matches!(parse(msg, next).unwrap(), Some((Top::Int, _))));
        }
    }
}

/// Printable, shortened form of received bytes for error messages.
fn show(b: &[u8]) -> String {
    let s: String = String::from_utf8_lossy(&b[..b.len().min(120)])
        .chars()
        .flat_map(|c| c.escape_debug())
        .collect();
    if b.len() > 120 {
        format!("{s}...")
    } else {
        s
    }
}

type Writer = Arc<tokio::sync::Mutex<OwnedWriteHalf>>;
/// A set-up connection: (index, writer, its receive task).
type Conn = (usize, Writer, JoinHandle<Receiver>);

/// Reads until `done(buf)` returns the end of the handshake reply; returns that end index.
async fn read_until(
    rd: &mut OwnedReadHalf,
    buf: &mut Vec<u8>,
    what: &str,
    mut done: impl FnMut(&[u8]) -> Result<Option<usize>>,
) -> Result<usize> {
    let mut chunk = vec![0u8; 4096];
    loop {
        if let Some(end) = done(buf)? {
            return Ok(end);
        }
        if buf.len() > 1 << 20 {
            bail!("no {what} in the first MiB the server sent");
        }
        let n = rd.read(&mut chunk).await?;
        if n == 0 {
            bail!(
                "server closed the connection while waiting for {what}; it sent: \"{}\"",
                show(buf)
            );
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// First complete line of `buf`: (line without ending, index after it).
fn first_line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let off = memchr::memchr(b'\n', buf)?;
    let l = &buf[..off];
    Some((l.strip_suffix(b"\r").unwrap_or(l), off + 1))
}

#[derive(Debug, Clone)]
struct Cfg {
    proto: Proto,
    addr: SocketAddr,
    subject: String,
    nick_prefix: String,
    msg_size: usize,
    connect_timeout: Duration,
}

/// Connects and performs the protocol handshake; returns the halves and any bytes already
/// received after the handshake.
async fn connect(
    cfg: &Cfg,
    idx: usize,
    publisher: bool,
) -> Result<(OwnedReadHalf, OwnedWriteHalf, Vec<u8>)> {
    let stream = TcpStream::connect(cfg.addr).await.map_err(|e| {
        anyhow!(
            "connecting to {}: {e}{}",
            cfg.addr,
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                " (is the server running there?)"
            } else {
                ""
            }
        )
    })?;
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = Vec::new();
    let end = match (cfg.proto, publisher) {
        (Proto::Linechat, _) => {
            let prompt = b"nickname: ";
            let end = read_until(&mut rd, &mut buf, "nickname prompt", |b| {
                Ok(memchr::memmem::find(b, prompt).map(|i| i + prompt.len()))
            })
            .await?;
            buf.drain(..end);
            let nick = format!("{}{}", cfg.nick_prefix, idx);
            wr.write_all(format!("{nick}\n").as_bytes()).await?;
            let welcome = format!("Welcome to the chat, {nick}!");
            read_until(&mut rd, &mut buf, "welcome line", |b| match first_line(b) {
                None => Ok(None),
                Some((l, next)) if l == welcome.as_bytes() => Ok(Some(next)),
                Some((l, _)) => bail!(
                    "linechat refused nickname {nick}: \"{}\" (is this a linechat server, and a fresh one?)",
                    show(l)
                ),
            })
            .await?
        }
        (Proto::Nats, _) => {
            read_until(&mut rd, &mut buf, "NATS INFO line", |b| {
                match first_line(b) {
                    None => Ok(None),
                    Some((l, next)) if l.starts_with(b"INFO ") => Ok(Some(next)),
                    Some((l, _)) => bail!("expected a NATS INFO line, got \"{}\"", show(l)),
                }
            })
            .await?;
            buf.clear();
            let hello = format!(
                "CONNECT {{\"verbose\":false,\"pedantic\":false,\"echo\":false,\"name\":\"linechat-bench\"}}\r\nSUB {} {}\r\nPING\r\n",
                cfg.subject,
                idx + 1
            );
            wr.write_all(hello.as_bytes()).await?;
            read_until(&mut rd, &mut buf, "NATS PONG", |b| {
                let mut pos = 0;
                while let Some((l, next)) = first_line(&b[pos..]) {
                    if l == b"PONG" {
                        return Ok(Some(pos + next));
                    }
                    if l.starts_with(b"-ERR") {
                        bail!("NATS refused the subscription: {}", show(l));
                    }
                    pos += next;
                }
                Ok(None)
            })
            .await?
        }
        (Proto::Redis, false) => {
            let cmd = format!(
                "*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{}\r\n",
                cfg.subject.len(),
                cfg.subject
            );
            wr.write_all(cmd.as_bytes()).await?;
            read_until(
                &mut rd,
                &mut buf,
                "Redis subscribe confirmation",
                |b| match resp::parse(b, 0).map_err(|e| anyhow!("{e} (is this a Redis server?)"))? {
                    None => Ok(None),
                    Some((resp::Top::Array { items, .. }, next))
                        if items[0] == Some(b"subscribe") =>
                    {
                        Ok(Some(next))
                    }
                    Some(_) => bail!("unexpected reply to SUBSCRIBE: \"{}\"", show(b)),
                },
            )
            .await?
        }
        (Proto::Redis, true) => {
            wr.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
            read_until(&mut rd, &mut buf, "Redis PONG", |b| match first_line(b) {
                None => Ok(None),
                Some((b"+PONG", next)) => Ok(Some(next)),
                Some((l, _)) => bail!("unexpected reply to PING: \"{}\"", show(l)),
            })
            .await?
        }
    };
    buf.drain(..end);
    Ok((rd, wr, buf))
}

/// Reads and parses until stopped or the connection closes; returns the receiver's state.
async fn recv_loop(
    mut rd: OwnedReadHalf,
    pong: Option<Writer>,
    mut r: Receiver,
    sh: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Receiver {
    // Bytes that arrived with the handshake.
    if !r.partial.is_empty() {
        let data = std::mem::take(&mut r.partial);
        LAT.with(|lat| {
            let mut lat = lat.borrow_mut();
            match r.process(&data, sh.now_ns(), &sh, &mut lat) {
                Ok(used) => r.partial.extend_from_slice(&data[used..]),
                Err(e) => r.st.io_error = Some(e),
            }
            lat.clear();
        });
        r.flush_counters(&sh);
    }
    let own = r.own;
    let counts = r.counts_as_receiver();
    loop {
        if r.st.io_error.is_some() {
            break;
        }
        let step = std::future::poll_fn(|cx| r.poll_read_process(&mut rd, cx, &sh));
        let res = tokio::select! {
            biased;
            _ = stop.changed() => break,
            res = step => res,
        };
        match res {
            Ok(true) => {}
            Ok(false) => {
                r.st.closed_by_server = true;
                break;
            }
            Err(e) => {
                r.st.io_error = Some(e.to_string());
                break;
            }
        }
        if r.need_pong {
            r.need_pong = false;
            if let Some(w) = &pong {
                let mut w = w.lock().await;
                if let Err(e) = w.write_all(b"PONG\r\n").await {
                    r.st.io_error = Some(e.to_string());
                    break;
                }
            }
        }
    }
    if counts && !*stop.borrow() {
        // Gone before the end of the run: senders must stop waiting for it.
        sh.receiver_gone(own);
    }
    r
}

#[derive(Debug, Default, Clone)]
struct SenderStats {
    sent: u64,
    sent_measured: u64,
    stalls: u64,
    write_error: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct Timeline {
    t0: Instant,
    measure_end: Instant,
    hard_end: Instant,
}

/// Appends one framed message for the protocol.
fn put_frame(cfg: &Cfg, out: &mut BytesMut, tmp: &mut BytesMut, s: usize, seq: u64, ts: u64) {
    match cfg.proto {
        Proto::Linechat => {
            wire::put_payload(out, s, seq, ts, cfg.msg_size);
            out.put_u8(b'\n');
        }
        Proto::Nats => {
            tmp.clear();
            wire::put_payload(tmp, s, seq, ts, cfg.msg_size);
            out.put_slice(b"PUB ");
            out.put_slice(cfg.subject.as_bytes());
            out.put_u8(b' ');
            wire::put_u64(out, tmp.len() as u64);
            out.put_slice(b"\r\n");
            out.put_slice(tmp);
            out.put_slice(b"\r\n");
        }
        Proto::Redis => {
            tmp.clear();
            wire::put_payload(tmp, s, seq, ts, cfg.msg_size);
            out.put_slice(b"*3\r\n$7\r\nPUBLISH\r\n$");
            wire::put_u64(out, cfg.subject.len() as u64);
            out.put_slice(b"\r\n");
            out.put_slice(cfg.subject.as_bytes());
            out.put_slice(b"\r\n$");
            wire::put_u64(out, tmp.len() as u64);
            out.put_slice(b"\r\n");
            out.put_slice(tmp);
            out.put_slice(b"\r\n");
        }
    }
}

struct SenderCtx {
    s: usize,
    w: Writer,
    sh: Arc<Shared>,
    cfg: Arc<Cfg>,
    tl: Timeline,
    out: BytesMut,
    tmp: BytesMut,
    st: SenderStats,
    next_seq: u64,
    stall_ms: u64,
}

impl std::fmt::Debug for SenderCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderCtx").field("s", &self.s).finish()
    }
}

impl SenderCtx {
    /// Builds and writes `n` messages in one write. Returns false if the connection failed.
    async fn send(&mut self, n: u64) -> bool {
        let ts = self.sh.now_ns();
        self.out.clear();
        for i in 0..n {
            put_frame(
                &self.cfg,
                &mut self.out,
                &mut self.tmp,
                self.s,
                self.next_seq + i,
                ts,
            );
        }
        let mut w = self.w.lock().await;
        match timeout_at(self.tl.hard_end.into(), w.write_all(&self.out)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.st.write_error = Some(e.to_string());
                return false;
            }
            Err(_) => {
                self.st.write_error = Some("write blocked until the end of the run".into());
                return false;
            }
        }
        self.next_seq += n;
        self.st.sent += n;
        let ms = self.sh.measure_start_ns.load(Ordering::Relaxed);
        let me = self.sh.measure_end_ns.load(Ordering::Relaxed);
        if ts >= ms && ts < me {
            self.st.sent_measured += n;
        }
        self.sh.sent[self.s].store(self.st.sent, Ordering::Release);
        true
    }
}

/// Open loop: sender s sends `per_sec` messages per second on a fixed schedule (staggered
/// among senders), catching up in batches when a timer fires late.
async fn sender_rate(mut c: SenderCtx, per_sec: f64, senders: usize) -> SenderStats {
    let stagger = Duration::from_secs_f64((c.s as f64 / senders as f64) / per_sec);
    let begin = c.tl.t0 + stagger.min(Duration::from_secs(1));
    sleep_until(begin.into()).await;
    loop {
        let now = Instant::now();
        if now >= c.tl.measure_end {
            break;
        }
        let due = ((now - begin).as_secs_f64() * per_sec) as u64 + 1;
        let sent = c.next_seq - 1;
        let n = due.saturating_sub(sent).min(MAX_BATCH);
        if n > 0 && !c.send(n).await {
            break;
        }
        let next_due = begin + Duration::from_secs_f64((c.next_seq - 1) as f64 / per_sec);
        let wake = next_due.min(c.tl.measure_end);
        if wake > Instant::now() {
            sleep_until(wake.into()).await;
        }
    }
    c.st
}

/// Closed loop: at most W messages in flight per sender, where in flight means sent but not
/// yet received by EVERY receiver that should get it. Counting all receivers (not one
/// designated receiver) bounds what the server holds queued for its slowest client, so the
/// run measures sustained fan-out throughput and the latencies are those of a server that
/// keeps up, not of a growing backlog. A message that has not reached everyone within
/// --stall-timeout-ms is given up on (a stall) so that a loss cannot freeze the sender.
async fn sender_window(mut c: SenderCtx, w: u32) -> SenderStats {
    let wn = u64::from(w);
    let stall = Duration::from_millis(c.stall_ms);
    let mut sent_at = vec![c.tl.t0; w as usize];
    let mut oldest = 1u64; // oldest sequence number not yet retired
    sleep_until(c.tl.t0.into()).await;
    loop {
        let now = Instant::now();
        if now >= c.tl.measure_end {
            break;
        }
        let target = c.sh.ack_target(c.s);
        while oldest < c.next_seq {
            let i = (oldest % wn) as usize;
            let slot = &c.sh.acks[c.s][i];
            let done = slot.load(Ordering::Acquire) as usize >= target;
            if done || now.duration_since(sent_at[i]) >= stall {
                slot.store(0, Ordering::Release);
                if !done {
                    c.st.stalls += 1;
                }
                oldest += 1;
            } else {
                break;
            }
        }
        let in_flight = c.next_seq - oldest;
        if in_flight < wn {
            let n = (wn - in_flight).min(MAX_BATCH);
            let first = c.next_seq;
            if !c.send(n).await {
                break;
            }
            let t = Instant::now();
            for q in first..first + n {
                sent_at[(q % wn) as usize] = t;
            }
            continue;
        }
        let deadline = (sent_at[(oldest % wn) as usize] + stall).min(c.tl.measure_end);
        tokio::select! {
            _ = c.sh.wake[c.s].notified() => {}
            _ = sleep_until(deadline.into()) => {}
        }
    }
    c.st
}

#[derive(Debug)]
struct Report {
    json: bool,
    value: Value,
    table: String,
}

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    at: Option<Instant>,
    server_cpu: Option<f64>,
    bench_cpu: Option<f64>,
    server_mem: Option<(u64, u64)>,
}

fn sample(pid: Option<u32>) -> Sample {
    Sample {
        at: Some(Instant::now()),
        server_cpu: pid.and_then(|p| procfs::cpu_seconds(Some(p))),
        bench_cpu: procfs::cpu_seconds(None),
        server_mem: pid.and_then(|p| procfs::mem_kib(Some(p))),
    }
}

fn progress_bar(len: u64, template: &str) -> ProgressBar {
    let pb = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

async fn run(args: Args, addr: SocketAddr) -> Result<Report> {
    let start = Instant::now();
    let cfg = Arc::new(Cfg {
        proto: args.proto,
        addr,
        subject: args.subject.clone(),
        nick_prefix: args.nick_prefix.clone(),
        msg_size: args.msg_size,
        connect_timeout: Duration::from_secs_f64(args.connect_timeout),
    });
    let n = args.clients;
    let s_count = args.senders;
    let window = (args.rate == 0.0 && s_count > 0).then_some(args.window);
    let sh = Arc::new(Shared::new(start, s_count, window));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut warnings: Vec<String> = Vec::new();

    // --- connect -------------------------------------------------------------------------
    let before = sample(args.server_pid);
    let kind = match args.proto {
        Proto::Linechat => Kind::Linechat,
        Proto::Nats => Kind::Nats,
        Proto::Redis => Kind::Redis,
    };
    let pb = progress_bar(
        n as u64,
        "connecting {bar:40} {pos}/{len} connections [{elapsed}]",
    );
    let sem = Arc::new(Semaphore::new(args.connect_concurrency));
    let mut setup: Vec<JoinHandle<Result<Conn>>> = Vec::with_capacity(n + s_count);
    let total_conns = n + if args.proto == Proto::Redis {
        s_count
    } else {
        0
    };
    let setup_failed = Arc::new(AtomicBool::new(false));
    for idx in 0..total_conns {
        // Take the permit before spawning, so that only `connect_concurrency` handshakes (and
        // their buffers) exist at once, and stop early once one has failed.
        let permit = sem.clone().acquire_owned().await?;
        if setup_failed.load(Ordering::Relaxed) {
            break;
        }
        let (cfg, sh, stop_rx, pb, setup_failed) = (
            cfg.clone(),
            sh.clone(),
            stop_rx.clone(),
            pb.clone(),
            setup_failed.clone(),
        );
        let publisher = idx >= n;
        setup.push(tokio::spawn(async move {
            let _permit = permit;
            let what = if publisher { "publisher " } else { "client " };
            let res = timeout(cfg.connect_timeout, connect(&cfg, idx, publisher)).await;
            if !matches!(res, Ok(Ok(_))) {
                setup_failed.store(true, Ordering::Relaxed);
            }
            let (rd, wr, leftover) = res
                .map_err(|_| {
                    anyhow!(
                        "{what}{idx}: connect + handshake took longer than --connect-timeout {:?} \
                         (is the server at {} really speaking {}?)",
                        cfg.connect_timeout,
                        cfg.addr,
                        cfg.proto.name()
                    )
                })?
                .with_context(|| format!("{what}{idx}"))?;
            let wr: Writer = Arc::new(tokio::sync::Mutex::new(wr));
            let (rkind, own) = if publisher {
                (Kind::RedisPublisher, None)
            } else {
                (kind, (idx < sh.senders).then_some(idx))
            };
            if !publisher {
                sh.live.fetch_add(1, Ordering::AcqRel);
                if let Some(s) = own {
                    sh.own_alive[s].store(true, Ordering::Release);
                }
            }
            let r = Receiver::new(idx, rkind, own, leftover);
            let pong = (cfg.proto == Proto::Nats).then(|| wr.clone());
            let h = tokio::spawn(recv_loop(rd, pong, r, sh, stop_rx));
            pb.inc(1);
            Ok((idx, wr, h))
        }));
    }
    let mut writers: Vec<Option<Writer>> = vec![None; total_conns];
    let mut receivers: Vec<JoinHandle<Receiver>> = Vec::with_capacity(total_conns);
    let mut failures = 0usize;
    let mut first_error: Option<anyhow::Error> = None;
    for h in setup {
        match h.await {
            Ok(Ok((idx, wr, rh))) => {
                writers[idx] = Some(wr);
                receivers.push(rh);
            }
            Ok(Err(e)) => {
                failures += 1;
                first_error.get_or_insert(e);
            }
            Err(e) => {
                failures += 1;
                first_error.get_or_insert(anyhow!("setup task failed: {e}"));
            }
        }
    }
    pb.finish_and_clear();
    if let Some(e) = first_error {
        let _ = stop_tx.send(true);
        return Err(e.context(format!(
            "{failures} of the {total_conns} connections could not be set up (stopped at the first failure)"
        )));
    }
    let setup_s = start.elapsed().as_secs_f64();

    // --- settle: wait until join notices etc. stop flowing -----------------------------------
    let settle_deadline = Instant::now() + Duration::from_secs_f64(args.settle_max);
    let quiet = Duration::from_millis(if args.proto == Proto::Linechat {
        300
    } else {
        100
    });
    let mut last = sh.other.load(Ordering::Relaxed);
    let mut last_change = Instant::now();
    while Instant::now() < settle_deadline {
        sleep(Duration::from_millis(50)).await;
        let cur = sh.other.load(Ordering::Relaxed);
        if cur != last {
            last = cur;
            last_change = Instant::now();
        } else if last_change.elapsed() >= quiet {
            break;
        }
    }
    if sh.live.load(Ordering::Acquire) < n {
        warnings.push(format!(
            "{} clients were disconnected during setup",
            n - sh.live.load(Ordering::Acquire)
        ));
    }
    let after_join = sample(args.server_pid);

    // --- run ------------------------------------------------------------------------------
    let warmup = if s_count == 0 { 0.0 } else { args.warmup };
    let t0 = Instant::now() + Duration::from_millis(20);
    let measure_start = t0 + Duration::from_secs_f64(warmup);
    let measure_end = measure_start + Duration::from_secs_f64(args.duration);
    let tl = Timeline {
        t0,
        measure_end,
        hard_end: measure_end + Duration::from_secs_f64(args.drain + 5.0),
    };
    let to_ns = |t: Instant| t.duration_since(start).as_nanos() as u64;
    sh.measure_start_ns
        .store(to_ns(measure_start), Ordering::Release);
    sh.measure_end_ns
        .store(to_ns(measure_end), Ordering::Release);

    let stall_ms = args.stall_timeout_ms;
    let mut sender_handles = Vec::with_capacity(s_count);
    for s in 0..s_count {
        let widx = if args.proto == Proto::Redis { n + s } else { s };
        let w = writers[widx].clone().expect("writer of a connected client");
        let c = SenderCtx {
            s,
            w,
            sh: sh.clone(),
            cfg: cfg.clone(),
            tl,
            out: BytesMut::with_capacity(64 * 1024),
            tmp: BytesMut::with_capacity(args.msg_size + 64),
            st: SenderStats::default(),
            next_seq: 1,
            stall_ms,
        };
        sender_handles.push(match window {
            Some(w) => tokio::spawn(sender_window(c, w)),
            None => tokio::spawn(sender_rate(c, args.rate / s_count as f64, s_count)),
        });
    }

    let total_ms = ((warmup + args.duration) * 1000.0) as u64;
    let pb = progress_bar(total_ms, "{spinner} {bar:40} {elapsed}/{duration} {msg}");
    pb.enable_steady_tick(Duration::from_millis(200));
    let mut m_start: Option<Sample> = None;
    let mut rate_probe = (Instant::now(), 0u64);
    loop {
        let now = Instant::now();
        if m_start.is_none() && now >= measure_start {
            m_start = Some(sample(args.server_pid));
        }
        if now >= measure_end {
            break;
        }
        pb.set_position(now.saturating_duration_since(t0).as_millis() as u64);
        let d = sh.delivered.load(Ordering::Relaxed);
        let dt = now.duration_since(rate_probe.0).as_secs_f64();
        if dt >= 0.5 {
            let rate = (d - rate_probe.1) as f64 / dt;
            let phase = if now < measure_start {
                "warmup"
            } else {
                "measuring"
            };
            let sent: u64 = sh.sent.iter().map(|a| a.load(Ordering::Relaxed)).sum();
            pb.set_message(format!(
                "{phase}: sent {sent}, delivered {d} ({}/s)",
                human(rate)
            ));
            rate_probe = (now, d);
        }
        let next = (now + Duration::from_millis(100))
            .min(measure_end)
            .min(if m_start.is_none() {
                measure_start
            } else {
                measure_end
            });
        sleep_until(next.into()).await;
    }
    let m_end = sample(args.server_pid);
    let m_start = m_start.unwrap_or(after_join);
    pb.finish_and_clear();

    // --- drain ----------------------------------------------------------------------------
    let mut sstats = Vec::with_capacity(s_count);
    for h in sender_handles {
        sstats.push(h.await.unwrap_or_default());
    }
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain);
    loop {
        let expected_now: u64 = (0..s_count)
            .map(|s| sh.sent[s].load(Ordering::Acquire) * sh.ack_target(s) as u64)
            .sum();
        if sh.delivered.load(Ordering::Acquire) >= expected_now || Instant::now() >= drain_deadline
        {
            break;
        }
        sleep(Duration::from_millis(10)).await;
    }
    let drain_s = Instant::now().duration_since(measure_end).as_secs_f64();
    let _ = stop_tx.send(true);
    let mut rstats: Vec<Receiver> = Vec::with_capacity(receivers.len());
    for h in receivers {
        if let Ok(r) = h.await {
            rstats.push(r);
        }
    }
    let end = sample(args.server_pid);
    let bench_mem = procfs::mem_kib(None);
    drop(writers);

    // --- tally ----------------------------------------------------------------------------
    let sent_by: Vec<u64> = sstats.iter().map(|s| s.sent).collect();
    let mut tot = RecvStats::default();
    let mut disconnected = 0u64;
    let mut io_errors = 0u64;
    let mut first_io_error: Option<String> = None;
    let mut subscribers = 0u64;
    for r in rstats.iter_mut() {
        if r.counts_as_receiver() {
            subscribers += 1;
            for (s, &sent) in sent_by.iter().enumerate() {
                if Some(s) == r.own {
                    continue;
                }
                let got = r.track.get(s).map_or(0, SeqTrack::distinct);
                r.st.expected += sent;
                r.st.lost += sent.saturating_sub(got);
            }
        }
        let st = &r.st;
        tot.distinct += st.distinct;
        tot.dup += st.dup;
        tot.late += st.late;
        tot.self_deliveries += st.self_deliveries;
        tot.other += st.other;
        tot.malformed += st.malformed;
        tot.server_errors += st.server_errors;
        tot.publish_replies += st.publish_replies;
        tot.lost += st.lost;
        tot.expected += st.expected;
        if tot.last_server_error.is_none() {
            tot.last_server_error.clone_from(&st.last_server_error);
        }
        if st.closed_by_server {
            disconnected += 1;
        }
        if let Some(e) = &st.io_error {
            io_errors += 1;
            first_io_error.get_or_insert_with(|| e.clone());
        }
    }
    let mut hist = new_histogram();
    for h in &sh.hist {
        let h = h.lock().unwrap_or_else(|e| e.into_inner());
        hist.add(&*h).ok();
    }
    let sent: u64 = sent_by.iter().sum();
    let sent_measured: u64 = sstats.iter().map(|s| s.sent_measured).sum();
    let stalls: u64 = sstats.iter().map(|s| s.stalls).sum();
    let write_errors: Vec<&String> = sstats
        .iter()
        .filter_map(|s| s.write_error.as_ref())
        .collect();
    let measured = sh.measured.load(Ordering::Relaxed);
    let dur = args.duration;
    let deliveries_per_s = measured as f64 / dur;
    let cpu_delta = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some((b - a).max(0.0)),
        _ => None,
    };
    let interval_s = match (m_start.at, m_end.at) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64().max(1e-9),
        _ => dur,
    };
    let server_cpu = cpu_delta(m_start.server_cpu, m_end.server_cpu);
    let bench_cpu = cpu_delta(m_start.bench_cpu, m_end.bench_cpu);
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
    let per_cpu_s = server_cpu.and_then(|c| (c > 0.0 && s_count > 0).then(|| measured as f64 / c));
    let bench_util = bench_cpu.map(|c| c / interval_s);
    let server_util = server_cpu.map(|c| c / interval_s);
    let mut bench_bottleneck = false;
    if let Some(u) = bench_util {
        if u > 0.9 * cores && s_count > 0 {
            bench_bottleneck = true;
            warnings.push(format!(
                "the bench used {:.0}% of the {} cores: it may be the bottleneck",
                u * 100.0,
                cores
            ));
        } else if let Some(su) = server_util {
            if u + su > 0.9 * cores && s_count > 0 {
                warnings.push(format!(
                    "bench ({:.0}%) and server ({:.0}%) together used ~all {} cores: the two compete for CPU, \
                     so throughput is a lower bound",
                    u * 100.0,
                    su * 100.0,
                    cores
                ));
            }
        }
    }
    if args.rate > 0.0 && s_count > 0 {
        let achieved = sent_measured as f64 / dur;
        if achieved < 0.95 * args.rate {
            warnings.push(format!(
                "achieved send rate {:.0}/s is below the requested {:.0}/s (server pushing back or bench too slow{})",
                achieved,
                args.rate,
                if args.proto == Proto::Linechat {
                    "; was linechat started with --rate-limit 0?"
                } else {
                    ""
                }
            ));
        }
    }
    if let Some(pid) = args.server_pid {
        if !procfs::alive(pid) {
            warnings.push(format!("the server process {pid} exited during the run"));
        }
    }
    if tot.lost > 0 {
        warnings.push(format!("{} deliveries LOST", tot.lost));
    }
    if tot.dup > 0 {
        warnings.push(format!("{} deliveries DUPLICATED", tot.dup));
    }
    if tot.late > 0 {
        warnings.push(format!("{} deliveries REORDERED", tot.late));
    }
    if stalls > 0 {
        warnings.push(format!(
            "{stalls} window stalls: messages not delivered to every receiver within {stall_ms} ms"
        ));
    }
    if disconnected > 0 {
        warnings.push(format!(
            "{disconnected} connections were closed by the server"
        ));
    }
    if io_errors > 0 {
        warnings.push(format!(
            "{io_errors} connections failed: {}",
            first_io_error.clone().unwrap_or_default()
        ));
    }
    if let Some(e) = write_errors.first() {
        warnings.push(format!(
            "{} senders failed to write: {e}",
            write_errors.len()
        ));
    }
    if tot.server_errors > 0 {
        warnings.push(format!(
            "{} error replies from the server, e.g. {}",
            tot.server_errors,
            tot.last_server_error.clone().unwrap_or_default()
        ));
    }
    if tot.malformed > 0 {
        warnings.push(format!("{} malformed bench messages", tot.malformed));
    }
    if args.proto == Proto::Linechat && args.msg_size > 1024 {
        warnings.push("--msg-size above linechat's default max line of 1024 bytes".into());
    }

    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    let latency = if hist.is_empty() {
        Value::Null
    } else {
        json!({
            "samples": hist.len(),
            "mean": round2(hist.mean() / 1000.0),
            "p50": round2(q(0.50)),
            "p90": round2(q(0.90)),
            "p99": round2(q(0.99)),
            "p999": round2(q(0.999)),
            "max": round2(hist.max() as f64 / 1000.0),
        })
    };
    let rss_per_conn = match (before.server_mem, after_join.server_mem) {
        (Some((_, b)), Some((_, a))) => Some((a as f64 - b as f64) * 1024.0 / n as f64),
        _ => None,
    };
    let rss_per_conn_end = match (before.server_mem, end.server_mem) {
        (Some((_, b)), Some((_, a))) => Some((a as f64 - b as f64) * 1024.0 / n as f64),
        _ => None,
    };
    let peak_hwm = [before, after_join, m_start, m_end, end]
        .iter()
        .filter_map(|s| s.server_mem.map(|m| m.0))
        .max();
    let expected_def = match args.proto {
        Proto::Linechat => "each message to every other client (N-1): linechat does not echo to the sender",
        Proto::Nats => "each message to every other client (N-1): every client subscribes to one subject and publishes on its own connection with echo:false",
        Proto::Redis => "each message to every other client (N-1): every client subscribes to one channel; senders publish on separate publisher connections and their own subscriber's copy is discarded (self_deliveries)",
    };
    let mode = if s_count == 0 {
        "idle".to_string()
    } else if let Some(w) = window {
        format!("window {w} in flight per sender (until delivered to all receivers)")
    } else {
        format!("rate {} msgs/s total", args.rate)
    };
    let mode_name = if s_count == 0 {
        "idle"
    } else if window.is_some() {
        "window"
    } else {
        "rate"
    };
    let mut value = json!({
        "proto": args.proto.name(),
        "addr": addr.to_string(),
        "mode": mode_name,
        "clients": n,
        "senders": s_count,
        "rate": args.rate,
        "window": window,
        "duration_s": dur,
        "warmup_s": warmup,
        "msg_size": args.msg_size,
        "setup_s": round2(setup_s),
        "drain_s": round2(drain_s),
        "expected_definition": expected_def,
        "subscribers": subscribers,
        "sent": sent,
        "sent_measured": sent_measured,
        "sent_per_s": round2(sent_measured as f64 / dur),
        "expected_deliveries": tot.expected,
        "deliveries": tot.distinct,
        "deliveries_measured": measured,
        "deliveries_per_s": round2(deliveries_per_s),
        "lost": tot.lost,
        "duplicated": tot.dup,
        "reordered": tot.late,
        "self_deliveries": tot.self_deliveries,
        "other_lines": tot.other,
        "malformed": tot.malformed,
        "window_stalls": stalls,
        "disconnected_by_server": disconnected,
        "connection_errors": io_errors,
        "server_errors": tot.server_errors,
        "latency_us": latency,
    });
    let extra = json!({
        "server": {
            "pid": args.server_pid,
            "cpu_s": server_cpu.map(round3),
            "cpu_util": server_util.map(round3),
            "deliveries_per_cpu_s": per_cpu_s.map(round2),
            "vm_hwm_kib": peak_hwm,
            "rss_kib_before": before.server_mem.map(|m| m.1),
            "rss_kib_after_join": after_join.server_mem.map(|m| m.1),
            "rss_kib_end": end.server_mem.map(|m| m.1),
            "rss_bytes_per_conn": rss_per_conn.map(round2),
            "rss_bytes_per_conn_end": rss_per_conn_end.map(round2),
        },
        "bench": {
            "cpu_s": bench_cpu.map(round3),
            "cpu_util": bench_util.map(round3),
            "cores": cores,
            "maybe_bottleneck": bench_bottleneck,
            "vm_hwm_kib": bench_mem.map(|m| m.0),
        },
        "warnings": warnings,
    });
    if let (Some(v), Value::Object(extra)) = (value.as_object_mut(), extra) {
        v.extend(extra);
    }

    // --- table ----------------------------------------------------------------------------
    let mut t = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        t,
        "linechat-bench: {} at {}, {} clients, {} senders, {}, {} B payload, {} s measured (+{} s warmup)",
        args.proto.name(),
        addr,
        n,
        s_count,
        mode,
        args.msg_size,
        dur,
        warmup
    );
    let _ = writeln!(t, "  {:<22} {}", "expected deliveries", expected_def);
    let _ = writeln!(t, "  {:<22} {:.2} s", "setup (connect+join)", setup_s);
    if s_count > 0 {
        let _ = writeln!(
            t,
            "  {:<22} {} ({} in measured interval, {}/s)",
            "messages sent",
            sent,
            sent_measured,
            human(sent_measured as f64 / dur)
        );
        let _ = writeln!(
            t,
            "  {:<22} {} of {} expected ({} measured, {}/s)",
            "deliveries",
            tot.distinct,
            tot.expected,
            measured,
            human(deliveries_per_s)
        );
        let _ = writeln!(
            t,
            "  {:<22} LOST {}  DUPLICATED {}  REORDERED {}",
            "integrity", tot.lost, tot.dup, tot.late
        );
        if !hist.is_empty() {
            let _ = writeln!(
                t,
                "  {:<22} p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                "one-way latency",
                fmt_us(q(0.5)),
                fmt_us(q(0.9)),
                fmt_us(q(0.99)),
                fmt_us(q(0.999)),
                fmt_us(hist.max() as f64 / 1000.0)
            );
        }
        if window.is_some() {
            let _ = writeln!(t, "  {:<22} {}", "window stalls", stalls);
        }
    }
    if let Some(pid) = args.server_pid {
        let _ = writeln!(
            t,
            "  {:<22} pid {pid}: CPU {} s ({}% of a core){}",
            "server",
            server_cpu.map_or("?".into(), |c| format!("{c:.2}")),
            server_util.map_or("?".into(), |u| format!("{:.0}", u * 100.0)),
            per_cpu_s.map_or(String::new(), |d| format!(
                ", {} deliveries per CPU-second",
                human(d)
            ))
        );
        let _ = writeln!(
            t,
            "  {:<22} peak (VmHWM) {}, RSS before {}, after join {}, end {}",
            "server memory",
            kib(peak_hwm),
            kib(before.server_mem.map(|m| m.1)),
            kib(after_join.server_mem.map(|m| m.1)),
            kib(end.server_mem.map(|m| m.1)),
        );
        if let Some(b) = rss_per_conn {
            let _ = writeln!(
                t,
                "  {:<22} {:.0} B per connection after join ({} at the end)",
                "server RSS growth",
                b,
                rss_per_conn_end.map_or("?".into(), |e| format!("{e:.0} B"))
            );
        }
    }
    let _ = writeln!(
        t,
        "  {:<22} CPU {} s ({}% of a core, {} cores), peak memory {}",
        "bench",
        bench_cpu.map_or("?".into(), |c| format!("{c:.2}")),
        bench_util.map_or("?".into(), |u| format!("{:.0}", u * 100.0)),
        cores,
        kib(bench_mem.map(|m| m.0))
    );
    for w in &warnings {
        let _ = writeln!(t, "  WARNING: {w}");
    }
    Ok(Report {
        json: args.json,
        value,
        table: t,
    })
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn fmt_us(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn kib(v: Option<u64>) -> String {
    match v {
        Some(k) if k >= 10 * 1024 => format!("{:.1} MiB", k as f64 / 1024.0),
        Some(k) => format!("{k} KiB"),
        None => "?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `data` to a receiver in two reads split at every position, the way
    /// `poll_read_process` does (unparsed tail first, then the new bytes).
    fn feed_split(kind: Kind, own: Option<usize>, data: &[u8]) -> Vec<RecvStats> {
        let mut out = Vec::new();
        for cut in 0..=data.len() {
            let sh = Shared::new(Instant::now(), 2, Some(4));
            sh.measure_start_ns.store(0, Ordering::Relaxed);
            sh.measure_end_ns.store(u64::MAX, Ordering::Relaxed);
            sh.live.store(3, Ordering::Relaxed);
            let mut r = Receiver::new(0, kind, own, Vec::new());
            let mut lat = Vec::new();
            for chunk in [&data[..cut], &data[cut..]] {
                let mut buf = std::mem::take(&mut r.partial);
                buf.extend_from_slice(chunk);
                let used = r.process(&buf, 1_000_000, &sh, &mut lat).unwrap();
                r.partial = buf[used..].to_vec();
                r.flush_counters(&sh);
            }
            assert!(r.partial.is_empty(), "cut {cut}: tail left");
            assert_eq!(lat.len() as u64, r.st.distinct, "cut {cut}");
            assert_eq!(sh.acks[0][1].load(Ordering::Relaxed), 1, "cut {cut}");
            out.push(r.st);
        }
        out
    }

    #[test]
    fn linechat_lines_split_anywhere() {
        let data = b"b2 has joined the chat.\nb0: ~B0,1,5,xxxx\r\nb1: ~B1,1,6,x\nb0: ~B0,1,5,xxxx\nb0: hello: ~B\n";
        for st in feed_split(Kind::Linechat, Some(1), data) {
            assert_eq!(st.distinct, 1);
            assert_eq!(st.dup, 1);
            assert_eq!(st.self_deliveries, 1);
            assert_eq!(st.other, 2);
        }
    }

    #[test]
    fn nats_frames_split_anywhere() {
        let data = b"PING\r\nMSG linechat.bench 1 12\r\n~B0,1,5,xxxx\r\n+OK\r\nMSG s 2 r 10\r\n~B0,2,6,xx\r\n";
        for st in feed_split(Kind::Nats, None, data) {
            assert_eq!(st.distinct, 2);
            assert_eq!(st.other, 1);
        }
    }

    #[test]
    fn redis_pushes_split_anywhere() {
        let data = b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$12\r\n~B0,1,5,xxxx\r\n\
                     *3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$9\r\n~B1,1,5,x\r\n";
        for st in feed_split(Kind::Redis, Some(1), data) {
            assert_eq!(st.distinct, 1);
            assert_eq!(st.self_deliveries, 1);
        }
    }

    #[test]
    fn loopback_only() {
        assert!(parse_loopback("127.0.0.1:4000").is_ok());
        assert!(parse_loopback("127.8.9.10:4000").is_ok());
        assert!(parse_loopback("[::1]:4000").is_ok());
        assert!(parse_loopback("localhost:4000").is_ok());
        assert!(parse_loopback("10.0.0.1:4000").is_err());
        assert!(parse_loopback("192.168.1.1:4000").is_err());
        assert!(parse_loopback("[::]:4000").is_err());
        assert!(parse_loopback("0.0.0.0:4000").is_err());
        assert!(parse_loopback("example.com:4000").is_err());
    }
}
