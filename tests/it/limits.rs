//! Limits that protect everyone from one client: slow consumers and the connection cap.

use std::time::Duration;

use linechat::Config;

use crate::support::{Client, TestServer};

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
    let mut batch = String::new();
    for i in 0..LINES {
        batch.push_str(&format!("{i} {payload}\n"));
        if batch.len() > 32 * 1024 {
            flooder.send_raw(batch.as_bytes()).await;
            batch.clear();
        }
    }
    flooder.send_raw(batch.as_bytes()).await;

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
