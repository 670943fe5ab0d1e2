//! Peers that vanish without a FIN or RST are found and removed within the configured bound,
//! their leave is announced, and their queue goes with them.

use std::time::{Duration, Instant};

use linechat::Config;

use crate::lab::{self, Lab};
use crate::proxy::{Faults, Proxy};
use crate::support::{Client, TestServer};

/// Slack on top of each bound for a loaded 2-core CI machine and the kernel's timer rounding.
const SLACK: Duration = Duration::from_secs(3);

async fn join_across(lab: &Lab, port: u16, nick: &str) -> (Client, u16) {
    let stream = lab.connect_across(port);
    let client_port = stream.local_addr().unwrap().port();
    let mut c = Client::from_std(stream);
    c.register(nick).await;
    (c, client_port)
}

/// Waits for `notice` and returns how long it took from `since`.
async fn wait_for(observer: &mut Client, notice: &str, since: Instant) -> Duration {
    observer.wait = Duration::from_secs(60);
    observer.skip_until(notice).await;
    since.elapsed()
}

/// A server in `lab` with an observer on its loopback and a victim `idle` across the veth.
async fn observed_victim(lab: &Lab, config: Config) -> (TestServer, Client, Client, u16) {
    let server = TestServer::with_listener(lab.listen(), config).await;
    let port = server.addr.port();
    let mut observer = Client::from_std(lab.connect_local(port));
    observer.register("observer").await;
    let (victim, victim_port) = join_across(lab, port, "idle").await;
    observer.expect("idle has joined the chat.").await;
    (server, observer, victim, victim_port)
}

/// The idle victim says its last words, vanishes, and must be announced gone within `bound`.
async fn vanish_idle(
    lab: &Lab,
    observer: &mut Client,
    victim: &mut Client,
    victim_port: u16,
    bound: Duration,
) {
    // A chat line gets no echo, and its segment acknowledges the welcome: once the observer
    // has it, the server has nothing unacknowledged for the victim, so only keepalive (not
    // retransmission) can find it gone.
    victim.send("last words").await;
    observer.expect("idle: last words").await;

    lab.black_hole(victim_port);
    let vanished = Instant::now();
    let took = wait_for(
        observer,
        "idle has left the chat (connection timed out).",
        vanished,
    )
    .await;
    eprintln!("idle vanished peer removed after {took:?} (bound {bound:?})");
    assert!(took <= bound, "took {took:?}, bound {bound:?}");
}

#[tokio::test]
async fn a_vanished_idle_peer_is_found_by_keepalive() {
    if !lab::available("a_vanished_idle_peer_is_found_by_keepalive") {
        return;
    }
    let lab = Lab::new();
    let keepalive = Duration::from_secs(2);
    let config = Config {
        keepalive: Some(keepalive),
        // Nothing is ever sent to the victim, so only keepalive can notice.
        write_timeout: None,
        ..Config::default()
    };
    let (server, mut observer, mut victim, victim_port) = observed_victim(&lab, config).await;
    // Probing starts after `keepalive` of silence; three probes a second apart then fail.
    let bound = keepalive + Duration::from_secs(3) + SLACK;
    vanish_idle(&lab, &mut observer, &mut victim, victim_port, bound).await;
    assert_eq!(
        observer.command("/metrics idle").await,
        ["Error: nobody called idle is connected."]
    );
    server.stop().await;
}

