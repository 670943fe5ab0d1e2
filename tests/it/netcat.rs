//! A real `nc` (netcat-openbsd), the client the server is built for. `.ci/run` installs it;
//! elsewhere the test says it skipped.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::support::{required_tool, TestServer, WAIT};

#[tokio::test]
async fn netcat_can_join_and_chat() {
    let Some(nc) = required_tool("nc", "-h", "netcat-openbsd") else {
        return;
    };
    let server = TestServer::unthrottled().await;
    let mut bob = server.join("bob").await;

    let mut child = Command::new(nc)
        .arg("127.0.0.1")
        .arg(server.addr.port().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start nc");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());

    stdin.write_all(b"alice\r\n").await.unwrap();
    bob.expect("alice has joined the chat.").await;
    stdin.write_all(b"hello from netcat\n").await.unwrap();
    bob.expect("alice: hello from netcat").await;
    bob.send("hi nc").await;

    let mut seen = String::new();
    while !seen.contains("bob: hi nc\n") {
        let mut line = String::new();
        let n = tokio::time::timeout(WAIT, stdout.read_line(&mut line))
            .await
            .expect("nc printed in time")
            .unwrap();
        assert!(n > 0, "nc output ended early: {seen:?}");
        seen.push_str(&line);
    }
    assert!(
        seen.starts_with("Please enter your nickname: Welcome to the chat, alice!\n"),
        "{seen:?}"
    );

    stdin.write_all(b"/quit\n").await.unwrap();
    bob.expect("alice has left the chat.").await;
    // netcat-openbsd exits once both its input and the connection have ended.
    drop(stdin);
    let mut rest = String::new();
    let mut line = String::new();
    while tokio::time::timeout(WAIT, stdout.read_line(&mut line))
        .await
        .expect("nc output ends")
        .unwrap()
        > 0
    {
        rest.push_str(&line);
        line.clear();
    }
    assert_eq!(rest, "Goodbye!\n");
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("nc exits once its input and the connection have ended")
        .unwrap();
    assert!(status.success(), "nc: {status}");
    server.stop().await;
}
