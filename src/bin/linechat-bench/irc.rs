//! IRC (RFC 2812 client side, as much as a chat room needs): NICK/USER up to 001, JOIN up to
//! the end of NAMES (366), `PRIVMSG #room :payload` out, `:src PRIVMSG #room :payload` in, and a
//! PONG for every PING, during setup and during the run.

use anyhow::{bail, Result};
use bytes::{BufMut, BytesMut};

use crate::proto::{show, BoxFut, Events, Handshake, Protocol, Setup, Who};

/// Nicknames tried after the first one is in use (433), before giving up.
const NICK_RETRIES: usize = 5;
/// Room left in a 512-byte IRC line for the payload after `:nick!user@host PRIVMSG #room :`
/// with a long hostname; past it a server may cut the line.
const SAFE_PAYLOAD: usize = 350;

#[derive(Debug)]
pub struct Irc {
    nick_prefix: String,
    channel: String,
    msg_size: usize,
    oper: Option<(String, String)>,
    sender_modes: Option<String>,
}

impl Irc {
    pub fn new(s: &Setup) -> Self {
        // linechat's room `lobby` is IRC's `#lobby`.
        let channel = if s.room.starts_with(['#', '&']) {
            s.room.clone()
        } else {
            format!("#{}", s.room)
        };
        Irc {
            nick_prefix: s.nick_prefix.clone(),
            channel,
            msg_size: s.msg_size,
            oper: s.irc_oper.clone(),
            sender_modes: s.irc_sender_modes.clone(),
        }
    }
}

/// One IRC line split into prefix (without ':'), command and parameters (the trailing one
/// without its ':').
#[derive(Debug, PartialEq, Eq)]
pub struct Msg<'a> {
    pub prefix: Option<&'a [u8]>,
    pub cmd: &'a [u8],
    pub params: Vec<&'a [u8]>,
}

impl<'a> Msg<'a> {
    pub fn split(mut line: &'a [u8]) -> Msg<'a> {
        let mut prefix = None;
        if let Some(rest) = line.strip_prefix(b":") {
            let end = memchr::memchr(b' ', rest).unwrap_or(rest.len());
            prefix = Some(&rest[..end]);
            line = rest.get(end + 1..).unwrap_or(b"");
        }
        let end = memchr::memchr(b' ', line).unwrap_or(line.len());
        let cmd = &line[..end];
        let mut rest = line.get(end + 1..).unwrap_or(b"");
        let mut params = Vec::new();
        while !rest.is_empty() {
            if let Some(trailing) = rest.strip_prefix(b":") {
                params.push(trailing);
                break;
            }
            let end = memchr::memchr(b' ', rest).unwrap_or(rest.len());
            if end > 0 {
                params.push(&rest[..end]);
            }
            rest = rest.get(end + 1..).unwrap_or(b"");
        }
        Msg {
            prefix,
            cmd,
            params,
        }
    }

    fn param(&self, i: usize) -> &'a [u8] {
        self.params.get(i).copied().unwrap_or(b"")
    }
}

/// `PONG` answering `PING <args>`.
fn pong(args: &[u8]) -> Vec<u8> {
    let mut v = b"PONG".to_vec();
    v.extend_from_slice(args);
    v.extend_from_slice(b"\r\n");
    v
}

/// A 4xx or 5xx numeric: an error reply.
fn is_error_numeric(cmd: &[u8]) -> bool {
    cmd.len() == 3 && matches!(cmd[0], b'4' | b'5') && cmd.iter().all(u8::is_ascii_digit)
}

impl Irc {
    /// The next line of the handshake, with PINGs answered on the way.
    async fn next(&self, c: &mut Handshake, what: &str) -> Result<Vec<u8>> {
        loop {
            let l = c.next_line(what).await?;
            if let Some(args) = l.strip_prefix(b"PING") {
                c.send(&pong(args)).await?;
                continue;
            }
            if l.starts_with(b"ERROR") {
                bail!("IRC server closed the link: \"{}\"", show(&l));
            }
            return Ok(l);
        }
    }

