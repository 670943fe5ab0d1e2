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
    "average",
    "bytes",
    "client",
    "commands",
    "connections",
    "deliveries",
    "disconnects",
    "error",
    "fan-out",
    "flood",
    "from",
    "goodbye",
    "in",
    "messages",
    "no",
    "nothing",
    "please",
    "pong",
    "queued",
    "rooms",
    "round-trip",
    "tcp",
    "this",
    "to",
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
}
