//! The web listener (`http://`): the built-in web client's files at `/`, and WebSocket at
//! `/ws` (and at `/` for a WebSocket handshake, where web IRC clients and irctest connect).
//! Subprotocol `text.ircv3.net` or `binary.ircv3.net` is IRC, anything else the line
//! protocol; either runs the ordinary session over a [`ws::WsStream`], with every limit the
//! shared connection machinery applies. Users who came this way are protocol `web`.
//!
//! The HTTP side is deliberately small: one bounded request head at a time (size
//! [`http::MAX_HEAD`], time [`HEAD_TIMEOUT`]), a handful of keep-alive requests, fixed files
//! compiled into the binary. A connection here already holds its slots from admission
//! (`--max-clients`, `--max-prompt`, `--max-per-ip`), so an idle one is closed quickly.

pub mod frame;
pub mod http;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::context::Shared;
use crate::net::gate::Pass;
use crate::net::stream::Stream;
use http::{HeadError, Request};
use ws::{Carry, WsStream};

/// How long a request head may take to arrive, and a kept-alive connection may wait for its
/// next request. A page load sends its requests back to back.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests served on one connection before it is closed: a page load is three.
const MAX_REQUESTS: usize = 32;

/// The web client: no build step, nothing from another host.
const FILES: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../../../web/index.html"),
    ),
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_str!("../../../web/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/app.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("../../../web/style.css"),
    ),
];

/// The page may load its own files and open its own WebSocket, nothing else.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What the handshake chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Speaks {
    Line,
    Irc(Carry),
}

/// Serves one connection on the web listener until it is done or has become a chat session.
pub async fn run(shared: Arc<Shared>, mut stream: Stream, peer: SocketAddr, id: u64, pass: Pass) {
    let mut buf = BytesMut::new();
    for _ in 0..MAX_REQUESTS {
        let head = tokio::time::timeout(HEAD_TIMEOUT, http::read_head(&mut stream, &mut buf));
        // A connection between requests is nobody's chat: shutdown closes it at once rather
        // than waiting out the head deadline.
        let read = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            read = head => read,
        };
        let request = match read {
            // Idle, slow or gone: nobody is waiting for an answer.
            Err(_) | Ok(Err(HeadError::Closed | HeadError::Io(_))) => return,
            Ok(Err(e @ HeadError::TooLarge)) => {
                let refusal = (431, "Request Header Fields Too Large", "", e.to_string());
                return refuse(&shared, &mut stream, refusal).await;
            }
            Ok(Err(HeadError::Tls)) => {
                let text =
                    "This port speaks plain HTTP, not TLS: open it with http://, not https://.";
                return refuse(&shared, &mut stream, (400, "Bad Request", "", text.into())).await;
            }
            Ok(Err(e @ HeadError::Malformed(_))) => {
                return refuse(
                    &shared,
                    &mut stream,
                    (400, "Bad Request", "", e.to_string()),
                )
                .await
            }
            Ok(Ok(request)) => request,
        };
        if request.method != "GET" && request.method != "HEAD" {
            let text = format!("{} is not served here; use GET.", request.method);
            return refuse(&shared, &mut stream, (405, "Method Not Allowed", "", text)).await;
        }
        // Nothing here takes a body. One left unread would be taken for the next request on
        // this connection, and behind a proxy that reuses connections, answers would go to
        // the wrong people; so a request with one is refused and the connection closed.
        let chunked = request.header("Transfer-Encoding").is_some();
        let length = request.header("Content-Length");
        if chunked || length.as_deref().is_some_and(|l| l.trim() != "0") {
            let text = "a GET takes no request body (Content-Length or Transfer-Encoding)";
            return refuse(&shared, &mut stream, (400, "Bad Request", "", text.into())).await;
        }
        let websocket = request.has_token("Upgrade", "websocket");
        if websocket && matches!(request.path.as_str(), "/" | "/ws") {
            match handshake(&request, &shared.config.web_origins) {
                Ok((response, speaks)) => {
                    if !send(&shared, &mut stream, response.as_bytes()).await {
                        return;
                    }
                    tracing::debug!(?speaks, "websocket open");
                    let carry = match speaks {
                        Speaks::Line => Carry::Text,
                        Speaks::Irc(carry) => carry,
                    };
                    let ws = Stream::Layered(Box::new(WsStream::new(stream, buf, carry)));
                    return match speaks {
                        Speaks::Line => crate::proto::line::run(shared, ws, peer, id, pass).await,
                        Speaks::Irc(_) => crate::proto::irc::run(shared, ws, peer, id, pass).await,
                    };
                }
                Err(refusal) => {
                    tracing::info!(status = refusal.0, text = %refusal.3, "websocket handshake refused");
                    return refuse(&shared, &mut stream, refusal).await;
                }
            }
        }
        let response = match FILES.iter().find(|(path, ..)| *path == request.path) {
            Some((_, content_type, body)) => page(content_type, body, request.method == "HEAD"),
            None if request.path == "/ws" => {
                let text = "/ws takes WebSocket connections; the web client is at /.";
                let refusal = (
                    426,
                    "Upgrade Required",
                    "Upgrade: websocket\r\n",
                    text.into(),
                );
                return refuse(&shared, &mut stream, refusal).await;
            }
            None => {
                let text = format!("{} not found; the web client is at /.", request.path);
                return refuse(&shared, &mut stream, (404, "Not Found", "", text)).await;
            }
        };
        if !send(&shared, &mut stream, &response).await || !request.keep_alive() {
            return;
        }
    }
}

