//! A slow link: clients behind a relay that delays each direction by 50 ms ± 10 ms (100 ms
//! ± 20 ms round trip), capped at 64 KiB/s. Messages keep their order, replies come back after
//! about one round trip, and nobody is cut off for being slow.
//!
//! What `/ping` cannot see here: the relay terminates TCP, so the server's kernel measures the
//! loopback hop to the relay, not the 100 ms behind it (TESTING.md discusses this).

use std::time::{Duration, Instant};

use linechat::Config;

use crate::proxy::{Faults, Path, Proxy};
use crate::support::{Client, TestServer};

#[tokio::test]
async fn a_100ms_link_keeps_order_and_replies_come_one_round_trip_later() {
    let server = TestServer::start(Config {
        rate_limit: None,
        ..Config::default()
    })
    .await;
    let way = Path {
        delay: Duration::from_millis(50),
        jitter: Duration::from_millis(10),
        rate: Some(64 * 1024),
    };
    let proxy = Proxy::start(
        server.addr,
        Faults {
            to_server: way,
            to_client: way,
        },
    )
    .await;
    let mut far = Client::connect(proxy.addr).await;
    far.register("far").await;
    let mut near = server.join("near").await;
    far.expect("near has joined the chat.").await;

    // Round trips of a command through the slow path.
    let mut rtts = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        far.command("/time").await;
        rtts.push(t0.elapsed());
    }
    let best = *rtts.iter().min().unwrap();
    let worst = *rtts.iter().max().unwrap();
    eprintln!("slow link: /time + /echo round trips {rtts:?}");
    // Two commands per round (the command and the sync echo) ride the same round trip.
    assert!(
        best >= Duration::from_millis(80),
        "faster than the link allows: {best:?}"
    );
    assert!(
        worst < Duration::from_secs(2),
        "far slower than the link: {worst:?}"
    );

    // Both directions keep order through the jitter.
    for i in 0..200 {
        near.send(&format!("to far {i}")).await;
        far.send(&format!("to near {i}")).await;
    }
    for i in 0..200 {
        far.expect(&format!("near: to far {i}")).await;
        near.expect(&format!("far: to near {i}")).await;
    }
    let ping = far.command("/ping").await;
    eprintln!("slow link: {ping:?} (the kernel's RTT of the loopback hop to the relay)");
    assert!(ping[0].starts_with("pong (round trip "), "{ping:?}");
    server.stop().await;
}
