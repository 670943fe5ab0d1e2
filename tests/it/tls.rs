//! TLS listeners (`line+tls://`, `ircs://`, `https://`): real TLS clients (rustls, `openssl s_client`,
//! `ncat --ssl`, Python's `ssl`) chat with plaintext users; the wrong kind of client on either
//! kind of port gets one clear answer; certificates reload under load without dropping anyone;
//! bad files are refused with the file named; the handshake deadline holds (paused time).
//! Certificates are made with `openssl` at test time ([`TestCert`]).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use linechat::net::listen::Scheme;
use linechat::net::tls::{Certs, Identity, LoadError};
use linechat::server::{Extras, Listener};
use linechat::Config;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::sync::oneshot;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, pki_types::ServerName, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::support::{required_tool, Client, IrcClient, KeyKind, TestCert, PROMPT, WAIT};

/// A server with a TLS and a plaintext listener for each protocol, and a metrics endpoint.
struct TlsServer {
    line_tls: SocketAddr,
    ircs: SocketAddr,
    line: SocketAddr,
    irc: SocketAddr,
    https: SocketAddr,
    metrics: SocketAddr,
    certs: Arc<Certs>,
    cert: TestCert,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsServer {
    async fn start(config: Config) -> TlsServer {
        let cert = TestCert::new("localhost", 30, KeyKind::EcPkcs8);
        let certs = Arc::new(Certs::load(&cert.chain, &cert.key).expect("the test certificate"));
        let bind = || linechat::server::bind("127.0.0.1:0".parse().unwrap());
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        for (scheme, tls) in [
            (Scheme::Line, true),
            (Scheme::Irc, true),
            (Scheme::Line, false),
            (Scheme::Irc, false),
            (Scheme::Http, true),
        ] {
            let socket = bind().await.unwrap();
            addrs.push(socket.local_addr().unwrap());
            listeners.push(Listener {
                scheme,
                tls,
                socket,
            });
        }
        let metrics = linechat::server::bind_metrics("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let metrics_addr = metrics.local_addr().unwrap();
        let extras = Extras {
            metrics: Some(metrics),
            tls: Some(certs.clone()),
            ..Extras::default()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(linechat::server::serve(listeners, extras, config, async {
            let _ = stopped.await;
        }));
        TlsServer {
            line_tls: addrs[0],
            ircs: addrs[1],
            line: addrs[2],
            irc: addrs[3],
            https: addrs[4],
            metrics: metrics_addr,
            certs,
            cert,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("server stopped in time")
            .unwrap();
    }

    async fn prometheus(&self) -> String {
        let (status, body) = crate::support::http_get(self.metrics, "/metrics").await;
        assert_eq!(status, 200);
        body
    }
}

/// Fails unless the Prometheus text `prom` has `line` as a whole line.
fn expect_metric(prom: &str, line: &str) {
    assert!(
        prom.lines().any(|l| l == line),
        "no line {line:?} in the metrics:\n{prom}"
    );
}

fn unthrottled() -> Config {
    Config {
        rate_limit: None,
        ..Config::default()
    }
}

/// A client configuration that trusts only the test CA in `ca`.
fn client_config(ca: &Path) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A line-protocol client over TLS, verifying the server as `localhost` against the test CA.
struct TlsClient {
    reader: BufReader<ReadHalf<TlsStream<TcpStream>>>,
    writer: WriteHalf<TlsStream<TcpStream>>,
    /// The server certificate (DER) it was shown.
    seen: Vec<u8>,
}

impl TlsClient {
    async fn connect(addr: SocketAddr, ca: &Path) -> TlsClient {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let tls = tokio::time::timeout(
            WAIT,
            TlsConnector::from(client_config(ca)).connect(name, tcp),
        )
        .await
        .expect("handshake in time")
        .expect("handshake");
        let seen = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        let (r, w) = tokio::io::split(tls);
        TlsClient {
            reader: BufReader::new(r),
            writer: w,
            seen,
        }
    }

    async fn join(addr: SocketAddr, ca: &Path, nick: &str) -> TlsClient {
        let mut c = TlsClient::connect(addr, ca).await;
        let mut prompt = vec![0u8; PROMPT.len()];
        tokio::time::timeout(WAIT, c.reader.read_exact(&mut prompt))
            .await
            .expect("prompt in time")
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&prompt), PROMPT);
        c.send(nick).await;
        c.expect(&format!("Welcome to the chat, {nick}!")).await;
        c
    }

    async fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        self.writer.flush().await.unwrap();
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        let n = tokio::time::timeout(WAIT, self.reader.read_line(&mut line))
            .await
            .expect("a line in time")
            .unwrap();
        assert!(n > 0, "connection closed");
        line.trim_end_matches(['\r', '\n']).to_owned()
    }

    async fn expect(&mut self, exact: &str) {
        let mut seen = Vec::new();
        loop {
            let line = self.line().await;
            if line == exact {
                return;
            }
            seen.push(line);
            assert!(seen.len() < 200, "no {exact:?} in {seen:#?}");
        }
    }
}

#[tokio::test]
async fn a_tls_client_chats_with_a_plaintext_one_and_metrics_say_how() {
    let server = TlsServer::start(unthrottled()).await;
    let mut bob = Client::join(server.line, "bob").await;
    let mut alice = TlsClient::join(server.line_tls, &server.cert.ca, "alice").await;
    assert_eq!(alice.seen, server.cert.der, "the certificate served");
    bob.expect("alice has joined the chat.").await;
    alice.send("hello over TLS").await;
    bob.expect("alice: hello over TLS").await;
    bob.send("hello in plain text").await;
    alice.expect("bob: hello in plain text").await;

    let report = bob.command("/metrics").await.join("\n");
    let alice_line = report
        .lines()
        .find(|l| l.starts_with(" - alice "))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        alice_line.ends_with(", line+tls, TLSv1.3 TLS13_AES_256_GCM_SHA384):")
            || alice_line.contains(", line+tls, TLSv1.3 TLS13_"),
        "{alice_line}"
    );
    assert!(
        report
            .lines()
            .any(|l| l.starts_with(" - bob ") && l.ends_with(", line):")),
        "{report}"
    );
    assert!(
        report.contains("TLS: certificate CN=localhost (expires ")
            && report.contains("1 handshake completed"),
        "{report}"
    );

