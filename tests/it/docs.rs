//! What the README promises a newcomer, checked against the real binary and server, so the
//! first page cannot drift from what they will see.

use std::process::Command;

use linechat::Config;

use crate::support::{Client, TestServer};

const README: &str = include_str!("../../README.md");
const BIN: &str = env!("CARGO_BIN_EXE_linechat");

/// The README's options table lists exactly the flags `linechat --help` has.
#[test]
fn the_options_table_is_the_help() {
    let help = Command::new(BIN).arg("--help").output().expect("--help");
    let help = String::from_utf8(help.stdout).unwrap();
    let mut flags: Vec<&str> = help
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .filter(|&w| w != "--help" && w != "--version")
        .collect();
    flags.sort_unstable();
    flags.dedup();
    let mut listed: Vec<&str> = README
        .lines()
        .filter_map(|l| l.strip_prefix("| `--"))
        .filter_map(|l| l.split([' ', '`']).next())
        .collect();
    listed.sort_unstable();
    let listed: Vec<String> = listed.iter().map(|f| format!("--{f}")).collect();
    assert_eq!(
        listed, flags,
        "README's options table against linechat --help"
    );
}

/// The README says how to get `linechat` on PATH, since `cargo run` does not.
#[test]
fn the_readme_says_how_to_install() {
    assert!(README.contains("cargo install --path ."), "README: install");
    assert!(
        README.contains("target/release/linechat"),
        "README: where it is"
    );
}

/// The sample session's opening is what a newcomer really gets in an empty lobby.
#[tokio::test]
async fn the_sample_session_opens_as_the_server_does() {
    let sample = README
        .split("## A session")
        .nth(1)
        .and_then(|s| s.split("```").nth(1))
        .expect("README has a sample session");
    let mut lines = sample.lines().skip_while(|l| !l.starts_with("$ nc"));
    lines.next();
    let typed = lines.next().unwrap();
    let nick = typed
        .strip_prefix("Please enter your nickname: ")
        .expect("the prompt comes first");
    let server = TestServer::start(Config::default()).await;
    let mut client = Client::connect(server.addr).await;
    client.expect_prompt().await;
    client.send(nick).await;
    for expected in lines.take(3) {
        client.expect(expected).await;
    }
    server.stop().await;
}