    async fn oper(&self, c: &mut Handshake, nick: &str) -> Result<()> {
        let Some((name, pass)) = &self.oper else {
            return Ok(());
        };
        c.send(format!("OPER {name} {pass}\r\n").as_bytes()).await?;
        loop {
            let l = self.next(c, "the reply to OPER (381)").await?;
            let m = Msg::split(&l);
            match m.cmd {
                b"381" => break,
                b"464" | b"491" => bail!(
                    "OPER {name} refused: \"{}\" (does the server have that operator block for this host?)",
                    show(&l)
                ),
                _ => {}
            }
        }
        let Some(modes) = &self.sender_modes else {
            return Ok(());
        };
        c.send(format!("MODE {nick} {modes}\r\n").as_bytes())
            .await?;
        let wanted: Vec<u8> = modes.bytes().filter(u8::is_ascii_alphabetic).collect();
        loop {
            let l = self.next(c, "the reply to MODE").await?;
            let m = Msg::split(&l);
            if m.cmd == b"MODE" && m.param(0).eq_ignore_ascii_case(nick.as_bytes()) {
                let set = m.params[1..].concat();
                if wanted.iter().all(|w| set.contains(w)) {
                    return Ok(());
                }
            } else if is_error_numeric(m.cmd) {
                bail!("MODE {nick} {modes} refused: \"{}\"", show(&l));
            }
        }
    }
}

