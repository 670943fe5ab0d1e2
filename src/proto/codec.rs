//! Line framing and the text policy for what a client may send.
//!
//! Framing is separate from validation so each can be reasoned about (and fuzzed) alone: the
//! decoder only finds line boundaries and enforces the length bound; [`check_text`] decides
//! whether a framed line is text we are willing to show other people's terminals.

use bytes::{Buf, Bytes, BytesMut};
use memchr::memchr;
use thiserror::Error;

/// One unit of input from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete line without its `\n` or `\r\n` ending.
    Line(Bytes),
    /// A line longer than the limit. Reported once, as soon as the limit is crossed; the rest of
    /// that line is discarded up to its `\n` without being buffered.
    TooLong,
}

/// Splits a byte stream into lines of at most `max_line` bytes.
///
/// Memory bound: between calls the buffer holds at most `max_line + 1` bytes of an unfinished
/// line (the `+ 1` is a `\r` that may turn out to be part of the ending), plus whatever the last
/// read appended. While skipping an over-long line nothing is kept at all.
#[derive(Debug)]
pub struct LineDecoder {
    max_line: usize,
    /// Inside an over-long line: drop bytes until the next `\n`.
    skipping: bool,
    /// How much of the buffer is already known to hold no `\n`, so a line that arrives in many
    /// small pieces is scanned once, not once per piece.
    scanned: usize,
}

impl LineDecoder {
    pub fn new(max_line: usize) -> Self {
        LineDecoder {
            max_line,
            skipping: false,
            scanned: 0,
        }
    }

    /// The next frame in `buf`, consuming it, or `None` when `buf` holds no complete frame yet.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        if self.skipping {
            match memchr(b'\n', buf) {
                Some(end) => {
                    buf.advance(end + 1);
                    self.skipping = false;
                }
                None => {
                    buf.clear();
                    return None;
                }
            }
        }
        match memchr(b'\n', &buf[self.scanned..]) {
            Some(offset) => {
                let end = self.scanned + offset;
                self.scanned = 0;
                let mut line = buf.split_to(end + 1);
                line.truncate(end);
                if line.last() == Some(&b'\r') {
                    line.truncate(end - 1);
                }
                if line.len() > self.max_line {
                    Some(Frame::TooLong)
                } else {
                    Some(Frame::Line(line.freeze()))
                }
            }
            None if buf.len() > self.max_line + 1 => {
                // Even if the last byte is a `\r` that belongs to the ending, the line already
                // has more than `max_line` bytes: say so now rather than at its end, which may
                // never come.
                buf.clear();
                self.scanned = 0;
                self.skipping = true;
                Some(Frame::TooLong)
            }
            None => {
                self.scanned = buf.len();
                None
            }
        }
    }

    /// The connection ended: a final line without `\n` still counts, so that text typed before
    /// Ctrl-D in netcat is not lost.
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        if let Some(frame) = self.decode(buf) {
            return Some(frame);
        }
        if self.skipping || buf.is_empty() {
            buf.clear();
            return None;
        }
        self.scanned = 0;
        let mut line = buf.split();
        if line.last() == Some(&b'\r') {
            line.truncate(line.len() - 1);
        }
        Some(Frame::Line(line.freeze()))
    }

    pub fn max_line(&self) -> usize {
        self.max_line
    }
}

/// Why a framed line was refused. The `Display` text is what the sender is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum LineError {
    #[error("Error: line too long (max {0} bytes); it was not sent.")]
    TooLong(usize),
    #[error("Error: line is not valid UTF-8 text; it was not sent.")]
    InvalidUtf8,
    #[error(
        "Error: line contains a control character ({0}); terminal escape sequences and other \
         control characters are not allowed, so it was not sent."
    )]
    ControlChar(ControlChar),
}

/// A refused control character, shown in the error as `U+001B` so the sender can find it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlChar(pub char);

impl std::fmt::Display for ControlChar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "U+{:04X}", self.0 as u32)
    }
}

/// Accepts a line as chat text: valid UTF-8 with no control characters except TAB. `char::
/// is_control` is exactly Unicode's `Cc` category: C0, DEL and C1, which covers ESC-based ANSI
/// sequences and the 8-bit CSI (U+009B) alike.
pub fn check_text(line: &[u8]) -> Result<&str, LineError> {
    let text = std::str::from_utf8(line).map_err(|_| LineError::InvalidUtf8)?;
    match text.chars().find(|&c| c != '\t' && c.is_control()) {
        Some(c) => Err(LineError::ControlChar(ControlChar(c))),
        None => Ok(text),
    }
}

/// Another protocol's client that reached the chat port by mistake (a browser, `curl`, a TLS
/// client, `ssh`). Recognised on the first line at the nickname prompt, so it is told what this
/// port is and closed instead of being welcomed as a guest (an HTTP request's blank line would
/// otherwise pick a `guest-N` name, and an SSH banner is a valid nickname).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ForeignProtocol {
    #[error(
        "Error: this is a linechat chat server, not a web server; connect with a line-based \
         client such as nc HOST PORT."
    )]
    Http,
    #[error(
        "Error: this chat server speaks plain text, not TLS; connect with a line-based client \
         such as nc HOST PORT."
    )]
    Tls,
    #[error(
        "Error: this is a linechat chat server, not an SSH server; connect with a line-based \
         client such as nc HOST PORT."
    )]
    Ssh,
}

