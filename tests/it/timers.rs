//! Idle and registration timeouts and flood control, under paused tokio time: the clock jumps
//! straight to the next timer, so minutes pass in milliseconds and the timing is exact.

use std::time::Duration;

use linechat::Config;
use tokio::time::Instant;

use crate::support::{Client, TestServer};

/// Virtual time is free: wait as long as any timer here could take.
const PATIENT: Duration = Duration::from_secs(30 * 24 * 3600);

async fn join(server: &TestServer, nick: &str) -> Client {
    let mut c = Client::connect(server.addr).await;
    c.wait = PATIENT;
    c.register(nick).await;
    c
}

#[tokio::test(start_paused = true)]
async fn an_idle_client_is_warned_then_disconnected_and_others_are_told() {
    let server = TestServer::start(Config {
        idle_timeout: Some(Duration::from_secs(600)),
        ..Config::default()
    })
    .await;
    let mut watcher = join(&server, "watcher").await;
    let mut idler = join(&server, "idler").await;
    watcher.expect("idler has joined the chat.").await;

    // Activity resets the clock.
    tokio::time::sleep(Duration::from_secs(500)).await;
    idler.send("/echo still here").await;
    idler.expect("still here").await;
    watcher.send("/echo me too").await;
    watcher.expect("me too").await;
    let active_at = Instant::now();
    let keepalive = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(500)).await;
        watcher.send("/echo tick").await;
        watcher.expect("tick").await;
        watcher
    });

    let warning = idler.line().await;
    assert_eq!(
        warning,
        "Warning: you have been idle for 9 min 30 sec; you will be disconnected in 30 sec \
         unless you send something."
    );
    assert_eq!((Instant::now() - active_at).as_secs(), 570);
    let rest = idler.expect_closed().await;
    assert_eq!(
        rest,
        ["You have been disconnected after 10 min 0 sec without input (idle timeout)."]
    );
    assert_eq!((Instant::now() - active_at).as_secs(), 600);
    let mut watcher = keepalive.await.unwrap();
    watcher
        .expect("idler has left the chat (idle timeout).")
        .await;
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_short_idle_timeout_warns_at_ninety_percent() {
    let server = TestServer::start(Config {
        idle_timeout: Some(Duration::from_secs(20)),
        ..Config::default()
    })
    .await;
    let mut watcher = join(&server, "watcher").await;
    let mut idler = join(&server, "idler").await;
    watcher.expect("idler has joined the chat.").await;
    let joined = Instant::now();
    // Keep the watcher alive.
    let keepalive = tokio::spawn(async move {
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            watcher.send("/echo tick").await;
        }
        watcher
    });
    assert!(idler
        .line()
        .await
        .starts_with("Warning: you have been idle for 18 sec"));
    assert_eq!((Instant::now() - joined).as_secs(), 18);
    idler.expect_closed().await;
    assert_eq!((Instant::now() - joined).as_secs(), 20);
    let mut watcher = keepalive.await.unwrap();
    let lines = watcher
        .skip_until("idler has left the chat (idle timeout).")
        .await;
    assert!(lines.iter().all(|l| l == "tick"), "{lines:?}");
    server.stop().await;
}

/// Silent, or half a nickname and no line ending: only the nickname deadline can end it, with
/// its clear answer. A TLS client that sent its hello (truncated here, with no newline in it)
/// and waits for the server's is recognised in that first read and answered at once, not left
/// to the deadline.
#[tokio::test(start_paused = true)]
async fn a_silent_connection_or_a_truncated_tls_record_at_the_prompt_is_closed() {
    let server = TestServer::start(Config {
        register_timeout: Duration::from_secs(60),
        ..Config::default()
    })
    .await;
    let tls_hello: &[u8] = &[
        0x16, 0x03, 0x01, 0x00, 0xf4, 0x01, 0x00, 0x00, 0xf0, 0x03, 0x03,
    ];
    let deadline = "Error: no nickname chosen within 1 min 0 sec; closing the connection.";
    let not_tls = "Error: this chat server speaks plain text, not TLS; connect with a line-based \
                   client such as nc HOST PORT.";
    for (opening, answer, after) in [
        (&b""[..], deadline, 60),
        (b"ali", deadline, 60),
        (tls_hello, not_tls, 0),
    ] {
        let mut c = Client::connect(server.addr).await;
        c.wait = PATIENT;
        c.send_raw(opening).await;
        c.expect_prompt().await;
        let start = Instant::now();
        assert_eq!(c.expect_closed().await, [answer]);
        assert_eq!((Instant::now() - start).as_secs(), after, "{opening:?}");
    }
    server.stop().await;
}

/// A server with the default flood control (20 lines a second, burst 50), alice, and `nick`,
/// whose arrival alice has seen.
async fn flood_controlled(nick: &str) -> (TestServer, Client, Client) {
    let server = TestServer::start(Config {
        rate_limit: Some(20.0),
        rate_burst: 50,
        idle_timeout: None,
        ..Config::default()
    })
    .await;
    let mut alice = join(&server, "alice").await;
    let other = join(&server, nick).await;
    alice.expect(&format!("{nick} has joined the chat.")).await;
    (server, alice, other)
}

