//! The HTTP monitoring endpoint: a Prometheus scrape during a chat, `promtool check metrics` on
//! it, and `/healthz` through shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;

use linechat::server::Extras;
use linechat::Config;

use crate::support::{http_get, http_request, Client, TestServer};

/// One scrape: every sample by its series (`name{labels}`), and the raw text.
struct Scrape {
    samples: HashMap<String, f64>,
    text: String,
}

impl Scrape {
    async fn take(addr: SocketAddr) -> Scrape {
        let (status, text) = http_get(addr, "/metrics").await;
        assert_eq!(status, 200, "{text}");
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect(line);
                (series.to_owned(), value.parse::<f64>().expect(line))
            })
            .collect();
        Scrape { samples, text }
    }

    fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("{series} missing from the scrape:\n{}", self.text))
    }
}

#[tokio::test]
async fn a_scrape_counts_what_the_chat_did() {
    let server = TestServer::with_metrics(
        Config {
            // Tight enough that ten lines in one write must wait for tokens.
            rate_limit: Some(100.0),
            rate_burst: 2,
            ..Config::default()
        },
        Extras::default(),
    )
    .await;
    let metrics = server.metrics_addr.unwrap();
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    let mut carol = server.join("carol").await;
    let mut dave = server.join("dave").await;
    alice.skip_until("dave has joined the chat.").await;
    bob.skip_until("dave has joined the chat.").await;
    carol.skip_until("dave has joined the chat.").await;

    let burst: String = (0..10).map(|i| format!("m{i}\n")).collect();
    alice.send_raw(burst.as_bytes()).await;
    for other in [&mut bob, &mut carol, &mut dave] {
        for i in 0..10 {
            other.expect(&format!("alice: m{i}")).await;
        }
    }
    bob.send("hi").await;
    alice.expect("bob: hi").await;

    carol.send("/quit").await;
    carol.expect_closed().await;
    alice.expect("carol has left the chat.").await;
    bob.close_write().await;
    alice
        .expect("bob has left the chat (connection closed).")
        .await;
    dave.reset();
    alice
        .expect("dave has left the chat (connection reset).")
        .await;

    let report = alice.command("/metrics").await;
    let scrape = Scrape::take(metrics).await;

    assert_eq!(scrape.get("linechat_connections_accepted_total"), 4.0);
    assert_eq!(scrape.get("linechat_clients"), 1.0);
    assert_eq!(scrape.get("linechat_messages_received_total"), 11.0);
    // Ten messages to three others, one to three others.
    assert_eq!(scrape.get("linechat_messages_delivered_total"), 33.0);
    for (reason, n) in [
        ("quit", 1.0),
        ("closed", 1.0),
        ("reset", 1.0),
        ("error", 0.0),
        ("idle_timeout", 0.0),
        ("slow_consumer", 0.0),
        ("shutdown", 0.0),
    ] {
        let series = format!("linechat_disconnects_total{{reason=\"{reason}\"}}");
        assert_eq!(scrape.get(&series), n, "{series}");
    }
    assert_eq!(
        scrape.get("linechat_connections_refused_total{reason=\"server_full\"}"),
        0.0
    );
    assert!(scrape.get("linechat_rate_limited_reads_total") >= 1.0);
    assert!(scrape.get("linechat_received_bytes_total") >= burst.len() as f64);
    assert!(scrape.get("linechat_sent_bytes_total") > 0.0);
    assert_eq!(scrape.get("linechat_fanout_latency_seconds_count"), 11.0);
    assert_eq!(
        scrape.get("linechat_fanout_latency_seconds_bucket{le=\"+Inf\"}"),
        11.0
    );
    assert!(scrape.get("linechat_fanout_latency_seconds_sum") > 0.0);
    assert_eq!(scrape.get("linechat_queued_bytes"), 0.0);
    if cfg!(target_os = "linux") {
        assert!(scrape.get("linechat_tcp_rtt_seconds_count") >= 4.0);
        assert!(scrape.get("linechat_tcp_sent_segments_total") > 0.0);
        // Present; loopback rarely retransmits, but a tail-loss probe now and then counts.
        scrape.get("linechat_tcp_retransmitted_segments_total");
    }
    let build = format!(
        "linechat_build_info{{version=\"{}\",commit=\"{}\"}}",
        env!("CARGO_PKG_VERSION"),
        linechat::GIT_COMMIT
    );
    assert_eq!(scrape.get(&build), 1.0);
    assert_eq!(scrape.get("linechat_transcript_dropped_lines_total"), 0.0);

    // The chat report reads the very same counters.
    let report = report.join("\n");
    assert!(report.contains("Total Messages: 11\n"), "{report}");
    assert!(report.contains("Deliveries: 33 "), "{report}");
    assert!(
        report.contains(
            "Disconnects: 0 slow consumers, 0 idle timeouts, 0 registration timeouts, 1 quit, \
             1 closed, 1 reset, 0 timed out, 0 errors, 0 not chat clients, 0 at shutdown"
        ),
        "{report}"
    );
    assert!(report.contains("Transcript: off"), "{report}");

    // Every family is documented and typed, and no series carries a per-client label.
    let help = scrape
        .text
        .lines()
        .filter(|l| l.starts_with("# HELP "))
        .count();
    let types = scrape
        .text
        .lines()
        .filter(|l| l.starts_with("# TYPE "))
        .count();
    assert_eq!(help, types, "{}", scrape.text);
    assert!(help >= 20, "{}", scrape.text);
    for series in scrape.samples.keys() {
        assert!(series.starts_with("linechat_"), "{series}");
        assert!(!series.contains("alice") && !series.contains("127.0.0.1"));
    }

    crate::support::promtool_check(&scrape.text).await;
    server.stop().await;
}