impl Protocol for Irc {
    fn name(&self) -> &'static str {
        "irc"
    }

    fn register<'a>(&'a self, c: &'a mut Handshake, who: Who) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            let base = format!("{}{}", self.nick_prefix, who.idx);
            let mut nick = base.clone();
            c.send(format!("NICK {nick}\r\nUSER bench 0 * :linechat-bench\r\n").as_bytes())
                .await?;
            let mut retries = 0;
            loop {
                let l = self.next(c, "the IRC welcome (001)").await?;
                let m = Msg::split(&l);
                match m.cmd {
                    b"001" => {
                        // The server says which nick we ended up with.
                        if !m.param(0).is_empty() {
                            nick = String::from_utf8_lossy(m.param(0)).into_owned();
                        }
                        break;
                    }
                    b"433" | b"436" => {
                        retries += 1;
                        if retries > NICK_RETRIES {
                            bail!("nicknames {base} to {nick} are all in use (433)");
                        }
                        nick = format!("{base}x{retries}");
                        c.send(format!("NICK {nick}\r\n").as_bytes()).await?;
                    }
                    b"432" => bail!("IRC server refused nickname {nick}: \"{}\"", show(&l)),
                    b"464" | b"465" => bail!("IRC server refused the client: \"{}\"", show(&l)),
                    _ => {}
                }
            }
            if who.sender {
                self.oper(c, &nick).await?;
            }
            Ok(())
        })
    }

    fn join<'a>(&'a self, c: &'a mut Handshake, _who: Who) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            c.send(format!("JOIN {}\r\n", self.channel).as_bytes())
                .await?;
            loop {
                let l = self.next(c, "the end of NAMES (366) after JOIN").await?;
                let m = Msg::split(&l);
                if m.cmd == b"366" && m.param(1).eq_ignore_ascii_case(self.channel.as_bytes()) {
                    return Ok(());
                }
                if matches!(
                    m.cmd,
                    b"403" | b"405" | b"437" | b"471" | b"473" | b"474" | b"475" | b"476" | b"477"
                ) {
                    bail!("JOIN {} refused: \"{}\"", self.channel, show(&l));
                }
            }
        })
    }

    fn put_message(&self, out: &mut BytesMut, payload: &[u8]) {
        out.put_slice(b"PRIVMSG ");
        out.put_slice(self.channel.as_bytes());
        out.put_slice(b" :");
        out.put_slice(payload);
        out.put_slice(b"\r\n");
    }

    fn parse(&self, buf: &[u8], ev: &mut dyn Events) -> Result<usize, String> {
        let mut pos = 0;
        while let Some(off) = memchr::memchr(b'\n', &buf[pos..]) {
            let mut line = &buf[pos..pos + off];
            pos += off + 1;
            if let Some(l) = line.strip_suffix(b"\r") {
                line = l;
            }
            if line.first() != Some(&b':') {
                if let Some(args) = line.strip_prefix(b"PING") {
                    ev.reply(&pong(args));
                    continue;
                }
                if line.starts_with(b"ERROR") {
                    ev.server_error(line);
                }
                ev.other();
                continue;
            }
            // The hot path, without splitting: `:src PRIVMSG <target> :<payload>`.
            let Some(sp) = memchr::memchr(b' ', line) else {
                ev.other();
                continue;
            };
            let rest = &line[sp + 1..];
            if let Some(after) = rest.strip_prefix(b"PRIVMSG ") {
                // The text's `:` is optional when it is one word (RFC 1459's grammar).
                match memchr::memchr(b' ', after) {
                    Some(t) => {
                        let text = &after[t + 1..];
                        let text = text.strip_prefix(b":").unwrap_or(text);
                        if after[..t].eq_ignore_ascii_case(self.channel.as_bytes()) {
                            ev.payload(text);
                        } else {
                            ev.other(); // a private message, or another channel
                        }
                    }
                    _ => ev.malformed(),
                }
                continue;
            }
            let cmd = &rest[..memchr::memchr(b' ', rest).unwrap_or(rest.len())];
            if is_error_numeric(cmd) {
                ev.server_error(line);
            }
            ev.other();
        }
        Ok(pos)
    }

    fn settle_quiet(&self) -> std::time::Duration {
        // Every JOIN is announced to everyone already in the channel.
        std::time::Duration::from_millis(300)
    }

    fn rate_hint(&self) -> &'static str {
        "; is flood control off for the senders (e.g. --irc-oper, --irc-sender-modes +F)?"
    }

    fn check(&self, clients: usize) -> Result<()> {
        let longest = format!(
            "{}{}x{NICK_RETRIES}",
            self.nick_prefix,
            clients.saturating_sub(1)
        );
        // linechat's rule is a subset of IRC's; 30 is the shortest NICKLEN among the peers.
        if linechat::core::names::validate_nick(&longest).is_err() || longest.len() > 30 {
            bail!("--nick-prefix for IRC must start with a letter, use only letters, digits and - _ [ ] \\ ` ^ {{ }} |, and leave room for the client number within 30 characters");
        }
        let ch = self.channel.as_bytes();
        if ch.len() < 2 || ch.len() > 50 || ch.iter().any(|&b| b <= b' ' || b == b',' || b == 7) {
            bail!("--room must be 1 to 49 characters without spaces, commas or control characters for IRC");
        }
        if let Some((name, pass)) = &self.oper {
            if name.is_empty() || pass.is_empty() || format!("{name}{pass}").contains(' ') {
                bail!("--irc-oper must be NAME:PASSWORD without spaces");
            }
        }
        if self.sender_modes.is_some() && self.oper.is_none() {
            bail!("--irc-sender-modes needs --irc-oper (modes such as +F are for operators)");
        }
        Ok(())
    }

    fn warnings(&self) -> Vec<String> {
        if self.msg_size > SAFE_PAYLOAD {
            vec![format!(
                "--msg-size above {SAFE_PAYLOAD}: an IRC line is at most 512 bytes with the sender's prefix, so servers may cut it"
            )]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_lines() {
        let m = Msg::split(b":irc.local 366 b1 #lobby :End of /NAMES list.");
        assert_eq!(m.prefix, Some(&b"irc.local"[..]));
        assert_eq!(m.cmd, b"366");
        assert_eq!(
            m.params,
            vec![&b"b1"[..], b"#lobby", b"End of /NAMES list."]
        );
        let m = Msg::split(b"PING :abc def");
        assert_eq!(m.prefix, None);
        assert_eq!(m.params, vec![&b"abc def"[..]]);
        let m = Msg::split(b":b0!~bench@localhost MODE b0 :+F");
        assert_eq!(m.params, vec![&b"b0"[..], b"+F"]);
        assert_eq!(pong(b" :x.y"), b"PONG :x.y\r\n");
        assert!(is_error_numeric(b"433") && !is_error_numeric(b"366") && !is_error_numeric(b"4a3"));
    }
}
