//! `--data-dir`: rooms, topics and history kept across restarts by the embedded store, read back
//! beyond what memory holds, one server per directory, retention, and the committed fixture
//! of store format 1. (Crashes, `kill -9`, and the full disk are in the fault suite.)

use std::path::{Path, PathBuf};

use linechat::core::store::Store;
use linechat::server::Extras;
use linechat::store::{self, Log, OpenError};
use linechat::Config;

use crate::support::{TempPath, TestServer};

fn config(dir: &Path) -> Config {
    Config {
        data_dir: Some(dir.to_owned()),
        rate_limit: None,
        ..Config::default()
    }
}

/// A server on the store in `config.data_dir`, opened as the binary opens it.
async fn start(config: Config) -> (TestServer, std::sync::Arc<Log>) {
    let dir = config.data_dir.clone().expect("a data dir");
    let (log, kept) = Log::open(&dir, store::Options::from_config(&config)).expect("open");
    let extras = Extras {
        store: Some((log.clone(), kept)),
        ..Extras::default()
    };
    (TestServer::with_metrics(config, extras).await, log)
}

fn data_dir(tmp: &TempPath) -> PathBuf {
    tmp.with_name("data")
}

/// What `bob` sees entering `room`: its topic line (which must be `topic`), then what
/// `/history` says was said there, each line without its time.
async fn topic_and_history(
    bob: &mut crate::support::Client,
    room: &str,
    topic: &str,
) -> Vec<String> {
    let lines = bob.command(&format!("/join {room}")).await;
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("Topic of {room}: {topic}")),
        "{lines:#?}"
    );
    let history = bob.command("/history").await;
    history
        .iter()
        .filter_map(|l| l.split_once("] ").map(|(_, rest)| rest.to_owned()))
        .collect()
}

