//! Several linechat processes sharing one chat through a real `nats-server` with JetStream,
//! all on loopback (docs/CLUSTER.md). Run alone with `cargo test --test cluster`; TESTING.md
//! says what each test proves and what it needs.

#[allow(dead_code)]
#[path = "../it/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "../faults/proc.rs"]
mod proc;

#[allow(dead_code)]
#[path = "../faults/lab.rs"]
mod lab;

mod broker;
mod irc;

use std::collections::HashMap;

use futures_util::StreamExt;

use broker::Broker;
use proc::{Options, Server};
use support::{Client, WAIT};

/// A node of the cluster on `broker`, named `name`, without flood control (the tests send
/// as fast as they can and count every line).
async fn node(broker: &Broker, name: &str) -> Server {
    node_with(broker, name, &[]).await
}

/// [`node`] with more arguments.
async fn node_with(broker: &Broker, name: &str, more: &[&str]) -> Server {
    let mut args = vec![
        "--cluster",
        &broker.url,
        "--node-name",
        name,
        "--rate-limit",
        "0",
    ];
    args.extend_from_slice(more);
    Server::start(Options {
        args: &args,
        ..Default::default()
    })
    .await
}

/// A broker and two nodes on it, `a` and `b`; `None` (the test skips) without nats-server.
async fn two_nodes() -> Option<(Broker, Server, Server)> {
    if !broker::available() {
        return None;
    }
    let broker = Broker::start().await;
    let (a, b) = (node(&broker, "a").await, node(&broker, "b").await);
    Some((broker, a, b))
}

/// Three senders, one on each of three nodes, each saying `LINES` numbered lines in the lobby;
/// two listeners on every node. Every listener gets every other sender's lines exactly once
/// and in the order they were sent, whichever node it is on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_every_node_once_in_order() {
    if !broker::available() {
        return;
    }
    const LINES: usize = 300;
    let broker = Broker::start().await;
    let nodes = [
        node(&broker, "n1").await,
        node(&broker, "n2").await,
        node(&broker, "n3").await,
    ];
    let mut listeners = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for j in 0..2 {
            listeners.push(Client::join(n.addr, &format!("l{i}x{j}")).await);
        }
    }
    let mut senders = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        senders.push(Client::join(n.addr, &format!("s{i}")).await);
    }
    // Each listener reads past the arrivals on its own node up to the first line it gets
    // from a sender, so arrivals announced late do not count as chat.
    let sending = senders.into_iter().map(|mut s| {
        tokio::spawn(async move {
            for k in 0..LINES {
                s.send(&format!("{} {k}", s.nick)).await;
            }
            s.send("done").await;
            s
        })
    });
    let senders: Vec<_> = futures_join(sending).await;
    every_line_once_in_order(listeners, LINES).await;
    drop(senders);
}

/// Exactly once across a broker restart: three senders on three nodes say numbered lines
/// while the broker is killed (SIGKILL) and brought back on the same store mid-stream.
/// Every listener on every node gets every line of every sender exactly once, in the order
/// it was sent: what was in flight is sent again and stored once, what the subscriptions
/// missed is read back from the stream, and repeats are dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_and_repeats_nothing() {
    // Paced so that the restart falls in the middle: ~300 lines over ~1.5 s per sender.
    restart_mid_stream(300, std::time::Duration::from_millis(5), 400).await;
}

/// The same with the senders saying 3 000 lines each as fast as they can, and the broker
/// killed 100 ms in: the publishers' windows are full when it goes (many events sent and
/// not yet acknowledged, some stored, some lost with the connection), so what the recovery
/// sends again, and what receivers put back in order, is a whole window's worth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_under_full_windows_loses_and_repeats_nothing() {
    restart_mid_stream(3000, std::time::Duration::ZERO, 100).await;
}

/// Three senders on three nodes, two listeners on each, `lines` lines per sender `pace`
/// apart, the broker SIGKILLed `restart_ms` in and back 0.5 s later on the same store: every
/// listener gets every line of the other senders once, in order.
async fn restart_mid_stream(lines: usize, pace: std::time::Duration, restart_ms: u64) {
    if !broker::available() {
        return;
    }
    let mut broker = Broker::start().await;
    // Everyone's lines reach everyone at the senders' speed, and the senders read nothing:
    // queues that hold them all, so no one is put out as a slow consumer, which is not what
    // this tests.
    let queue = ["--queue-bytes", "16777216"];
    let nodes = [
        node_with(&broker, "n1", &queue).await,
        node_with(&broker, "n2", &queue).await,
        node_with(&broker, "n3", &queue).await,
    ];
    let mut listeners = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for j in 0..2 {
            listeners.push(Client::join(n.addr, &format!("l{i}x{j}")).await);
        }
    }
    let mut senders = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        senders.push(Client::join(n.addr, &format!("s{i}")).await);
    }
    // Everyone listed everywhere first, so no arrival is still on its way.
    for l in &mut listeners {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !l
            .command("/who")
            .await
            .iter()
            .any(|r| r.starts_with("In lobby (9)"))
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: not everyone listed",
                l.nick
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let sending = senders.into_iter().map(|mut s| {
        tokio::spawn(async move {
            for k in 0..lines {
                s.send(&format!("{} {k}", s.nick)).await;
                if !pace.is_zero() {
                    tokio::time::sleep(pace).await;
                }
            }
            s.send("done").await;
            s
        })
    });
    // Read while they talk, as people do: a listener that read nothing until the end would
    // be put out as a slow consumer, which is not what this tests.
    let reading = tokio::spawn(every_line_once_in_order(listeners, lines));
    let sending: Vec<_> = sending.collect();
    tokio::time::sleep(std::time::Duration::from_millis(restart_ms)).await;
    broker.restart(std::time::Duration::from_millis(500)).await;
    let senders = futures_join(sending.into_iter()).await;
    reading.await.expect("listeners");
    drop(senders);
}

/// The catch-up after a broker restart delivers only what was said while the room was
/// followed here: what a room said before this node had anyone in it is not replayed as new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_replays_nothing_said_before_the_room_was_followed() {
    let Some((mut broker, a, b)) = two_nodes().await else {
        return;
    };
    let mut alice = Client::join(a.addr, "alice").await;
    alice.send("before bob's node had anyone here").await;
    let mut bob = Client::join(b.addr, "bob").await;
    // Once, as history (what the stream held when bob's node started following the room).
    assert_eq!(
        scrollback(&mut bob).await,
        ["alice: before bob's node had anyone here"]
    );
    alice.expect("bob has joined the chat.").await;
    follows(
        &broker,
        "b",
        &["lc.live.lobby", "lc.node.b", "lc.room.lobby"],
    )
    .await;
    broker.restart(std::time::Duration::from_millis(500)).await;
    bob.expect("Server: the cluster link is down; chat goes on among the people on this server.")
        .await;
    bob.expect("Server: the cluster link is back; you are chatting with every server again.")
        .await;
    alice.send("after").await;
    // The next thing bob gets is what alice says now: no arrival, no old line.
    bob.expect("alice: after").await;
}

/// Someone arriving on a node where nobody was in the room sees the scrollback said on the
/// other nodes, in the order it was said, once: at connect (the lobby) and on `/join`. What
/// is said next arrives live and only live, and `/history` covers the other nodes' lines,
/// past the scrollback's size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_sees_the_scrollback_of_every_node_once_in_order() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start().await;
    let (a, b, c) = (
        node(&broker, "a").await,
        node(&broker, "b").await,
        node(&broker, "c").await,
    );
    let mut alice = Client::join(a.addr, "alice").await;
    let mut carol = Client::join(c.addr, "carol").await;
    alice.expect("carol has joined the chat.").await;
    // Taking turns, each line seen on the other node before the next is said, so the order
    // the stream holds them in is the order they were said in.
    let mut said = Vec::new();
    for k in 0..15 {
        let (speaker, listener) = match k % 3 {
            0 | 1 => (&mut alice, &mut carol),
            _ => (&mut carol, &mut alice),
        };
        let line = format!("line {k} from {}", speaker.nick);
        speaker.send(&line).await;
        let heard = format!("{}: {line}", speaker.nick);
        listener.expect(&heard).await;
        said.push(heard);
    }
    alice.send("/me waves").await;
    carol.expect("* alice waves").await;
    said.push("* alice waves".to_owned());
    // Nobody is in the lobby on b: bob's node reads it from the stream before he is in.
    let mut bob = Client::join(b.addr, "bob").await;
    // The default scrollback (--history 20) holds all 16.
    assert_eq!(scrollback(&mut bob).await, said);
    alice.expect("bob has joined the chat.").await;
    alice.send("live").await;
    bob.expect("alice: live").await;
    said.push("alice: live".to_owned());
    let got = bob.command("/history 50").await;
    assert_eq!(
        got[0],
        "--- History of lobby: the last 17 messages, times in UTC ---"
    );
    let lines: Vec<String> = got[1..got.len() - 1]
        .iter()
        .map(|l| l.split_once("] ").expect("stamped").1.to_owned())
        .collect();
    assert_eq!(lines, said, "/history on b covers a's and c's lines");

    // A room nobody on b is in, with more said in it than the scrollback shows.
    alice.send("/join dev").await;
    alice.expect("You are now in dev (just you so far).").await;
    let mut dev = Vec::new();
    for k in 0..30 {
        alice.send(&format!("dev {k}")).await;
        dev.push(format!("alice: dev {k}"));
    }
    // Whatever the stream held when b read it comes as scrollback (its last 20), whatever it
    // did not yet comes live: together, every line once, in order.
    bob.send("/join dev").await;
    let passed = bob
        .skip_until("You are now in dev (just you so far).")
        .await;
    assert_eq!(passed, ["alice has left the room."]);
    // None of it stored yet when b read (a's hub, or its link, had not got to the lines when
    // the ask came): no scrollback, everything live.
    let first = bob.line().await;
    let mut got = match first.starts_with("--- History of ") {
        true => history_lines(&mut bob).await,
        false => vec![first],
    };
    assert!(got.len() <= 20, "{got:?}");
    while got.last() != dev.last() {
        got.push(bob.line().await);
    }
    assert_eq!(got, dev[30 - got.len()..], "dev's lines once, in order");
    let got = bob.command("/history 100").await;
    assert_eq!(
        got[0], "--- History of dev: the last 30 messages, times in UTC ---",
        "/history goes past the scrollback to what the stream held"
    );
    drop((a, b, c));
}

/// A line said around someone's arrival on a node where nobody was in the room is neither
/// lost nor shown twice: while alice, on a, talks without pause, people arrive on b one at
/// a time (each the first there), and what each gets, scrollback then live lines, is
/// alice's lines without a gap or a repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_said_at_the_first_arrival_is_not_lost() {
    let Some((broker, a, b)) = two_nodes().await else {
        return;
    };
    const ROUNDS: usize = 12;
    const MAX_LINES: usize = 20_000;
    let mut alice = Client::join(a.addr, "alice").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let talking = {
        let stop = stop.clone();
        tokio::spawn(async move {
            for k in 0..MAX_LINES {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                alice.send(&format!("n {k}")).await;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            alice
        })
    };
    let number = |line: &str| -> usize {
        let k = line
            .strip_prefix("alice: n ")
            .unwrap_or_else(|| panic!("{line}"));
        k.parse().expect("numbered")
    };
    for round in 0..ROUNDS {
        follows(&broker, "b", &["lc.node.b"]).await;
        let mut c = Client::join(b.addr, &format!("j{round}")).await;
        let mut got: Vec<usize> = scrollback(&mut c).await.iter().map(|l| number(l)).collect();
        assert!(!got.is_empty(), "round {round}: alice had said something");
        for _ in 0..40 {
            got.push(number(&c.line().await));
        }
        let expected: Vec<usize> = (got[0]..got[0] + got.len()).collect();
        assert_eq!(
            got, expected,
            "round {round}: each of alice's lines once, in order"
        );
        c.send("/quit").await;
        c.expect_closed().await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(talking.await.expect("alice"));
}

/// Coming back to a room nobody on one's node stayed in shows as new only what was said
/// since, on any node: what the room's history here held keeps its place when the room is
/// read again from the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coming_back_shows_only_what_any_node_said_since() {
    let Some((broker, a, b)) = two_nodes().await else {
        return;
    };
    let mut alice = Client::join(a.addr, "alice").await;
    let mut bob = Client::join(b.addr, "bob").await;
    alice.expect("bob has joined the chat.").await;
    for c in [&mut alice, &mut bob] {
        c.send("/join dev").await;
        c.skip_until("You are now in dev (just you so far).").await;
    }
    alice.skip_until("bob has joined the room.").await;
    alice.send("seen by bob").await;
    bob.expect("alice: seen by bob").await;
    bob.send("said by bob").await;
    alice.expect("bob: said by bob").await;
    bob.send("/leave").await;
    bob.skip_until("You are now in lobby (just you so far).")
        .await;
    alice.expect("bob has left the room.").await;
    follows(
        &broker,
        "b",
        &["lc.live.lobby", "lc.node.b", "lc.room.lobby"],
    )
    .await;
    alice.send("said while bob was away").await;
    alice.send("/me waits").await;
    // Both stored before bob comes back: someone on a third node, which reads dev from the
    // stream as they enter it, has them.
    let c = node(&broker, "c").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    for round in 0.. {
        follows(&broker, "c", &["lc.node.c"]).await;
        let mut check = Client::join(c.addr, &format!("check{round}")).await;
        check.send("/join dev").await;
        check
            .skip_until("You are now in dev (just you so far).")
            .await;
        let stored = scrollback(&mut check).await;
        check.send("/quit").await;
        check.expect_closed().await;
        if stored.len() == 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not stored: {stored:?}"
        );
    }
    bob.send("/join dev").await;
    let passed = bob
        .skip_until("You are now in dev (just you so far).")
        .await;
    assert!(
        passed.iter().all(|l| l.starts_with("check")),
        "only the checkers' comings and goings: {passed:?}"
    );
    bob.expect("--- History of dev: 2 new messages since you were last here, times in UTC ---")
        .await;
    assert_eq!(
        history_lines(&mut bob).await,
        ["alice: said while bob was away", "* alice waits"]
    );
    // A checker's departure from dev may reach bob late, as a notice: only the block counts.
    let lines = history_block(&bob.command("/history").await);
    assert_eq!(
        lines,
        [
            "alice: seen by bob",
            "bob: said by bob",
            "alice: said while bob was away",
            "* alice waits"
        ],
        "each once, in order"
    );
}

