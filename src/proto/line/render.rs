//! How line-protocol (netcat) users see events: plain sentences, one per line. The texts
//! marked exact in docs/PROTOCOL.md are kept word for word from the original server.

use std::borrow::Cow;
use std::fmt::Write;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use time::macros::format_description;
use time::OffsetDateTime;

use crate::core::event::{Event, Kind, Notice, Render, Target};
use crate::core::hub::RoomView;
use crate::core::room::{Mode, Topic};
use crate::core::LeaveReason;
use crate::proto::codec::strip_disguise;

/// The line protocol's [`Render`].
#[derive(Debug)]
pub struct Line;

pub static LINE: Line = Line;

impl Render for Line {
    fn always_in_a_room(&self) -> bool {
        true
    }

    fn notice(&self, _server: &str, _to: &str, notice: &Notice<'_>) -> Bytes {
        Bytes::from(super::words::notice(notice))
    }

    fn render(&self, event: &Event) -> Bytes {
        let nick = event.nick();
        let prefix: &str = match (&event.target, &event.kind) {
            // The server's notice of an invitation, not something the inviter said.
            (Target::Member(_), Kind::Invited(_)) => "",
            (Target::Member(_), _) => "[private] ",
            _ => "",
        };
        // Exactly the line's size: one allocation, shared by every recipient as it is.
        let line = |parts: &[&str]| {
            let len = prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>() + 1;
            let mut out = Vec::with_capacity(len);
            out.extend_from_slice(prefix.as_bytes());
            for part in parts {
                out.extend_from_slice(part.as_bytes());
            }
            out.push(b'\n');
            Bytes::from(out)
        };
        match &event.kind {
            Kind::Message(text) => line(&[nick, ": ", &clean(text)]),
            Kind::Action(text) => line(&["* ", nick, " ", &clean(text)]),
            Kind::Notice(text) => line(&["-", nick, "- ", &clean(text)]),
            Kind::Joined => line(&[nick, " has joined the chat."]),
            Kind::Entered => line(&[nick, " has joined the room."]),
            Kind::Parted(None) => line(&[nick, " has left the room."]),
            Kind::Parted(Some(why)) => line(&[nick, " has left the room (", &clean(why), ")."]),
            Kind::Left(reason, message) => match (reason.explanation(), message) {
                (_, Some(message)) if *reason == LeaveReason::Quit => {
                    line(&[nick, " has left the chat (", &clean(message), ")."])
                }
                (None, _) => line(&[nick, " has left the chat."]),
                (Some(why), _) => line(&[nick, " has left the chat (", why, ")."]),
            },
            Kind::Nick(new) => line(&[nick, " changed nickname to ", &new.nick]),
            Kind::Topic(text) => {
                let room = event.room().map_or("", |r| &**r);
                line(&[nick, " set the topic of ", room, ": ", &clean(text)])
            }
            Kind::Mode(changes) => {
                let room = event.room().map_or("", |r| &**r);
                let mut out = String::new();
                for change in changes.iter() {
                    push_mode_line(&mut out, nick, room, change);
                }
                Bytes::from(out)
            }
            Kind::Kicked { who, reason } => {
                let room = event.room().map_or("", |r| &**r);
                match reason {
                    Some(why) => line(&[
                        nick,
                        " kicked ",
                        &who.nick,
                        " out of ",
                        room,
                        " (",
                        &clean(why),
                        ").",
                    ]),
                    None => line(&[nick, " kicked ", &who.nick, " out of ", room, "."]),
                }
            }
            Kind::Invited(room) => line(&[
                nick,
                " invites you to ",
                room,
                ": /join ",
                room,
                " enters it.",
            ]),
            Kind::Away(_) | Kind::Account(_) => Bytes::new(),
            Kind::Presence {
                joined,
                left,
                period_secs,
                here,
            } => {
                let people = |n: u32| if n == 1 { "person" } else { "people" };
                let what = match (joined, left) {
                    (j, 0) => format!("{j} {} joined", people(*j)),
                    (0, l) => format!("{l} {} left", people(*l)),
                    (j, l) => format!("{j} {} joined and {l} left", people(*j)),
                };
                let text = format!("{what} in the last {period_secs} s ({here} here now).");
                line(&[&text])
            }
        }
    }
}

