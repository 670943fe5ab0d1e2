//! The fan-out path alone: one chat line handed to 10, 100 and 1 000 queues through the hub,
//! without the network, so changes to the hub, rooms or queues can be judged on their own.
//!
//! `cargo bench --bench fanout`. Queues are drained between measured batches (outside the
//! timing), as writers would, so no recipient ever becomes a slow consumer.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use linechat::hub::{Client, Hub};
use linechat::metrics::ClientStats;
use tokio::net::{TcpListener, TcpStream};

/// Messages between drains: well under what the default queue bound holds.
const DRAIN_EVERY: u64 = 256;

struct Room {
    hub: Hub,
    clients: Vec<Arc<Client>>,
    // Keeps the client ends of the sockets open.
    _peers: Vec<TcpStream>,
}

async fn room(n: usize) -> Room {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hub = Hub::new().with_announce_limit(0);
    let (mut clients, mut peers) = (Vec::new(), Vec::new());
    for i in 0..n {
        let peer = TcpStream::connect(addr).await.unwrap();
        let (socket, at) = listener.accept().await.unwrap();
        let stats = ClientStats::new(tokio::time::Instant::now());
        let client = Client::new(i as u64, at, Arc::new(socket), stats, 256 * 1024);
        hub.join(&client, Some(&format!("c{i}"))).unwrap();
        clients.push(client);
        peers.push(peer);
    }
    let room = Room {
        hub,
        clients,
        _peers: peers,
    };
    drain(&room.clients);
    room
}

/// Empties every queue as its writer would, without writing anything.
fn drain(clients: &[Arc<Client>]) {
    let mut cx = Context::from_waker(Waker::noop());
    let mut batch = VecDeque::new();
    for client in clients {
        let outbox = client.outbox();
        let mut take = std::pin::pin!(std::future::poll_fn(|cx| outbox.poll_take(&mut batch, cx)));
        if let Poll::Ready(true) = take.as_mut().poll(&mut cx) {
            let cost = batch.iter().map(linechat::outbox::queued_cost).sum();
            outbox.written(cost, &client.stats.queued);
            batch.clear();
        }
    }
}

fn fanout(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("fanout");
    for n in [10usize, 100, 1000] {
        let room = runtime.block_on(room(n));
        let msg = Bytes::from(format!("c0: {}\n", "x".repeat(60)));
        group.throughput(Throughput::Elements((n - 1) as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &room, |b, room| {
            b.iter_custom(|iters| {
                let mut measured = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let batch = DRAIN_EVERY.min(iters - done);
                    let start = Instant::now();
                    for _ in 0..batch {
                        room.hub.broadcast(0, &msg);
                    }
                    measured += start.elapsed();
                    drain(&room.clients);
                    done += batch;
                }
                measured
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
