//! One IRC line as a borrowed [`Message`], and back: RFC 1459/2812 framing inside the line plus
//! IRCv3 message tags (<https://ircv3.net/specs/extensions/message-tags>).
//!
//! ```text
//! ['@' tags SPACE] [':' source SPACE] command [params]      (no CRLF: framing is done elsewhere)
//! ```
//!
//! [`parse`] is a pure function over a line whose `\r\n` was already removed; it borrows from
//! the line and allocates only the tag and parameter `Vec`s (and a tag value that contained an
//! escape). [`write()`] appends one message and its `\r\n` straight into a `BytesMut`, so a
//! broadcast is rendered once and its bytes are shared.
//!
//! Tolerated as real servers and clients send them: several spaces between parts, spaces at the
//! end, leading spaces, stray `;` in the tag section. Refused with a [`ParseError`]: the cases a
//! server must answer or cannot relay safely.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};
use thiserror::Error;

/// The longest message body, from the source (or command) to the end, without `\r\n`: RFC 1459
/// allows 512 bytes including the CRLF. A longer one is [`ParseError::InputTooLong`], which a
/// server answers with 417 ERR_INPUTTOOLONG.
pub const MAX_BODY_LEN: usize = 510;

/// The most tag data a client may send: the bytes between the leading `@` and the space that
/// ends the tag section, not counting either. The message-tags spec says "Clients MUST NOT send
/// messages with tag data exceeding 4094 bytes"; it counts the `@` and the space only in the
/// overall 8191-byte limit, so a client's tag section is at most 4096 bytes with both.
pub const MAX_CLIENT_TAG_DATA_LEN: usize = 4094;

/// The most parameters a message has (RFC 2812: 14 middle ones plus a trailing one). The 15th
/// parameter takes the rest of the line verbatim, spaces included, with or without a leading
/// `:`, exactly as RFC 2812's grammar reads; nothing is rejected or dropped for having more.
pub const MAX_PARAMS: usize = 15;

/// Why a line is not a message. The variants are the distinctions a server acts on; the server
/// words the reply (417 for both length errors, 421 for a bad command).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ParseError {
    /// Nothing but spaces: servers ignore such lines silently.
    #[error("the line is empty")]
    Empty,
    /// Tags or a source, but no command after them.
    #[error("the line has no command")]
    NoCommand,
    /// The command is neither letters nor a 3-digit numeric. The token is not kept, so that the
    /// error stays `Copy` and borrows nothing; a 421 reply can take it from the line.
    #[error("the command is neither letters nor a 3-digit numeric")]
    BadCommand,
    /// The part after the tags is longer than [`MAX_BODY_LEN`].
    #[error("the line is longer than {MAX_BODY_LEN} bytes without its tags")]
    InputTooLong,
    /// The tag data is longer than [`MAX_CLIENT_TAG_DATA_LEN`].
    #[error("the tags are longer than {MAX_CLIENT_TAG_DATA_LEN} bytes")]
    TagsTooLong,
    /// A tag with a value but no name (`@=x`). Names are otherwise not checked: the spec says
    /// implementations MUST NOT reject a message for an invalid tag name.
    #[error("a tag has a value but no name")]
    BadTag,
    /// NUL, CR or LF inside the line. IRC cannot carry them, and relaying a CR or LF would let
    /// a client forge a second line to everyone who receives it.
    #[error("the line contains NUL, CR or LF")]
    ForbiddenChar,
}

/// One message tag. A value is never `Some("")`: the spec makes `key` and `key=` the same, and
/// [`parse`] turns both into `None` so callers check one case; [`write()`] writes both as `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag<'a> {
    /// As sent, opaque: a leading `+` marks a client-only tag, a `vendor/` part a vendor's one.
    pub key: &'a str,
    /// Unescaped. Borrowed from the line unless the wire form held an escape.
    pub value: Option<Cow<'a, str>>,
}

