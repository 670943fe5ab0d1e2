//! Churn: a loop that joins and closes as fast as it can, from loopback (which the per-address
//! limits exempt), while alice talks and a bystander reads. Version 1 announced every join and
//! leave to the lobby one by one, faster than it could write them, until every member was cut
//! off as a slow consumer. Now a room announces at most its allowance per presence period and
//! counts the rest into one summary.

use std::time::{Duration, Instant};

use linechat::core::room::PRESENCE_NOTICES_PER_PERIOD;

use crate::load::{storm_once, Exit};
use crate::proc::{Options, Server};
use crate::support::Client;

const CHURN_FOR: Duration = Duration::from_secs(4);
const PARALLEL: usize = 64;
/// A bound on the loop whatever the machine's speed.
const MAX_CHURN: usize = 40_000;
/// Alice talks throughout, one line per [`EVERY`]: under the default flood control (20 lines
/// a second), so every delay the bystander sees is the server's.
const EVERY: Duration = Duration::from_millis(60);
const LINES: usize = (CHURN_FOR.as_millis() / EVERY.as_millis()) as usize;
/// Generous: a correctness bound (the line came while the attack ran), not a speed figure.
const PROMPT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_cannot_cut_off_a_reader_that_keeps_up() {
    let server = Server::start(Options::default()).await;
    let addr = server.addr;
    let mut alice = Client::join(addr, "alice").await;
    let mut watcher = Client::join(addr, "watcher").await;
    alice.expect("watcher has joined the chat.").await;

    let churn = tokio::spawn(async move {
        let until = Instant::now() + CHURN_FOR;
        let mut set = tokio::task::JoinSet::new();
        let mut made = 0;
        while (Instant::now() < until && made < MAX_CHURN) || !set.is_empty() {
            while Instant::now() < until && made < MAX_CHURN && set.len() < PARALLEL {
                let nick = format!("churn{made}");
                set.spawn(async move {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(10),
                        storm_once(addr, &nick, Exit::Close),
                    )
                    .await
                    .expect("a churn connection hung");
                });
                made += 1;
            }
            set.join_next().await.unwrap().unwrap();
        }
        made
    });
    // The bystander reads everything as it comes, the way `nc > file` does.
    let started = Instant::now();
    let reader = tokio::spawn(async move {
        let (mut said, mut notices, mut summaries) = (0, 0, 0);
        let mut worst = Duration::ZERO;
        while said < LINES {
            let line = watcher.line().await;
            if let Some(text) = line.strip_prefix("alice: ") {
                assert_eq!(text, format!("line {said}"), "alice's lines in order");
                worst = worst.max(started.elapsed().saturating_sub(EVERY * said as u32));
                said += 1;
            } else if line.ends_with(" has joined the chat.") || line.contains(" has left the chat")
            {
                notices += 1;
            } else if line.contains(" in the last 10 s (") {
                summaries += 1;
            } else {
                panic!("watcher: unexpected line {line:?}");
            }
        }
        (watcher, notices, summaries, worst)
    });
    for i in 0..LINES {
        tokio::time::sleep_until((started + EVERY * i as u32).into()).await;
        alice.send(&format!("line {i}")).await;
    }
    let made = churn.await.unwrap();
    let (mut watcher, notices, summaries, worst) =
        tokio::time::timeout(Duration::from_secs(20), reader)
            .await
            .expect("the bystander got alice's lines in time")
            .unwrap();
    // Every line arrived, and the bystander is still connected and answered promptly.
    watcher.sync().await;
    // The test spans at most two presence periods (plus one, if it started just before a tick).
    let bound = 3 * PRESENCE_NOTICES_PER_PERIOD as usize;
    eprintln!(
        "churn: {made} connections in {CHURN_FOR:?}; the bystander got alice's {LINES} lines, \
         the latest {worst:?} after it was sent, {notices} join/leave notices (bound {bound}) \
         and {summaries} summaries"
    );
    assert!(made > 1000, "the loop should churn hard: {made}");
    assert!(notices <= bound, "{notices} notices for {made} connections");
    assert!(
        worst < PROMPT,
        "a line reached the bystander {worst:?} late"
    );
    drop(server);
}
