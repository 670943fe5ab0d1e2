//! Line framing and the text policy, end to end: nothing merged, split, lost, cut or relayed
//! that should not be.

use crate::support::TestServer;

#[tokio::test]
async fn lines_are_framed_by_newline_not_by_read() {
    let server = TestServer::unthrottled().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob has joined the chat.").await;

    // Three lines in one segment, one of them with \r\n.
    bob.send_raw(b"one\ntwo\r\nthree\n").await;
    // One line over several segments.
    bob.send_raw(b"fo").await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    bob.send_raw(b"u").await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    bob.send_raw(b"r\r\n").await;
    for expected in ["one", "two", "three", "four"] {
        alice.expect(&format!("bob: {expected}")).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_multibyte_character_split_across_segments_survives() {
    let server = TestServer::unthrottled().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob has joined the chat.").await;
    let text = "héllo wörld ✓";
    let bytes = text.as_bytes();
    let cut = text.find('✓').unwrap() + 1; // inside the three-byte character
    bob.send_raw(&bytes[..cut]).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    bob.send_raw(&bytes[cut..]).await;
    bob.send_raw(b"\n").await;
    alice.expect(&format!("bob: {text}")).await;
    server.stop().await;
}

#[tokio::test]
async fn overlong_lines_are_refused_whole_and_the_connection_stays_usable() {
    let server = TestServer::unthrottled().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob has joined the chat.").await;
    let too_long = "Error: line too long (max 1024 bytes); it was not sent.";

    // Exactly the limit (plus \r\n, which does not count) is fine.
    let max = "x".repeat(1024);
    bob.send_raw(format!("{max}\r\n").as_bytes()).await;
    alice.expect(&format!("bob: {max}")).await;

    // One byte over, ended at once.
    bob.send(&"y".repeat(1025)).await;
    bob.expect(too_long).await;

    // A megabyte with no newline yet: the error comes before the line ends.
    let chunk = vec![b'z'; 64 * 1024];
    for _ in 0..16 {
        bob.send_raw(&chunk).await;
    }
    bob.expect(too_long).await;
    bob.send_raw(b"zzz\nstill here\n").await;
    alice.expect("bob: still here").await;
    assert_eq!(
        bob.sync().await,
        Vec::<String>::new(),
        "one error per long line"
    );
    // Nothing of the long lines leaked to alice.
    assert_eq!(alice.sync().await, Vec::<String>::new());
    server.stop().await;
}

#[tokio::test]
async fn invalid_utf8_and_control_characters_are_refused_not_relayed() {
    let server = TestServer::unthrottled().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob has joined the chat.").await;

    bob.send_raw(b"caf\xe9\n").await;
    bob.expect("Error: line is not valid UTF-8 text; it was not sent.")
        .await;
    for (input, code) in [
        (&b"\x1b[2J\x1b[Hgotcha"[..], "U+001B"),
        (b"bell\x07", "U+0007"),
        (b"nul\x00byte", "U+0000"),
        (b"del\x7f", "U+007F"),
        ("c1 \u{9b}31m".as_bytes(), "U+009B"),
    ] {
        bob.send_raw(input).await;
        bob.send_raw(b"\n").await;
        let reply = bob.line().await;
        assert!(
            reply.starts_with("Error: line contains a control character ("),
            "{reply}"
        );
        assert!(reply.contains(code), "{reply}");
    }
    bob.send("tabs\tare\tfine").await;
    alice.expect("bob: tabs\tare\tfine").await;
    assert_eq!(alice.sync().await, Vec::<String>::new());
    server.stop().await;
}

#[tokio::test]
async fn blank_lines_are_ignored_and_a_final_unterminated_line_is_kept() {
    let server = TestServer::unthrottled().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob has joined the chat.").await;
    bob.send_raw(b"\n   \n\t\nlast words").await;
    bob.close_write().await;
    alice.expect("bob: last words").await;
    alice
        .expect("bob has left the chat (connection closed).")
        .await;
    server.stop().await;
}
