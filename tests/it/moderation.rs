//! Room operators from netcat: `/op` and `/deop`, the same right IRC's `MODE +o/-o` uses, seen
//! by both protocols; refused, with one line, for anyone who is not an operator.

use linechat::Config;

use crate::support::{irc_command, Client, IrcClient, TestServer};

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

/// A server with netcat alice (operator of dev) and bob in dev, and IRC carol in #dev.
async fn dev_room() -> (TestServer, Client, Client, IrcClient) {
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
    (server, alice, bob, carol)
}

#[tokio::test]
async fn kick_puts_people_out_on_both_protocols_and_netcat_users_land_in_the_lobby() {
    let (server, mut alice, mut bob, mut carol) = dev_room().await;
    // Refusals are one line each, and nobody is put out or told anything.
    assert_eq!(
        bob.command("/kick alice").await,
        ["Error: only operators of dev may put people out of it."]
    );
    carol.send("KICK #dev alice :bye").await;
    carol
        .expect(":irc.test 482 carol #dev :You're not channel operator")
        .await;
    assert_eq!(
        alice.command("/kick dave").await,
        ["Error: nobody called dave is connected."]
    );
    assert_eq!(
        alice.command("/kick").await,
        ["Usage: /kick <nick> [reason] - put someone out of your room; netcat users land in the lobby (operators only)"]
    );
    assert!(alice.sync().await.is_empty() && bob.sync().await.is_empty());
    assert!(carol.sync().await.is_empty());

    // A netcat operator kicks a netcat user, with a reason: everyone sees it, the kicked one
    // included, who then lands in the lobby.
    assert_eq!(
        alice.command("/kick bob too loud").await,
        ["alice kicked bob out of dev (too loud)."]
    );
    carol
        .expect(":alice!alice@127.0.0.1 KICK #dev bob :too loud")
        .await;
    bob.expect("alice kicked bob out of dev (too loud).").await;
    bob.expect("You are now in lobby (just you so far).").await;
    assert_eq!(
        bob.command("/who dev").await,
        ["In dev (2): alice, carol (irc)"]
    );
    // A kicked user may come back (a kick is not a ban).
    assert_eq!(
        bob.command("/join dev").await[0],
        "You are now in dev (3 people here)."
    );
    alice.skip_until("bob has joined the room.").await;
    carol.expect(":bob!bob@127.0.0.1 JOIN #dev").await;

    // An IRC operator kicks over IRC: netcat users see it in words, and the reason defaults
    // to the kicker's nick on IRC.
    alice.command("/op carol").await;
    bob.skip_until("alice made carol an operator of dev.").await;
    carol
        .expect(":alice!alice@127.0.0.1 MODE #dev +o carol")
        .await;
    carol.send("KICK #dev dave").await;
    carol
        .expect(":irc.test 401 carol dave :No such nick/channel")
        .await;
    carol.send("KICK #dev bob").await;
    carol
        .expect(":carol!~carol@127.0.0.1 KICK #dev bob :carol")
        .await;
    alice.expect("carol kicked bob out of dev.").await;
    bob.expect("carol kicked bob out of dev.").await;
    bob.expect("You are now in lobby (just you so far).").await;
    carol.send("KICK #dev bob").await;
    carol
        .expect(":irc.test 441 carol bob #dev :They aren't on that channel")
        .await;
    // A netcat operator kicks an IRC user, who is then in no channel.
    alice.command("/kick carol enough").await;
    carol
        .expect(":alice!alice@127.0.0.1 KICK #dev carol :enough")
        .await;
    assert_eq!(alice.command("/who").await, ["In dev (1): alice"]);
    drop((alice, bob, carol));
    server.stop().await;
}

