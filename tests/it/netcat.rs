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

    let mut child = spawn(nc, &["127.0.0.1".into(), server.addr.port().to_string()]);
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

/// Starts a line client with piped input and output, standing in for a terminal.
fn spawn(program: &str, args: &[String]) -> tokio::process::Child {
    Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"))
}

/// The README recommends `nc -N`: with it, Ctrl-D (the end of its input) closes the
/// client's side, so the user leaves and nc exits; plain netcat-openbsd sends nothing.
#[tokio::test]
async fn nc_dash_n_leaves_on_end_of_input() {
    let Some(nc) = required_tool("nc", "-h", "netcat-openbsd") else {
        return;
    };
    let server = TestServer::unthrottled().await;
    let mut bob = server.join("bob").await;
    let port = server.addr.port().to_string();
    let mut child = spawn(nc, &["-N".into(), "127.0.0.1".into(), port]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"alice\n").await.unwrap();
    bob.expect("alice has joined the chat.").await;
    drop(stdin);
    bob.expect("alice has left the chat (connection closed).")
        .await;
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("nc -N exits once the server closes too")
        .unwrap();
    assert!(status.success(), "nc: {status}");
    server.stop().await;
}

/// The server's side of a goodbye: after the final flush it closes the connection (FIN, not
/// a reset), so a client that watches for that, like socat, exits by itself while its user's
/// input is still open.
#[tokio::test]
async fn socat_exits_by_itself_after_goodbye() {
    let Some(socat) = required_tool("socat", "-V", "socat") else {
        return;
    };
    let server = TestServer::unthrottled().await;
    let mut bob = server.join("bob").await;
    let mut child = spawn(
        socat,
        &["-".into(), format!("TCP:127.0.0.1:{}", server.addr.port())],
    );
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    stdin.write_all(b"alice\n/quit\n").await.unwrap();
    bob.expect("alice has joined the chat.").await;
    bob.expect("alice has left the chat.").await;
    let mut seen = Vec::new();
    tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_end(&mut stdout, &mut seen),
    )
    .await
    .expect("socat's output ends: the server closed the connection")
    .unwrap();
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("socat exits with its input still open")
        .unwrap();
    assert!(status.success(), "socat: {status}");
    assert!(
        String::from_utf8_lossy(&seen).ends_with("Goodbye!\n"),
        "{:?}",
        String::from_utf8_lossy(&seen)
    );
    drop(stdin);
    server.stop().await;
}
