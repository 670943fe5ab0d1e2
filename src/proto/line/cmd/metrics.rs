//! `/metrics [nick]` — the server's figures, and a block per client (at most
//! [`MAX_CLIENT_BLOCKS`]); with a nick, that client's block alone. Every figure is measured;
//! what this platform cannot measure says "unavailable".

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::time::Instant;

use super::rooms::plural;
use super::{Command, Ctx, Flow, Spec};
use crate::context::Shared;
use crate::core::hub::{MemberInfo, PrivateError, RoomInfo};
use crate::core::lock;
use crate::core::member::queue_totals;
use crate::core::names::validate_nick;
use crate::core::stats::{Counter, WINDOW_SECS};
use crate::core::LeaveReason;
use crate::net::gate::{Gate, Refusal};
use crate::net::tls::{Certs, Failure};
use crate::ops::metrics::ServerMetrics;
use crate::proto::line::words;

/// Blocks shown by a plain `/metrics`, so 10 000 clients do not flood the caller's terminal.
pub const MAX_CLIENT_BLOCKS: usize = 20;

/// Rooms shown by `/metrics`, the fullest first, for the same reason.
pub const MAX_ROOM_LINES: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metrics {
    pub nick: Option<String>,
}

pub const SPEC: Spec = Spec {
    name: "metrics",
    args: "[nick]",
    help: "server metrics, or one client's",
    parse: |args| match args {
        "" => Some(Command::Metrics(Metrics { nick: None })),
        nick if validate_nick(nick).is_ok() => Some(Command::Metrics(Metrics {
            nick: Some(nick.to_owned()),
        })),
        _ => None,
    },
};

impl Metrics {
    pub fn run(self, ctx: &mut Ctx<'_>) -> Flow {
        let shared = ctx.shared;
        if let Some(nick) = self.nick {
            match shared.hub.find(&nick) {
                Some(member) => ctx.reply(client_block(&member, &shared.metrics).trim_end()),
                None => ctx.reply(words::private_error(&PrivateError::NoSuchNick(nick))),
            }
            return Flow::Continue;
        }
        ctx.reply(report(shared).trim_end());
        Flow::Continue
    }
}

/// The server's metrics report, as `/metrics` shows it (and `/msg linechat metrics` on IRC).
/// Built at most [`crate::context::Reports::PER_SEC`] times a second; past that, askers get
/// the last one built.
pub fn report(shared: &Shared) -> String {
    String::clone(&shared.reports.metrics.get(|| build_report(shared)))
}

fn build_report(shared: &Shared) -> String {
    let mut report = server_report(&shared.hub.members(), &shared.metrics, &shared.gate);
    room_lines(&mut report, &super::rooms::all_rooms(shared));
    if let Some(cluster) = &shared.cluster {
        let here = shared.hub.len();
        let elsewhere = cluster.people_by_node();
        let others: usize = elsewhere.iter().map(|(_, n)| n).sum();
        let mut line = format!(
            "Cluster: node {}, {} in all ({here} here",
            cluster.node(),
            plural((here + others) as u64, "person", "people"),
        );
        for (node, n) in &elsewhere {
            let _ = write!(line, ", {n} on {node}");
        }
        let _ = writeln!(
            report,
            "{line}); {} heard from; {} not relayed (queue full)",
            plural(cluster.peers() as u64, "other node", "other nodes"),
            plural(cluster.dropped.load(Relaxed), "event", "events"),
        );
    }
    let (kept, evicted) = shared.hub.history_usage();
    let _ = writeln!(
        report,
        "History: {} of {} kept; {} forgotten to stay within it",
        bytes(kept as u64),
        bytes(shared.config.history_bytes as u64),
        plural(evicted, "message", "messages")
    );
    tls_line(&mut report, shared.tls.as_deref());
    report
}