/// With keepalive and the write timeout equal (the defaults: 30 s each), Linux let
/// `TCP_USER_TIMEOUT` govern keepalive: the first unanswered probe after 30 s of silence ended
/// the connection, so 5 s of loss at the 27-32 s mark reset a healthy idle client at 34.4 s.
/// Here the same ratio at 2 s: the server's packets are lost from 1 s to 3.5 s after the
/// victim's last word, so the first two probes (at 2 s and 3 s) go unanswered; the client must
/// survive, and stay reachable. Then the path goes dead for good, and keepalive must still
/// remove it within its documented bound.
#[tokio::test]
async fn a_healthy_idle_peer_survives_lost_keepalive_probes() {
    if !lab::available("a_healthy_idle_peer_survives_lost_keepalive_probes") {
        return;
    }
    let lab = Lab::new();
    let keepalive = Duration::from_secs(2);
    let config = Config {
        keepalive: Some(keepalive),
        write_timeout: Some(keepalive),
        ..Config::default()
    };
    let (server, mut observer, mut victim, victim_port) = observed_victim(&lab, config).await;
    // After this nothing passes either way: the connection is idle, and keepalive probes it
    // 2 s, 3 s, 4 s… after this moment.
    victim.send("quiet now").await;
    observer.expect("idle: quiet now").await;
    let quiet = Instant::now();

    tokio::time::sleep(Duration::from_secs(1)).await;
    lab.drop_server_packets(victim_port);
    tokio::time::sleep_until((quiet + Duration::from_millis(3500)).into()).await;
    lab.heal();
    eprintln!(
        "server's packets to the idle client dropped from 1 s to {:?} of silence",
        quiet.elapsed()
    );
    // Past where the old settings cut it off (3 s) and where a dead peer would be gone (6 s).
    tokio::time::sleep_until((quiet + Duration::from_secs(8)).into()).await;
    assert_eq!(
        observer.sync().await,
        Vec::<String>::new(),
        "the idle client was dropped"
    );
    victim.send("still here").await;
    observer.expect("idle: still here").await;
    victim.sync().await;

    // A real vanishing is still found: within idle + 4 probe intervals (the user timeout,
    // linechat::net::sockopt::user_timeout).
    let bound = keepalive + Duration::from_secs(4) + SLACK;
    vanish_idle(&lab, &mut observer, &mut victim, victim_port, bound).await;
    server.stop().await;
}

#[tokio::test]
async fn a_vanished_peer_with_output_pending_is_dropped_by_the_user_timeout() {
    if !lab::available("a_vanished_peer_with_output_pending_is_dropped_by_the_user_timeout") {
        return;
    }
    let lab = Lab::new();
    let write_timeout = Duration::from_secs(2);
    let config = Config {
        // Keepalive off: the unacknowledged chat lines alone must end the connection.
        keepalive: None,
        write_timeout: Some(write_timeout),
        rate_limit: None,
        ..Config::default()
    };
    let server = TestServer::with_listener(lab.listen(), config).await;
    let port = server.addr.port();
    let mut observer = Client::from_std(lab.connect_local(port));
    observer.register("observer").await;
    let (_victim, victim_port) = join_across(&lab, port, "busy").await;
    observer.expect("busy has joined the chat.").await;

    lab.black_hole(victim_port);
    let vanished = Instant::now();
    for i in 0..20 {
        observer.send(&format!("are you there? {i}")).await;
    }
    let took = wait_for(
        &mut observer,
        "busy has left the chat (connection timed out).",
        vanished,
    )
    .await;
    let bound = write_timeout + SLACK;
    eprintln!("busy vanished peer removed after {took:?} (bound {bound:?})");
    assert!(took <= bound, "took {took:?}, bound {bound:?}");
    let report = observer.command("/metrics").await;
    assert!(
        report.contains(&"Active Clients: 1".to_owned()),
        "{report:#?}"
    );
    server.stop().await;
}

/// Without root: a relay that stops reading leaves the server's send buffer full and the
/// writer stuck; the write deadline ends that session.
#[tokio::test]
async fn a_writer_stuck_on_a_silent_peer_gives_up_after_the_write_timeout() {
    let server = TestServer::start(Config {
        keepalive: None,
        write_timeout: Some(Duration::from_secs(1)),
        rate_limit: None,
        // Large enough that the queue never overflows: the deadline, not the slow-consumer
        // rule, must be what ends the session.
        queue_bytes: 256 << 20,
        ..Config::default()
    })
    .await;
    let proxy = Proxy::start(server.addr, Faults::default()).await;
    let mut flooder = server.join("flooder").await;
    let mut victim = Client::connect(proxy.addr).await;
    victim.register("silent").await;
    flooder.expect("silent has joined the chat.").await;

    proxy.black_hole();
    // Loopback buffers autotune to a few MB on each side of the relay; 24 MB fills them.
    let line = format!("{}\n", "x".repeat(1000));
    let batch = line.repeat(64);
    for _ in 0..384 {
        flooder.send_raw(batch.as_bytes()).await;
    }
    let started = Instant::now();
    let took = wait_for(
        &mut flooder,
        "silent has left the chat (connection timed out).",
        started,
    )
    .await;
    eprintln!("silent peer removed {took:?} after the flood");
    // The write timeout is 1 s; the rest is the relay's buffers filling. Without the writer's
    // deadline the kernel would keep retransmitting for ~15 min (tcp_retries2).
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let report = flooder.command("/metrics").await;
    assert!(
        report.contains(&"Active Clients: 1".to_owned()),
        "{report:#?}"
    );
    drop(victim);
    server.stop().await;
}
