//! Room operators from netcat: `/op` and `/deop`, the same right IRC's `MODE +o/-o` uses, seen
//! by both protocols; refused, with one line, for anyone who is not an operator.

use linechat::Config;

use crate::support::TestServer;

#[tokio::test]
async fn a_netcat_operator_ops_and_deops_and_irc_sees_mode_o() {
    let server = TestServer::with_irc(Config {
        server_name: "irc.test".into(),
        rate_limit: None,
        ..Config::default()
    })
    .await;
    let mut alice = server.join("alice").await;
    alice.command("/join dev").await;
    let mut bob = server.join("bob").await;
    bob.command("/join dev").await;
    let mut carol = server.irc_join("carol", &[]).await;
    carol.send("JOIN #dev").await;
    carol.expect_command("366").await;
    alice.sync().await;
    bob.sync().await;

    // Not an operator: refused, and nobody is told anything.
    assert_eq!(
        bob.command("/op bob").await,
        ["Error: only operators of dev may change who operates it."]
    );
    // alice made the room, so she operates it.
    assert_eq!(
        alice.command("/op bob").await,
        ["alice made bob an operator of dev."]
    );
    bob.skip_until("alice made bob an operator of dev.").await;
    carol
        .expect(":alice!alice@127.0.0.1 MODE #dev +o bob")
        .await;
    assert_eq!(
        alice.command("/op bob").await,
        ["Nothing changed: bob is already an operator here."]
    );
    assert_eq!(
        alice.command("/op dave").await,
        ["Error: nobody called dave is connected."]
    );
    // bob can now use the right, on netcat and IRC alike.
    bob.send("/deop alice").await;
    bob.skip_until("bob removed alice from the operators of dev.")
        .await;
    carol.expect(":bob!bob@127.0.0.1 MODE #dev -o alice").await;
    assert_eq!(
        alice.command("/deop bob").await,
        [
            "bob removed alice from the operators of dev.",
            "Error: only operators of dev may change who operates it."
        ]
    );
    assert!(bob.sync().await.is_empty());
    drop((alice, bob, carol));
    server.stop().await;
}