    let prom = server.prometheus().await;
    let expiry = server.certs.current().not_after;
    expect_metric(
        &prom,
        &format!("linechat_tls_certificate_expiry_timestamp_seconds {expiry}"),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (expiry - now - 30 * 86_400).abs() < 3_600,
        "30 days: {expiry} vs {now}"
    );
    expect_metric(&prom, "linechat_tls_handshakes_total 1");
    crate::support::promtool_check(&prom).await;
    expect_metric(
        &prom,
        "linechat_tls_handshake_failures_total{reason=\"plaintext\"} 0",
    );
    server.stop().await;
}

/// An IRC client over `ircs://` registers and talks to a netcat user.
#[tokio::test]
async fn irc_over_tls_registers_and_chats() {
    let server = TlsServer::start(unthrottled()).await;
    let mut bob = Client::join(server.line, "bob").await;
    let mut irc = TlsClient::connect(server.ircs, &server.cert.ca).await;
    irc.send("NICK carol\r\nUSER carol 0 * :Carol\r\nJOIN #lobby")
        .await;
    let mut seen = Vec::new();
    loop {
        let line = irc.line().await;
        let done = line.contains(" 366 carol #lobby ");
        seen.push(line);
        if done {
            break;
        }
        assert!(seen.len() < 100, "{seen:#?}");
    }
    assert!(seen.iter().any(|l| l.contains(" 001 carol ")), "{seen:#?}");
    bob.expect("carol has joined the room.").await;
    irc.send("PRIVMSG #lobby :hi from ircs").await;
    bob.expect("carol: hi from ircs").await;
    server.stop().await;
}

