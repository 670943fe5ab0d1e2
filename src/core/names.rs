//! Nicknames and room names: one rule for every protocol, so every name a netcat user can pick
//! is a valid IRC nickname and every room is an IRC channel (`dev` is `#dev`).

use thiserror::Error;

pub const MAX_NICK: usize = 32;
pub const MAX_ROOM: usize = 32;

/// Nicknames no one may take: the server's own service, and names a client could use to pass
/// its lines off as the server's or a service's.
pub const RESERVED: &[&str] = &[
    "linechat", "server", "nickserv", "chanserv", "operserv", "memoserv", "botserv", "hostserv",
];

/// Every word the server starts a line with (`Error: …`, `Welcome to the chat, …`, `pong`), so
/// that a user's line, which always starts `nick: `, can never be one of the server's: a user
/// called `Error` could otherwise type `line too long (max 1024 bytes); it was not sent.` and
/// produce the server's error byte for byte. Reserved whatever the case, like [`RESERVED`].
/// A test scans the line protocol's sources for the lines they send, so a new one cannot be
/// forgotten here.
pub const SERVER_WORDS: &[&str] = &[
    "active",
    "addresses",
    "average",
    "bans",
    "bytes",
    "client",
    "cluster",
    "commands",
    "connections",
    "deliveries",
    "disconnects",
    "error",
    "fan-out",
    "flood",
    "from",
    "goodbye",
    "history",
    "in",
    "messages",
    "modes",
    "mutes",
    "no",
    "nobody",
    "nothing",
    "please",
    "pong",
    "queued",
    "rooms",
    "round-trip",
    "tcp",
    "tls",
    "this",
    "to",
    "too",
    "topic",
    "total",
    "transcript",
    "type",
    "unknown",
    "uptime",
    "usage",
    "warning",
    "welcome",
    "you",
    "your",
];

/// Whether `name` is reserved: a service's name or a word the server starts lines with.
pub fn is_reserved(name: &str) -> bool {
    RESERVED
        .iter()
        .chain(SERVER_WORDS)
        .any(|r| r.eq_ignore_ascii_case(name))
}

/// Why a nickname was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NickError {
    #[error("invalid nickname")]
    Invalid,
    #[error("nickname {0} is reserved")]
    Reserved(String),
    #[error("nickname {0} is taken")]
    Taken(String),
}

/// Why a room could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RoomError {
    #[error("invalid room name")]
    InvalidName,
    #[error("no room called {0}")]
    NoSuchRoom(String),
    #[error("already in {0}")]
    AlreadyThere(std::sync::Arc<str>),
    #[error("not in {0}")]
    NotThere(std::sync::Arc<str>),
    #[error("not an operator of {0}")]
    NotOperator(std::sync::Arc<str>),
    /// A change named someone who is not connected.
    #[error("nobody called {0} is connected")]
    NoSuchNick(String),
    /// A change named someone who is not in the room.
    #[error("{nick} is not in {room}")]
    NotInRoom {
        nick: String,
        room: std::sync::Arc<str>,
    },
    /// A ban names the member: it may not enter.
    #[error("banned from {0}")]
    Banned(std::sync::Arc<str>),
    /// The room is invite-only and the member was not invited.
    #[error("{0} is invite-only")]
    InviteOnly(std::sync::Arc<str>),
    /// The member is in the room but may not speak there.
    #[error("cannot speak in {room}")]
    Silenced {
        room: std::sync::Arc<str>,
        why: super::modes::Silenced,
    },
    /// A ban or mute that is no `nick!user@host` mask.
    #[error("{0} is not a nick!user@host mask")]
    InvalidMask(String),
    /// The room's ban or mute list holds `limit` masks already.
    #[error("the list of {room} is full ({limit})")]
    ListFull {
        room: std::sync::Arc<str>,
        limit: usize,
    },
    /// An invitation for someone who is in the room already.
    #[error("{nick} is already in {room}")]
    AlreadyIn {
        nick: String,
        room: std::sync::Arc<str>,
    },
    /// The member created `limit` rooms in the last minute.
    #[error("created {limit} rooms in the last minute; try again in {retry_secs} s")]
    TooManyCreated { limit: u32, retry_secs: u64 },
}

/// Characters IRC allows in nicknames besides letters and digits. `.` (allowed by version 1)
/// is not among them: IRC reads it as part of a server name.
fn nick_special(c: char) -> bool {
    matches!(
        c,
        '_' | '-' | '[' | ']' | '\\' | '^' | '{' | '}' | '|' | '`'
    )
}

/// ASCII only, starting with a letter, so nobody can impersonate someone with look-alike
/// Unicode or a name that reads as a command or a channel.
pub fn validate_nick(name: &str) -> Result<(), NickError> {
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || nick_special(c));
    if !(starts_with_letter && rest_ok && name.len() <= MAX_NICK) {
        return Err(NickError::Invalid);
    }
    if is_reserved(name) {
        return Err(NickError::Reserved(name.to_owned()));
    }
    Ok(())
}