#[tokio::test]
async fn bans_keep_nicknames_and_masks_out_and_are_listed_on_irc() {
    let (server, mut alice, mut bob, mut carol) = dev_room().await;
    assert_eq!(
        bob.command("/ban alice").await,
        ["Error: only operators of dev may ban or unban people."]
    );
    assert_eq!(alice.command("/ban").await, ["Nobody is banned in dev."]);
    assert_eq!(
        alice.command("/ban a,b").await,
        ["Error: a,b is neither a nickname nor a nick!user@host mask (* and ? match anything)."]
    );
    // A netcat /ban bans the nickname and puts its holder out.
    assert_eq!(
        alice.command("/ban bob").await,
        [
            "alice banned bob!*@* from dev.",
            "alice kicked bob out of dev (banned)."
        ]
    );
    carol
        .expect(":alice!alice@127.0.0.1 MODE #dev +b bob!*@*")
        .await;
    carol
        .expect(":alice!alice@127.0.0.1 KICK #dev bob :banned")
        .await;
    bob.skip_until("You are now in lobby (just you so far).")
        .await;
    assert_eq!(
        bob.command("/join dev").await,
        ["Error: you are banned from dev."]
    );
    assert_eq!(
        alice.command("/ban BOB").await,
        ["Nothing changed: BOB!*@* is already banned here."]
    );
    assert_eq!(
        alice.command("/ban").await,
        ["Bans in dev (1): bob!*@* (by alice)"]
    );
    // IRC sees the list, and an IRC user the ban names cannot join.
    carol.send("MODE #dev +b").await;
    let entry = carol.expect_command("367").await;
    assert!(
        entry.starts_with(":irc.test 367 carol #dev bob!*@* alice "),
        "{entry}"
    );
    carol
        .expect(":irc.test 368 carol #dev :End of channel ban list")
        .await;
    let mut dave = server.irc_join("dave", &[]).await;
    alice.command("/ban dave!*@*").await;
    carol
        .expect(":alice!alice@127.0.0.1 MODE #dev +b dave!*@*")
        .await;
    dave.send("JOIN #dev").await;
    dave.expect(":irc.test 474 dave #dev :Cannot join channel (+b) - you are banned")
        .await;
    // IRC operators set and lift bans with MODE; netcat users read it in words.
    alice.command("/op carol").await;
    carol
        .expect(":alice!alice@127.0.0.1 MODE #dev +o carol")
        .await;
    carol.send("MODE #dev -b bob").await;
    carol
        .expect(":carol!~carol@127.0.0.1 MODE #dev -b bob!*@*")
        .await;
    alice
        .expect("carol lifted the ban on bob!*@* in dev.")
        .await;
    assert_eq!(
        alice.command("/unban bob").await,
        ["Nothing changed: bob!*@* is not banned here."]
    );
    assert_eq!(
        bob.command("/join dev").await[0],
        "You are now in dev (3 people here)."
    );
    assert!(dave.sync().await.is_empty());
    drop((alice, bob, carol, dave));
    server.stop().await;
}

