//! The web listener: its files, and the line protocol and IRC over WebSocket, driven by a
//! small WebSocket client written here from RFC 6455 (the browser tests in tests/browser
//! drive real Chromium).

use std::net::SocketAddr;
use std::time::Duration;

use linechat::net::listen::Scheme;
use linechat::proto::web::frame;
use linechat::server::Extras;
use linechat::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::support::{serve_schemes, Client, WAIT};

/// A server with a netcat and a web listener.
pub struct WebServer {
    pub line: SocketAddr,
    pub web: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl WebServer {
    pub async fn start(config: Config) -> WebServer {
        Self::start_with(config, Extras::default()).await
    }

    pub async fn start_with(config: Config, extras: Extras) -> WebServer {
        let (addrs, stop, task) =
            serve_schemes(&[Scheme::Line, Scheme::Http], extras, config).await;
        WebServer {
            line: addrs[0],
            web: addrs[1],
            stop: Some(stop),
            task,
        }
    }

    async fn netcat(&self, nick: &str) -> Client {
        Client::join(self.line, nick).await
    }
}

/// A message from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Msg {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>),
}

pub struct WsClient {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The response head of the handshake.
    pub head: String,
    pub wait: Duration,
    /// Answer pings (and skip them) as a browser does.
    pub auto_pong: bool,
}

/// Sends a raw request and reads the response head (and leaves the body in `buf`).
async fn request(addr: SocketAddr, head: &str) -> (TcpStream, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buf[..end].to_vec()).unwrap();
            let rest = buf[end + 4..].to_vec();
            return (stream, head, rest);
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("response")
            .unwrap();
        assert!(
            n > 0,
            "closed before the response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn upgrade(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

impl WsClient {
    /// Opens `/ws`; `extra` holds more header lines (each ending in `\r\n`).
    pub async fn open(addr: SocketAddr, extra: &str) -> WsClient {
        let (stream, head, buf) = request(addr, &upgrade("/ws", extra)).await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert!(
            head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "{head}"
        );
        WsClient {
            stream,
            buf,
            head,
            wait: WAIT,
            auto_pong: true,
        }
    }

    pub async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let mut out = Vec::new();
        frame::put_frame(&mut out, opcode, Some([0x12, 0x34, 0x56, 0x78]), payload);
        if !fin {
            out[0] &= 0x7F;
        }
        self.stream.write_all(&out).await.unwrap();
    }

    pub async fn send(&mut self, text: &str) {
        self.send_frame(true, frame::TEXT, text.as_bytes()).await;
    }

    /// The next message, or `None` when the server closed the connection.
    pub async fn next(&mut self) -> Option<Msg> {
        loop {
            if let Some((header, at)) = frame::parse_header(&self.buf).unwrap() {
                assert!(header.mask.is_none(), "server frames are not masked");
                assert!(header.fin, "the server sends whole messages");
                let end = at + header.len as usize;
                if self.buf.len() >= end {
                    let payload: Vec<u8> = self.buf.drain(..end).skip(at).collect();
                    let msg = match header.opcode {
                        frame::TEXT => {
                            Msg::Text(String::from_utf8(payload).expect("text is UTF-8"))
                        }
                        frame::BINARY => Msg::Binary(payload),
                        frame::PING => Msg::Ping(payload),
                        frame::PONG => Msg::Pong(payload),
                        frame::CLOSE => {
                            Msg::Close(payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])))
                        }
                        other => panic!("unexpected opcode {other}"),
                    };
                    if let (true, Msg::Ping(p)) = (self.auto_pong, &msg) {
                        let p = p.clone();
                        self.send_frame(true, frame::PONG, &p).await;
                        continue;
                    }
                    return Some(msg);
                }
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout(self.wait, self.stream.read(&mut chunk))
                .await
                .expect("a message in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next text message.
    pub async fn text(&mut self) -> String {
        match self.next().await {
            Some(Msg::Text(t)) => t,
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// Reads text messages until one equals `want`.
    pub async fn expect(&mut self, want: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let t = self.text().await;
            if t == want {
                return seen;
            }
            seen.push(t);
        }
    }

    /// Reads text messages until one contains `part`; returns it.
    pub async fn until(&mut self, part: &str) -> String {
        loop {
            let t = self.text().await;
            if t.contains(part) {
                return t;
            }
        }
    }
}

/// A web user on the line protocol, past the prompt.
async fn web_line(server: &WebServer, nick: &str) -> WsClient {
    let mut ws = WsClient::open(server.web, "").await;
    assert_eq!(ws.text().await, "Please enter your nickname: ");
    ws.send(nick).await;
    ws.expect(&format!("Welcome to the chat, {nick}!")).await;
    ws.until("You are in lobby").await;
    ws
}

/// A web user on IRC (`text.ircv3.net`), registered.
async fn web_irc(server: &WebServer, nick: &str) -> WsClient {
    let mut ws = WsClient::open(server.web, "Sec-WebSocket-Protocol: text.ircv3.net\r\n").await;
    ws.send(&format!("NICK {nick}")).await;
    ws.send(&format!("USER {nick} 0 * :{nick}")).await;
    ws.until(&format!(" 001 {nick} ")).await;
    ws
}

#[tokio::test]
async fn the_page_and_its_files_are_served_on_one_connection() {
    let server = WebServer::start(Config::default()).await;
    let mut stream = TcpStream::connect(server.web).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /app.js HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut all))
        .await
        .unwrap()
        .unwrap();
    let all = String::from_utf8(all).unwrap();
    let responses: Vec<&str> = all.matches("HTTP/1.1 ").collect();
    assert_eq!(responses.len(), 3, "{all}");
    assert!(
        all.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/html"),
        "{all}"
    );
    assert!(all.contains("Content-Security-Policy: default-src 'none'"));
    assert!(all.contains("Content-Type: text/javascript"));
    assert!(all.contains("HTTP/1.1 404 Not Found"), "{all}");
    assert!(all.contains("/nope not found; the web client is at /."));
}