/// Recognises the first line another protocol's client sends.
pub fn foreign_protocol(line: &[u8]) -> Option<ForeignProtocol> {
    // A TLS record carrying a handshake: content type 22, protocol major version 3.
    if line.starts_with(&[0x16, 0x03]) {
        return Some(ForeignProtocol::Tls);
    }
    if line.starts_with(b"SSH-2.0-") || line.starts_with(b"SSH-1.") {
        return Some(ForeignProtocol::Ssh);
    }
    // An HTTP/1 request line: `METHOD target HTTP/x.y`.
    let mut words = line.split(|&b| b == b' ');
    let (Some(method), Some(_target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return None;
    };
    let is_method = !method.is_empty() && method.iter().all(u8::is_ascii_uppercase);
    (is_method && version.starts_with(b"HTTP/")).then_some(ForeignProtocol::Http)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(decoder: &mut LineDecoder, buf: &mut BytesMut, input: &[u8]) -> Vec<Frame> {
        buf.extend_from_slice(input);
        std::iter::from_fn(|| decoder.decode(buf)).collect()
    }

    fn line(s: &str) -> Frame {
        Frame::Line(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn splits_several_lines_in_one_read_and_joins_split_lines() {
        let mut d = LineDecoder::new(16);
        let mut buf = BytesMut::new();
        assert_eq!(
            feed(&mut d, &mut buf, b"a\nb\r\nc"),
            vec![line("a"), line("b")]
        );
        assert_eq!(feed(&mut d, &mut buf, b"d"), vec![]);
        assert_eq!(feed(&mut d, &mut buf, b"e\r"), vec![]);
        assert_eq!(feed(&mut d, &mut buf, b"\n"), vec![line("cde")]);
    }

    #[test]
    fn limit_excludes_the_line_ending() {
        let mut d = LineDecoder::new(4);
        let mut buf = BytesMut::new();
        assert_eq!(feed(&mut d, &mut buf, b"abcd\r\n"), vec![line("abcd")]);
        assert_eq!(feed(&mut d, &mut buf, b"abcd\n"), vec![line("abcd")]);
        assert_eq!(feed(&mut d, &mut buf, b"abcde\n"), vec![Frame::TooLong]);
    }

    #[test]
    fn overlong_line_is_reported_once_and_skipped_without_buffering() {
        let mut d = LineDecoder::new(4);
        let mut buf = BytesMut::new();
        assert_eq!(feed(&mut d, &mut buf, b"abcdef"), vec![Frame::TooLong]);
        assert!(buf.is_empty());
        assert_eq!(feed(&mut d, &mut buf, &[b'x'; 100]), vec![]);
        assert!(buf.is_empty());
        assert_eq!(feed(&mut d, &mut buf, b"yy\nok\n"), vec![line("ok")]);
    }

    #[test]
    fn final_line_without_newline_survives_eof() {
        let mut d = LineDecoder::new(8);
        let mut buf = BytesMut::from(&b"bye"[..]);
        assert_eq!(d.decode(&mut buf), None);
        assert_eq!(d.decode_eof(&mut buf), Some(line("bye")));
        assert_eq!(d.decode_eof(&mut buf), None);
    }

    #[test]
    fn other_protocols_are_recognised_but_chat_is_not() {
        assert_eq!(
            foreign_protocol(b"GET / HTTP/1.1"),
            Some(ForeignProtocol::Http)
        );
        assert_eq!(
            foreign_protocol(b"POST /x?y=1 HTTP/1.0"),
            Some(ForeignProtocol::Http)
        );
        assert_eq!(
            foreign_protocol(b"\x16\x03\x01\x02\x00\x01"),
            Some(ForeignProtocol::Tls)
        );
        assert_eq!(
            foreign_protocol(b"SSH-2.0-OpenSSH_9.2p1"),
            Some(ForeignProtocol::Ssh)
        );
        for chat in [
            &b"alice"[..],
            b"",
            b"GET me HTTP",
            b"I read HTTP/1.1 docs",
            b"get / HTTP/1.1",
        ] {
            assert_eq!(foreign_protocol(chat), None, "{chat:?}");
        }
    }

    #[test]
    fn text_policy() {
        assert_eq!(check_text(b"caf\xc3\xa9\tok"), Ok("caf\u{e9}\tok"));
        assert_eq!(check_text(b"\xff"), Err(LineError::InvalidUtf8));
        assert_eq!(
            check_text(b"\x1b[2J"),
            Err(LineError::ControlChar(ControlChar('\u{1b}')))
        );
        assert_eq!(
            check_text("a\u{9b}b".as_bytes()),
            Err(LineError::ControlChar(ControlChar('\u{9b}')))
        );
        assert!(check_text(b"a\rb").is_err());
        assert!(check_text(b"\x7f").is_err());
    }
}
