//! Garbage on the chat port: each input gets its clear answer or a clean close, memory stays
//! bounded, and the other clients in the room notice nothing.

use std::time::Duration;

use linechat::Config;

use crate::load::Rng;
use crate::proc::{Options, Server};
use crate::support::{Client, TestServer, PROMPT};

/// A bystander that must see exactly `expected` and nothing else from the garbage.
async fn unaffected(bystander: &mut Client, expected: &[String]) {
    assert_eq!(
        bystander.sync().await,
        expected,
        "the bystander was disturbed"
    );
}

#[tokio::test]
async fn random_bytes_get_errors_and_harm_nobody() {
    let server = TestServer::unthrottled().await;
    let mut bystander = server.join("bystander").await;
    let mut noisy = server.join("noisy").await;
    bystander.expect("noisy has joined the chat.").await;
    let mut rng = Rng::new(0x5eed);
    // 256 KiB of random bytes with a newline now and then: most lines hold control characters
    // or invalid UTF-8, a few are long, and the rare clean one is legitimately relayed.
    let mut garbage = Vec::new();
    let mut relayed = Vec::new();
    for _ in 0..512 {
        let len = rng.below(600) as usize;
        let line: Vec<u8> = (0..len)
            .map(|_| rng.byte())
            .filter(|&b| b != b'\n')
            .collect();
        garbage.extend_from_slice(&line);
        garbage.push(b'\n');
        if let Ok(text) = linechat::proto::codec::check_text(&line) {
            let text = text.strip_suffix('\r').unwrap_or(text);
            if !text.trim().is_empty() && !text.starts_with('/') {
                relayed.push(format!("noisy: {text}"));
            }
        }
    }
    noisy.send_raw(&garbage).await;
    let replies = noisy.sync().await;
    assert!(!replies.is_empty());
    for reply in &replies {
        assert!(
            reply.starts_with("Error: ") || reply.starts_with("Unknown command: "),
            "{reply:?}"
        );
    }
    unaffected(&mut bystander, &relayed).await;
    noisy.send("still here").await;
    bystander.expect("noisy: still here").await;
    server.stop().await;
}

#[tokio::test]
async fn nul_bytes_are_refused_by_name() {
    let server = TestServer::unthrottled().await;
    let mut bystander = server.join("bystander").await;
    let mut c = server.join("nul").await;
    bystander.expect("nul has joined the chat.").await;
    c.send_raw(b"a\0b\n\0\0\0\n").await;
    let refused = "Error: line contains a control character (U+0000); terminal escape sequences \
                   and other control characters are not allowed, so it was not sent.";
    assert_eq!(c.sync().await, [refused, refused]);
    unaffected(&mut bystander, &[]).await;
    server.stop().await;
}

#[tokio::test]
async fn half_a_utf8_character_at_a_segment_boundary_is_joined_not_refused() {
    let server = TestServer::unthrottled().await;
    let mut bystander = server.join("bystander").await;
    let mut c = server.join("split").await;
    bystander.expect("split has joined the chat.").await;
    // Three characters of 2, 3 and 4 bytes, each cut in the middle by a separate write, with a
    // round trip in between so the server surely reads the halves separately.
    for (first, second) in [
        (&b"caf\xc3"[..], &b"\xa9"[..]),
        (b"\xe2\x82", b"\xac"),
        (b"\xf0\x9f", b"\x98\x80"),
    ] {
        c.send_raw(first).await;
        bystander.sync().await;
        c.send_raw(second).await;
    }
    c.send_raw(b"\n").await;
    bystander.expect("split: caf\u{e9}\u{20ac}\u{1f600}").await;
    assert_eq!(c.sync().await, Vec::<String>::new());
    server.stop().await;
}

#[tokio::test]
async fn thousands_of_commands_in_one_segment_are_all_answered_in_order() {
    let server = TestServer::unthrottled().await;
    let mut bystander = server.join("bystander").await;
    let mut c = server.join("batch").await;
    bystander.expect("batch has joined the chat.").await;
    const N: usize = 5000;
    let batch: String = (0..N).map(|i| format!("/echo {i}\n/who\n")).collect();
    c.send_raw(batch.as_bytes()).await;
    for i in 0..N {
        c.expect(&i.to_string()).await;
        c.expect("In lobby (2): batch, bystander").await;
    }
    unaffected(&mut bystander, &[]).await;
    server.stop().await;
}

#[tokio::test]
async fn a_burst_of_heavy_commands_is_answered_not_punished() {
    // 2 000 /metrics in one write ask for about 2 MB of replies while the client reads them at
    // its own pace: the replies are its own doing, so it must be slowed down, not cut off as a
    // slow consumer.
    let server = TestServer::unthrottled().await;
    let mut bystander = server.join("bystander").await;
    let mut c = server.join("greedy").await;
    bystander.expect("greedy has joined the chat.").await;
    const N: usize = 2000;
    c.send_raw("/metrics\n".repeat(N).as_bytes()).await;
    let mut reports = 0;
    while reports < N {
        if c.line().await == "=== Server Metrics ===" {
            reports += 1;
        }
    }
    c.sync().await;
    unaffected(&mut bystander, &[]).await;
    server.stop().await;
}

