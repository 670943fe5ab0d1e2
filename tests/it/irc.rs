//! The IRC gateway over real sockets, against netcat users on the same hub: registration and
//! capabilities, and every rule that crosses protocols (one namespace of nicknames, rooms as
//! channels, messages exactly once, listings and metrics covering everyone, the same limits).

use std::time::Duration;

use linechat::Config;
use tokio::time::Instant;

use crate::support::{irc_command, Client, TestServer};

const SERVER: &str = "irc.test";

fn config() -> Config {
    Config {
        rate_limit: None,
        server_name: SERVER.to_owned(),
        ..Config::default()
    }
}

async fn server() -> TestServer {
    TestServer::with_irc(config()).await
}

/// How many of `lines` are exactly `line`.
fn count(lines: &[String], line: &str) -> usize {
    lines.iter().filter(|l| *l == line).count()
}

/// The ISUPPORT tokens of a welcome (every 005's parameters but the nick and the trailer).
fn isupport(welcome: &[String]) -> Vec<String> {
    welcome
        .iter()
        .filter(|l| irc_command(l) == "005")
        .flat_map(|l| {
            let (params, _trailer) = l.split_once(" :").expect("005 has a trailer");
            params
                .split(' ')
                .skip(3) // source, 005, nick
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn registration_sends_001_to_005_lusers_and_motd() {
    let server = server().await;
    let mut bob = server.irc().await;
    let welcome = bob.register("bob", &[]).await;
    let codes: Vec<&str> = welcome.iter().map(|l| irc_command(l)).collect();
    assert_eq!(&codes[..4], ["001", "002", "003", "004"], "{welcome:?}");
    assert!(
        welcome[0].starts_with(":irc.test 001 bob :") && welcome[0].ends_with("bob!~bob@127.0.0.1"),
        "{}",
        welcome[0]
    );
    let tokens = isupport(&welcome);
    for wanted in [
        "CASEMAPPING=ascii",
        "CHANTYPES=#",
        "NETWORK=linechat",
        "PREFIX=(ov)@+",
        "SILENCE=100",
        "CHANMODES=bq,,,imnst",
        "MODES=4",
    ] {
        assert!(tokens.iter().any(|t| t == wanted), "{wanted} in {tokens:?}");
    }
    for key in [
        "NICKLEN=",
        "CHANNELLEN=",
        "TOPICLEN=",
        "PREFIX=",
        "CHANMODES=",
    ] {
        assert!(
            tokens
                .iter()
                .any(|t| t.starts_with(key) && t.len() > key.len()),
            "{key} in {tokens:?}"
        );
    }
    for lusers in ["251", "252", "254", "255", "265", "266"] {
        assert!(codes.contains(&lusers), "LUSERS {lusers} in {codes:?}");
    }
    let motd = codes.iter().position(|c| *c == "375").expect("375");
    assert_eq!(codes[motd + 1], "372", "{welcome:?}");
    assert_eq!(codes.last(), Some(&"376"));
    // ISUPPORT comes before LUSERS, LUSERS before the MOTD.
    let last_005 = codes.iter().rposition(|c| *c == "005").unwrap();
    let first_251 = codes.iter().position(|c| *c == "251").unwrap();
    assert!(last_005 < first_251 && first_251 < motd, "{codes:?}");
    server.stop().await;
}

#[tokio::test]
async fn cap_ls_302_lists_the_ircv3_capabilities() {
    let server = server().await;
    let mut c = server.irc().await;
    c.send("CAP LS 302").await;
    let ls = c.expect_command("CAP").await;
    let (head, caps) = ls.split_once(" :").expect("CAP LS has a trailer");
    assert_eq!(head, ":irc.test CAP * LS");
    let caps: Vec<&str> = caps.split(' ').collect();
    for wanted in [
        "server-time",
        "message-tags",
        "echo-message",
        "multi-prefix",
        "cap-notify",
        "batch",
        "away-notify",
        "draft/chathistory",
    ] {
        assert!(caps.contains(&wanted), "{wanted} in {caps:?}");
    }
    // Registration waits for CAP END.
    c.send("NICK bob").await;
    c.send("USER bob 0 * :Bob").await;
    assert!(c.sync().await.is_empty(), "nothing before CAP END");
    c.send("CAP END").await;
    c.expect_command("001").await;
    server.stop().await;
}

#[tokio::test]
async fn commands_before_registration_get_451() {
    let server = server().await;
    let mut c = server.irc().await;
    for command in ["JOIN #lobby", "PRIVMSG #lobby :hi there", "WHO #lobby"] {
        c.send(command).await;
        c.expect(":irc.test 451 * :You have not registered").await;
    }
    // NICK alone is not registration either.
    c.send("NICK bob").await;
    c.send("TOPIC #lobby").await;
    c.expect(":irc.test 451 bob :You have not registered").await;
    let welcome = c.register("bob", &[]).await;
    assert_eq!(irc_command(&welcome[0]), "001");
    server.stop().await;
}

#[tokio::test]
async fn an_irc_user_is_in_no_room_until_it_joins() {
    let server = server().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.irc_join("bob", &[]).await;
    // Registered, but in no room: the lobby hears nothing and lists nobody new.
    assert_eq!(alice.command("/who").await, ["In lobby (1): alice"]);
    assert!(alice.sync().await.is_empty());
    bob.send("WHOIS bob").await;
    let whois = bob.until(|l| irc_command(l) == "318").await;
    assert!(
        !whois.iter().any(|l| irc_command(l) == "319"),
        "no channels: {whois:?}"
    );

    bob.send("JOIN #lobby").await;
    bob.expect(":bob!~bob@127.0.0.1 JOIN #lobby").await;
    bob.expect(":irc.test 353 bob = #lobby :alice bob").await;
    bob.expect(":irc.test 366 bob #lobby :End of /NAMES list")
        .await;
    alice.expect("bob has joined the room.").await;
    assert_eq!(
        alice.command("/who").await,
        ["In lobby (2): alice, bob (irc)"]
    );
    server.stop().await;
}

#[tokio::test]
async fn channel_messages_cross_protocols_exactly_once() {
    let server = server().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.irc_join("bob", &[]).await;
    bob.send("JOIN #lobby").await;
    alice.expect("bob has joined the room.").await;
    bob.expect_command("366").await;

    alice.send("hi there").await;
    alice.send("marker one").await;
    let seen = bob
        .until(|l| l == ":alice!alice@127.0.0.1 PRIVMSG #lobby :marker one")
        .await;
    assert_eq!(
        count(&seen, ":alice!alice@127.0.0.1 PRIVMSG #lobby :hi there"),
        1,
        "{seen:?}"
    );
    assert_eq!(seen.len(), 2, "nothing else: {seen:?}");

    bob.send("PRIVMSG #lobby :hi there").await;
    bob.send("PRIVMSG #lobby :marker two").await;
    let seen = alice.skip_until("bob: marker two").await;
    assert_eq!(seen, ["bob: hi there"]);
    // One-word text still carries its ':', as every IRC server sends it: scripts (and
    // linechat-bench once) look for " :" before the text.
    alice.send("word").await;
    bob.expect(":alice!alice@127.0.0.1 PRIVMSG #lobby :word")
        .await;
    // No echo without echo-message.
    assert!(bob.sync().await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn actions_and_private_messages_cross_protocols() {
    let server = server().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.irc_join("bob", &[]).await;
    bob.send("JOIN #lobby").await;
    alice.expect("bob has joined the room.").await;
    bob.expect_command("366").await;

    alice.send("/me waves").await;
    bob.expect(":alice!alice@127.0.0.1 PRIVMSG #lobby :\u{1}ACTION waves\u{1}")
        .await;
    bob.send("PRIVMSG #lobby :\u{1}ACTION waves back\u{1}")
        .await;
    alice.expect("* bob waves back").await;

    alice.send("/msg BOB psst, bob").await;
    alice.expect("[private to bob] psst, bob").await;
    bob.expect(":alice!alice@127.0.0.1 PRIVMSG bob :psst, bob")
        .await;
    bob.send("PRIVMSG Alice :psst yourself").await;
    alice.expect("[private] bob: psst yourself").await;
    // A private message reaches an IRC user in no channel at all.
    bob.send("PART #lobby").await;
    alice.expect("bob has left the room.").await;
    alice.send("/msg bob still there?").await;
    alice.expect("[private to bob] still there?").await;
    bob.expect_command("PART").await;
    bob.expect(":alice!alice@127.0.0.1 PRIVMSG bob :still there?")
        .await;
    server.stop().await;
}

#[tokio::test]
async fn one_nickname_namespace_across_protocols() {
    let server = server().await;
    let mut alice = server.join("Alice").await;

    let mut c = server.irc().await;
    for taken in ["Alice", "alice", "ALICE"] {
        c.send(&format!("NICK {taken}")).await;
        c.expect(&format!(
            ":irc.test 433 * {taken} :Nickname is already in use"
        ))
        .await;
    }
    let mut bob = c;
    bob.register("bob", &[]).await;
    bob.send("NICK aLiCe").await;
    bob.expect(":irc.test 433 bob aLiCe :Nickname is already in use")
        .await;

    // A netcat user can neither pick nor switch to the IRC user's nick, in any case.
    let mut carol = Client::connect(server.addr).await;
    carol.expect_prompt().await;
    carol.send("BOB").await;
    carol
        .expect("Error: the nickname BOB is already taken; choose another.")
        .await;
    carol.expect_prompt().await;
    carol.choose("carol").await;
    alice.expect("carol has joined the chat.").await;
    alice.send("/nick Bob").await;
    alice
        .expect("Error: the nickname Bob is already taken; choose another.")
        .await;
    // Once the IRC user leaves, the name is free for everyone.
    bob.send("QUIT").await;
    bob.expect_closed().await;
    let mut freed = false;
    for _ in 0..50 {
        if alice.command("/nick bob").await == ["Your nickname has been changed to bob"] {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "bob's nick freed after QUIT");
    server.stop().await;
}

#[tokio::test]
async fn nicks_topics_parts_and_quits_cross_protocols() {
    let server = server().await;
    let mut alice = server.join("alice").await;
    let mut carol = server.join("carol").await;
    alice.expect("carol has joined the chat.").await;
    let mut bob = server.irc_join("bob", &[]).await;
    bob.send("JOIN #lobby").await;
    bob.expect_command("366").await;
    alice.expect("bob has joined the room.").await;
    carol.expect("bob has joined the room.").await;

    // netcat /nick → IRC NICK.
    alice.send("/nick alicia").await;
    alice
        .expect("Your nickname has been changed to alicia")
        .await;
    bob.expect(":alice!alice@127.0.0.1 NICK alicia").await;
    carol.expect("alice changed nickname to alicia").await;
    // IRC NICK → netcat.
    bob.send("NICK robert").await;
    bob.expect(":bob!~bob@127.0.0.1 NICK robert").await;
    alice.expect("bob changed nickname to robert").await;
    carol.expect("bob changed nickname to robert").await;

    // IRC TOPIC → netcat; netcat /topic → IRC TOPIC.
    bob.send("TOPIC #lobby :release on friday").await;
    bob.expect(":robert!~bob@127.0.0.1 TOPIC #lobby :release on friday")
        .await;
    alice
        .expect("robert set the topic of lobby: release on friday")
        .await;
    carol
        .expect("robert set the topic of lobby: release on friday")
        .await;
    carol.send("/topic ship it today").await;
    let topic = bob.line().await;
    assert_eq!(topic, ":carol!carol@127.0.0.1 TOPIC #lobby :ship it today");
    bob.send("TOPIC #lobby").await;
    bob.expect(":irc.test 332 robert #lobby :ship it today")
        .await;
    let by = bob.line().await;
    assert!(by.starts_with(":irc.test 333 robert #lobby carol "), "{by}");

    // netcat /join dev → IRC PART #lobby.
    alice.send("/join dev").await;
    let part = bob.line().await;
    assert!(
        part.starts_with(":alicia!") && part.ends_with(" PART #lobby"),
        "{part}"
    );
    carol.skip_until("alicia has left the room.").await;

    // IRC PART → netcat; IRC QUIT → netcat, with the reason.
    bob.send("JOIN #dev").await;
    bob.expect_command("366").await;
    alice.skip_until("robert has joined the room.").await;
    bob.send("PART #dev :later").await;
    bob.expect(":robert!~bob@127.0.0.1 PART #dev :later").await;
    alice.expect("robert has left the room (later).").await;
    bob.send("QUIT :off to lunch").await;
    let farewell = bob.expect_closed().await;
    assert_eq!(
        farewell,
        ["ERROR :Closing link: (127.0.0.1) [Quit: off to lunch]"]
    );
    carol
        .expect("robert has left the chat (off to lunch).")
        .await;
    // alicia shares no room with robert any more: nothing for her.
    assert!(alice.sync().await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_quit_or_nick_reaches_a_user_sharing_two_channels_once() {
    let server = server().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.irc_join("bob", &[]).await;
    let mut carol = server.irc_join("carol", &[]).await;
    bob.send("JOIN #lobby,#dev").await;
    bob.expect_command("366").await;
    bob.expect_command("366").await;
    carol.send("JOIN #lobby,#dev").await;
    carol.expect_command("366").await;
    carol.expect_command("366").await;
    assert_eq!(
        alice.skip_until("carol has joined the room.").await,
        ["bob has joined the room."]
    );
    assert_eq!(bob.sync().await.len(), 2, "carol joined two channels");

    carol.send("NICK caroline").await;
    carol.expect(":carol!~carol@127.0.0.1 NICK caroline").await;
    let seen = bob.sync().await;
    assert_eq!(seen, [":carol!~carol@127.0.0.1 NICK caroline"]);
    alice.expect("carol changed nickname to caroline").await;
    assert!(alice.sync().await.is_empty(), "once for alice too");

    carol.send("QUIT :bye now").await;
    carol.expect_closed().await;
    alice.expect("caroline has left the chat (bye now).").await;
    // The hub queued the quit for bob before alice's marker, so the marker bounds the count.
    alice.send("after the quit").await;
    let seen = bob
        .until(|l| l == ":alice!alice@127.0.0.1 PRIVMSG #lobby :after the quit")
        .await;
    assert_eq!(
        seen,
        [
            ":caroline!~carol@127.0.0.1 QUIT :Quit: bye now",
            ":alice!alice@127.0.0.1 PRIVMSG #lobby :after the quit",
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn who_rooms_and_metrics_on_netcat_cover_irc_users() {
    let server = server().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.irc_join("bob", &[]).await;
    bob.send("JOIN #lobby,#dev").await;
    bob.expect_command("366").await;
    bob.expect_command("366").await;
    alice.expect("bob has joined the room.").await;

    assert_eq!(
        alice.command("/who").await,
        ["In lobby (2): alice, bob (irc)"]
    );
    assert_eq!(alice.command("/who dev").await, ["In dev (1): bob (irc)"]);
    let rooms = alice.command("/rooms").await;
    assert!(
        rooms.contains(&"* lobby: 2 people, 0 messages (you are here)".to_owned()),
        "{rooms:?}"
    );
    assert!(
        rooms.contains(&"  dev: 1 person, 0 messages".to_owned()),
        "{rooms:?}"
    );
    let metrics = alice.command("/metrics").await;
    assert!(
        metrics.contains(&"Active Clients: 2".to_owned()),
        "{metrics:?}"
    );
    let header = format!(" - bob ({}, irc):", bob.local_addr);
    assert!(metrics.contains(&header), "{header} in {metrics:?}");
    assert!(
        metrics
            .iter()
            .any(|l| l.starts_with(" - alice (") && l.ends_with(", line):")),
        "{metrics:?}"
    );
    let one = alice.command("/metrics BOB").await;
    assert_eq!(one.iter().filter(|l| l.starts_with(" - ")).count(), 1);
    assert!(one.contains(&header), "{one:?}");
    server.stop().await;
}

#[tokio::test]
async fn an_overlong_irc_line_gets_417_is_not_relayed_and_the_connection_lives() {
    let server = server().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.irc_join("bob", &[]).await;
    bob.send("JOIN #lobby").await;
    bob.expect_command("366").await;
    alice.expect("bob has joined the room.").await;

    let long = format!("PRIVMSG #lobby :{}", "x".repeat(600 - 16));
    assert_eq!(long.len(), 600);
    bob.send(&long).await;
    bob.expect(":irc.test 417 bob :Input line was too long")
        .await;
    // Far over any buffer: still one 417, and nothing relayed.
    bob.send(&format!("PRIVMSG #lobby :{}", "y".repeat(20_000)))
        .await;
    bob.expect(":irc.test 417 bob :Input line was too long")
        .await;
    bob.send("PING :still-here").await;
    bob.expect(":irc.test PONG irc.test still-here").await;
    bob.send("PRIVMSG #lobby :short one").await;
    assert_eq!(
        alice.skip_until("bob: short one").await,
        Vec::<String>::new()
    );
    server.stop().await;
}

/// irctest's websocket truncation tests: a 510-byte line that IRC readers would get longer
/// than 512 with the sender's prefix is refused with 417, saying how much fits, rather than
/// cut; one that fits to the byte is relayed whole.
#[tokio::test]
async fn a_message_too_long_once_prefixed_gets_417_and_one_that_fits_is_relayed_whole() {
    let server = server().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.irc_join("bob", &[]).await;
    let mut carol = server.irc_join("carol", &[]).await;
    for c in [&mut bob, &mut carol] {
        c.send("JOIN #lobby").await;
        c.expect_command("366").await;
    }
    alice.skip_until("carol has joined the room.").await;
    bob.until(|l| l.contains("carol!~carol@127.0.0.1 JOIN"))
        .await;

    // `:bob!~bob@127.0.0.1 PRIVMSG #lobby :` is 36 bytes: 474 of text fill the 510.
    let fits = "f".repeat(474);
    bob.send(&format!("PRIVMSG #lobby :{fits}")).await;
    let relayed = format!(":bob!~bob@127.0.0.1 PRIVMSG #lobby :{fits}");
    assert_eq!(relayed.len(), 510);
    carol.expect(&relayed).await;
    alice.expect(&format!("bob: {fits}")).await;

    let over = "o".repeat(475);
    bob.send(&format!("PRIVMSG #lobby :{over}")).await;
    bob.expect(
        ":irc.test 417 bob :Message too long: relayed as :bob!~bob@127.0.0.1 PRIVMSG #lobby :... \
         it would be 511 bytes, over IRC's 510 (512 with CRLF); at most 474 bytes of text fit",
    )
    .await;
    // To a nick the target is shorter, so the same 475 bytes fit (`:bob!~bob@127.0.0.1
    // PRIVMSG carol :` is 35).
    bob.send(&format!("PRIVMSG carol :{over}")).await;
    carol
        .expect(&format!(":bob!~bob@127.0.0.1 PRIVMSG carol :{over}"))
        .await;
    // `NOTICE carol` is one byte shorter again: 476 fit, 477 do not, and nothing refused is
    // relayed (carol's next line is the one after).
    bob.send(&format!("NOTICE carol :{}", "o".repeat(477)))
        .await;
    bob.expect_command("417").await;
    bob.send("PRIVMSG #lobby :after").await;
    carol
        .expect(":bob!~bob@127.0.0.1 PRIVMSG #lobby :after")
        .await;
    assert_eq!(alice.skip_until("bob: after").await, Vec::<String>::new());

    // A netcat user's line may be as long as --max-line: IRC readers get all of it, as
    // before (cutting it would lose its end for every reader; see docs/PROTOCOL.md).
    let long = "n".repeat(900);
    alice.send(&long).await;
    carol
        .expect(&format!(":alice!alice@127.0.0.1 PRIVMSG #lobby :{long}"))
        .await;
    server.stop().await;
}

#[tokio::test]
async fn echo_message_echoes_and_server_time_tags() {
    let server = server().await;
    let mut alice = server.join("alice").await;
    let mut bob = server
        .irc_join("bob", &["echo-message", "server-time"])
        .await;
    bob.send("JOIN #lobby").await;
    let join = bob.line().await;
    assert!(
        join.starts_with("@time=") && join.ends_with(" :bob!~bob@127.0.0.1 JOIN #lobby"),
        "{join}"
    );
    bob.expect_command("366").await;
    alice.expect("bob has joined the room.").await;

    bob.send("PRIVMSG #lobby :echo this").await;
    let echo = bob.line().await;
    assert!(
        echo.starts_with("@time=")
            && echo.ends_with(" :bob!~bob@127.0.0.1 PRIVMSG #lobby :echo this"),
        "{echo}"
    );
    let time = echo["@time=".len()..].split([';', ' ']).next().unwrap();
    // 2026-12-01T21:22:33.123Z
    assert_eq!(time.len(), 24, "{time}");
    assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
    alice.expect("bob: echo this").await;

    alice.send("from netcat").await;
    let heard = bob.line().await;
    assert!(
        heard.starts_with("@time=")
            && heard.ends_with(" :alice!alice@127.0.0.1 PRIVMSG #lobby :from netcat"),
        "{heard}"
    );
    // Echo covers private messages too.
    bob.send("PRIVMSG alice :just you").await;
    let echo = bob.line().await;
    assert!(
        echo.ends_with(" :bob!~bob@127.0.0.1 PRIVMSG alice :just you"),
        "{echo}"
    );
    alice.expect("[private] bob: just you").await;
    server.stop().await;
}

#[tokio::test]
async fn whox_lists_a_channel_with_the_token() {
    let server = server().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.irc_join("bob", &[]).await;
    bob.send("JOIN #lobby").await;
    bob.expect_command("366").await;
    alice.expect("bob has joined the room.").await;

    bob.send("WHO #lobby %tnuhraf,42").await;
    let reply = bob.until(|l| irc_command(l) == "315").await;
    let (end, rows) = reply.split_last().unwrap();
    assert_eq!(end, ":irc.test 315 bob #lobby :End of WHO list");
    let mut rows = rows.to_vec();
    rows.sort();
    // Fields in WHOX order: t u h n f a r.
    assert_eq!(
        rows,
        [
            ":irc.test 354 bob 42 alice 127.0.0.1 alice H 0 :netcat user",
            ":irc.test 354 bob 42 ~bob 127.0.0.1 bob H 0 :bob the tester",
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn chathistory_latest_returns_earlier_messages_in_a_batch() {
    let server = server().await;
    let mut alice = server.join("alice").await;
    alice.send("first words").await;
    alice.send("second words").await;
    alice.sync().await;
    let mut bob = server
        .irc_join("bob", &["batch", "draft/chathistory", "server-time"])
        .await;
    bob.send("JOIN #lobby").await;
    bob.expect_command("366").await;
    bob.send("PRIVMSG #lobby :third words").await;
    alice.skip_until("bob: third words").await;

    bob.send("CHATHISTORY LATEST #lobby * 10").await;
    let open = bob.line().await;
    let (head, id) = open.rsplit_once(" +").map_or((open.as_str(), ""), |x| x);
    let _ = head;
    let id = id.split(' ').next().unwrap_or("").to_owned();
    assert!(
        open.starts_with(":irc.test BATCH +") && open.ends_with(" chathistory #lobby"),
        "{open}"
    );
    let batch = bob.until(|l| l == format!(":irc.test BATCH -{id}")).await;
    let (_, inside) = batch.split_last().unwrap();
    let texts: Vec<String> = inside
        .iter()
        .map(|l| {
            assert!(l.starts_with(&format!("@batch={id};time=")), "{l}");
            l.split_once(' ').unwrap().1.to_owned()
        })
        .collect();
    assert_eq!(
        texts,
        [
            ":alice!alice@127.0.0.1 PRIVMSG #lobby :first words",
            ":alice!alice@127.0.0.1 PRIVMSG #lobby :second words",
            ":bob!~bob@127.0.0.1 PRIVMSG #lobby :third words",
        ]
    );
    // A limit keeps the newest.
    bob.send("CHATHISTORY LATEST #lobby * 1").await;
    let batch = bob.until(|l| l.starts_with(":irc.test BATCH -")).await;
    assert_eq!(batch.len(), 3, "{batch:?}");
    assert!(
        batch[1].ends_with("PRIVMSG #lobby :third words"),
        "{batch:?}"
    );
    server.stop().await;
}

/// Virtual time is free: wait as long as any timer here could take.
const PATIENT: Duration = Duration::from_secs(30 * 24 * 3600);

#[tokio::test]
async fn creating_too_many_channels_gets_405() {
    let server = TestServer::with_irc(Config {
        rooms_per_minute: 2,
        ..config()
    })
    .await;
    let mut bob = server.irc_join("bob", &[]).await;
    bob.send("JOIN #a,#b,#c,#lobby").await;
    let lines = bob.sync().await;
    assert_eq!(
        count(&lines, ":bob!~bob@127.0.0.1 JOIN #a"),
        1,
        "{lines:#?}"
    );
    assert_eq!(
        count(&lines, ":bob!~bob@127.0.0.1 JOIN #b"),
        1,
        "{lines:#?}"
    );
    assert_eq!(
        count(
            &lines,
            ":irc.test 405 bob #c :You have created 2 rooms in the last minute; try again in 60 s"
        ),
        1,
        "{lines:#?}"
    );
    assert_eq!(
        count(&lines, ":bob!~bob@127.0.0.1 JOIN #lobby"),
        1,
        "{lines:#?}"
    );
    server.stop().await;
}

fn idle_config() -> Config {
    Config {
        idle_timeout: Some(Duration::from_secs(20)),
        ..config()
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_irc_client_is_pinged_first_then_dropped_with_error() {
    let server = TestServer::with_irc(idle_config()).await;
    let mut bob = server.irc().await;
    bob.wait = PATIENT;
    bob.auto_pong = false;
    bob.register("bob", &[]).await;
    let registered = Instant::now();
    bob.expect(":irc.test PING irc.test").await;
    assert_eq!((Instant::now() - registered).as_secs(), 18);
    let rest = bob.expect_closed().await;
    assert_eq!(rest, ["ERROR :Closing link: (127.0.0.1) [Ping timeout]"]);
    assert_eq!((Instant::now() - registered).as_secs(), 20);
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_irc_client_that_answers_ping_stays_connected() {
    let server = TestServer::with_irc(idle_config()).await;
    let mut bob = server.irc().await;
    bob.wait = PATIENT;
    bob.auto_pong = false;
    bob.register("bob", &[]).await;
    let registered = Instant::now();
    for _ in 0..3 {
        bob.expect(":irc.test PING irc.test").await;
        bob.send("PONG irc.test").await;
    }
    assert!((Instant::now() - registered).as_secs() >= 54);
    // Paused time may run the clock on to the next PING before the server reads this; the
    // point is that the connection is still up and answering.
    bob.auto_pong = true;
    bob.send("PING :alive").await;
    bob.expect(":irc.test PONG irc.test alive").await;
    server.stop().await;
}

/// CHATHISTORY and NAMES cost flood control as /history and /who do on netcat (2 lines more
/// than the one they take), so a client cannot make the server read history or list a big
/// room as fast as it can type. At 20 lines a second with a burst of 50: registration and
/// the JOIN take 3, then 20 CHATHISTORY and 10 NAMES are 90 lines' worth and the PING one
/// more, 44 past the 47 left: 2.2 s. Uncharged, all 31 went through at once. (Written, it
/// found a bug: CHATHISTORY of an empty room to a client without `batch` is an empty reply,
/// and bob, paused with only such replies queued, was cut off with `connection error`: the
/// writer wrote 0 bytes and took it for a dead peer. See `net::stream`'s tests.)
#[tokio::test(start_paused = true)]
async fn chathistory_and_names_cost_flood_control_like_history_and_who() {
    let server = TestServer::with_irc(Config {
        rate_limit: Some(20.0),
        rate_burst: 50,
        idle_timeout: None,
        ..config()
    })
    .await;
    let mut bob = server.irc().await;
    bob.wait = PATIENT;
    bob.register("bob", &[]).await;
    bob.send("JOIN #lobby").await;
    bob.expect_command("366").await;
    let start = Instant::now();
    let mut burst = "CHATHISTORY LATEST #lobby * 10\r\n".repeat(20);
    burst.push_str(&"NAMES #lobby\r\n".repeat(10));
    burst.push_str("PING :done\r\n");
    bob.send_raw(burst.as_bytes()).await;
    bob.until(|l| l == ":irc.test PONG irc.test done").await;
    let took = Instant::now() - start;
    assert!(
        took >= Duration::from_millis(2_100) && took <= Duration::from_millis(2_300),
        "{took:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_service_nick_answers_with_notices() {
    let server = server().await;
    let mut bob = server.irc_join("bob", &[]).await;
    bob.send("PRIVMSG linechat :help").await;
    let help = bob.sync().await;
    assert!(!help.is_empty());
    for line in &help {
        assert!(
            line.starts_with(":linechat!linechat@irc.test NOTICE bob :"),
            "{line}"
        );
    }
    assert!(
        help[0].contains("time") && help[0].contains("metrics"),
        "{help:?}"
    );
    bob.send("PRIVMSG LineChat :time").await;
    let time = bob.line().await;
    assert!(
        time.starts_with(":linechat!linechat@irc.test NOTICE bob :Server time: "),
        "{time}"
    );
    // The same reports netcat users get, a NOTICE per line.
    bob.send("PRIVMSG linechat :metrics").await;
    let report = bob.sync().await;
    let text = report.join("\n");
    assert!(
        text.contains("NOTICE bob :=== Server Metrics ===")
            && text.contains("NOTICE bob :Active Clients: 1"),
        "{text}"
    );
    assert!(text.contains(", irc):"), "bob's own block says irc: {text}");
    bob.send("PRIVMSG linechat :throughput").await;
    let report = bob.sync().await;
    assert!(
        report[0].contains(" NOTICE bob :=== Throughput for bob (connected "),
        "{report:?}"
    );
    server.stop().await;
}

/// IRC clients may send formatting codes and any control character; none of it reaches a
/// netcat user's terminal, which could otherwise be repainted (ESC sequences) by anyone on IRC.
#[tokio::test]
async fn control_characters_from_irc_never_reach_netcat_terminals() {
    let server = server().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.irc_join("bob", &[]).await;
    bob.send("JOIN #lobby").await;
    alice.expect("bob has joined the room.").await;
    bob.send("PRIVMSG #lobby :\u{2}bold\u{2} \u{3}04,12red\u{3} \u{1b}[2Jwiped")
        .await;
    alice.expect("bob: bold red [2Jwiped").await;
    bob.send("TOPIC #lobby :\u{1b}]0;owned\u{7}news").await;
    alice
        .expect("bob set the topic of lobby: ]0;ownednews")
        .await;
    // IRC users still get the codes as sent: they are IRC's own.
    let mut carol = server.irc_join("carol", &[]).await;
    carol.send("JOIN #lobby").await;
    carol.expect_command("366").await;
    alice.expect("carol has joined the room.").await;
    bob.send("PRIVMSG #lobby :\u{2}hi\u{2} there").await;
    carol
        .expect(":bob!~bob@127.0.0.1 PRIVMSG #lobby :\u{2}hi\u{2} there")
        .await;
    alice.expect("bob: hi there").await;
    server.stop().await;
}

/// Sends `query` and returns the reply's lines before its `end` numeric (sorted: their order
/// is unspecified) and that numeric's line.
async fn reply_until(
    c: &mut crate::support::IrcClient,
    query: &str,
    end: &str,
) -> (Vec<String>, String) {
    c.send(query).await;
    let mut lines = c.until(|l| irc_command(l) == end).await;
    let last = lines.pop().expect("the end numeric");
    lines.sort();
    (lines, last)
}

/// The nicknames a WHO reply's 352 rows name.
fn who_nicks(rows: &[String]) -> Vec<String> {
    rows.iter()
        .map(|r| {
            assert_eq!(irc_command(r), "352", "{r}");
            r.split(' ').nth(7).expect("352 has a nick").to_owned()
        })
        .collect()
}

#[tokio::test]
async fn who_masks_match_every_field_as_globs_and_hide_the_invisible() {
    let server = TestServer::with_irc(Config {
        opers: vec![("op".to_owned(), "secret".to_owned())],
        ..config()
    })
    .await;
    let _alice = server.join("alice").await;
    let mut cool = server.irc_join("coolNick", &[]).await;
    let mut other = server.irc_join("other", &[]).await;

    // A mask is matched, case-insensitively, against nickname, user, host, real name and
    // server; the end names the mask as sent.
    let (rows, end) = reply_until(&mut other, "WHO COOLni*", "315").await;
    assert_eq!(
        rows,
        [":irc.test 352 other * ~coolNick 127.0.0.1 irc.test coolNick H :0 coolNick the tester"]
    );
    assert_eq!(end, ":irc.test 315 other COOLni* :End of WHO list");
    for (mask, nicks) in [
        ("c?olnick", &["coolNick"][..]),
        ("~cool*", &["coolNick"]),
        ("*TESTER", &["coolNick", "other"]),
        ("netcat*", &["alice"]),
        ("127.0.0.?", &["alice", "coolNick", "other"]),
        ("irc.test", &["alice", "coolNick", "other"]),
        ("0", &["alice", "coolNick", "other"]),
        ("cool", &[]),
    ] {
        let (rows, _) = reply_until(&mut other, &format!("WHO {mask}"), "315").await;
        assert_eq!(who_nicks(&rows), nicks, "WHO {mask}");
    }

    // +i hides coolNick from masks of those who share no channel with it, not from its
    // nickname, and not from itself.
    cool.send("MODE coolNick +i").await;
    cool.expect(":coolNick MODE coolNick +i").await;
    let (rows, _) = reply_until(&mut other, "WHO cool*", "315").await;
    assert_eq!(rows, NO_LINES);
    let (rows, _) = reply_until(&mut other, "WHO *", "315").await;
    assert_eq!(who_nicks(&rows), ["alice", "other"]);
    let (rows, _) = reply_until(&mut other, "WHO coolnick", "315").await;
    assert_eq!(who_nicks(&rows), ["coolNick"]);
    let (rows, _) = reply_until(&mut cool, "WHO cool*", "315").await;
    assert_eq!(who_nicks(&rows), ["coolNick"]);
    cool.send("JOIN #dev").await;
    cool.expect_command("366").await;
    other.send("JOIN #dev").await;
    other.expect_command("366").await;
    let (rows, _) = reply_until(&mut other, "WHO cool*", "315").await;
    assert_eq!(who_nicks(&rows), ["coolNick"]);

    // `o`: server operators only.
    let (rows, _) = reply_until(&mut other, "WHO * o", "315").await;
    assert_eq!(rows, NO_LINES);
    cool.send("OPER op secret").await;
    cool.expect_command("381").await;
    let (rows, _) = reply_until(&mut other, "WHO * o", "315").await;
    assert_eq!(who_nicks(&rows), ["coolNick"]);
    let (rows, _) = reply_until(&mut other, "WHO cool* o%nf", "315").await;
    assert_eq!(rows, [":irc.test 354 other coolNick H*"]);
    server.stop().await;
}

const NO_LINES: [String; 0] = [];

#[tokio::test]
async fn operators_lock_and_unlock_the_topic_and_hand_out_standing_across_protocols() {
    let server = server().await;
    let mut bob = server.irc_join("bob", &[]).await;
    bob.send("JOIN #dev").await;
    bob.expect_command("366").await;
    let mut alice = server.join("alice").await;
    alice.send("/join dev").await;
    alice
        .skip_until("You are now in dev (2 people here).")
        .await;
    let mut carol = server.irc_join("carol", &["multi-prefix"]).await;
    carol.send("JOIN #dev").await;
    carol.expect_command("366").await;
    bob.sync().await;
    alice.sync().await;

    // A new room's topic is locked to its operator, the first in.
    bob.send("MODE #dev").await;
    bob.expect(":irc.test 324 bob #dev +nt").await;
    bob.expect_command("329").await;
    carol.send("TOPIC #dev :carol's").await;
    carol
        .expect(":irc.test 482 carol #dev :You're not channel operator")
        .await;
    assert_eq!(
        alice.command("/topic alice's").await,
        ["Error: the topic of dev is locked; only its operators may change it."]
    );
    carol.send("MODE #dev -t").await;
    carol
        .expect(":irc.test 482 carol #dev :You're not channel operator")
        .await;

    // The operator unlocks it: one MODE to every IRC member, a sentence to netcat users.
    bob.send("MODE #dev -t").await;
    bob.expect(":bob!~bob@127.0.0.1 MODE #dev -t").await;
    carol.expect(":bob!~bob@127.0.0.1 MODE #dev -t").await;
    alice
        .expect("bob unlocked the topic of dev: anyone in it may change it.")
        .await;
    bob.send("MODE #dev").await;
    bob.expect(":irc.test 324 bob #dev +n").await;
    bob.expect_command("329").await;
    carol.send("TOPIC #dev :carol's").await;
    carol
        .expect(":carol!~carol@127.0.0.1 TOPIC #dev :carol's")
        .await;
    alice.expect("carol set the topic of dev: carol's").await;
    alice.send("/topic alice's").await;
    alice.expect("alice set the topic of dev: alice's").await;
    carol.expect_command("TOPIC").await;
    bob.sync().await;
    // Locked again; what is already so changes nothing and tells nobody.
    bob.send("MODE #dev +t").await;
    bob.expect(":bob!~bob@127.0.0.1 MODE #dev +t").await;
    bob.send("MODE #dev +tn").await;
    assert_eq!(bob.sync().await, NO_LINES);
    carol.expect(":bob!~bob@127.0.0.1 MODE #dev +t").await;
    assert_eq!(carol.sync().await, NO_LINES);
    alice
        .expect("bob locked the topic of dev: only its operators may change it.")
        .await;
    assert!(alice.sync().await.is_empty());

    // A voice is shown (`+`, both prefixes with multi-prefix) but sets no locked topic.
    bob.send("MODE #dev +v carol").await;
    bob.expect(":bob!~bob@127.0.0.1 MODE #dev +v carol").await;
    carol.expect(":bob!~bob@127.0.0.1 MODE #dev +v carol").await;
    alice.expect("bob gave carol a voice in dev.").await;
    carol.send("TOPIC #dev :voiced").await;
    carol.expect_command("482").await;
    bob.send("MODE #dev +v bob").await;
    bob.expect(":bob!~bob@127.0.0.1 MODE #dev +v bob").await;
    let names = |line: &str| {
        let mut nicks: Vec<String> = line
            .rsplit_once(" :")
            .expect("353 has a trailer")
            .1
            .split(' ')
            .map(str::to_owned)
            .collect();
        nicks.sort();
        nicks
    };
    bob.send("NAMES #dev").await;
    assert_eq!(
        names(&bob.expect_command("353").await),
        ["+carol", "@bob", "alice"]
    );
    bob.expect_command("366").await;
    carol.sync().await;
    carol.send("NAMES #dev").await;
    assert_eq!(
        names(&carol.expect_command("353").await),
        ["+carol", "@+bob", "alice"]
    );
    carol.expect_command("366").await;
    let (rows, _) = reply_until(&mut carol, "WHO #dev %nf", "315").await;
    assert_eq!(
        rows,
        [
            ":irc.test 354 carol alice H",
            ":irc.test 354 carol bob H@+",
            ":irc.test 354 carol carol H+",
        ]
    );

    // An operator makes a netcat user one; it then sets the locked topic.
    bob.send("MODE #dev +o alice").await;
    bob.expect(":bob!~bob@127.0.0.1 MODE #dev +o alice").await;
    alice.skip_until("bob made alice an operator of dev.").await;
    alice.send("/topic by an operator").await;
    alice
        .expect("alice set the topic of dev: by an operator")
        .await;

    // Several changes in one MODE are told as one; a change naming someone who is not there
    // is refused alone, as are unknown letters.
    let mut dave = server.irc_join("dave", &[]).await;
    dave.send("MODE #dev -t").await;
    dave.expect(":irc.test 442 dave #dev :You're not on that channel")
        .await;
    bob.sync().await;
    carol.sync().await;
    bob.send("MODE #dev -v+o-oo+x carol carol alice nobody")
        .await;
    let lines = bob.until(|l| irc_command(l) == "401").await;
    assert_eq!(
        lines,
        [
            ":irc.test 472 bob x :is unknown mode char to me",
            ":bob!~bob@127.0.0.1 MODE #dev -v+o-o carol carol alice",
            ":irc.test 401 bob nobody :No such nick/channel",
        ]
    );
    alice
        .skip_until("bob removed alice from the operators of dev.")
        .await;
    bob.send("MODE #dev +o dave").await;
    bob.expect(":irc.test 441 bob dave #dev :They aren't on that channel")
        .await;
    carol
        .until(|l| l == ":bob!~bob@127.0.0.1 MODE #dev -v+o-o carol carol alice")
        .await;
    carol.send("TOPIC #dev :carol is an operator now").await;
    carol.expect_command("TOPIC").await;
    // At most MODES=4 changes naming someone per MODE: the fifth is left out.
    bob.sync().await;
    bob.send("MODE #dev +v-v+v-v+v carol carol carol carol carol")
        .await;
    bob.expect(":bob!~bob@127.0.0.1 MODE #dev +v-v+v-v carol carol carol carol")
        .await;
    bob.send("NAMES #dev").await;
    assert!(names(&bob.expect_command("353").await).contains(&"@carol".to_owned()));
    bob.expect_command("366").await;
    // The lobby has no operators: its modes are nobody's to change.
    bob.send("JOIN #lobby").await;
    bob.expect_command("366").await;
    bob.send("MODE #lobby +s").await;
    bob.expect(":irc.test 482 bob #lobby :You're not channel operator")
        .await;
    server.stop().await;
}

#[tokio::test]
async fn a_secret_channel_is_hidden_from_outsiders_on_both_protocols() {
    let server = server().await;
    let mut bob = server.irc_join("bob", &[]).await;
    bob.send("JOIN #hideout,#open").await;
    bob.expect_command("366").await;
    bob.expect_command("366").await;
    bob.send("TOPIC #hideout :plans").await;
    bob.expect_command("TOPIC").await;
    bob.send("MODE #hideout +s").await;
    bob.expect(":bob!~bob@127.0.0.1 MODE #hideout +s").await;
    bob.send("MODE #hideout").await;
    bob.expect(":irc.test 324 bob #hideout +nts").await;
    bob.expect_command("329").await;
    // Its members see it, with `@` for a secret channel in NAMES.
    bob.send("NAMES #hideout,#open").await;
    let lines = bob.until(|l| irc_command(l) == "366").await;
    assert_eq!(
        lines,
        [
            ":irc.test 353 bob @ #hideout @bob",
            ":irc.test 353 bob = #open @bob",
            ":irc.test 366 bob #hideout,#open :End of /NAMES list",
        ]
    );

    // Nobody else does, on IRC …
    let mut carol = server.irc_join("carol", &[]).await;
    let (rows, _) = reply_until(&mut carol, "LIST", "323").await;
    assert_eq!(
        rows,
        [
            ":irc.test 321 carol Channel :Users  Name",
            ":irc.test 322 carol #open 1 :"
        ]
    );
    carol.send("NAMES #hideout").await;
    carol
        .expect(":irc.test 366 carol #hideout :End of /NAMES list")
        .await;
    let (rows, _) = reply_until(&mut carol, "WHO #hideout", "315").await;
    assert_eq!(rows, NO_LINES);
    for query in [
        "TOPIC #hideout",
        "MODE #hideout",
        "CHATHISTORY LATEST #hideout * 10",
    ] {
        carol.send(query).await;
        let reply = carol.line().await;
        assert!(
            reply.starts_with(":irc.test 403 carol #hideout ")
                || reply.starts_with(":irc.test FAIL CHATHISTORY INVALID_TARGET #hideout "),
            "{query}: {reply}"
        );
    }
    let (rows, _) = reply_until(&mut carol, "WHOIS bob", "318").await;
    let channels: Vec<&String> = rows.iter().filter(|l| irc_command(l) == "319").collect();
    assert_eq!(channels, [":irc.test 319 carol bob @#open"]);
    let (rows, _) = reply_until(&mut carol, "WHO bob", "315").await;
    assert_eq!(
        rows,
        [":irc.test 352 carol #open ~bob 127.0.0.1 irc.test bob H@ :0 bob the tester"]
    );

    // … or on netcat: /rooms, /who and /metrics keep it to themselves.
    let mut alice = server.join("alice").await;
    let rooms = alice.command("/rooms").await;
    assert!(!rooms.iter().any(|l| l.contains("hideout")), "{rooms:?}");
    assert!(
        rooms.contains(&"  open: 1 person, 0 messages".to_owned()),
        "{rooms:?}"
    );
    assert_eq!(
        alice.command("/who hideout").await,
        ["Error: there is no room called hideout; /rooms lists them."]
    );
    let metrics = alice.command("/metrics").await;
    assert!(
        !metrics.iter().any(|l| l.contains("hideout")),
        "{metrics:?}"
    );
    assert!(
        metrics.contains(&" ... and 1 secret room, not listed".to_owned()),
        "{metrics:?}"
    );

    // Secret is not closed: whoever knows the name enters, and then sees it.
    alice.send("/join hideout").await;
    alice
        .expect("You are now in hideout (2 people here).")
        .await;
    alice.expect("Topic of hideout: plans (set by bob)").await;
    bob.expect(":alice!alice@127.0.0.1 JOIN #hideout").await;
    let rooms = alice.command("/rooms").await;
    assert!(
        rooms.contains(&"* hideout: 2 people, 0 messages (you are here)".to_owned()),
        "{rooms:?}"
    );
    carol.send("JOIN #hideout").await;
    let join = carol.until(|l| irc_command(l) == "366").await;
    assert!(
        join.contains(&":irc.test 353 carol @ #hideout :@bob alice carol".to_owned()),
        "{join:?}"
    );
    // Made public, it is listed again.
    bob.send("MODE #hideout -s").await;
    alice
        .skip_until("bob made hideout public: /rooms lists it.")
        .await;
    carol.expect(":bob!~bob@127.0.0.1 MODE #hideout -s").await;
    let (rows, _) = reply_until(&mut carol, "LIST", "323").await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    server.stop().await;
}
