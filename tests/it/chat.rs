//! Joining, chatting and leaving: the texts the protocol marks exact, and who sees what.

use crate::support::{Client, TestServer};

#[tokio::test]
async fn chat_reaches_everyone_else_but_not_the_sender() {
    let server = TestServer::unthrottled().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob has joined the chat.").await;
    let mut carol = server.join("carol").await;
    alice.expect("carol has joined the chat.").await;
    bob.expect("carol has joined the chat.").await;

    alice.send("hello, world").await;
    bob.expect("alice: hello, world").await;
    carol.expect("alice: hello, world").await;
    assert_eq!(
        alice.sync().await,
        Vec::<String>::new(),
        "no echo to the sender"
    );
    server.stop().await;
}

#[tokio::test]
async fn every_way_of_leaving_is_announced_with_its_reason() {
    let server = TestServer::unthrottled().await;
    let mut watcher = server.join("watcher").await;

    let mut quitter = server.join("quitter").await;
    watcher.expect("quitter has joined the chat.").await;
    quitter.send("/quit").await;
    assert_eq!(quitter.expect_closed().await, ["Goodbye!"]);
    watcher.expect("quitter has left the chat.").await;

    let mut closer = server.join("closer").await;
    watcher.expect("closer has joined the chat.").await;
    closer.close_write().await;
    watcher
        .expect("closer has left the chat (connection closed).")
        .await;

    let resetter = server.join("resetter").await;
    watcher.expect("resetter has joined the chat.").await;
    resetter.reset();
    watcher
        .expect("resetter has left the chat (connection reset).")
        .await;
    server.stop().await;
}

#[tokio::test]
async fn nicknames_are_validated_unique_and_case_insensitive() {
    let server = TestServer::unthrottled().await;
    let _alice = server.join("Alice").await;
    let mut c = Client::connect(server.addr).await;
    c.expect_prompt().await;
    c.send("alice").await;
    c.expect("Error: the nickname alice is already taken; choose another.")
        .await;
    c.expect_prompt().await;
    for bad in [
        "9lives",
        "has space",
        "émile",
        "x".repeat(33).as_str(),
        "/nick",
        // Valid in version 1, but IRC reads a dot as part of a server name.
        "bob.b",
        "#lobby",
    ] {
        c.send(bad).await;
        let reply = c.line().await;
        assert!(reply.starts_with("Error: "), "{bad:?} → {reply}");
        c.expect_prompt().await;
    }
    // Reserved for the server's own service and lines, whatever the case.
    c.send("LineChat").await;
    c.expect("Error: the nickname LineChat is reserved for the server; choose another.")
        .await;
    c.expect_prompt().await;
    c.choose("bob_b-2[x]").await;
    server.stop().await;
}

#[tokio::test]
async fn an_empty_nickname_gets_a_free_guest_name() {
    let server = TestServer::unthrottled().await;
    let _squatter = server.join("guest-1").await;
    let mut c = Client::connect(server.addr).await;
    c.expect_prompt().await;
    c.send("   ").await;
    c.expect("Welcome to the chat, guest-2!").await;
    let mut d = Client::connect(server.addr).await;
    d.expect_prompt().await;
    d.send("").await;
    d.expect("Welcome to the chat, guest-3!").await;
    server.stop().await;
}

#[tokio::test]
async fn commands_wait_until_joined_except_quit() {
    let server = TestServer::unthrottled().await;
    let mut c = Client::connect(server.addr).await;
    c.expect_prompt().await;
    c.send("/time").await;
    let reply = c.line().await;
    assert!(
        reply.starts_with("Error: choose a nickname first"),
        "{reply}"
    );
    c.expect_prompt().await;
    c.send("/QUIT").await;
    assert_eq!(c.expect_closed().await, ["Goodbye!"]);
    server.stop().await;
}

#[tokio::test]
async fn nick_change_is_announced_and_frees_the_old_name() {
    let server = TestServer::unthrottled().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob has joined the chat.").await;

    bob.send("/nick bob").await;
    bob.expect("You already have that nickname.").await;
    bob.send("/nick ALICE").await;
    bob.expect("Error: the nickname ALICE is already taken; choose another.")
        .await;
    bob.send("/nick robert").await;
    bob.expect("Your nickname has been changed to robert").await;
    alice.expect("bob changed nickname to robert").await;
    bob.send("hi").await;
    alice.expect("robert: hi").await;
    // A change of case alone is a rename, not a clash with oneself.
    bob.send("/nick Robert").await;
    bob.expect("Your nickname has been changed to Robert").await;
    alice.expect("robert changed nickname to Robert").await;

    let _new_bob = server.join("bob").await;
    alice.expect("bob has joined the chat.").await;
    server.stop().await;
}

#[tokio::test]
async fn a_thousand_clients_all_receive_a_broadcast() {
    let server = TestServer::unthrottled().await;
    let mut clients = Vec::new();
    for i in 0..1000 {
        clients.push(server.join(&format!("c{i}")).await);
    }
    let started = std::time::Instant::now();
    clients[0].send("to everyone").await;
    let mut readers = Vec::new();
    for mut c in clients.drain(1..) {
        readers.push(tokio::spawn(async move {
            c.skip_until("c0: to everyone").await;
        }));
    }
    for r in readers {
        r.await.unwrap();
    }
    eprintln!(
        "broadcast to 999 clients received by all in {:?}",
        started.elapsed()
    );
    server.stop().await;
}