/// Reading a room from the stream does not make rooms around the creation limit: a room the
/// stream knows of is joined, one it does not is created by the entry, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_creation_limit_holds_on_a_cluster() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start().await;
    let a = node(&broker, "a").await;
    let b = Server::start(Options {
        args: &[
            "--cluster",
            &broker.url,
            "--node-name",
            "b",
            "--rate-limit",
            "0",
            "--rooms-per-minute",
            "1",
        ],
        ..Default::default()
    })
    .await;
    let mut alice = Client::join(a.addr, "alice").await;
    alice.send("/join dev").await;
    alice.expect("You are now in dev (just you so far).").await;
    alice.send("in dev").await;
    let mut bob = Client::join(b.addr, "bob").await;
    // Joining dev, which the cluster has, creates nothing here.
    bob.send("/join dev").await;
    bob.expect("You are now in dev (just you so far).").await;
    assert_eq!(scrollback(&mut bob).await, ["alice: in dev"]);
    bob.send("/join new1").await;
    bob.skip_until("You are now in new1 (just you so far).")
        .await;
    bob.send("/join new2").await;
    let refused = bob.line().await;
    assert!(
        refused.starts_with("Error: you have created 1 rooms in the last minute"),
        "{refused}"
    );
}

/// Someone moving into a room nobody on their node is in while the broker is away is shown
/// what their node has, and told so; once the broker is back the room's history from the
/// stream is read, and `/history` has what was said elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_arrival_while_the_broker_is_away_gets_the_history_once_it_is_back() {
    let Some((mut broker, a, b)) = two_nodes().await else {
        return;
    };
    let mut alice = Client::join(a.addr, "alice").await;
    alice.send("/join dev").await;
    alice.expect("You are now in dev (just you so far).").await;
    alice.send("said on a before the outage").await;
    let mut bob = Client::join(b.addr, "bob").await;
    // The line is stored once a's own scrollback of dev, read back from the stream, has it.
    let mut check = Client::join(a.addr, "check").await;
    check.send("/join dev").await;
    check
        .skip_until("You are now in dev (2 people here).")
        .await;
    assert_eq!(
        scrollback(&mut check).await,
        ["alice: said on a before the outage"]
    );
    drop(check);
    bob.wait = std::time::Duration::from_secs(20);
    let down = "Server: the cluster link is down; chat goes on among the people on this server.";
    let back = "Server: the cluster link is back; you are chatting with every server again.";
    let moving = async {
        bob.skip_until(down).await;
        bob.send("/join dev").await;
        bob.expect("You are now in dev (just you so far).").await;
        bob.expect("Server: the cluster's history of dev could not be read just now; the scrollback holds only what this server has.")
            .await;
    };
    tokio::join!(broker.restart(std::time::Duration::from_secs(4)), moving);
    bob.skip_until(back).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = bob.command("/history").await;
        if got
            .iter()
            .any(|l| l.ends_with("] alice: said on a before the outage"))
        {
            // The checker's departure from dev may reach bob late, as a notice.
            assert_eq!(
                history_block(&got),
                ["alice: said on a before the outage"],
                "one line of history, once: {got:?}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not read: {got:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Not a check: what reading a full room (the stream keeps 10 000 events per room) costs an
/// arrival, against the same arrival on a node that follows the room already (no read).
/// Prints the medians of 5 of each; run alone with
/// `cargo test --release --test cluster -- --ignored --nocapture reading_a_full_room`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn reading_a_full_room_costs_an_arrival() {
    let Some((broker, a, b)) = two_nodes().await else {
        return;
    };
    const LINES: usize = 10_000;
    let mut alice = Client::join(a.addr, "alice").await;
    let mut carol = Client::join(b.addr, "carol").await;
    for c in [&mut alice, &mut carol] {
        c.send("/join big").await;
        c.skip_until("You are now in big (just you so far).").await;
    }
    // Every line stored before the arrivals are timed: carol, on b, has had the last one.
    alice
        .flood(
            LINES,
            "a line of about sixty-four bytes, as the benchmarks send...",
        )
        .await;
    carol.wait = std::time::Duration::from_secs(60);
    carol
        .skip_until(&format!(
            "alice: {} a line of about sixty-four bytes, as the benchmarks send...",
            LINES - 1
        ))
        .await;
    let arrive = |nick: String| async move {
        let started = std::time::Instant::now();
        let mut c = Client::join(b.addr, &nick).await;
        c.send("/join big").await;
        c.skip_until("--- End of history ---").await;
        let took = started.elapsed();
        c.send("/quit").await;
        c.expect_closed().await;
        took
    };
    let mut followed = Vec::new();
    for i in 0..5 {
        followed.push(arrive(format!("f{i}")).await);
    }
    carol.send("/leave").await;
    let mut read = Vec::new();
    for i in 0..5 {
        follows(
            &broker,
            "b",
            &["lc.live.lobby", "lc.node.b", "lc.room.lobby"],
        )
        .await;
        read.push(arrive(format!("r{i}")).await);
    }
    followed.sort();
    read.sort();
    println!(
        "arrival in a room of {LINES} events, connect to end of scrollback, median of 5: \
         followed already {:?}, read from the stream {:?} (ratio {:.1}); all: {followed:?} {read:?}",
        followed[2],
        read[2],
        read[2].as_secs_f64() / followed[2].as_secs_f64()
    );
}

/// The scrollback block that comes next, its lines without their times.
async fn scrollback(c: &mut Client) -> Vec<String> {
    let head = c.line().await;
    assert!(
        head.starts_with("--- History of "),
        "{}: a scrollback should come next, not {head}",
        c.nick
    );
    history_lines(c).await
}

/// The lines of the one history block among `got`, without their times.
fn history_block(got: &[String]) -> Vec<String> {
    let start = got
        .iter()
        .position(|l| l.starts_with("--- History of "))
        .unwrap_or_else(|| panic!("no history block: {got:?}"));
    got[start + 1..]
        .iter()
        .take_while(|l| *l != "--- End of history ---")
        .map(|l| l.split_once("] ").expect("stamped").1.to_owned())
        .collect()
}

/// The lines of a history block whose header has been read, up to its end, without times.
async fn history_lines(c: &mut Client) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let line = c.line().await;
        if line == "--- End of history ---" {
            return lines;
        }
        let (_, text) = line.split_once("] ").expect("a stamped history line");
        lines.push(text.to_owned());
    }
}

/// Each listener reads until three senders (`s0`-`s2`) have said `done`, and must have had
/// every numbered line (`sN k`, k < `lines`) of each exactly once, in order. Lines that are
/// not chat (arrivals, the link's notices) are passed over.
async fn every_line_once_in_order(listeners: Vec<Client>, lines: usize) {
    let reading = listeners.into_iter().map(|mut l| {
        tokio::spawn(async move {
            // Past a broker restart: the backoff, then the catch-up.
            l.wait = std::time::Duration::from_secs(20);
            let mut got: HashMap<String, Vec<usize>> = HashMap::new();
            let mut done = 0;
            while done < 3 {
                let line = l.line().await;
                if line.starts_with("Server: ") {
                    continue;
                }
                let Some((from, text)) = line.split_once(": ") else {
                    continue;
                };
                if text == "done" {
                    done += 1;
                    continue;
                }
                let (nick, k) = text.split_once(' ').expect("numbered line");
                assert_eq!(
                    from, nick,
                    "{}: a line under the wrong name: {line}",
                    l.nick
                );
                got.entry(from.to_owned())
                    .or_default()
                    .push(k.parse().unwrap());
            }
            (l.nick.clone(), got)
        })
    });
    let expected: Vec<usize> = (0..lines).collect();
    for (nick, got) in futures_join(reading).await {
        for s in 0..3 {
            let from = format!("s{s}");
            assert_eq!(
                got.get(&from).map(Vec::as_slice),
                Some(expected.as_slice()),
                "{nick} should have every line of {from} once, in order"
            );
        }
    }
}

/// Two people take the same name on two nodes at the same instant, twenty times over: each
/// time exactly one of them gets it and the other is told it is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_nick_on_two_nodes_at_once_one_wins() {
    let Some((_broker, a, b)) = two_nodes().await else {
        return;
    };
    let mut keep = Vec::new();
    for round in 0..20 {
        let name = format!("Racer{round}");
        let mut x = Client::connect(a.addr).await;
        let mut y = Client::connect(b.addr).await;
        x.expect_prompt().await;
        y.expect_prompt().await;
        // Case differs on the second node: names are compared case-blind across the cluster.
        let lower = name.to_ascii_lowercase();
        tokio::join!(x.send(&name), y.send(&lower));
        let (rx, ry) = tokio::join!(x.line(), y.line());
        let won = [&rx, &ry]
            .iter()
            .filter(|l| l.starts_with("Welcome to the chat, "))
            .count();
        let lost = [&rx, &ry]
            .iter()
            .filter(|l| l.ends_with("is already taken; choose another."))
            .count();
        assert_eq!((won, lost), (1, 1), "round {round}: {rx:?} / {ry:?}");
        keep.push((x, y));
    }
}

/// A rename on node a: b's people sharing the room are told once, between the lines said
/// before and after it, exactly as a local rename reads; b lists the new name with its node
/// at once, a private message to it from b arrives, the old name is free on b as soon as
/// the renamer is told, and the new one is refused on b.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_is_told_on_another_node_once_in_order() {
    let Some((_broker, a, b)) = two_nodes().await else {
        return;
    };
    let mut alice = Client::join(a.addr, "alice").await;
    let mut bob = Client::join(b.addr, "bob").await;
    alice.expect("bob has joined the chat.").await;
    until(&mut bob, "/who", "In lobby (2): alice (on a), bob (on b)").await;
    alice.send("before").await;
    alice.send("/nick alice2").await;
    alice.send("after").await;
    alice
        .expect("Your nickname has been changed to alice2")
        .await;
    // The old name is free the moment its holder is told: taken on b with no retry.
    let mut newcomer = Client::connect(b.addr).await;
    newcomer.expect_prompt().await;
    newcomer.send("alice").await;
    newcomer.expect("Welcome to the chat, alice!").await;
    bob.expect("alice: before").await;
    bob.expect("alice changed nickname to alice2").await;
    bob.expect("alice2: after").await;
    bob.expect("alice has joined the chat.").await;
    assert!(bob.sync().await.is_empty(), "told once");
    assert_eq!(
        bob.command("/who").await,
        ["In lobby (3): alice (on b), alice2 (on a), bob (on b)"]
    );
    assert_eq!(
        bob.command("/msg alice2 hi").await,
        ["[private to alice2] hi"]
    );
    alice.expect("alice has joined the chat.").await;
    alice.expect("[private] bob: hi").await;
    // The new name is alice2's across the cluster: refused on b, at the prompt and by /nick.
    assert_eq!(
        bob.command("/nick Alice2").await,
        ["Error: the nickname Alice2 is already taken; choose another."]
    );
    let mut other = Client::connect(b.addr).await;
    other.expect_prompt().await;
    other.send("alice2").await;
    other
        .expect("Error: the nickname alice2 is already taken; choose another.")
        .await;
    // A change of letters only keeps the claim: nothing to take from the broker.
    assert_eq!(
        alice.command("/nick ALICE2").await,
        ["Your nickname has been changed to ALICE2"]
    );
    bob.expect("alice2 changed nickname to ALICE2").await;
}