/// Runs a command-line TLS client with `args` that joins as `nick`, and checks a plaintext user
/// sees it arrive and chat; returns what the client printed.
async fn drive(program: &str, args: &[&str], nick: &str, server: &TlsServer) -> String {
    let mut bob = Client::join(server.line, "bob").await;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{nick}\n").as_bytes())
        .await
        .unwrap();
    bob.expect(&format!("{nick} has joined the chat.")).await;
    stdin
        .write_all(format!("hello from {program}\n").as_bytes())
        .await
        .unwrap();
    bob.expect(&format!("{nick}: hello from {program}")).await;
    stdin.write_all(b"/quit\n").await.unwrap();
    bob.expect(&format!("{nick} has left the chat.")).await;
    // ncat waits for the end of its input as well as the connection's.
    drop(stdin);
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} exits after /quit"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains(&format!("Welcome to the chat, {nick}!")) && stdout.contains("Goodbye!"),
        "{program} printed: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn openssl_s_client_joins_verifying_the_chain() {
    let Some(openssl) = required_tool("openssl", "version", "openssl") else {
        return;
    };
    let server = TlsServer::start(unthrottled()).await;
    let connect = server.line_tls.to_string();
    let ca = server.cert.ca.to_str().unwrap();
    drive(
        openssl,
        &[
            "s_client",
            "-quiet",
            "-connect",
            &connect,
            "-CAfile",
            ca,
            "-verify_return_error",
            "-verify_hostname",
            "localhost",
        ],
        "sam",
        &server,
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn ncat_ssl_joins_verifying_the_certificate() {
    let Some(ncat) = required_tool("ncat", "--version", "ncat") else {
        return;
    };
    let server = TlsServer::start(unthrottled()).await;
    let port = server.line_tls.port().to_string();
    let ca = server.cert.ca.to_str().unwrap();
    drive(
        ncat,
        &[
            "--ssl",
            "--ssl-verify",
            "--ssl-trustfile",
            ca,
            "localhost",
            &port,
        ],
        "nina",
        &server,
    )
    .await;
    server.stop().await;
}

/// Python's `ssl`, verifying the chain and held to TLS 1.2, so the older version is proven
/// too; the plaintext user's `/metrics` shows it.
#[tokio::test]
async fn python_ssl_over_tls_1_2() {
    let Some(python) = required_tool("python3", "--version", "python3") else {
        return;
    };
    let server = TlsServer::start(unthrottled()).await;
    let script = format!(
        r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile={ca:?})
ctx.maximum_version = ssl.TLSVersion.TLSv1_2
with socket.create_connection(("127.0.0.1", {port})) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        f = s.makefile("rw", newline="\n")
        for line in sys.stdin:
            f.write(line)
            f.flush()
            if line.strip() == "/quit":
                break
        print(s.version(), s.cipher()[0])
        print(f.read())
"#,
        ca = server.cert.ca.to_str().unwrap(),
        port = server.line_tls.port()
    );
    let mut watcher = Client::join(server.line, "watcher").await;
    let out = drive(python, &["-c", &script], "pyro", &server).await;
    assert!(out.starts_with("TLSv1.2 ECDHE-ECDSA-"), "{out}");
    let report = watcher.command("/metrics").await.join("\n");
    assert!(report.contains("TLS: certificate CN=localhost"), "{report}");
    server.stop().await;
}

#[tokio::test]
async fn a_plaintext_client_on_a_tls_port_is_told_how_to_connect() {
    let server = TlsServer::start(unthrottled()).await;
    let mut nc = Client::connect(server.line_tls).await;
    nc.send("alice").await;
    let port = server.line_tls.port();
    assert_eq!(
        nc.expect_closed().await,
        [format!(
            "Error: this port speaks TLS; connect with TLS, e.g. openssl s_client -connect \
             127.0.0.1:{port} or ncat --ssl 127.0.0.1 {port}."
        )]
    );
    let mut irc = IrcClient::connect(server.ircs).await;
    irc.send("NICK alice").await;
    let port = server.ircs.port();
    assert_eq!(
        irc.expect_closed().await,
        [format!(
            "ERROR :Closing link: this port speaks TLS; connect with TLS, e.g. openssl \
             s_client -connect 127.0.0.1:{port} or ncat --ssl 127.0.0.1 {port}"
        )]
    );
    let prom = server.prometheus().await;
    expect_metric(
        &prom,
        "linechat_tls_handshake_failures_total{reason=\"plaintext\"} 2",
    );
    server.stop().await;
}