/// The lookup key of a nickname: ASCII case-insensitive (`CASEMAPPING=ascii`).
pub fn nick_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// The display name and lookup key of a room name as typed. A leading `#` is dropped (IRC
/// users type it, and `#dev` is `dev`); the rest is 1-32 ASCII letters, digits, `_`, `-` or
/// `.`, starting with a letter.
pub fn room_name(typed: &str) -> Result<(&str, String), RoomError> {
    let name = typed.strip_prefix('#').unwrap_or(typed);
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if starts_with_letter && rest_ok && name.len() <= MAX_ROOM {
        Ok((name, name.to_ascii_lowercase()))
    } else {
        Err(RoomError::InvalidName)
    }
}

/// A wildcard pattern over names (IRC's WHO masks): `*` is any run of characters, `?` any one;
/// compared as nicknames are, ASCII case-insensitively, so `coolNi*` finds `coolnick`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask(Vec<char>);

impl Mask {
    pub fn new(pattern: &str) -> Mask {
        Mask(pattern.chars().map(|c| c.to_ascii_lowercase()).collect())
    }

    /// Whether the pattern holds a wildcard, i.e. can match more than one name.
    pub fn is_wild(&self) -> bool {
        self.0.iter().any(|&c| c == '*' || c == '?')
    }

    pub fn matches(&self, text: &str) -> bool {
        let pattern = &self.0;
        // Greedy with one backtrack point, the last `*`: linear in practice, never exponential.
        let (mut p, mut t) = (0, 0); // index into the pattern, byte offset into the text
        let mut star: Option<(usize, usize)> = None; // (pattern after the `*`, text it took up to)
        loop {
            let next = text[t..].chars().next();
            match (pattern.get(p), next) {
                (Some('*'), _) => {
                    p += 1;
                    star = Some((p, t));
                    continue;
                }
                (Some(&want), Some(got)) if want == '?' || want == got.to_ascii_lowercase() => {
                    p += 1;
                    t += got.len_utf8();
                    continue;
                }
                (None, None) => return true,
                _ => {}
            }
            let Some((after_star, taken)) = star else {
                return false;
            };
            let Some(one_more) = text[taken..].chars().next() else {
                return false;
            };
            let taken = taken + one_more.len_utf8();
            star = Some((after_star, taken));
            (p, t) = (after_star, taken);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nickname_rules() {
        for ok in [
            "a",
            "Alice",
            "bob_2",
            "c-d",
            "x[1]",
            "y^{}|`\\",
            &"x".repeat(MAX_NICK),
        ] {
            assert_eq!(validate_nick(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "_a",
            "a b",
            "al!ce",
            "a.b",
            "аlice",
            "/nick",
            "#chan",
            &"x".repeat(MAX_NICK + 1),
        ] {
            assert_eq!(validate_nick(bad), Err(NickError::Invalid), "{bad}");
        }
        for reserved in [
            "LineChat", "ERROR", "Warning", "usage", "NickServ", "Server", "pong",
        ] {
            assert!(
                matches!(validate_nick(reserved), Err(NickError::Reserved(_))),
                "{reserved}"
            );
        }
    }

    #[test]
    fn room_names() {
        assert_eq!(room_name("Dev").unwrap(), ("Dev", "dev".to_owned()));
        assert_eq!(room_name("#ops").unwrap(), ("ops", "ops".to_owned()));
        assert_eq!(room_name("#v1.2").unwrap(), ("v1.2", "v1.2".to_owned()));
        for bad in ["", "#", "9x", "a b", "##x", "é", "a,b"] {
            assert_eq!(room_name(bad), Err(RoomError::InvalidName), "{bad}");
        }
    }

    #[test]
    fn masks_match_like_irc_who() {
        let cases = [
            ("coolNick", "coolNick", true),
            ("coolnick", "COOLNICK", true),
            ("coolni*", "coolNick", true),
            ("coolni*", "coolNi", true),
            ("coolni*", "xcoolNick", false),
            ("*", "", true),
            ("*", "anything", true),
            ("", "", true),
            ("", "a", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a?c", "aéc", true),
            ("*usernam", "~myusernam", true),
            ("*UniqueReal*", "My UniqueReal Name", true),
            ("*a*b*c", "xxaxxbxxbxxc", true),
            ("*a*b*c", "xxaxxbxxbxxcx", false),
            ("127.0.0.*", "127.0.0.1", true),
            ("**?", "x", true),
            ("**?", "", false),
            ("é*", "É", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                Mask::new(pattern).matches(text),
                expected,
                "{pattern:?} against {text:?}"
            );
        }
        assert!(Mask::new("a*").is_wild() && Mask::new("a?").is_wild());
        assert!(!Mask::new("alice").is_wild());
    }
}