/// A rename reaches every node's lists, not only those of the nodes sharing a room with the
/// renamed person: each node the renaming node hears from is told on its own subject, and
/// a node told so lists the new name at once. Both halves against a node `z` made by hand
/// (its heartbeat written, its messages published by the test), which nobody shares a room
/// with and whose own heartbeat never changes, so nothing else could bring the new names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_reaches_the_lists_of_nodes_sharing_no_room() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start().await;
    let a = node(&broker, "a").await;
    let mut alice = Client::join(a.addr, "alice").await;
    let nats = async_nats::connect(broker.url.as_str())
        .await
        .expect("connect to the broker");
    let mut told_z = nats.subscribe("lc.node.z").await.expect("subscribe");
    let nodes = async_nats::jetstream::new(nats.clone())
        .get_key_value("lc_nodes")
        .await
        .expect("the nodes bucket");
    let beat = serde_json::json!({
        "seq": 1, "people": [{"nick": "zed", "proto": "line", "rooms": ["dev"]}],
    });
    nodes
        .put("z.1", beat.to_string().into())
        .await
        .expect("z's heartbeat");
    until(&mut alice, "/who dev", "In dev (1): zed (on z)").await;
    assert_eq!(
        alice.command("/nick alice2").await,
        ["Your nickname has been changed to alice2"]
    );
    let told = tokio::time::timeout(WAIT, told_z.next())
        .await
        .expect("z told of the rename")
        .expect("a message");
    let told: serde_json::Value = serde_json::from_slice(&told.payload).unwrap();
    assert_eq!(
        (&told["kind"], &told["nick"], &told["text"], &told["room"]),
        (
            &"nick".into(),
            &"alice".into(),
            &"alice2".into(),
            &"".into()
        ),
        "{told}"
    );
    let renamed = serde_json::json!({
        "node": "z", "boot": 1, "seq": 2, "room": "", "nick": "zed", "kind": "nick",
        "text": "zed2", "at_ms": 0,
    });
    nats.publish("lc.node.a", renamed.to_string().into())
        .await
        .expect("publish");
    nats.flush().await.expect("flush");
    until(&mut alice, "/who dev", "In dev (1): zed2 (on z)").await;
    assert_eq!(
        alice.command("/msg zed2 hi").await,
        ["[private to zed2] hi"]
    );
}

/// Two people on two nodes rename to the same name at the same instant, ten times over:
/// each time exactly one gets it, and the other is told it is taken and keeps their name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_renames_to_one_name_on_two_nodes_at_once_one_wins() {
    let Some((_broker, a, b)) = two_nodes().await else {
        return;
    };
    let mut x = Client::join(a.addr, "x").await;
    let mut y = Client::join(b.addr, "y").await;
    x.expect("y has joined the chat.").await;
    until(&mut y, "/who", "In lobby (2): x (on a), y (on b)").await;
    for round in 0..10 {
        let name = format!("Racer{round}");
        // Case differs on the second node: names are compared case-blind across the cluster.
        let (nx, ny) = (
            format!("/nick {name}"),
            format!("/nick {}", name.to_lowercase()),
        );
        tokio::join!(x.send(&nx), y.send(&ny));
        let (rx, ry) = tokio::join!(rename_reply(&mut x), rename_reply(&mut y));
        let changed = "Your nickname has been changed to ";
        let won = [&rx, &ry].iter().filter(|l| l.starts_with(changed)).count();
        let lost = [&rx, &ry]
            .iter()
            .filter(|l| l.ends_with("is already taken; choose another."))
            .count();
        assert_eq!((won, lost), (1, 1), "round {round}: {rx:?} / {ry:?}");
        let (winner, loser, reply) = match rx.strip_prefix(changed) {
            Some(_) => (&mut x, &mut y, &rx),
            None => (&mut y, &mut x, &ry),
        };
        winner.nick = reply[changed.len()..].to_owned();
        // The loser keeps their name; the winner's is the new one.
        for c in [winner, loser] {
            let same = format!("/nick {}", c.nick);
            let got = without_renames(c.command(&same).await);
            assert_eq!(got, ["You already have that nickname."], "{}", c.nick);
        }
    }
}

/// Lines without the notices of renames, which may come at any point between two rounds.
fn without_renames(mut lines: Vec<String>) -> Vec<String> {
    lines.retain(|l| !l.contains(" changed nickname to "));
    lines
}

/// The reply to a `/nick`, past the notices of other renames that may come first.
async fn rename_reply(c: &mut Client) -> String {
    loop {
        let line = c.line().await;
        if line.starts_with("Your nickname") || line.starts_with("Error:") {
            return line;
        }
        assert!(line.contains(" changed nickname to "), "{}: {line}", c.nick);
    }
}

/// A rename while the broker is away: the broker cannot give the name, so the person is told
/// so and keeps theirs, and the name they asked for is not held once the broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_the_broker_cannot_confirm_changes_nothing() {
    let Some((mut broker, a, b)) = two_nodes().await else {
        return;
    };
    let mut alice = Client::join(a.addr, "alice").await;
    alice.wait = std::time::Duration::from_secs(10);
    let down = "Server: the cluster link is down; chat goes on among the people on this server.";
    let back = "Server: the cluster link is back; you are chatting with every server again.";
    // Down longer than the claim's bound (5 s), so the rename is refused while it is away.
    let away = std::time::Duration::from_secs(7);
    let renaming = async {
        alice.expect(down).await;
        alice.send("/nick alice2").await;
        let reply = alice.line().await;
        assert!(
            reply.starts_with("Error: the cluster cannot confirm that name now (")
                && reply.ends_with("); try again."),
            "{reply}"
        );
        alice.expect(back).await;
    };
    tokio::join!(broker.restart(away), renaming);
    assert_eq!(
        alice.command("/nick alice").await,
        ["You already have that nickname."]
    );
    let mut other = Client::connect(b.addr).await;
    other.expect_prompt().await;
    take_when_free(&mut other, "alice2", tokio::time::Instant::now() + WAIT).await;
}

/// A name is free on every node once its holder has left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_left_is_free_on_another_node() {
    let Some((_broker, a, b)) = two_nodes().await else {
        return;
    };
    let mut alice = Client::join(a.addr, "alice").await;
    let mut other = Client::connect(b.addr).await;
    other.expect_prompt().await;
    other.send("alice").await;
    other
        .expect("Error: the nickname alice is already taken; choose another.")
        .await;
    other.expect_prompt().await;
    alice.send("/quit").await;
    alice.expect_closed().await;
    // The release crosses the broker after the leave: asked again until it has, within WAIT.
    take_when_free(&mut other, "alice", tokio::time::Instant::now() + WAIT).await;
}

/// A nickname's claim names its member (`<node>:<boot>:<member>`), and a release frees only
/// the claim it made: the same name held meanwhile by someone else on the same node (the
/// claim written by hand here) stays held when the first holder leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_names_its_member_and_a_release_frees_only_its_own() {
    let Some((broker, a, b)) = two_nodes().await else {
        return;
    };
    let mut alice = Client::join(a.addr, "alice").await;
    let mut carol = Client::join(a.addr, "carol").await;
    let nats = async_nats::connect(broker.url.as_str())
        .await
        .expect("connect to the broker");
    let nicks = async_nats::jetstream::new(nats)
        .get_key_value("lc_nicks")
        .await
        .expect("the nicknames bucket");
    let key = "alice"
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let value = nicks.get(&key).await.expect("read").expect("alice claimed");
    let value = String::from_utf8(value.to_vec()).unwrap();
    let parts: Vec<&str> = value.split(':').collect();
    assert!(
        parts.len() == 3 && parts[0] == "a" && parts[1..].iter().all(|p| p.parse::<u64>().is_ok()),
        "{value}"
    );
    let member: u64 = parts[2].parse().unwrap();
    let someone_else = format!("{}:{}:{}", parts[0], parts[1], member + 1000);
    nicks
        .put(&key, someone_else.clone().into())
        .await
        .expect("the claim rewritten");
    alice.send("/quit").await;
    alice.expect_closed().await;
    // carol's release is queued behind alice's: once carol's name is free, alice's release
    // has been made.
    carol.send("/quit").await;
    carol.expect_closed().await;
    let mut other = Client::connect(b.addr).await;
    other.expect_prompt().await;
    take_when_free(&mut other, "carol", tokio::time::Instant::now() + WAIT).await;
    let kept = nicks.get(&key).await.expect("read").expect("still claimed");
    assert_eq!(String::from_utf8(kept.to_vec()).unwrap(), someone_else);
}

/// The broker goes away for a while and comes back on the same port and store: everyone is
/// told once that the link is down and once that it is back, chat goes on inside each node
/// meanwhile, and afterwards messages cross again and the names held before are still held,
/// with no restart of any node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_is_told_once_each_way_and_rejoined() {
    let Some((mut broker, a, b)) = two_nodes().await else {
        return;
    };
    let (mut alice, mut bob) = a.alice_and_bob().await;
    let mut carol = Client::join(b.addr, "carol").await;
    alice.expect("carol has joined the chat.").await;
    bob.expect("carol has joined the chat.").await;
    alice.send("before").await;
    carol.expect("alice: before").await;
    bob.expect("alice: before").await;

    broker.restart(std::time::Duration::from_millis(500)).await;
    let down = "Server: the cluster link is down; chat goes on among the people on this server.";
    let back = "Server: the cluster link is back; you are chatting with every server again.";
    for c in [&mut alice, &mut bob, &mut carol] {
        c.expect(down).await;
        c.expect(back).await;
    }
    // Only once each way, however many attempts the reconnect took: the next line anyone
    // gets is chat.
    alice.send("after").await;
    bob.expect("alice: after").await;
    carol.expect("alice: after").await;
    carol.send("and back").await;
    alice.expect("carol: and back").await;
    bob.expect("carol: and back").await;
    // The claims are in the broker's store, which outlived it.
    let mut late = Client::connect(b.addr).await;
    late.expect_prompt().await;
    late.send("alice").await;
    late.expect("Error: the nickname alice is already taken; choose another.")
        .await;
}

/// Prometheus on a node shows the cluster: the link's state (0 while the broker is away), the
/// people on each node by name, the nodes heard from, and the two loss counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_shows_the_link_and_the_people_on_each_node() {
    if !broker::available() {
        return;
    }
    let mut broker = Broker::start().await;
    let a = Server::start(Options {
        args: &[
            "--cluster",
            &broker.url,
            "--node-name",
            "a",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        ..Default::default()
    })
    .await;
    let b = node(&broker, "b").await;
    let metrics = a.metrics_addr().expect("a metrics address in the log");
    let mut alice = Client::join(a.addr, "alice").await;
    let _bob = Client::join(b.addr, "bob").await;
    alice.expect("bob has joined the chat.").await;
    let _carol = Client::join(b.addr, "carol").await;
    alice.expect("carol has joined the chat.").await;
    let scrape = || async {
        let (status, body) = support::http_get(metrics, "/metrics").await;
        assert_eq!(status, 200);
        body
    };
    let body = scrape().await;
    for line in [
        "linechat_cluster_link_up 1",
        "linechat_cluster_people{node=\"a\"} 1",
        "linechat_cluster_people{node=\"b\"} 2",
        "linechat_cluster_nodes_heard 1",
        "linechat_cluster_events_not_relayed_total 0",
        "linechat_cluster_events_given_up_total 0",
    ] {
        assert!(body.lines().any(|l| l == line), "{line} in:\n{body}");
    }
    let down = "Server: the cluster link is down; chat goes on among the people on this server.";
    let watch = async {
        alice.expect(down).await;
        let body = scrape().await;
        assert!(
            body.lines().any(|l| l == "linechat_cluster_link_up 0"),
            "{body}"
        );
    };
    tokio::join!(broker.restart(std::time::Duration::from_secs(2)), watch);
    alice
        .expect("Server: the cluster link is back; you are chatting with every server again.")
        .await;
    let body = scrape().await;
    assert!(
        body.lines().any(|l| l == "linechat_cluster_link_up 1"),
        "{body}"
    );
}

