//! Limits that protect everyone from one client: slow consumers and the connection cap.

use std::time::Duration;

use linechat::Config;

use tokio::io::AsyncReadExt;

use crate::support::{Client, TestServer, PROMPT};

#[tokio::test]
async fn a_client_that_never_reads_is_cut_off_and_nobody_else_loses_a_line() {
    let server = TestServer::start(Config {
        rate_limit: None,
        queue_bytes: 64 * 1024,
        ..Config::default()
    })
    .await;
    let mut reader = server.join("reader").await;
    let mut sleeper = Client::connect_small_buffer(server.addr).await;
    sleeper.register("sleeper").await;
    reader.expect("sleeper has joined the chat.").await;
    let mut flooder = server.join("flooder").await;
    reader.expect("flooder has joined the chat.").await;

    const LINES: usize = 30_000;
    let payload = "p".repeat(180);
    let reading = tokio::spawn(async move {
        let mut next = 0;
        let mut others = Vec::new();
        while next < LINES {
            let line = reader.line().await;
            match line.strip_prefix("flooder: ") {
                Some(text) => {
                    let (seq, _) = text.split_once(' ').expect(&line);
                    assert_eq!(seq.parse::<usize>().unwrap(), next, "lost or reordered");
                    next += 1;
                }
                None => others.push(line),
            }
        }
        (reader, others)
    });
    // ~5.6 MB: far more than the sleeper's queue and socket buffers hold.
    flooder.flood(LINES, &payload).await;

    let (mut reader, others) = tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .expect("the reader kept up")
        .unwrap();
    let mut others = others;
    others.extend(reader.sync().await);
    assert_eq!(
        others,
        ["sleeper has left the chat (slow consumer: stopped reading)."]
    );
    let metrics = reader.command("/metrics").await.join("\n");
    assert!(
        metrics.contains("Disconnects: 1 slow consumers"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("Total Messages: {LINES}")),
        "{metrics}"
    );
    // Everyone still connected had nothing dropped.
    let dropped: Vec<&str> = metrics
        .lines()
        .filter(|l| l.contains("messages dropped"))
        .collect();
    assert_eq!(dropped.len(), 2, "reader and flooder are listed: {metrics}");
    assert!(
        dropped.iter().all(|l| l.contains(" 0 messages dropped")),
        "{metrics}"
    );

    // The sleeper's connection is closed; draining it ends in EOF, not a hang. Its last line
    // may be torn: the kernel held part of it when the connection was cut.
    let rest = tokio::time::timeout(Duration::from_secs(30), sleeper.read_to_eof())
        .await
        .expect("sleeper closed");
    assert!(
        rest < LINES * payload.len(),
        "the sleeper was cut off, not served everything"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_full_server_says_so_and_counts_prompts_too() {
    let server = TestServer::start(Config {
        max_clients: 2,
        ..Config::default()
    })
    .await;
    let _joined = server.join("alice").await;
    let mut at_prompt = Client::connect(server.addr).await;
    at_prompt.expect_prompt().await;

    let mut third = Client::connect(server.addr).await;
    assert_eq!(
        third.expect_closed().await,
        ["Error: the server is full (2 connections); please try again later."]
    );

    // A slot frees up when someone leaves.
    at_prompt.send("/quit").await;
    at_prompt.expect_closed().await;
    let mut fourth = Client::connect(server.addr).await;
    fourth.register("dave").await;
    server.stop().await;
}

/// What a refused netcat client reads before the close.
async fn refused_with(addr: std::net::SocketAddr) -> Vec<String> {
    Client::connect(addr).await.expect_closed().await
}

const PER_ADDRESS: &str =
    "Error: too many connections from your address (3 open); close one and try again.";

/// `--max-per-ip`: loopback made subject to it with `--ip-exempt none`.
#[tokio::test]
async fn one_address_gets_at_most_max_per_ip_connections_and_is_told() {
    let server = TestServer::with_irc(Config {
        max_per_ip: 3,
        connect_rate: None,
        ip_exempt: Vec::new(),
        ..Config::default()
    })
    .await;
    let mut alice = server.join("alice").await;
    let mut waiting = Client::connect(server.addr).await;
    waiting.expect_prompt().await;
    let mut irc = server.irc().await;
    irc.register("ircbob", &[]).await;
    // Three open (two joined, one at the prompt): the fourth is refused on either listener.
    assert_eq!(refused_with(server.addr).await, [PER_ADDRESS]);
    let mut over = crate::support::IrcClient::connect(server.irc_addr.unwrap()).await;
    assert_eq!(
        over.expect_closed().await,
        [
            "ERROR :Closing link: too many connections from your address (3 open); close one and \
          try again"
        ]
    );
    // Nobody was announced (an IRC client enters no room until it JOINs), and those
    // connected were not disturbed.
    assert_eq!(alice.sync().await, Vec::<String>::new());
    // Closing one frees its place.
    waiting.send("/quit").await;
    waiting.expect_closed().await;
    let mut carol = Client::connect(server.addr).await;
    carol.register("carol").await;
    let report = alice.command("/metrics").await.join("\n");
    assert!(
        report
            .contains("refused: 0 server full, 2 per-address limit, 0 connect rate, 0 prompt full"),
        "{report}"
    );
    assert!(
        report.contains("Addresses: 1 tracked (limits per address: 3 connections; exempt: none)"),
        "{report}"
    );
    server.stop().await;
}

/// `--connect-rate`: a burst, then one connection per interval; the refusal is one line.
#[tokio::test]
async fn connection_churn_from_one_address_is_held_to_the_rate() {
    let server = TestServer::start(Config {
        connect_rate: Some(4.0),
        connect_burst: 5,
        ip_exempt: Vec::new(),
        ..Config::default()
    })
    .await;
    let mut alice = server.join("alice").await; // the burst's first
    let started = std::time::Instant::now();
    let mut admitted = 0;
    let mut refused = 0;
    // A churn loop: connect, look at the first bytes, close; for 1.5 s.
    while started.elapsed() < Duration::from_millis(1500) {
        let mut c = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let mut got = Vec::new();
        while got.len() < PROMPT.len() {
            let mut buf = [0u8; 256];
            let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
                .await
                .expect("an answer in time")
                .expect("an answer");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        match String::from_utf8(got).unwrap().as_str() {
            PROMPT => admitted += 1,
            "Error: too many new connections from your address (at most 4 a second); wait a \
             moment and try again.\n" => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    // 4 left of the burst, plus 4 a second for 1.5 s (one of slack for timing).
    assert!(
        (4..=11).contains(&admitted),
        "{admitted} admitted, {refused} refused"
    );
    assert!(refused > admitted, "{admitted} admitted, {refused} refused");
    // The loop reached nobody: not one notice in the lobby.
    assert_eq!(alice.sync().await, Vec::<String>::new());
    let report = alice.command("/metrics").await.join("\n");
    assert!(
        report.contains(&format!("{refused} connect rate")),
        "{report}"
    );
    // A second later, the address may connect again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut bob = Client::connect(server.addr).await;
    bob.register("bob").await;
    server.stop().await;
}

/// `--max-prompt`: connections that never choose a name cannot take every slot.
#[tokio::test]
async fn the_prompt_has_its_own_smaller_cap_and_joined_users_keep_their_slots() {
    let server = TestServer::with_irc(Config {
        max_clients: 6,
        max_prompt: Some(2),
        ..Config::default()
    })
    .await;
    let mut alice = server.join("alice").await;
    let mut squatters = Vec::new();
    for _ in 0..2 {
        let mut c = Client::connect(server.addr).await;
        c.expect_prompt().await;
        squatters.push(c);
    }
    let full = "too many connections are waiting at the nickname prompt (2); please try \
                again in a moment";
    assert_eq!(refused_with(server.addr).await, [format!("Error: {full}.")]);
    let mut irc = crate::support::IrcClient::connect(server.irc_addr.unwrap()).await;
    assert_eq!(
        irc.expect_closed().await,
        [format!("ERROR :Closing link: {full}")]
    );
    // A squatter that chooses a name frees its prompt place; the next newcomer gets in.
    squatters[0].send("dave").await;
    squatters[0].skip_until("Welcome to the chat, dave!").await;
    let mut erin = Client::connect(server.addr).await;
    erin.register("erin").await;
    let report = alice.command("/metrics").await.join("\n");
    assert!(
        report.contains(
            "open (1 at the prompt, at most 2); refused: 0 server full, 0 \
                         per-address limit, 0 connect rate, 2 prompt full"
        ),
        "{report}"
    );
    server.stop().await;
}

/// Loopback is exempt by default: tests, benchmarks and a local proxy are not limited.
#[tokio::test]
async fn loopback_is_exempt_by_default() {
    let server = TestServer::start(Config {
        max_per_ip: 1,
        connect_rate: Some(1.0),
        connect_burst: 1,
        ..Config::default()
    })
    .await;
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(server.join(&format!("user{i}")).await);
    }
    let report = clients[0].command("/metrics").await.join("\n");
    assert!(
        report.contains(
            "Addresses: 0 tracked (limits per address: 1 connection, 1 new a \
                         second with a burst of 1; exempt: 127.0.0.0/8, ::1)"
        ),
        "{report}"
    );
    server.stop().await;
}
