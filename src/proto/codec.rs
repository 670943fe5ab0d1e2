//! Line framing and the text policy for what a client may send.
//!
//! Framing is separate from validation so each can be reasoned about (and fuzzed) alone: the
//! decoder only finds line boundaries and enforces the length bound; [`check_text`] decides
//! whether a framed line is text we are willing to show other people's terminals.

use std::borrow::Cow;

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
    #[error(
        "Error: line contains an invisible or direction-changing character ({0}); such \
         characters can disguise text or make it pass for someone else's, so it was not sent."
    )]
    Disguise(ControlChar),
}

/// A refused control character, shown in the error as `U+001B` so the sender can find it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlChar(pub char);

impl std::fmt::Display for ControlChar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "U+{:04X}", self.0 as u32)
    }
}

/// Accepts a line as chat text: valid UTF-8 with no control characters except TAB, and none
/// of the characters [`disguise`] refuses. `char::is_control` is exactly Unicode's `Cc`
/// category: C0, DEL and C1, which covers ESC-based ANSI sequences and the 8-bit CSI (U+009B)
/// alike.
pub fn check_text(line: &[u8]) -> Result<&str, LineError> {
    let text = std::str::from_utf8(line).map_err(|_| LineError::InvalidUtf8)?;
    if let Some(c) = text.chars().find(|&c| c != '\t' && c.is_control()) {
        return Err(LineError::ControlChar(ControlChar(c)));
    }
    match disguise(text) {
        Some(c) => Err(LineError::Disguise(ControlChar(c))),
        None => Ok(text),
    }
}

/// Characters that are never shown but change how the text around them is shown, refused in
/// everything a user sends (docs/PROTOCOL.md, "Text"):
///
/// - bidirectional controls: U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069 (a U+202E
///   turns `txt.exe` into `exe.txt` on screen, and can reorder a line so it reads as another);
/// - line and paragraph separators U+2028, U+2029 (some clients start a new line at them, so
///   one message could show as two, the second looking like the server's);
/// - invisible format characters: soft hyphen U+00AD, U+180E, zero-width space U+200B, word
///   joiner and invisible operators U+2060-U+2064, the deprecated U+206A-U+206F, the byte
///   order mark U+FEFF, U+FFF9-U+FFFB, and tags U+E0000-U+E007F.
fn always_refused(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{61c}'
            | '\u{180e}'
            | '\u{200b}'
            | '\u{200e}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{e0000}'..='\u{e007f}'
    )
}

/// The zero-width joiner (emoji sequences: 👩‍💻 is 👩 U+200D 💻) and non-joiner (Persian and
/// Indic spelling needs it), allowed only between two visible characters.
fn joiner(c: char) -> bool {
    matches!(c, '\u{200c}' | '\u{200d}')
}

fn visible(c: Option<char>) -> bool {
    c.is_some_and(|c| !c.is_whitespace() && !c.is_control() && !joiner(c) && !always_refused(c))
}

/// Tag characters spelling a region after U+1F3F4 (🏴 with tags is the flag of Scotland,
/// England or Wales), up to the cancel tag U+E007F.
fn flag_tag(c: &char) -> bool {
    ('\u{e0020}'..='\u{e007e}').contains(c)
}

/// The first character of `text` that could disguise it: one of the always refused ones, a
/// joiner that does not join two visible characters, or a tag outside a flag. `None` at once
/// for ASCII text, as every message is checked.
pub fn disguise(text: &str) -> Option<char> {
    let mut found = None;
    scan(text, |_, c| {
        found = Some(c);
        true
    });
    found
}

/// `text` without what [`disguise`] refuses, for text that is passed on rather than refused
/// (another protocol's quit message, say). Borrowed when there is nothing to remove.
pub fn strip_disguise(text: &str) -> Cow<'_, str> {
    let mut out: Option<String> = None;
    let mut kept = 0;
    scan(text, |at, c| {
        let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
        out.push_str(&text[kept..at]);
        kept = at + c.len_utf8();
        false
    });
    match out {
        None => Cow::Borrowed(text),
        Some(mut out) => {
            out.push_str(&text[kept..]);
            Cow::Owned(out)
        }
    }
}

