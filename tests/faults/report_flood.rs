//! `/metrics` and `/rooms` as a CPU attack: their work grows with every client and room, and
//! version 1 built them afresh for each asker (100 clients asking 15 times a second with 4 001
//! rooms and 3 000 clients held the CPU at 96 % and a bystander's p50 at 1.35 s). Now each
//! costs several lines of flood control and is rebuilt at most 10 times a second.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::proc::{Options, Server};
use crate::support::Client;

const ROOMS: usize = 1000;
const IDLERS: usize = 200;
const ATTACKERS: usize = 40;
const ATTACK_FOR: Duration = Duration::from_secs(4);
const EVERY: Duration = Duration::from_millis(60);
/// Generous: a correctness bound (the line came while the attack ran), not a speed figure.
const PROMPT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_rooms_floods_cannot_starve_the_chat() {
    let server = Server::start(Options {
        args: &["--rooms-per-minute", "0", "--max-clients", "1000"],
        ..Options::default()
    })
    .await;
    let addr = server.addr;
    let (mut alice, mut bob) = server.alice_and_bob().await;
    // A big server: many rooms with history, many people. Builders share the work, each
    // within its flood control.
    const BUILDERS: usize = 20;
    let mut builders = tokio::task::JoinSet::new();
    for b in 0..BUILDERS {
        let mut builder = Client::join(addr, &format!("builder{b}")).await;
        builders.spawn(async move {
            let mut setup = String::new();
            for i in (b..ROOMS).step_by(BUILDERS) {
                setup.push_str(&format!("/join room{i}\nfirst words in room{i}\n"));
            }
            builder.send_raw(setup.as_bytes()).await;
            builder.sync().await;
            builder
        });
    }
    let mut idlers = Vec::new();
    for i in 0..IDLERS {
        idlers.push(Client::join(addr, &format!("idler{i}")).await);
    }
    while let Some(builder) = builders.join_next().await {
        idlers.push(builder.unwrap());
    }
    bob.sync().await;

    let cpu_before = server.cpu_time();
    let started = Instant::now();
    let mut attackers = tokio::task::JoinSet::new();
    for i in 0..ATTACKERS {
        let c = Client::join(addr, &format!("asker{i}")).await;
        attackers.spawn(async move {
            let flood = "/metrics\n/rooms\n".repeat(200);
            let (mut read, mut write) = c.into_parts();
            let writer = async move {
                // Flood control holds the rest in the socket: the write may never finish.
                let _ = tokio::time::timeout(ATTACK_FOR, write.write_all(flood.as_bytes())).await;
                write
            };
            let reader = async move {
                let mut got = Vec::new();
                let mut buf = vec![0; 1 << 16];
                let until = tokio::time::Instant::now() + ATTACK_FOR;
                while let Ok(Ok(n)) = tokio::time::timeout_at(until, read.read(&mut buf)).await {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                String::from_utf8_lossy(&got)
                    .matches("=== Server Metrics ===")
                    .count()
            };
            let (_write, got) = tokio::join!(writer, reader);
            got
        });
    }
    let attack_started = Instant::now();
    let lines = (ATTACK_FOR.as_millis() / EVERY.as_millis()) as usize;
    let reader = tokio::spawn(async move {
        let mut worst = Duration::ZERO;
        let mut i = 0;
        while i < lines {
            let line = bob.line().await;
            // The lobby is big: arrivals come as summaries, which may fall in between.
            if line.ends_with(" here now).") {
                continue;
            }
            assert_eq!(line, format!("alice: line {i}"));
            worst = worst.max(attack_started.elapsed().saturating_sub(EVERY * i as u32));
            i += 1;
        }
        (bob, worst)
    });
    for i in 0..lines {
        tokio::time::sleep_until((attack_started + EVERY * i as u32).into()).await;
        alice.send(&format!("line {i}")).await;
    }
    let (mut bob, worst) = reader.await.unwrap();
    let mut answered = 0;
    while let Some(reports) = attackers.join_next().await {
        answered += reports.unwrap();
    }
    let took = started.elapsed();
    let cpu = server.cpu_time() - cpu_before;
    // Each asker's allowance: the burst (50, less the join) plus 20 lines a second, and a
    // /metrics with its /rooms costs their own two lines and the reports' extra cost.
    use linechat::proto::conn::cost;
    let per_pair = 2 + cost::METRICS + cost::ROOMS;
    let allowed =
        ATTACKERS * (50 + 20 * took.as_secs() as usize + 20) / per_pair as usize + ATTACKERS;
    eprintln!(
        "report flood: {ATTACKERS} clients × /metrics and /rooms for {ATTACK_FOR:?}, {ROOMS} rooms, \
         {} clients: {answered} /metrics answered (flood control allows {allowed}); server CPU {:.0} % of one core; bystander's \
         latest line {worst:?} after it was sent",
        IDLERS + BUILDERS + ATTACKERS + 2,
        100.0 * cpu.as_secs_f64() / took.as_secs_f64()
    );
    assert!(answered > 0, "the askers got answers");
    assert!(
        answered <= allowed,
        "{answered} /metrics answered, {allowed} allowed"
    );
    assert!(
        worst < PROMPT,
        "a line reached the bystander {worst:?} late"
    );
    let rest = bob.sync().await;
    assert!(rest.iter().all(|l| l.ends_with(" here now).")), "{rest:?}");
    drop(idlers);
}