impl<'a> Tag<'a> {
    /// A tag with a value, e.g. `Tag::new("msgid", id)`.
    pub fn new(key: &'a str, value: impl Into<Cow<'a, str>>) -> Self {
        Tag {
            key,
            value: Some(value.into()),
        }
    }

    /// A tag without a value, e.g. `bot` (the bot-mode tag).
    pub fn flag(key: &'a str) -> Self {
        Tag { key, value: None }
    }

    /// The value, or `""` for a tag without one (the spec treats the two alike).
    pub fn value(&self) -> &str {
        self.value.as_deref().unwrap_or("")
    }

    /// Client-only tags (`+name`) are the ones a server may relay from one client to others.
    pub fn is_client_only(&self) -> bool {
        self.key.starts_with('+')
    }
}

/// A parsed line, borrowing from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// In the order sent. Duplicates are kept; [`Message::tag`] gives the last one, which is
    /// the one the spec says counts.
    pub tags: Vec<Tag<'a>>,
    /// Without its leading `:`. Servers ignore what a client puts here.
    pub source: Option<&'a str>,
    /// As sent; compare with [`Message::is_command`] or [`Message::command_upper`], since IRC
    /// commands are case-insensitive.
    pub command: &'a str,
    /// At most [`MAX_PARAMS`], the trailing one without its `:`.
    pub params: Vec<&'a str>,
}

impl<'a> Message<'a> {
    /// The command in upper case, borrowed when it already is (as clients almost always send it).
    pub fn command_upper(&self) -> Cow<'a, str> {
        if self.command.bytes().any(|b| b.is_ascii_lowercase()) {
            Cow::Owned(self.command.to_ascii_uppercase())
        } else {
            Cow::Borrowed(self.command)
        }
    }

    /// Whether the command is `name`, ignoring ASCII case; allocation-free dispatch.
    pub fn is_command(&self, name: &str) -> bool {
        self.command.eq_ignore_ascii_case(name)
    }

    /// A numeric reply's code, e.g. `Some(1)` for `001`.
    pub fn numeric(&self) -> Option<u16> {
        if self.command.len() == 3 && self.command.bytes().all(|b| b.is_ascii_digit()) {
            self.command.parse().ok()
        } else {
            None
        }
    }

    /// The last tag named `key`: the spec says duplicates SHOULD be resolved that way.
    pub fn tag(&self, key: &str) -> Option<&Tag<'a>> {
        self.tags.iter().rev().find(|t| t.key == key)
    }

    /// The `i`th parameter, counting from 0.
    pub fn param(&self, i: usize) -> Option<&'a str> {
        self.params.get(i).copied()
    }

    /// Appends this message and `\r\n` to `out`; see [`write()`].
    pub fn write_to(&self, out: &mut BytesMut) {
        write(out, &self.tags, self.source, self.command, &self.params);
    }
}

/// Parses one line, given without its `\r\n`.
///
/// Lengths are checked before anything else, so an overlong line is always `InputTooLong` or
/// `TagsTooLong` whatever else is wrong with it: a server answers those with 417.
pub fn parse(line: &str) -> Result<Message<'_>, ParseError> {
    let line = line.trim_start_matches(' ');
    if line.is_empty() {
        return Err(ParseError::Empty);
    }

    let (tag_data, body) = match line.strip_prefix('@') {
        Some(tagged) => {
            let (data, body) = tagged.split_once(' ').unwrap_or((tagged, ""));
            (Some(data), body)
        }
        None => (None, line),
    };
    if tag_data.is_some_and(|d| d.len() > MAX_CLIENT_TAG_DATA_LEN) {
        return Err(ParseError::TagsTooLong);
    }
    if body.len() > MAX_BODY_LEN {
        return Err(ParseError::InputTooLong);
    }
    if has_forbidden(line) {
        return Err(ParseError::ForbiddenChar);
    }

    let tags = match tag_data {
        Some(data) => parse_tags(data)?,
        None => Vec::new(),
    };

    let mut rest = body.trim_start_matches(' ');
    let source = match rest.strip_prefix(':') {
        Some(prefixed) => {
            let (source, after) = split_token(prefixed);
            rest = after.trim_start_matches(' ');
            Some(source)
        }
        None => None,
    };

    let (command, mut rest) = split_token(rest);
    if command.is_empty() {
        return Err(ParseError::NoCommand);
    }
    if !is_valid_command(command) {
        return Err(ParseError::BadCommand);
    }

    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            break;
        }
        if let Some(trailing) = rest.strip_prefix(':') {
            params.push(trailing);
            break;
        }
        if params.len() == MAX_PARAMS - 1 {
            params.push(rest);
            break;
        }
        let (param, after) = split_token(rest);
        params.push(param);
        rest = after;
    }

    Ok(Message {
        tags,
        source,
        command,
        params,
    })
}

