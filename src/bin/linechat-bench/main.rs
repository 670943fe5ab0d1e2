//! `linechat-bench`: a load generator for the linechat chat server, which can also drive NATS,
//! Redis pub/sub and IRC servers with the same workload so that they can be compared fairly.
//!
//! Each protocol is a module behind the `proto::Protocol` trait (register, join, frame a
//! message, recognise one); `scenario` runs the workload over whichever it is given.
//!
//! Workload: `--clients N` connections join (linechat, IRC) or subscribe (NATS, Redis). The first
//! `--senders S` of them also publish. Every message carries its sender index, a per-sender
//! sequence number and its send time (ns since one `Instant` shared by the whole process), padded
//! to `--msg-size` bytes of payload. Each receiving connection tracks the sequence numbers per
//! sender, so the report counts deliveries, LOST, DUPLICATED and REORDERED messages exactly, and
//! puts the one-way latency of every delivery sent in the measured interval into a histogram.
//!
//! Expected deliveries: every message should reach every subscribed client except its sender's
//! own client, i.e. N-1 deliveries per message for every protocol:
//! - linechat: the server relays a chat line to all other clients and never echoes it back;
//! - NATS: each client is one connection that subscribes to one subject and publishes on the
//!   same connection with `"echo":false` in CONNECT, so NATS does not send a client its own
//!   messages either (the exact analogue of linechat);
//! - Redis: a subscribed RESP2 connection cannot PUBLISH, so each sender publishes on a separate
//!   publisher connection; its own subscriber connection does receive its messages, which are
//!   discarded and reported as `self_deliveries`, not counted as deliveries. Redis thus does one
//!   extra delivery per message (N instead of N-1), about 1% more work at N = 100;
//! - IRC: every client JOINs one channel and sends PRIVMSG to it; IRC servers do not echo a
//!   PRIVMSG to its sender;
//! - mixed: even clients speak the line protocol at `--addr`, odd ones IRC at `--irc-addr`, in
//!   one linechat room (`lobby` is IRC's `#lobby`);
//! - ws-line, ws-irc: the line protocol or IRC (`text.ircv3.net`) over WebSocket to the web
//!   listener at `--addr`, one message per line, masked as browsers send them.
//!
//! `--senders 0` is the idle mode: N clients join and stay idle for `--duration`; with
//! `--server-pid` the report gives the server's RSS growth per connection.
//!
//! Only loopback addresses are accepted, client count and duration are capped, and every run
//! stops by itself.

mod churn;
mod irc;
mod line;
mod nats;
mod plan;
mod proto;
mod redis;
mod scenario;
mod stats;
mod tls;
mod track;
mod wire;
mod ws;
mod wsframe;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;

use plan::{Plan, ProtoArg};
use proto::Setup;
use stats::procfs;