#[tokio::test]
async fn mutes_and_moderation_stop_speech_without_relaying_it() {
    let (server, mut alice, mut bob, mut carol) = dev_room().await;
    assert_eq!(
        bob.command("/mute alice").await,
        ["Error: only operators of dev may mute or unmute people."]
    );
    assert_eq!(
        alice.command("/mute bob").await,
        ["alice muted bob!*@* in dev."]
    );
    bob.expect("alice muted bob!*@* in dev.").await;
    carol
        .expect(":alice!alice@127.0.0.1 MODE #dev +q bob!*@*")
        .await;
    assert_eq!(
        bob.command("hello?").await,
        ["Error: you are muted in dev; your message was not sent."]
    );
    assert_eq!(
        bob.command("/me waves").await,
        ["Error: you are muted in dev; your message was not sent."]
    );
    assert_eq!(
        alice.command("/mute").await,
        ["Mutes in dev (1): bob!*@* (by alice)"]
    );
    carol.send("MODE #dev q").await;
    let entry = carol.expect_command("728").await;
    assert!(
        entry.starts_with(":irc.test 728 carol #dev q bob!*@* alice "),
        "{entry}"
    );
    carol
        .expect(":irc.test 729 carol #dev q :End of channel quiet list")
        .await;
    assert_eq!(
        alice.command("/unmute bob").await,
        ["alice unmuted bob!*@* in dev."]
    );
    bob.expect("alice unmuted bob!*@* in dev.").await;
    carol
        .expect(":alice!alice@127.0.0.1 MODE #dev -q bob!*@*")
        .await;

    // Moderated: only operators and voices speak, on both protocols.
    assert_eq!(
        bob.command("/mode +m").await,
        ["Error: only operators of dev may change its modes."]
    );
    assert_eq!(
        alice.command("/mode +m").await,
        ["alice moderated dev: only its operators and those with a voice may speak."]
    );
    bob.skip_until("alice moderated dev: only its operators and those with a voice may speak.")
        .await;
    carol.expect(":alice!alice@127.0.0.1 MODE #dev +m").await;
    assert_eq!(
        bob.command("hi").await,
        ["Error: dev is moderated: only its operators and those with a voice may speak; your message was not sent."]
    );
    carol.send("PRIVMSG #dev :me too").await;
    carol
        .expect(":irc.test 404 carol #dev :Cannot send to channel (+m) - only operators and voices speak")
        .await;
    carol.send("MODE #dev").await;
    carol.expect(":irc.test 324 carol #dev +ntm").await;
    carol.expect_command("329").await;
    alice.send("still here").await;
    bob.expect("alice: still here").await;
    carol
        .expect(":alice!alice@127.0.0.1 PRIVMSG #dev :still here")
        .await;
    // A voice lifts the moderation, not a mute.
    alice.command("/op carol").await;
    carol
        .expect(":alice!alice@127.0.0.1 MODE #dev +o carol")
        .await;
    carol.send("MODE #dev +v bob").await;
    carol
        .expect(":carol!~carol@127.0.0.1 MODE #dev +v bob")
        .await;
    bob.skip_until("carol gave bob a voice in dev.").await;
    bob.send("finally").await;
    alice.skip_until("bob: finally").await;
    carol
        .expect(":bob!bob@127.0.0.1 PRIVMSG #dev :finally")
        .await;
    carol.send("MODE #dev +q bob").await;
    carol
        .expect(":carol!~carol@127.0.0.1 MODE #dev +q bob!*@*")
        .await;
    bob.skip_until("carol muted bob!*@* in dev.").await;
    assert_eq!(
        bob.command("again").await,
        ["Error: you are muted in dev; your message was not sent."]
    );
    // Nothing refused reached anyone.
    assert_eq!(alice.sync().await, ["carol muted bob!*@* in dev."]);
    assert!(carol.sync().await.is_empty());
    drop((alice, bob, carol));
    server.stop().await;
}

#[tokio::test]
async fn invite_only_rooms_admit_the_invited_once() {
    let (server, mut alice, mut bob, mut carol) = dev_room().await;
    assert_eq!(
        alice.command("/mode +i").await,
        ["alice made dev invite-only: only those an operator invites may come in."]
    );
    bob.skip_until("alice made dev invite-only: only those an operator invites may come in.")
        .await;
    carol.expect(":alice!alice@127.0.0.1 MODE #dev +i").await;
    assert_eq!(
        alice.command("/mode").await,
        ["Modes of dev: invite-only (+i), topic locked (+t)."]
    );
    let mut erin = server.join("erin").await;
    assert_eq!(
        erin.command("/join dev").await,
        ["Error: dev is invite-only; one of its operators can /invite you."]
    );
    let mut dave = server.irc_join("dave", &[]).await;
    dave.send("JOIN #dev").await;
    dave.expect(":irc.test 473 dave #dev :Cannot join channel (+i) - you must be invited")
        .await;
    // Only operators invite into an invite-only room.
    assert_eq!(
        bob.command("/invite erin").await,
        ["Error: only operators of dev may invite people into it while it is invite-only."]
    );
    carol.send("INVITE dave #dev").await;
    carol
        .expect(":irc.test 482 carol #dev :You're not channel operator")
        .await;
    assert_eq!(
        alice.command("/invite bob").await,
        ["Error: bob is already in dev."]
    );
    assert_eq!(
        alice.command("/invite erin").await,
        ["You invited erin to dev; they may come in once, invite-only or not."]
    );
    erin.expect("alice invites you to dev: /join dev enters it.")
        .await;
    assert_eq!(
        erin.command("/join dev").await[0],
        "You are now in dev (4 people here)."
    );
    erin.command("/leave").await;
    assert_eq!(
        erin.command("/join dev").await,
        ["Error: dev is invite-only; one of its operators can /invite you."],
        "an invitation is used up by coming in"
    );
    // Over IRC: 341 to the inviter, INVITE to the invited, across protocols.
    alice.command("/invite dave").await;
    dave.expect(":alice!alice@127.0.0.1 INVITE dave #dev").await;
    dave.send("JOIN #dev").await;
    dave.expect(":dave!~dave@127.0.0.1 JOIN #dev").await;
    alice.command("/op carol").await;
    carol.expect_command("MODE").await;
    carol.send("INVITE erin #dev").await;
    carol.expect(":irc.test 341 carol erin #dev").await;
    erin.expect("carol invites you to dev: /join dev enters it.")
        .await;
    carol.send("INVITE bob #dev").await;
    carol
        .expect(":irc.test 443 carol bob #dev :is already on channel")
        .await;
    carol.send("INVITE zed #dev").await;
    carol
        .expect(":irc.test 401 carol zed :No such nick/channel")
        .await;
    // Opened again, anyone comes in.
    assert_eq!(
        alice.command("/mode -i").await,
        ["alice opened dev: anyone may come in."]
    );
    drop((alice, bob, carol, dave, erin));
    server.stop().await;
}

