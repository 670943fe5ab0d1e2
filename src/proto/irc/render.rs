//! How IRC clients see events: ordinary IRC lines with the sender as `nick!user@host`, and, for
//! clients that turned on `server-time` or `message-tags`, the event's time and id as tags.

use std::fmt::Write;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use time::macros::format_description;
use time::OffsetDateTime;

use super::message::{write, write_text, Tag};
use crate::core::event::{Event, Identity, Kind, Notice, Render, Target};
use crate::core::room::Mode;
use crate::core::LeaveReason;

/// IRC's [`Render`]; `tagged` adds `time` and `msgid`, `account` the sender's `account` tag
/// (IRCv3 `account-tag`), each only for the clients that asked for it.
#[derive(Debug)]
pub struct Irc {
    pub tagged: bool,
    pub account: bool,
}

pub static PLAIN: Irc = Irc {
    tagged: false,
    account: false,
};
pub static TAGGED: Irc = Irc {
    tagged: true,
    account: false,
};
pub static ACCOUNT: Irc = Irc {
    tagged: false,
    account: true,
};
pub static TAGGED_ACCOUNT: Irc = Irc {
    tagged: true,
    account: true,
};

/// `nick!user@host`.
pub fn source(who: &Identity) -> String {
    format!("{}!{}@{}", who.nick, who.user, who.host)
}

/// `2026-12-01T21:22:33.123Z`, as `server-time` wants it: always three digits of
/// milliseconds (RFC 3339 formatting would cut `.070` to `.07`, which clients misread).
pub fn timestamp(at: SystemTime) -> String {
    OffsetDateTime::from(at)
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        ))
        .unwrap_or_default()
}

/// `#room` for a room name.
pub fn channel(room: &str) -> String {
    format!("#{room}")
}

