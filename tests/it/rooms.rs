//! Rooms, private messages, actions, topics and history: who sees what, and nothing leaks.

use std::collections::BTreeSet;

use linechat::Config;

use crate::support::{Client, TestServer};

const NOTHING: Vec<String> = Vec::new();

fn config() -> Config {
    Config {
        rate_limit: None,
        ..Config::default()
    }
}

/// `[09:15:02] alice: hi` → `alice: hi`, checking the stamp's shape.
fn unstamp(line: &str) -> &str {
    let (stamp, rest) = line.split_once("] ").unwrap_or_else(|| panic!("{line}"));
    let stamp = stamp.strip_prefix('[').unwrap_or_else(|| panic!("{line}"));
    let shape = stamp
        .bytes()
        .map(|b| if b.is_ascii_digit() { b'9' } else { b });
    assert_eq!(shape.collect::<Vec<u8>>(), b"99:99:99", "{line}");
    rest
}

/// Reads a history block: the header (returned), then the lines without their stamps.
async fn read_history(c: &mut Client) -> (String, Vec<String>) {
    let header = c.line().await;
    assert!(header.starts_with("--- History of "), "{header}");
    let mut lines = Vec::new();
    loop {
        let line = c.line().await;
        if line == "--- End of history ---" {
            return (header, lines);
        }
        lines.push(unstamp(&line).to_owned());
    }
}

/// Joins `room`, reads the intro line and returns it.
async fn join_room(c: &mut Client, room: &str) -> String {
    c.send(&format!("/join {room}")).await;
    c.line().await
}

