//! A bounded soak: clients join, chat, run commands and leave, over and over, while RSS,
//! descriptors and round-trip latency are sampled. Fails on loss or on growth. Short by default
//! (CI); `scripts/faults/soak.sh` runs the long variant through the same test:
//! `SOAK_SECS=600 SOAK_CLIENTS=2000 cargo test --release --test faults soak -- --nocapture`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::load::Rng;
use crate::proc::{Options, Server};
use crate::support::Client;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Sessions that finished: nick → lines it sent.
type Ledger = Arc<Mutex<HashMap<String, usize>>>;

/// One client slot: join under a fresh nick, chat a while, leave, again, until `until`.
async fn slot(
    addr: std::net::SocketAddr,
    id: u64,
    until: Instant,
    interval: Duration,
    ledger: Ledger,
) {
    let mut rng = Rng::new(id + 7);
    let mut generation = 0;
    while Instant::now() < until {
        let nick = format!("c{id}g{generation}");
        generation += 1;
        let Ok(stream) = TcpStream::connect(addr).await else {
            continue;
        };
        let (r, mut w) = stream.into_split();
        // Read everything, always, as a real client does; stop at EOF.
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(_)) = lines.next_line().await {}
        });
        if w.write_all(format!("{nick}\n").as_bytes()).await.is_err() {
            continue;
        }
        let mut sent = 0;
        let lines = 5 + rng.below(20);
        let mut ticker = tokio::time::interval(interval);
        for i in 0..lines {
            ticker.tick().await;
            let line = match rng.below(10) {
                0 => "/who".to_owned(),
                1 => "/ping".to_owned(),
                2 => "/time".to_owned(),
                _ => {
                    sent += 1;
                    format!("{} soak line from {nick}", sent - 1)
                }
            };
            if w.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                break;
            }
            if Instant::now() >= until && i > 0 {
                break;
            }
        }
        // Leave by /quit or by closing, at random; either is announced.
        if rng.below(2) == 0 {
            let _ = w.write_all(b"/quit\n").await;
        }
        drop(w);
        let _ = reader.await;
        ledger.lock().unwrap().insert(nick, sent);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_holds_steady_and_loses_nothing() {
    let secs = env("SOAK_SECS", 12);
    let clients = env("SOAK_CLIENTS", 60);
    let interval = Duration::from_millis(env("SOAK_INTERVAL_MS", 500));
    // The witness listens without a word for the whole soak; the default 10-minute idle
    // timeout would warn it and then cut it off in a long run. It also checks each session's
    // count at that session's own leave notice, which a room above the announce limit would
    // fold into a summary.
    let server = Server::start(Options {
        args: &["--idle-timeout", "0", "--announce-limit", "0"],
        ..Options::default()
    })
    .await;
    let addr = server.addr;
    let mut witness = Client::join(addr, "witness").await;
    witness.wait = Duration::from_secs(120);
    let mut probe = Client::join(addr, "probe").await;
    witness.expect("probe has joined the chat.").await;

    let ledger: Ledger = Arc::default();
    let until = Instant::now() + Duration::from_secs(secs);
    let slots: Vec<_> = (0..clients)
        .map(|id| tokio::spawn(slot(addr, id, until, interval, ledger.clone())))
        .collect();

    // The witness counts every sender's lines in order and checks each leave against them.
    let witness_task = tokio::spawn(async move {
        let mut got: HashMap<String, usize> = HashMap::new();
        let mut left: Vec<(String, usize)> = Vec::new();
        loop {
            let line = witness.line().await;
            if line == "probe: soak over" {
                return (witness, got, left);
            }
            if let Some(rest) = line.strip_suffix(" has joined the chat.") {
                got.insert(rest.to_owned(), 0);
            } else if let Some(at) = line.find(" has left the chat") {
                let nick = line[..at].to_owned();
                let n = got.remove(&nick).unwrap_or(0);
                left.push((nick, n));
            } else if let Some((from, text)) = line.split_once(": ") {
                // Only the slots' chat is counted; server notices also contain ": ".
                let Some(n) = got.get_mut(from) else { continue };
                let seq: usize = text.split(' ').next().unwrap().parse().expect(&line);
                assert_eq!(
                    seq, *n,
                    "witness: {from}'s lines lost or reordered at {line:?}"
                );
                *n += 1;
            }
        }
    });

    // Samples every 2 s: RSS, descriptors, and an /echo round trip through the busy server.
    eprintln!("soak: {clients} client slots for {secs} s, a line every {interval:?} per client");
    eprintln!(
        "{:>6} {:>10} {:>6} {:>10}",
        "t (s)", "RSS (KiB)", "fds", "echo (ms)"
    );
    let started = Instant::now();
    let mut samples = Vec::new();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let t0 = Instant::now();
        probe.sync().await;
        let rtt = t0.elapsed().as_secs_f64() * 1e3;
        let sample = (
            started.elapsed().as_secs(),
            server.rss_kib(),
            server.fds(),
            rtt,
        );
        eprintln!(
            "{:>6} {:>10} {:>6} {:>10.2}",
            sample.0, sample.1, sample.2, sample.3
        );
        samples.push(sample);
    }
    for s in slots {
        s.await.unwrap();
    }
    probe.send("soak over").await;
    let (_witness, still, left) = witness_task.await.expect("the witness saw loss");
    assert!(
        still.is_empty(),
        "sessions never announced as left: {still:?}"
    );

    let ledger = ledger.lock().unwrap();
    let mut sent_total = 0;
    let mut delivered = 0;
    for (nick, got) in &left {
        let sent = ledger
            .get(nick)
            .copied()
            .unwrap_or_else(|| panic!("{nick} not in ledger"));
        assert_eq!(*got, sent, "{nick}: sent {sent}, witness got {got}");
        sent_total += sent;
        delivered += got;
    }
    assert_eq!(
        left.len(),
        ledger.len(),
        "a session's leave was never announced"
    );
    let first = samples.iter().take(samples.len().div_ceil(3));
    let early_rss = first.clone().map(|s| s.1).max().unwrap_or(0);
    let early_fds = first.map(|s| s.2).max().unwrap_or(0);
    let last = samples.last().copied().unwrap_or_default();
    eprintln!(
        "soak verdict: {} sessions, {sent_total} lines sent, {delivered} delivered to the \
         witness, {} lost; RSS early max {early_rss} KiB, end {} KiB; fds early max {early_fds}, \
         end {}; worst echo {:.2} ms",
        left.len(),
        sent_total - delivered,
        last.1,
        last.2,
        samples.iter().map(|s| s.3).fold(0.0, f64::max)
    );
    assert!(
        last.1 <= early_rss + early_rss / 4 + 4096,
        "RSS grew from {early_rss} to {} KiB",
        last.1
    );
    assert!(
        last.2 <= early_fds + 8,
        "descriptors grew from {early_fds} to {}",
        last.2
    );
    let _ = server;
}