/// Writes `event` as one IRC line into `out`, with `extra` tags (e.g. `batch`) before the
/// event's own when `tagged`. Nothing is written for events IRC does not show.
pub fn write_event(out: &mut BytesMut, event: &Event, tagged: bool, extra: &[Tag<'_>]) {
    write_event_as(
        out,
        event,
        &Irc {
            tagged,
            account: false,
        },
        extra,
    )
}

/// [`write_event`] in the rendering `irc` gives (with the `account` tag, for instance).
pub fn write_event_as(out: &mut BytesMut, event: &Event, irc: &Irc, extra: &[Tag<'_>]) {
    let tagged = irc.tagged;
    let Some(from) = &event.from else {
        return;
    };
    // The source and the target in one string, built without the formatting machinery: this
    // runs once per message and format, and a chat line to a big room is mostly this.
    let room = event.room().map_or(0, |r| r.len() + 1);
    let to = match &event.target {
        Target::Member(to) => to.nick.len(),
        _ => 0,
    };
    let mut names =
        String::with_capacity(from.nick.len() + from.user.len() + from.host.len() + 2 + room + to);
    for part in [&*from.nick, "!", &from.user, "@", &from.host] {
        names.push_str(part);
    }
    let source_end = names.len();
    match &event.target {
        Target::Room(room) => {
            names.push('#');
            names.push_str(room);
        }
        Target::Member(to) => names.push_str(&to.nick),
        Target::Peers => {}
    }
    let (src, target) = names.split_at(source_end);
    let action;
    let quit;
    let modes;
    let invited;
    // MODE's (and KICK's) parameters vary in number; every other command has at most two.
    let mut mode_list: Vec<&str> = Vec::new();
    let (command, params, n): (&str, [&str; 2], usize) = match &event.kind {
        Kind::Message(text) => ("PRIVMSG", [target, text], 2),
        Kind::Action(text) => {
            action = format!("\u{1}ACTION {text}\u{1}");
            ("PRIVMSG", [target, &action], 2)
        }
        Kind::Notice(text) => ("NOTICE", [target, text], 2),
        Kind::Joined | Kind::Entered => ("JOIN", [target, ""], 1),
        Kind::Parted(None) => ("PART", [target, ""], 1),
        Kind::Parted(Some(why)) => ("PART", [target, why], 2),
        Kind::Left(reason, message) => {
            quit = match (reason, message) {
                (LeaveReason::Quit, Some(message)) => format!("Quit: {message}"),
                (LeaveReason::Quit, None) => "Quit".to_owned(),
                (reason, _) => reason.explanation().unwrap_or("Quit").to_owned(),
            };
            ("QUIT", [&quit, ""], 1)
        }
        Kind::Nick(new) => ("NICK", [&new.nick, ""], 1),
        Kind::Topic(text) => ("TOPIC", [target, text], 2),
        Kind::Mode(changes) => {
            modes = mode_params(changes);
            mode_list = std::iter::once(target)
                .chain(modes.iter().map(String::as_str))
                .collect();
            ("MODE", ["", ""], 0)
        }
        Kind::Kicked { who, reason } => {
            let reason = reason.as_deref().unwrap_or(&from.nick);
            mode_list = vec![target, &who.nick, reason];
            ("KICK", ["", ""], 0)
        }
        Kind::Invited(room) => {
            invited = channel(room);
            ("INVITE", [target, &invited], 2)
        }
        Kind::Account(account) => ("ACCOUNT", [account.as_deref().unwrap_or("*"), ""], 1),
        Kind::Away(Some(message)) => ("AWAY", [message, ""], 1),
        Kind::Away(None) => ("AWAY", ["", ""], 0),
        Kind::Presence { .. } => return,
    };
    let params: &[&str] = if mode_list.is_empty() {
        &params[..n]
    } else {
        &mode_list
    };
    let mut tags: Vec<Tag<'_>> = extra.to_vec();
    if let (true, Some(account)) = (irc.account, &from.account) {
        tags.push(Tag::new("account", &**account));
    }
    let (time, id);
    if tagged {
        time = timestamp(event.at);
        tags.push(Tag::new("time", time.as_str()));
        if matches!(
            event.kind,
            Kind::Message(_) | Kind::Action(_) | Kind::Notice(_) | Kind::Topic(_)
        ) {
            id = event.id.to_string();
            tags.push(Tag::new("msgid", id.as_str()));
        }
    }
    // Text-bearing commands always carry the `:`; JOIN, NICK, MODE and a bare PART do not.
    let text = !matches!(
        event.kind,
        Kind::Joined
            | Kind::Entered
            | Kind::Nick(_)
            | Kind::Parted(None)
            | Kind::Mode(_)
            | Kind::Invited(_)
            | Kind::Account(_)
    );
    if text {
        write_text(out, &tags, Some(src), command, params);
    } else {
        write(out, &tags, Some(src), command, params);
    }
}

/// The letter of a change, and the nickname it takes, if any.
pub fn mode_letter<Who>(change: &Mode<Who>) -> (char, Option<&Who>) {
    match change {
        Mode::TopicLock(_) => ('t', None),
        Mode::Secret(_) => ('s', None),
        Mode::Operator(_, who) => ('o', Some(who)),
        Mode::Voice(_, who) => ('v', Some(who)),
        Mode::Moderated(_) => ('m', None),
        Mode::InviteOnly(_) => ('i', None),
        Mode::Ban(_, mask) => ('b', Some(mask)),
        Mode::Mute(_, mask) => ('q', Some(mask)),
    }
}

/// `changes` as MODE's parameters: `+t-s+o bob` is `["+t-s+o", "bob"]`.
fn mode_params(changes: &[Mode<Arc<str>>]) -> Vec<String> {
    let mut letters = String::new();
    let mut args = Vec::new();
    let mut sign = None;
    for change in changes {
        if sign != Some(change.on()) {
            sign = Some(change.on());
            letters.push(if change.on() { '+' } else { '-' });
        }
        let (letter, who) = mode_letter(change);
        letters.push(letter);
        args.extend(who.map(|w| w.to_string()));
    }
    let mut params = vec![letters];
    params.extend(args);
    params
}

impl Render for Irc {
    fn render(&self, event: &Event) -> Bytes {
        let mut out = BytesMut::with_capacity(128);
        write_event_as(&mut out, event, self, &[]);
        out.freeze()
    }

    fn every_presence(&self) -> bool {
        true
    }

    /// A NOTICE from the server in the line protocol's words; a rename is first the NICK
    /// the client keeps its own nickname by.
    fn notice(&self, server: &str, to: &str, notice: &Notice<'_>) -> Bytes {
        let mut out = BytesMut::new();
        if let Notice::ClusterRenamed { old, new, .. } = notice {
            write(&mut out, &[], Some(&source(old)), "NICK", &[new]);
        }
        let words = crate::proto::line::words::notice(notice);
        let text = words.trim_end();
        let text = text.strip_prefix("Server: ").unwrap_or(text);
        write_text(&mut out, &[], Some(server), "NOTICE", &[to, text]);
        out.freeze()
    }
}

/// Appends a numeric reply `:server NNN nick params…` to `out`.
pub fn numeric(out: &mut BytesMut, server: &str, code: u16, nick: &str, params: &[&str]) {
    let mut command = String::with_capacity(3);
    let _ = write!(command, "{code:03}");
    let mut all = Vec::with_capacity(params.len() + 1);
    all.push(nick);
    all.extend_from_slice(params);
    write(out, &[], Some(server), &command, &all);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn alice() -> Option<Arc<Identity>> {
        Some(Arc::new(Identity {
            id: 1,
            nick: "alice".into(),
            user: "alice".into(),
            host: "127.0.0.1".into(),
            realname: "Alice".into(),
            account: None,
        }))
    }

    fn line(event: &Event, r: &Irc) -> String {
        String::from_utf8(r.render(event).to_vec()).unwrap()
    }

    /// Each format words the server's notices itself: IRC as a NOTICE from the server (and
    /// a rename first as the NICK a client keeps its nickname by), netcat as a sentence.
    #[test]
    fn server_notices_read_in_each_format() {
        let text = |b: Bytes| String::from_utf8(b.to_vec()).unwrap();
        let old = alice().unwrap();
        let renamed = Notice::ClusterRenamed {
            old: &old,
            holder: "a",
            new: "guest-1",
        };
        let why = "while this server was cut off from the cluster, someone on a took the \
                   nickname alice; you are now guest-1.";
        assert_eq!(
            text(TAGGED.notice("srv", "guest-1", &renamed)),
            format!(":alice!alice@127.0.0.1 NICK guest-1\r\n:srv NOTICE guest-1 :{why}\r\n")
        );
        let line = &crate::proto::line::render::LINE;
        assert_eq!(
            text(line.notice("srv", "guest-1", &renamed)),
            format!("Server: {why}\n")
        );
        assert_eq!(
            text(PLAIN.notice("srv", "bob", &Notice::ClusterLink(false))),
            ":srv NOTICE bob :the cluster link is down; chat goes on among the people on this \
             server.\r\n"
        );
    }

    #[test]
    fn events_read_as_irc() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let room = || Target::Room("lobby".into());
        let say = Event::at(7, at, room(), alice(), Kind::Message("hi there".into()));
        assert_eq!(
            line(&say, &PLAIN),
            ":alice!alice@127.0.0.1 PRIVMSG #lobby :hi there\r\n"
        );
        assert_eq!(
            line(&say, &TAGGED),
            "@time=2023-11-14T22:13:20.123Z;msgid=7 :alice!alice@127.0.0.1 PRIVMSG #lobby :hi there\r\n"
        );
        // account-tag: only from a sender with an account, only for the formats that carry it.
        assert_eq!(line(&say, &ACCOUNT), line(&say, &PLAIN));
        let logged_in = alice().map(|a| Arc::new(a.with_account(Some("alice".into()))));
        let said = Event::at(7, at, room(), logged_in, Kind::Message("hi".into()));
        assert_eq!(
            line(&said, &ACCOUNT),
            "@account=alice :alice!alice@127.0.0.1 PRIVMSG #lobby :hi\r\n"
        );
        assert_eq!(
            line(&said, &TAGGED_ACCOUNT),
            "@account=alice;time=2023-11-14T22:13:20.123Z;msgid=7 :alice!alice@127.0.0.1 PRIVMSG #lobby :hi\r\n"
        );
        assert_eq!(
            line(&said, &TAGGED),
            line(&say, &TAGGED).replace("hi there", "hi")
        );
        let bob = Arc::new(alice().unwrap().renamed("bob"));
        let kick = Kind::Kicked {
            who: bob.clone(),
            reason: None,
        };
        assert_eq!(
            line(&Event::at(11, at, room(), alice(), kick), &PLAIN),
            ":alice!alice@127.0.0.1 KICK #lobby bob :alice\r\n"
        );
        let invite = Kind::Invited("dev".into());
        assert_eq!(
            line(
                &Event::at(12, at, Target::Member(bob), alice(), invite),
                &PLAIN
            ),
            ":alice!alice@127.0.0.1 INVITE bob #dev\r\n"
        );
        let account = Kind::Account(None);
        assert_eq!(
            line(&Event::at(13, at, Target::Peers, alice(), account), &PLAIN),
            ":alice!alice@127.0.0.1 ACCOUNT *\r\n"
        );
        let act = Event::at(8, at, room(), alice(), Kind::Action("waves".into()));
        assert_eq!(
            line(&act, &PLAIN),
            ":alice!alice@127.0.0.1 PRIVMSG #lobby :\u{1}ACTION waves\u{1}\r\n"
        );
        let left = Event::at(
            9,
            at,
            Target::Peers,
            alice(),
            Kind::Left(LeaveReason::IdleTimeout, None),
        );
        assert_eq!(
            line(&left, &PLAIN),
            ":alice!alice@127.0.0.1 QUIT :idle timeout\r\n"
        );
        let joined = Event::at(9, at, room(), alice(), Kind::Joined);
        assert_eq!(
            line(&joined, &PLAIN),
            ":alice!alice@127.0.0.1 JOIN #lobby\r\n"
        );
        let presence = Kind::Presence {
            joined: 1,
            left: 0,
            period_secs: 10,
            here: 3,
        };
        assert_eq!(line(&Event::at(1, at, room(), None, presence), &PLAIN), "");
        let modes = Kind::Mode(
            [
                Mode::TopicLock(false),
                Mode::Secret(false),
                Mode::Operator(true, "bob".into()),
                Mode::Voice(true, "carol".into()),
                Mode::Secret(true),
            ]
            .into(),
        );
        assert_eq!(
            line(&Event::at(10, at, room(), alice(), modes), &PLAIN),
            ":alice!alice@127.0.0.1 MODE #lobby -ts+ovs bob carol\r\n"
        );
        let whole_second = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(timestamp(whole_second), "2023-11-14T22:13:20.000Z");
        let trailing_zero = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_070);
        assert_eq!(timestamp(trailing_zero), "2023-11-14T22:13:20.070Z");
        let tenth = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_100);
        assert_eq!(timestamp(tenth), "2023-11-14T22:13:20.100Z");
    }
}