/// `TLS: off`, or the certificate served and what the handshakes came to.
fn tls_line(out: &mut String, certs: Option<&Certs>) {
    let Some(certs) = certs else {
        out.push_str("TLS: off\n");
        return;
    };
    let current = certs.current();
    let c = &certs.counters;
    let failures: Vec<String> = Failure::ALL
        .iter()
        .map(|&f| format!("{} {}", c.failed(f), f.label()))
        .collect();
    let _ = writeln!(
        out,
        "TLS: certificate {} (expires {}); {} completed; failed: {}; reloads: {} ({} failed)",
        current.subject,
        current.expires(),
        plural(c.handshakes.load(Relaxed), "handshake", "handshakes"),
        failures.join(", "),
        c.reloads.load(Relaxed),
        c.reload_failures.load(Relaxed),
    );
}

fn server_report(members: &[MemberInfo], m: &ServerMetrics, gate: &Gate) -> String {
    let mut out = String::from("=== Server Metrics ===\n");
    let _ = writeln!(out, "Total Messages: {}", m.messages.total());
    let _ = writeln!(out, "Active Clients: {}", members.len());
    out.push_str("Client Breakdown:\n");
    for member in members.iter().take(MAX_CLIENT_BLOCKS) {
        out.push_str(&client_block(member, m));
    }
    if members.len() > MAX_CLIENT_BLOCKS {
        let _ = writeln!(
            out,
            " ... and {} more clients (/metrics <nick> shows one)",
            members.len() - MAX_CLIENT_BLOCKS
        );
    }
    // The original's "Average Latency", made real: the mean of every joined client's current
    // kernel RTT estimate, sampled just now for the listed ones and periodically for the rest.
    let rtts: Vec<f64> = members
        .iter()
        .filter_map(|member| lock(&member.member.stats.rtt).last.map(|i| i.rtt_us as f64))
        .collect();
    match rtts.len() {
        0 => out.push_str("Average Latency: unavailable\n"),
        n => {
            let _ = writeln!(
                out,
                "Average Latency: {} (mean TCP round-trip time of {n} clients)",
                ms(rtts.iter().sum::<f64>() / n as f64)
            );
        }
    }
    let _ = writeln!(out, "Uptime: {}", format_duration(m.clock.uptime()));
    let _ = writeln!(
        out,
        "Messages/s (last {WINDOW_SECS} s): {:.1}",
        m.messages.recent_per_sec(&m.clock, m.clock.start())
    );
    let _ = writeln!(out, "Commands: {}", m.commands.load(Relaxed));
    let _ = writeln!(
        out,
        "Bytes: in {}, out {}",
        bytes(m.bytes_in.total()),
        bytes(m.bytes_out.total())
    );
    let _ = writeln!(
        out,
        "Deliveries: {} (chat messages queued for recipients)",
        m.messages_delivered.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "Connections: {} accepted, {} open ({} at the prompt, at most {}); refused: {} server \
         full, {} per-address limit, {} connect rate, {} prompt full",
        m.connections_accepted.load(Relaxed),
        m.connections_open.load(Relaxed),
        gate.at_prompt(),
        gate.max_prompt(),
        m.refused(Refusal::Full),
        m.refused(Refusal::PerAddress),
        m.refused(Refusal::Rate),
        m.refused(Refusal::Prompt),
    );
    let mut limits = Vec::new();
    if gate.max_per_ip() > 0 {
        limits.push(plural(
            gate.max_per_ip() as u64,
            "connection",
            "connections",
        ));
    }
    if let Some((rate, burst)) = gate.connect_rate() {
        limits.push(format!("{rate} new a second with a burst of {burst}"));
    }
    let exempt: Vec<String> = gate.exempt().iter().map(|c| c.to_string()).collect();
    let _ = writeln!(
        out,
        "Addresses: {} tracked (limits per address: {}; exempt: {})",
        gate.tracked(),
        if limits.is_empty() {
            "none".to_owned()
        } else {
            limits.join(", ")
        },
        if exempt.is_empty() {
            "none".to_owned()
        } else {
            exempt.join(", ")
        },
    );
    let _ = writeln!(
        out,
        "Disconnects: {} slow consumers, {} idle timeouts, {} registration timeouts, {} quit, \
         {} closed, {} reset, {} timed out, {} errors, {} not chat clients, {} at shutdown",
        m.disconnects(LeaveReason::SlowConsumer),
        m.disconnects(LeaveReason::IdleTimeout),
        m.disconnects(LeaveReason::RegisterTimeout),
        m.disconnects(LeaveReason::Quit),
        m.disconnects(LeaveReason::Closed),
        m.disconnects(LeaveReason::Reset),
        m.disconnects(LeaveReason::TimedOut),
        m.disconnects(LeaveReason::Error),
        m.disconnects(LeaveReason::NotChat),
        m.disconnects(LeaveReason::Shutdown),
    );
    let _ = writeln!(
        out,
        "Flood control: {} pauses",
        m.rate_limited.load(Relaxed)
    );
    let (queued, largest) = queue_totals(members.iter().map(|m| &*m.member));
    let _ = writeln!(
        out,
        "Queued output: {} (largest for one client: {})",
        bytes(queued as u64),
        bytes(largest as u64)
    );
    let _ = writeln!(
        out,
        "TCP: {} of {} segments retransmitted (every connection, closed ones included)",
        m.tcp_retransmits.load(Relaxed),
        m.tcp_segments_out.load(Relaxed)
    );
    match m.rtt() {
        Some(p) => {
            let _ = writeln!(
                out,
                "Round-trip time: p50 {}, p90 {}, p99 {}, max {} ({} samples)",
                ms(p.p50 as f64),
                ms(p.p90 as f64),
                ms(p.p99 as f64),
                ms(p.max as f64),
                p.count
            );
        }
        None => out.push_str("Round-trip time: no samples\n"),
    }
    let t = &m.transcript;
    if t.enabled.load(Relaxed) {
        let _ = writeln!(
            out,
            "Transcript: {} lines written, {} dropped (writer behind), {} lost to write errors",
            t.written.load(Relaxed),
            t.dropped.load(Relaxed),
            t.write_errors.load(Relaxed)
        );
    } else {
        out.push_str("Transcript: off\n");
    }
    match m.fanout() {
        Some(p) => {
            let _ = writeln!(
                out,
                "Fan-out latency: p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs ({} messages)",
                p.p50, p.p90, p.p99, p.p999, p.max, p.count
            );
        }
        None => out.push_str("Fan-out latency: no messages yet\n"),
    }
    out
}