#[tokio::test]
async fn wrong_requests_are_told_why() {
    let server = WebServer::start(Config {
        web_origins: vec!["http://good.example".into()],
        ..Config::default()
    })
    .await;
    let cases = [
        (
            "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_owned(),
            "405",
            "POST is not served here",
        ),
        (
            "GET /ws HTTP/1.1\r\n\r\n".to_owned(),
            "426",
            "/ws takes WebSocket connections",
        ),
        (
            upgrade("/ws", "Origin: http://evil.example\r\n"),
            "403",
            "pages from http://evil.example may not connect here (--web-origins)",
        ),
        (
            upgrade("/ws", "").replace("Version: 13", "Version: 8"),
            "426",
            "only WebSocket version 13",
        ),
        (
            "\x16\x03\x01\x00\x05hello".to_owned(),
            "400",
            "This port speaks plain HTTP, not TLS",
        ),
        (
            format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000)),
            "431",
            "request head over 8192 bytes",
        ),
        // A body would be read as the next request: behind a proxy that reuses connections,
        // a request smuggled in it would be answered to someone else.
        (
            format!(
                "GET / HTTP/1.1\r\nContent-Length: 60\r\n\r\n{}",
                upgrade("/ws", "")
            ),
            "400",
            "a GET takes no request body",
        ),
        (
            "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_owned(),
            "400",
            "a GET takes no request body",
        ),
    ];
    for (req, status, text) in cases {
        let (mut stream, head, mut body) = request(server.web, &req).await;
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{req:?}: {head}"
        );
        // RFC 6455 4.4 and RFC 7231 6.5.15: a 426 says what to upgrade to.
        if req.contains("Version: 8") {
            assert!(head.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{head}");
        } else if status == "426" {
            assert!(head.contains("\r\nUpgrade: websocket\r\n"), "{head}");
        }
        let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut body))
            .await
            .unwrap();
        let body = String::from_utf8(body).unwrap();
        assert!(body.contains(text), "{req:?}: {body}");
    }
    // The allowed origin, and a client that names none (not a browser), get in.
    WsClient::open(server.web, "Origin: http://good.example\r\n").await;
    WsClient::open(server.web, "").await;
}