#[tokio::test]
async fn http_tls_and_ssh_clients_are_told_and_closed_not_welcomed() {
    let server = TestServer::unthrottled().await;
    let mut bystander = server.join("bystander").await;

    let mut http = Client::connect(server.addr).await;
    http.send_raw(
        b"GET / HTTP/1.1\r\nHost: localhost:4000\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
    )
    .await;
    http.expect_prompt().await;
    assert_eq!(
        http.expect_closed().await,
        ["Error: this is a linechat chat server, not a web server; connect with a line-based client such as nc HOST PORT."]
    );

    // A TLS 1.3 ClientHello as curl sends it (truncated after the SNI extension): a record that
    // happens to contain a 0x0a byte is framed as a line and recognised.
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x00, 0xf4, 0x01, 0x00, 0x00, 0xf0, 0x03, 0x03,
    ];
    hello.extend((0..32u8).map(|i| i.wrapping_mul(37)));
    hello.extend_from_slice(b"\x00\x00\x08\x13\x02\x13\x03\x13\x01\x00\xff\x01\x00\x00\x0a");
    let mut tls = Client::connect(server.addr).await;
    tls.send_raw(&hello).await;
    tls.expect_prompt().await;
    assert_eq!(
        tls.expect_closed().await,
        ["Error: this chat server speaks plain text, not TLS; connect with a line-based client such as nc HOST PORT."]
    );

    // One without a newline: a TLS client gives up when the prompt is not a TLS record, and
    // the close makes the server answer what it had.
    let mut tls = Client::connect(server.addr).await;
    tls.send_raw(&hello[..hello.len() - 1]).await;
    tls.expect_prompt().await;
    tls.close_write().await;
    let answer = tls.expect_closed().await;
    assert_eq!(answer.len(), 1, "{answer:?}");
    assert!(answer[0].starts_with("Error: this chat server speaks plain text, not TLS"));

    let mut ssh = Client::connect(server.addr).await;
    ssh.send_raw(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
        .await;
    ssh.expect_prompt().await;
    assert_eq!(
        ssh.expect_closed().await,
        ["Error: this is a linechat chat server, not an SSH server; connect with a line-based client such as nc HOST PORT."]
    );

    // Nobody joined, so nobody was announced.
    unaffected(&mut bystander, &[]).await;
    server.stop().await;
}

#[tokio::test]
async fn a_100_mb_line_is_refused_at_once_and_memory_stays_bounded() {
    let mut server = Server::start(Options {
        args: &["--rate-limit", "0"],
        ..Options::default()
    })
    .await;
    let mut bystander = Client::join(server.addr, "bystander").await;
    let mut c = Client::join(server.addr, "huge").await;
    bystander.expect("huge has joined the chat.").await;
    let rss_before = server.rss_kib();

    const TOTAL: usize = 100 << 20;
    let chunk = vec![b'x'; 1 << 20];
    c.wait = Duration::from_secs(60);
    // The refusal must come while the line is still being sent, not after its end.
    let (mut c, first) = {
        let mut sent = 0;
        while sent < 4 << 20 {
            c.send_raw(&chunk).await;
            sent += chunk.len();
        }
        let first = c.line().await;
        while sent < TOTAL {
            c.send_raw(&chunk).await;
            sent += chunk.len();
        }
        (c, first)
    };
    assert_eq!(
        first,
        "Error: line too long (max 1024 bytes); it was not sent."
    );
    let rss_peak = server.rss_kib();
    c.send_raw(b"tail of the long line\nafterwards\n").await;
    bystander.expect("huge: afterwards").await;
    assert_eq!(c.sync().await, Vec::<String>::new());
    let rss_after = server.rss_kib();
    eprintln!(
        "100 MB line: server RSS {rss_before} KiB before, {rss_peak} KiB at the end of the \
         line, {rss_after} KiB after"
    );
    assert!(
        rss_peak < rss_before + 16 * 1024,
        "RSS grew from {rss_before} to {rss_peak} KiB for one unfinished line"
    );
    server.child.kill().await.unwrap();
}

#[tokio::test]
async fn garbage_at_the_prompt_gets_its_answer_and_the_prompt_again() {
    let server = TestServer::start(Config {
        rate_limit: None,
        ..Config::default()
    })
    .await;
    let mut c = Client::connect(server.addr).await;
    c.expect_prompt().await;
    c.send_raw(b"\xff\xfe\n").await;
    c.expect("Error: line is not valid UTF-8 text; it was not sent.")
        .await;
    c.expect_prompt().await;
    c.send_raw(b"\x1b[31mred\n").await;
    let reply = c.line().await;
    assert!(reply.starts_with("Error: line contains a control character (U+001B)"));
    c.expect_prompt().await;
    c.choose("fine").await;
    let _ = PROMPT;
    server.stop().await;
}