/// Text as a terminal may show it. Netcat users' own text passed the text policy on the way
/// in, but IRC clients may send formatting codes (bold `\x02`, colours `\x03NN,NN`, reset
/// `\x0f`…) and other protocols any control character: IRC's codes are removed with their
/// arguments and every other control character but TAB is dropped, so nobody's terminal can be
/// repainted through another protocol. The invisible and direction-changing characters the
/// text policy refuses ([`strip_disguise`]) are removed too, so no protocol can pass them on
/// to a terminal. Text without any of these is not copied.
pub fn clean(text: &str) -> Cow<'_, str> {
    match strip_disguise(text) {
        Cow::Borrowed(text) => clean_controls(text),
        Cow::Owned(text) => Cow::Owned(clean_controls(&text).into_owned()),
    }
}

fn clean_controls(text: &str) -> Cow<'_, str> {
    // Every control character is a byte below 0x20, DEL, or a C1 code point (0xC2 0x80-0x9F in
    // UTF-8). Every message takes this path, so first one branch-free (vectorisable) pass for
    // any byte that could start one; only text with a TAB or a 0xC2 then needs the exact look.
    let bytes = text.as_bytes();
    let maybe = bytes.iter().fold(false, |seen, &b| {
        seen | (b < 0x20) | (b == 0x7f) | (b == 0xc2)
    });
    let control = maybe
        && bytes.iter().enumerate().any(|(i, &b)| {
            (b < 0x20 && b != b'\t')
                || b == 0x7f
                || (b == 0xc2 && bytes.get(i + 1).is_some_and(|n| (0x80..0xa0).contains(n)))
        });
    if !control {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{3}' => {
                // Colour: up to two digits, optionally a comma and up to two more.
                let digits = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
                    for _ in 0..2 {
                        if chars.next_if(char::is_ascii_digit).is_none() {
                            break;
                        }
                    }
                };
                if chars.peek().is_some_and(char::is_ascii_digit) {
                    digits(&mut chars);
                    let mut ahead = chars.clone();
                    if ahead.next() == Some(',') && ahead.peek().is_some_and(char::is_ascii_digit) {
                        chars.next();
                        digits(&mut chars);
                    }
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// One change to a room, as a sentence and a newline.
fn push_mode_line(out: &mut String, by: &str, room: &str, change: &Mode<Arc<str>>) {
    let _ = match change {
        Mode::TopicLock(true) => writeln!(
            out,
            "{by} locked the topic of {room}: only its operators may change it."
        ),
        Mode::TopicLock(false) => writeln!(
            out,
            "{by} unlocked the topic of {room}: anyone in it may change it."
        ),
        Mode::Secret(true) => writeln!(
            out,
            "{by} made {room} secret: only the people in it see it in /rooms and /who."
        ),
        Mode::Secret(false) => writeln!(out, "{by} made {room} public: /rooms lists it."),
        Mode::Operator(true, who) => writeln!(out, "{by} made {who} an operator of {room}."),
        Mode::Operator(false, who) => {
            writeln!(out, "{by} removed {who} from the operators of {room}.")
        }
        Mode::Voice(true, who) => writeln!(out, "{by} gave {who} a voice in {room}."),
        Mode::Voice(false, who) => writeln!(out, "{by} took {who}'s voice in {room} away."),
        Mode::Moderated(true) => writeln!(
            out,
            "{by} moderated {room}: only its operators and those with a voice may speak."
        ),
        Mode::Moderated(false) => writeln!(out, "{by} lifted the moderation of {room}."),
        Mode::InviteOnly(true) => writeln!(
            out,
            "{by} made {room} invite-only: only those an operator invites may come in."
        ),
        Mode::InviteOnly(false) => writeln!(out, "{by} opened {room}: anyone may come in."),
        Mode::Ban(true, mask) => writeln!(out, "{by} banned {mask} from {room}."),
        Mode::Ban(false, mask) => writeln!(out, "{by} lifted the ban on {mask} in {room}."),
        Mode::Mute(true, mask) => writeln!(out, "{by} muted {mask} in {room}."),
        Mode::Mute(false, mask) => writeln!(out, "{by} unmuted {mask} in {room}."),
    };
}

/// Shows a netcat user put out of a room the lobby it lands in, as `/join lobby` would.
pub fn land(member: &std::sync::Arc<crate::core::Member>, view: RoomView<'_>) {
    for part in arrival_text(&view, None, None) {
        let _ = member.push(part);
    }
}

/// `Topic of dev: release on Friday (set by alice)` plus a newline.
pub fn push_topic_line(out: &mut String, room: &str, topic: &Topic) {
    let _ = writeln!(out, "Topic of {room}: {} (set by {})", topic.text, topic.by);
}

/// `[09:15:02] ` for today (UTC), `[2026-11-26 09:15:02] ` for older lines.
fn stamp(at: SystemTime, today: time::Date) -> String {
    let at = OffsetDateTime::from(at);
    let layout = if at.date() == today {
        format_description!("[[[hour]:[minute]:[second]] ")
    } else {
        format_description!("[[[year]-[month]-[day] [hour]:[minute]:[second]] ")
    };
    at.format(&layout).unwrap_or_default()
}

/// Which of a room's messages a history block holds, for its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// The room's last messages (`/history`, or a first visit).
    Last,
    /// Those said since the reader was last in the room, `count` of them in all.
    SinceLastHere { count: usize },
}