/// A node killed outright (SIGKILL: no goodbye to the broker): the other nodes tell their
/// rooms its people have left, and free their names, within the contract's 20 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_names_are_free_within_20_s() {
    let Some((_broker, mut a, b)) = two_nodes().await else {
        return;
    };
    let _alice = Client::join(a.addr, "alice").await;
    let mut carol = Client::join(b.addr, "carol").await;
    // b knows alice from a's heartbeat (she arrived before anyone was on b to be told).
    until(
        &mut carol,
        "/who",
        "In lobby (2): alice (on a), carol (on b)",
    )
    .await;
    let mut other = Client::connect(b.addr).await;
    other.expect_prompt().await;
    other.send("alice").await;
    other
        .expect("Error: the nickname alice is already taken; choose another.")
        .await;
    other.expect_prompt().await;
    a.child.kill().await.expect("kill node a");
    let killed = tokio::time::Instant::now();
    carol.wait = std::time::Duration::from_secs(20);
    carol
        .expect("alice has left the chat (connection to their server lost).")
        .await;
    eprintln!("told after {:?}", killed.elapsed());
    until(&mut carol, "/who", "In lobby (1): carol (on b)").await;
    take_when_free(
        &mut other,
        "alice",
        killed + std::time::Duration::from_secs(20),
    )
    .await;
    eprintln!("freed {:?} after the kill", killed.elapsed());
}

/// A broker outage longer than the liveness bound silences every node at once; that frees
/// nobody's name once it is back (each node starts watching anew after an outage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_broker_outage_frees_no_living_name() {
    let Some((mut broker, a, b)) = two_nodes().await else {
        return;
    };
    let mut alice = Client::join(a.addr, "alice").await;
    // Longer than DEAD_AFTER (10 s) in src/cluster.rs.
    broker.restart(std::time::Duration::from_secs(12)).await;
    alice.wait = std::time::Duration::from_secs(30);
    alice
        .expect("Server: the cluster link is down; chat goes on among the people on this server.")
        .await;
    alice
        .expect("Server: the cluster link is back; you are chatting with every server again.")
        .await;
    // Two sweeps' time: a node that judged by the silence before the outage would free
    // alice's name in its first sweep after it.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let mut other = Client::connect(b.addr).await;
    other.expect_prompt().await;
    other.send("alice").await;
    other
        .expect("Error: the nickname alice is already taken; choose another.")
        .await;
}

/// People on other nodes: their arrivals and departures are told as local ones are, and
/// `/who`, `/rooms` and `/metrics` list them with their node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_on_other_nodes_are_told_and_listed_with_their_node() {
    let Some((_broker, a, b)) = two_nodes().await else {
        return;
    };
    let mut alice = Client::join(a.addr, "alice").await;
    let mut bob = Client::join(b.addr, "bob").await;
    alice.expect("bob has joined the chat.").await;
    // What a heard of bob's arrival is listed at once; b learns of alice, who came before
    // anyone was on b, from a's next heartbeat.
    let both = "In lobby (2): alice (on a), bob (on b)";
    assert_eq!(alice.command("/who").await, [both]);
    until(&mut bob, "/who", both).await;
    bob.command("/join dev").await;
    alice.expect("bob has left the room.").await;
    assert_eq!(alice.command("/who").await, ["In lobby (1): alice (on a)"]);
    // a follows no room called dev: it learns where bob went from b's heartbeat.
    until(&mut alice, "/who dev", "In dev (1): bob (on b)").await;
    let rooms = alice.command("/rooms").await;
    assert!(
        rooms.iter().any(|l| l == "  dev: 1 person, 0 messages"),
        "{rooms:?}"
    );
    let metrics = alice.command("/metrics").await;
    assert!(
        metrics.iter().any(|l| l
            == "Cluster: node a, 2 people in all (1 here, 1 on b); 1 other node heard from; 0 events not relayed (queue full)"),
        "{metrics:?}"
    );
    bob.command("/join lobby").await;
    alice.expect("bob has joined the room.").await;
    bob.send("/quit").await;
    alice.expect("bob has left the chat.").await;
    assert_eq!(alice.command("/who").await, ["In lobby (1): alice (on a)"]);
}

/// A private message crosses to the node its recipient is on, over that node's own subject,
/// both ways; a name no node lists is the usual error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_messages_reach_the_recipients_node() {
    let Some((_broker, a, b)) = two_nodes().await else {
        return;
    };
    let mut alice = Client::join(a.addr, "alice").await;
    let mut bob = Client::join(b.addr, "bob").await;
    alice.expect("bob has joined the chat.").await;
    assert_eq!(
        alice.command("/msg bob psst").await,
        ["[private to bob] psst"]
    );
    bob.expect("[private] alice: psst").await;
    until(&mut bob, "/who", "In lobby (2): alice (on a), bob (on b)").await;
    // Case-blind, and the reply names the recipient as they chose their name.
    assert_eq!(
        bob.command("/msg ALICE hi").await,
        ["[private to alice] hi"]
    );
    alice.expect("[private] bob: hi").await;
    assert_eq!(
        alice.command("/msg nobody hello?").await,
        ["Error: nobody called nobody is connected."]
    );
    // Nothing else reached either of them: a private message is not a room's.
    assert!(alice.sync().await.is_empty());
    assert!(bob.sync().await.is_empty());
}

/// A node that stops reading and writing altogether (SIGSTOP) slows nobody else: the other
/// two nodes' people chat on, every line arriving in order while it is stopped. When it runs again it catches up on what the broker
/// held for it (well inside the broker's per-connection pending limit) and chats again, with
/// no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_node_slows_nobody_else() {
    if !broker::available() {
        return;
    }
    const LINES: usize = 2000;
    let broker = Broker::start().await;
    let (n1, n2, n3) = (
        node(&broker, "n1").await,
        node(&broker, "n2").await,
        node(&broker, "n3").await,
    );
    let mut alice = Client::join(n1.addr, "alice").await;
    let mut bob = Client::join(n2.addr, "bob").await;
    let mut carol = Client::join(n3.addr, "carol").await;
    let all = "In lobby (3): alice (on n1), bob (on n2), carol (on n3)";
    for c in [&mut alice, &mut bob, &mut carol] {
        until(c, "/who", all).await;
    }
    signal(n2.pid, "-STOP");
    let stalled = tokio::time::Instant::now();
    let sending = tokio::spawn(async move {
        for k in 0..LINES {
            alice.send(&format!("line {k}")).await;
        }
        alice
    });
    for k in 0..LINES {
        carol.expect(&format!("alice: line {k}")).await;
    }
    let took = stalled.elapsed();
    let mut alice = sending.await.unwrap();
    eprintln!("{LINES} lines crossed n1 -> n3 in {took:?} while n2 was stopped");
    // n2 runs again only now: everything above crossed while it was stopped.
    signal(n2.pid, "-CONT");
    for k in 0..LINES {
        bob.expect(&format!("alice: line {k}")).await;
    }
    bob.send("back").await;
    alice.expect("bob: back").await;
    carol.expect("bob: back").await;
}

/// The conflict rule after an outage. A node silent past the liveness bound (stopped here,
/// SIGSTOP, as a cut-off node is silent) is taken for dead: its people are told as gone and
/// their names freed, and someone on another node takes one. When it runs again it finds its
/// entry swept, claims its people's names again, and the one whose name the broker now gives
/// to someone else is renamed to a guest name and told why. Nobody is disconnected, no node
/// restarts, and the renamed person chats on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_taken_while_its_node_was_silent_goes_to_the_new_holder() {
    let Some((_broker, a, b)) = two_nodes().await else {
        return;
    };
    let mut carol = Client::join(a.addr, "carol").await;
    let mut alice = Client::join(b.addr, "alice").await;
    carol.expect("alice has joined the chat.").await;
    signal(b.pid, "-STOP");
    carol.wait = std::time::Duration::from_secs(20);
    carol
        .expect("alice has left the chat (connection to their server lost).")
        .await;
    // The name is freed right after the notice.
    let mut other = Client::connect(a.addr).await;
    other.expect_prompt().await;
    take_when_free(&mut other, "alice", tokio::time::Instant::now() + WAIT).await;
    carol.expect("alice has joined the chat.").await;
    signal(b.pid, "-CONT");
    alice.wait = std::time::Duration::from_secs(10);
    // What b missed while stopped comes first: the other alice's arrival.
    let before = alice
        .skip_until("Server: while this server was cut off from the cluster, someone on a took the nickname alice; you are now guest-1.")
        .await;
    assert!(
        before.iter().all(|l| l == "alice has joined the chat."),
        "{before:?}"
    );
    until(
        &mut carol,
        "/who",
        "In lobby (3): alice (on a), carol (on a), guest-1 (on b)",
    )
    .await;
    alice.send("still here").await;
    carol.expect("guest-1: still here").await;
}

/// One node cut off from the broker while the other is not: a network namespace pair this
/// test makes (the broker and node a in one, node c in the other, joined by a veth), and an
/// nft rule dropping every packet between c and the broker both ways. c's people are told
/// the link is down and chat on there; a's are told c's people left. Once the rule goes, c
/// rejoins by itself: it says so, what was said on c meanwhile reaches a once, c's people
/// are listed on a again and keep their names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_cut_off_rejoins_by_itself() {
    if !broker::available() || !lab::available("one_node_cut_off_rejoins_by_itself") {
        return;
    }
    let lab = lab::Lab::new();
    let broker = Broker::start_in(Some(&lab.server_ns)).await;
    let port = broker.url.rsplit(':').next().unwrap().to_owned();
    let in_ns = |ns: &str, url: String, name: &'static str| {
        let ns = ns.to_owned();
        async move {
            let wrap = ["ip", "netns", "exec", &ns];
            Server::start(Options {
                args: &["--cluster", &url, "--node-name", name, "--rate-limit", "0"],
                wrap: &wrap,
                ..Default::default()
            })
            .await
        }
    };
    let a = in_ns(&lab.server_ns, format!("nats://127.0.0.1:{port}"), "a").await;
    let c = in_ns(
        &lab.client_ns,
        format!("nats://{}:{port}", lab.server_ip),
        "c",
    )
    .await;
    let join = |ns: String, addr: std::net::SocketAddr, nick: &'static str| async move {
        let stream = lab::Lab::within(&ns, || std::net::TcpStream::connect(addr).expect("connect"));
        let mut client = Client::from_std(stream);
        client.register(nick).await;
        client
    };
    let mut alice = join(lab.server_ns.clone(), a.addr, "alice").await;
    let mut carol = join(lab.client_ns.clone(), c.addr, "carol").await;
    alice.expect("carol has joined the chat.").await;
    // Cut: nothing from the broker's port reaches c, and nothing from c reaches the broker.
    lab.nft(&lab.client_ns, "add table inet chaos");
    lab.nft(
        &lab.client_ns,
        "'add chain inet chaos in { type filter hook input priority 0; policy accept; }'",
    );
    lab.nft(
        &lab.client_ns,
        &format!("add rule inet chaos in tcp sport {port} drop"),
    );
    lab.nft(&lab.server_ns, "add table inet chaos");
    lab.nft(
        &lab.server_ns,
        "'add chain inet chaos in { type filter hook input priority 0; policy accept; }'",
    );
    lab.nft(
        &lab.server_ns,
        &format!(
            "add rule inet chaos in ip saddr {} tcp dport {port} drop",
            lab.client_ip
        ),
    );
    let cut = tokio::time::Instant::now();
    carol.wait = std::time::Duration::from_secs(20);
    alice.wait = std::time::Duration::from_secs(20);
    carol
        .expect("Server: the cluster link is down; chat goes on among the people on this server.")
        .await;
    eprintln!("c told after {:?}", cut.elapsed());
    carol.send("said while cut off").await;
    alice
        .expect("carol has left the chat (connection to their server lost).")
        .await;
    eprintln!("a told after {:?}", cut.elapsed());
    lab.heal();
    carol
        .expect("Server: the cluster link is back; you are chatting with every server again.")
        .await;
    alice.expect("carol: said while cut off").await;
    until(
        &mut alice,
        "/who",
        "In lobby (2): alice (on a), carol (on c)",
    )
    .await;
    // carol kept her name: nobody took it meanwhile, and c claimed it again.
    let stream = lab::Lab::within(&lab.server_ns, || {
        std::net::TcpStream::connect(a.addr).unwrap()
    });
    let mut other = Client::from_std(stream);
    other.expect_prompt().await;
    other.send("carol").await;
    other
        .expect("Error: the nickname carol is already taken; choose another.")
        .await;
    // And nothing arrived twice.
    assert!(alice.sync().await.is_empty());
    drop(broker);
}

