//! Events: what happened, to whom, when, with an id — never how it reads. Each protocol renders
//! an event its own way through a [`Render`], and an event caches each rendering, so a message
//! to a room of a thousand is formatted once per protocol present, and every member of that
//! protocol is handed a reference-counted clone of the same bytes.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;

use super::leave::LeaveReason;
use super::modes::Mode;

/// Connection number, unique for the server's life; shown in logs.
pub type MemberId = u64;

/// The most renderings an event caches: one per format the server was built with.
pub const MAX_FORMATS: usize = 5;

/// How a member is shown to others. Replaced (not changed) on a rename, so events already
/// queued keep the name they were sent under.
#[derive(Debug)]
pub struct Identity {
    pub id: MemberId,
    pub nick: Arc<str>,
    /// The IRC user name: given with `USER`, or the nickname chosen first for other protocols.
    pub user: Arc<str>,
    pub host: Arc<str>,
    pub realname: Arc<str>,
    /// The registered account the connection proved, if any (IRC's `account-tag`).
    pub account: Option<Arc<str>>,
}

impl Identity {
    /// The same person under a new nickname.
    pub fn renamed(&self, nick: &str) -> Identity {
        Identity {
            nick: nick.into(),
            ..self.with_account(self.account.clone())
        }
    }

    /// The same person, with `account` proved (or none).
    pub fn with_account(&self, account: Option<Arc<str>>) -> Identity {
        Identity {
            id: self.id,
            nick: self.nick.clone(),
            user: self.user.clone(),
            host: self.host.clone(),
            realname: self.realname.clone(),
            account,
        }
    }
}

/// What happened.
#[derive(Debug)]
pub enum Kind {
    /// Something said.
    Message(Box<str>),
    /// `/me` or a CTCP ACTION: the text is what the sender does.
    Action(Box<str>),
    /// An IRC NOTICE: said, but not to be answered automatically.
    Notice(Box<str>),
    /// The sender arrived on the server, straight into this room (the line protocol's lobby).
    Joined,
    /// The sender entered this room.
    Entered,
    /// The sender left this room and stays on the server.
    Parted(Option<Box<str>>),
    /// The sender left the server; the message is an IRC QUIT's own text.
    Left(LeaveReason, Option<Box<str>>),
    /// The sender is now known as this.
    Nick(Arc<Identity>),
    Topic(Box<str>),
    /// The room's modes or members' standing changed, in this order; never empty.
    Mode(Box<[Mode<Arc<str>>]>),
    /// The sender put this member out of the room, for this reason if one was given.
    Kicked {
        who: Arc<Identity>,
        reason: Option<Box<str>>,
    },
    /// The sender invited the target (a member) into this room.
    Invited(Arc<str>),
    /// The sender proved this account (or, `None`, no longer has one): IRC `account-notify`.
    Account(Option<Arc<str>>),
    /// Marked away (with the message) or back (`None`).
    Away(Option<Box<str>>),
    /// A big room's arrivals and departures since the last summary, told instead of one notice
    /// each.
    Presence {
        joined: u32,
        left: u32,
        period_secs: u64,
        here: usize,
    },
}

/// Where an event goes.
#[derive(Debug, Clone)]
pub enum Target {
    Room(Arc<str>),
    /// A private message to this person.
    Member(Arc<Identity>),
    /// Everyone who shares a room with the sender (a rename, a departure).
    Peers,
}

