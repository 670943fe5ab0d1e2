//! The `linechat` binary itself: flags, the start-up log, errors a person can act on, and
//! SIGTERM.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::support::{proc_status_kib, Client, KeyKind, TempPath, TestCert, WAIT};

const BIN: &str = env!("CARGO_BIN_EXE_linechat");

/// Starts the binary on a free port and returns it with the address its log announced.
async fn start(extra: &[&str], env: &[(&str, &str)]) -> (Child, std::net::SocketAddr) {
    let (child, addr, _log) = start_logged(extra, env).await;
    (child, addr)
}

/// [`start`], also handing over every later line of the server's log.
pub(crate) async fn start_logged(
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Child, std::net::SocketAddr, mpsc::UnboundedReceiver<String>) {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start linechat");
    let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
    // Keep draining the log so the server never blocks on a full pipe, whether or not the
    // caller still listens.
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = log.next_line().await {
            let _ = tx.send(line);
        }
    });
    let mut early = Vec::new();
    let addr = tokio::time::timeout(WAIT, async {
        while let Some(line) = rx.recv().await {
            if let Some(addr) = crate::support::listening_addr(&line) {
                return addr;
            }
            early.push(line);
        }
        panic!("linechat exited without listening")
    })
    .await
    .expect("listening in time");
    // Lines logged before the chat port's are handed over too, ahead of the rest.
    let (replay, log) = mpsc::unbounded_channel();
    for line in early {
        let _ = replay.send(line);
    }
    tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            if replay.send(line).is_err() {
                // Nobody listens any more; keep draining.
                while rx.recv().await.is_some() {}
                return;
            }
        }
    });
    (child, addr, log)
}

