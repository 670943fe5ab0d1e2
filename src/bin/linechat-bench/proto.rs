//! The one interface every wire protocol implements, and what they share (the handshake
//! buffer). Which protocol a run uses is picked in `crate::plan`, above the implementations.
//!
//! The scenario code (connect, settle, send, count) never looks at which protocol it drives:
//! it asks the [`Protocol`] to register and join a new connection, to frame a payload, and to
//! find the payloads in what arrived.

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::ClientConfig;

use crate::tls::{Rd, Wr};

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who a connection is, as far as setting it up goes.
#[derive(Debug, Clone, Copy)]
pub struct Who {
    /// Client index (publishers carry the index of the sender they publish for).
    pub idx: usize,
    /// This client also sends.
    pub sender: bool,
    /// A send-only connection next to its sender's subscriber (Redis).
    pub publisher: bool,
}

/// What the bench was asked to set up, independent of the protocol.
#[derive(Debug, Clone)]
pub struct Setup {
    pub nick_prefix: String,
    /// linechat room; IRC channel `#room`.
    pub room: String,
    /// NATS subject / Redis channel.
    pub subject: String,
    pub msg_size: usize,
    /// IRC: `NAME:PASSWORD` that senders OPER with.
    pub irc_oper: Option<(String, String)>,
    /// IRC: user modes senders set on themselves after OPER, e.g. `+F`.
    pub irc_sender_modes: Option<String>,
}

/// Receiving side of [`Protocol::parse`]: one call per thing recognised.
pub trait Events {
    /// A chat message / published message whose body is `payload` (a bench payload or not).
    fn payload(&mut self, payload: &[u8]);
    /// Anything else the server sent (notices, joins, acknowledgements).
    fn other(&mut self);
    /// An error reply; `line` is shown in the report.
    fn server_error(&mut self, line: &[u8]);
    /// A message frame whose body could not be found.
    fn malformed(&mut self);
    /// A reply to a publish (Redis's PUBLISH count).
    fn publish_reply(&mut self);
    /// Bytes to send back on this connection (PONG to a PING).
    fn reply(&mut self, bytes: &[u8]);
}

/// One wire protocol: how a client registers, joins the room, sends a message and recognises
/// one. Implementations hold their settings (nick prefix, room, subject).
pub trait Protocol: Send + Sync + Debug {
    fn name(&self) -> &'static str;
    /// Connect + register (nickname, CONNECT, NICK/USER, ...), up to a usable session.
    fn register<'a>(&'a self, c: &'a mut Handshake, who: Who) -> BoxFut<'a, Result<()>>;
    /// Enter the room / channel / subject, returning once the server confirmed it.
    fn join<'a>(&'a self, c: &'a mut Handshake, who: Who) -> BoxFut<'a, Result<()>>;
    /// Appends one message carrying `payload`, framed for the wire.
    fn put_message(&self, out: &mut BytesMut, payload: &[u8]);
    /// Reports every complete frame at the start of `buf` to `ev`; returns the bytes consumed
    /// (an incomplete frame at the end is left for the next read).
    fn parse(&self, buf: &[u8], ev: &mut dyn Events) -> Result<usize, String>;

    /// Senders publish on a connection of their own next to their subscriber (Redis).
    fn separate_publishers(&self) -> bool {
        false
    }
    /// How long nothing but the bench's own traffic must arrive before setup counts as over.
    fn settle_quiet(&self) -> Duration {
        Duration::from_millis(100)
    }
    /// Said after "achieved send rate is below the requested": what to check on the server.
    fn rate_hint(&self) -> &'static str {
        ""
    }
    /// Problems with the settings that make the run meaningless.
    fn check(&self, _clients: usize) -> Result<()> {
        Ok(())
    }
    /// Settings that work but deserve a note in the report.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A connection being set up: its halves and what arrived but was not consumed yet.
#[derive(Debug)]
pub struct Handshake {
    pub rd: Rd,
    pub wr: Wr,
    pub buf: Vec<u8>,
    /// Set while a WebSocket connection is set up: `buf` then holds the messages' payloads
    /// as lines, and what is sent is framed (see `crate::wsframe`).
    pub ws: Option<crate::wsframe::Framing>,
}

impl Handshake {
    /// Connects to `addr`, over TLS with `tls`.
    pub async fn connect(addr: SocketAddr, tls: Option<Arc<ClientConfig>>) -> Result<Handshake> {
        let stream = TcpStream::connect(addr).await.map_err(|e| {
            anyhow!(
                "connecting to {addr}: {e}{}",
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    " (is the server running there?)"
                } else {
                    ""
                }
            )
        })?;
        stream.set_nodelay(true)?;
        let (rd, wr) = match tls {
            None => crate::tls::plain(stream),
            Some(config) => crate::tls::connect(config, stream)
                .await
                .map_err(|e| anyhow!("TLS handshake with {addr}: {e}"))?,
        };
        Ok(Handshake {
            rd,
            wr,
            buf: Vec::new(),
            ws: None,
        })
    }

    pub async fn send(&mut self, b: &[u8]) -> Result<()> {
        match &self.ws {
            Some(framing) => {
                let framed = framing.frame_lines(b);
                self.wr.write_all(&framed).await?
            }
            None => self.wr.write_all(b).await?,
        }
        // TLS may hold the record back until flushed; for TCP this does nothing.
        self.wr.flush().await?;
        Ok(())
    }

    async fn fill(&mut self, what: &str) -> Result<()> {
        if self.buf.len() > 1 << 20 {
            bail!("no {what} in the first MiB the server sent");
        }
        let mut chunk = [0u8; 4096];
        let n = self.rd.read(&mut chunk).await?;
        if n == 0 {
            bail!(
                "server closed the connection while waiting for {what}; it sent: \"{}\"",
                show(&self.buf)
            );
        }
        match &mut self.ws {
            Some(framing) => {
                let pongs = framing.unframe(&chunk[..n], &mut self.buf)?;
                if !pongs.is_empty() {
                    self.wr.write_all(&pongs).await?;
                }
            }
            None => self.buf.extend_from_slice(&chunk[..n]),
        }
        Ok(())
    }

    /// Reads until `done(buf)` finds the end of the awaited reply, and consumes up to it.
    pub async fn read_until(
        &mut self,
        what: &str,
        mut done: impl FnMut(&[u8]) -> Result<Option<usize>>,
    ) -> Result<()> {
        loop {
            if let Some(end) = done(&self.buf)? {
                self.buf.drain(..end);
                return Ok(());
            }
            self.fill(what).await?;
        }
    }

    /// The next complete line (without its line ending), consumed.
    pub async fn next_line(&mut self, what: &str) -> Result<Vec<u8>> {
        loop {
            if let Some((l, next)) = first_line(&self.buf) {
                let l = l.to_vec();
                self.buf.drain(..next);
                return Ok(l);
            }
            self.fill(what).await?;
        }
    }
}

/// First complete line of `buf`: (line without ending, index after it).
pub fn first_line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let off = memchr::memchr(b'\n', buf)?;
    let l = &buf[..off];
    Some((l.strip_suffix(b"\r").unwrap_or(l), off + 1))
}

/// Printable, shortened form of received bytes for error messages.
pub fn show(b: &[u8]) -> String {
    let s: String = String::from_utf8_lossy(&b[..b.len().min(120)])
        .chars()
        .flat_map(|c| c.escape_debug())
        .collect();
    if b.len() > 120 {
        format!("{s}...")
    } else {
        s
    }
}