/// `Rooms: 3` and a line per room, at most [`MAX_ROOM_LINES`] of them, fullest first.
/// Secret rooms are counted but not named: anyone may ask for this report.
fn room_lines(out: &mut String, rooms: &[RoomInfo]) {
    let _ = writeln!(out, "Rooms: {}", rooms.len());
    let secret = rooms.iter().filter(|r| r.modes.secret).count();
    let rooms: Vec<&RoomInfo> = rooms.iter().filter(|r| !r.modes.secret).collect();
    for room in rooms.iter().take(MAX_ROOM_LINES) {
        let _ = writeln!(
            out,
            " - {}: {}, {}",
            room.name,
            plural(room.members as u64, "member", "members"),
            plural(room.messages, "message", "messages")
        );
    }
    if rooms.len() > MAX_ROOM_LINES {
        let _ = writeln!(
            out,
            " ... and {} more rooms (/rooms lists more)",
            rooms.len() - MAX_ROOM_LINES
        );
    }
    if secret > 0 {
        let _ = writeln!(
            out,
            " ... and {}, not listed",
            plural(secret as u64, "secret room", "secret rooms")
        );
    }
}

fn client_block(member: &MemberInfo, m: &ServerMetrics) -> String {
    let client = &member.member;
    let stats = &client.stats;
    let info = m.sample_tcp(client);
    let log = lock(&stats.rtt).clone();
    let mut out = String::new();
    let _ = match client.kind.tls {
        None => writeln!(
            out,
            " - {} ({}, {}):",
            member.nick(),
            client.addr,
            client.kind.protocol
        ),
        Some(tls) => writeln!(
            out,
            " - {} ({}, {}+tls, {} {}):",
            member.nick(),
            client.addr,
            client.kind.protocol,
            tls.version,
            tls.suite
        ),
    };
    let _ = writeln!(out, "    Messages: {}", stats.messages.load(Relaxed));
    let connected = m.clock.now().saturating_duration_since(stats.connected_at);
    let _ = writeln!(out, "    Connected: {}", format_duration(connected));
    let _ = writeln!(
        out,
        "    Throughput: in {}; out {}",
        throughput(&stats.lines_in, &stats.bytes_in, stats.connected_at, m),
        throughput(&stats.lines_out, &stats.bytes_out, stats.connected_at, m),
    );
    let dropped = stats.dropped.load(Relaxed);
    match info.and_then(|i| Some((i.total_retrans, i.segs_out?))) {
        Some((retrans, segs)) => {
            let pct = if segs == 0 {
                0.0
            } else {
                100.0 * f64::from(retrans) / f64::from(segs)
            };
            let _ = writeln!(
                out,
                "    Packet Loss: {pct:.2}% ({retrans} of {segs} TCP segments retransmitted; \
                 {dropped} messages dropped)"
            );
        }
        None => {
            let _ = writeln!(
                out,
                "    Packet Loss: unavailable (no TCP_INFO here); {dropped} messages dropped"
            );
        }
    }
    match info {
        Some(now) => {
            let recent: Vec<String> = log
                .recent
                .iter()
                .map(|&us| format!("{:.2}", us as f64 / 1000.0))
                .collect();
            let _ = writeln!(
                out,
                "    Latency: {} round trip (±{}; min {}, avg {} over {} samples; recent: {} ms)",
                ms(now.rtt_us as f64),
                ms(now.rttvar_us as f64),
                ms(log.min_us.unwrap_or(now.rtt_us) as f64),
                ms(log.avg_us().unwrap_or(now.rtt_us as f64)),
                log.count,
                recent.join(" ")
            );
        }
        None => out.push_str("    Latency: unavailable (no TCP_INFO here)\n"),
    }
    out
}