#[tokio::test]
async fn other_paths_and_methods_are_refused() {
    let server = TestServer::with_metrics(Config::default(), Extras::default()).await;
    let metrics = server.metrics_addr.unwrap();
    assert_eq!(http_get(metrics, "/").await.0, 404);
    assert_eq!(http_get(metrics, "/metrics/x").await.0, 404);
    assert_eq!(http_request(metrics, "POST", "/metrics").await.0, 405);
    let (status, body) = http_get(metrics, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    server.stop().await;
}

#[tokio::test]
async fn healthz_says_503_while_shutting_down() {
    let mut server = TestServer::with_metrics(
        Config {
            rate_limit: None,
            queue_bytes: 64 << 20,
            // Long enough that only the test, never the deadline, ends the shutdown.
            shutdown_grace: std::time::Duration::from_secs(120),
            ..Config::default()
        },
        Extras::default(),
    )
    .await;
    let metrics = server.metrics_addr.unwrap();
    assert_eq!(http_get(metrics, "/healthz").await, (200, "ok\n".into()));

    // A client that stops reading holds output in its queue; shutdown then waits to flush it,
    // which keeps the server in its shutting-down state for as long as the test needs.
    let mut sleeper = Client::connect_small_buffer(server.addr).await;
    sleeper.register("sleeper").await;
    let mut talker = server.join("talker").await;
    let line = format!("{}\n", "x".repeat(1000));
    let batch = line.repeat(64);
    let mut queued = 0.0;
    for _ in 0..256 {
        talker.send_raw(batch.as_bytes()).await;
        talker.sync().await;
        queued = Scrape::take(metrics).await.get("linechat_queued_bytes");
        if queued > 0.0 {
            break;
        }
    }
    assert!(
        queued > 0.0,
        "16 MB did not fill the sleeper's socket buffers"
    );

    server.begin_stop();
    assert_eq!(talker.expect_closed().await, ["Server is shutting down."]);
    assert_eq!(
        http_get(metrics, "/healthz").await,
        (503, "shutting down\n".into())
    );
    // Scrapes still work while the server drains.
    let scrape = Scrape::take(metrics).await;
    assert!(scrape.get("linechat_connections") >= 1.0);

    sleeper.reset();
    server.stop().await;
    assert!(
        tokio::net::TcpStream::connect(metrics).await.is_err(),
        "the endpoint closes with the server"
    );
}

/// Refusals are counted by reason in the exposition, and the per-address table's size is a
/// gauge; `promtool` accepts the families.
#[tokio::test]
async fn refusals_are_counted_by_reason_and_addresses_tracked() {
    let server = TestServer::with_metrics(
        Config {
            max_per_ip: 1,
            connect_rate: None,
            ip_exempt: Vec::new(),
            ..Config::default()
        },
        Extras::default(),
    )
    .await;
    let metrics = server.metrics_addr.unwrap();
    let _alice = server.join("alice").await;
    for _ in 0..3 {
        Client::connect(server.addr).await.expect_closed().await;
    }
    let scrape = Scrape::take(metrics).await;
    for (reason, n) in [
        ("server_full", 0.0),
        ("per_address", 3.0),
        ("connect_rate", 0.0),
        ("prompt_full", 0.0),
    ] {
        let series = format!("linechat_connections_refused_total{{reason=\"{reason}\"}}");
        assert_eq!(scrape.get(&series), n, "{series}");
    }
    assert_eq!(scrape.get("linechat_tracked_addresses"), 1.0);
    assert_eq!(scrape.get("linechat_connections_accepted_total"), 4.0);
    server.stop().await;
}

/// Item 7 of issue 10: idle connections to the metrics port, reopened as they close, must not
/// keep `/healthz` from answering. Before the fix, 32 such connections failed every check; with
/// eviction but only 32 slots, a storm of reconnects evicted some checks before they were read.
#[tokio::test]
async fn idle_connections_cannot_blind_the_health_check() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    let server = TestServer::with_metrics(Config::default(), Extras::default()).await;
    let metrics = server.metrics_addr.unwrap();
    // 384 idle connections (1.5 times the endpoint's 256 slots), each reopened as soon as the
    // server closes it, so every new connection makes the server evict another.
    let stop = Arc::new(AtomicBool::new(false));
    let reopened = Arc::new(AtomicU64::new(0));
    let attackers: Vec<_> = (0..384)
        .map(|_| {
            let (stop, reopened) = (stop.clone(), reopened.clone());
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                while !stop.load(Relaxed) {
                    let Ok(mut idle) = tokio::net::TcpStream::connect(metrics).await else {
                        continue;
                    };
                    reopened.fetch_add(1, Relaxed);
                    let mut buf = [0u8; 64];
                    let _ =
                        tokio::time::timeout(Duration::from_millis(500), idle.read(&mut buf)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut worst = Duration::ZERO;
    for _ in 0..54 {
        let started = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(2), http_get(metrics, "/healthz"))
            .await
            .expect("/healthz answered within 2 s");
        assert_eq!(answer, (200, "ok\n".into()));
        worst = worst.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Relaxed);
    for a in attackers {
        let _ = a.await;
    }
    eprintln!(
        "54 of 54 /healthz answered, slowest {worst:?}, {} idle connections opened",
        reopened.load(Relaxed)
    );
    server.stop().await;
}