/// Calls `refused` with the position of each character [`disguise`] refuses, until it returns
/// true. A joiner is judged by the characters kept around it.
fn scan(text: &str, mut refused: impl FnMut(usize, char) -> bool) {
    if text.is_ascii() {
        return;
    }
    let mut prev = None;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c == '\u{1f3f4}' {
            // A flag's tags are skipped only if the cancel tag closes them.
            let mut ahead = chars.clone();
            let mut tags = 0;
            while ahead.next_if(|(_, t)| flag_tag(t)).is_some() {
                tags += 1;
            }
            if tags > 0 && ahead.next_if(|&(_, t)| t == '\u{e007f}').is_some() {
                chars = ahead;
            }
        } else if always_refused(c)
            || (joiner(c) && !(visible(prev) && visible(chars.peek().map(|&(_, n)| n))))
        {
            if refused(at, c) {
                return;
            }
            continue;
        }
        prev = Some(c);
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
    if line.starts_with(&crate::net::tls::CLIENT_HELLO_START) {
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
    // Methods are case-sensitive in HTTP, but servers and clients in the wild accept and send
    // `get` and `post`: any letters will do, and `http/1.1` too, since no chat line at the
    // nickname prompt has this shape (three words are not a nickname).
    let is_method = !method.is_empty() && method.iter().all(u8::is_ascii_alphabetic);
    let is_version = version.len() > 5 && version[..5].eq_ignore_ascii_case(b"HTTP/");
    (is_method && is_version).then_some(ForeignProtocol::Http)
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
        for opening in [
            &b"get / HTTP/1.1"[..],
            b"post /x HTTP/1.0",
            b"Get / http/1.1",
        ] {
            assert_eq!(
                foreign_protocol(opening),
                Some(ForeignProtocol::Http),
                "{opening:?}"
            );
        }
        for chat in [
            &b"alice"[..],
            b"",
            b"GET me HTTP",
            b"GET me HTTP/",
            b"I read HTTP/1.1 docs",
            b"get2 / HTTP/1.1",
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

    #[test]
    fn invisible_and_direction_changing_characters_are_refused() {
        for c in [
            '\u{202e}',
            '\u{202a}',
            '\u{2066}',
            '\u{2069}',
            '\u{200e}',
            '\u{200f}',
            '\u{61c}',
            '\u{2028}',
            '\u{2029}',
            '\u{200b}',
            '\u{2060}',
            '\u{2064}',
            '\u{feff}',
            '\u{ad}',
            '\u{180e}',
            '\u{e0041}',
        ] {
            let line = format!("look{c}here");
            assert_eq!(
                check_text(line.as_bytes()),
                Err(LineError::Disguise(ControlChar(c))),
                "U+{:04X}",
                c as u32
            );
            assert_eq!(strip_disguise(&line), "lookhere");
        }
        assert_eq!(
            LineError::Disguise(ControlChar('\u{202e}'))
                .to_string()
                .split(';')
                .next(),
            Some("Error: line contains an invisible or direction-changing character (U+202E)")
        );
    }

    #[test]
    fn joiners_are_allowed_only_between_visible_characters() {
        // Emoji sequences, Persian spelling and subdivision flags pass.
        for ok in [
            "👩\u{200d}💻 at work",
            "👨\u{200d}👩\u{200d}👧",
            "🏳\u{fe0f}\u{200d}🌈",
            "می\u{200c}خواهم",
            "🏴\u{e0067}\u{e0062}\u{e0073}\u{e0063}\u{e0074}\u{e007f} go",
            "café ✓",
        ] {
            assert_eq!(check_text(ok.as_bytes()), Ok(ok), "{ok:?}");
            assert!(matches!(strip_disguise(ok), Cow::Borrowed(_)), "{ok:?}");
        }
        // A joiner at an edge, next to a space or another joiner, hides nothing visible.
        for (bad, stripped) in [
            ("\u{200d}Error", "Error"),
            ("end\u{200d}", "end"),
            ("a \u{200c}b", "a b"),
            ("a\u{200d}\u{200d}b", "a\u{200d}b"),
            ("a\u{200d}\u{202e}b", "ab"),
            ("🏴\u{e0067}\u{e0062} open flag", "🏴 open flag"),
            ("🏴\u{e007f}", "🏴"),
        ] {
            assert!(
                matches!(check_text(bad.as_bytes()), Err(LineError::Disguise(_))),
                "{bad:?}"
            );
            assert_eq!(strip_disguise(bad), stripped, "{bad:?}");
        }
    }
}