/// Sends `signal` to a node this test started, by its PID.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Answers the prompt with `name` until it is free (told taken meanwhile, or that the cluster
/// cannot confirm it while this node's link is still coming back), by `deadline`.
async fn take_when_free(client: &mut Client, name: &str, deadline: tokio::time::Instant) {
    loop {
        client.send(name).await;
        let line = client.line().await;
        if line == format!("Welcome to the chat, {name}!") {
            return;
        }
        // A node whose link is not back yet after a broker restart cannot ask the broker:
        // that is "not yet" too (other nodes may reconnect later than the one that told).
        let unsure = line.starts_with("Error: the cluster cannot confirm that name now (");
        if !unsure {
            assert_eq!(
                line,
                format!("Error: the nickname {name} is already taken; choose another."),
                "the answer at the prompt"
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} was still held at the deadline"
        );
        client.expect_prompt().await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Runs `command` until its one-line reply is `want` (within WAIT): for what other nodes'
/// heartbeats bring, every 2 s.
async fn until(client: &mut Client, command: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = client.command(command).await;
        if got == [want] {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: {command} says {got:?}, not {want:?}",
            client.nick
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Fan-out at the edge: a node follows a room's subject only while it has members in it, so a
/// message crosses the broker once per node with people in the room, and not at all to the
/// others. Read from the broker's own list of each connection's subscriptions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_follows_only_the_rooms_its_people_are_in() {
    let Some((broker, a, b)) = two_nodes().await else {
        return;
    };
    let mut alice = Client::join(a.addr, "alice").await;
    let mut bob = Client::join(b.addr, "bob").await;
    let _carol = Client::join(a.addr, "carol").await;
    alice.command("/join dev").await;
    follows(
        &broker,
        "a",
        &[
            "lc.live.dev",
            "lc.live.lobby",
            "lc.node.a",
            "lc.room.dev",
            "lc.room.lobby",
        ],
    )
    .await;
    // b has nobody in dev, so dev's messages do not cross to it.
    follows(
        &broker,
        "b",
        &["lc.live.lobby", "lc.node.b", "lc.room.lobby"],
    )
    .await;
    // A netcat user is in one room at a time: bob's move empties b's lobby.
    bob.command("/join dev").await;
    follows(&broker, "b", &["lc.live.dev", "lc.node.b", "lc.room.dev"]).await;
    alice.send("now bob is here").await;
    bob.expect("alice: now bob is here").await;
    // b's last member left dev: b stops following it, and follows the lobby again.
    bob.command("/join lobby").await;
    follows(
        &broker,
        "b",
        &["lc.live.lobby", "lc.node.b", "lc.room.lobby"],
    )
    .await;
    // And a stops following the lobby once nobody of a's is left in it.
    drop(_carol);
    follows(&broker, "a", &["lc.live.dev", "lc.node.a", "lc.room.dev"]).await;
}

/// Fan-out at the edge, counted by the broker: lines said on node a to a lobby with 20 people
/// on node b cost b's connection one message from the broker each, not one per person, and
/// node c, with nobody in the lobby, none. Read from the broker's per-connection counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_crosses_the_broker_once_per_node() {
    if !broker::available() {
        return;
    }
    const LINES: u64 = 200;
    const PEOPLE: usize = 20;
    // What else reaches a node's connection in the time the lines take: its heartbeat's
    // acknowledgement and its sweep's reads, a dozen or so every 2 s.
    const OTHER_TRAFFIC: u64 = 100;
    let broker = Broker::start().await;
    let (a, b, c) = (
        node(&broker, "a").await,
        node(&broker, "b").await,
        node(&broker, "c").await,
    );
    let mut listeners = Vec::new();
    for i in 0..PEOPLE {
        listeners.push(Client::join(b.addr, &format!("b{i}")).await);
    }
    let mut elsewhere = Client::join(c.addr, "carol").await;
    elsewhere.command("/join elsewhere").await;
    let mut sender = Client::join(a.addr, "sender").await;
    let want = format!("In lobby ({}): ", PEOPLE + 1);
    for l in &mut listeners {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !l.command("/who").await.iter().any(|r| r.starts_with(&want)) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: not everyone listed",
                l.nick
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let (b0, c0) = (
        broker.messages_to("linechat b").await,
        broker.messages_to("linechat c").await,
    );
    for k in 0..LINES {
        sender.send(&format!("line {k}")).await;
    }
    for l in &mut listeners {
        for k in 0..LINES {
            l.expect(&format!("sender: line {k}")).await;
        }
    }
    let (b1, c1) = (
        broker.messages_to("linechat b").await,
        broker.messages_to("linechat c").await,
    );
    let (to_b, to_c) = (b1 - b0, c1 - c0);
    eprintln!("{LINES} lines to {PEOPLE} people on b: the broker sent b {to_b} messages, c {to_c}");
    assert!(
        (LINES..LINES + OTHER_TRAFFIC).contains(&to_b),
        "b got {to_b} messages for {LINES} lines to {PEOPLE} people (per person would be {})",
        LINES * PEOPLE as u64
    );
    assert!(
        to_c < OTHER_TRAFFIC,
        "c, with nobody in the lobby, got {to_c}"
    );
}

/// Waits (up to WAIT) until node `node` subscribes to exactly `subjects` (its own
/// `lc.node.<N>`, for private messages, always among them) besides `lc.flush.>`, which every
/// node follows, which the link does soon after the hub says a room gained its first member
/// or lost its last.
async fn follows(broker: &Broker, node: &str, subjects: &[&str]) {
    let name = format!("linechat {node}");
    let deadline = tokio::time::Instant::now() + WAIT;
    let subjects: Vec<&str> = std::iter::once("lc.flush.>")
        .chain(subjects.iter().copied())
        .collect();
    loop {
        let got = broker.subscriptions(&name).await;
        if got == subjects {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {node} follows {got:?}, not {subjects:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// What `--cluster` cannot do yet (`--data-dir`) is refused at start, with one line saying
/// why, every listener is served, and a broker that is not there is an error, not a server
/// that runs alone.
#[tokio::test]
async fn what_the_cluster_cannot_serve_is_refused_at_start() {
    let bin = env!("CARGO_BIN_EXE_linechat");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(args)
            .output()
            .expect("run linechat");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Every listener is served: IRC and the web get as far as the broker, which is not there.
    for listen in ["irc://127.0.0.1:0", "http://127.0.0.1:0"] {
        let (code, err) = run(&["--listen", listen, "--cluster", "nats://127.0.0.1:1"]);
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains("cannot reach the cluster broker at nats://127.0.0.1:1"),
            "{listen}: {err}"
        );
    }
    let dir = std::env::temp_dir().join(format!("lc-cluster-dd-{}", std::process::id()));
    let (code, err) = run(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.to_str().unwrap(),
        "--cluster",
        "nats://127.0.0.1:1",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("--cluster cannot be used with --data-dir yet"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let (code, err) = run(&["--listen", "127.0.0.1:0", "--cluster", "127.0.0.1:4222"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("expected nats://HOST:PORT"), "{err}");
    let (code, err) = run(&["--listen", "127.0.0.1:0", "--node-name", "x"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("--node-name and --cluster-creds need --cluster"),
        "{err}"
    );
    // Port 1 on loopback: nobody listens there.
    let (code, err) = run(&["--listen", "127.0.0.1:0", "--cluster", "nats://127.0.0.1:1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("cannot reach the cluster broker at nats://127.0.0.1:1"),
        "{err}"
    );
}

async fn futures_join<T: Send + 'static>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks.collect::<Vec<_>>() {
        out.push(t.await.expect("task"));
    }
    out
}

/// A broker, node a following the lobby with bob in it, and a connection of the test's own
/// to the broker: for tests that publish an origin's events by hand.
async fn by_hand() -> (Broker, Server, Client, async_nats::Client) {
    by_hand_with(&[]).await
}

/// Event `rseq` of node x's boot 1 in the lobby, zed saying `text`, as x would publish it
/// ([`zed_says`] for the numbered lines).
fn zed_event(rseq: u64, text: &str) -> String {
    serde_json::json!({
        "node": "x", "boot": 1, "seq": rseq, "rseq": rseq, "room": "lobby", "nick": "zed",
        "kind": "msg", "text": text, "at_ms": 0,
    })
    .to_string()
}

/// [`by_hand`], the node started with `more` options.
async fn by_hand_with(more: &[&str]) -> (Broker, Server, Client, async_nats::Client) {
    let broker = Broker::start().await;
    let a = node_with(&broker, "a", more).await;
    let bob = Client::join(a.addr, "bob").await;
    follows(
        &broker,
        "a",
        &["lc.live.lobby", "lc.node.a", "lc.room.lobby"],
    )
    .await;
    let nats = async_nats::connect(broker.url.as_str())
        .await
        .expect("connect to the broker");
    (broker, a, bob, nats)
}

/// Events of one origin that reach a node out of order (a publish that failed mid-window was
/// sent again after a later one had been stored) are put back in order by their `rseq`, each
/// once; a missing one is waited for, then given up, and not shown when it comes after all.
/// The events are published by hand, as a node of the past would have, so the order is the
/// test's to choose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_out_of_order_reach_people_in_order_once() {
    if !broker::available() {
        return;
    }
    let (_broker, _node, mut bob, nats) = by_hand().await;
    let publish = |rseq: u64, text: &str| {
        let event = serde_json::json!({
            "node": "x", "boot": 1, "seq": rseq, "rseq": rseq, "room": "lobby", "nick": "zed",
            "kind": "msg", "text": text, "at_ms": 0,
        });
        let nats = nats.clone();
        async move {
            nats.publish("lc.room.lobby", event.to_string().into())
                .await
                .expect("publish");
            nats.flush().await.expect("flush");
        }
    };
    for (rseq, text) in [
        (1, "one"),
        (3, "three"),
        (2, "two"),
        (2, "two again"),
        (1, "one again"),
        (4, "four"),
    ] {
        publish(rseq, text).await;
    }
    for want in ["zed: one", "zed: two", "zed: three", "zed: four"] {
        bob.expect(want).await;
    }
    // 5 is missing: 6 waits for it (GAP_WAIT, 5 s), then comes without it.
    publish(6, "six").await;
    let held = tokio::time::timeout(std::time::Duration::from_secs(1), bob.line()).await;
    assert!(held.is_err(), "six was not held back: {held:?}");
    bob.wait = std::time::Duration::from_secs(15);
    bob.expect("zed: six").await;
    publish(5, "five, too late").await;
    publish(7, "seven").await;
    bob.expect("zed: seven").await;
}

/// What a live copy lost comes with the origin's record of the room: live events 1 and 3
/// of an origin (2 lost on the way), then its record of 1-3, reach a person once each and in
/// order; the same record again, and a live copy of what was delivered, show nothing; the
/// next live one shows at once. Published by hand, so what is lost is the test's to choose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_brings_what_a_live_copy_lost_once_in_order() {
    if !broker::available() {
        return;
    }
    let (_broker, _node, mut bob, nats) = by_hand().await;
    let event = zed_event;
    let publish = |subject: &'static str, body: String| {
        let nats = nats.clone();
        async move {
            nats.publish(subject, body.into()).await.expect("publish");
            nats.flush().await.expect("flush");
        }
    };
    let record = format!(
        "R{}\n{}\n{}\n{}\n",
        serde_json::json!({"node": "x", "boot": 1, "room": "lobby", "first": 1, "last": 3}),
        event(1, "one"),
        event(2, "two"),
        event(3, "three"),
    );
    publish("lc.live.lobby", event(1, "one")).await;
    publish("lc.live.lobby", event(3, "three")).await;
    bob.expect("zed: one").await;
    let held = tokio::time::timeout(std::time::Duration::from_millis(500), bob.line()).await;
    assert!(held.is_err(), "three was not held for two: {held:?}");
    publish("lc.room.lobby", record.clone()).await;
    bob.expect("zed: two").await;
    bob.expect("zed: three").await;
    publish("lc.room.lobby", record).await;
    publish("lc.live.lobby", event(2, "two again")).await;
    publish("lc.live.lobby", event(4, "four")).await;
    bob.expect("zed: four").await;
}

/// A record whose head does not match its events (here: it claims the three events already
/// delivered, and holds two new ones) is not trusted to skip them: its events are taken one
/// by one, on their own fields, and nobody loses a line to a wrong head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_head_does_not_match_its_events_costs_no_line() {
    if !broker::available() {
        return;
    }
    let (_broker, _node, mut bob, nats) = by_hand().await;
    let event = |rseq: u64| zed_says("lobby", rseq, 0);
    for rseq in 1..=3 {
        nats.publish("lc.live.lobby", event(rseq).into())
            .await
            .expect("publish");
    }
    nats.flush().await.expect("flush");
    for rseq in 1..=3 {
        bob.expect(&format!("zed: line {rseq}")).await;
    }
    let wrong = format!(
        "R{}\n{}\n{}\n",
        serde_json::json!({"node": "x", "boot": 1, "room": "lobby", "first": 1, "last": 3}),
        event(4),
        event(5),
    );
    nats.publish("lc.room.lobby", wrong.into())
        .await
        .expect("publish");
    nats.flush().await.expect("flush");
    bob.expect("zed: line 4").await;
    bob.expect("zed: line 5").await;
}

/// Every ask for a node's records of a room is answered, once, and only when what its people
/// said there before is in the stream: the ask with a record waiting has it written, one with
/// none waits behind what the publisher holds. A flood of asks costs the node no task each
/// (the publisher answers them) and loses none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ask_for_records_is_answered_once_what_was_said_is_stored() {
    if !broker::available() {
        return;
    }
    const ASKS: usize = 500;
    let (_broker, _node, mut bob, nats) = by_hand().await;
    let inbox = nats.new_inbox();
    let mut answers = nats.subscribe(inbox.clone()).await.expect("subscribe");
    let js = async_nats::jetstream::new(nats.clone());
    let stream = js.get_stream("LINECHAT_ROOMS").await.expect("the stream");
    for i in 0..5 {
        bob.command(&format!("said {i}")).await;
        nats.publish_with_reply("lc.flush.lobby", inbox.clone(), "".into())
            .await
            .expect("ask");
        tokio::time::timeout(WAIT, answers.next())
            .await
            .expect("an answer in time")
            .expect("an answer");
        let last = stream
            .get_last_raw_message_by_subject("lc.room.lobby")
            .await
            .expect("a record of the lobby");
        let payload = String::from_utf8_lossy(&last.payload);
        assert!(payload.contains(&format!("said {i}")), "{payload}");
    }
    for _ in 0..ASKS {
        nats.publish_with_reply("lc.flush.lobby", inbox.clone(), "".into())
            .await
            .expect("ask");
    }
    nats.flush().await.expect("flush");
    for n in 0..ASKS {
        let answer = tokio::time::timeout(WAIT, answers.next()).await;
        assert!(
            matches!(answer, Ok(Some(_))),
            "answer {n} of {ASKS}: {answer:?}"
        );
    }
    let more = tokio::time::timeout(std::time::Duration::from_millis(300), answers.next()).await;
    assert!(more.is_err(), "an ask answered twice");
}

/// More events behind one gap than a node holds: what arrives past the limit is dropped,
/// and here its origin's record came (and went) while the node was full. Once the gap is
/// given up, the node reads the room again from the stream, so those events still reach bob,
/// in order, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_dropped_past_the_held_limit_are_read_again_once_the_gap_closes() {
    if !broker::available() {
        return;
    }
    // As src/cluster.rs's HELD_MAX: 8 publishing windows of 256.
    const HELD: u64 = 8 * 256;
    // bob's queue takes the whole gap's worth at once when it is given up.
    let (_broker, _node, mut bob, nats) = by_hand_with(&["--queue-bytes", "16777216"]).await;
    let event = |rseq: u64| zed_says("lobby", rseq, 0);
    nats.publish("lc.live.lobby", event(1).into())
        .await
        .expect("publish");
    nats.flush().await.expect("flush");
    bob.expect("zed: line 1").await;
    // 2 never comes; 3 ..= HELD + 2 are held behind it, the rest is past the limit.
    let last = HELD + 10;
    for rseq in 3..=HELD + 2 {
        nats.publish("lc.live.lobby", event(rseq).into())
            .await
            .expect("publish");
    }
    nats.flush().await.expect("flush");
    // x's record of 3 onwards, as x writes it (2's was lost with it): it arrives while the
    // node holds all it may, so most of it is dropped.
    let events: Vec<String> = (3..=last).map(event).collect();
    let record = format!(
        "R{}\n{}\n",
        serde_json::json!({"node": "x", "boot": 1, "room": "lobby", "first": 3, "last": last}),
        events.join("\n"),
    );
    let js = async_nats::jetstream::new(nats.clone());
    js.publish("lc.room.lobby", record.into())
        .await
        .expect("publish to the stream")
        .await
        .expect("stored");
    // Given up after GAP_WAIT (5 s): everything held, then what was dropped, read again.
    for rseq in 3..=last {
        bob.expect(&format!("zed: line {rseq}")).await;
    }
    let more = tokio::time::timeout(std::time::Duration::from_millis(500), bob.line()).await;
    assert!(more.is_err(), "a line delivered twice: {more:?}");
}

/// Three nodes, and alice (on a) the first in `dev` anywhere, so its operator; bob enters it
/// on b once b lists alice there, carol stays in the lobby on c. Everyone has read past
/// their own entry.
async fn dev_on_three_nodes(broker: &Broker) -> ([Server; 3], Client, Client, Client) {
    let nodes = [
        node(broker, "a").await,
        node(broker, "b").await,
        node(broker, "c").await,
    ];
    let mut alice = Client::join(nodes[0].addr, "alice").await;
    let mut bob = Client::join(nodes[1].addr, "bob").await;
    let carol = Client::join(nodes[2].addr, "carol").await;
    alice.command("/join dev").await;
    until(&mut bob, "/who dev", "In dev (1): alice (on a)").await;
    bob.command("/join dev").await;
    alice.skip_until("bob has joined the room.").await;
    (nodes, alice, bob, carol)
}

/// A topic set on one node is the room's topic on every node: told live to the room's
/// people on another node as a topic set there reads, shown by `/topic` there with who set
/// it, and shown to someone who enters the room later on a third node, read from the
/// stream. bob, who entered a room people elsewhere were in, is not its operator: the
/// locked topic is refused him, until alice unlocks it everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_set_on_one_node_is_the_topic_on_every_node() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start().await;
    let (_nodes, mut alice, mut bob, mut carol) = dev_on_three_nodes(&broker).await;
    alice.command("/topic release on Friday").await;
    bob.expect("alice set the topic of dev: release on Friday")
        .await;
    assert_eq!(
        bob.command("/topic").await,
        ["Topic of dev: release on Friday (set by alice)"]
    );
    assert_eq!(
        bob.command("/topic mine now").await,
        ["Error: the topic of dev is locked; only its operators may change it."]
    );
    let entry = carol.command("/join dev").await;
    assert!(
        entry
            .iter()
            .any(|l| l == "Topic of dev: release on Friday (set by alice)"),
        "{entry:?}"
    );
    alice.command("/mode -t").await;
    for c in [&mut bob, &mut carol] {
        c.skip_until("alice unlocked the topic of dev: anyone in it may change it.")
            .await;
    }
    bob.command("/topic release on Monday").await;
    for c in [&mut alice, &mut carol] {
        c.skip_until("bob set the topic of dev: release on Monday")
            .await;
        assert_eq!(
            c.command("/topic").await,
            ["Topic of dev: release on Monday (set by bob)"]
        );
    }
}

/// Room flags set on one node hold on every node: `+m` set by alice on a stops bob, who has
/// no voice, speaking on b, and someone entering later on c finds the room moderated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_moderated_on_one_node_is_moderated_on_every_node() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start().await;
    let (_nodes, mut alice, mut bob, mut carol) = dev_on_three_nodes(&broker).await;
    alice.command("/mode +m").await;
    bob.expect("alice moderated dev: only its operators and those with a voice may speak.")
        .await;
    assert_eq!(
        bob.command("not heard").await,
        ["Error: dev is moderated: only its operators and those with a voice may speak; your message was not sent."]
    );
    carol.command("/join dev").await;
    assert_eq!(
        carol.command("/mode").await,
        ["Modes of dev: moderated (+m), topic locked (+t)."]
    );
    alice.command("/mode -m").await;
    bob.skip_until("alice lifted the moderation of dev.").await;
    bob.send("heard").await;
    carol.skip_until("bob: heard").await;
}

/// An invitation for someone on another node: the inviter's node checks the right (only an
/// operator invites into an invite-only room), the invited person's node records it and tells
/// them, and they may then enter the invite-only room there, once. Someone on that node who
/// was not invited is refused, though nobody there is in the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_reaches_someone_on_another_node_and_lets_them_in_once() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start().await;
    let a = node(&broker, "a").await;
    let b = node(&broker, "b").await;
    let mut alice = Client::join(a.addr, "alice").await;
    let mut dave = Client::join(a.addr, "dave").await;
    let mut bob = Client::join(b.addr, "bob").await;
    let mut carol = Client::join(b.addr, "carol").await;
    alice.command("/join dev").await;
    dave.command("/join dev").await;
    alice.command("/mode +i").await;
    dave.skip_until("alice made dev invite-only: only those an operator invites may come in.")
        .await;
    let shut = ["Error: dev is invite-only; one of its operators can /invite you."];
    until(
        &mut carol,
        "/who dev",
        "In dev (2): alice (on a), dave (on a)",
    )
    .await;
    assert_eq!(carol.command("/join dev").await, shut);
    until(
        &mut alice,
        "/who lobby",
        "In lobby (2): bob (on b), carol (on b)",
    )
    .await;
    assert_eq!(
        dave.command("/invite bob").await,
        ["Error: only operators of dev may invite people into it while it is invite-only."]
    );
    assert_eq!(
        alice.command("/invite bob").await,
        ["You invited bob to dev; they may come in once, invite-only or not."]
    );
    bob.skip_until("alice invites you to dev: /join dev enters it.")
        .await;
    let entry = bob.command("/join dev").await;
    assert!(
        entry.iter().any(|l| l.starts_with("You are now in dev")),
        "{entry:?}"
    );
    alice.skip_until("bob has joined the room.").await;
    carol.skip_until("bob has left the room.").await;
    assert_eq!(carol.command("/join dev").await, shut);
    assert_eq!(
        alice.command("/invite bob").await,
        ["Error: bob is already in dev."]
    );
    bob.command("/join lobby").await;
    alice.skip_until("bob has left the room.").await;
    assert_eq!(bob.command("/join dev").await, shut);
}

