//! linechat's line protocol, the one netcat speaks: a nickname prompt, then one line per message,
//! relayed to the others as `<nick>: <text>`.

use anyhow::{bail, Result};
use bytes::{BufMut, BytesMut};

use crate::proto::{first_line, show, BoxFut, Events, Handshake, Protocol, Setup, Who};

/// Every client starts in this room.
const LOBBY: &str = "lobby";
/// linechat's default `--max-line`.
const DEFAULT_MAX_LINE: usize = 1024;

#[derive(Debug)]
pub struct Line {
    nick_prefix: String,
    room: String,
    msg_size: usize,
}

impl Line {
    pub fn new(s: &Setup) -> Self {
        // linechat drops a leading '#', so `--room #lobby` and `--room lobby` are one room.
        let room = s.room.trim_start_matches('#').to_string();
        Line {
            nick_prefix: s.nick_prefix.clone(),
            room,
            msg_size: s.msg_size,
        }
    }
}

impl Protocol for Line {
    fn name(&self) -> &'static str {
        "linechat"
    }

    fn register<'a>(&'a self, c: &'a mut Handshake, who: Who) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            let prompt = b"nickname: ";
            c.read_until("nickname prompt", |b| {
                // Over WebSocket the prompt is a message of its own, so a line end follows.
                Ok(memchr::memmem::find(b, prompt).map(|i| {
                    let end = i + prompt.len();
                    end + usize::from(b.get(end) == Some(&b'\n'))
                }))
            })
            .await?;
            let nick = format!("{}{}", self.nick_prefix, who.idx);
            c.send(format!("{nick}\n").as_bytes()).await?;
            let welcome = format!("Welcome to the chat, {nick}!");
            c.read_until("welcome line", |b| match first_line(b) {
                None => Ok(None),
                Some((l, next)) if l == welcome.as_bytes() => Ok(Some(next)),
                Some((l, _)) => bail!(
                    "linechat refused nickname {nick}: \"{}\" (is this a linechat server, and a fresh one?)",
                    show(l)
                ),
            })
            .await
        })
    }

    fn join<'a>(&'a self, c: &'a mut Handshake, _who: Who) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            // Connecting is joining the lobby.
            if self.room == LOBBY {
                return Ok(());
            }
            c.send(format!("/join {}\n", self.room).as_bytes()).await?;
            let entered = format!("You are now in {} (", self.room);
            loop {
                let l = c.next_line("the /join confirmation").await?;
                if l.starts_with(entered.as_bytes()) {
                    return Ok(());
                }
                if l.starts_with(b"Error") {
                    bail!("linechat refused /join {}: \"{}\"", self.room, show(&l));
                }
            }
        })
    }

    fn put_message(&self, out: &mut BytesMut, payload: &[u8]) {
        out.put_slice(payload);
        out.put_u8(b'\n');
    }

    fn parse(&self, buf: &[u8], ev: &mut dyn Events) -> Result<usize, String> {
        let mut pos = 0;
        while let Some(off) = memchr::memchr(b'\n', &buf[pos..]) {
            let mut line = &buf[pos..pos + off];
            pos += off + 1;
            if let Some(l) = line.strip_suffix(b"\r") {
                line = l;
            }
            // `<nick>: <text>`; a nick holds no ':', so the first ": " ends it.
            match memchr::memchr(b':', line) {
                Some(c) if line[c + 1..].starts_with(b" ~B") => ev.payload(&line[c + 2..]),
                _ => {
                    if line.starts_with(b"Error") {
                        ev.server_error(line);
                    }
                    ev.other();
                }
            }
        }
        Ok(pos)
    }

    fn settle_quiet(&self) -> std::time::Duration {
        std::time::Duration::from_millis(300)
    }

    fn rate_hint(&self) -> &'static str {
        "; was linechat started with --rate-limit 0?"
    }

    fn check(&self, clients: usize) -> Result<()> {
        let longest = format!("{}{}", self.nick_prefix, clients.saturating_sub(1));
        if linechat::core::names::validate_nick(&longest).is_err() {
            bail!("--nick-prefix must start with a letter, use only letters, digits and _ - [ ] \\ ^ {{ }} | `, and leave room for the client number within 32 characters");
        }
        let r = self.room.as_bytes();
        if r.is_empty() || r.len() > 32 || !r.iter().all(|&b| b.is_ascii_graphic()) {
            bail!("--room must be 1 to 32 visible characters");
        }
        Ok(())
    }

    fn warnings(&self) -> Vec<String> {
        if self.msg_size > DEFAULT_MAX_LINE {
            vec!["--msg-size above linechat's default max line of 1024 bytes".into()]
        } else {
            Vec::new()
        }
    }
}