/// History as one message, set apart from live traffic by a header and a footer. `newest_first`
/// is walked until `budget` bytes are used, so a long history cannot overflow the reader's
/// queue and get it disconnected as a slow consumer; the header then says how much was left
/// out. `span` says which part of the history this is (`the last 3 messages`).
pub fn render_history<'a>(
    room: &str,
    newest_first: impl Iterator<Item = &'a std::sync::Arc<Event>>,
    budget: usize,
    span: Span,
) -> Bytes {
    const STAMP_MAX: usize = "[2026-11-26 09:15:02] ".len();
    let mut shown = Vec::new();
    let mut used = 0;
    let mut total = 0;
    for event in newest_first {
        total += 1;
        let line = LINE.render(event);
        let cost = STAMP_MAX + line.len();
        if shown.len() == total - 1 && used + cost <= budget {
            used += cost;
            shown.push((event.at, line));
        }
    }
    let today = OffsetDateTime::now_utc().date();
    let mut out = String::with_capacity(used + 160);
    const OVERFLOW: &str = " (the rest would overflow your queue)";
    let n = shown.len();
    let what = match span {
        Span::Last => match (n, total) {
            (1, 1) => "the last message".to_owned(),
            (n, t) if n == t => format!("the last {n} messages"),
            (n, t) => format!("the last {n} of {t} messages{OVERFLOW}"),
        },
        Span::SinceLastHere { count } if n == count => {
            format!(
                "{n} new message{} since you were last here",
                if n == 1 { "" } else { "s" }
            )
        }
        Span::SinceLastHere { count } => format!(
            "the last {n} of {count} new messages since you were last here{}",
            if n < total {
                OVERFLOW
            } else {
                " (/history shows more)"
            }
        ),
    };
    let _ = writeln!(out, "--- History of {room}: {what}, times in UTC ---");
    for (at, line) in shown.iter().rev() {
        out.push_str(&stamp(*at, today));
        out.push_str(&String::from_utf8_lossy(line));
    }
    out.push_str("--- End of history ---\n");
    Bytes::from(out)
}

/// What a user who has just chosen a nickname is greeted with.
#[derive(Debug, Clone, Copy)]
pub struct Welcome<'a> {
    pub nick: &'a str,
    /// The message of the day (`--motd`), shown after the welcome, each line after `- `
    /// (as IRC shows it; an empty one as `-`), which no chat line starts with.
    pub motd: &'a [String],
}