/// Operator status given on one node to someone on another: their node makes them an
/// operator there, so they may speak in the moderated room and set its locked topic, and
/// every node's people are told; taken away the same way. Someone on another node who is not
/// in the room is refused as on one server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_made_on_another_node_holds_there() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start().await;
    let (_nodes, mut alice, mut bob, mut carol) = dev_on_three_nodes(&broker).await;
    until(&mut alice, "/who lobby", "In lobby (1): carol (on c)").await;
    assert_eq!(
        alice.command("/op carol").await,
        ["Error: carol is not in dev."]
    );
    carol.command("/join dev").await;
    alice.skip_until("carol has joined the room.").await;
    alice.command("/mode +m").await;
    let moderated = "alice moderated dev: only its operators and those with a voice may speak.";
    for c in [&mut bob, &mut carol] {
        c.skip_until(moderated).await;
    }
    alice.command("/op bob").await;
    for c in [&mut bob, &mut carol] {
        c.skip_until("alice made bob an operator of dev.").await;
    }
    bob.send("heard while moderated").await;
    for c in [&mut alice, &mut carol] {
        c.skip_until("bob: heard while moderated").await;
    }
    assert_eq!(
        carol.command("not heard").await,
        ["Error: dev is moderated: only its operators and those with a voice may speak; your message was not sent."]
    );
    bob.command("/topic set by an operator on b").await;
    alice
        .skip_until("bob set the topic of dev: set by an operator on b")
        .await;
    alice.command("/deop bob").await;
    bob.skip_until("alice removed bob from the operators of dev.")
        .await;
    assert_eq!(
        bob.command("not heard either").await,
        ["Error: dev is moderated: only its operators and those with a voice may speak; your message was not sent."]
    );
}

