//! Memory an attacker can make the server keep: clients that each fill a room of their own
//! with long lines. Version 1 kept every room's last 1 000 lines whatever their size (2.15 GB
//! from 2 000 such clients in a minute, ~11 GB possible). Now all history together stays
//! within --history-bytes, the oldest going first, and the server's RSS with it.

use std::time::Duration;

use crate::proc::{Options, Server};
use crate::support::Client;

const BUDGET_MIB: u64 = 8;
const FILLERS: usize = 40;
const LINES: usize = 500;
/// ~1 KB a line: 40 × 500 × 1 KB = 20 MB sent, 2.5 × the budget.
const LINE: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_stays_within_its_byte_budget_and_so_does_memory() {
    let budget = format!("{BUDGET_MIB}M");
    let server = Server::start(Options {
        args: &["--history-bytes", &budget, "--rate-limit", "0"],
        ..Options::default()
    })
    .await;
    let addr = server.addr;
    let (mut alice, mut bob) = server.alice_and_bob().await;
    alice.sync().await;
    let rss_before = server.rss_kib();

    let mut fillers = Vec::new();
    for i in 0..FILLERS {
        let mut c = Client::join(addr, &format!("filler{i}")).await;
        c.send(&format!("/join attic{i}")).await;
        c.line().await;
        fillers.push(c);
    }
    // bob has heard them arrive and move on; what follows in the lobby is alice's alone.
    bob.sync().await;
    let text = "z".repeat(LINE);
    // All fillers write at once; each reads its own room's nothing, so only writing counts.
    let mut writers = tokio::task::JoinSet::new();
    for mut c in fillers {
        let text = text.clone();
        writers.spawn(async move {
            let mut batch = String::new();
            for n in 0..LINES {
                batch.push_str(&format!("{n} {text}\n"));
            }
            c.send_raw(batch.as_bytes()).await;
            c.sync().await;
            c
        });
    }
    // Meanwhile the lobby talks, and bob hears every line.
    for i in 0..100 {
        alice.send(&format!("lobby line {i}")).await;
    }
    for i in 0..100 {
        bob.expect(&format!("alice: lobby line {i}")).await;
    }
    let mut fillers = Vec::new();
    while let Some(c) = writers.join_next().await {
        fillers.push(c.unwrap());
    }
    let report = bob.command("/metrics").await;
    let history = report
        .iter()
        .find(|l| l.starts_with("History: "))
        .expect("a History line")
        .clone();
    let rss_full = server.rss_kib();
    for mut c in fillers {
        c.send("/quit").await;
        c.expect_closed().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = server.rss_kib();
    eprintln!(
        "history memory: {FILLERS} rooms × {LINES} lines of {LINE} B with --history-bytes \
         {BUDGET_MIB}M: {history}; RSS {rss_before} KiB before, {rss_full} KiB filled, \
         {rss_after} KiB after the fillers left"
    );
    assert!(
        history.contains("forgotten") && !history.contains(" 0 messages forgotten"),
        "{history}"
    );
    // Kept history within the budget, and the process with it: the budget, plus as much
    // again for the allocator's slack and the fillers' connections, plus 8 MiB.
    let bound = rss_before + 2 * BUDGET_MIB * 1024 + 8 * 1024;
    assert!(
        rss_full < bound,
        "RSS {rss_full} KiB filled, bound {bound} KiB"
    );
    assert!(
        rss_after < bound,
        "RSS {rss_after} KiB after, bound {bound} KiB"
    );
    assert_eq!(bob.sync().await, Vec::<String>::new());
}
