//! Shutdown: everything accepted before it reaches everyone, then one notice and a clean close.

use crate::support::TestServer;

#[tokio::test]
async fn shutdown_flushes_what_was_sent_then_tells_everyone() {
    let server = TestServer::unthrottled().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob has joined the chat.").await;
    for i in 0..500 {
        bob.send(&format!("before shutdown {i}")).await;
    }
    // Everything bob sent has been taken by the server once this round trip completes.
    bob.sync().await;
    server.stop().await;

    for i in 0..500 {
        alice.expect(&format!("bob: before shutdown {i}")).await;
    }
    // The shutdown notice replaces individual leave notices.
    assert_eq!(alice.expect_closed().await, ["Server is shutting down."]);
    assert_eq!(bob.expect_closed().await, ["Server is shutting down."]);
}

#[tokio::test]
async fn shutdown_reaches_clients_still_at_the_prompt() {
    let server = TestServer::unthrottled().await;
    let mut c = crate::support::Client::connect(server.addr).await;
    c.expect_prompt().await;
    server.stop().await;
    assert_eq!(c.expect_closed().await, ["Server is shutting down."]);
}