/// A ban set on one node holds on every node: whoever it names is put out of the room on
/// their own node and cannot come back in, and someone entering later on a third node finds
/// it listed; a mute set on one node silences its mask on another; lifting the ban lets the
/// banned back in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_set_on_one_node_holds_on_every_node() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start().await;
    let (_nodes, mut alice, mut bob, mut carol) = dev_on_three_nodes(&broker).await;
    let kicked = "alice kicked bob out of dev (banned).";
    let reply = alice.command("/ban bob").await;
    bob.skip_until("alice banned bob!*@* from dev.").await;
    bob.skip_until(kicked).await;
    // b put him out, and says so to the other nodes: that can come back before the reply's
    // round trip ends, and then it is among the reply's lines.
    if !reply.iter().any(|l| l == kicked) {
        alice.skip_until(kicked).await;
    }
    bob.skip_until("You are now in lobby (just you so far).")
        .await;
    assert_eq!(
        bob.command("/join dev").await,
        ["Error: you are banned from dev."]
    );
    carol.command("/join dev").await;
    assert_eq!(
        carol.command("/ban").await,
        ["Bans in dev (1): bob!*@* (by alice)"]
    );
    alice.command("/mute carol").await;
    carol.skip_until("alice muted carol!*@* in dev.").await;
    assert_eq!(
        carol.command("not heard").await,
        ["Error: you are muted in dev; your message was not sent."]
    );
    alice.command("/unban bob").await;
    carol
        .skip_until("alice lifted the ban on bob!*@* in dev.")
        .await;
    // b, with nobody left in dev, learns the lifted ban from the stream when bob comes back.
    let entry = bob.command("/join dev").await;
    assert!(
        entry.iter().any(|l| l.starts_with("You are now in dev")),
        "{entry:?}"
    );
}

/// A kick is a room event on every node: alice on a puts out bob, on b, whose node takes him
/// out (he lands in the lobby) and everyone is told; and putting out dave, on a, is told on
/// the other nodes, whose lists drop him at once (not a heartbeat later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_reaches_the_node_of_whoever_is_put_out() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start().await;
    let (nodes, mut alice, mut bob, mut carol) = dev_on_three_nodes(&broker).await;
    let mut dave = Client::join(nodes[0].addr, "dave").await;
    dave.command("/join dev").await;
    carol.command("/join dev").await;
    alice.skip_until("carol has joined the room.").await;
    bob.skip_until("carol has joined the room.").await;
    assert_eq!(
        alice.command("/kick bob enough").await,
        ["alice kicked bob out of dev (enough)."]
    );
    for c in [&mut bob, &mut carol] {
        c.skip_until("alice kicked bob out of dev (enough).").await;
    }
    bob.skip_until("You are now in lobby (just you so far).")
        .await;
    until(
        &mut carol,
        "/who dev",
        "In dev (3): alice (on a), carol (on c), dave (on a)",
    )
    .await;
    alice.command("/kick dave").await;
    carol.skip_until("alice kicked dave out of dev.").await;
    assert_eq!(
        carol.command("/who dev").await,
        ["In dev (2): alice (on a), carol (on c)"]
    );
}

/// The same from IRC, which goes through the same hub calls: a topic and a mode set with
/// IRC's `TOPIC` and `MODE` on a reach a netcat user on b, and a topic set on b reaches the
/// IRC user as IRC's `TOPIC`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_modes_set_over_irc_reach_every_node() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start().await;
    let (_a, a_irc) = irc::irc_node(&broker, "a").await;
    let b = node(&broker, "b").await;
    let mut ivy = support::IrcClient::connect(a_irc).await;
    ivy.register("ivy", &[]).await;
    ivy.send("JOIN #dev").await;
    ivy.until(|l| support::irc_command(l) == "366").await;
    let mut bob = Client::join(b.addr, "bob").await;
    until(&mut bob, "/who dev", "In dev (1): ivy (irc, on a)").await;
    bob.command("/join dev").await;
    ivy.send("TOPIC #dev :set over irc").await;
    bob.skip_until("ivy set the topic of dev: set over irc")
        .await;
    ivy.send("MODE #dev -t").await;
    bob.skip_until("ivy unlocked the topic of dev: anyone in it may change it.")
        .await;
    bob.command("/topic set on b").await;
    let told = ivy.until(|l| l.ends_with(" TOPIC #dev :set on b")).await;
    assert!(told.last().unwrap().starts_with(":bob!"), "{told:?}");
}

/// A room made secret on node a is kept out of `/rooms` and `/who dev` on node b, where
/// nobody is in it (a's heartbeat marks it), for carol, who is not in it; bob, on b too,
/// enters it and sees it and its people, and carol still does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_room_is_listed_on_other_nodes_only_to_its_members() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start().await;
    let (a, b) = (node(&broker, "a").await, node(&broker, "b").await);
    let mut alice = Client::join(a.addr, "alice").await;
    let mut bob = Client::join(b.addr, "bob").await;
    let mut carol = Client::join(b.addr, "carol").await;
    alice.command("/join dev").await;
    until(&mut carol, "/who dev", "In dev (1): alice (on a)").await;
    alice.command("/mode +s").await;
    let unlisted = "Error: there is no room called dev; /rooms lists them.";
    until(&mut carol, "/who dev", unlisted).await;
    let no_dev = |rooms: Vec<String>| !rooms.iter().any(|l| l.contains("dev"));
    assert!(no_dev(carol.command("/rooms").await));
    bob.command("/join dev").await;
    alice.skip_until("bob has joined the room.").await;
    carol.skip_until("bob has left the room.").await;
    assert_eq!(
        bob.command("/who dev").await,
        ["In dev (2): alice (on a), bob (on b)"]
    );
    let rooms = bob.command("/rooms").await;
    assert!(
        rooms.iter().any(|l| l.starts_with("* dev: 2 people")),
        "{rooms:?}"
    );
    assert_eq!(carol.command("/who dev").await, [unlisted]);
    assert!(no_dev(carol.command("/rooms").await));
}

/// Everyone `irc` sees listed in `room` by NAMES, and those of them marked operators (`@`),
/// each sorted.
async fn names(irc: &mut support::IrcClient, room: &str) -> (Vec<String>, Vec<String>) {
    irc.send(&format!("NAMES {room}")).await;
    let (mut ops, mut all) = (Vec::new(), Vec::new());
    for line in irc.sync().await {
        if support::irc_command(&line) != "353" {
            continue;
        }
        // The last parameter: after ` :`, or the last word when it is one name.
        let listed = match line.split_once(" :") {
            Some((_, names)) => names,
            None => line.rsplit(' ').next().unwrap_or_default(),
        };
        for name in listed.split_whitespace() {
            let bare = name.trim_start_matches(['@', '+']).to_owned();
            if name.starts_with('@') {
                ops.push(bare.clone());
            }
            all.push(bare);
        }
    }
    ops.sort();
    all.sort();
    (ops, all)
}

