//! NATS: every client subscribes to one subject and publishes on the same connection, with
//! `"echo":false` so that the server does not send a client its own messages (as linechat).

use anyhow::{bail, Result};
use bytes::{BufMut, BytesMut};

use crate::proto::{first_line, show, BoxFut, Events, Handshake, Protocol, Setup, Who};
use crate::wire;

#[derive(Debug)]
pub struct Nats {
    subject: String,
}

impl Nats {
    pub fn new(s: &Setup) -> Self {
        Nats {
            subject: s.subject.clone(),
        }
    }
}

impl Protocol for Nats {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn register<'a>(&'a self, c: &'a mut Handshake, _who: Who) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            c.read_until("NATS INFO line", |b| match first_line(b) {
                None => Ok(None),
                Some((l, next)) if l.starts_with(b"INFO ") => Ok(Some(next)),
                Some((l, _)) => bail!("expected a NATS INFO line, got \"{}\"", show(l)),
            })
            .await?;
            // Refusals of CONNECT arrive before the PONG that join waits for.
            c.send(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false,\"name\":\"linechat-bench\"}\r\n")
                .await
        })
    }

    fn join<'a>(&'a self, c: &'a mut Handshake, who: Who) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            let sub = format!("SUB {} {}\r\nPING\r\n", self.subject, who.idx + 1);
            c.send(sub.as_bytes()).await?;
            c.read_until("NATS PONG", |b| {
                let mut pos = 0;
                while let Some((l, next)) = first_line(&b[pos..]) {
                    if l == b"PONG" {
                        return Ok(Some(pos + next));
                    }
                    if l.starts_with(b"-ERR") {
                        bail!("NATS refused the subscription: {}", show(l));
                    }
                    pos += next;
                }
                Ok(None)
            })
            .await
        })
    }

    fn put_message(&self, out: &mut BytesMut, payload: &[u8]) {
        out.put_slice(b"PUB ");
        out.put_slice(self.subject.as_bytes());
        out.put_u8(b' ');
        wire::put_u64(out, payload.len() as u64);
        out.put_slice(b"\r\n");
        out.put_slice(payload);
        out.put_slice(b"\r\n");
    }

    fn parse(&self, buf: &[u8], ev: &mut dyn Events) -> Result<usize, String> {
        let mut pos = 0;
        while let Some(off) = memchr::memchr(b'\n', &buf[pos..]) {
            let line_end = pos + off;
            let mut line = &buf[pos..line_end];
            if let Some(l) = line.strip_suffix(b"\r") {
                line = l;
            }
            if let Some(rest) = line.strip_prefix(b"MSG ") {
                // MSG <subject> <sid> [reply-to] <#bytes>
                let n_str = rest.rsplit(|&b| b == b' ').next().unwrap_or(b"");
                let n = match wire::parse_u64(n_str) {
                    Some((n, used)) if used == n_str.len() => n as usize,
                    _ => return Err(format!("bad NATS MSG line: {}", show(line))),
                };
                let body = line_end + 1;
                if buf.len() < body + n + 2 {
                    break; // payload not complete yet
                }
                ev.payload(&buf[body..body + n]);
                pos = body + n + 2;
                continue;
            }
            pos = line_end + 1;
            if line == b"PING" {
                ev.reply(b"PONG\r\n");
            } else if line.starts_with(b"-ERR") {
                ev.server_error(line);
            } else {
                ev.other(); // +OK, PONG, INFO
            }
        }
        Ok(pos)
    }
}