/// `2.0 msg/s, 80.0 B/s (last 10 s: 0.5 msg/s, 20.0 B/s)` for one direction.
pub(super) fn throughput(
    lines: &Counter,
    bytes_: &Counter,
    since: Instant,
    m: &ServerMetrics,
) -> String {
    let life = m
        .clock
        .now()
        .saturating_duration_since(since)
        .as_secs_f64()
        .max(1e-3);
    format!(
        "{:.1} msg/s, {} (last {WINDOW_SECS} s: {:.1} msg/s, {})",
        lines.total() as f64 / life,
        rate(bytes_.total() as f64 / life),
        lines.recent_per_sec(&m.clock, since),
        rate(bytes_.recent_per_sec(&m.clock, since)),
    )
}

/// Microseconds shown as milliseconds.
pub(super) fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}

pub(super) fn rate(bytes_per_sec: f64) -> String {
    match bytes_per_sec {
        r if r >= 1e6 => format!("{:.1} MB/s", r / 1e6),
        r if r >= 1e4 => format!("{:.1} kB/s", r / 1e3),
        r => format!("{r:.1} B/s"),
    }
}

pub(super) fn bytes(n: u64) -> String {
    match n {
        n if n >= 10_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        n if n >= 10_000 => format!("{:.1} kB", n as f64 / 1e3),
        n => format!("{n} B"),
    }
}

/// `5 sec`, `2 min 5 sec`, `1 h 2 min 5 sec`, as the original showed connection time.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, sec) => format!("{sec} sec"),
        (0, min, sec) => format!("{min} min {sec} sec"),
        (h, min, sec) => format!("{h} h {min} min {sec} sec"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_units() {
        assert_eq!(format_duration(Duration::from_secs(5)), "5 sec");
        assert_eq!(format_duration(Duration::from_secs(125)), "2 min 5 sec");
        assert_eq!(
            format_duration(Duration::from_secs(3725)),
            "1 h 2 min 5 sec"
        );
        assert_eq!(rate(12.0), "12.0 B/s");
        assert_eq!(rate(25_000.0), "25.0 kB/s");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(ms(1234.0), "1.23 ms");
    }
}
