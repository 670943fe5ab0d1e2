//! The `linechat` binary itself: flags, the start-up log, errors a person can act on, and
//! SIGTERM.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::{Client, WAIT};

const BIN: &str = env!("CARGO_BIN_EXE_linechat");

/// Starts the binary on a free port and returns it with the address its log announced.
async fn start(extra: &[&str], env: &[(&str, &str)]) -> (Child, std::net::SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start linechat");
    let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(WAIT, async {
        while let Some(line) = log.next_line().await.unwrap() {
            if let Some(at) = line.find("listening addr=") {
                return line[at + "listening addr=".len()..].trim().parse().unwrap();
            }
        }
        panic!("linechat exited without listening")
    })
    .await
    .expect("listening in time");
    // Keep draining the log so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
    (child, addr)
}

#[tokio::test]
async fn sigterm_tells_clients_and_exits_zero() {
    let (mut child, addr) = start(&[], &[]).await;
    let mut alice = Client::join(addr, "alice").await;
    let pid = child.id().expect("running") as libc::pid_t;
    // SAFETY: signalling the child we started, by its PID.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert_eq!(alice.expect_closed().await, ["Server is shutting down."]);
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exited in time")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn a_port_in_use_gives_one_clear_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = tokio::time::timeout(
        WAIT,
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:4000", "--port", &port.to_string()])
            .output(),
    )
    .await
    .expect("exited in time")
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "linechat: cannot listen on 127.0.0.1:{port}: port {port} is already in use"
        )),
        "{stderr}"
    );
    assert!(last.contains("--port"), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Os {"),
        "{stderr}"
    );
}

#[tokio::test]
async fn flags_come_from_the_environment_too() {
    let (mut child, addr) = start(&[], &[("LINECHAT_MAX_LINE", "16")]).await;
    let mut c = Client::join(addr, "alice").await;
    c.send("0123456789abcdefg").await;
    c.expect("Error: line too long (max 16 bytes); it was not sent.")
        .await;
    child.kill().await.unwrap();
}

#[test]
fn help_explains_every_option_and_its_default() {
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--port",
        "--max-line",
        "--idle-timeout",
        "--max-clients",
        "--queue-bytes",
        "--rate-limit",
        "--log-format",
        "LINECHAT_LISTEN",
        "[default: 0.0.0.0:4000]",
        "[default: 1024]",
        "[default: 600]",
        "[default: 10000]",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}
