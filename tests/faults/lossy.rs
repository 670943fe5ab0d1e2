//! A lossy link: clients behind a veth that drops 7 % of packets each way. Every message still
//! arrives once and in order, `/metrics` shows the loss for those clients (and none for the
//! clients on the clean path), and nobody waits for anyone.

use std::time::{Duration, Instant};

use linechat::Config;

use crate::lab::{self, Lab};
use crate::support::{Client, TestServer};

const LOSS_PERCENT: u32 = 7;
const LOSSY: usize = 4;
const CLEAN: usize = 2;
const MESSAGES: usize = 150;
/// Each message nearly fills a 1500-byte MTU (the defaults allow 1024 bytes), so the server's
/// output is many full segments and the measured loss rests on hundreds of samples.
const PAD: usize = 1000;

#[tokio::test]
async fn every_message_arrives_once_in_order_and_metrics_see_the_loss() {
    if !lab::available("every_message_arrives_once_in_order_and_metrics_see_the_loss") {
        return;
    }
    let lab = Lab::new();
    let server = TestServer::with_listener(
        lab.listen(),
        Config {
            rate_limit: None,
            ..Config::default()
        },
    )
    .await;
    let port = server.addr.port();
    let mut clients = Vec::new();
    for i in 0..LOSSY + CLEAN {
        let stream = if i < LOSSY {
            lab.connect_across(port)
        } else {
            lab.connect_local(port)
        };
        let mut c = Client::from_std(stream);
        c.wait = Duration::from_secs(60);
        let nick = if i < LOSSY {
            format!("lossy{i}")
        } else {
            format!("clean{i}")
        };
        c.register(&nick).await;
        clients.push(c);
    }
    // Everyone sees the later joins; read them off before the loss starts.
    for (i, c) in clients.iter_mut().enumerate() {
        for later in &clients_nicks()[i + 1..] {
            c.expect(&format!("{later} has joined the chat.")).await;
        }
    }
    lab.lose(LOSS_PERCENT);
    let started = Instant::now();

    let nicks = clients_nicks();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let nicks = nicks.clone();
            tokio::spawn(async move {
                let me = c.nick.clone();
                let pad = "x".repeat(PAD);
                // Lock-step rounds: everyone sends one message, then reads until it has every
                // other sender's message of that round. The link, not the queue bound, then
                // sets the pace, as it would for people typing.
                let mut next: Vec<usize> = vec![0; nicks.len()];
                let me_idx = nicks.iter().position(|n| *n == me).unwrap();
                for seq in 0..MESSAGES {
                    c.send(&format!("{seq} {pad}")).await;
                    next[me_idx] = seq + 1;
                    while next.iter().any(|&n| n <= seq) {
                        let line = c.line().await;
                        let (from, text) = line.split_once(": ").expect(&line);
                        let idx = nicks.iter().position(|n| n == from).expect(&line);
                        let got: usize = text.split(' ').next().unwrap().parse().expect(&line);
                        // Any gap, repeat or reordering fails at once.
                        assert_eq!(
                            got, next[idx],
                            "{me} got {from}'s {got} out of order or twice"
                        );
                        next[idx] += 1;
                    }
                }
                c
            })
        })
        .collect();
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(
            t.await
                .expect("a client saw loss, duplication or reordering"),
        );
    }
    let took = started.elapsed();
    let (dropped_in, dropped_out) = lab.dropped();

    let report = clients[LOSSY].command("/metrics").await;
    let mut lossy_pct = Vec::new();
    for nick in &nicks {
        let block = report
            .iter()
            .skip_while(|l| !l.starts_with(&format!(" - {nick} (")))
            .find(|l| l.trim_start().starts_with("Packet Loss:"))
            .unwrap_or_else(|| panic!("no block for {nick}: {report:#?}"));
        let (pct, retrans) = parse_loss(block);
        eprintln!("{nick}: {}", block.trim());
        if nick.starts_with("lossy") {
            lossy_pct.push(pct);
        } else {
            // Loopback loses nothing, but on a starved CPU a late ACK can make the kernel
            // retransmit a segment or two (a tail-loss probe): far below the lossy path's 7 %.
            assert!(
                pct < 1.0,
                "a clean-path client shows loss ({retrans} retransmitted): {block}"
            );
        }
    }
    let mean = lossy_pct.iter().sum::<f64>() / lossy_pct.len() as f64;
    eprintln!(
        "lossy link: {LOSSY}+{CLEAN} clients x {MESSAGES} messages, {LOSS_PERCENT}% loss each way, \
         {dropped_in}+{dropped_out} packets dropped, all delivered in {took:?}; \
         mean reported loss {mean:.2}%"
    );
    assert!(
        dropped_in > 0 && dropped_out > 0,
        "the loss rules dropped nothing"
    );
    // TCP retransmits roughly one segment per segment lost, plus some spurious and tail-loss
    // probes; the figure must be in the configured loss's neighbourhood, not exact.
    let want = f64::from(LOSS_PERCENT);
    assert!(
        lossy_pct.iter().all(|&p| p > 0.0) && mean > want / 3.0 && mean < want * 3.0,
        "reported loss {lossy_pct:?} does not match {want}%"
    );
    server.stop().await;
}

fn clients_nicks() -> Vec<String> {
    (0..LOSSY + CLEAN)
        .map(|i| {
            if i < LOSSY {
                format!("lossy{i}")
            } else {
                format!("clean{i}")
            }
        })
        .collect()
}

/// `Packet Loss: 6.93% (12 of 173 TCP segments retransmitted; 0 messages dropped)`.
fn parse_loss(line: &str) -> (f64, u64) {
    let rest = line.trim().strip_prefix("Packet Loss: ").expect(line);
    let (pct, rest) = rest.split_once("% (").expect(line);
    let retrans = rest.split(' ').next().unwrap().parse().expect(line);
    (pct.parse().expect(line), retrans)
}