fn parse_tags(data: &str) -> Result<Vec<Tag<'_>>, ParseError> {
    let mut tags = Vec::new();
    // Empty items (`@a;;b`, a trailing `;`) are skipped: they carry nothing and some clients
    // send them.
    for item in data.split(';').filter(|item| !item.is_empty()) {
        let (key, raw) = match item.split_once('=') {
            Some((key, raw)) => (key, Some(raw)),
            None => (item, None),
        };
        if key.is_empty() {
            return Err(ParseError::BadTag);
        }
        let value = raw.map(unescape_tag_value).filter(|v| !v.is_empty());
        tags.push(Tag { key, value });
    }
    Ok(tags)
}

/// The token up to the next space, and what follows that space.
fn split_token(s: &str) -> (&str, &str) {
    s.split_once(' ').unwrap_or((s, ""))
}

fn is_valid_command(command: &str) -> bool {
    let bytes = command.as_bytes();
    !bytes.is_empty()
        && (bytes.iter().all(u8::is_ascii_alphabetic)
            || (bytes.len() == 3 && bytes.iter().all(u8::is_ascii_digit)))
}

fn is_forbidden(b: u8) -> bool {
    matches!(b, b'\0' | b'\r' | b'\n')
}

/// Whether `s` holds a byte [`is_forbidden`] refuses: one vectorised search, as every line in
/// and every part of every line out is checked.
fn has_forbidden(s: &str) -> bool {
    memchr::memchr3(b'\0', b'\r', b'\n', s.as_bytes()).is_some()
}

/// Decodes a tag value's escapes: `\:` `;`, `\s` space, `\\` `\`, `\r` CR, `\n` LF. As the spec
/// says, a backslash before any other character is dropped and a lone trailing one too.
/// Borrows when there is nothing to decode.
pub fn unescape_tag_value(raw: &str) -> Cow<'_, str> {
    let Some(first) = raw.find('\\') else {
        return Cow::Borrowed(raw);
    };
    let mut out = String::with_capacity(raw.len());
    out.push_str(&raw[..first]);
    let mut chars = raw[first..].chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(':') => out.push(';'),
            Some('s') => out.push(' '),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            // `\\` and any unknown escape alike: keep the character, drop the backslash.
            Some(other) => out.push(other),
            None => {}
        }
    }
    Cow::Owned(out)
}

/// Encodes a tag value for the wire, the inverse of [`unescape_tag_value`]. NUL has no escape
/// and may not appear in a line, so it is dropped. Borrows when nothing needs escaping.
pub fn escape_tag_value(value: &str) -> Cow<'_, str> {
    if !value.bytes().any(needs_tag_escape) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match tag_escape(c) {
            Some(escaped) => out.push_str(escaped),
            None => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_tag_escape(b: u8) -> bool {
    matches!(b, b';' | b' ' | b'\\' | b'\r' | b'\n' | b'\0')
}

fn tag_escape(c: char) -> Option<&'static str> {
    Some(match c {
        ';' => "\\:",
        ' ' => "\\s",
        '\\' => "\\\\",
        '\r' => "\\r",
        '\n' => "\\n",
        '\0' => "",
        _ => return None,
    })
}

