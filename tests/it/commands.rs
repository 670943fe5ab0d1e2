//! Every command of the protocol, with the exact texts where the protocol fixes them.

use crate::support::TestServer;

#[tokio::test]
async fn help_lists_every_command_with_its_grammar() {
    let server = TestServer::unthrottled().await;
    let mut c = server.join("alice").await;
    let lines = c.command("/help").await;
    for usage in [
        "/help",
        "/time",
        "/ping [token]",
        "/nick <name>",
        "/echo <message>",
        "/who",
        "/metrics [nick]",
        "/throughput",
        "/quit",
    ] {
        assert!(
            lines.iter().any(|l| l.trim_start().starts_with(usage)),
            "{usage} missing from {lines:#?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn time_uses_the_original_layout() {
    let server = TestServer::unthrottled().await;
    let mut c = server.join("alice").await;
    let lines = c.command("/time").await;
    let [line] = lines.as_slice() else {
        panic!("{lines:?}")
    };
    let rest = line.strip_prefix("Server time: ").expect(line);
    let (clock, date) = rest.split_once(" UTC ").expect(line);
    let digits =
        |s: &str, shape: &str| {
            s.len() == shape.len()
                && s.chars().zip(shape.chars()).all(|(c, d)| {
                    if d == '9' {
                        c.is_ascii_digit()
                    } else {
                        c == d
                    }
                })
        };
    assert!(digits(clock, "99:99:99"), "{line}");
    assert!(digits(date, "9999-99-99"), "{line}");
    server.stop().await;
}

#[tokio::test]
async fn ping_reports_the_kernel_rtt() {
    let server = TestServer::unthrottled().await;
    let mut c = server.join("alice").await;
    c.send("/ping abc 1").await;
    let reply = c.line().await;
    assert!(reply.starts_with("pong abc 1 ("), "{reply}");
    if cfg!(target_os = "linux") {
        assert!(reply.contains(" ms; recent min "), "{reply}");
        assert!(!reply.contains("unavailable"), "{reply}");
    }
    c.send("/PING").await;
    assert!(c.line().await.starts_with("pong ("));
    server.stop().await;
}

#[tokio::test]
async fn echo_who_and_errors() {
    let server = TestServer::unthrottled().await;
    let mut bob = server.join("bob").await;
    let mut alice = server.join("alice").await;
    bob.expect("alice has joined the chat.").await;

    alice.send("/echo  keep  my spacing").await;
    alice.expect("keep  my spacing").await;
    alice.send("/who").await;
    alice.expect("In lobby (2): alice, bob").await;
    alice.send("/frobnicate now").await;
    alice
        .expect("Unknown command: /frobnicate. Type /help for the list.")
        .await;
    alice.send("/echo").await;
    assert!(alice.line().await.starts_with("Usage: /echo <message>"));
    alice.send("/time please").await;
    // One pair of parentheses, the help text's own: none nested around it.
    assert_eq!(
        alice.line().await,
        "Usage: /time - show the server's time (UTC); it takes no arguments"
    );
    // Nothing of that reached bob.
    assert_eq!(bob.sync().await, Vec::<String>::new());
    server.stop().await;
}

#[tokio::test]
async fn metrics_are_measured_not_made_up() {
    let server = TestServer::unthrottled().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob has joined the chat.").await;
    for i in 0..3 {
        alice.send(&format!("message {i}")).await;
        bob.expect(&format!("alice: message {i}")).await;
    }

    let lines = bob.command("/metrics").await;
    let text = lines.join("\n");
    assert_eq!(lines[0], "=== Server Metrics ===", "{text}");
    assert_eq!(lines[1], "Total Messages: 3", "{text}");
    assert_eq!(lines[2], "Active Clients: 2", "{text}");
    assert_eq!(lines[3], "Client Breakdown:", "{text}");
    let alice_at = lines
        .iter()
        .position(|l| l.starts_with(" - alice (127.0.0.1:"))
        .expect(&text);
    assert_eq!(lines[alice_at + 1], "    Messages: 3", "{text}");
    assert!(lines[alice_at + 2].starts_with("    Connected: "), "{text}");
    assert!(
        lines[alice_at + 3].starts_with("    Throughput: in "),
        "{text}"
    );
    assert!(lines[alice_at + 3].contains("B/s"), "{text}");
    let loss = &lines[alice_at + 4];
    let latency = &lines[alice_at + 5];
    if cfg!(target_os = "linux") {
        assert!(loss.starts_with("    Packet Loss: 0.00% (0 of "), "{text}");
        assert!(
            loss.ends_with("TCP segments retransmitted; 0 messages dropped)"),
            "{text}"
        );
        assert!(
            latency.starts_with("    Latency: ") && latency.contains(" ms round trip"),
            "{text}"
        );
        let average = lines
            .iter()
            .find_map(|l| l.strip_prefix("Average Latency: "))
            .expect(&text);
        let (value, rest) = average.split_once(" ms ").expect(&text);
        assert_eq!(rest, "(mean TCP round-trip time of 2 clients)", "{text}");
        // A kernel RTT on loopback is small but never a made-up zero.
        assert!(value.parse::<f64>().expect(&text) > 0.0, "{text}");
    }
    assert!(text.contains("Fan-out latency: p50 "), "{text}");
    assert!(text.contains("(3 messages)"), "{text}");
    assert!(text.contains("Disconnects: 0 slow consumers"), "{text}");

    let one = bob.command("/metrics ALICE").await;
    assert_eq!(one[0], lines[alice_at], "{one:?}");
    assert_eq!(one[1], "    Messages: 3");
    let none = bob.command("/metrics carol").await;
    assert_eq!(none, ["Error: nobody called carol is connected."]);
    server.stop().await;
}

#[tokio::test]
async fn throughput_counts_this_clients_bytes_both_ways() {
    let server = TestServer::unthrottled().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob has joined the chat.").await;
    bob.send("0123456789").await; // 11 bytes with the newline
    alice.expect("bob: 0123456789").await;
    bob.send("/throughput").await;
    let mut lines = Vec::new();
    for _ in 0..4 {
        lines.push(bob.line().await);
    }
    let text = lines.join("\n");
    assert!(lines[0].starts_with("=== Throughput for bob"), "{text}");
    // "bob\n" + "0123456789\n" + "/throughput\n", all counted before the reply is built.
    assert!(lines[1].starts_with("From you: 3 lines, 27 B: "), "{text}");
    // The prompt (28 B) and the three-line welcome (26 + 37 + 50 B) are two messages; the
    // reply itself is counted once written, so it is not in its own figures.
    assert!(
        lines[2].starts_with("To you: 2 messages, 141 B: "),
        "{text}"
    );
    assert_eq!(lines[3], "Queued for you now: 0 B", "{text}");
    server.stop().await;
}