/// Hard caps that keep every run bounded.
const MAX_CLIENTS: usize = 20_000;
const MAX_DURATION_S: f64 = 600.0;
const MAX_MSG_SIZE: usize = 65_536;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "linechat-bench",
    version,
    // Without this clap would show the package description, which is the server's.
    about = "Load generator for linechat, with NATS, Redis pub/sub and IRC servers for comparison: \
             N clients in one room, S of them sending; counts every delivery, loss, duplicate \
             and reordering, and measures one-way latency and the server's CPU and memory. \
             Loopback only; every run stops by itself.",
    long_about = None
)]
pub struct Args {
    /// Server address; must be loopback (127.0.0.0/8, ::1 or localhost). With --proto mixed,
    /// the line-protocol listener. Given more than once (or as a comma-separated list), with
    /// --proto linechat: the nodes of one cluster, client i on node i mod the count; the
    /// report then also gives the latency of the deliveries that crossed between nodes.
    #[arg(long = "addr", value_delimiter = ',', default_value = "127.0.0.1:4000")]
    pub addrs: Vec<String>,
    /// --proto mixed: the server's IRC listener (same server, same room as --addr).
    #[arg(long)]
    pub irc_addr: Option<String>,
    /// Connected clients (each joins / subscribes). At most 20000.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// How many of the clients also send. 0 = idle mode (join and hold, measure memory).
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// Total messages per second across all senders; 0 = as fast as the window allows.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Measured interval in seconds (after the warmup). At most 600.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Payload bytes per message (header + padding). linechat's default max line is 1024.
    #[arg(long, default_value_t = 64)]
    pub msg_size: usize,
    /// Wire protocol of the server under test.
    #[arg(long, value_enum, default_value_t = ProtoArg::Linechat)]
    pub proto: ProtoArg,
    /// PID of the server process: report its CPU time and memory. Given more than once (or
    /// as a comma-separated list), the sum over them: a cluster's nodes and its broker.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Rate 0 only: messages in flight per sender (sent but not yet delivered to every receiver).
    #[arg(long, default_value_t = 64)]
    pub window: u32,
    /// Seconds of load before the measured interval (not counted in rates or latency).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds to wait after the last send for messages still in flight; what is missing after
    /// that is lost.
    #[arg(long, default_value_t = 3.0)]
    pub drain: f64,
    /// Seconds allowed for one connection's connect + handshake.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Connections being set up at the same time.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Window mode: give up waiting for a message's deliveries after this many ms (counted as a
    /// stall; the message is still counted lost if it never arrives).
    #[arg(long, default_value_t = 1000)]
    pub stall_timeout_ms: u64,
    /// Nickname prefix for linechat and IRC clients (client i is PREFIX<i>).
    #[arg(long, default_value = "b")]
    pub nick_prefix: String,
    /// NATS subject / Redis channel.
    #[arg(long, default_value = "linechat.bench")]
    pub subject: String,
    /// linechat room / IRC channel (`lobby` is IRC's `#lobby`; line clients not in the lobby
    /// send `/join ROOM`).
    #[arg(long, default_value = "lobby")]
    pub room: String,
    /// IRC: senders send `OPER NAME PASSWORD` after registering (servers exempt operators
    /// from some flood control).
    #[arg(long, value_name = "NAME:PASSWORD")]
    pub irc_oper: Option<String>,
    /// IRC: user modes senders set on themselves after OPER, e.g. `+F` (ngIRCd: no flood
    /// throttling).
    #[arg(long, value_name = "MODES")]
    pub irc_sender_modes: Option<String>,
    /// Max seconds to wait after joining for join notices etc. to stop flowing.
    #[arg(long, default_value_t = 15.0)]
    pub settle_max: f64,
    /// Tokio worker threads (default: number of cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Connect over TLS (linechat's line+tls:// or ircs:// listeners). The server's
    /// certificate is not verified (loopback only); every connection is a full handshake.
    #[arg(long)]
    pub tls: bool,
    /// Instead of the chat workload: open connections as fast as --connect-concurrency allows
    /// for --duration seconds, each connecting (with --tls, shaking hands), reading the
    /// nickname prompt and closing; report connections per second and per server CPU-second.
    /// linechat's line protocol only.
    #[arg(long)]
    pub churn: bool,
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("linechat-bench: error: {e:#}");
        std::process::exit(2);
    }
}

fn real_main() -> Result<()> {
    let args = Args::parse();
    let plan = validate(&args)?;
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
    let report = if args.churn {
        rt.block_on(churn::run(args, plan))?
    } else {
        rt.block_on(scenario::run(args, plan))?
    };
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

/// Checks the arguments; returns the protocols and loopback addresses of the run.
fn validate(a: &Args) -> Result<Plan> {
    let addrs = a
        .addrs
        .iter()
        .map(|s| parse_loopback(s))
        .collect::<Result<Vec<_>>>()?;
    let irc_addr = a.irc_addr.as_deref().map(parse_loopback).transpose()?;
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
    let irc_oper = match &a.irc_oper {
        None => None,
        Some(s) => {
            let (name, pass) = s
                .split_once(':')
                .ok_or_else(|| anyhow!("--irc-oper must be NAME:PASSWORD"))?;
            Some((name.to_string(), pass.to_string()))
        }
    };
    let setup = Setup {
        nick_prefix: a.nick_prefix.clone(),
        room: a.room.clone(),
        subject: a.subject.clone(),
        msg_size: a.msg_size,
        irc_oper,
        irc_sender_modes: a.irc_sender_modes.clone(),
    };
    if a.churn && addrs.len() > 1 {
        bail!("--churn takes one --addr");
    }
    if a.churn && a.proto != ProtoArg::Linechat {
        bail!("--churn drives linechat's line protocol only (it waits for the nickname prompt)");
    }
    let tls = a.tls.then(tls::client_config);
    let plan = Plan::new(a.proto, &addrs, irc_addr, tls, &setup)?;
    plan.check(a.clients)?;
    for &pid in &a.server_pid {
        procfs::cpu_seconds(Some(pid))
            .with_context(|| format!("--server-pid {pid}: cannot read /proc/{pid}/stat"))?;
    }
    Ok(plan)
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn help_has_its_own_about() {
        use clap::CommandFactory;
        let about = Args::command().get_about().map(|a| a.to_string());
        assert!(about.unwrap_or_default().starts_with("Load generator"));
    }
}