#[tokio::test]
async fn rooms_topics_and_history_are_there_after_a_restart() {
    let tmp = TempPath::new("x");
    let dir = data_dir(&tmp);
    let (server, _) = start(config(&dir)).await;
    let mut alice = server.join("alice").await;
    alice.command("/join dev").await;
    alice.send("/topic release on friday").await;
    alice
        .skip_until("alice set the topic of dev: release on friday")
        .await;
    for i in 0..5 {
        alice.send(&format!("line {i}")).await;
    }
    alice.send("/me waves").await;
    alice.command("/echo synced").await;
    drop(alice);
    server.stop().await;

    let (server, _) = start(config(&dir)).await;
    let mut bob = server.join("bob").await;
    let said = topic_and_history(&mut bob, "dev", "release on friday (set by alice)").await;
    assert_eq!(
        said,
        [
            "alice: line 0",
            "alice: line 1",
            "alice: line 2",
            "alice: line 3",
            "alice: line 4",
            "* alice waves"
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn history_beyond_memory_is_read_from_the_store_by_history_and_chathistory() {
    let tmp = TempPath::new("x");
    let dir = data_dir(&tmp);
    // Memory holds a handful of these; the store holds them all.
    let cfg = Config {
        history_bytes: 4096,
        ..config(&dir)
    };
    let (log, kept) = Log::open(&dir, store::Options::from_config(&cfg)).unwrap();
    let extras = Extras {
        store: Some((log.clone(), kept)),
        ..Extras::default()
    };
    let server = TestServer::with_irc_extras(cfg.clone(), extras).await;
    let mut alice = server.join("alice").await;
    for i in 0..60 {
        alice
            .send(&format!("message {i:02} {}", "x".repeat(100)))
            .await;
    }
    alice.command("/echo synced").await;
    let history = alice.command("/history 60").await;
    let said: Vec<String> = history
        .iter()
        .filter(|l| l.contains("alice: message"))
        .cloned()
        .collect();
    assert_eq!(said.len(), 60, "{history:#?}");
    for (i, line) in said.iter().enumerate() {
        assert!(line.contains(&format!("message {i:02} ")), "{line}");
    }
    assert!(log.stats().messages >= 60);

    let mut irc = server
        .irc_join("carol", &["message-tags", "server-time", "batch"])
        .await;
    irc.send("CHATHISTORY LATEST #lobby * 100").await;
    let batch = irc.until(|l| l.contains("BATCH -")).await;
    let msgs: Vec<&String> = batch
        .iter()
        .filter(|l| l.contains("PRIVMSG #lobby"))
        .collect();
    assert_eq!(msgs.len(), 60, "{batch:#?}");
    // msgid= and timestamp= selectors reach into what only the store has: the 10th message.
    let tag = |line: &str, name: &str| -> String {
        let tags = line.split(' ').next().unwrap().trim_start_matches('@');
        tags.split(';')
            .find_map(|t| t.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} in {line}"))
            .to_owned()
    };
    let (id, time) = (tag(msgs[10], "msgid"), tag(msgs[10], "time"));
    irc.send(&format!("CHATHISTORY BEFORE #lobby msgid={id} 3"))
        .await;
    let before = irc.until(|l| l.contains("BATCH -")).await;
    let got: Vec<&String> = before.iter().filter(|l| l.contains("PRIVMSG")).collect();
    assert_eq!(got.len(), 3, "{before:#?}");
    assert!(got[0].contains("message 07 ") && got[2].contains("message 09 "));
    irc.send(&format!("CHATHISTORY AFTER #lobby timestamp={time} 2"))
        .await;
    let after = irc.until(|l| l.contains("BATCH -")).await;
    let got: Vec<&String> = after.iter().filter(|l| l.contains("PRIVMSG")).collect();
    // Times have millisecond precision, so several messages may share the 10th's.
    assert_eq!(got.len(), 2, "{after:#?}");
    assert!(got.iter().all(|l| tag(l, "time") >= time), "{after:#?}");
    server.stop().await;
}

#[tokio::test]
async fn a_second_server_on_the_same_directory_is_refused_naming_the_first() {
    let tmp = TempPath::new("x");
    let dir = data_dir(&tmp);
    let cfg = config(&dir);
    let (first, _) = Log::open(&dir, store::Options::from_config(&cfg)).unwrap();
    let err = Log::open(&dir, store::Options::from_config(&cfg)).unwrap_err();
    assert!(matches!(err, OpenError::Locked { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "in use by another linechat (pid {})",
            std::process::id()
        )),
        "{text}"
    );
    first.close();
    // Closed, the directory is free again.
    let (again, _) = Log::open(&dir, store::Options::from_config(&cfg)).unwrap();
    again.close();
}

#[tokio::test]
async fn retention_keeps_the_newest_per_room_and_counts_what_went() {
    let tmp = TempPath::new("x");
    let dir = data_dir(&tmp);
    let cfg = Config {
        history_retain: 3,
        ..config(&dir)
    };
    let (server, log) = start(cfg.clone()).await;
    let mut alice = server.join("alice").await;
    for i in 0..8 {
        alice.send(&format!("line {i}")).await;
    }
    alice.command("/echo synced").await;
    let stats = log.stats();
    assert_eq!((stats.messages, stats.expired), (3, 5), "{stats:?}");
    let metrics = crate::support::http_get(server.metrics_addr.unwrap(), "/metrics")
        .await
        .1;
    assert!(
        metrics.contains("linechat_store_expired_messages_total 5"),
        "{metrics}"
    );
    assert!(metrics.contains("linechat_store_messages 3"), "{metrics}");
    drop(alice);
    server.stop().await;
    // After a restart with a tighter limit, the tighter limit holds.
    let (server, log) = start(Config {
        history_retain: 2,
        ..cfg
    })
    .await;
    assert_eq!(log.stats().messages, 2);
    let mut bob = server.join("bob").await;
    bob.command("/echo scrollback seen").await;
    let history = bob.command("/history").await;
    let said: Vec<&String> = history
        .iter()
        .filter(|l| l.contains("alice: line"))
        .collect();
    assert_eq!(said.len(), 2, "{history:#?}");
    assert!(said[0].ends_with("line 6") && said[1].ends_with("line 7"));
    server.stop().await;
}

/// Copies the committed store `tests/data/store/<name>` into `dir`, which it creates.
fn copy_fixture(name: &str, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/store")
        .join(name);
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
}

/// `tests/data/store/v1` was written by the first version of the store (format 1); every
/// later version must read it. Never regenerate it: add a new fixture for a new format.
#[tokio::test]
async fn a_store_written_by_format_1_is_read() {
    let tmp = TempPath::new("x");
    let dir = data_dir(&tmp);
    copy_fixture("v1", &dir);
    let (server, log) = start(config(&dir)).await;
    assert_eq!(log.stats().messages, 4);
    let mut bob = server.join("bob").await;
    let said = topic_and_history(&mut bob, "dev", "format one (set by alice)").await;
    assert_eq!(
        said,
        [
            "alice: kept in format 1",
            "* alice waves",
            "alice: ünïcödé ✓"
        ]
    );
    server.stop().await;
}

/// `tests/data/store/v2`, written by format 2 (the first with bans, mutes and operating
/// accounts: alice registered, made dev, set its topic, said one line, banned mallory, muted
/// carol and moderated it): every later version must read it. Never regenerate it.
#[tokio::test]
async fn a_store_written_by_format_2_is_read_with_its_moderation() {
    let tmp = TempPath::new("x");
    let dir = data_dir(&tmp);
    copy_fixture("v2", &dir);
    let (server, log) = start(config(&dir)).await;
    assert_eq!(log.stats().messages, 1);
    let mut bob = server.join("bob").await;
    let said = topic_and_history(&mut bob, "dev", "format two (set by alice)").await;
    assert_eq!(said, ["alice: kept in format 2"]);
    assert_eq!(
        bob.command("/mode").await,
        ["Modes of dev: moderated (+m), topic locked (+t)."]
    );
    assert_eq!(
        bob.command("/ban").await,
        ["Bans in dev (1): mallory!*@* (by alice)"]
    );
    assert_eq!(
        bob.command("/mute").await,
        ["Mutes in dev (1): carol!*@* (by alice)"]
    );
    // alice's account operates dev, so bob, first in, is not handed it.
    assert_eq!(
        bob.command("/mode -m").await,
        ["Error: only operators of dev may change its modes."]
    );
    let mut mallory = server.join("mallory").await;
    assert_eq!(
        mallory.command("/join dev").await,
        ["Error: you are banned from dev."]
    );
    drop((bob, mallory));
    server.stop().await;
}