#[tokio::test(start_paused = true)]
async fn flood_control_slows_a_sender_down_without_dropping_anything() {
    let (server, mut alice, mut paster) = flood_controlled("paster").await;

    // The join used one token; 250 lines more arrive at once.
    let start = Instant::now();
    let block: String = (0..250).map(|i| format!("line {i}\n")).collect();
    paster.send_raw(block.as_bytes()).await;
    for i in 0..250 {
        alice.expect(&format!("paster: line {i}")).await;
    }
    // 49 lines go at once from the burst, the other 201 at 20/s.
    let took = Instant::now() - start;
    assert!(
        took >= Duration::from_millis(10_000) && took <= Duration::from_millis(10_100),
        "{took:?}"
    );
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_zero_means_never() {
    let server = TestServer::start(Config {
        idle_timeout: None,
        ..Config::default()
    })
    .await;
    let mut c = join(&server, "sleepy").await;
    tokio::time::sleep(Duration::from_secs(7 * 24 * 3600)).await;
    c.send("/echo awake").await;
    c.expect("awake").await;
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn big_rooms_get_presence_summaries_instead_of_a_notice_each() {
    let server = TestServer::start(Config {
        announce_limit: 2,
        idle_timeout: None,
        ..Config::default()
    })
    .await;
    let mut a = join(&server, "a").await;
    let _b = join(&server, "b").await;
    a.expect("b has joined the chat.").await;
    let _c = join(&server, "c").await;
    a.expect("c has joined the chat.").await; // two listeners: still announced
    let start = Instant::now();
    let d = join(&server, "d").await; // three listeners: counted
    let _e = join(&server, "e").await;
    d.reset();
    // /who stays exact whatever is announced.
    let who = a.command("/who").await;
    assert_eq!(who, ["In lobby (4): a, b, c, e"]);
    a.expect("2 people joined and 1 left in the last 10 s (4 here now).")
        .await;
    assert_eq!((Instant::now() - start).as_secs(), 10);
    // Nothing to report, nothing sent.
    a.send("/echo later").await;
    tokio::time::sleep(Duration::from_secs(25)).await;
    a.expect("later").await;
    assert_eq!(a.sync().await, Vec::<String>::new());
    server.stop().await;
}

/// A loop that joins and leaves as fast as it can, in a room far below the announce limit:
/// the room hears the first notices of the period one by one, then one summary, so the
/// churn cannot outrun the server's writing and fill anyone's queue.
#[tokio::test(start_paused = true)]
async fn churn_in_a_small_room_is_summarised_past_its_allowance() {
    use linechat::core::room::PRESENCE_NOTICES_PER_PERIOD;
    let server = TestServer::start(Config {
        idle_timeout: None,
        ..Config::default()
    })
    .await;
    let mut a = join(&server, "a").await;
    let start = Instant::now();
    let cycles = PRESENCE_NOTICES_PER_PERIOD + 20;
    for i in 0..cycles {
        let mut c = join(&server, &format!("churn{i}")).await;
        c.send("/quit").await;
        assert_eq!(c.expect_closed().await, ["Goodbye!"]);
    }
    // a's own arrival used one notice of the allowance.
    let (mut joins, mut leaves) = (0, 0);
    for _ in 1..PRESENCE_NOTICES_PER_PERIOD {
        let line = a.line().await;
        if line == format!("churn{joins} has joined the chat.") {
            joins += 1;
        } else {
            assert_eq!(line, format!("churn{leaves} has left the chat."));
            leaves += 1;
        }
    }
    a.expect(&format!(
        "{} people joined and {} left in the last 10 s (1 here now).",
        cycles - joins,
        cycles - leaves
    ))
    .await;
    assert!(Instant::now() - start <= Duration::from_secs(10));
    // The next period starts with a full allowance.
    let _z = join(&server, "z").await;
    a.expect("z has joined the chat.").await;
    server.stop().await;
}

/// Emptied rooms keep their history, so creating rooms is how one client could fill the
/// server's memory: each client may create --rooms-per-minute of them; joining is free.
#[tokio::test(start_paused = true)]
async fn a_client_creates_at_most_its_rooms_per_minute() {
    let server = TestServer::start(Config {
        rooms_per_minute: 3,
        idle_timeout: None,
        ..Config::default()
    })
    .await;
    let mut a = join(&server, "a").await;
    for i in 0..3 {
        a.send(&format!("/join r{i}")).await;
        assert!(a.line().await.starts_with(&format!("You are now in r{i} ")));
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(
        a.command("/join r3").await,
        [
            "Error: you have created 3 rooms in the last minute, the most allowed; try again in \
          40 s, or join a room that exists (/rooms lists them)."
        ]
    );
    // Rooms that exist are joined as ever (r0 and r1 were forgotten as they emptied).
    a.send("/join lobby").await;
    assert!(a.line().await.starts_with("You are now in lobby "));
    a.sync().await;
    tokio::time::sleep(Duration::from_secs(40)).await;
    a.send("/join r3").await;
    assert!(a.line().await.starts_with("You are now in r3 "));
    server.stop().await;
}

/// Replies whose work grows with the server cost several lines of flood control: ten
/// `/metrics` are a hundred lines' worth, so past the burst they come at two a second, while
/// everyone else's chat goes on as before.
#[tokio::test(start_paused = true)]
async fn expensive_commands_cost_several_lines_of_flood_control() {
    let (server, mut alice, mut asker) = flood_controlled("asker").await;
    let start = Instant::now();
    asker.send_raw("/metrics\n".repeat(10).as_bytes()).await;
    asker.send("/echo done").await;
    asker.skip_until("done").await;
    // The join took 1 token; 10 × 10 + 1 lines' worth against 49 left: 52 at 20/s.
    let took = Instant::now() - start;
    assert!(
        took >= Duration::from_millis(2_600) && took <= Duration::from_millis(2_700),
        "{took:?}"
    );
    // Nobody else was held up.
    let start = Instant::now();
    alice.send("/echo not held").await;
    alice.expect("not held").await;
    assert_eq!(Instant::now() - start, Duration::ZERO);
    server.stop().await;
}