#[tokio::test]
async fn the_topic_lock_is_set_from_netcat_too() {
    let (server, mut alice, mut bob, mut carol) = dev_room().await;
    assert_eq!(
        bob.command("/topic mine").await,
        ["Error: the topic of dev is locked; only its operators may change it."]
    );
    assert_eq!(
        alice.command("/mode -t").await,
        ["alice unlocked the topic of dev: anyone in it may change it."]
    );
    carol.expect(":alice!alice@127.0.0.1 MODE #dev -t").await;
    assert_eq!(
        alice.command("/mode -t").await,
        ["Nothing changed: the room already has those modes."]
    );
    bob.skip_until("alice unlocked the topic of dev: anyone in it may change it.")
        .await;
    assert_eq!(
        bob.command("/topic mine").await,
        ["bob set the topic of dev: mine"]
    );
    alice.skip_until("bob set the topic of dev: mine").await;
    assert_eq!(
        alice.command("/mode +t").await,
        ["alice locked the topic of dev: only its operators may change it."]
    );
    drop((alice, bob, carol));
    server.stop().await;
}

const PW: &str = "correct-horse";

/// Netcat and IRC on the store in `dir`, opened as the binary opens it.
async fn on_store(dir: &std::path::Path) -> TestServer {
    use linechat::server::Extras;
    use linechat::store::{self, Log};
    let config = Config {
        server_name: "irc.test".into(),
        data_dir: Some(dir.to_owned()),
        rate_limit: None,
        ..Config::default()
    };
    let (log, kept) = Log::open(dir, store::Options::from_config(&config)).expect("open");
    let extras = Extras {
        store: Some((log, kept)),
        ..Extras::default()
    };
    TestServer::with_irc_extras(config, extras).await
}

/// alice, proved with her password at the prompt.
async fn registered_alice(server: &TestServer) -> Client {
    let mut alice = Client::connect(server.addr).await;
    alice.expect_prompt().await;
    alice.send(&format!("alice {PW}")).await;
    alice
        .skip_until("Type /help for the list of commands.")
        .await;
    alice.nick = "alice".into();
    alice.sync().await;
    alice
}