#[tokio::test]
async fn a_web_user_and_a_netcat_user_chat_over_the_line_protocol() {
    let server = WebServer::start(Config::default()).await;
    let mut bob = server.netcat("bob").await;
    let mut alice = web_line(&server, "alice").await;
    bob.expect("alice has joined the chat.").await;
    alice.send("hi bob").await;
    bob.expect("alice: hi bob").await;
    bob.send("hello alice").await;
    alice.expect("bob: hello alice").await;
    // Known to the hub as a web user.
    alice.send("/metrics").await;
    let block = alice.until(" - alice (").await;
    assert!(block.contains(", web):"), "{block}");
    // A close frame: answered with one, and alice has left.
    alice
        .send_frame(true, frame::CLOSE, &1000u16.to_be_bytes())
        .await;
    loop {
        match alice.next().await {
            Some(Msg::Close(code)) => {
                assert_eq!(code, Some(1000));
                break;
            }
            Some(_) => continue,
            None => panic!("closed without a close frame"),
        }
    }
    assert_eq!(alice.next().await, None);
    bob.expect("alice has left the chat (connection closed).")
        .await;
}

#[tokio::test]
async fn irc_over_websocket_one_line_per_message() {
    let server = WebServer::start(Config::default()).await;
    let mut bob = server.netcat("bob").await;
    let mut ws = WsClient::open(
        server.web,
        "Sec-WebSocket-Protocol: x.example, text.ircv3.net, binary.ircv3.net\r\n",
    )
    .await;
    assert!(
        ws.head.contains("Sec-WebSocket-Protocol: text.ircv3.net"),
        "{}",
        ws.head
    );
    ws.send("NICK carol").await;
    ws.send("USER carol 0 * :Carol").await;
    let welcome = ws.text().await;
    assert!(welcome.contains(" 001 carol "), "{welcome}");
    assert!(
        !welcome.ends_with('\n') && !welcome.contains('\r'),
        "{welcome:?}"
    );
    ws.send("JOIN #lobby").await;
    ws.until(" 366 carol #lobby ").await;
    bob.expect("carol has joined the room.").await;
    ws.send("PRIVMSG #lobby :hi from irc over ws").await;
    bob.expect("carol: hi from irc over ws").await;
    bob.send("hi carol").await;
    let got = ws.until("PRIVMSG #lobby").await;
    assert!(got.ends_with("PRIVMSG #lobby :hi carol"), "{got}");
    ws.send("WHOIS carol").await;
    let over = ws.until(" 320 ").await;
    assert!(over.ends_with("is connected over web"), "{over}");
}

