//! Server operators: `--opers FILE` (argon2 hashes) and `--oper NAME:PASSWORD`, proved with
//! netcat `/oper` or IRC `OPER` (381, 464), then every room operator's rights in the
//! rooms they are in, and `/kill` / `KILL` for anyone's connection.

use std::process::Stdio;

use linechat::Config;
use tokio::io::AsyncWriteExt;

use crate::support::{TempPath, TestServer};

const ROOT_PW: &str = "root-password";

async fn server() -> TestServer {
    TestServer::with_irc(Config {
        server_name: "irc.test".into(),
        rate_limit: None,
        opers: vec![("plain".into(), "plain-password".into())],
        oper_hashes: vec![(
            "root".into(),
            linechat::accounts::hash_password(ROOT_PW).unwrap(),
        )],
        ..Config::default()
    })
    .await
}

/// A name nobody listed is refused with a wrong password's words and counts against the
/// throttle like one: trying names tells nothing, and cannot go on without end.
#[tokio::test]
async fn an_unknown_operator_name_is_refused_and_throttled_like_a_wrong_password() {
    let server = server().await;
    let mut eve = server.join("eve").await;
    for _ in 0..5 {
        assert_eq!(
            eve.command("/oper admin guess").await,
            ["Error: wrong name or password for server operator admin."]
        );
    }
    let refused = eve.command("/oper admin guess").await;
    assert!(
        refused[0].starts_with("Error: too many failed attempts for operator admin; try again in "),
        "{refused:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_netcat_server_operator_has_every_room_right_and_kills() {
    let server = server().await;
    let mut alice = server.join("alice").await;
    alice.command("/join dev").await;
    let mut zed = server.join("zed").await;
    zed.command("/join dev").await;
    let mut bob = server.join("bob").await;
    alice.sync().await;
    assert_eq!(
        zed.command("/kick alice").await,
        ["Error: only operators of dev may put people out of it."]
    );
    assert_eq!(
        zed.command("/kill bob").await,
        ["Error: only server operators may /kill; /oper <name> <password> makes you one."]
    );
    assert_eq!(
        zed.command("/oper root wrong-password").await,
        ["Error: wrong name or password for server operator root."]
    );
    assert_eq!(
        zed.command("/oper nobody whatever").await,
        ["Error: wrong name or password for server operator nobody."],
        "a name nobody listed reads as a wrong password: names cannot be probed"
    );
    assert_eq!(
        zed.command(&format!("/oper root {ROOT_PW}")).await,
        ["You are now server operator root: you have every room operator's rights in the rooms you are in, and /kill."]
    );
    // A room operator's rights, though nobody made zed one of dev's.
    assert_eq!(
        zed.command("/mode +m").await,
        ["zed moderated dev: only its operators and those with a voice may speak."]
    );
    // Moderation does not silence a server operator, whom nobody gave a voice.
    zed.send("still heard").await;
    alice.skip_until("zed: still heard").await;
    zed.send("/kick alice enough").await;
    zed.skip_until("zed kicked alice out of dev (enough).")
        .await;
    alice
        .skip_until("You are now in lobby (2 people here).")
        .await;
    assert_eq!(
        zed.command("/kill zed").await,
        ["Error: that is you; /quit leaves."]
    );
    assert_eq!(
        zed.command("/kill dave").await,
        ["Error: nobody called dave is connected."]
    );
    // /kill: the victim reads who and why, then the connection closes; the room reads that a
    // server operator disconnected them.
    assert_eq!(
        zed.command("/kill alice flooding").await,
        ["You disconnected alice."]
    );
    let rest = alice.expect_closed().await;
    assert_eq!(
        rest.last().map(String::as_str),
        Some("You were disconnected by server operator zed: flooding"),
        "{rest:?}"
    );
    bob.skip_until("alice has left the chat (disconnected by a server operator).")
        .await;
    drop((bob, zed));
    server.stop().await;
}

#[tokio::test]
async fn irc_oper_answers_381_and_464_and_kill_works_across_protocols() {
    let server = server().await;
    let mut carol = server.irc_join("carol", &[]).await;
    let mut dave = server.irc_join("dave", &[]).await;
    let mut bob = server.join("bob").await;
    dave.send("KILL bob :no").await;
    dave.expect(":irc.test 481 dave :Permission Denied- You're not an IRC operator")
        .await;
    carol.send("OPER nobody whatever").await;
    carol
        .expect(":irc.test 464 carol :Password incorrect")
        .await;
    carol.send("OPER root wrong-password").await;
    carol
        .expect(":irc.test 464 carol :Password incorrect")
        .await;
    carol.send(&format!("OPER root {ROOT_PW}")).await;
    carol
        .expect(":irc.test 381 carol :You are now an IRC operator")
        .await;
    carol.expect(":carol MODE carol +o").await;
    // The plain --oper credentials still work (the irctest controller uses them).
    dave.send("OPER plain plain-password").await;
    dave.expect(":irc.test 381 dave :You are now an IRC operator")
        .await;
    dave.expect_command("MODE").await;
    carol.send("KILL nobody :x").await;
    carol
        .expect(":irc.test 401 carol nobody :No such nick/channel")
        .await;
    // An IRC operator kills a netcat user, and a netcat operator an IRC user.
    carol.send("KILL bob :spam").await;
    let rest = bob.expect_closed().await;
    assert_eq!(
        rest.last().map(String::as_str),
        Some("You were disconnected by server operator carol: spam")
    );
    let mut zed = server.join("zed").await;
    zed.command(&format!("/oper root {ROOT_PW}")).await;
    assert_eq!(
        zed.command("/kill dave bye").await,
        ["You disconnected dave."]
    );
    let rest = dave.expect_closed().await;
    assert_eq!(
        rest,
        [
            ":irc.test KILL dave :Killed by zed (bye)",
            "ERROR :Closing link: (127.0.0.1) [disconnected by a server operator]"
        ]
    );
    drop((carol, zed));
    server.stop().await;
}

#[tokio::test]
async fn hash_password_prints_a_hash_and_a_bad_opers_file_stops_the_start() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_linechat"))
        .arg("--hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run linechat");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"s3cret-pass\n").await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("s3cret"));

    let tmp = TempPath::new("opers-file");
    let file = tmp.with_name("opers");
    let refused = || async {
        let args = ["--listen", "127.0.0.1:0", "--opers", file.to_str().unwrap()];
        crate::binary::refused_start(&args).await.0
    };
    std::fs::write(
        &file,
        format!(
            "# operators\nroot {}\n\nbad-line-without-hash\n",
            hash.trim()
        ),
    )
    .unwrap();
    let last = refused().await;
    assert_eq!(
        last,
        format!("linechat: {}:4: expected NAME HASH", file.display())
    );
    std::fs::write(&file, "root not-a-hash\n").unwrap();
    let last = refused().await;
    assert_eq!(
        last,
        format!(
            "linechat: {}:1: the hash of root is not an argon2 hash (make one with linechat --hash-password)",
            file.display()
        )
    );
}