/// Appends one message and its `\r\n` to `out`.
///
/// The last parameter gets a `:` when it needs one (empty, containing a space, or starting
/// with `:`); tag values are escaped and empty ones written as a bare key. The other parts are
/// the caller's to get right: the command letters or 3 digits, no space in the source or in a
/// tag key, no parameter but the last empty, spaced or starting with `:`, at most [`MAX_PARAMS`]
/// (checked by debug assertions). Whatever the caller passes, the output is exactly one line:
/// a NUL, CR or LF in any part becomes a space (in a tag value it is escaped, or NUL dropped).
///
/// Lengths are not checked: a server's replies are its own to keep within what clients accept.
pub fn write(
    out: &mut BytesMut,
    tags: &[Tag<'_>],
    source: Option<&str>,
    command: &str,
    params: &[&str],
) {
    write_params(out, tags, source, command, params, false)
}

/// [`write()`] for a command whose last parameter is text (PRIVMSG, NOTICE, TOPIC, QUIT…): it
/// always gets its `:`, as servers conventionally send it, so clients and scripts that look for
/// ` :` before the text find it even when the text is one word.
pub fn write_text(
    out: &mut BytesMut,
    tags: &[Tag<'_>],
    source: Option<&str>,
    command: &str,
    params: &[&str],
) {
    write_params(out, tags, source, command, params, true)
}

fn write_params(
    out: &mut BytesMut,
    tags: &[Tag<'_>],
    source: Option<&str>,
    command: &str,
    params: &[&str],
    text: bool,
) {
    debug_assert!(is_valid_command(command), "IRC command {command:?}");
    debug_assert!(params.len() <= MAX_PARAMS, "{} IRC params", params.len());
    debug_assert!(
        source.is_none_or(|s| !s.contains(' ')),
        "IRC source {source:?}"
    );

    // One reservation for the common case (no escapes) instead of growing piece by piece.
    let tags_len: usize = tags
        .iter()
        .map(|t| t.key.len() + t.value.as_deref().map_or(0, |v| v.len() + 1) + 1)
        .sum();
    let params_len: usize = params.iter().map(|p| p.len() + 2).sum();
    out.reserve(tags_len + 1 + source.map_or(0, |s| s.len() + 2) + command.len() + params_len + 2);

    if !tags.is_empty() {
        out.put_u8(b'@');
        for (i, tag) in tags.iter().enumerate() {
            debug_assert!(
                !tag.key.is_empty() && !tag.key.contains([' ', ';', '=']),
                "IRC tag key {:?}",
                tag.key
            );
            if i > 0 {
                out.put_u8(b';');
            }
            put_line_safe(out, tag.key);
            if let Some(value) = tag.value.as_deref().filter(|v| !v.is_empty()) {
                out.put_u8(b'=');
                put_escaped_tag_value(out, value);
            }
        }
        out.put_u8(b' ');
    }
    if let Some(source) = source {
        out.put_u8(b':');
        put_line_safe(out, source);
        out.put_u8(b' ');
    }
    put_line_safe(out, command);
    if let Some((last, middle)) = params.split_last() {
        for param in middle {
            debug_assert!(
                !param.is_empty() && !param.starts_with(':') && !param.contains(' '),
                "IRC middle param {param:?}"
            );
            out.put_u8(b' ');
            put_line_safe(out, param);
        }
        out.put_u8(b' ');
        if text
            || last.is_empty()
            || last.starts_with(':')
            || last.bytes().any(|b| b == b' ' || is_forbidden(b))
        {
            out.put_u8(b':');
        }
        put_line_safe(out, last);
    }
    out.extend_from_slice(b"\r\n");
}

/// Copies `s`, turning the bytes a line cannot hold into spaces. They are never expected (user
/// text reaches here through framing that splits on them), so the fix-up pass is the rare path.
fn put_line_safe(out: &mut BytesMut, s: &str) {
    let start = out.len();
    out.extend_from_slice(s.as_bytes());
    if has_forbidden(s) {
        for b in &mut out[start..] {
            if is_forbidden(*b) {
                *b = b' ';
            }
        }
    }
}

fn put_escaped_tag_value(out: &mut BytesMut, value: &str) {
    let mut plain = 0;
    for (i, b) in value.bytes().enumerate() {
        if needs_tag_escape(b) {
            out.extend_from_slice(&value.as_bytes()[plain..i]);
            out.extend_from_slice(tag_escape(char::from(b)).unwrap_or_default().as_bytes());
            plain = i + 1;
        }
    }
    out.extend_from_slice(&value.as_bytes()[plain..]);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    fn render(tags: &[Tag<'_>], source: Option<&str>, command: &str, params: &[&str]) -> String {
        let mut out = BytesMut::new();
        write(&mut out, tags, source, command, params);
        String::from_utf8(out.to_vec()).unwrap()
    }

    fn body(rendered: &str) -> &str {
        rendered.strip_suffix("\r\n").expect("ends with CRLF")
    }

    /// The vectors' view of a message: tags as a map where the last duplicate wins and a tag
    /// without a value reads as "".
    #[derive(Debug, PartialEq)]
    struct Atoms {
        tags: BTreeMap<String, String>,
        source: Option<String>,
        verb: String,
        params: Vec<String>,
    }

    impl Atoms {
        fn of(m: &Message<'_>) -> Self {
            Atoms {
                tags: m
                    .tags
                    .iter()
                    .map(|t| (t.key.to_owned(), t.value().to_owned()))
                    .collect(),
                source: m.source.map(str::to_owned),
                verb: m.command.to_owned(),
                params: m.params.iter().map(|p| (*p).to_owned()).collect(),
            }
        }

        fn from_json(atoms: &Value) -> Self {
            Atoms {
                tags: atoms["tags"]
                    .as_object()
                    .map(|tags| {
                        tags.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default(),
                source: atoms["source"].as_str().map(str::to_owned),
                verb: atoms["verb"].as_str().unwrap().to_owned(),
                params: atoms["params"]
                    .as_array()
                    .map(|ps| ps.iter().map(|p| p.as_str().unwrap().to_owned()).collect())
                    .unwrap_or_default(),
            }
        }
    }

    fn vectors(json: &str) -> Vec<Value> {
        let doc: Value = serde_json::from_str(json).unwrap();
        doc["tests"].as_array().unwrap().clone()
    }

    #[test]
    fn ircdocs_msg_split() {
        let tests = vectors(include_str!("../../../tests/data/irc/msg-split.json"));
        assert_eq!(tests.len(), 35, "the vector file changed");
        for t in &tests {
            let input = t["input"].as_str().unwrap();
            let parsed = parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(
                Atoms::of(&parsed),
                Atoms::from_json(&t["atoms"]),
                "{input:?}"
            );
        }
    }

    #[test]
    fn ircdocs_msg_join() {
        let tests = vectors(include_str!("../../../tests/data/irc/msg-join.json"));
        assert_eq!(tests.len(), 18, "the vector file changed");
        for t in &tests {
            let desc = t["desc"].as_str().unwrap();
            let atoms = &t["atoms"];
            let tags: Vec<Tag<'_>> = atoms["tags"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| Tag::new(k.as_str(), v.as_str().unwrap()))
                .collect();
            let params: Vec<&str> = atoms["params"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| p.as_str().unwrap())
                .collect();
            let written = render(
                &tags,
                atoms["source"].as_str(),
                atoms["verb"].as_str().unwrap(),
                &params,
            );
            let ours = Atoms::of(&parse(body(&written)).unwrap());
            // Tag order and the optional `:` vary between the listed forms, so compare what
            // they mean, and require that ours means what one of them does.
            let matches = t["matches"].as_array().unwrap();
            assert!(
                matches
                    .iter()
                    .any(|m| Atoms::of(&parse(m.as_str().unwrap()).unwrap()) == ours),
                "{desc}: wrote {written:?}, expected one of {matches:?}"
            );
            // The vectors say a missing value MUST NOT become an empty one; we go further and
            // never write `key=`, which re-parsing cannot see.
            let tag_section = written.split(' ').next().unwrap();
            assert!(
                !tag_section.contains("=;") && !tag_section.ends_with('='),
                "{desc}: {written:?}"
            );
        }
    }

    #[test]
    fn typical_privmsg_borrows_everything() {
        let line = "@time=2024-05-01T12:00:00.000Z;msgid=AbC123 :nick!user@host PRIVMSG #chan :hello world";
        let m = parse(line).unwrap();
        assert_eq!(m.tags.len(), 2);
        assert!(m
            .tags
            .iter()
            .all(|t| matches!(t.value, Some(Cow::Borrowed(_)))));
        assert_eq!(m.tag("time").unwrap().value(), "2024-05-01T12:00:00.000Z");
        assert_eq!(m.source, Some("nick!user@host"));
        assert!(m.is_command("privmsg"));
        assert!(matches!(m.command_upper(), Cow::Borrowed("PRIVMSG")));
        assert_eq!(m.params, ["#chan", "hello world"]);
        assert_eq!(
            render(&m.tags, m.source, m.command, &m.params),
            format!("{line}\r\n")
        );
    }

    #[test]
    fn refusals() {
        let cases: &[(&str, ParseError)] = &[
            ("", ParseError::Empty),
            ("    ", ParseError::Empty),
            ("@a=b", ParseError::NoCommand),
            ("@a=b    ", ParseError::NoCommand),
            (":src", ParseError::NoCommand),
            (":src   ", ParseError::NoCommand),
            ("@a :src ", ParseError::NoCommand),
            ("PRIV1MSG x", ParseError::BadCommand),
            ("12 x", ParseError::BadCommand),
            ("1234 x", ParseError::BadCommand),
            ("PRIVMSG\u{e9} x", ParseError::BadCommand),
            (":src :cmd", ParseError::BadCommand),
            ("@=v CMD", ParseError::BadTag),
            ("@a;=v CMD", ParseError::BadTag),
            ("PRIVMSG #c :a\0b", ParseError::ForbiddenChar),
            ("PRIVMSG #c :a\rb", ParseError::ForbiddenChar),
            ("PRIVMSG #c :a\nQUIT", ParseError::ForbiddenChar),
            ("@a=\n CMD", ParseError::ForbiddenChar),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line), Err(*want), "{line:?}");
        }
    }

    #[test]
    fn body_limit_is_510_bytes_after_the_tags() {
        let fits = format!("PRIVMSG #c :{}", "x".repeat(MAX_BODY_LEN - 12));
        assert_eq!(fits.len(), MAX_BODY_LEN);
        assert!(parse(&fits).is_ok());
        assert_eq!(parse(&format!("{fits}x")), Err(ParseError::InputTooLong));
        // Tags do not count towards the body; the space that ends them does not either.
        let tagged = format!("@{} {fits}", "k".repeat(MAX_CLIENT_TAG_DATA_LEN));
        assert!(parse(&tagged).is_ok());
        assert_eq!(parse(&format!("@a {fits}x")), Err(ParseError::InputTooLong));
    }

    #[test]
    fn tag_limit_is_4094_bytes_of_tag_data() {
        let data = format!("a={}", "v".repeat(MAX_CLIENT_TAG_DATA_LEN - 2));
        assert!(parse(&format!("@{data} PING x")).is_ok());
        assert_eq!(
            parse(&format!("@{data}v PING x")),
            Err(ParseError::TagsTooLong)
        );
        // Without a command the length still decides first: the client gets 417, not 421.
        assert_eq!(parse(&format!("@{data}v")), Err(ParseError::TagsTooLong));
        // Length beats a bad character too: 417 is what the spec asks for.
        assert_eq!(parse(&format!("@{data}\0")), Err(ParseError::TagsTooLong));
    }

    #[test]
    fn fifteenth_param_takes_the_rest() {
        let middles: Vec<String> = (1..=14).map(|i| format!("p{i}")).collect();
        let line = format!("CMD {} last one  ", middles.join(" "));
        let m = parse(&line).unwrap();
        assert_eq!(m.params.len(), MAX_PARAMS);
        assert_eq!(m.params[14], "last one  ");
        let line = format!("CMD {} :last", middles.join(" "));
        assert_eq!(parse(&line).unwrap().params[14], "last");
    }

    #[test]
    fn tolerances() {
        let m = parse("  :src   PRIVMSG   #c    hi   ").unwrap();
        assert_eq!((m.source, m.command), (Some("src"), "PRIVMSG"));
        assert_eq!(m.params, ["#c", "hi"]);
        assert_eq!(parse("AWAY :").unwrap().params, [""]);
        let m = parse("@;a=1;;+b; TAGMSG #c").unwrap();
        assert_eq!(m.tags, [Tag::new("a", "1"), Tag::flag("+b")]);
        assert!(m.tags[1].is_client_only());
        let m = parse("@ PING x").unwrap();
        assert!(m.tags.is_empty());
        assert_eq!(parse("001 me :hi").unwrap().numeric(), Some(1));
        assert_eq!(parse("privmsg x").unwrap().command_upper(), "PRIVMSG");
    }

    #[test]
    fn empty_tag_values_are_absent() {
        let m = parse("@a=;b;c=\\ CMD").unwrap();
        assert_eq!(m.tags, [Tag::flag("a"), Tag::flag("b"), Tag::flag("c")]);
        assert_eq!(render(&[Tag::new("a", "")], None, "CMD", &[]), "@a CMD\r\n");
    }

    #[test]
    fn duplicate_tags_last_wins() {
        let m = parse("@a=1;b=2;a=3 CMD").unwrap();
        assert_eq!(m.tag("a").unwrap().value(), "3");
        assert_eq!(m.tag("zz"), None);
    }

    #[test]
    fn tag_value_escapes() {
        assert_eq!(
            unescape_tag_value("a\\:b\\sc\\\\d\\re\\nf"),
            "a;b c\\d\re\nf"
        );
        assert_eq!(unescape_tag_value("x\\y"), "xy");
        assert_eq!(unescape_tag_value("x\\"), "x");
        assert_eq!(unescape_tag_value("\\\\\\"), "\\");
        assert!(matches!(unescape_tag_value("plain"), Cow::Borrowed(_)));
        assert_eq!(escape_tag_value("a;b c\\d\re\nf"), "a\\:b\\sc\\\\d\\re\\nf");
        assert_eq!(escape_tag_value("nul\0dropped"), "nuldropped");
        assert!(matches!(escape_tag_value("pl:ain"), Cow::Borrowed(_)));
        let mut out = BytesMut::new();
        put_escaped_tag_value(&mut out, "a;b c\\d\re\nf\0");
        assert_eq!(&out[..], escape_tag_value("a;b c\\d\re\nf\0").as_bytes());
    }

    #[test]
    fn write_trailing_rule() {
        assert_eq!(render(&[], None, "PING", &["x"]), "PING x\r\n");
        assert_eq!(render(&[], None, "AWAY", &[""]), "AWAY :\r\n");
        assert_eq!(render(&[], None, "AWAY", &[]), "AWAY\r\n");
        assert_eq!(
            render(&[], Some("n!u@h"), "PRIVMSG", &["#c", ":)"]),
            ":n!u@h PRIVMSG #c ::)\r\n"
        );
        assert_eq!(
            render(&[], Some("srv"), "001", &["nick", "Welcome home"]),
            ":srv 001 nick :Welcome home\r\n"
        );
    }

    #[test]
    fn write_never_emits_a_second_line() {
        let written = render(
            &[Tag::new("k", "v\r\n\0")],
            Some("s\r"),
            "PRIVMSG",
            &["#c", "hi\r\nQUIT"],
        );
        assert_eq!(written, "@k=v\\r\\n :s  PRIVMSG #c :hi  QUIT\r\n");
        // The spaces make the source end early; that is a caller bug, but still one line.
        assert_eq!(written.matches("\r\n").count(), 1);
    }

    #[test]
    fn write_appends() {
        let mut out = BytesMut::from(&b"PING a\r\n"[..]);
        write(&mut out, &[], None, "PING", &["b"]);
        assert_eq!(&out[..], b"PING a\r\nPING b\r\n");
    }

    // --- properties ---

    fn arb_tag() -> impl Strategy<Value = (String, Option<String>)> {
        (
            "\\+?([a-z0-9.-]{1,6}/)?[A-Za-z0-9-]{1,8}",
            // Anything but NUL (which has no escape), never empty (parse reads `k=` as `k`).
            prop::option::of("[^\\x00]{1,12}"),
        )
    }

    fn arb_middle() -> impl Strategy<Value = String> {
        "[^ \\x00\\r\\n:][^ \\x00\\r\\n]{0,4}"
    }

    prop_compose! {
        fn arb_message()(
            tags in prop::collection::vec(arb_tag(), 0..4),
            source in prop::option::of("[^ \\x00\\r\\n]{1,12}"),
            command in "[A-Za-z]{1,10}|[0-9]{3}",
            middles in prop::collection::vec(arb_middle(), 0..MAX_PARAMS),
            last in prop::option::of("[^\\x00\\r\\n]{0,16}"),
        ) -> (Vec<(String, Option<String>)>, Option<String>, String, Vec<String>) {
            let mut params = middles;
            params.extend(last);
            params.truncate(MAX_PARAMS);
            (tags, source, command, params)
        }
    }

    /// Lines made of the characters the grammar cares about, so every branch gets exercised.
    fn arb_ircish() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                4 => Just(' '),
                2 => Just(':'),
                1 => Just('@'),
                2 => Just(';'),
                2 => Just('='),
                2 => Just('\\'),
                1 => Just('+'),
                6 => prop::char::range('a', 'e'),
                2 => prop::char::range('0', '9'),
                1 => any::<char>(),
            ],
            0..64,
        )
        .prop_map(|cs| cs.into_iter().collect())
    }

    /// What holds for every line `parse` accepts: the message fits its grammar, and writing it
    /// out and parsing again gives it back (unless re-adding a `:` pushed it over the limit).
    fn check_parsed(line: &str) -> Result<(), TestCaseError> {
        let Ok(m) = parse(line) else {
            return Ok(());
        };
        prop_assert!(m.params.len() <= MAX_PARAMS);
        prop_assert!(is_valid_command(m.command));
        prop_assert!(m.tags.iter().all(|t| t.value.as_deref() != Some("")));
        let written = render(&m.tags, m.source, m.command, &m.params);
        prop_assert_eq!(written.matches("\r\n").count(), 1);
        let written = body(&written);
        match parse(written) {
            Ok(again) => prop_assert_eq!(again, m),
            Err(ParseError::InputTooLong) => {
                let after_tags = written
                    .strip_prefix('@')
                    .map_or(written, |t| t.split_once(' ').unwrap().1);
                prop_assert!(after_tags.len() > MAX_BODY_LEN);
            }
            Err(e) => prop_assert!(false, "{written:?} no longer parses: {e}"),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn parse_never_panics_on_any_string(line in any::<String>()) {
            check_parsed(&line)?;
        }

        #[test]
        fn parse_never_panics_on_irc_like_lines(line in arb_ircish()) {
            check_parsed(&line)?;
        }

        #[test]
        fn parse_inverts_write((tags, source, command, params) in arb_message()) {
            let tags: Vec<Tag<'_>> = tags
                .iter()
                .map(|(k, v)| Tag { key: k, value: v.as_deref().map(Cow::Borrowed) })
                .collect();
            let params: Vec<&str> = params.iter().map(String::as_str).collect();
            let written = render(&tags, source.as_deref(), &command, &params);
            let m = parse(body(&written)).map_err(|e| TestCaseError::fail(format!("{written:?}: {e}")))?;
            prop_assert_eq!(m.tags, tags);
            prop_assert_eq!(m.source, source.as_deref());
            prop_assert_eq!(m.command, command.as_str());
            prop_assert_eq!(m.params, params);
        }
    }
}
