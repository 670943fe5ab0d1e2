//! The store's promises on the real binary: `kill -9` mid-stream loses nothing anyone
//! received, one server per data directory, a directory that cannot be used is one line and
//! exit 1, and a disk that fills up degrades the store while chat goes on, until it resumes.

use std::process::Command as StdCommand;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::proc::{Options, Server};
use crate::support::{http_get, skip_outside_ci, Client, TempPath};

const BIN: &str = env!("CARGO_BIN_EXE_linechat");

/// The most lines alice sends, and for how long at most: the stream is cut by the kill long
/// before either, but the loop is bounded whatever happens.
const MAX_LINES: usize = 200_000;
const MAX_SECS: u64 = 20;
/// The line of alice's at whose arrival bob's reader kills the server.
const KILL_AT: usize = 3001;

/// Reads `client` until the connection ends, keeping alice's lines; with `kill`, sends the
/// server SIGKILL the moment the `n`th line arrives, so the kill lands within microseconds of a
/// delivery, long before the store's background thread (every second) would have written it.
fn record(
    mut client: Client,
    got: Arc<Mutex<Vec<String>>>,
    kill: Option<(usize, u32)>,
) -> tokio::task::JoinHandle<()> {
    client.wait = Duration::from_secs(30);
    tokio::spawn(async move {
        while let Some(line) = client.try_line().await {
            if let Some(text) = line.strip_prefix("alice: ") {
                let mut got = got.lock().unwrap();
                got.push(text.to_owned());
                if kill.is_some_and(|(n, _)| got.len() == n) {
                    let pid = kill.unwrap().1;
                    // SAFETY: signalling the child this test started, by its PID.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_nothing_anyone_received() {
    let tmp = TempPath::new("x");
    let dir = tmp.with_name("data");
    let dir_arg = dir.to_str().unwrap();
    let args = [
        "--data-dir",
        dir_arg,
        "--rate-limit",
        "0",
        "--history-retain",
        "100000",
        "--queue-bytes",
        "16777216",
    ];
    let server = Server::start(Options {
        args: &args,
        ..Options::default()
    })
    .await;
    let (mut alice, bob) = server.alice_and_bob().await;
    let mut carol = Client::join(server.addr, "carol").await;
    carol.command("/echo ready").await;
    let (bob_got, carol_got) = (Arc::default(), Arc::default());
    let readers = [
        record(bob, Arc::clone(&bob_got), Some((KILL_AT, server.pid))),
        record(carol, Arc::clone(&carol_got), None),
    ];
    alice.expect("carol has joined the chat.").await;
    let (_alice_in, mut alice_out) = alice.into_parts();
    let sender = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let start = Instant::now();
        let mut sent = 0;
        while sent < MAX_LINES && start.elapsed() < Duration::from_secs(MAX_SECS) {
            let batch: String = (sent..sent + 50).map(|i| format!("line {i}\n")).collect();
            if alice_out.write_all(batch.as_bytes()).await.is_err() {
                break;
            }
            sent += 50;
        }
        sent
    });
    // bob's reader kills the server once the stream is well under way, while lines are
    // still being sent and fanned out.
    let mut child = server.child;
    let status = child.wait().await.unwrap();
    assert!(!status.success(), "killed: {status}");
    for r in readers {
        r.await.unwrap();
    }
    let sent = sender.await.unwrap();

    let server = Server::start(Options {
        args: &args,
        ..Options::default()
    })
    .await;
    let mut dave = Client::join(server.addr, "dave").await;
    dave.wait = Duration::from_secs(30);
    dave.command("/echo scrollback seen").await;
    let history = dave.command("/history 100000").await;
    let kept: Vec<&str> = history
        .iter()
        .filter_map(|l| l.split_once("] alice: ").map(|(_, t)| t))
        .collect();
    // What the store kept is alice's lines from the first, in order, each once.
    for (i, line) in kept.iter().enumerate() {
        assert_eq!(
            *line,
            format!("line {i}"),
            "history out of order or repeated"
        );
    }
    for (who, got) in [("bob", &bob_got), ("carol", &carol_got)] {
        let got = got.lock().unwrap();
        assert!(
            got.len() >= KILL_AT || who == "carol",
            "{who} got {}",
            got.len()
        );
        assert!(
            got.len() <= kept.len(),
            "{who} received {} lines; only {} were kept",
            got.len(),
            kept.len()
        );
        assert_eq!(
            &kept[..got.len()],
            &got[..],
            "{who}'s lines and the history"
        );
    }
    eprintln!(
        "kill -9 mid-stream: alice wrote {sent} lines, bob received {}, carol {}, the store \
         kept {} after the restart: every received line, in order, once",
        bob_got.lock().unwrap().len(),
        carol_got.lock().unwrap().len(),
        kept.len()
    );
    server.sigterm();
    let _ = server.child.wait_with_output().await;
}

#[tokio::test]
async fn a_second_server_on_a_data_directory_is_refused_and_a_bad_one_is_one_line() {
    let tmp = TempPath::new("x");
    let dir = tmp.with_name("data");
    let dir_arg = dir.to_str().unwrap();
    let first = Server::start(Options {
        args: &["--data-dir", dir_arg],
        ..Options::default()
    })
    .await;
    let second = StdCommand::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--data-dir", dir_arg])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "linechat: the data directory {dir_arg} is in use by another linechat (pid {})",
            first.pid
        )),
        "{stderr}"
    );
    first.sigterm();
    let _ = first.child.wait_with_output().await;

    // A path through a regular file can be neither created nor written, even by root.
    let file = tmp.with_name("plain-file");
    std::fs::write(&file, "x").unwrap();
    let bad = file.join("data");
    let out = StdCommand::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            bad.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("linechat:"))
        .collect();
    assert_eq!(
        errors,
        [format!(
            "linechat: cannot use the data directory {}: Not a directory (os error 20)",
            bad.display()
        )],
        "{stderr}"
    );
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_degrades_the_store_chat_goes_on_and_writing_resumes() {
    const TEST: &str = "store::a_full_disk_degrades_the_store_chat_goes_on_and_writing_resumes";
    let unshare = StdCommand::new("unshare").arg("--version").output().is_ok();
    if !is_root() || !unshare {
        return skip_outside_ci(
            TEST,
            "root and unshare",
            "run as root (util-linux has unshare)",
        );
    }
    let tmp = TempPath::new("x");
    let mount = tmp.with_name("disk");
    std::fs::create_dir_all(&mount).unwrap();
    let m = mount.to_str().unwrap();
    // A 512 KiB disk of its own, in a mount namespace only the server sees; a filler file
    // leaves it some 40 KiB. The test reaches the namespace through /proc/PID/root.
    let script = format!(
        "mount -t tmpfs -o size=512k linechat-test {m} && \
         head -c 483328 /dev/zero > {m}/filler && exec \"$0\" \"$@\""
    );
    let data = format!("{m}/data");
    let server = Server::start(Options {
        args: &[
            "--data-dir",
            &data,
            "--rate-limit",
            "0",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        wrap: &[
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ],
        ..Options::default()
    })
    .await;
    let metrics = wait_for(|| server.metrics_addr()).await;
    let (mut alice, mut bob) = server.alice_and_bob().await;
    assert_eq!(
        http_get(metrics, "/healthz").await,
        (200, "ok\n".to_owned())
    );
    // 400 lines of 200 bytes are twice what is left: the disk fills part way.
    let text = "y".repeat(190);
    for i in 0..400 {
        alice.send(&format!("{i:03} {text}")).await;
        bob.expect(&format!("alice: {i:03} {text}")).await;
    }
    let (status, body) = http_get(metrics, "/healthz").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("degraded"), "{body}");
    let report = http_get(metrics, "/metrics").await.1;
    let failed = prom(&report, "linechat_store_failed_records_total");
    assert!(failed > 0, "{report}");
    assert_eq!(prom(&report, "linechat_store_degraded"), 1);
    // Rate-limited: one error line for the whole burst.
    assert_eq!(server.logged("cannot write the store"), 1);

    // Room again: the next write succeeds, and the store says so.
    std::fs::remove_file(format!("/proc/{}/root{m}/filler", server.pid)).unwrap();
    let written = prom(&report, "linechat_store_written_records_total");
    for i in 400..410 {
        alice.send(&format!("{i:03} after")).await;
        bob.expect(&format!("alice: {i:03} after")).await;
    }
    let report = wait_for(|| {
        let report = futures_lite(http_get(metrics, "/metrics"));
        (prom(&report.1, "linechat_store_degraded") == 0).then_some(report.1)
    })
    .await;
    assert!(prom(&report, "linechat_store_written_records_total") >= written + 10);
    assert_eq!(
        http_get(metrics, "/healthz").await,
        (200, "ok\n".to_owned())
    );
    assert_eq!(server.logged("the store is writing again"), 1);
    eprintln!("full disk: {failed} records failed while the disk was full; bob got all 410");
    server.sigterm();
    let _ = server.child.wait_with_output().await;
}

fn prom(report: &str, name: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in {report}"))
}

/// Blocks on `fut` from synchronous code inside the multi-threaded test runtime.
fn futures_lite<F: std::future::Future>(fut: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(fut))
}

/// Polls `check` until it gives a value, for at most 10 s.
async fn wait_for<T>(mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "not within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