/// Waits (within WAIT: another node's operators come with its heartbeat, every 2 s) until
/// every one of `views` lists exactly `people` in `room`, with one operator, the same in
/// every view; that operator. Two operators (each node's own first entrant) never pass:
/// each node shows its own at once, so the views disagree until both show both.
async fn one_operator(
    views: &mut [&mut support::IrcClient],
    room: &str,
    people: &[&str],
) -> String {
    let mut want: Vec<String> = people.iter().map(|p| p.to_string()).collect();
    want.sort();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut seen = Vec::new();
        for view in views.iter_mut() {
            seen.push(names(view, room).await);
        }
        let agreed = seen
            .iter()
            .all(|(ops, all)| *all == want && ops.len() == 1 && *ops == seen[0].0);
        if agreed {
            return seen[0].0[0].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{room}: (operators, everyone) per node: {seen:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Two IRC nodes, `a` and `b`, with `x` registered on a and `y` on b.
async fn two_irc_nodes() -> Option<(Broker, [Server; 2], support::IrcClient, support::IrcClient)> {
    if !broker::available() {
        return None;
    }
    let broker = Broker::start().await;
    let (a, a_irc) = irc::irc_node(&broker, "a").await;
    let (b, b_irc) = irc::irc_node(&broker, "b").await;
    let mut x = support::IrcClient::connect(a_irc).await;
    x.register("x", &[]).await;
    let mut y = support::IrcClient::connect(b_irc).await;
    y.register("y", &[]).await;
    Some((broker, [a, b], x, y))
}

/// Both JOIN `room` at the same instant, and both are in.
async fn join_at_once(x: &mut support::IrcClient, y: &mut support::IrcClient, room: &str) {
    let join = format!("JOIN {room}");
    tokio::join!(x.send(&join), y.send(&join));
    let joined = |l: &str| support::irc_command(l) == "366";
    tokio::join!(x.until(joined), y.until(joined));
}

/// The creator rule made exact by the rooms' claims (`lc_rooms`): two people entering the
/// same new room on two nodes at the same instant, ten rooms over, and in every one exactly
/// one of them is its operator, the same one on both nodes' NAMES. (Before the claims each
/// node made its own entrant the operator: two in every room.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_entering_a_new_room_on_two_nodes_at_once_make_one_operator() {
    let Some((_broker, _nodes, mut x, mut y)) = two_irc_nodes().await else {
        return;
    };
    let mut won = HashMap::new();
    for round in 0..10 {
        let room = format!("#race{round}");
        join_at_once(&mut x, &mut y, &room).await;
        let op = one_operator(&mut [&mut x, &mut y], &room, &["x", "y"]).await;
        *won.entry(op).or_insert(0) += 1;
    }
    eprintln!("operators by name over the rounds: {won:?}");
}

/// `irc` PARTs `room`, and is told.
async fn part(irc: &mut support::IrcClient, room: &str) {
    let nick = irc.nick.clone();
    irc.send(&format!("PART {room}")).await;
    irc.until(|l| l.starts_with(&format!(":{nick}!")) && l.contains(" PART "))
        .await;
}

/// A room emptied on every node is empty: the last leaver's node deletes its claim, and
/// whoever enters next, on either node, alone or two at once, is its operator (one). A
/// node whose last person left while someone on another node stays gives its place up
/// and no more: its next entrant is not the operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_emptied_everywhere_is_created_again_by_its_next_entrant() {
    let Some((broker, _nodes, mut x, mut y)) = two_irc_nodes().await else {
        return;
    };
    let nats = async_nats::connect(broker.url.as_str())
        .await
        .expect("connect to the broker");
    let claims = async_nats::jetstream::new(nats)
        .get_key_value("lc_rooms")
        .await
        .expect("the rooms' claims");
    // Until nobody holds a claim of the room any more (the last leaver's node deleted it).
    let emptied = || async {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let entry = claims.entry("again").await.expect("read the claim");
            if entry
                .as_ref()
                .is_none_or(|e| e.operation != async_nats::jetstream::kv::Operation::Put)
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the claim stayed: {entry:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    for round in 0..3 {
        join_at_once(&mut x, &mut y, "#again").await;
        let op = one_operator(&mut [&mut x, &mut y], "#again", &["x", "y"]).await;
        eprintln!("round {round}: {op}");
        part(&mut x, "#again").await;
        part(&mut y, "#again").await;
        emptied().await;
    }
    // One at a time, on each node in turn: the new entrant creates the room.
    for (round, who) in ["x", "y", "x"].into_iter().enumerate() {
        let irc = if who == "x" { &mut x } else { &mut y };
        irc.send("JOIN #again").await;
        irc.until(|l| support::irc_command(l) == "366").await;
        let got = names(irc, "#again").await.0;
        assert_eq!(got, [who], "alone, round {round}");
        part(irc, "#again").await;
        emptied().await;
    }
    // x creates it; y enters; x leaves and comes back: y was there all along.
    x.send("JOIN #again").await;
    x.until(|l| support::irc_command(l) == "366").await;
    y.send("JOIN #again").await;
    y.until(|l| support::irc_command(l) == "366").await;
    assert_eq!(
        one_operator(&mut [&mut x, &mut y], "#again", &["x", "y"]).await,
        "x"
    );
    part(&mut x, "#again").await;
    x.send("JOIN #again").await;
    x.until(|l| support::irc_command(l) == "366").await;
    let (ops, all) = names(&mut x, "#again").await;
    assert!(ops.is_empty() && all == ["x", "y"], "{ops:?} {all:?}");
}

/// A node killed (SIGKILL) while its person is the only one in a room leaves its place in
/// the room's claim; someone entering the room on another node is not its operator while
/// the dead node's heartbeat entry stands, and is once the entry is swept (the liveness
/// bound, 20 s): the dead node's place is dropped by whoever reads the claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_room_is_created_again_within_the_liveness_bound() {
    let Some((_broker, [mut a, _b], mut x, mut y)) = two_irc_nodes().await else {
        return;
    };
    x.send("JOIN #held").await;
    x.until(|l| support::irc_command(l) == "366").await;
    assert_eq!(names(&mut x, "#held").await.0, ["x"]);
    a.child.kill().await.expect("kill node a");
    let killed = tokio::time::Instant::now();
    let mut tries = 0;
    loop {
        y.send("JOIN #held").await;
        y.until(|l| support::irc_command(l) == "366").await;
        let (ops, _) = names(&mut y, "#held").await;
        tries += 1;
        if ops == ["y"] {
            break;
        }
        // The first try comes well inside the 10 s a node is watched before it is dead:
        // its place still counts, as a node merely slow must.
        if tries == 1 && killed.elapsed() < std::time::Duration::from_secs(5) {
            assert!(ops.is_empty(), "y made the operator at once: {ops:?}");
        }
        assert!(
            killed.elapsed() < std::time::Duration::from_secs(20),
            "y still no operator of #held 20 s after a died"
        );
        part(&mut y, "#held").await;
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    eprintln!("y the operator {:?} after the kill", killed.elapsed());
}

/// The broker silent at an entry: the local rule, told to nobody (whoever enters a room
/// nobody on any node is listed in is its operator), and the node's place in the room's
/// claim is written once the broker answers again, so someone entering the room on another
/// node afterwards is not its operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_the_broker_did_not_answer_takes_its_place_once_it_is_back() {
    let Some((mut broker, _nodes, mut x, mut y)) = two_irc_nodes().await else {
        return;
    };
    let down = |nick: &str| format!(" NOTICE {nick} :the cluster link is down");
    let back = |nick: &str| format!(" NOTICE {nick} :the cluster link is back");
    let restart = tokio::spawn(async move {
        broker.restart(std::time::Duration::from_secs(3)).await;
        broker
    });
    x.until(|l| l.contains(&down("x"))).await;
    x.send("JOIN #quiet").await;
    x.until(|l| support::irc_command(l) == "366").await;
    let (ops, _) = names(&mut x, "#quiet").await;
    assert_eq!(ops, ["x"], "the local rule while the broker is away");
    let broker = restart.await.expect("the broker restarted");
    x.wait = std::time::Duration::from_secs(20);
    x.until(|l| l.contains(&back("x"))).await;
    y.wait = std::time::Duration::from_secs(20);
    y.until(|l| l.contains(&back("y"))).await;
    let nats = async_nats::connect(broker.url.as_str())
        .await
        .expect("connect to the broker");
    let claims = async_nats::jetstream::new(nats)
        .get_key_value("lc_rooms")
        .await
        .expect("the rooms' claims");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let entry = claims.entry("quiet").await.expect("read the claim");
        let value = entry
            .as_ref()
            .map(|e| String::from_utf8_lossy(&e.value).into_owned());
        if value.as_deref().is_some_and(|v| v.contains("\"a.")) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a never took its place in #quiet: {value:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    y.send("JOIN #quiet").await;
    y.until(|l| support::irc_command(l) == "366").await;
    assert_eq!(
        one_operator(&mut [&mut x, &mut y], "#quiet", &["x", "y"]).await,
        "x"
    );
}

/// One event of the by-hand origin `x` (boot 1, `zed`) in `room`: message `rseq` of it,
/// `line <rseq>`, said at `at_ms`.
fn zed_says(room: &str, rseq: u64, at_ms: u64) -> String {
    // By hand, not `json!`: a test fills rooms with hundreds of thousands of these.
    format!(
        r#"{{"node":"x","boot":1,"seq":{rseq},"rseq":{rseq},"room":"{room}","nick":"zed","kind":"msg","text":"line {rseq}","at_ms":{at_ms}}}"#
    )
}

/// Writes `records` records of `per` events each into `room`'s subject of the stream, as
/// origin `x` would have (its messages `line <first>`, `line <first + 1>`, ... one
/// millisecond apart), each acknowledged, with a record of another room between every two
/// (a busy stream, where a room's records are not next to each other); the last `rseq`.
async fn fill_room(
    nats: &async_nats::Client,
    room: &str,
    first: u64,
    records: u64,
    per: u64,
) -> u64 {
    let js = async_nats::jetstream::new(nats.clone());
    let start_ms = 1_700_000_000_000;
    let mut acks = std::collections::VecDeque::new();
    let mut rseq = first;
    for _ in 0..records {
        let (from, to) = (rseq, rseq + per - 1);
        // A record of another room between two of this one's, of one event.
        for (subject, room, to) in [
            (format!("lc.room.{room}"), room, to),
            ("lc.room.elsewhere".to_owned(), "elsewhere", from),
        ] {
            let mut body =
                format!(r#"R{{"node":"x","boot":1,"room":"{room}","first":{from},"last":{to}}}"#);
            body.push('\n');
            for k in from..=to {
                body.push_str(&zed_says(room, k, start_ms + k));
                body.push('\n');
            }
            acks.push_back(js.publish(subject, body.into()).await.expect("publish"));
            if acks.len() >= 256 {
                acks.pop_front().unwrap().await.expect("stored");
            }
        }
        rseq = to + 1;
    }
    for ack in acks {
        ack.await.expect("stored");
    }
    rseq - 1
}

/// A busy room's history is read from its newest records, not the whole of what the stream
/// keeps: a room of 768 000 events (3 000 full records, more than a node reads in its 2 s
/// bound from the start) shows someone entering it on a node with nobody in it exactly its
/// last `--history-retain` lines, in order, at once. Nothing said before the read is
/// delivered again: a live copy of an old line, and an old record published again (a
/// retried publish), show nothing; the next line shows at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_rooms_history_is_its_newest_lines_read_at_once() {
    if !broker::available() {
        return;
    }
    const KEEP: u64 = 300;
    let broker = Broker::start().await;
    let keep = KEEP.to_string();
    let b = node_with(
        &broker,
        "b",
        &["--history-retain", &keep, "--history", &keep],
    )
    .await;
    let nats = async_nats::connect(broker.url.as_str())
        .await
        .expect("connect to the broker");
    let last = fill_room(&nats, "big", 1, 3000, 256).await;
    let mut carol = Client::join(b.addr, "carol").await;
    carol.send("/join big").await;
    carol.expect("You are now in big (just you so far).").await;
    let want: Vec<String> = (last + 1 - KEEP..=last)
        .map(|k| format!("zed: line {k}"))
        .collect();
    assert_eq!(scrollback(&mut carol).await, want);
    follows(&broker, "b", &["lc.live.big", "lc.node.b", "lc.room.big"]).await;
    let publish = |subject: &'static str, body: String| {
        let nats = nats.clone();
        async move {
            nats.publish(subject, body.into()).await.expect("publish");
            nats.flush().await.expect("flush");
        }
    };
    let at = 1_700_000_000_000;
    publish("lc.live.big", zed_says("big", 5, at + 5)).await;
    publish("lc.live.big", zed_says("big", last - 1, at + last - 1)).await;
    let mut old = r#"R{"node":"x","boot":1,"room":"big","first":1,"last":2}"#.to_owned();
    for k in 1..=2 {
        old.push('\n');
        old.push_str(&zed_says("big", k, at + k));
    }
    publish("lc.room.big", old).await;
    publish("lc.live.big", zed_says("big", last + 1, at + last + 1)).await;
    let next = carol.sync().await;
    let next = if next.is_empty() {
        vec![carol.line().await]
    } else {
        next
    };
    assert_eq!(next, [format!("zed: line {}", last + 1)]);
    assert_eq!(b.logged("could not be read"), 0);
}

/// A read that starts part-way gets the order right across nodes: alice and carol, on two
/// nodes, take turns saying 60 lines (each seen by the other before the next is said, so
/// the stream holds them as small records of two origins), and bob enters on a third node
/// that keeps 10 (`--history-retain 10`): it reads only the room's newest records, stepping
/// back past the first record of each origin, and his scrollback is exactly the last 10
/// lines in the order said. What either says next reaches him once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_from_the_newest_records_of_two_nodes_keeps_their_order() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start().await;
    let (a, c) = (node(&broker, "a").await, node(&broker, "c").await);
    let b = node_with(&broker, "b", &["--history-retain", "10", "--history", "10"]).await;
    let mut alice = Client::join(a.addr, "alice").await;
    let mut carol = Client::join(c.addr, "carol").await;
    alice.expect("carol has joined the chat.").await;
    let mut said = Vec::new();
    for k in 0..60 {
        let (speaker, listener) = match k % 3 {
            0 => (&mut alice, &mut carol),
            _ => (&mut carol, &mut alice),
        };
        let line = format!("line {k} from {}", speaker.nick);
        speaker.send(&line).await;
        let heard = format!("{}: {line}", speaker.nick);
        listener.expect(&heard).await;
        said.push(heard);
    }
    let mut bob = Client::join(b.addr, "bob").await;
    assert_eq!(scrollback(&mut bob).await, said[50..]);
    alice.skip_until("bob has joined the chat.").await;
    alice.send("after").await;
    carol.send("after too").await;
    let mut next = vec![bob.line().await, bob.line().await];
    next.sort();
    assert_eq!(next, ["alice: after", "carol: after too"]);
    assert!(bob.sync().await.is_empty(), "nothing more, nothing again");
    drop((a, b, c));
}

/// A room's state outlives what the stream keeps of the room: a topic and a flag set, then
/// 10 000 records (the stream's limit per room) said after them, so the stream holds nothing
/// of the change any more; someone entering the room later on another node still finds the
/// topic, with who set it, and the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rooms_state_outlives_the_streams_limit() {
    if !broker::available() {
        return;
    }
    let broker = Broker::start().await;
    let a = node(&broker, "a").await;
    let mut alice = Client::join(a.addr, "alice").await;
    alice.command("/join dev").await;
    alice.command("/topic release on Friday").await;
    alice.command("/mode +m").await;
    alice.command("/leave").await;
    follows(
        &broker,
        "a",
        &["lc.live.lobby", "lc.node.a", "lc.room.lobby"],
    )
    .await;
    let nats = async_nats::connect(broker.url.as_str())
        .await
        .expect("connect to the broker");
    fill_room(&nats, "dev", 1, 10_000, 1).await;
    // What the stream holds of dev now is the by-hand origin's alone, from its first record.
    let stream = async_nats::jetstream::new(nats.clone())
        .get_stream("LINECHAT_ROOMS")
        .await
        .expect("the stream");
    let oldest = stream
        .get_first_raw_message_by_subject("lc.room.dev", 1)
        .await
        .expect("the room's oldest record");
    assert!(
        oldest
            .payload
            .starts_with(br#"R{"node":"x","boot":1,"room":"dev","first":1,"#),
        "{:?}",
        String::from_utf8_lossy(&oldest.payload)
    );
    let b = node(&broker, "b").await;
    let mut carol = Client::join(b.addr, "carol").await;
    let entry = carol.command("/join dev").await;
    assert!(
        entry
            .iter()
            .any(|l| l == "Topic of dev: release on Friday (set by alice)"),
        "{entry:?}"
    );
    assert_eq!(
        carol.command("/mode").await,
        ["Modes of dev: moderated (+m), topic locked (+t)."]
    );
}

/// Not a check: what reading a busy room costs an arrival: `EVENTS` events (200 000 unless
/// told) in full records (256 each), a record of another room between every two, read by a
/// node with nobody in the room. Prints
/// how long the arrival took from `/join` to the end of its scrollback, 5 times; run alone
/// with `cargo test --release --test cluster -- --ignored --nocapture reading_a_busy_room`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn reading_a_busy_room_costs_an_arrival() {
    if !broker::available() {
        return;
    }
    let events: u64 = std::env::var("EVENTS")
        .ok()
        .and_then(|e| e.parse().ok())
        .unwrap_or(200_000);
    let (broker, a, _bob, nats) = by_hand().await;
    let filled = std::time::Instant::now();
    fill_room(&nats, "big", 1, events / 256, 256).await;
    println!("filled {events} events in {:?}", filled.elapsed());
    let mut took = Vec::new();
    for i in 0..5 {
        follows(
            &broker,
            "a",
            &["lc.live.lobby", "lc.node.a", "lc.room.lobby"],
        )
        .await;
        let mut c = Client::join(a.addr, &format!("r{i}")).await;
        let started = std::time::Instant::now();
        c.send("/join big").await;
        let got = c.skip_until("--- End of history ---").await;
        took.push(started.elapsed());
        let unread = got.iter().any(|l| l.contains("could not be read"));
        let last = got.iter().rev().find(|l| l.contains("zed: "));
        println!(
            "arrival {i}: {:?}, last line {last:?}{}",
            took[i],
            if unread { " (not read in time)" } else { "" }
        );
        c.send("/quit").await;
        c.expect_closed().await;
    }
    took.sort();
    println!(
        "reading a room of {events} events: median of 5 {:?}, all {took:?}",
        took[2]
    );
}