/// The first bytes a real TLS client (rustls) sends: its ClientHello, caught by a listener of
/// the test's own.
async fn client_hello(ca: &Path) -> Vec<u8> {
    let catcher = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = catcher.local_addr().unwrap();
    let config = client_config(ca);
    let client = tokio::spawn(async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let _ = TlsConnector::from(config).connect(name, tcp).await;
    });
    let (mut conn, _) = catcher.accept().await.unwrap();
    let mut hello = vec![0u8; 4096];
    let n = conn.read(&mut hello).await.unwrap();
    hello.truncate(n);
    drop(conn);
    let _ = client.await;
    hello
}

/// A ClientHello on a plaintext port is answered at once, whether or not its random bytes
/// happen to hold a line ending, and never waits for the registration deadline.
#[tokio::test]
async fn a_tls_client_on_a_plaintext_port_is_answered_at_once() {
    let server = TlsServer::start(Config {
        register_timeout: Duration::from_secs(3600),
        ..unthrottled()
    })
    .await;
    let mut hello = client_hello(&server.cert.ca).await;
    assert_eq!(&hello[..2], [0x16, 0x03]);
    // Without a line ending anywhere, as most ClientHellos are.
    hello.retain(|&b| b != b'\n');
    let mut line = Client::connect(server.line).await;
    line.expect_prompt().await;
    line.send_raw(&hello).await;
    assert_eq!(
        line.expect_closed().await,
        [
            "Error: this chat server speaks plain text, not TLS; connect with a line-based client \
          such as nc HOST PORT."
        ]
    );
    let mut irc = IrcClient::connect(server.irc).await;
    irc.send_raw(&hello).await;
    assert_eq!(
        irc.expect_closed().await,
        [
            "ERROR :Closing link: (127.0.0.1) [this port speaks plain IRC, not TLS; connect \
          without TLS, or to the ircs:// port]"
        ]
    );
    server.stop().await;
}

/// The per-address limit counts a connection from its accept, before any handshake: one that
/// opens the TCP connection and never shakes hands still holds its slot.
#[tokio::test]
async fn per_address_limits_apply_before_the_handshake() {
    let server = TlsServer::start(Config {
        max_per_ip: 1,
        ip_exempt: Vec::new(),
        ..unthrottled()
    })
    .await;
    let _silent = TcpStream::connect(server.line_tls).await.unwrap();
    let mut second = Client::connect(server.line_tls).await;
    assert_eq!(
        second.expect_closed().await,
        ["Error: too many connections from your address (1 open); close one and try again."]
    );
    server.stop().await;
}

/// A connection that never completes its handshake is closed at the deadline: a silent one
/// (a plaintext client waiting for a prompt) is told what the port speaks; a half-sent
/// handshake is just closed.
#[tokio::test(start_paused = true)]
async fn the_handshake_deadline_closes_silent_and_stalled_connections() {
    let server = TlsServer::start(unthrottled()).await;
    // Before the connections are accepted, so their deadlines are at least 10 s after it.
    let started = tokio::time::Instant::now();
    let mut silent = Client::connect(server.line_tls).await;
    silent.wait = Duration::from_secs(3600);
    let mut stalled = Client::connect(server.line_tls).await;
    stalled.wait = Duration::from_secs(3600);
    stalled.send_raw(&[0x16, 0x03, 0x01, 0x02, 0x00]).await;
    let told = silent.expect_closed().await;
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].starts_with("Error: this port speaks TLS;"),
        "{told:?}"
    );
    assert_eq!(stalled.expect_closed().await, Vec::<String>::new());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(12),
        "closed after {waited:?}"
    );
    let prom = server.prometheus().await;
    expect_metric(
        &prom,
        "linechat_tls_handshake_failures_total{reason=\"timeout\"} 2",
    );
    server.stop().await;
}

/// Replaces the files `cert` serves from with a new certificate's (the way certbot does: new
/// files renamed into place).
fn replace_files(old: &TestCert, new: &TestCert) {
    for (from, to) in [(&new.chain, &old.chain), (&new.key, &old.key)] {
        let staged = to.with_extension("new");
        std::fs::copy(from, &staged).unwrap();
        std::fs::rename(&staged, to).unwrap();
    }
}