#[tokio::test]
async fn help_lists_the_room_commands() {
    let server = TestServer::start(config()).await;
    let mut c = server.join("alice").await;
    let lines = c.command("/help").await;
    for usage in [
        "/who [room]",
        "/join <room>",
        "/leave",
        "/rooms",
        "/msg <nick> <text>",
        "/me <action>",
        "/history [n]",
        "/topic [text]",
    ] {
        assert!(
            lines.iter().any(|l| l.trim_start().starts_with(usage)),
            "{usage} missing from {lines:#?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn join_and_leave_move_between_rooms_and_tell_both() {
    let server = TestServer::start(config()).await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob has joined the chat.").await;

    assert_eq!(
        join_room(&mut alice, "Dev").await,
        "You are now in Dev (just you so far)."
    );
    bob.expect("alice has left the room.").await;
    let mut carol = server.join("carol").await;
    bob.expect("carol has joined the chat.").await;
    // Case-insensitive, shown as first written; a leading # is accepted.
    assert_eq!(
        join_room(&mut carol, "#dev").await,
        "You are now in Dev (2 people here)."
    );
    alice.expect("carol has joined the room.").await;
    bob.expect("carol has left the room.").await;

    assert_eq!(
        alice.command("/join DEV").await,
        ["You are already in Dev."]
    );
    let bad = alice.command("/join 9lives").await;
    assert_eq!(
        bad,
        ["Error: a room name is 1-32 characters: ASCII letters, digits, '_', '-' or '.', starting with a letter."]
    );
    assert!(alice.command("/join a b").await[0].starts_with("Usage: /join <room>"));
    assert!(alice.command("/join").await[0].starts_with("Usage: /join <room>"));

    alice.send("/leave").await;
    alice.expect("You are now in lobby (2 people here).").await;
    carol.expect("alice has left the room.").await;
    bob.expect("alice has joined the room.").await;
    assert_eq!(
        alice.command("/leave").await,
        ["You are already in lobby; /quit leaves the chat."]
    );
    assert!(alice.command("/leave now").await[0].starts_with("Usage: /leave"));
    // Nothing else reached anyone.
    assert_eq!(bob.sync().await, NOTHING);
    assert_eq!(carol.sync().await, NOTHING);
    server.stop().await;
}

#[tokio::test]
async fn chat_actions_and_notices_stay_in_their_room() {
    let server = TestServer::start(config()).await;
    let mut lobby1 = server.join("lobby1").await;
    let mut dev1 = server.join("dev1").await;
    let mut dev2 = server.join("dev2").await;
    let mut ops1 = server.join("ops1").await;
    join_room(&mut dev1, "dev").await;
    join_room(&mut dev2, "dev").await;
    join_room(&mut ops1, "ops").await;
    for c in [&mut lobby1, &mut dev1, &mut dev2, &mut ops1] {
        c.sync().await;
    }

    dev1.send("dev only").await;
    lobby1.send("lobby only").await;
    ops1.send("ops only").await;
    dev1.send("/me  waves  twice").await;
    dev2.send("/nick dev2b").await;
    dev2.expect("Your nickname has been changed to dev2b").await;
    let dave = server.join("dave").await;
    let mut eve = server.join("eve").await;
    let (_, scrollback) = read_history(&mut eve).await;
    assert_eq!(scrollback, ["lobby1: lobby only"]);
    eve.send("/join dev").await;
    eve.expect("You are now in dev (3 people here).").await;
    drop(dave);

    assert_eq!(
        dev2.sync().await,
        [
            "dev1: dev only",
            "* dev1 waves  twice",
            "eve has joined the room."
        ]
    );
    assert_eq!(
        dev1.sync().await,
        ["dev2 changed nickname to dev2b", "eve has joined the room."]
    );
    assert_eq!(ops1.sync().await, NOTHING);
    assert_eq!(
        lobby1.sync().await,
        [
            "dave has joined the chat.",
            "eve has joined the chat.",
            "eve has left the room.",
            "dave has left the chat (connection closed).",
        ]
    );
    // A disconnect is told to the room the client was in, and only there.
    ops1.reset();
    assert_eq!(lobby1.sync().await, NOTHING);
    assert_eq!(dev1.sync().await, NOTHING);
    dev2.send("/quit").await;
    assert_eq!(dev2.expect_closed().await, ["Goodbye!"]);
    assert_eq!(dev1.sync().await, ["dev2b has left the chat."]);
    assert_eq!(lobby1.sync().await, NOTHING);
    server.stop().await;
}

#[tokio::test]
async fn rooms_lists_counts_marks_yours_and_forgets_empty_rooms_without_history() {
    let server = TestServer::start(config()).await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    let mut carol = server.join("carol").await;
    join_room(&mut bob, "quiet").await;
    join_room(&mut carol, "Talk").await;
    carol.send("one").await;
    carol.send("two").await;
    carol.sync().await;
    alice.sync().await;
    assert_eq!(
        alice.command("/rooms").await,
        [
            "Rooms (3):",
            "* lobby: 1 person, 0 messages (you are here)",
            "  quiet: 1 person, 0 messages",
            "  Talk: 1 person, 2 messages",
        ]
    );
    assert!(alice.command("/rooms all").await[0].starts_with("Usage: /rooms"));
    // Empty and without history: gone. Empty with history: kept, with 0 people.
    bob.send("/leave").await;
    carol.send("/leave").await;
    bob.sync().await;
    carol.sync().await;
    assert_eq!(
        bob.command("/rooms").await,
        [
            "Rooms (2):",
            "* lobby: 3 people, 0 messages (you are here)",
            "  Talk: 0 people, 2 messages",
        ]
    );
    assert_eq!(
        bob.command("/who quiet").await,
        ["Error: there is no room called quiet; /rooms lists them."]
    );
    assert_eq!(bob.command("/who talk").await, ["In Talk (0): nobody"]);
    // Re-created with another spelling, it shows the new one.
    assert_eq!(
        join_room(&mut bob, "QUIET").await,
        "You are now in QUIET (just you so far)."
    );
    server.stop().await;
}

#[tokio::test]
async fn who_lists_your_room_or_a_named_one() {
    let server = TestServer::start(config()).await;
    let mut bob = server.join("bob").await;
    let mut alice = server.join("alice").await;
    let mut carol = server.join("Carol").await;
    join_room(&mut carol, "dev").await;
    join_room(&mut alice, "dev").await;
    alice.sync().await;
    bob.sync().await;
    assert_eq!(alice.command("/who").await, ["In dev (2): alice, Carol"]);
    assert_eq!(alice.command("/who LOBBY").await, ["In lobby (1): bob"]);
    assert_eq!(bob.command("/who #dev").await, ["In dev (2): alice, Carol"]);
    assert_eq!(
        bob.command("/who nowhere").await,
        ["Error: there is no room called nowhere; /rooms lists them."]
    );
    assert!(bob.command("/who 1x").await[0].starts_with("Error: a room name is 1-32"));
    assert!(bob.command("/who a b").await[0].starts_with("Usage: /who [room]"));
    server.stop().await;
}

#[tokio::test]
async fn private_messages_reach_only_their_recipient_and_count_as_messages() {
    let server = TestServer::start(config()).await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("Bob").await;
    let mut carol = server.join("carol").await;
    let mut dave = server.join("dave").await;
    join_room(&mut bob, "elsewhere").await;
    join_room(&mut dave, "elsewhere").await;
    for c in [&mut alice, &mut bob, &mut carol, &mut dave] {
        c.sync().await;
    }

    // Across rooms, case-insensitive nick, inner spacing kept (arguments are trimmed).
    assert_eq!(
        alice.command("/msg bob  psst,  bob").await,
        ["[private to Bob] psst,  bob"]
    );
    bob.expect("[private] alice: psst,  bob").await;
    assert_eq!(
        bob.command("/msg alice hi back").await,
        ["[private to alice] hi back"]
    );
    alice.expect("[private] Bob: hi back").await;
    assert_eq!(
        alice.command("/msg zed hello").await,
        ["Error: nobody called zed is connected."]
    );
    assert_eq!(
        alice.command("/msg ALICE me").await,
        ["Error: that is you; a private message goes to someone else."]
    );
    assert!(alice.command("/msg bob").await[0].starts_with("Usage: /msg <nick> <text>"));
    assert!(alice.command("/msg").await[0].starts_with("Usage: /msg <nick> <text>"));
    // Third parties, in the sender's room and in the recipient's, saw nothing.
    assert_eq!(carol.sync().await, NOTHING);
    assert_eq!(dave.sync().await, NOTHING);
    assert_eq!(bob.sync().await, NOTHING);
    // Never kept in any room's history either.
    assert_eq!(
        carol.command("/history").await,
        ["No messages in lobby yet."]
    );

    let metrics = carol.command("/metrics").await;
    assert_eq!(metrics[1], "Total Messages: 2", "{metrics:#?}");
    let one = carol.command("/metrics alice").await;
    assert_eq!(one[1], "    Messages: 1", "{one:#?}");
    server.stop().await;
}

#[tokio::test]
async fn actions_go_to_the_room_and_count_as_messages() {
    let server = TestServer::start(config()).await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.sync().await;
    assert_eq!(alice.command("/me waves").await, NOTHING, "no echo");
    bob.expect("* alice waves").await;
    assert!(alice.command("/me").await[0].starts_with("Usage: /me <action>"));
    let one = bob.command("/metrics alice").await;
    assert_eq!(one[1], "    Messages: 1", "{one:#?}");
    let (_, lines) = {
        bob.send("/history").await;
        read_history(&mut bob).await
    };
    assert_eq!(lines, ["* alice waves"]);
    server.stop().await;
}

#[tokio::test]
async fn history_is_in_order_bounded_and_set_apart() {
    let server = TestServer::start(Config {
        history_retain: 5,
        history: 3,
        ..config()
    })
    .await;
    let mut alice = server.join("alice").await;
    assert_eq!(
        alice.command("/history").await,
        ["No messages in lobby yet."]
    );
    for i in 1..=7 {
        alice.send(&format!("line {i}")).await;
    }
    alice.send("/history 2").await;
    let (header, lines) = read_history(&mut alice).await;
    assert_eq!(
        header,
        "--- History of lobby: the last 2 messages, times in UTC ---"
    );
    assert_eq!(lines, ["alice: line 6", "alice: line 7"]);
    // More than is kept: everything kept, oldest dropped first.
    alice.send("/history 1000").await;
    let (header, lines) = read_history(&mut alice).await;
    assert_eq!(
        header,
        "--- History of lobby: the last 5 messages, times in UTC ---"
    );
    assert_eq!(
        lines,
        [
            "alice: line 3",
            "alice: line 4",
            "alice: line 5",
            "alice: line 6",
            "alice: line 7"
        ]
    );
    alice.send("/history 1").await;
    let (header, lines) = read_history(&mut alice).await;
    assert_eq!(
        header,
        "--- History of lobby: the last message, times in UTC ---"
    );
    assert_eq!(lines, ["alice: line 7"]);
    for bad in ["/history 0", "/history -1", "/history many", "/history 1 2"] {
        let reply = alice.command(bad).await;
        assert!(
            reply[0].starts_with("Usage: /history [n]"),
            "{bad}: {reply:?}"
        );
    }

    // Scrollback at connect: after the welcome, --history of them, before live traffic.
    let mut bob = server.join("bob").await;
    let (header, lines) = read_history(&mut bob).await;
    assert_eq!(
        header,
        "--- History of lobby: the last 3 messages, times in UTC ---"
    );
    assert_eq!(lines, ["alice: line 5", "alice: line 6", "alice: line 7"]);
    alice.expect("bob has joined the chat.").await;
    alice.send("live").await;
    bob.expect("alice: live").await;

    // Scrollback on /join; an empty room has none to show.
    assert_eq!(
        join_room(&mut alice, "dev").await,
        "You are now in dev (just you so far)."
    );
    alice.send("in dev").await;
    assert_eq!(alice.sync().await, NOTHING);
    bob.expect("alice has left the room.").await;
    assert_eq!(
        join_room(&mut bob, "dev").await,
        "You are now in dev (2 people here)."
    );
    let (_, lines) = read_history(&mut bob).await;
    assert_eq!(lines, ["alice: in dev"]);
    assert_eq!(bob.sync().await, NOTHING);
    server.stop().await;
}

#[tokio::test]
async fn coming_back_to_a_room_shows_only_what_is_new() {
    let server = TestServer::start(Config {
        history: 3,
        ..config()
    })
    .await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob has joined the chat.").await;
    for i in 1..=4 {
        alice.send(&format!("old {i}")).await;
        bob.expect(&format!("alice: old {i}")).await;
    }
    assert_eq!(
        join_room(&mut bob, "dev").await,
        "You are now in dev (just you so far)."
    );
    // Nothing said in the lobby while away: no replay, and a word on why.
    assert_eq!(
        bob.command("/leave").await,
        [
            "You are now in lobby (2 people here).",
            "Nothing new in lobby since you were last here (/history shows its last messages)."
        ]
    );
    join_room(&mut bob, "dev").await;
    alice.sync().await;
    alice.send("while away").await;
    alice.sync().await;
    bob.send("/leave").await;
    assert_eq!(bob.line().await, "You are now in lobby (2 people here).");
    let (header, lines) = read_history(&mut bob).await;
    assert_eq!(
        header,
        "--- History of lobby: 1 new message since you were last here, times in UTC ---"
    );
    assert_eq!(lines, ["alice: while away"]);
    // More new than --history: the newest, and the header says how many there were.
    join_room(&mut bob, "dev").await;
    for i in 1..=5 {
        alice.send(&format!("new {i}")).await;
    }
    alice.sync().await;
    bob.send("/leave").await;
    bob.line().await;
    let (header, lines) = read_history(&mut bob).await;
    assert_eq!(
        header,
        "--- History of lobby: the last 3 of 5 new messages since you were last here \
         (/history shows more), times in UTC ---"
    );
    assert_eq!(lines, ["alice: new 3", "alice: new 4", "alice: new 5"]);
    assert_eq!(bob.sync().await, NOTHING);
    // A first visit still shows the room's last messages, whatever came before.
    let mut carol = server.join("carol").await;
    let (header, _) = read_history(&mut carol).await;
    assert_eq!(
        header,
        "--- History of lobby: the last 3 messages, times in UTC ---"
    );
    server.stop().await;
}

#[tokio::test]
async fn scrollback_and_retention_can_be_turned_off() {
    let server = TestServer::start(Config {
        history: 0,
        ..config()
    })
    .await;
    let mut alice = server.join("alice").await;
    alice.send("before").await;
    let mut bob = server.join("bob").await;
    assert_eq!(bob.sync().await, NOTHING, "no scrollback with --history 0");
    bob.send("/history").await;
    let (_, lines) = read_history(&mut bob).await;
    assert_eq!(lines, ["alice: before"], "/history still works");
    server.stop().await;

    let server = TestServer::start(Config {
        history_retain: 0,
        ..config()
    })
    .await;
    let mut alice = server.join("alice").await;
    alice.send("before").await;
    let mut bob = server.join("bob").await;
    assert_eq!(bob.sync().await, NOTHING);
    assert_eq!(
        bob.command("/history").await,
        ["No history is kept on this server (--history-retain 0)."]
    );
    // With nothing kept, an emptied room is forgotten even after messages.
    join_room(&mut alice, "dev").await;
    alice.send("gone").await;
    alice.send("/leave").await;
    alice.sync().await;
    bob.sync().await;
    assert_eq!(
        bob.command("/rooms").await,
        ["Rooms (1):", "* lobby: 2 people, 1 message (you are here)"]
    );
    server.stop().await;
}

#[tokio::test]
async fn history_never_overflows_the_readers_queue() {
    // 200 lines of 1000 bytes would be 200 kB; the queue is 64 KiB, so history is cut to half
    // of it rather than disconnecting the reader as a slow consumer.
    let server = TestServer::start(Config {
        queue_bytes: 64 * 1024,
        ..config()
    })
    .await;
    let mut alice = server.join("alice").await;
    let long = "x".repeat(1000);
    for _ in 0..200 {
        alice.send(&long).await;
    }
    alice.sync().await;
    alice.send("/history 200").await;
    let (header, lines) = read_history(&mut alice).await;
    let shown = lines.len();
    assert!((20..40).contains(&shown), "{shown} lines shown");
    assert_eq!(
        header,
        format!(
            "--- History of lobby: the last {shown} of 200 messages (the rest would overflow \
             your queue), times in UTC ---"
        )
    );
    assert_eq!(alice.command("/echo still here").await, ["still here"]);
    server.stop().await;
}

#[tokio::test]
async fn topics_are_shown_set_for_the_room_and_shown_on_entry() {
    let server = TestServer::start(config()).await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    join_room(&mut alice, "dev").await;
    join_room(&mut bob, "ops").await;
    alice.sync().await;
    bob.sync().await;
    assert_eq!(
        alice.command("/topic").await,
        ["No topic is set in dev; /topic <text> sets one."]
    );
    assert_eq!(
        alice.command("/topic release  on Friday").await,
        ["alice set the topic of dev: release  on Friday"]
    );
    assert_eq!(
        alice.command("/topic").await,
        ["Topic of dev: release  on Friday (set by alice)"]
    );
    assert_eq!(bob.sync().await, NOTHING);
    bob.send("/join dev").await;
    bob.expect("You are now in dev (2 people here).").await;
    bob.expect("Topic of dev: release  on Friday (set by alice)")
        .await;
    alice.expect("bob has joined the room.").await;
    // alice opened dev, so she is its operator: while she is there, only she sets its topic
    // (IRC's +t, on in a new room, and the same rule for everyone).
    assert_eq!(
        bob.command("/topic ship it").await,
        ["Error: the topic of dev is locked; only its operators may change it."]
    );
    alice.send("/leave").await;
    bob.expect("alice has left the room.").await;
    bob.send("/topic ship it").await;
    bob.expect("bob set the topic of dev: ship it").await;

    // The lobby's topic is shown at connect, after the welcome.
    bob.send("/leave").await;
    bob.send("/topic welcome all").await;
    bob.skip_until("bob set the topic of lobby: welcome all")
        .await;
    let mut carol = server.join("carol").await;
    carol
        .expect("Topic of lobby: welcome all (set by bob)")
        .await;
    assert_eq!(carol.sync().await, NOTHING);
    server.stop().await;
}

#[tokio::test]
async fn metrics_show_rooms_within_their_display_limit() {
    let server = TestServer::start(config()).await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    bob.send("hi").await;
    let mut movers = Vec::new();
    for i in 0..12 {
        let mut c = server.join(&format!("m{i}")).await;
        join_room(&mut c, &format!("room{i:02}")).await;
        movers.push(c);
    }
    alice.sync().await;
    let lines = alice.command("/metrics").await;
    let at = lines
        .iter()
        .position(|l| l == "Rooms: 13")
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!(lines[at + 1], " - lobby: 2 members, 1 message");
    assert_eq!(lines[at + 2], " - room00: 1 member, 0 messages");
    assert_eq!(lines[at + 10], " - room08: 1 member, 0 messages");
    assert_eq!(lines[at + 11], " ... and 3 more rooms (/rooms lists more)");
    assert!(lines[at + 12].starts_with("History: "), "{lines:#?}");
    assert_eq!(lines[at + 13], "TLS: off", "{lines:#?}");
    assert_eq!(lines.len(), at + 14, "{lines:#?}");
    server.stop().await;
}

#[tokio::test]
async fn emptied_rooms_with_history_are_kept_up_to_a_bound() {
    let server = TestServer::start(Config {
        rooms_per_minute: 0,
        ..config()
    })
    .await;
    let mut alice = server.join("alice").await;
    let rooms = linechat::core::room::MAX_IDLE_ROOMS + 1;
    for i in 0..rooms {
        alice.send(&format!("/join r{i}")).await;
        alice.send("hello").await;
    }
    alice.send("/leave").await;
    alice.sync().await;
    let listing = alice.command("/rooms").await;
    assert_eq!(
        listing[0],
        format!("Rooms ({}):", linechat::core::room::MAX_IDLE_ROOMS + 1)
    );
    // The room empty longest went first.
    assert!(alice.command("/who r0").await[0].starts_with("Error: there is no room"));
    assert_eq!(alice.command("/who r1").await, ["In r1 (0): nobody"]);
    // The listing is bounded too.
    assert_eq!(
        listing.len(),
        1 + linechat::proto::line::cmd::MAX_ROOMS_LISTED + 1
    );
    assert_eq!(
        listing.last().unwrap(),
        &format!(
            "  ... and {} more rooms (/who <room> shows one)",
            linechat::core::room::MAX_IDLE_ROOMS + 1 - linechat::proto::line::cmd::MAX_ROOMS_LISTED
        )
    );
    server.stop().await;
}

/// 50 clients move between 5 rooms and rename themselves, all at once; afterwards every room's
/// membership is exactly what each client did last, with nobody lost or listed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_moves_and_renames_keep_membership_exact() {
    const CLIENTS: usize = 50;
    const ROOMS: usize = 5;
    const MOVES: usize = 12;
    let server = TestServer::start(config()).await;
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Client::join(addr, &format!("c{i}")).await;
            for k in 0..MOVES {
                c.send(&format!("/join room{}", (i + k) % ROOMS)).await;
                if k == MOVES / 2 {
                    c.send(&format!("/nick n{i}")).await;
                }
                c.send(&format!("move {k}")).await;
            }
            // Everyone ends in room(i % ROOMS), or the lobby for every fifth client.
            if i % 5 == 0 {
                c.send("/leave").await;
            } else {
                c.send(&format!("/join room{}", i % ROOMS)).await;
            }
            c.sync().await;
            c
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    let mut expected: Vec<BTreeSet<String>> = vec![BTreeSet::new(); ROOMS + 1];
    for i in 0..CLIENTS {
        let slot = if i % 5 == 0 { ROOMS } else { i % ROOMS };
        expected[slot].insert(format!("n{i}"));
    }
    let observer = &mut clients[0];
    // Every move was queued before its mover's sync returned, so this drains all notices.
    observer.sync().await;
    let mut total = 0;
    for (slot, want) in expected.iter().enumerate() {
        let room = if slot == ROOMS {
            "lobby".to_owned()
        } else {
            format!("room{slot}")
        };
        let reply = observer.command(&format!("/who {room}")).await;
        let prefix = format!("In {room} ({}): ", want.len());
        let names = if want.is_empty() {
            // Empty, but with history: kept and listed as nobody.
            assert_eq!(reply, [format!("In {room} (0): nobody")]);
            Vec::new()
        } else {
            let listed = reply[0]
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{reply:?}"));
            listed.split(", ").map(str::to_owned).collect::<Vec<_>>()
        };
        let unique: BTreeSet<String> = names.iter().cloned().collect();
        assert_eq!(unique.len(), names.len(), "duplicates in {room}: {names:?}");
        assert_eq!(&unique, want, "{room}");
        total += names.len();
    }
    assert_eq!(total, CLIENTS);
    let rooms = observer.command("/rooms").await;
    assert_eq!(rooms[0], format!("Rooms ({}):", ROOMS + 1), "{rooms:#?}");
    for line in &rooms[1..] {
        let name = line[2..].split(':').next().unwrap();
        let slot = if name == "lobby" {
            ROOMS
        } else {
            name[4..].parse().unwrap()
        };
        let n = expected[slot].len();
        let people = if n == 1 {
            "1 person".to_owned()
        } else {
            format!("{n} people")
        };
        assert!(line.contains(&format!(": {people}, ")), "{line}");
    }
    let messages: u64 = rooms[1..]
        .iter()
        .map(|l| {
            let (_, rest) = l.split_once(", ").unwrap();
            rest.split(' ').next().unwrap().parse::<u64>().unwrap()
        })
        .sum();
    assert_eq!(messages, (CLIENTS * MOVES) as u64);
    server.stop().await;
}

/// Actions and private messages are messages: they count in Total Messages, the sender's
/// Messages and Deliveries (which once missed both, while chat lines counted).
#[tokio::test]
async fn actions_and_private_messages_count_their_deliveries() {
    let server = TestServer::start(config()).await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob has joined the chat.").await;
    let mut carol = server.join("carol").await;
    alice.expect("carol has joined the chat.").await;
    bob.expect("carol has joined the chat.").await;

    alice.send("/me waves").await;
    bob.expect("* alice waves").await;
    carol.expect("* alice waves").await;
    alice.send("/msg bob psst").await;
    alice.expect("[private to bob] psst").await;
    bob.expect("[private] alice: psst").await;

    let report = alice.command("/metrics").await.join("\n");
    assert!(report.contains("Total Messages: 2\n"), "{report}");
    assert!(report.contains("Deliveries: 3 "), "{report}");
    let block = alice.command("/metrics alice").await;
    assert_eq!(block[1], "    Messages: 2", "{block:?}");
    server.stop().await;
}
