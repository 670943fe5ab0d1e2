//! Reloading the configuration while clients are connected: each reloadable setting
//! (`linechat::config::RELOADABLE`) takes effect, and nobody is disconnected by it. The
//! server's real reload path runs (the request the binary's SIGHUP handler makes, and IRC
//! `REHASH`); only what it reads is given by the test instead of a file, which
//! `service.rs` covers with the real binary.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use linechat::config::{Reloaded, Reloader};
use linechat::server::Extras;
use linechat::Config;
use tokio::sync::Notify;

use crate::support::{irc_command, Client, TestServer};

/// Hands the server whatever configuration the test last set, as a config file would.
#[derive(Debug, Default)]
struct Given {
    config: Mutex<Option<Config>>,
    /// Told each time the server has read the configuration.
    read: Notify,
}

#[derive(Debug)]
struct GivenReloader(Arc<Given>);

impl Reloader for GivenReloader {
    fn reload(&self) -> Result<Reloaded, String> {
        let config = self.0.config.lock().unwrap().clone();
        // The server applies what it read right after this returns, before its task yields:
        // on the test's single-threaded runtime the test resumes only once that is done.
        self.0.read.notify_one();
        match config {
            Some(config) => Ok(Reloaded {
                config,
                report: "as the test said".to_owned(),
            }),
            None => Err("the test gave no configuration".to_owned()),
        }
    }

    fn source(&self) -> String {
        "the test".to_owned()
    }
}

/// A server that reloads on [`Reload::to`].
struct Reload {
    given: Arc<Given>,
    requests: Arc<Notify>,
}

impl Reload {
    fn extras() -> (Reload, Extras) {
        let given = Arc::new(Given::default());
        let requests = Arc::new(Notify::new());
        let extras = Extras {
            reloader: Some(Box::new(GivenReloader(given.clone()))),
            reload_requests: requests.clone(),
            ..Extras::default()
        };
        (Reload { given, requests }, extras)
    }

    /// What the binary does on SIGHUP, with `config` as what the file now says; returns once
    /// the server has applied it.
    async fn to(&self, config: Config) {
        *self.given.config.lock().unwrap() = Some(config);
        self.requests.notify_one();
        tokio::time::timeout(Duration::from_secs(10), self.given.read.notified())
            .await
            .expect("the server reloaded");
        tokio::task::yield_now().await;
    }
}

async fn start(config: Config) -> (TestServer, Reload) {
    let (reload, extras) = Reload::extras();
    (TestServer::start_with(config, extras).await, reload)
}

/// Both still connected and chatting: nobody was dropped by the reload.
async fn still_chatting(a: &mut Client, b: &mut Client, text: &str) {
    a.send(text).await;
    b.skip_until(&format!("{}: {text}", a.nick)).await;
}

/// A connection that is refused with one line, which must contain `why`.
async fn refused(server: &TestServer, why: &str) {
    let mut c = Client::connect(server.addr).await;
    let lines = c.expect_closed().await;
    assert!(
        lines.len() == 1 && lines[0].contains(why),
        "expected a refusal saying {why:?}, got {lines:?}"
    );
}

#[tokio::test]
async fn max_clients_and_max_prompt_move_without_closing_anyone() {
    let config = Config {
        max_clients: 3,
        max_prompt: Some(1),
        ..Config::default()
    };
    let (server, reload) = start(config.clone()).await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob has joined the chat.").await;
    let mut waiting = Client::connect(server.addr).await;
    waiting.expect_prompt().await;
    refused(&server, "the server is full (3 connections)").await;

    reload
        .to(Config {
            max_clients: 5,
            max_prompt: Some(2),
            ..config.clone()
        })
        .await;
    // A second connection at the prompt fits the new --max-prompt, and a fourth and fifth
    // connection the new --max-clients.
    let mut second = Client::connect(server.addr).await;
    second.expect_prompt().await;
    second.choose("carol").await;
    let _dave = server.join("dave").await;
    refused(&server, "the server is full (5 connections)").await;

    // Lowered below what is open: everyone stays, newcomers are refused.
    reload
        .to(Config {
            max_clients: 2,
            ..config
        })
        .await;
    refused(&server, "the server is full (2 connections)").await;
    waiting.choose("erin").await;
    still_chatting(&mut alice, &mut bob, "all five still here").await;
    server.stop().await;
}

