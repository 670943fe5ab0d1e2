//! `/throughput` — the caller's own data rates in both directions, over the connection's life
//! and the last 10 s.

use std::sync::atomic::Ordering::Relaxed;

use super::metrics::{bytes, throughput};
use super::{no_args, Command, Ctx, Flow, Spec};

pub const SPEC: Spec = Spec {
    name: "throughput",
    args: "",
    help: "your connection's data rates",
    parse: |args| no_args(args, Command::Throughput),
};

pub fn run(ctx: &mut Ctx<'_>) -> Flow {
    let m = &ctx.shared.metrics;
    let stats = &ctx.member.stats;
    let connected = m.clock.now().saturating_duration_since(stats.connected_at);
    ctx.reply(format_args!(
        "=== Throughput for {} (connected {}) ===\n\
         From you: {} lines, {}: {}\n\
         To you: {} messages, {}: {}\n\
         Queued for you now: {} B",
        ctx.nick,
        super::format_duration(connected),
        stats.lines_in.total(),
        bytes(stats.bytes_in.total()),
        throughput(&stats.lines_in, &stats.bytes_in, stats.connected_at, m),
        stats.lines_out.total(),
        bytes(stats.bytes_out.total()),
        throughput(&stats.lines_out, &stats.bytes_out, stats.connected_at, m),
        stats.queued.load(Relaxed),
    ));
    Flow::Continue
}
