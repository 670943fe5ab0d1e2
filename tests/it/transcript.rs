//! Chat transcripts: what the room saw, read back from the file; and a transcript that cannot
//! keep up never slows the chat.

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use linechat::ops::transcript::{Transcript, DEFAULT_CAPACITY};
use linechat::server::Extras;
use linechat::Config;
use serde_json::Value;

use crate::support::{http_get, TempPath, TestServer};

/// The transcript's lines as (kind, sender, text), checking the fields every line has.
fn read_back(path: &std::path::Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            let field = |name: &str| {
                v[name]
                    .as_str()
                    .unwrap_or_else(|| panic!("no {name} in {line}"))
                    .to_owned()
            };
            let time = field("time");
            // RFC 3339 in UTC with milliseconds: 2026-11-27T09:15:02.123Z
            assert_eq!(time.len(), 24, "{time}");
            assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
            assert_eq!(field("room"), "lobby");
            (field("kind"), field("sender"), field("text"))
        })
        .collect()
}

fn event(kind: &str, sender: &str, text: &str) -> (String, String, String) {
    (kind.into(), sender.into(), text.into())
}

#[tokio::test]
async fn the_transcript_holds_what_the_room_saw() {
    let path = TempPath::new("chat.jsonl");
    let transcript = Transcript::open(&path.0, DEFAULT_CAPACITY).unwrap();
    let server = TestServer::start_with(
        Config {
            rate_limit: None,
            ..Config::default()
        },
        Extras {
            transcript: Some(transcript),
            ..Extras::default()
        },
    )
    .await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob has joined the chat.").await;
    alice.send("hello  there ").await;
    bob.expect("alice: hello  there ").await;
    bob.send("/nick robert").await;
    bob.expect("Your nickname has been changed to robert").await;
    alice.expect("bob changed nickname to robert").await;
    bob.send("say \"hi\" \t\u{e9}t\u{e9} \u{1F600}").await;
    alice
        .expect("robert: say \"hi\" \t\u{e9}t\u{e9} \u{1F600}")
        .await;
    alice.send("/echo commands are not chat").await;
    alice.expect("commands are not chat").await;
    alice.send("/quit").await;
    alice.expect("Goodbye!").await;
    bob.expect("alice has left the chat.").await;
    let report = bob.command("/metrics").await.join("\n");
    assert!(report.contains("Transcript: "), "{report}");
    assert!(report.contains(" 0 dropped"), "{report}");
    server.stop().await;

    assert_eq!(
        read_back(&path.0),
        [
            event("join", "alice", ""),
            event("join", "bob", ""),
            event("message", "alice", "hello  there "),
            event("nick", "bob", "robert"),
            event("message", "robert", "say \"hi\" \t\u{e9}t\u{e9} \u{1F600}"),
            event("leave", "alice", "quit"),
            event("leave", "robert", "server shutting down"),
        ]
    );
}

/// A transcript into a pipe nobody reads: the writer blocks as a stalled disk would. Chat must
/// go on untouched, and the events that found no room are counted, in the chat report and the
/// Prometheus scrape alike.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_stalled_transcript_drops_lines_and_chat_goes_on() {
    let path = TempPath::new("stalled.fifo");
    let c_path = std::ffi::CString::new(path.0.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo touches nothing else.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    // A reader that never reads, so opening for writing succeeds and writes then block.
    let stalled_reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path.0)
        .unwrap();
    // The smallest pipe the kernel allows (one page), so it fills after a few dozen lines.
    // SAFETY: fcntl on a descriptor we own.
    unsafe { libc::fcntl(stalled_reader.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };

    let transcript = Transcript::open(&path.0, 4).unwrap();
    let server = TestServer::with_metrics(
        Config {
            rate_limit: None,
            ..Config::default()
        },
        Extras {
            transcript: Some(transcript),
            ..Extras::default()
        },
    )
    .await;
    let metrics = server.metrics_addr.unwrap();
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    alice.expect("bob has joined the chat.").await;

    let dropped = |text: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with("linechat_transcript_dropped_lines_total "))
            .expect(text);
        line.rsplit_once(' ').unwrap().1.parse().unwrap()
    };
    let mut sent = 0;
    let mut drops = 0;
    // At most 20 000 lines (some 600 kB), far more than a 4 kB pipe and 4 queued events hold.
    while sent < 20_000 {
        let batch: String = (sent..sent + 200).map(|i| format!("line {i}\n")).collect();
        alice.send_raw(batch.as_bytes()).await;
        for i in sent..sent + 200 {
            bob.expect(&format!("alice: line {i}")).await;
        }
        sent += 200;
        drops = dropped(&http_get(metrics, "/metrics").await.1);
        if drops > 0 {
            break;
        }
    }
    assert!(
        drops > 0,
        "no transcript line was dropped after {sent} messages"
    );

    // Chat is unaffected: every line arrived above, in order, and the room still works.
    bob.send("still here").await;
    alice.expect("bob: still here").await;
    let report = alice.command("/metrics").await.join("\n");
    assert!(
        report.contains(&format!("Total Messages: {}\n", sent + 1)),
        "{report}"
    );
    let line = report
        .lines()
        .find(|l| l.starts_with("Transcript: "))
        .expect(&report);
    let in_report: u64 = line
        .split(", ")
        .nth(1)
        .and_then(|part| part.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect(line);
    assert!(in_report >= drops, "{line} vs {drops} in the scrape");

    // Closing the read end turns the stalled write into an error, so shutdown is prompt.
    drop(stalled_reader);
    server.stop().await;
}
