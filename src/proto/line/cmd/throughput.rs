//! `/throughput` — the caller's own data rates in both directions, over the connection's life
//! and the last 10 s.

use std::sync::atomic::Ordering::Relaxed;

use super::metrics::{bytes, throughput};
use super::{no_args, Command, Ctx, Flow, Spec};
use crate::context::Shared;
use crate::core::Member;

pub const SPEC: Spec = Spec {
    name: "throughput",
    args: "",
    help: "your connection's data rates",
    parse: |args| no_args(args, Command::Throughput),
};

pub fn run(ctx: &mut Ctx<'_>) -> Flow {
    ctx.reply(report(ctx.shared, ctx.member, ctx.nick));
    Flow::Continue
}

/// `member`'s own data rates, as `/throughput` shows them.
pub fn report(shared: &Shared, member: &Member, nick: &str) -> String {
    let m = &shared.metrics;
    let stats = &member.stats;
    let connected = m.clock.now().saturating_duration_since(stats.connected_at);
    format!(
        "=== Throughput for {} (connected {}) ===\n\
         From you: {} lines, {}: {}\n\
         To you: {} messages, {}: {}\n\
         Queued for you now: {} B",
        nick,
        super::format_duration(connected),
        stats.lines_in.total(),
        bytes(stats.bytes_in.total()),
        throughput(&stats.lines_in, &stats.bytes_in, stats.connected_at, m),
        stats.lines_out.total(),
        bytes(stats.bytes_out.total()),
        throughput(&stats.lines_out, &stats.bytes_out, stats.connected_at, m),
        stats.queued.load(Relaxed),
    )
}
