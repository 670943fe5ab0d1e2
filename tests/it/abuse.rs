//! Abuse by one user or client (issue 10): the server's own lines cannot be forged, private
//! messages do not follow a name to whoever took it over, and nothing sent at the prompt keeps
//! a connection there past the registration deadline.

use std::time::Duration;

use linechat::Config;

use crate::support::{Client, TestServer, WAIT};

/// `Disconnects: …, N registration timeouts, …` from `/metrics`.
async fn registration_timeouts(watcher: &mut Client) -> u64 {
    let report = watcher.command("/metrics").await;
    let line = report
        .iter()
        .find(|l| l.starts_with("Disconnects: "))
        .expect("/metrics has a Disconnects line");
    let before = line
        .split(" registration timeouts")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .expect("a registration timeout count");
    before.parse().expect("a number")
}

#[tokio::test]
async fn a_lowercase_http_request_is_told_and_closed_not_welcomed() {
    let server = TestServer::unthrottled().await;
    let mut bystander = server.join("bystander").await;
    for opening in ["post /x HTTP/1.0", "get / http/1.1"] {
        let mut http = Client::connect(server.addr).await;
        http.send_raw(format!("{opening}\r\nHost: x\r\n\r\n").as_bytes())
            .await;
        http.expect_prompt().await;
        assert_eq!(
            http.expect_closed().await,
            [
                "Error: this is a linechat chat server, not a web server; connect with a \
              line-based client such as nc HOST PORT."
            ],
            "{opening}"
        );
    }
    // Nobody joined as a guest, so nobody was announced.
    assert_eq!(bystander.sync().await, Vec::<String>::new());
    server.stop().await;
}