/// The welcome, the room's topic, who is here and the scrollback, as the newcomer sees them.
/// `last_here` is the id of the event that took the user out of this room the last time, if it
/// has been here before: then only what was said since is shown again.
pub fn arrival_text(
    view: &RoomView<'_>,
    first: Option<Welcome<'_>>,
    last_here: Option<u64>,
) -> Vec<Bytes> {
    let mut intro = String::new();
    let others = view.len().saturating_sub(1);
    match first {
        Some(Welcome { nick, motd }) => {
            intro.push_str(&format!(
                "Welcome to the chat, {nick}!\nType /help for the list of commands.\n"
            ));
            for line in motd {
                intro.push('-');
                if !line.is_empty() {
                    intro.push(' ');
                    intro.push_str(line);
                }
                intro.push('\n');
            }
            match others {
                0 => intro.push_str(&format!("You are in {} (just you so far).\n", view.name())),
                n => intro.push_str(&format!(
                    "You are in {} ({n} other{} here; /who lists them).\n",
                    view.name(),
                    if n == 1 { "" } else { "s" }
                )),
            }
        }
        None => match view.len() {
            1 => intro.push_str(&format!(
                "You are now in {} (just you so far).\n",
                view.name()
            )),
            n => intro.push_str(&format!(
                "You are now in {} ({n} people here).\n",
                view.name()
            )),
        },
    }
    if let Some(topic) = view.topic() {
        push_topic_line(&mut intro, view.name(), topic);
    }
    let settings = view.settings;
    let mut scrollback = None;
    if settings.scrollback > 0 {
        let span = match last_here {
            None => Span::Last,
            Some(mark) => Span::SinceLastHere {
                count: view.recent(usize::MAX).take_while(|e| e.id > mark).count(),
            },
        };
        let shown = match span {
            Span::Last => settings.scrollback,
            Span::SinceLastHere { count } => count.min(settings.scrollback),
        };
        let mut recent = view.recent(shown).peekable();
        if recent.peek().is_some() {
            scrollback = Some(render_history(view.name(), recent, settings.budget, span));
        } else if span != Span::Last && view.recent(1).next().is_some() {
            let _ = writeln!(
                intro,
                "Nothing new in {} since you were last here (/history shows its last messages).",
                view.name()
            );
        }
    }
    let mut out = vec![Bytes::from(intro)];
    out.extend(scrollback);
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::core::event::Identity;

    fn who(nick: &str) -> Option<Arc<Identity>> {
        Some(Arc::new(Identity {
            id: 1,
            nick: nick.into(),
            user: nick.into(),
            host: "127.0.0.1".into(),
            realname: "".into(),
            account: None,
        }))
    }

    fn event(secs: u64, nick: &str, kind: Kind) -> Arc<Event> {
        Event::at(
            secs,
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            Target::Room("dev".into()),
            who(nick),
            kind,
        )
    }

    fn text(event: &Event) -> String {
        String::from_utf8(LINE.render(event).to_vec()).unwrap()
    }

    #[test]
    fn events_read_as_version_one_lines() {
        assert_eq!(
            text(&event(0, "alice", Kind::Message("hi".into()))),
            "alice: hi\n"
        );
        assert_eq!(
            text(&event(0, "bob", Kind::Action("waves".into()))),
            "* bob waves\n"
        );
        assert_eq!(
            text(&event(0, "a", Kind::Joined)),
            "a has joined the chat.\n"
        );
        assert_eq!(
            text(&event(0, "a", Kind::Entered)),
            "a has joined the room.\n"
        );
        assert_eq!(
            text(&event(0, "a", Kind::Left(LeaveReason::Quit, None))),
            "a has left the chat.\n"
        );
        assert_eq!(
            text(&event(0, "a", Kind::Left(LeaveReason::IdleTimeout, None))),
            "a has left the chat (idle timeout).\n"
        );
        assert_eq!(
            text(&event(
                0,
                "a",
                Kind::Left(LeaveReason::Quit, Some("bye".into()))
            )),
            "a has left the chat (bye).\n"
        );
        assert_eq!(
            text(&event(0, "a", Kind::Topic("soon".into()))),
            "a set the topic of dev: soon\n"
        );
        let private = Event::new(
            1,
            Target::Member(who("b").unwrap()),
            who("a"),
            Kind::Message("psst".into()),
        );
        assert_eq!(text(&private), "[private] a: psst\n");
        assert_eq!(text(&event(0, "a", Kind::Away(Some("lunch".into())))), "");
        let modes = Kind::Mode(
            [
                Mode::TopicLock(false),
                Mode::Secret(true),
                Mode::Operator(true, "bob".into()),
                Mode::Voice(false, "carol".into()),
            ]
            .into(),
        );
        assert_eq!(
            text(&event(0, "alice", modes)),
            "alice unlocked the topic of dev: anyone in it may change it.\n\
             alice made dev secret: only the people in it see it in /rooms and /who.\n\
             alice made bob an operator of dev.\n\
             alice took carol's voice in dev away.\n"
        );
    }

    #[test]
    fn control_characters_from_other_protocols_never_reach_a_terminal() {
        assert!(matches!(clean("plain\ttext"), Cow::Borrowed(_)));
        assert_eq!(
            clean("\u{2}bold\u{2} \u{3}04,12red\u{3} \u{3}7x\u{f} \u{1b}[2Jwiped \u{9b}1m"),
            "bold red x [2Jwiped 1m"
        );
        let evil = event(0, "bob", Kind::Message("\u{1b}]0;pwned\u{7}hi".into()));
        assert_eq!(text(&evil), "bob: ]0;pwnedhi\n");
        let topic = event(0, "bob", Kind::Topic("\u{3}4red topic".into()));
        assert_eq!(text(&topic), "bob set the topic of dev: red topic\n");
        let disguised = event(
            0,
            "bob",
            Kind::Message("\u{202e}txt.exe\u{2028}Error: x".into()),
        );
        assert_eq!(text(&disguised), "bob: txt.exeError: x\n");
        let quit = event(
            0,
            "bob",
            Kind::Left(LeaveReason::Quit, Some("\u{2}bye\u{200b}\u{2}".into())),
        );
        assert_eq!(text(&quit), "bob has left the chat (bye).\n");
    }

    #[test]
    fn history_is_framed_oldest_first_with_times_and_bounded_by_budget() {
        let entries = [
            event(3, "carol", Kind::Message("c".into())),
            event(2, "bob", Kind::Action("waves".into())),
            event(1, "alice", Kind::Message("a".into())),
        ];
        let text = render_history("dev", entries.iter(), 10_000, Span::Last);
        assert_eq!(
            std::str::from_utf8(&text).unwrap(),
            "--- History of dev: the last 3 messages, times in UTC ---\n\
             [1970-01-01 00:00:01] alice: a\n\
             [1970-01-01 00:00:02] * bob waves\n\
             [1970-01-01 00:00:03] carol: c\n\
             --- End of history ---\n"
        );
        let cut = render_history("dev", entries.iter(), 70, Span::Last);
        let cut = std::str::from_utf8(&cut).unwrap();
        assert!(
            cut.starts_with("--- History of dev: the last 2 of 3 messages (the rest"),
            "{cut}"
        );
        assert!(!cut.contains("alice: a"), "{cut}");
        let now = Event::new(
            9,
            Target::Room("r".into()),
            who("x"),
            Kind::Message("y".into()),
        );
        let one = render_history("r", std::iter::once(&now), 1000, Span::Last);
        let one = std::str::from_utf8(&one).unwrap();
        assert!(one.contains("the last message,"), "{one}");
        // Today's lines carry the time alone.
        assert_eq!(one.lines().nth(1).unwrap().len(), "[00:00:00] x: y".len());
    }
}
