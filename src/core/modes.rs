//! A room's modes and a member's standing in it: plain values that events carry and rooms
//! keep, below both so neither needs the other to name them.

/// What a room's operators may change about it (IRC's channel modes `+t`, `+s`, `+m`, `+i`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes {
    /// Only operators set the topic. On in every new room, since its creator is its operator
    /// and a topic anyone may overwrite is rarely what a room wants.
    pub topic_lock: bool,
    /// The room is listed, and its members, topic and history shown, only to its members; it
    /// can still be entered by name.
    pub secret: bool,
    /// Only operators and those with a voice speak (IRC `+m`).
    pub moderated: bool,
    /// Only those an operator invited enter (IRC `+i`).
    pub invite_only: bool,
}

impl Modes {
    /// A new room's settings.
    pub const NEW: Modes = Modes {
        topic_lock: true,
        secret: false,
        moderated: false,
        invite_only: false,
    };
}

/// One change to a room: its modes, someone's standing in it, or its ban and mute lists.
/// `Who` names the member or the mask: as typed in a request, as registered (or normalised,
/// for a mask) in the change made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode<Who> {
    TopicLock(bool),
    Secret(bool),
    Moderated(bool),
    InviteOnly(bool),
    Operator(bool, Who),
    Voice(bool, Who),
    /// A `nick!user@host` mask that may neither enter nor speak (IRC `+b`).
    Ban(bool, Who),
    /// A mask that may be in the room but not speak in it (IRC `+q`, as Solanum and
    /// Charybdis name their quiet list).
    Mute(bool, Who),
}

impl<Who> Mode<Who> {
    /// Whether the change turns something on (`+`) rather than off (`-`).
    pub fn on(&self) -> bool {
        match self {
            Mode::TopicLock(on)
            | Mode::Secret(on)
            | Mode::Moderated(on)
            | Mode::InviteOnly(on)
            | Mode::Operator(on, _)
            | Mode::Voice(on, _)
            | Mode::Ban(on, _)
            | Mode::Mute(on, _) => *on,
        }
    }

    /// Whether the change is to the room's flags (kept in the store with them).
    pub fn is_flag(&self) -> bool {
        matches!(
            self,
            Mode::TopicLock(_) | Mode::Secret(_) | Mode::Moderated(_) | Mode::InviteOnly(_)
        )
    }
}

/// Someone's standing in a room (IRC's `@` and `+`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standing {
    pub op: bool,
    pub voice: bool,
}

/// Why someone in a room may not speak in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silenced {
    /// A ban matches them (they were banned after they came in).
    Banned,
    /// A mute matches them.
    Muted,
    /// The room is moderated and they have neither a voice nor operator status.
    Moderated,
}

/// The mask a ban or mute names: `bob` is `bob!*@*`, `*@host` is `*!*@host`, `bob!u` is
/// `bob!u@*`, so a bare nickname bans that nickname, wherever it comes from. `None` for
/// something that is no mask: empty, too long, or holding a space, a comma or a control
/// character.
pub fn normalise_mask(typed: &str) -> Option<String> {
    if typed.is_empty()
        || typed.len() > MAX_MASK
        || typed.starts_with(':')
        || typed
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',')
    {
        return None;
    }
    let (nick, rest) = match typed.split_once('!') {
        Some((nick, rest)) => (nick, Some(rest)),
        None if typed.contains('@') => ("*", Some(typed)),
        None => (typed, None),
    };
    let (user, host) = match rest {
        None => ("*", "*"),
        Some(rest) => rest.split_once('@').unwrap_or((rest, "*")),
    };
    let part = |p: &str| {
        if p.is_empty() {
            "*".to_owned()
        } else {
            p.to_owned()
        }
    };
    let mask = format!("{}!{}@{}", part(nick), part(user), part(host));
    (mask.matches('!').count() == 1 && mask.matches('@').count() == 1).then_some(mask)
}

/// The longest mask kept: a nickname, a user name and an IPv6 address with room to spare.
pub const MAX_MASK: usize = 128;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_are_normalised_and_rubbish_is_refused() {
        for (typed, mask) in [
            ("bob", "bob!*@*"),
            ("*@10.0.0.1", "*!*@10.0.0.1"),
            ("bob!u", "bob!u@*"),
            ("bob!~b@host", "bob!~b@host"),
            ("!@", "*!*@*"),
        ] {
            assert_eq!(normalise_mask(typed).as_deref(), Some(mask), "{typed}");
        }
        for bad in ["", "a b", "a,b", ":x", "a!b!c", "a@b@c", "\u{1}x"] {
            assert_eq!(normalise_mask(bad), None, "{bad:?}");
        }
        assert_eq!(normalise_mask(&"x".repeat(MAX_MASK + 1)), None);
    }
}