#[tokio::test]
async fn bans_mutes_modes_and_registered_operators_survive_a_restart() {
    let tmp = crate::support::TempPath::new("moderation-restart");
    let dir = tmp.with_name("data");
    let server = on_store(&dir).await;
    let mut alice = server.join("alice").await;
    alice.command(&format!("/register {PW}")).await;
    alice.command("/join dev").await;
    for change in ["/ban bob", "/mute carol", "/mode +im-t"] {
        alice.command(change).await;
    }
    // An operator whose nickname nobody registered is one only while there.
    let mut frank = server.join("frank").await;
    alice.command("/invite frank").await;
    frank.command("/join dev").await;
    alice.command("/op frank").await;
    drop((alice, frank));
    server.stop().await;

    let server = on_store(&dir).await;
    // The room waits for its registered operator: nobody else walks into it, or takes it.
    let mut bob = server.join("bob").await;
    assert_eq!(
        bob.command("/join dev").await,
        ["Error: you are banned from dev."]
    );
    let mut frank = server.join("frank").await;
    assert_eq!(
        frank.command("/join dev").await,
        ["Error: dev is invite-only; one of its operators can /invite you."]
    );
    let mut alice = registered_alice(&server).await;
    assert_eq!(
        alice.command("/join dev").await[0],
        "You are now in dev (just you so far)."
    );
    assert_eq!(
        alice.command("/mode").await,
        ["Modes of dev: invite-only (+i), moderated (+m)."]
    );
    let bans = alice.command("/ban").await;
    assert_eq!(bans, ["Bans in dev (1): bob!*@* (by alice)"]);
    assert_eq!(
        alice.command("/mute").await,
        ["Mutes in dev (1): carol!*@* (by alice)"]
    );
    // She is its operator again; the unregistered frank is not.
    alice.command("/invite frank").await;
    frank
        .skip_until("alice invites you to dev: /join dev enters it.")
        .await;
    frank.command("/join dev").await;
    assert_eq!(
        frank.command("/kick alice").await,
        ["Error: only operators of dev may put people out of it."]
    );
    // IRC sees the same lists and modes.
    let mut carol = server.irc_join("carol", &[]).await;
    alice.command("/invite carol").await;
    carol
        .expect(":alice!alice@127.0.0.1 INVITE carol #dev")
        .await;
    carol.send("JOIN #dev").await;
    let names = carol.expect_command("353").await;
    let mut listed: Vec<&str> = names.rsplit(':').next().unwrap().split(' ').collect();
    listed.sort_unstable();
    assert_eq!(listed, ["@alice", "carol", "frank"], "{names}");
    carol.expect_command("366").await;
    carol.send("MODE #dev").await;
    carol.expect(":irc.test 324 carol #dev +nmi").await;
    carol.expect_command("329").await;
    carol.send("PRIVMSG #dev :hello").await;
    carol
        .expect(":irc.test 404 carol #dev :Cannot send to channel (+q) - you are muted")
        .await;
    // Lifting a ban is kept too.
    alice.command("/unban bob").await;
    drop((alice, bob, carol, frank));
    server.stop().await;
    let server = on_store(&dir).await;
    let mut alice = registered_alice(&server).await;
    alice.command("/join dev").await;
    assert_eq!(alice.command("/ban").await, ["Nobody is banned in dev."]);
    drop(alice);
    server.stop().await;
}

#[tokio::test]
async fn ignore_stops_lines_and_private_messages_silently_on_both_protocols() {
    let (server, mut alice, mut bob, mut carol) = dev_room().await;
    assert_eq!(
        alice.command("/ignore").await,
        ["You are ignoring nobody; /ignore <nick> stops someone's messages reaching you."]
    );
    assert_eq!(
        alice.command("/ignore BOB").await,
        ["You are ignoring bob: their messages and private messages no longer reach you (/unignore bob undoes it)."]
    );
    assert_eq!(
        alice.command("/ignore bob").await,
        ["Nothing changed: you are already ignoring bob."]
    );
    assert_eq!(
        alice.command("/ignore alice").await,
        ["Error: that is you; you cannot ignore yourself."]
    );
    assert_eq!(
        alice.command("/ignore").await,
        ["You are ignoring (1): bob"]
    );
    // bob's line, action and private message reach everyone but alice; bob is not told.
    bob.send("hello").await;
    carol.expect(":bob!bob@127.0.0.1 PRIVMSG #dev :hello").await;
    bob.send("/me waves").await;
    carol
        .expect(":bob!bob@127.0.0.1 PRIVMSG #dev :\u{1}ACTION waves\u{1}")
        .await;
    assert_eq!(
        bob.command("/msg alice psst").await,
        ["[private to alice] psst"]
    );
    // A rename does not escape it (the connection is ignored too), and is itself shown.
    bob.command("/nick bobby").await;
    alice.expect("bob changed nickname to bobby").await;
    bob.send("still me").await;
    carol.expect(":bob!bob@127.0.0.1 NICK bobby").await;
    carol
        .expect(":bobby!bob@127.0.0.1 PRIVMSG #dev :still me")
        .await;
    assert!(alice.sync().await.is_empty());

    // IRC: SILENCE does the same for IRC users.
    carol.send("SILENCE +alice").await;
    carol.expect(":carol SILENCE +alice!*@*").await;
    carol.send("SILENCE").await;
    carol.expect(":irc.test 271 carol carol alice!*@*").await;
    carol
        .expect(":irc.test 272 carol :End of Silence List")
        .await;
    alice.send("can you hear me").await;
    bob.expect("alice: can you hear me").await;
    alice.command("/msg carol hello?").await;
    assert!(carol.sync().await.is_empty());
    carol.send("SILENCE -alice!*@*").await;
    carol.expect(":carol SILENCE -alice!*@*").await;
    alice.send("now?").await;
    carol
        .expect(":alice!alice@127.0.0.1 PRIVMSG #dev :now?")
        .await;

    assert_eq!(
        alice.command("/unignore bob").await,
        ["You no longer ignore bob."]
    );
    assert_eq!(
        alice.command("/unignore bob").await,
        ["Nothing changed: you were not ignoring bob."]
    );
    bob.send("back").await;
    alice.expect("bobby: back").await;
    drop((alice, bob, carol));
    server.stop().await;
}

