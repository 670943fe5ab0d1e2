//! The fan-out path alone: one chat line handed to 10, 100 and 1 000 queues through the hub,
//! without the network or any socket (members own a queue, nothing else), so changes to the
//! hub, rooms, rendering or queues can be judged on their own.
//!
//! `cargo bench --bench fanout`. Queues are drained between measured batches (outside the
//! timing), as writers would, so no recipient ever becomes a slow consumer.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use linechat::core::hub::{Arrival, Hub, Settings, Whither};
use linechat::core::member::{Kind as MemberKind, Member};
use linechat::core::stats::ClientStats;
use linechat::core::Kind;
use linechat::proto::FORMATS;

/// Messages between drains: well under what the default queue bound holds.
const DRAIN_EVERY: u64 = 256;

struct Room {
    hub: Hub,
    members: Vec<Arc<Member>>,
}

/// A room of `n` members with no sockets: the hub needs none. `format(i)` is member i's
/// format slot.
fn room(n: usize, format: impl Fn(usize) -> usize) -> Room {
    let settings = Settings {
        scrollback: 0,
        retain: 1000,
        budget: 128 * 1024,
        announce_limit: 0,
        history_bytes: 64 << 20,
        rooms_per_minute: 0,
    };
    let hub = Hub::new(settings, &FORMATS);
    let addr = "127.0.0.1:1".parse().unwrap();
    let kind = MemberKind {
        protocol: "bench",
        tls: None,
    };
    let mut members = Vec::new();
    for i in 0..n {
        let stats = ClientStats::new(tokio::time::Instant::now());
        let member = Member::new(i as u64, addr, kind, format(i), stats, 256 * 1024, None);
        hub.register(&member, Some(&format!("c{i}")), None, "")
            .unwrap();
        hub.enter(member.id, "lobby", Arrival::Entered, |_| {})
            .unwrap();
        members.push(member);
    }
    let room = Room { hub, members };
    drain(&room.members);
    room
}

/// Empties every queue as its writer would, without writing anything.
fn drain(members: &[Arc<Member>]) {
    let mut cx = Context::from_waker(Waker::noop());
    let mut batch = VecDeque::new();
    for member in members {
        let outbox = member.outbox();
        let mut take = std::pin::pin!(std::future::poll_fn(|cx| outbox.poll_take(&mut batch, cx)));
        if let Poll::Ready(true) = take.as_mut().poll(&mut cx) {
            let cost = batch.iter().map(linechat::core::outbox::queued_cost).sum();
            outbox.written(cost, &member.stats.queued);
            batch.clear();
        }
    }
}

/// Says one 60-byte line in `room` per iteration, draining every [`DRAIN_EVERY`] outside the
/// timing.
fn say_repeatedly(room: &Room, text: &str, iters: u64) -> Duration {
    let mut measured = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let batch = DRAIN_EVERY.min(iters - done);
        let start = Instant::now();
        for _ in 0..batch {
            let said = Kind::Message(text.into());
            let _ = room.hub.say(0, Whither::Current, said);
        }
        measured += start.elapsed();
        drain(&room.members);
        done += batch;
    }
    measured
}

/// `fanout/N`: a room of N netcat members. `mixed/N`: the same room with every other member
/// on IRC with message tags, so each line is rendered twice (once per format) instead of
/// once; per recipient it should cost about the same, which is what rendering once per
/// format, not once per recipient, buys.
fn fanout(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let text = "x".repeat(60);
    let line = |_| linechat::proto::LINE;
    let mixed = |i: usize| {
        if i % 2 == 0 {
            linechat::proto::LINE
        } else {
            linechat::proto::IRC_TAGGED
        }
    };
    for (name, sizes) in [
        ("fanout", &[10usize, 100, 1000][..]),
        ("mixed", &[100, 1000][..]),
    ] {
        let mut group = c.benchmark_group(name);
        for &n in sizes {
            let room = runtime.block_on(async {
                if name == "mixed" {
                    room(n, mixed)
                } else {
                    room(n, line)
                }
            });
            group.throughput(Throughput::Elements((n - 1) as u64));
            group.bench_with_input(BenchmarkId::from_parameter(n), &room, |b, room| {
                b.iter_custom(|iters| say_repeatedly(room, &text, iters))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, fanout);
criterion_main!(benches);