/// Reload while 20 TLS clients chat: none is dropped, every message still reaches every one of
/// them in order, and connections made after the reload are shown the new certificate.
#[tokio::test]
async fn a_reload_under_load_drops_nobody_and_new_connections_get_the_new_certificate() {
    const CLIENTS: usize = 20;
    const MESSAGES: usize = 200;
    let server = TlsServer::start(unthrottled()).await;
    let ca = server.cert.ca.clone();
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(TlsClient::join(server.line_tls, &ca, &format!("u{i}")).await);
    }
    let mut sender = TlsClient::join(server.line_tls, &ca, "sender").await;
    // Each of the others sees everyone after it join; skip those notices.
    for (i, c) in clients.iter_mut().enumerate() {
        for j in i + 1..CLIENTS {
            c.expect(&format!("u{j} has joined the chat.")).await;
        }
        c.expect("sender has joined the chat.").await;
    }
    // The new certificate has a new CA too: clients that trust only the old one would fail.
    let renewed = TestCert::new("localhost", 60, KeyKind::RsaPkcs1);
    let reader_tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                for n in 0..MESSAGES {
                    c.expect(&format!("sender: message {n}")).await;
                }
                c
            })
        })
        .collect();
    for n in 0..MESSAGES {
        sender.send(&format!("message {n}")).await;
        if n == MESSAGES / 2 {
            replace_files(&server.cert, &renewed);
            server
                .certs
                .reload()
                .expect("the renewed certificate loads");
            let fresh = TlsClient::connect(server.line_tls, &renewed.ca).await;
            assert_eq!(
                fresh.seen, renewed.der,
                "a new connection gets the new certificate"
            );
        }
    }
    let mut clients = Vec::new();
    for task in reader_tasks {
        clients.push(
            task.await
                .expect("every client got every message, in order"),
        );
    }
    for c in &mut clients {
        // Still connected and still talking over the old session.
        c.send("/ping").await;
        let reply = c.line().await;
        assert!(reply.starts_with("pong"), "{reply:?}");
    }
    let prom = server.prometheus().await;
    expect_metric(
        &prom,
        "linechat_tls_certificate_reloads_total{result=\"ok\"} 1",
    );
    expect_metric(&prom, "linechat_disconnects_total{reason=\"error\"} 0");
    server.stop().await;
}

/// IRC `REHASH` from a server operator reloads the certificate, as SIGHUP does (it reloaded
/// only the configuration, so a renewed certificate waited for a signal).
#[tokio::test]
async fn rehash_reloads_the_certificate_too() {
    let server = TlsServer::start(Config {
        opers: vec![("op".to_owned(), "secret".to_owned())],
        ..unthrottled()
    })
    .await;
    let mut op = IrcClient::connect(server.irc).await;
    op.register("op", &[]).await;
    op.send("OPER op secret").await;
    op.expect_command("381").await;
    let renewed = TestCert::new("localhost", 60, KeyKind::EcPkcs8);
    replace_files(&server.cert, &renewed);
    op.send("REHASH").await;
    // No configuration file in this test: the NOTICE says so; the certificate reloads anyway.
    op.expect_command("NOTICE").await;
    let fresh = TlsClient::connect(server.line_tls, &renewed.ca).await;
    assert_eq!(fresh.seen, renewed.der, "REHASH reloaded the certificate");
    server.stop().await;
}

#[tokio::test]
async fn a_bad_file_at_reload_keeps_the_old_certificate() {
    let server = TlsServer::start(unthrottled()).await;
    std::fs::write(&server.cert.chain, "not a certificate\n").unwrap();
    let e = server.certs.reload().expect_err("garbage does not load");
    assert!(
        e.to_string().starts_with(&format!(
            "--tls-cert {}: no certificate",
            server.cert.chain.display()
        )),
        "{e}"
    );
    let after = TlsClient::join(server.line_tls, &server.cert.ca, "alice").await;
    assert_eq!(after.seen, server.cert.der, "still the old certificate");
    // A key that is not the certificate's is refused too.
    let other = TestCert::new("localhost", 30, KeyKind::EcPkcs8);
    std::fs::copy(&other.chain, &server.cert.chain).unwrap();
    assert!(matches!(
        server.certs.reload(),
        Err(LoadError::Mismatch { .. })
    ));
    let prom = server.prometheus().await;
    expect_metric(
        &prom,
        "linechat_tls_certificate_reloads_total{result=\"error\"} 2",
    );
    server.stop().await;
}

