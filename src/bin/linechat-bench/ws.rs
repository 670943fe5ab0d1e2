//! The line protocol and IRC over WebSocket (`--proto ws-line`, `ws-irc`): the same protocol
//! modules, wrapped. Setup runs the inner protocol's register and join over a [`Handshake`]
//! that frames what it sends and unframes what arrives; during the run, messages are framed
//! per line (masked, as a browser sends them) and each arriving frame's payload is handed to
//! the inner parser as a line.

use std::sync::Arc;

use anyhow::{bail, Result};
use bytes::BytesMut;
use linechat::proto::web::frame;
use tokio::io::AsyncWriteExt;

use crate::proto::{show, BoxFut, Events, Handshake, Protocol, Who};
use crate::wsframe::{each_frame, put_lines, Framing, MASK};

/// A protocol carried over WebSocket.
#[derive(Debug)]
pub struct Ws {
    name: &'static str,
    inner: Arc<dyn Protocol>,
    /// `Sec-WebSocket-Protocol` to ask for.
    subprotocol: Option<&'static str>,
}

impl Ws {
    pub fn new(
        name: &'static str,
        inner: Arc<dyn Protocol>,
        subprotocol: Option<&'static str>,
    ) -> Ws {
        Ws {
            name,
            inner,
            subprotocol,
        }
    }
}

/// Events of the inner parser, with its replies (IRC's PONG) framed.
struct Framed<'a> {
    ev: &'a mut dyn Events,
}

impl Events for Framed<'_> {
    fn payload(&mut self, payload: &[u8]) {
        self.ev.payload(payload)
    }
    fn other(&mut self) {
        self.ev.other()
    }
    fn server_error(&mut self, line: &[u8]) {
        self.ev.server_error(line)
    }
    fn malformed(&mut self) {
        self.ev.malformed()
    }
    fn publish_reply(&mut self) {
        self.ev.publish_reply()
    }
    fn reply(&mut self, bytes: &[u8]) {
        let mut out = Vec::new();
        put_lines(&mut out, bytes);
        self.ev.reply(&out)
    }
}

impl Protocol for Ws {
    fn name(&self) -> &'static str {
        self.name
    }

    fn register<'a>(&'a self, c: &'a mut Handshake, who: Who) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            let protocol = self
                .subprotocol
                .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
                .unwrap_or_default();
            let request = format!(
                "GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: bGluZWNoYXQtYmVuY2gtMQ==\r\nSec-WebSocket-Version: 13\r\n\
                 {protocol}\r\n"
            );
            c.wr.write_all(request.as_bytes()).await?;
            let mut status = Vec::new();
            c.read_until("the WebSocket handshake", |b| {
                Ok(memchr::memmem::find(b, b"\r\n\r\n").map(|end| {
                    status = b[..end].to_vec();
                    end + 4
                }))
            })
            .await?;
            if !status.starts_with(b"HTTP/1.1 101 ") {
                bail!(
                    "WebSocket handshake refused: \"{}\" (is --addr the server's http:// listener?)",
                    show(&status)
                );
            }
            let early = std::mem::take(&mut c.buf);
            let mut framing = Framing::default();
            framing.unframe(&early, &mut c.buf)?;
            c.ws = Some(framing);
            self.inner.register(c, who).await
        })
    }

    fn join<'a>(&'a self, c: &'a mut Handshake, who: Who) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            self.inner.join(c, who).await?;
            // The run reads frames: what was unframed but not consumed goes back into frames
            // (unmasked, as the server sent them), ahead of what was not unframed yet.
            let framing = c.ws.take().unwrap_or_default();
            let mut back = Vec::new();
            for line in c.buf.split_inclusive(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\n").unwrap_or(line);
                frame::put_frame(&mut back, frame::TEXT, None, line);
            }
            back.extend_from_slice(framing.pending());
            c.buf = back;
            Ok(())
        })
    }

    fn put_message(&self, out: &mut BytesMut, payload: &[u8]) {
        let mut line = BytesMut::new();
        self.inner.put_message(&mut line, payload);
        let mut framed = Vec::with_capacity(line.len() + 14);
        put_lines(&mut framed, &line);
        out.extend_from_slice(&framed);
    }

    fn parse(&self, buf: &[u8], ev: &mut dyn Events) -> Result<usize, String> {
        let mut ev = Framed { ev };
        let mut line = Vec::new();
        let mut failed = None;
        let used = each_frame(buf, |opcode, payload| match opcode {
            frame::TEXT | frame::BINARY => {
                line.clear();
                line.extend_from_slice(payload);
                line.push(b'\n');
                if let Err(e) = self.inner.parse(&line, &mut ev) {
                    failed = Some(e);
                }
            }
            frame::PING => {
                let mut pong = Vec::new();
                frame::put_frame(&mut pong, frame::PONG, Some(MASK), payload);
                ev.ev.reply(&pong);
            }
            _ => ev.other(),
        })?;
        match failed {
            Some(e) => Err(e),
            None => Ok(used),
        }
    }

    fn separate_publishers(&self) -> bool {
        self.inner.separate_publishers()
    }
    fn settle_quiet(&self) -> std::time::Duration {
        self.inner.settle_quiet()
    }
    fn rate_hint(&self) -> &'static str {
        self.inner.rate_hint()
    }
    fn check(&self, clients: usize) -> Result<()> {
        self.inner.check(clients)
    }
    fn warnings(&self) -> Vec<String> {
        self.inner.warnings()
    }
}