/// One thing that happened, shared by every queue it is delivered to and by the room's
/// history.
pub struct Event {
    /// Unique and increasing for the server's life (IRC's `msgid`).
    pub id: u64,
    pub at: SystemTime,
    pub target: Target,
    /// Who did it; `None` for the server's own events (presence summaries).
    pub from: Option<Arc<Identity>>,
    pub kind: Kind,
    rendered: [OnceLock<Bytes>; MAX_FORMATS],
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("id", &self.id)
            .field("target", &self.target)
            .field("from", &self.from.as_ref().map(|i| &i.nick))
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Event {
    pub fn new(id: u64, target: Target, from: Option<Arc<Identity>>, kind: Kind) -> Arc<Event> {
        Event::at(id, SystemTime::now(), target, from, kind)
    }

    pub fn at(
        id: u64,
        at: SystemTime,
        target: Target,
        from: Option<Arc<Identity>>,
        kind: Kind,
    ) -> Arc<Event> {
        Arc::new(Event {
            id,
            at,
            target,
            from,
            kind,
            rendered: Default::default(),
        })
    }

    /// The room this event happened in, if it happened in one.
    pub fn room(&self) -> Option<&Arc<str>> {
        match &self.target {
            Target::Room(name) => Some(name),
            _ => None,
        }
    }

    /// Whether this is something said (a message, action or notice): what ignoring someone
    /// stops.
    pub fn is_said(&self) -> bool {
        matches!(
            self.kind,
            Kind::Message(_) | Kind::Action(_) | Kind::Notice(_)
        )
    }

    /// The sender's nickname, or `""` for the server's own events.
    pub fn nick(&self) -> &str {
        self.from.as_ref().map_or("", |i| &i.nick)
    }

    /// This event as `formats[slot]` renders it, rendered on first use and cached: every
    /// later call for the same slot is a reference-count increment.
    pub fn rendered(&self, formats: &[&'static dyn Render], slot: usize) -> &Bytes {
        self.rendered[slot].get_or_init(|| formats[slot].render(self))
    }

    /// How many renderings have been made (for tests and the fan-out benchmark).
    /// Roughly the bytes this event holds while history keeps it: itself, its text and its
    /// renderings so far (history keeps those too, so scrollback renders nothing again).
    pub fn footprint(&self) -> usize {
        let text = match &self.kind {
            Kind::Message(t) | Kind::Action(t) | Kind::Notice(t) | Kind::Topic(t) => t.len(),
            Kind::Parted(Some(t)) | Kind::Left(_, Some(t)) | Kind::Away(Some(t)) => t.len(),
            Kind::Kicked {
                reason: Some(t), ..
            } => t.len(),
            _ => 0,
        };
        let rendered: usize = self
            .rendered
            .iter()
            .filter_map(|r| r.get())
            .map(Bytes::len)
            .sum();
        // The Arc's two counts come with the allocation.
        std::mem::size_of::<Event>() + 2 * std::mem::size_of::<usize>() + text + rendered
    }

    pub fn renderings(&self) -> usize {
        self.rendered.iter().filter(|r| r.get().is_some()).count()
    }
}

/// One protocol's (or one variant's, e.g. IRC with message tags) way of showing events.
pub trait Render: Send + Sync + fmt::Debug {
    /// The bytes a member of this format receives for `event`; empty if this format does not
    /// show it at all.
    fn render(&self, event: &Event) -> Bytes;

    /// Whether members of this format get every arrival and departure even in rooms big
    /// enough for presence summaries: IRC clients keep their member lists from them.
    fn every_presence(&self) -> bool {
        false
    }

    /// Whether members of this format are always in exactly one room (netcat's grammar has
    /// no other): put out of their room, they land in the lobby.
    fn always_in_a_room(&self) -> bool {
        false
    }

    /// The bytes that tell one member, `to`, a [`Notice`] from the server `server` (the
    /// source of IRC's server lines); empty if this format does not show it.
    fn notice(&self, _server: &str, _to: &str, _notice: &Notice<'_>) -> Bytes {
        Bytes::new()
    }
}

/// What the server tells one member about the server itself rather than a room: typed here,
/// worded by each format (a netcat sentence, an IRC NOTICE), so a WebSocket that carries IRC
/// gets IRC.
#[derive(Debug)]
pub enum Notice<'a> {
    /// The cluster link dropped (`false`) or is back (`true`).
    ClusterLink(bool),
    /// While this server was cut off, someone on `holder` took `old`'s nickname through the
    /// broker, so this member is now `new`.
    ClusterRenamed {
        old: &'a Identity,
        holder: &'a str,
        new: &'a str,
    },
}