/// Each key format an operator may have loads; each way a file can be wrong is one sentence
/// naming the file.
#[test]
fn certificates_and_keys_load_or_say_what_is_wrong() {
    for kind in [
        KeyKind::EcPkcs8,
        KeyKind::EcSec1,
        KeyKind::RsaPkcs8,
        KeyKind::RsaPkcs1,
    ] {
        let cert = TestCert::new("chat.example", 30, kind);
        let marker = match kind {
            KeyKind::EcSec1 => "BEGIN EC PRIVATE KEY",
            KeyKind::RsaPkcs1 => "BEGIN RSA PRIVATE KEY",
            _ => "BEGIN PRIVATE KEY",
        };
        assert!(
            std::fs::read_to_string(&cert.key).unwrap().contains(marker),
            "{kind:?}"
        );
        let id = Identity::load(&cert.chain, &cert.key).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(id.subject, "CN=chat.example");
        assert_eq!(id.fingerprint.len(), 32 * 3 - 1);
    }
    let cert = TestCert::new("localhost", 30, KeyKind::EcPkcs8);
    let missing = cert.dir.0.join("missing.pem");
    let garbage = cert.dir.0.join("garbage.pem");
    std::fs::write(&garbage, "hello\n").unwrap();
    let err = |c: &Path, k: &Path| Identity::load(c, k).unwrap_err().to_string();
    assert_eq!(
        err(&missing, &cert.key),
        format!("--tls-cert {}: no such file", missing.display())
    );
    assert_eq!(
        err(&cert.chain, &missing),
        format!("--tls-key {}: no such file", missing.display())
    );
    assert!(err(&garbage, &cert.key).contains("no certificate in it"));
    assert!(
        err(&cert.chain, &garbage).starts_with(&format!(
            "--tls-key {}: no private key in it",
            garbage.display()
        )),
        "{}",
        err(&cert.chain, &garbage)
    );
    // The key given as the certificate, and the other way round.
    assert!(err(&cert.key, &cert.key).contains("no certificate in it"));
    assert!(err(&cert.chain, &cert.chain).contains("no private key in it"));
    let other = TestCert::new("localhost", 30, KeyKind::EcPkcs8);
    assert!(
        err(&cert.chain, &other.key).contains("is not the key of the certificate"),
        "{}",
        err(&cert.chain, &other.key)
    );
}

/// Reads from `tls` until `want` has arrived (or the connection ends), returning all of it.
async fn read_until(tls: &mut TlsStream<TcpStream>, want: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(want.len()).any(|w| w == want) {
        let n = tokio::time::timeout(WAIT, tls.read(&mut buf))
            .await
            .expect("data in time")
            .unwrap();
        assert!(
            n > 0,
            "closed before {:?} in {:?}",
            String::from_utf8_lossy(want),
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// `https://` is the web listener behind the same TLS step: the page over TLS, and a `wss://`
/// WebSocket that speaks the line protocol; a plaintext browser on it gets a 400 saying so.
#[tokio::test]
async fn https_serves_the_page_and_a_websocket_over_tls() {
    let server = TlsServer::start(unthrottled()).await;
    let connect = || async {
        let tcp = TcpStream::connect(server.https).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        TlsConnector::from(client_config(&server.cert.ca))
            .connect(name, tcp)
            .await
            .expect("handshake")
    };
    let mut page = connect().await;
    page.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let response = read_until(&mut page, b"</html>").await;
    assert!(
        response.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{}",
        String::from_utf8_lossy(&response)
    );

    let mut ws = connect().await;
    ws.write_all(
        b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let upgraded = read_until(&mut ws, b"\r\n\r\n").await;
    assert!(
        upgraded.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&upgraded)
    );
    // A masked text frame (the mask all zeros leaves the payload as it is).
    let mut frame = vec![0x81, 0x80 | 5, 0, 0, 0, 0];
    frame.extend_from_slice(b"alice");
    ws.write_all(&frame).await.unwrap();
    read_until(&mut ws, b"Welcome to the chat, alice!").await;
    let _bob = Client::join(server.line, "bob").await;
    read_until(&mut ws, b"bob has joined").await;

    let mut plain = TcpStream::connect(server.https).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, plain.read_to_string(&mut answer))
        .await
        .expect("answered and closed in time")
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(
        answer.contains("this port speaks TLS: open https://"),
        "{answer}"
    );
    server.stop().await;
}