/// A client at the prompt that sends garbage faster than it reads the answers used to hold its
/// reader in the "wait for your own backlog" pause, where the registration deadline did not
/// apply: it stayed at the prompt for as long as it kept not reading.
#[tokio::test]
async fn garbage_at_the_prompt_cannot_outlast_the_registration_deadline() {
    let server = TestServer::start(Config {
        rate_limit: None,
        register_timeout: Duration::from_secs(1),
        // The garbage client never reads its answers: do not wait long to flush them at stop.
        shutdown_grace: Duration::from_secs(1),
        ..Config::default()
    })
    .await;
    let mut watcher = server.join("watcher").await;
    assert_eq!(registration_timeouts(&mut watcher).await, 0);

    // Binary lines (a TLS-looking record behind a junk byte, so it is not recognised as TLS),
    // each answered with an error and the prompt again: 1 MB of them asks for ~3 MB of answers,
    // which this client never reads.
    let mut garbage = Client::connect_small_buffer(server.addr).await;
    let record: &[u8] = b"\xff\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n";
    let flood = record.repeat(1024 * 1024 / record.len());
    let writer = tokio::spawn(async move {
        let _ = garbage.try_send_raw(&flood).await;
        garbage
    });

    let started = tokio::time::Instant::now();
    loop {
        if registration_timeouts(&mut watcher).await == 1 {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "still at the prompt {:?} after a 1 s registration deadline",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    writer.abort();
    server.stop().await;
}

fn with_irc_config() -> Config {
    Config {
        rate_limit: None,
        server_name: "irc.test".to_owned(),
        ..Config::default()
    }
}

/// A user called `Error` typing `line too long (max 1024 bytes); it was not sent.` produced
/// the server's error byte for byte; `Server` with `/me is shutting down.` its farewell.
#[tokio::test]
async fn nobody_can_take_a_word_the_server_starts_its_lines_with() {
    let server = TestServer::with_irc(with_irc_config()).await;
    let mut c = Client::connect(server.addr).await;
    c.expect_prompt().await;
    for word in [
        "Error", "WARNING", "usage", "Server", "Welcome", "pong", "You", "NickServ",
    ] {
        c.send(word).await;
        c.expect(&format!(
            "Error: the nickname {word} is reserved for the server; choose another."
        ))
        .await;
        c.expect_prompt().await;
    }
    c.choose("mallory").await;
    c.send("/nick Topic").await;
    c.expect("Error: the nickname Topic is reserved for the server; choose another.")
        .await;

    // Nor by IRC, which shares the namespace.
    let mut irc = server.irc().await;
    irc.send("NICK Error").await;
    irc.send("USER e 0 * :e").await;
    let refused = irc.line().await;
    assert!(refused.contains(" 432 * Error :"), "{refused}");
    server.stop().await;
}

/// U+202E (right-to-left override), U+2028 (line separator) and zero-width characters passed
/// through from netcat and IRC senders alike.
#[tokio::test]
async fn invisible_and_direction_changing_characters_are_refused_from_every_sender() {
    let server = TestServer::with_irc(with_irc_config()).await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob has joined the chat.").await;
    let refused = |c: char| {
        format!(
            "Error: line contains an invisible or direction-changing character (U+{:04X}); \
             such characters can disguise text or make it pass for someone else's, so it was \
             not sent.",
            c as u32
        )
    };
    for (line, c) in [
        ("see \u{202e}txt.exe", '\u{202e}'),
        ("one\u{2028}Error: line too long", '\u{2028}'),
        ("/me waves\u{200b}", '\u{200b}'),
        ("/msg alice psst\u{2066}", '\u{2066}'),
        ("/topic \u{feff}release", '\u{feff}'),
        ("\u{200d}joined to nothing", '\u{200d}'),
    ] {
        bob.send(line).await;
        bob.expect(&refused(c)).await;
    }
    // Joined emoji and Persian spelling are text, not disguise.
    bob.send("👩\u{200d}💻 می\u{200c}خواهم").await;
    alice.expect("bob: 👩\u{200d}💻 می\u{200c}خواهم").await;

    // An IRC sender is refused with a standard reply; its quit message is cleaned.
    let mut irc = server.irc_join("carol", &[]).await;
    irc.send("JOIN #lobby").await;
    irc.sync().await;
    alice.expect("carol has joined the room.").await;
    irc.send("PRIVMSG #lobby :\u{202e}gnp.exe").await;
    let fail = irc.line().await;
    assert_eq!(
        fail,
        ":irc.test FAIL PRIVMSG INVALID_TEXT :Message rejected: it contains U+202E, an \
         invisible or direction-changing character that can disguise text"
    );
    irc.send("TOPIC #lobby :\u{2029}x").await;
    assert!(irc
        .line()
        .await
        .starts_with(":irc.test FAIL TOPIC INVALID_TEXT "));
    irc.send("QUIT :bye\u{200b}\u{202e}!").await;
    irc.expect_closed().await;
    alice.expect("carol has left the chat (bye!).").await;
    // Nothing refused reached anyone.
    assert_eq!(alice.sync().await, Vec::<String>::new());
    server.stop().await;
}

/// `mallory` took `alice` 0.4 ms after alice's `/quit`, and `/msg alice my secret is 1234`
/// went to mallory. Now a name that another connection held at the last exchange is not
/// delivered to; the sender is told, and sending again reaches the new holder.
#[tokio::test]
async fn a_private_message_does_not_follow_a_name_to_whoever_took_it_over() {
    let server = TestServer::with_irc(with_irc_config()).await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob has joined the chat.").await;
    bob.send("/msg alice lunch?").await;
    bob.expect("[private to alice] lunch?").await;
    alice.expect("[private] bob: lunch?").await;
    alice.send("/quit").await;
    alice.expect("Goodbye!").await;
    bob.expect("alice has left the chat.").await;

    let mut mallory = server.join("alice").await;
    bob.expect("alice has joined the chat.").await;
    bob.send("/msg alice my secret is 1234").await;
    bob.expect(
        "Error: alice is not the alice you were talking to (they reconnected, or someone else \
         took the name); your message was not sent. Send it again to reach the new alice.",
    )
    .await;
    assert_eq!(mallory.sync().await, Vec::<String>::new(), "nothing leaked");
    // Knowingly sent again, it reaches the new alice.
    bob.send("/msg alice who are you?").await;
    bob.expect("[private to alice] who are you?").await;
    mallory.expect("[private] bob: who are you?").await;

    // The one who was written to is checked the same way when it answers, on IRC too: erin
    // heard from dave, dave left, and someone else is dave now.
    let mut erin = server.irc_join("erin", &[]).await;
    let mut dave = server.join("dave").await;
    dave.send("/msg erin ping me back").await;
    dave.expect("[private to erin] ping me back").await;
    let heard = erin.line().await;
    assert!(heard.ends_with(" PRIVMSG erin :ping me back"), "{heard}");
    dave.send("/quit").await;
    dave.expect_closed().await;
    let mut taker = server.join("dave").await;
    erin.send("PRIVMSG dave :the code is 4321").await;
    assert_eq!(
        erin.line().await,
        ":irc.test NOTICE erin :dave is not the dave you were talking to (they reconnected, or \
         someone else took the name); your message was not sent. Send it again to reach the \
         new dave."
    );
    assert_eq!(taker.sync().await, Vec::<String>::new(), "nothing leaked");
    server.stop().await;
}