#[tokio::test]
async fn a_registered_users_ignores_are_kept_across_reconnects_and_restarts() {
    let tmp = crate::support::TempPath::new("ignore-kept");
    let dir = tmp.with_name("data");
    let server = on_store(&dir).await;
    let mut alice = server.join("alice").await;
    alice.command(&format!("/register {PW}")).await;
    alice.command("/ignore bob").await;
    let mut frank = server.join("frank").await;
    frank.command("/ignore bob").await;
    drop((alice, frank));
    server.stop().await;

    let server = on_store(&dir).await;
    let mut bob = server.join("bob").await;
    let mut alice = registered_alice(&server).await;
    let mut frank = server.join("frank").await;
    alice.skip_until("frank has joined the chat.").await;
    assert_eq!(
        alice.command("/ignore").await,
        ["You are ignoring (1): bob"]
    );
    // An unregistered user's list lasted as long as the connection.
    assert_eq!(
        frank.command("/ignore").await,
        ["You are ignoring nobody; /ignore <nick> stops someone's messages reaching you."]
    );
    bob.send("/msg alice anyone?").await;
    bob.send("hi lobby").await;
    frank.skip_until("bob: hi lobby").await;
    assert!(alice
        .sync()
        .await
        .iter()
        .all(|l| !l.contains("bob:") && !l.contains("anyone")));
    // Over IRC, after SASL, the same list applies.
    alice.send("/quit").await;
    alice.expect_closed().await;
    let mut irc = server.irc().await;
    irc.send("CAP REQ :sasl").await;
    irc.send("NICK alice").await;
    irc.send("USER alice 0 * :Alice").await;
    irc.send("AUTHENTICATE PLAIN").await;
    irc.expect(":irc.test CAP * ACK sasl").await;
    irc.expect("AUTHENTICATE +").await;
    use base64::Engine;
    let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0alice\0{PW}"));
    irc.send(&format!("AUTHENTICATE {plain}")).await;
    irc.expect_command("903").await;
    irc.send("CAP END").await;
    irc.expect_command("001").await;
    irc.send("SILENCE").await;
    let listed = irc.until(|l| irc_command(l) == "272").await;
    assert!(
        listed.contains(&":irc.test 271 alice alice bob!*@*".to_owned()),
        "{listed:?}"
    );
    drop((bob, frank, irc));
    server.stop().await;
}

#[tokio::test]
async fn one_irc_kick_may_name_several_people_each_kicked_on_its_own_line() {
    let (server, mut alice, mut bob, mut carol) = dev_room().await;
    alice.command("/op carol").await;
    carol
        .expect(":alice!alice@127.0.0.1 MODE #dev +o carol")
        .await;
    carol.send("KICK #dev,#dev alice,bob :bye").await;
    carol
        .expect(":carol!~carol@127.0.0.1 KICK #dev alice :bye")
        .await;
    carol
        .expect(":carol!~carol@127.0.0.1 KICK #dev bob :bye")
        .await;
    alice
        .skip_until("You are now in lobby (just you so far).")
        .await;
    bob.skip_until("You are now in lobby (2 people here).")
        .await;
    drop((alice, bob, carol));
    server.stop().await;
}
