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
        self.flag_index().is_some()
    }

    /// Which flag the change is to, as [`Stamps::flags`] and [`FLAG_LETTERS`] order them.
    pub fn flag_index(&self) -> Option<usize> {
        Some(match self {
            Mode::TopicLock(_) => 0,
            Mode::Secret(_) => 1,
            Mode::Moderated(_) => 2,
            Mode::InviteOnly(_) => 3,
            _ => return None,
        })
    }
}

/// The flags' letters (IRC's and `/mode`'s), in [`Mode::flag_index`]'s order.
pub const FLAG_LETTERS: [char; 4] = ['t', 's', 'm', 'i'];

/// The change of flag `index` ([`Mode::flag_index`]) to `on`.
pub fn flag<Who>(index: usize, on: bool) -> Mode<Who> {
    match index {
        0 => Mode::TopicLock(on),
        1 => Mode::Secret(on),
        2 => Mode::Moderated(on),
        _ => Mode::InviteOnly(on),
    }
}

/// The flag changes among `changes` as `+m-t`: how they cross between nodes.
pub fn flags_text<Who>(changes: &[Mode<Who>]) -> String {
    let mut text = String::new();
    for change in changes {
        if let Some(i) = change.flag_index() {
            text.push(if change.on() { '+' } else { '-' });
            text.push(FLAG_LETTERS[i]);
        }
    }
    text
}

/// The flag changes `+m-t` names; `None` if it is not that form.
pub fn parse_flags<Who>(text: &str) -> Option<Vec<Mode<Who>>> {
    let bytes = text.as_bytes();
    if bytes.is_empty() || bytes.len() % 2 != 0 {
        return None;
    }
    bytes
        .chunks(2)
        .map(|pair| {
            let on = match pair[0] {
                b'+' => true,
                b'-' => false,
                _ => return None,
            };
            let index = FLAG_LETTERS.iter().position(|&l| l as u8 == pair[1])?;
            Some(flag(index, on))
        })
        .collect()
}

/// A change naming a member or a mask as it crosses between nodes: `+o bob`, `-v carol`,
/// `+b bob!*@*`, `-q *!*@host`; `None` for a flag.
pub fn named_text<Who: AsRef<str>>(change: &Mode<Who>) -> Option<String> {
    let (letter, on, who) = match change {
        Mode::Operator(on, who) => ('o', on, who),
        Mode::Voice(on, who) => ('v', on, who),
        Mode::Ban(on, who) => ('b', on, who),
        Mode::Mute(on, who) => ('q', on, who),
        _ => return None,
    };
    let sign = if *on { '+' } else { '-' };
    Some(format!("{sign}{letter} {}", who.as_ref()))
}

/// The change `+o bob` (or a ban or mute of a mask) names; `None` if it is not that form.
pub fn parse_named(text: &str) -> Option<Mode<std::sync::Arc<str>>> {
    let (change, who) = text.split_once(' ')?;
    if who.is_empty() || who.contains(' ') {
        return None;
    }
    let who = who.into();
    Some(match change {
        "+o" => Mode::Operator(true, who),
        "-o" => Mode::Operator(false, who),
        "+v" => Mode::Voice(true, who),
        "-v" => Mode::Voice(false, who),
        "+b" => Mode::Ban(true, who),
        "-b" => Mode::Ban(false, who),
        "+q" => Mode::Mute(true, who),
        "-q" => Mode::Mute(false, who),
        _ => return None,
    })
}

impl Modes {
    /// The flag `index` ([`Mode::flag_index`]) itself, to read or set.
    pub fn flag_mut(&mut self, index: usize) -> &mut bool {
        match index {
            0 => &mut self.topic_lock,
            1 => &mut self.secret,
            2 => &mut self.moderated,
            _ => &mut self.invite_only,
        }
    }
}

/// When a piece of a room's shared state (its topic, one of its flags) was last set, on a
/// cluster: the room's Lamport clock then, and the setter's nickname (unique across the
/// cluster) to order two changes made at the same clock on two nodes. Every node takes a
/// change only if its stamp is above the one it holds, so two changes made at once end the
/// same on every node, whichever each hears first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp {
    pub clock: u64,
    pub by: std::sync::Arc<str>,
}

/// The stamps of a room's shared state: its clock, the highest stamp this node has seen in
/// it, and what each part was last set at (`None`: never, or only before this node knew).
#[derive(Debug, Clone, Default)]
pub struct Stamps {
    pub clock: u64,
    pub topic: Option<Stamp>,
    /// `+t`, `+s`, `+m`, `+i`, in [`Mode::flag_index`]'s order.
    pub flags: [Option<Stamp>; 4],
    /// Each ban (`true`) or mute mask (lower-cased) set or lifted: whether it is listed.
    pub lists: std::collections::HashMap<(bool, String), Stamp>,
}

impl Stamps {
    /// The stamp of a change made here, by `by`: above everything seen in the room.
    pub fn next(&mut self, by: &std::sync::Arc<str>) -> Stamp {
        self.clock += 1;
        Stamp {
            clock: self.clock,
            by: by.clone(),
        }
    }

    /// Notes `stamp`, heard from another node, and tells whether it is newer than `held`
    /// (which then takes it).
    pub fn newer(clock: &mut u64, held: &mut Option<Stamp>, stamp: &Stamp) -> bool {
        *clock = (*clock).max(stamp.clock);
        if held.as_ref().is_some_and(|h| h >= stamp) {
            return false;
        }
        *held = Some(stamp.clone());
        true
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

    #[test]
    fn flags_cross_as_text_and_back() {
        let changes: Vec<Mode<&str>> = vec![
            Mode::Moderated(true),
            Mode::Operator(true, "bob"),
            Mode::TopicLock(false),
            Mode::InviteOnly(true),
        ];
        assert_eq!(flags_text(&changes), "+m-t+i");
        let back: Vec<Mode<&str>> = parse_flags("+m-t+i").unwrap();
        assert_eq!(
            back,
            [changes[0].clone(), changes[2].clone(), changes[3].clone()]
        );
        for bad in ["", "+", "+x", "m+", "+m-"] {
            assert_eq!(parse_flags::<&str>(bad), None, "{bad:?}");
        }
        let standing = named_text(&changes[1]).unwrap();
        assert_eq!(standing, "+o bob");
        assert_eq!(
            parse_named(&standing),
            Some(Mode::Operator(true, "bob".into()))
        );
        assert_eq!(named_text(&changes[0]), None);
        let ban: Mode<&str> = Mode::Ban(false, "*!*@host");
        assert_eq!(named_text(&ban).as_deref(), Some("-b *!*@host"));
        assert_eq!(
            parse_named("-b *!*@host"),
            Some(Mode::Ban(false, "*!*@host".into()))
        );
        for bad in ["+o", "+o ", "+x bob", "+o a b"] {
            assert_eq!(parse_named(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_newer_stamp_wins_whichever_comes_first() {
        let stamp = |clock, by: &str| Stamp {
            clock,
            by: by.into(),
        };
        let (early, late) = (stamp(3, "bob"), stamp(3, "carol"));
        for order in [[&early, &late], [&late, &early]] {
            let (mut clock, mut held) = (0, None);
            for s in order {
                Stamps::newer(&mut clock, &mut held, s);
            }
            assert_eq!(held.as_ref(), Some(&late));
            assert_eq!(clock, 3);
        }
        let mut stamps = Stamps {
            clock: 3,
            ..Default::default()
        };
        assert_eq!(stamps.next(&"alice".into()), stamp(4, "alice"));
    }
}