/// Writes `bytes` within the head deadline, or gives up when shutdown begins: a client that
/// asks and never reads the answer must not hold its connection slots. (Keepalive and the
/// user timeout are set only once the connection becomes a chat session.)
async fn send(shared: &Shared, stream: &mut Stream, bytes: &[u8]) -> bool {
    let write = tokio::time::timeout(HEAD_TIMEOUT, stream.write_all(bytes));
    tokio::select! {
        _ = shared.shutdown.cancelled() => false,
        written = write => matches!(written, Ok(Ok(()))),
    }
}

async fn refuse(shared: &Shared, stream: &mut Stream, refusal: Refusal) {
    let (status, reason, headers, text) = refusal;
    let response = http::plain_with(status, reason, headers, &format!("{text}\n"));
    if send(shared, stream, response.as_bytes()).await {
        let _ = tokio::time::timeout(HEAD_TIMEOUT, stream.shutdown()).await;
    }
}

/// A refusal: status, reason phrase, extra header lines, and the text saying why.
type Refusal = (u16, &'static str, &'static str, String);

fn page(content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n\
         Referrer-Policy: no-referrer\r\nContent-Security-Policy: {CSP}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        response.extend_from_slice(body.as_bytes());
    }
    response
}

/// Checks a WebSocket handshake (RFC 6455 section 4.2) and `--web-origins`; the `101`
/// response and what the connection will speak, or the refusal.
fn handshake(request: &Request, origins: &[String]) -> Result<(String, Speaks), Refusal> {
    if request.method != "GET" {
        return Err((
            405,
            "Method Not Allowed",
            "",
            "a WebSocket handshake is a GET".into(),
        ));
    }
    if !request.has_token("Connection", "upgrade") {
        return Err((
            400,
            "Bad Request",
            "",
            "a WebSocket handshake needs Connection: Upgrade".into(),
        ));
    }
    if request.header("Sec-WebSocket-Version").as_deref() != Some("13") {
        // Section 4.4: the versions spoken, in a header.
        return Err((
            426,
            "Upgrade Required",
            "Sec-WebSocket-Version: 13\r\n",
            "only WebSocket version 13 is spoken here".into(),
        ));
    }
    let key = request.header("Sec-WebSocket-Key").unwrap_or_default();
    let decoded = base64::engine::general_purpose::STANDARD.decode(&key);
    if decoded.map_or(true, |k| k.len() != 16) {
        return Err((
            400,
            "Bad Request",
            "",
            "Sec-WebSocket-Key must be 16 bytes in base64".into(),
        ));
    }
    if let Some(origin) = request.header("Origin") {
        let allowed = origins.is_empty()
            || origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin.trim_end_matches('/')));
        if !allowed {
            return Err((
                403,
                "Forbidden",
                "",
                format!("pages from {origin} may not connect here (--web-origins)"),
            ));
        }
    }
    let offered = request.header("Sec-WebSocket-Protocol").unwrap_or_default();
    // The first the client offers that we speak, as the IRCv3 WebSocket specification asks
    // (a client offering binary first gets binary); none of ours is the line protocol.
    let chosen = offered.split(',').map(str::trim).find_map(|p| match p {
        "text.ircv3.net" => Some((Speaks::Irc(Carry::Text), "text.ircv3.net")),
        "binary.ircv3.net" => Some((Speaks::Irc(Carry::Binary), "binary.ircv3.net")),
        "linechat" => Some((Speaks::Line, "linechat")),
        _ => None,
    });
    let (speaks, protocol) = match chosen {
        Some((speaks, protocol)) => (speaks, Some(protocol)),
        None => (Speaks::Line, None),
    };
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n",
        accept_key(&key)
    );
    if let Some(protocol) = protocol {
        response.push_str(&format!("Sec-WebSocket-Protocol: {protocol}\r\n"));
    }
    response.push_str("\r\n");
    Ok((response, speaks))
}

/// `Sec-WebSocket-Accept` for a key (section 4.2.2).
fn accept_key(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6455 section 1.3's example.
    #[test]
    fn the_rfc_accept_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