#[tokio::test]
async fn binary_ircv3_travels_in_binary_messages() {
    let server = WebServer::start(Config::default()).await;
    // The client's order decides.
    let mut ws = WsClient::open(
        server.web,
        "Sec-WebSocket-Protocol: binary.ircv3.net, text.ircv3.net\r\n",
    )
    .await;
    assert!(ws.head.contains("Sec-WebSocket-Protocol: binary.ircv3.net"));
    ws.send_frame(true, frame::BINARY, b"NICK dave").await;
    ws.send_frame(true, frame::BINARY, b"USER dave 0 * :Dave")
        .await;
    match ws.next().await {
        Some(Msg::Binary(b)) => {
            assert!(String::from_utf8_lossy(&b).contains(" 001 dave "), "{b:?}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_message_over_the_line_limit_is_refused_and_the_connection_goes_on() {
    let server = WebServer::start(Config {
        max_line: 100,
        ..Config::default()
    })
    .await;
    let mut bob = server.netcat("bob").await;
    let mut alice = web_line(&server, "alice").await;
    bob.expect("alice has joined the chat.").await;
    alice.send(&"x".repeat(5000)).await;
    let refusal = alice.until("too long").await;
    assert!(refusal.starts_with("Error: "), "{refusal}");
    alice.send("short one").await;
    bob.expect("alice: short one").await;

    // IRC over WebSocket: 417, as on the IRC port.
    let mut ws = web_irc(&server, "erin").await;
    ws.send(&format!("PRIVMSG #lobby :{}", "y".repeat(9000)))
        .await;
    ws.until(" 417 erin ").await;
}

#[tokio::test]
async fn fragments_and_control_frames_between_them() {
    let server = WebServer::start(Config::default()).await;
    let mut bob = server.netcat("bob").await;
    let mut alice = web_line(&server, "alice").await;
    bob.expect("alice has joined the chat.").await;
    alice.send_frame(false, frame::TEXT, b"frag").await;
    alice.send_frame(true, frame::PING, b"are you there").await;
    alice.send_frame(false, frame::CONTINUATION, b"men").await;
    alice.send_frame(true, frame::CONTINUATION, b"ted").await;
    alice.auto_pong = false;
    assert_eq!(
        alice.next().await,
        Some(Msg::Pong(b"are you there".to_vec()))
    );
    bob.expect("alice: fragmented").await;
    // A zero-length message is an empty line, which is ignored.
    alice.send("").await;
    alice.send("after").await;
    bob.expect("alice: after").await;
}

/// A message cut short, by the end of the connection or by a close frame, is not said: what
/// had arrived of it is dropped with it, and the user leaves as having closed.
#[tokio::test]
async fn a_message_cut_short_is_not_said() {
    let server = WebServer::start(Config::default()).await;
    let mut bob = server.netcat("bob").await;

    // A frame that announces 100 bytes; 10 come, then the connection's end.
    let mut alice = web_line(&server, "alice").await;
    bob.expect("alice has joined the chat.").await;
    let mask = [1, 2, 3, 4];
    let mut raw = Vec::new();
    frame::put_header(&mut raw, frame::TEXT, Some(mask), 100);
    let start = raw.len();
    raw.extend_from_slice(b"cut short ");
    frame::apply_mask(mask, 0, &mut raw[start..]);
    alice.stream.write_all(&raw).await.unwrap();
    alice.stream.shutdown().await.unwrap();
    assert_eq!(
        bob.skip_until("alice has left the chat (connection closed).")
            .await,
        Vec::<String>::new()
    );

    // The first fragment of a message, then a close frame.
    let mut carol = web_line(&server, "carol").await;
    bob.expect("carol has joined the chat.").await;
    carol
        .send_frame(false, frame::TEXT, b"I think we should fi")
        .await;
    carol
        .send_frame(true, frame::CLOSE, &frame::CLOSE_NORMAL.to_be_bytes())
        .await;
    assert_eq!(
        bob.skip_until("carol has left the chat (connection closed).")
            .await,
        Vec::<String>::new()
    );
}

/// A close frame is echoed only when it is one a peer may send (RFC 6455 5.5.1, 7.4): a
/// one-byte payload, a reserved code or a reason that is not UTF-8 is a protocol error.
#[tokio::test]
async fn a_bad_close_frame_is_a_protocol_error_and_a_good_one_is_echoed() {
    let server = WebServer::start(Config::default()).await;
    let reserved = 1005u16.to_be_bytes();
    let mut bad_reason = 1000u16.to_be_bytes().to_vec();
    bad_reason.extend_from_slice(b"\xff\xfe");
    let cases: [(&[u8], u16); 5] = [
        (&[0x03], frame::CLOSE_PROTOCOL),
        (&reserved, frame::CLOSE_PROTOCOL),
        (&bad_reason, frame::CLOSE_PROTOCOL),
        (&1000u16.to_be_bytes(), 1000),
        (&4000u16.to_be_bytes(), 4000),
    ];
    for (i, (payload, answer)) in cases.into_iter().enumerate() {
        let mut ws = web_line(&server, &format!("closer{i}")).await;
        ws.send_frame(true, frame::CLOSE, payload).await;
        let mut closed_with = None;
        while let Some(msg) = ws.next().await {
            if let Msg::Close(code) = msg {
                closed_with = code;
            }
        }
        assert_eq!(closed_with, Some(answer), "{payload:?}");
    }
}

/// A client that pings and never reads gets one pong owed, not one queued per ping: 200 000
/// pings (26 MB) into a 4 KiB receive buffer left the server holding some 20 MB of pongs
/// for it before. What it reads afterwards is what the socket buffers held, then the
/// answer to the latest ping.
#[tokio::test]
async fn a_ping_flood_from_a_client_that_never_reads_owes_one_pong() {
    let server = WebServer::start(Config::default()).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(server.web).await.unwrap();
    stream
        .write_all(upgrade("/ws", "").as_bytes())
        .await
        .unwrap();
    const PINGS: usize = 200_000;
    let mut pings = Vec::new();
    for i in 0..PINGS {
        frame::put_frame(
            &mut pings,
            frame::PING,
            Some([9, 8, 7, 6]),
            format!("{i:0>125}").as_bytes(),
        );
    }
    tokio::time::timeout(WAIT, stream.write_all(&pings))
        .await
        .expect("the server reads pings while we do not read")
        .unwrap();
    let mut got = Vec::new();
    loop {
        let mut chunk = [0u8; 65536];
        match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let (mut pos, mut pongs, mut last) = (head_end, 0, Vec::new());
    // Skip the prompt; count the pongs.
    while let Some((header, at)) = frame::parse_header(&got[pos..]).unwrap() {
        let end = pos + at + header.len as usize;
        if end > got.len() {
            break;
        }
        if header.opcode == frame::PONG {
            pongs += 1;
            last = got[pos + at..end].to_vec();
        }
        pos = end;
    }
    assert!(
        pongs > 0 && pongs < PINGS / 4,
        "{pongs} pongs for {PINGS} pings"
    );
    assert_eq!(last, format!("{:0>125}", PINGS - 1).into_bytes());
}

#[tokio::test]
async fn an_unmasked_frame_closes_with_a_protocol_error() {
    let server = WebServer::start(Config::default()).await;
    let mut bob = server.netcat("bob").await;
    let mut alice = web_line(&server, "alice").await;
    bob.expect("alice has joined the chat.").await;
    let mut raw = Vec::new();
    frame::put_frame(&mut raw, frame::TEXT, None, b"hi");
    alice.stream.write_all(&raw).await.unwrap();
    let mut closed_with = None;
    while let Some(msg) = alice.next().await {
        if let Msg::Close(code) = msg {
            closed_with = code;
        }
    }
    assert_eq!(closed_with, Some(frame::CLOSE_PROTOCOL));
    while !bob.line().await.starts_with("alice has left the chat") {}
}

/// The idle timer over WebSocket: a ping, and only a page that does not answer is dropped.
#[tokio::test(start_paused = true)]
async fn an_open_page_answers_pings_and_stays_a_vanished_one_is_dropped() {
    let server = WebServer::start(Config {
        idle_timeout: Some(Duration::from_secs(300)),
        ..Config::default()
    })
    .await;
    let patient = Duration::from_secs(30 * 24 * 3600);
    let mut bob = server.netcat("bob").await;
    bob.wait = patient;
    let mut open = web_line(&server, "open").await;
    let mut gone = web_line(&server, "gone").await;
    open.wait = patient;
    gone.wait = patient;
    gone.auto_pong = false;
    let start = tokio::time::Instant::now();
    let keep = tokio::spawn(async move { while open.next().await.is_some() {} });
    // The silent one is pinged at the warning, then dropped at the timeout.
    assert_eq!(gone.next().await, Some(Msg::Ping(b"linechat".to_vec())));
    assert_eq!(start.elapsed().as_secs(), 270);
    bob.send("/echo still here").await;
    bob.skip_until("still here").await;
    let last = gone.until("idle timeout").await;
    assert!(
        last.starts_with("You have been disconnected after 5 min"),
        "{last}"
    );
    while !bob.line().await.starts_with("gone has left the chat") {}
    assert_eq!(start.elapsed().as_secs(), 300);
    // The other answers every ping: an hour later it is still there.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(
        !keep.is_finished(),
        "the page that answers pings was dropped"
    );
    let mut carol = server.netcat("carol").await;
    carol.send("/who").await;
    carol.expect("In lobby (2): carol, open (web)").await;
}

/// A connection that never sends a request head is closed after HEAD_TIMEOUT.
#[tokio::test(start_paused = true)]
async fn a_silent_http_connection_is_closed() {
    let server = WebServer::start(Config::default()).await;
    let mut stream = TcpStream::connect(server.web).await.unwrap();
    let start = tokio::time::Instant::now();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert_eq!(start.elapsed(), linechat::proto::web::HEAD_TIMEOUT);
    assert!(rest.is_empty());
}

#[tokio::test]
async fn prometheus_counts_clients_by_protocol() {
    let metrics = linechat::server::bind_metrics("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    let extras = Extras {
        metrics: Some(metrics),
        ..Extras::default()
    };
    let server = WebServer::start_with(Config::default(), extras).await;
    let mut bob = server.netcat("bob").await;
    let _alice = web_line(&server, "alice").await;
    let _carol = web_irc(&server, "carol").await;
    bob.send("/who").await;
    bob.skip_until("In lobby (2): alice (web), bob").await;
    let (mut stream, head, mut body) = request(
        metrics_addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tokio::time::timeout(WAIT, stream.read_to_end(&mut body))
        .await
        .unwrap()
        .unwrap();
    let body = String::from_utf8(body).unwrap();
    for line in [
        "linechat_clients_by_protocol{protocol=\"line\"} 1",
        "linechat_clients_by_protocol{protocol=\"irc\"} 0",
        "linechat_clients_by_protocol{protocol=\"web\"} 2",
    ] {
        assert!(body.lines().any(|l| l == line), "{line} not in {body}");
    }
}

/// A browser's kept-alive connection between requests does not hold shutdown up.
#[tokio::test]
async fn shutdown_closes_idle_http_connections_at_once() {
    let mut server = WebServer::start(Config::default()).await;
    let (mut stream, head, body) =
        request(server.web, "GET /style.css HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    let mut rest = vec![0; length - body.len()];
    stream.read_exact(&mut rest).await.unwrap();
    let started = std::time::Instant::now();
    let _ = server.stop.take().unwrap().send(());
    tokio::time::timeout(WAIT, &mut server.task)
        .await
        .expect("shutdown finished")
        .unwrap();
    assert!(
        started.elapsed() < linechat::proto::web::HEAD_TIMEOUT / 2,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stream.read(&mut [0; 16]).await.unwrap(), 0, "closed");
}

/// A line-protocol user on the web is a netcat user in every way that matters to moderation:
/// kicked, they land in the lobby (their grammar has no "in no room"), and killed, they read
/// the sentence, not an IRC `KILL` line. Both keyed on the protocol name once, which is `line`
/// over TCP only, so a web user was left in no room and read `:server KILL …`.
#[tokio::test]
async fn a_web_line_user_kicked_lands_in_the_lobby_and_killed_reads_why() {
    let server = WebServer::start(Config {
        rate_limit: None,
        opers: vec![("root".into(), "root-password".into())],
        ..Config::default()
    })
    .await;
    let mut alice = server.netcat("alice").await;
    alice.command("/join dev").await;
    let mut bob = web_line(&server, "bob").await;
    bob.send("/join dev").await;
    bob.until("You are now in dev").await;
    alice.skip_until("bob has joined the room.").await;

    assert_eq!(
        alice.command("/kick bob enough").await,
        ["alice kicked bob out of dev (enough)."]
    );
    bob.expect("alice kicked bob out of dev (enough).").await;
    bob.expect("You are now in lobby (just you so far).").await;
    bob.send("/who").await;
    assert_eq!(bob.text().await, "In lobby (1): bob (web)");

    alice.command("/oper root root-password").await;
    alice.command("/kill bob go away").await;
    assert_eq!(
        bob.text().await,
        "You were disconnected by server operator alice: go away"
    );
}
