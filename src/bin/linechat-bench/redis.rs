//! Redis pub/sub: every client SUBSCRIBEs to one channel. A subscribed RESP2 connection cannot
//! PUBLISH, so each sender publishes on a connection of its own; the copy its own subscriber
//! receives is discarded as a self-delivery.

use anyhow::{anyhow, bail, Result};
use bytes::{BufMut, BytesMut};

use crate::proto::{first_line, show, BoxFut, Events, Handshake, Protocol, Setup, Who};
use crate::wire;

#[derive(Debug)]
pub struct Redis {
    channel: String,
}

impl Redis {
    pub fn new(s: &Setup) -> Self {
        Redis {
            channel: s.subject.clone(),
        }
    }
}

impl Protocol for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn register<'a>(&'a self, c: &'a mut Handshake, who: Who) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            if !who.publisher {
                return Ok(()); // SUBSCRIBE is the whole handshake
            }
            c.send(b"*1\r\n$4\r\nPING\r\n").await?;
            c.read_until("Redis PONG", |b| match first_line(b) {
                None => Ok(None),
                Some((b"+PONG", next)) => Ok(Some(next)),
                Some((l, _)) => bail!("unexpected reply to PING: \"{}\"", show(l)),
            })
            .await
        })
    }

    fn join<'a>(&'a self, c: &'a mut Handshake, who: Who) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            if who.publisher {
                return Ok(());
            }
            let cmd = format!(
                "*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{}\r\n",
                self.channel.len(),
                self.channel
            );
            c.send(cmd.as_bytes()).await?;
            c.read_until("Redis subscribe confirmation", |b| {
                match resp::parse(b, 0).map_err(|e| anyhow!("{e} (is this a Redis server?)"))? {
                    None => Ok(None),
                    Some((resp::Top::Array { items, .. }, next))
                        if items[0] == Some(b"subscribe") =>
                    {
                        Ok(Some(next))
                    }
                    Some(_) => bail!("unexpected reply to SUBSCRIBE: \"{}\"", show(b)),
                }
            })
            .await
        })
    }

    fn put_message(&self, out: &mut BytesMut, payload: &[u8]) {
        out.put_slice(b"*3\r\n$7\r\nPUBLISH\r\n$");
        wire::put_u64(out, self.channel.len() as u64);
        out.put_slice(b"\r\n");
        out.put_slice(self.channel.as_bytes());
        out.put_slice(b"\r\n$");
        wire::put_u64(out, payload.len() as u64);
        out.put_slice(b"\r\n");
        out.put_slice(payload);
        out.put_slice(b"\r\n");
    }

    fn parse(&self, buf: &[u8], ev: &mut dyn Events) -> Result<usize, String> {
        let mut pos = 0;
        loop {
            match resp::parse(buf, pos)? {
                None => return Ok(pos),
                Some((v, next)) => {
                    pos = next;
                    match v {
                        resp::Top::Array { n: 3, items } if items[0] == Some(b"message") => {
                            match items[2] {
                                Some(p) => ev.payload(p),
                                None => ev.malformed(),
                            }
                        }
                        resp::Top::Int => ev.publish_reply(),
                        resp::Top::Error(e) => ev.server_error(e),
                        _ => ev.other(),
                    }
                }
            }
        }
    }

    fn separate_publishers(&self) -> bool {
        true
    }
}

/// A minimal RESP2 reader for pub/sub pushes and PUBLISH replies.
mod resp {
    #[derive(Debug)]
    pub enum Top<'a> {
        /// An array of `n` elements; the first three bulk strings (None = not a bulk string).
        Array {
            n: i64,
            items: [Option<&'a [u8]>; 3],
        },
        Int,
        Simple,
        Error(&'a [u8]),
        Nil,
    }

    fn line(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
        let off = memchr::memchr(b'\n', buf.get(pos..)?)?;
        let end = pos + off;
        let l = &buf[pos..end];
        Some((l.strip_suffix(b"\r").unwrap_or(l), end + 1))
    }

    fn int(b: &[u8]) -> Result<i64, String> {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad RESP integer {:?}", String::from_utf8_lossy(b)))
    }

    /// One element: Ok(None) = incomplete. Returns (bulk bytes if a bulk string, next pos).
    #[allow(clippy::type_complexity)]
    fn elem(buf: &[u8], pos: usize) -> Result<Option<(Option<&[u8]>, usize)>, String> {
        let Some((l, next)) = line(buf, pos) else {
            return Ok(None);
        };
        match l.first() {
            Some(b'$') => {
                let n = int(&l[1..])?;
                if n < 0 {
                    return Ok(Some((None, next)));
                }
                let n = n as usize;
                if buf.len() < next + n + 2 {
                    return Ok(None);
                }
                Ok(Some((Some(&buf[next..next + n]), next + n + 2)))
            }
            Some(b':' | b'+' | b'-') => Ok(Some((None, next))),
            _ => Err(format!(
                "unexpected RESP element {:?}",
                String::from_utf8_lossy(l)
            )),
        }
    }

    /// One top-level value from `pos`: Ok(None) = incomplete.
    pub fn parse(buf: &[u8], pos: usize) -> Result<Option<(Top<'_>, usize)>, String> {
        let Some((l, mut next)) = line(buf, pos) else {
            return Ok(None);
        };
        match l.first() {
            Some(b'*') => {
                let n = int(&l[1..])?;
                let mut items = [None; 3];
                for i in 0..n.max(0) {
                    match elem(buf, next)? {
                        None => return Ok(None),
                        Some((b, nx)) => {
                            if (i as usize) < 3 {
                                items[i as usize] = b;
                            }
                            next = nx;
                        }
                    }
                }
                Ok(Some((Top::Array { n, items }, next)))
            }
            Some(b':') => Ok(Some((Top::Int, next))),
            Some(b'+') => Ok(Some((Top::Simple, next))),
            Some(b'-') => Ok(Some((Top::Error(l), next))),
            Some(b'$') => match elem(buf, pos)? {
                None => Ok(None),
                Some((_, nx)) => Ok(Some((Top::Nil, nx))),
            },
            _ => Err(format!(
                "unexpected RESP reply {:?}",
                String::from_utf8_lossy(l)
            )),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn message_push_split_anywhere() {
            let msg: &[u8] = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n:3\r\n";
            for cut in 0..msg.len() - 4 {
                let r = parse(&msg[..cut], 0).unwrap();
                assert!(r.is_none(), "cut {cut}");
            }
            let (v, next) = parse(msg, 0).unwrap().unwrap();
            match v {
                Top::Array { n: 3, items } => {
                    assert_eq!(items[0], Some(&b"message"[..]));
                    assert_eq!(items[2], Some(&b"hello"[..]));
                }
                other => panic!("{other:?}"),
            }
            assert!(matches!(parse(msg, next).unwrap(), Some((Top::Int, _))));
        }
    }
}
