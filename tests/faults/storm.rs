//! A connection storm while a room chats: thousands of connections that quit, close, reset, or
//! give up at the prompt. Nothing crashes, nothing leaks (client entries, descriptors, memory),
//! and the room's conversation loses nothing.

use std::time::{Duration, Instant};

use crate::load::{storm_once, Rng, EXITS};
use crate::proc::{figure, Options, Server};
use crate::support::Client;

/// Connections per storm round, and how many are in flight at once.
const ROUND: usize = 1500;
const PARALLEL: usize = 50;

async fn storm(addr: std::net::SocketAddr, round: usize) {
    let mut rng = Rng::new(round as u64 + 1);
    let mut next = 0;
    let mut set = tokio::task::JoinSet::new();
    while next < ROUND || !set.is_empty() {
        while next < ROUND && set.len() < PARALLEL {
            let exit = EXITS[rng.below(EXITS.len() as u64) as usize];
            let nick = format!("s{round}x{next}");
            set.spawn(async move {
                // A storm connection may be reset by the server first; only a hang is a fault.
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), storm_once(addr, &nick, exit))
                        .await
                        .expect("a storm connection hung");
            });
            next += 1;
        }
        set.join_next().await.unwrap().unwrap();
    }
}

/// Descriptors settle once lingering closes (at most 1 s each) have finished.
async fn settled_fds(server: &Server, baseline: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fds = server.fds();
        if fds <= baseline || Instant::now() > deadline {
            return fds;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_storm_leaks_nothing_and_the_room_loses_nothing() {
    let server = Server::start(Options::default()).await;
    let addr = server.addr;
    let mut alice = Client::join(addr, "alice").await;
    let mut bob = Client::join(addr, "bob").await;
    alice.expect("bob has joined the chat.").await;

    // A first round warms up the allocator and the runtime's worker pools, so the second
    // round's growth, if any, is a leak and not first-use cost.
    storm(addr, 0).await;
    alice.sync().await;
    // Closing connections linger for at most 1 s after their last line.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fds_before = server.fds();
    let rss_before = server.rss_kib();

    // The room chats throughout the second round.
    let chatter = tokio::spawn(async move {
        for i in 0..500 {
            alice.send(&format!("during the storm {i}")).await;
            if i % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
        alice
    });
    let started = Instant::now();
    storm(addr, 1).await;
    let took = started.elapsed();
    let mut alice = chatter.await.unwrap();
    let mut seen = 0;
    while seen < 500 {
        let line = bob.line().await;
        if let Some(text) = line.strip_prefix("alice: during the storm ") {
            assert_eq!(
                text,
                seen.to_string(),
                "bob lost or reordered alice's lines"
            );
            seen += 1;
        }
    }
    alice.sync().await;
    let report = bob.command("/metrics").await;
    assert_eq!(figure(&report, "Active Clients:"), 2, "{report:#?}");
    let fds_after = settled_fds(&server, fds_before).await;
    let rss_after = server.rss_kib();
    eprintln!(
        "storm: {ROUND} connections ({PARALLEL} in flight) in {took:?} while 500 lines were \
         relayed; fds {fds_before} -> {fds_after}, RSS {rss_before} -> {rss_after} KiB"
    );
    assert_eq!(fds_after, fds_before, "descriptors leaked");
    // Allocator noise is a few hundred KiB; a leak of even 1 KiB per connection would show.
    assert!(
        rss_after < rss_before + 2048,
        "RSS grew from {rss_before} to {rss_after} KiB over one storm"
    );
}