#[tokio::test]
async fn per_address_limits_and_exemptions_move_for_new_connections() {
    let config = Config {
        max_per_ip: 1,
        connect_rate: None,
        ip_exempt: Vec::new(),
        ..Config::default()
    };
    let (server, reload) = start(config.clone()).await;
    let mut alice = server.join("alice").await;
    refused(&server, "too many connections from your address (1 open)").await;

    reload
        .to(Config {
            max_per_ip: 3,
            ..config.clone()
        })
        .await;
    let mut bob = server.join("bob").await;
    let _carol = server.join("carol").await;
    refused(&server, "too many connections from your address (3 open)").await;

    // A connect rate where there was none: the burst of 1 is spent on the first newcomer.
    reload
        .to(Config {
            max_per_ip: 0,
            connect_rate: Some(0.01),
            connect_burst: 1,
            ..config.clone()
        })
        .await;
    let _dave = server.join("dave").await;
    refused(&server, "at most 0.01 a second").await;

    // Exempting loopback lifts both.
    reload
        .to(Config {
            max_per_ip: 1,
            connect_rate: Some(0.01),
            connect_burst: 1,
            ip_exempt: linechat::net::cidr::default_exempt(),
            ..config
        })
        .await;
    let _erin = server.join("erin").await;
    let _frank = server.join("frank").await;
    still_chatting(&mut bob, &mut alice, "nobody was dropped").await;
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_shorter_idle_timeout_applies_to_clients_already_connected() {
    let config = Config {
        idle_timeout: Some(Duration::from_secs(3600)),
        ..Config::default()
    };
    let (server, reload) = start(config.clone()).await;
    let mut idler = server.join("idler").await;
    idler.wait = Duration::from_secs(24 * 3600);
    reload
        .to(Config {
            idle_timeout: Some(Duration::from_secs(60)),
            ..config
        })
        .await;
    let start = tokio::time::Instant::now();
    assert_eq!(
        idler.line().await,
        "Warning: you have been idle for 54 sec; you will be disconnected in 6 sec unless you \
         send something."
    );
    assert_eq!(
        idler.expect_closed().await,
        ["You have been disconnected after 1 min 0 sec without input (idle timeout)."]
    );
    // Idle since it joined, just before the reload: the new timeout counts from then.
    assert!(
        start.elapsed() <= Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
    server.stop().await;
}

/// Lines a client gets through in `within` when it sends `n` at once.
async fn lines_through(from: &mut Client, to: &mut Client, n: usize, within: Duration) -> usize {
    let batch: String = (0..n).map(|i| format!("line {i}\n")).collect();
    from.send_raw(batch.as_bytes()).await;
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + within;
    while got < n {
        match tokio::time::timeout_at(deadline, to.line()).await {
            Ok(line) => {
                assert_eq!(line, format!("{}: line {got}", from.nick));
                got += 1;
            }
            Err(_) => break,
        }
    }
    got
}

#[tokio::test]
async fn flood_control_changes_for_connected_clients_and_nothing_is_dropped() {
    let config = Config {
        rate_limit: None,
        ..Config::default()
    };
    let (server, reload) = start(config.clone()).await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob has joined the chat.").await;
    let quick = Duration::from_millis(1500);
    assert_eq!(lines_through(&mut bob, &mut alice, 100, quick).await, 100);

    // 2 lines a second after a burst of 5: of 10 sent at once, 5 come at once and the rest
    // one every half second.
    reload
        .to(Config {
            rate_limit: Some(2.0),
            rate_burst: 5,
            ..config.clone()
        })
        .await;
    let through = lines_through(&mut bob, &mut alice, 10, quick).await;
    assert!((5..=8).contains(&through), "{through} of 10 within 1.5 s");
    // None was dropped: the rest arrive, slowly and in order.
    for i in through..10 {
        alice.expect(&format!("bob: line {i}")).await;
    }

    reload.to(config).await;
    assert_eq!(lines_through(&mut bob, &mut alice, 100, quick).await, 100);
    server.stop().await;
}

/// The message of the day as a reload leaves it: IRC clients registering afterwards, and
/// those asking with `MOTD`, get the new one; an empty one is no MOTD (422); without one
/// IRC gets the built-in text and netcat users nothing more than the welcome.
#[tokio::test]
async fn the_motd_changes_for_whoever_registers_or_asks_after_a_reload() {
    let (reload, extras) = Reload::extras();
    let config = Config {
        server_name: "irc.test".to_owned(),
        ..Config::default()
    };
    let server = TestServer::with_irc_extras(config.clone(), extras).await;
    let mut bob = server.irc().await;
    let welcome = bob.register("bob", &[]).await;
    let motd: Vec<&String> = welcome.iter().filter(|l| irc_command(l) == "372").collect();
    assert_eq!(
        motd,
        [
            ":irc.test 372 bob :- One hub for every client: the people here may be on netcat, IRC or the web.",
            ":irc.test 372 bob :- /msg linechat help lists the server's own commands.",
        ]
    );

    reload
        .to(Config {
            motd: Some(vec!["Be kind.".to_owned(), String::new()].into()),
            ..config.clone()
        })
        .await;
    bob.send("MOTD").await;
    bob.expect(":irc.test 375 bob :- irc.test Message of the day - ")
        .await;
    bob.expect(":irc.test 372 bob :- Be kind.").await;
    bob.expect(":irc.test 372 bob :- ").await;
    bob.expect(":irc.test 376 bob :End of /MOTD command.").await;
    let mut alice = Client::greeted(server.addr, "alice").await;
    alice.expect("- Be kind.").await;
    alice.expect("-").await;
    // bob, on IRC, is in no room until he joins one.
    alice.expect("You are in lobby (just you so far).").await;

    reload
        .to(Config {
            motd: Some(Vec::new().into()),
            ..config
        })
        .await;
    let mut carol = server.irc().await;
    let welcome = carol.register("carol", &[]).await;
    assert!(
        welcome
            .iter()
            .any(|l| l == ":irc.test 422 carol :MOTD File is missing"),
        "{welcome:?}"
    );
    assert!(
        !welcome.iter().any(|l| irc_command(l) == "372"),
        "{welcome:?}"
    );
    bob.send("PING :still").await;
    bob.expect(":irc.test PONG irc.test still").await;
    server.stop().await;
}

#[tokio::test]
async fn a_new_password_is_asked_of_newcomers_only() {
    let config = Config::default();
    let (server, reload) = start(config.clone()).await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob has joined the chat.").await;
    reload
        .to(Config {
            server_password: Some("sesame".to_owned()),
            ..config
        })
        .await;
    let mut carol = Client::connect(server.addr).await;
    carol
        .expect_unended("This server is private. Password: ")
        .await;
    carol.send("sesame").await;
    carol.register("carol").await;
    alice.expect("carol has joined the chat.").await;
    still_chatting(&mut bob, &mut alice, "we were let in before").await;
    server.stop().await;
}

#[tokio::test]
async fn a_bigger_queue_holds_more_for_new_connections_while_old_ones_keep_theirs() {
    let config = Config {
        rate_limit: None,
        queue_bytes: 16 * 1024,
        ..Config::default()
    };
    let (server, reload) = start(config.clone()).await;
    let mut old = Client::connect_small_buffer(server.addr).await;
    old.register("old").await;
    reload
        .to(Config {
            queue_bytes: 64 << 20,
            ..config
        })
        .await;
    let mut new = Client::connect_small_buffer(server.addr).await;
    new.register("new").await;
    let mut watcher = server.join("watcher").await;
    let mut flooder = server.join("flooder").await;
    watcher.expect("flooder has joined the chat.").await;
    // Neither `old` nor `new` reads from here on; the watcher reads everything. 8 MB: past
    // what socket buffers hold, and well within the new 64 MiB queue.
    const LINES: usize = 40_000;
    let reading = tokio::spawn(async move {
        let mut others = Vec::new();
        let mut seen = 0;
        while seen < LINES {
            let line = watcher.line().await;
            if line.starts_with("flooder: ") {
                seen += 1;
            } else {
                others.push(line);
            }
        }
        (watcher, others)
    });
    flooder.flood(LINES, &"q".repeat(200)).await;
    let (mut watcher, others) = tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .expect("the watcher kept up")
        .unwrap();
    assert_eq!(
        others,
        ["old has left the chat (slow consumer: stopped reading)."],
        "the old connection kept its 16 KiB queue, the new one has room for it all"
    );
    let metrics = watcher.command("/metrics").await.join("\n");
    let queued = metrics
        .lines()
        .find_map(|l| l.strip_prefix("Queued output: "))
        .expect("queued output in /metrics");
    let largest = queued
        .split("largest for one client: ")
        .nth(1)
        .and_then(|s| s.strip_suffix(')'))
        .and_then(|s| s.split_once(' '))
        .map(|(n, unit)| {
            let scale = match unit {
                "kB" => 1e3,
                "MB" => 1e6,
                "GB" => 1e9,
                _ => 1.0,
            };
            n.parse::<f64>().unwrap() * scale
        })
        .unwrap_or_else(|| panic!("{queued}"));
    assert!(
        largest > 1e6,
        "the new connection's queue holds megabytes: {queued}"
    );
    drop(new);
    server.stop().await;
}

/// `OPER` that must succeed: 381, then the +o MODE.
async fn oper(client: &mut crate::support::IrcClient, credentials: &str) {
    client.send(&format!("OPER {credentials}")).await;
    assert_eq!(irc_command(&client.line().await), "381");
    assert!(client.line().await.ends_with(" +o"));
}

#[tokio::test]
async fn rehash_by_an_operator_reloads_and_new_operators_can_oper() {
    let config = Config {
        opers: vec![("root".to_owned(), "old-secret".to_owned())],
        ..Config::default()
    };
    let (reload, extras) = Reload::extras();
    let server = TestServer::with_irc_extras(config.clone(), extras).await;
    let mut user = server.irc_join("user", &[]).await;
    user.send("REHASH").await;
    assert_eq!(irc_command(&user.line().await), "481");

    let mut root = server.irc_join("root", &[]).await;
    oper(&mut root, "root old-secret").await;
    *reload.given.config.lock().unwrap() = Some(Config {
        opers: vec![("admin".to_owned(), "new-secret".to_owned())],
        ..config
    });
    root.send("REHASH").await;
    let lines = root.until(|l| l.contains("NOTICE")).await;
    assert!(
        lines
            .iter()
            .any(|l| irc_command(l) == "382" && l.contains(" the_test ")),
        "{lines:?}"
    );
    assert!(
        lines.last().unwrap().contains("Reloaded: as the test said"),
        "{lines:?}"
    );

    let mut admin = server.irc_join("admin", &[]).await;
    oper(&mut admin, "admin new-secret").await;
    // root is gone from the configuration: refused like a wrong password.
    user.send("OPER root old-secret").await;
    assert_eq!(irc_command(&user.line().await), "464");
    // Still connected, and still an operator.
    root.send("REHASH").await;
    let lines = root.until(|l| l.contains("NOTICE")).await;
    assert!(lines.iter().any(|l| irc_command(l) == "382"), "{lines:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_configuration_that_cannot_be_read_changes_nothing() {
    let config = Config {
        opers: vec![("root".to_owned(), "pw".to_owned())],
        ..Config::default()
    };
    let (_reload, extras) = Reload::extras();
    let server = TestServer::with_irc_extras(config, extras).await;
    let mut root = server.irc_join("root", &[]).await;
    oper(&mut root, "root pw").await;
    // The reloader has nothing to give: REHASH says so, and the server runs on as it was.
    root.send("REHASH").await;
    let notice = root.line().await;
    assert!(
        notice.contains("REHASH failed, nothing changed: the test gave no configuration"),
        "{notice}"
    );
    let mut other = server.irc_join("other", &[]).await;
    oper(&mut other, "root pw").await;
    server.stop().await;
}
