//! The little HTTP/1.1 the web listener speaks: reading one request head, bounded in size
//! (and, by the caller, in time), and writing the few responses it sends.

use std::io;

use bytes::{Buf, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest request head read. A browser's is well under 2 KiB (cookies for another
/// service on the same host can add some); anything beyond is refused with 431.
pub const MAX_HEAD: usize = 8 * 1024;

/// Headers read at most.
const MAX_HEADERS: usize = 32;

/// A parsed request head.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The path without its query string.
    pub path: String,
    /// HTTP/1.0 closes after each response unless asked not to; 1.1 keeps the connection.
    pub http10: bool,
    headers: Vec<(String, String)>,
}

impl Request {
    /// The value of header `name` (several of the same are joined with commas).
    pub fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }

    /// Whether header `name` lists `token` (case-insensitive, as `Connection: keep-alive,
    /// Upgrade` does).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.header(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }

    pub fn keep_alive(&self) -> bool {
        if self.http10 {
            self.has_token("Connection", "keep-alive")
        } else {
            !self.has_token("Connection", "close")
        }
    }
}

/// Why no request could be read.
#[derive(Debug, Error)]
pub enum HeadError {
    #[error("the connection ended")]
    Closed,
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("request head over {MAX_HEAD} bytes")]
    TooLarge,
    /// A TLS ClientHello on the plain-HTTP port.
    #[error("a TLS handshake on a plain HTTP port")]
    Tls,
    #[error("malformed request: {0}")]
    Malformed(String),
}

/// Reads one request head from `stream`. `buf` keeps what follows it (a pipelined request,
/// or the first WebSocket frames).
pub async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<Request, HeadError> {
    loop {
        if buf.first() == Some(&0x16) {
            return Err(HeadError::Tls);
        }
        if let Some(request) = parse(buf)? {
            return Ok(request);
        }
        if buf.len() >= MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        buf.reserve(1024);
        let room = MAX_HEAD - buf.len();
        let n = (&mut *stream).take(room as u64).read_buf(buf).await?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
    }
}

fn parse(buf: &mut BytesMut) -> Result<Option<Request>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    let path = req.path.unwrap_or("/");
    let request = Request {
        method: req.method.unwrap_or("").to_owned(),
        path: path.split('?').next().unwrap_or("/").to_owned(),
        http10: req.version == Some(0),
        headers: req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).trim().to_owned(),
                )
            })
            .collect(),
    };
    buf.advance(len);
    Ok(Some(request))
}

/// A whole response with a plain-text body, closing the connection.
pub fn plain(status: u16, reason: &str, body: &str) -> String {
    plain_with(status, reason, "", body)
}

/// [`plain`], with `headers` (each line ending in `\r\n`) among its header lines.
pub fn plain_with(status: u16, reason: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\n{headers}Connection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_head_in_pieces_leaves_what_follows() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let writing = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in [
                &b"GET /ws?x=1 HTTP/1.1\r\nHost: a\r\n"[..],
                b"Connection: keep-alive, Upgrade\r\nConnection: x\r\n\r\n\x81",
            ] {
                client.write_all(piece).await.unwrap();
            }
            client
        });
        let mut buf = BytesMut::new();
        let req = read_head(&mut server, &mut buf).await.unwrap();
        assert_eq!((req.method.as_str(), req.path.as_str()), ("GET", "/ws"));
        assert!(req.has_token("connection", "upgrade"));
        assert_eq!(req.header("connection").unwrap(), "keep-alive, Upgrade, x");
        assert!(req.keep_alive());
        assert_eq!(&buf[..], b"\x81");
        drop(writing.await);
    }

    #[tokio::test]
    async fn an_endless_head_is_cut_off() {
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let junk = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(20_000));
            let _ = client.write_all(junk.as_bytes()).await;
            std::future::pending::<()>().await;
        });
        let mut buf = BytesMut::new();
        let err = read_head(&mut server, &mut buf).await.unwrap_err();
        assert!(matches!(err, HeadError::TooLarge), "{err}");
        assert!(buf.len() <= MAX_HEAD);
    }

    #[tokio::test]
    async fn a_client_hello_is_recognised() {
        let mut input: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00];
        let err = read_head(&mut input, &mut BytesMut::new())
            .await
            .unwrap_err();
        assert!(matches!(err, HeadError::Tls));
    }
}