/// Waits for a log line containing `needle`.
pub(crate) async fn expect_log(log: &mut mpsc::UnboundedReceiver<String>, needle: &str) -> String {
    tokio::time::timeout(WAIT, async {
        while let Some(line) = log.recv().await {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("the log ended without {needle:?}")
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} in the log in time"))
}

pub(crate) fn signal(child: &Child, signal: libc::c_int) {
    let pid = child.id().expect("running") as libc::pid_t;
    // SAFETY: signalling the child we started, by its PID.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

/// SIGTERM, and the server exits 0 in time.
pub(crate) async fn terminate(child: &mut Child) {
    signal(child, libc::SIGTERM);
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exited in time")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn sighup_reopens_the_transcript_for_log_rotation() {
    let path = TempPath::new("chat.jsonl");
    let rotated = path.with_name("chat.jsonl.1");
    let (mut child, addr, mut log) =
        start_logged(&["--transcript", path.0.to_str().unwrap()], &[]).await;
    let mut alice = Client::join(addr, "alice").await;
    alice.send("before rotation").await;
    alice.sync().await;

    // What logrotate does: move the file away, then SIGHUP.
    std::fs::rename(&path.0, &rotated).unwrap();
    signal(&child, libc::SIGHUP);
    expect_log(&mut log, "transcript reopened").await;
    alice.send("after rotation").await;
    alice.sync().await;

    terminate(&mut child).await;

    let old = std::fs::read_to_string(&rotated).unwrap();
    let new = std::fs::read_to_string(&path.0).expect("a new file under the old name");
    assert!(new.contains(r#""text":"after rotation""#), "{new}");
    assert!(!old.contains("after rotation"), "{old}");
    // Written before or after the reopen, but exactly once.
    assert_eq!(
        (old.clone() + &new)
            .matches(r#""text":"before rotation""#)
            .count(),
        1,
        "{old}\n---\n{new}"
    );
    assert!(
        new.contains(r#""kind":"leave","text":"server shutting down""#),
        "{new}"
    );
}

/// SIGHUP's default disposition ends a process: without a transcript to reopen the server must
/// still catch it, say so, and keep serving (issue 10, item 6).
#[tokio::test]
async fn sighup_without_a_transcript_is_logged_and_harmless() {
    let (mut child, addr, mut log) = start_logged(&[], &[]).await;
    let mut alice = Client::join(addr, "alice").await;
    for _ in 0..3 {
        signal(&child, libc::SIGHUP);
        expect_log(&mut log, "SIGHUP received: nothing to reopen").await;
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP ended the server"
    );
    let mut bob = Client::join(addr, "bob").await;
    alice.expect("bob has joined the chat.").await;
    bob.send("still up").await;
    alice.expect("bob: still up").await;

    terminate(&mut child).await;
}

#[tokio::test]
async fn the_metrics_endpoint_serves_from_the_binary() {
    let (mut child, addr, mut log) = start_logged(&["--metrics-addr", "127.0.0.1:0"], &[]).await;
    // The chat port is announced first; the endpoint's own line follows.
    let line = expect_log(&mut log, "serving metrics addr=").await;
    let metrics: std::net::SocketAddr = line[line.find("addr=").unwrap() + 5..]
        .trim()
        .parse()
        .unwrap();
    let _alice = Client::join(addr, "alice").await;
    let (status, body) = crate::support::http_get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("\nlinechat_clients 1\n"), "{body}");
    let (status, _) = crate::support::http_get(metrics, "/healthz").await;
    assert_eq!(status, 200);
    child.kill().await.unwrap();
}

/// Runs the binary expecting it to refuse to start with exit code 1; returns the last line of
/// its stderr (what the person sees) and the whole of it.
pub async fn refused_start(args: &[&str]) -> (String, String) {
    let out = tokio::time::timeout(WAIT, Command::new(BIN).args(args).output())
        .await
        .expect("exited in time")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    (stderr.lines().last().unwrap_or_default().to_owned(), stderr)
}

#[tokio::test]
async fn a_metrics_port_in_use_gives_one_clear_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap();
    let (last, stderr) =
        refused_start(&["--listen", "127.0.0.1:0", "--metrics-addr", &at.to_string()]).await;
    assert_eq!(
        last,
        format!(
            "linechat: cannot serve metrics on {at}: port {} is already in use. Pick another \
             address with --metrics-addr HOST:PORT.",
            at.port()
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn sigterm_tells_clients_and_exits_zero() {
    let (mut child, addr) = start(&[], &[]).await;
    let mut alice = Client::join(addr, "alice").await;
    let pid = child.id().expect("running") as libc::pid_t;
    // SAFETY: signalling the child we started, by its PID.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert_eq!(alice.expect_closed().await, ["Server is shutting down."]);
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exited in time")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn a_port_in_use_gives_one_clear_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (last, stderr) =
        refused_start(&["--listen", "127.0.0.1:4000", "--port", &port.to_string()]).await;
    assert!(
        last.starts_with(&format!(
            "linechat: cannot listen on 127.0.0.1:{port}: port {port} is already in use"
        )),
        "{stderr}"
    );
    assert!(last.contains("--port"), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Os {"),
        "{stderr}"
    );
}

#[tokio::test]
async fn flags_come_from_the_environment_too() {
    let (mut child, addr) = start(&[], &[("LINECHAT_MAX_LINE", "16")]).await;
    let mut c = Client::join(addr, "alice").await;
    c.send("0123456789abcdefg").await;
    c.expect("Error: line too long (max 16 bytes); it was not sent.")
        .await;
    child.kill().await.unwrap();
}

#[test]
fn help_explains_every_option_and_its_default() {
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--port",
        "--max-line",
        "--idle-timeout",
        "--register-timeout",
        "--max-clients",
        "--queue-bytes",
        "--rate-limit",
        "--rate-burst",
        "--shutdown-grace",
        "--history",
        "--history-retain",
        "--announce-limit",
        "--threads",
        "--keepalive",
        "--write-timeout",
        "--metrics-addr",
        "--transcript",
        "--log-format",
        "--server-name",
    ] {
        let env = format!(
            "[env: LINECHAT_{}=",
            flag[2..].to_ascii_uppercase().replace('-', "_")
        );
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
        assert!(help.contains(&env), "{env} missing from --help:\n{help}");
    }
    assert!(
        help.contains("line://[::]:4000"),
        "the default listeners:\n{help}"
    );
    for default in ["[default: 1024]", "[default: 600]", "[default: 10000]"] {
        assert!(
            help.contains(default),
            "{default} missing from --help:\n{help}"
        );
    }
}

/// The server's memory is bounded by its queues, not by what a stalled client is owed: a flood
/// of 10 MB towards a client that never reads must not show up in the server's peak RSS.
#[tokio::test]
async fn memory_stays_bounded_while_a_client_never_reads() {
    if !cfg!(target_os = "linux") {
        eprintln!("skipped: needs /proc");
        return;
    }
    let (child, addr) = start(&["--rate-limit", "0", "--queue-bytes", "262144"], &[]).await;
    let pid = child.id().unwrap();
    let mut reader = Client::join(addr, "reader").await;
    let mut sleeper = Client::connect_small_buffer(addr).await;
    sleeper.register("sleeper").await;
    let mut flooder = Client::join(addr, "flooder").await;
    reader.skip_until("flooder has joined the chat.").await;
    let before = proc_status_kib(pid, "VmHWM");

    const LINES: usize = 50_000;
    let payload = "p".repeat(200);
    let reading = tokio::spawn(async move {
        reader
            .skip_until(&format!("flooder: {} {payload}", LINES - 1))
            .await;
        reader
    });
    let payload = "p".repeat(200);
    let mut batch = String::new();
    for i in 0..LINES {
        batch.push_str(&format!("{i} {payload}\n"));
        if batch.len() > 64 * 1024 {
            flooder.send_raw(batch.as_bytes()).await;
            batch.clear();
        }
    }
    flooder.send_raw(batch.as_bytes()).await;
    let mut reader = tokio::time::timeout(std::time::Duration::from_secs(120), reading)
        .await
        .expect("the reader got every line")
        .unwrap();
    let growth = proc_status_kib(pid, "VmHWM").saturating_sub(before);
    eprintln!(
        "flood of {} KiB towards a stalled client: server peak RSS grew {growth} KiB",
        LINES * 207 / 1024
    );
    assert!(
        growth < 6 * 1024,
        "peak RSS grew {growth} KiB: the stalled client's backlog was kept"
    );
    let metrics = reader.command("/metrics").await.join("\n");
    assert!(
        metrics.contains("Disconnects: 1 slow consumers"),
        "{metrics}"
    );
}

/// An idle joined client costs the server a few KiB (the benchmark's target is under 8 KiB).
#[tokio::test]
async fn idle_connections_are_cheap() {
    if !cfg!(target_os = "linux") {
        eprintln!("skipped: needs /proc");
        return;
    }
    let (child, addr) = start(&[], &[]).await;
    let pid = child.id().unwrap();
    let mut first = Client::join(addr, "first").await;
    let before = proc_status_kib(pid, "VmRSS");
    const CLIENTS: usize = 500;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(Client::join(addr, &format!("idle{i}")).await);
    }
    // Let every session settle into its idle wait.
    first.sync().await;
    for c in &mut clients[..10] {
        c.sync().await;
    }
    let per_client = (proc_status_kib(pid, "VmRSS") - before) * 1024 / CLIENTS as u64;
    eprintln!("server RSS per idle joined client: {per_client} B");
    assert!(per_client < 8 * 1024, "{per_client} B per idle client");
}

/// A certificate or key that cannot be used stops the start with one line naming the file and
/// why, and exit code 1; so does a TLS listener without a certificate.
#[tokio::test]
async fn a_bad_certificate_at_start_is_one_line_naming_the_file() {
    let cert = TestCert::new("localhost", 30, KeyKind::EcPkcs8);
    let (chain, key) = (cert.chain.to_str().unwrap(), cert.key.to_str().unwrap());
    let missing = cert.dir.0.join("nope.pem");
    let missing = missing.to_str().unwrap();
    let tls = ["--listen", "line+tls://127.0.0.1:0"];
    let (last, stderr) =
        refused_start(&[&tls[..], &["--tls-cert", missing, "--tls-key", key]].concat()).await;
    assert_eq!(
        last,
        format!("linechat: --tls-cert {missing}: no such file"),
        "{stderr}"
    );
    let (last, stderr) =
        refused_start(&[&tls[..], &["--tls-cert", key, "--tls-key", key]].concat()).await;
    assert!(
        last.starts_with(&format!("linechat: --tls-cert {key}: no certificate in it")),
        "{stderr}"
    );
    let (last, stderr) =
        refused_start(&[&tls[..], &["--tls-cert", chain, "--tls-key", chain]].concat()).await;
    assert!(
        last.starts_with(&format!(
            "linechat: --tls-key {chain}: no private key in it"
        )),
        "{stderr}"
    );
    let (last, stderr) = refused_start(&["--listen", "ircs://127.0.0.1:0"]).await;
    assert_eq!(
        last,
        "linechat: --listen ircs://127.0.0.1:0: a TLS listener needs --tls-cert PEM and \
         --tls-key PEM",
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// SIGHUP reloads the certificate: connections made after it are shown the new one, the one
/// open across it keeps chatting; a bad file at the next SIGHUP is logged and the certificate
/// in use stays.
#[tokio::test]
async fn sighup_reloads_the_certificate_and_keeps_it_when_the_new_file_is_bad() {
    let cert = TestCert::new("localhost", 30, KeyKind::EcPkcs8);
    let (chain, key) = (cert.chain.to_str().unwrap(), cert.key.to_str().unwrap());
    let (mut child, addr, mut log) = start_logged(
        &[
            "--listen",
            "line+tls://127.0.0.1:0",
            "--tls-cert",
            chain,
            "--tls-key",
            key,
        ],
        &[],
    )
    .await;
    let loaded = expect_log(&mut log, "loaded: TLS certificate").await;
    assert!(
        loaded.contains("subject=CN=localhost")
            && (loaded.contains("days_left=29") || loaded.contains("days_left=30")),
        "{loaded}"
    );
    let line = expect_log(&mut log, "protocol=\"line+tls\"").await;
    let tls_addr = crate::support::listening_addr(&line).unwrap();
    let mut alice = Client::join(addr, "alice").await;
    assert!(served(tls_addr).await.contains("subject=CN = localhost"));

    // Renewed, expiring soon: the warning is logged.
    let renewed = TestCert::new("renewed.localhost", 7, KeyKind::RsaPkcs8);
    std::fs::copy(&renewed.chain, &cert.chain).unwrap();
    std::fs::copy(&renewed.key, &cert.key).unwrap();
    signal(&child, libc::SIGHUP);
    let warned = expect_log(
        &mut log,
        "reloaded: the TLS certificate expires within 14 days",
    )
    .await;
    assert!(warned.contains("subject=CN=renewed.localhost"), "{warned}");
    assert!(served(tls_addr)
        .await
        .contains("subject=CN = renewed.localhost"));

    std::fs::write(&cert.key, "-----BEGIN PRIVATE KEY-----\nbroken\n").unwrap();
    signal(&child, libc::SIGHUP);
    let kept = expect_log(&mut log, "cannot reload the TLS certificate").await;
    assert!(
        kept.contains(&format!("--tls-key {key}")) && kept.contains("subject=CN=renewed.localhost"),
        "{kept}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "a bad reload ended the server"
    );
    assert!(served(tls_addr)
        .await
        .contains("subject=CN = renewed.localhost"));
    alice.send("/ping").await;
    assert!(alice.line().await.starts_with("pong"));
    terminate(&mut child).await;
}

/// What `openssl s_client` is shown by `addr`: its output, with the certificate's subject.
async fn served(addr: std::net::SocketAddr) -> String {
    let out = tokio::time::timeout(
        WAIT,
        Command::new("openssl")
            .args(["s_client", "-connect", &addr.to_string()])
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("s_client in time")
    .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
