//! Who is here, under which nickname, in which rooms, and fan-out of events to their queues.
//!
//! The hub never touches a socket, never awaits and words nothing: every operation takes the
//! state lock, builds at most one [`Event`], hands it to each recipient's outbox with a
//! non-blocking push (rendered once per format, see [`Event::rendered`]), and returns. Errors
//! are typed; each protocol says them its own way.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use thiserror::Error;

use super::event::{Event, Identity, Kind, MemberId, Render, Target};
use super::leave::LeaveReason;
use super::lock;
use super::member::{queue_totals, Ignored, Member, MAX_IGNORED, PROTOCOLS};
pub use super::modes::Standing;
use super::modes::{flag, normalise_mask, Stamp, Stamps};
use super::names::{nick_key, room_name, validate_nick, NickError, RoomError};
use super::partners::Recall;
use super::room::{
    Listed, Mode, Modes, Room, RoomId, Topic, LOBBY, LOBBY_ID, MAX_IDLE_ROOMS, MAX_LISTED,
};
use super::store::{Change, Kept, Store};

/// Where every event that happens in a room is also recorded (the transcript). Called under
/// the hub's lock, so it must never wait.
pub trait Journal: Send + Sync + fmt::Debug {
    fn record(&self, room: &Arc<str>, event: &Arc<Event>);
}

/// Where what local people do goes to reach other servers (the cluster link). Called under
/// the hub's lock, so that it sees each room's events in the room's order; it must never wait.
pub trait Relay: Send + Sync + fmt::Debug {
    /// A local member said something in `room`, arrived in it or left it (the server too).
    fn said(&self, room: &Arc<str>, event: &Arc<Event>);
    /// A local member left the server: its nickname is free again.
    fn left(&self, identity: &Arc<Identity>);
    /// A local member was renamed (a [`Kind::Nick`] event): every server's list of this
    /// one's people changes, whether or not it shares a room with them. Said once, after
    /// the event's copy in each of the member's rooms.
    fn renamed(&self, event: &Arc<Event>);
    /// `room` got its first member here (`true`) or lost its last (`false`): what others say
    /// in it is wanted here from now on, or no longer.
    fn interest(&self, room: &Arc<str>, here: bool);
    /// A local member was marked away or back (a [`Kind::Away`] event).
    fn away(&self, event: &Arc<Event>);
    /// A local member changed the room's shared state (its topic, or flags among the
    /// changes of a [`Kind::Mode`]), stamped `clock` ([`Room::stamps`]).
    fn changed(&self, room: &Arc<str>, event: &Arc<Event>, clock: u64);
    /// Whether people on other servers are in `room`, as this server last heard.
    fn elsewhere(&self, room: &Arc<str>) -> bool;
    /// Whether `member`, about to enter `room`, enters it as nobody on another server is in
    /// it (`Some(true)`) or as someone is (`Some(false)`), by the cluster's claim made for
    /// this entry; `None` when none was made (the broker did not answer in time), and then
    /// [`Relay::elsewhere`] decides. Asked per member, not per room: two people of this
    /// server entering at once each have their own claim's answer.
    fn creator(&self, room: &Arc<str>, member: MemberId) -> Option<bool>;
}

/// The member id of every person on another server: no local connection has it (ids start at
/// 1 and count up), so no local member is ever mistaken for, or excluded as, a remote sender.
pub const REMOTE: MemberId = MemberId::MAX;

/// The hub's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Messages shown on entering a room; 0 = none.
    pub scrollback: usize,
    /// Messages kept per room; 0 = none.
    pub retain: usize,
    /// Most bytes of history sent at once: half a member's queue, so history alone can never
    /// get a member disconnected as a slow consumer.
    pub budget: usize,
    /// Rooms with more members than this get presence summaries instead of a notice per
    /// arrival and departure; 0 = always individual notices.
    pub announce_limit: usize,
    /// Most bytes all rooms' history may hold together; past it the oldest events go first.
    pub history_bytes: usize,
    /// Rooms one member may create per minute; 0 = no limit. With history kept for emptied
    /// rooms, creating rooms is how one client would otherwise fill the server's memory.
    pub rooms_per_minute: u32,
}

impl Settings {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Settings {
            scrollback: config.history,
            retain: config.history_retain,
            budget: config.queue_bytes / 2,
            announce_limit: config.announce_limit,
            history_bytes: config.history_bytes,
            rooms_per_minute: config.rooms_per_minute,
        }
    }
}

/// How someone comes into a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Straight from registration (the line protocol's lobby): others hear a join.
    Connected,
    /// Moving in, or an IRC `JOIN`.
    Entered,
}

/// Which room an operation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whither<'a> {
    /// The caller's room (a line-protocol user is in exactly one).
    Current,
    /// The room called this (`#` optional).
    Named(&'a str),
}

/// Why a private message was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PrivateError {
    #[error("nobody called {0} is connected")]
    NoSuchNick(String),
    /// The sender's last exchange with this name was with another connection: the one it
    /// was talking to left, and someone (maybe the same person) has the name now. Not
    /// delivered, so nothing meant for the old holder reaches the new one; sending again
    /// reaches the new holder.
    #[error("{0} is not the {0} you were talking to")]
    Changed(String),
}

/// Someone here, as listings see them.
#[derive(Debug, Clone)]
pub struct MemberInfo {
    pub identity: Arc<Identity>,
    pub member: Arc<Member>,
    pub away: Option<Arc<str>>,
    /// In room listings: this member's standing in the room; otherwise none.
    pub standing: Standing,
}

impl MemberInfo {
    pub fn nick(&self) -> &Arc<str> {
        &self.identity.nick
    }
}

/// Room listing for `/rooms`, IRC `LIST` and `/metrics`.
#[derive(Debug, Clone)]
pub struct RoomInfo {
    pub name: Arc<str>,
    pub members: usize,
    pub messages: u64,
    pub topic: Option<Topic>,
    pub created: SystemTime,
    pub modes: Modes,
    /// Whether the member that asked is in it.
    pub here: bool,
}

impl RoomInfo {
    fn of(room: &Room, here: bool) -> RoomInfo {
        RoomInfo {
            name: room.name.clone(),
            members: room.members.len(),
            messages: room.messages,
            topic: room.topic.clone(),
            created: room.created,
            modes: room.modes,
            here,
        }
    }
}

/// A member's nickname, protocol and rooms: [`Hub::people`].
#[derive(Debug, Clone)]
pub struct Whereabouts {
    pub nick: Arc<str>,
    pub protocol: &'static str,
    pub rooms: Vec<Arc<str>>,
    /// Those of `rooms` that are secret, so other nodes can keep them out of their listings.
    pub secret: Vec<Arc<str>>,
    /// Those of `rooms` they are an operator of, and have a voice in.
    pub ops: Vec<Arc<str>>,
    pub voiced: Vec<Arc<str>>,
    pub away: Option<Arc<str>>,
}

/// What [`Hub::change_modes`] did.
#[derive(Debug)]
pub struct ModesChanged {
    /// The changes made, as the room was told them; `None` if nothing changed.
    pub event: Option<Arc<Event>>,
    /// The changes that could not be made (someone not connected or not in the room).
    pub refused: Vec<RoomError>,
}

/// Head counts for IRC's LUSERS, taken in one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    pub members: usize,
    pub opers: usize,
    pub invisible: usize,
    /// Rooms with anyone in them.
    pub rooms: usize,
}

/// A rename, as [`Hub::rename`] made it.
#[derive(Debug)]
pub struct Renamed {
    pub old: Arc<Identity>,
    pub new: Arc<Identity>,
    pub event: Arc<Event>,
}

#[derive(Debug)]
struct Entry {
    identity: Arc<Identity>,
    member: Arc<Member>,
    /// The rooms this member is in, each with its index in that room's member list, so
    /// leaving a room is O(1). A line-protocol user has exactly one.
    rooms: Vec<(RoomId, usize)>,
    away: Option<Arc<str>>,
    /// When this member created rooms in the last [`CREATION_WINDOW`], oldest first.
    /// Boxed: most members never create a room, and every member's entry pays for the field
    /// (8 bytes where the queue itself is 32).
    #[allow(clippy::box_collection)]
    created_rooms: Option<Box<VecDeque<tokio::time::Instant>>>,
    /// The keys of the rooms someone invited this member into that it has not entered yet:
    /// it may enter them while they are invite-only. Keys, not ids: an invitation from an
    /// operator on another server may name a room nobody here is in. Used up by entering;
    /// gone with the connection.
    invited: Vec<String>,
}

/// Why `/ignore` was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IgnoreError {
    #[error("not a nickname")]
    Invalid,
    #[error("that is you")]
    Yourself,
    #[error("ignoring {0} already")]
    TooMany(usize),
}

/// Invitations one member holds at most; past it the oldest is forgotten.
const MAX_INVITATIONS: usize = 32;

/// What tells a kept event apart from the same one read back from the cluster's stream: who
/// said it and when, to the millisecond (what the stream carries).
fn same_key(e: &Event) -> Option<(Arc<str>, u128)> {
    let from = e.from.as_ref()?;
    let ms =
        e.at.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
    Some((from.nick.clone(), ms))
}

/// The text of an event rooms keep in their history (a message, action or notice), tagged
/// by kind so a message and an action with the same words differ.
fn history_text(kind: &Kind) -> Option<(u8, &str)> {
    match kind {
        Kind::Message(t) => Some((0, t)),
        Kind::Action(t) => Some((1, t)),
        Kind::Notice(t) => Some((2, t)),
        _ => None,
    }
}

/// `nick!user@host`, what bans and mutes are matched against.
fn full_name(identity: &Identity) -> String {
    format!("{}!{}@{}", identity.nick, identity.user, identity.host)
}

/// The window of the per-member room creation limit ([`Settings::rooms_per_minute`]).
const CREATION_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

impl Entry {
    fn info(&self) -> MemberInfo {
        MemberInfo {
            identity: self.identity.clone(),
            member: self.member.clone(),
            away: self.away.clone(),
            standing: Standing::default(),
        }
    }

    fn in_room(&self, room: &Room) -> MemberInfo {
        MemberInfo {
            standing: room.standing(self.member.id),
            ..self.info()
        }
    }

    /// Lets this member into the room called `room` once, invite-only or not.
    fn note_invitation(&mut self, room: &str) {
        let key = room.to_ascii_lowercase();
        if !self.invited.contains(&key) {
            // Bounded like everything a client can grow: the oldest invitation goes first.
            if self.invited.len() >= MAX_INVITATIONS {
                self.invited.remove(0);
            }
            self.invited.push(key);
        }
    }

    fn is_in(&self, room: RoomId) -> bool {
        self.rooms.iter().any(|&(r, _)| r == room)
    }
}

/// What a member sees of a room as it enters it, under the hub's lock, so that nothing said
/// in the room can land before it: the name, the topic, who is in it and its recent history.
#[derive(Debug)]
pub struct RoomView<'a> {
    room: &'a Room,
    members: &'a HashMap<MemberId, Entry>,
    /// The arrival as others were told it.
    pub event: &'a Arc<Event>,
    pub settings: Settings,
}

impl<'a> RoomView<'a> {
    pub fn name(&self) -> &'a Arc<str> {
        &self.room.name
    }

    pub fn topic(&self) -> Option<&'a Topic> {
        self.room.topic.as_ref()
    }

    pub fn created(&self) -> SystemTime {
        self.room.created
    }

    pub fn modes(&self) -> Modes {
        self.room.modes
    }

    /// Members, the one entering included.
    pub fn len(&self) -> usize {
        self.room.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.room.members.is_empty()
    }

    pub fn members(&self) -> impl Iterator<Item = MemberInfo> + 'a {
        let (members, room) = (self.members, self.room);
        room.members
            .iter()
            .filter_map(move |m| members.get(&m.id).map(|e| e.in_room(room)))
    }

    /// The last `n` messages, newest first.
    pub fn recent(&self, n: usize) -> impl Iterator<Item = &'a Arc<Event>> {
        self.room.recent(n)
    }
}

#[derive(Debug)]
struct State {
    members: HashMap<MemberId, Entry>,
    /// Nickname key → member, for case-insensitive uniqueness.
    by_nick: HashMap<String, MemberId>,
    rooms: HashMap<RoomId, Room>,
    /// Room name key → room.
    room_ids: HashMap<String, RoomId>,
    next_room: RoomId,
    /// Rooms that emptied while holding history, oldest first, with their `emptied` count at
    /// the time; bounded by [`MAX_IDLE_ROOMS`].
    idle: VecDeque<(RoomId, u64)>,
    /// Every room holding history, by the id of its oldest kept event: the server-wide byte
    /// budget evicts the oldest event of all first, in O(log rooms).
    by_oldest: BTreeMap<u64, RoomId>,
    /// The sum of every room's `history_bytes`.
    history_bytes: usize,
    /// Events the byte budget evicted since start.
    history_evicted: u64,
    /// The latest renames on other nodes, oldest first, with whom each was told so far.
    remote_renames: VecDeque<RemoteRename>,
}

/// Renames on other nodes remembered at most. A rename's copies (one per room its person
/// is in) follow each other closely on the broker; a member would be told twice only if
/// this many other renames came between two copies of one.
const MAX_REMOTE_RENAMES: usize = 256;

/// A rename on another node as its copies in each room arrive: the one event every room is
/// told, and the members told so far.
#[derive(Debug)]
struct RemoteRename {
    key: RenameKey,
    event: Arc<Event>,
    told: HashSet<MemberId>,
}

/// What every copy of one remote rename shares: the node (the sender's host), the old and the
/// new name, and the instant it was said. One person renaming the same way twice within a
/// millisecond would be needed for two renames to meet (each waits for the broker's claim).
#[derive(Debug, PartialEq, Eq)]
struct RenameKey {
    node: Arc<str>,
    old: String,
    new: Arc<str>,
    at: SystemTime,
}

impl RenameKey {
    fn of(event: &Event) -> RenameKey {
        let (node, old) = event
            .from
            .as_ref()
            .map_or_else(Default::default, |f| (f.host.clone(), nick_key(&f.nick)));
        let new = match &event.kind {
            Kind::Nick(new) => new.nick.clone(),
            _ => "".into(),
        };
        RenameKey {
            node,
            old,
            new,
            at: event.at,
        }
    }
}

impl State {
    fn new() -> State {
        let mut state = State {
            members: HashMap::new(),
            by_nick: HashMap::new(),
            rooms: HashMap::new(),
            room_ids: HashMap::new(),
            next_room: LOBBY_ID + 1,
            idle: VecDeque::new(),
            by_oldest: BTreeMap::new(),
            history_bytes: 0,
            history_evicted: 0,
            remote_renames: VecDeque::new(),
        };
        let mut lobby = Room::new(LOBBY);
        // Nobody holds the lobby, so its topic is everyone's; its modes say so.
        lobby.modes.topic_lock = false;
        state.rooms.insert(LOBBY_ID, lobby);
        state.room_ids.insert(LOBBY.to_owned(), LOBBY_ID);
        state
    }

    /// The room `whither` names for `id`: its own (first) room, or an existing room by name.
    fn find_room(&self, id: MemberId, whither: Whither<'_>) -> Result<RoomId, RoomError> {
        match whither {
            Whither::Current => self
                .members
                .get(&id)
                .and_then(|e| e.rooms.first())
                .map(|&(room, _)| room)
                .ok_or_else(|| RoomError::NoSuchRoom(LOBBY.to_owned())),
            Whither::Named(typed) => {
                let (_, key) = room_name(typed)?;
                self.room_ids
                    .get(&key)
                    .copied()
                    .ok_or_else(|| RoomError::NoSuchRoom(typed.to_owned()))
            }
        }
    }

    /// Like [`State::find_room`], for looking into a room: a secret room is found only by
    /// its members, so nobody else learns its members, topic or history, or that it exists.
    fn seen_room(&self, id: MemberId, whither: Whither<'_>) -> Result<RoomId, RoomError> {
        let room = self.find_room(id, whither)?;
        if self.visible(id, room) {
            return Ok(room);
        }
        let typed = match whither {
            Whither::Named(typed) => typed,
            Whither::Current => &self.rooms[&room].name,
        };
        Err(RoomError::NoSuchRoom(typed.to_owned()))
    }

    /// Whether `id` may see `room` in listings: it is not secret, or `id` is in it.
    fn visible(&self, id: MemberId, room: RoomId) -> bool {
        !self.rooms[&room].modes.secret || self.members.get(&id).is_some_and(|e| e.is_in(room))
    }

    /// Whether `id` may come into `room`: no ban names it, and the room is not invite-only
    /// or it was invited. A server operator always may, and so may an account that operates
    /// the room; so may anyone while nobody is in the room, here or on another server
    /// (`elsewhere`, as this server's lists say), and no account operates it, since nobody
    /// could ever invite them and the room would be shut for good. An invitation is used up
    /// here.
    fn admit(&mut self, id: MemberId, room: RoomId, elsewhere: bool) -> Result<(), RoomError> {
        let Some(entry) = self.members.get_mut(&id) else {
            return Ok(());
        };
        let r = &self.rooms[&room];
        if entry.member.is_oper() || entry.is_in(room) {
            return Ok(());
        }
        // A room's operators are never locked out of it by a ban or by its own +i.
        if (entry.member.account()).is_some_and(|a| r.operated_by(&a)) {
            return Ok(());
        }
        if !r.bans.is_empty() && r.bans(&full_name(&entry.identity)) {
            return Err(RoomError::Banned(r.name.clone()));
        }
        let key = r.name.to_ascii_lowercase();
        let invited = entry.invited.iter().position(|m| *m == key);
        let nobody_to_invite = r.members.is_empty() && !elsewhere && r.op_accounts.is_empty();
        if r.modes.invite_only && invited.is_none() && !nobody_to_invite {
            return Err(RoomError::InviteOnly(r.name.clone()));
        }
        if let Some(at) = invited {
            entry.invited.swap_remove(at);
        }
        Ok(())
    }

    /// Whether `id` may use operators' rights in `room`: one of its operators, or a server
    /// operator.
    /// The members of `room` its bans name, but for `but`, its operators and server
    /// operators: those a ban puts out.
    fn banned_here(&self, room: RoomId, but: Option<MemberId>) -> Vec<MemberId> {
        let r = &self.rooms[&room];
        r.members
            .iter()
            .filter(|m| Some(m.id) != but && !r.operators.contains(&m.id))
            .filter_map(|m| self.members.get(&m.id))
            .filter(|e| !e.member.is_oper() && r.bans(&full_name(&e.identity)))
            .map(|e| e.member.id)
            .collect()
    }

    fn operates(&self, id: MemberId, room: &Room) -> bool {
        room.operators.contains(&id) || self.members.get(&id).is_some_and(|e| e.member.is_oper())
    }

    /// The room `whither` names, which `id` must be in, and `id`'s identity, with one lookup
    /// of the member (this is on every message's path).
    fn own_room(
        &self,
        id: MemberId,
        whither: Whither<'_>,
    ) -> Result<(RoomId, Arc<Identity>), RoomError> {
        let entry = self
            .members
            .get(&id)
            .ok_or_else(|| RoomError::NoSuchRoom(LOBBY.to_owned()))?;
        let room = match whither {
            Whither::Current => entry.rooms.first().map(|&(room, _)| room),
            Whither::Named(_) => Some(self.find_room(id, whither)?),
        }
        .ok_or_else(|| RoomError::NoSuchRoom(LOBBY.to_owned()))?;
        if entry.is_in(room) {
            Ok((room, entry.identity.clone()))
        } else {
            Err(RoomError::NotThere(self.rooms[&room].name.clone()))
        }
    }

    /// The room called `typed`, created if there is none, unless `creator` has created
    /// `per_minute` rooms in the last minute already (0 = no limit).
    fn room_or_create(
        &mut self,
        typed: &str,
        creator: MemberId,
        per_minute: u32,
        store: Option<&Arc<dyn Store>>,
    ) -> Result<RoomId, RoomError> {
        let (display, key) = room_name(typed)?;
        if let Some(&id) = self.room_ids.get(&key) {
            return Ok(id);
        }
        if let (Some(entry), true) = (self.members.get_mut(&creator), per_minute > 0) {
            let now = tokio::time::Instant::now();
            let created = entry.created_rooms.get_or_insert_with(Default::default);
            while created
                .front()
                .is_some_and(|&at| now.duration_since(at) >= CREATION_WINDOW)
            {
                created.pop_front();
            }
            if created.len() >= per_minute as usize {
                let oldest = created.front().copied().unwrap_or(now);
                let wait = CREATION_WINDOW.saturating_sub(now.duration_since(oldest));
                return Err(RoomError::TooManyCreated {
                    limit: per_minute,
                    // Rounded up: "try again in 59 s" a moment too early would fail again.
                    retry_secs: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
                });
            }
            created.push_back(now);
        }
        let id = self.next_room;
        self.next_room += 1;
        let mut room = Room::new(display);
        // A room the hub forgot while the store kept it comes back with its topic and modes
        // (the store's index is in memory: no disk read under the lock).
        if let Some(kept) = store.and_then(|s| s.room(display)) {
            room.topic = kept.topic;
            room.modes = kept.modes.unwrap_or(room.modes);
            room.restore_lists(kept.lists.unwrap_or_default());
        }
        self.rooms.insert(id, room);
        self.room_ids.insert(key, id);
        Ok(id)
    }

    /// Starts from what a store kept: its rooms (as idle rooms, the most recently active
    /// last, so the idle bound forgets the quietest), topics, modes and newest history,
    /// within the history settings as they are now.
    fn restore(&mut self, rooms: Vec<super::store::KeptRoom>, settings: Settings) {
        let mut all: Vec<(u64, RoomId, Arc<Event>)> = Vec::new();
        let mut latest: Vec<(u64, RoomId)> = Vec::new();
        for kept in rooms {
            let key = kept.name.to_ascii_lowercase();
            let id = match self.room_ids.get(&key) {
                Some(&id) => id,
                None => {
                    let id = self.next_room;
                    self.next_room += 1;
                    self.rooms.insert(id, Room::new(&kept.name));
                    self.room_ids.insert(key, id);
                    id
                }
            };
            let room = self.rooms.get_mut(&id).expect("just made");
            room.topic = kept.topic;
            if let Some(modes) = kept.modes {
                room.modes = modes;
            }
            if let Some(lists) = kept.lists {
                room.restore_lists(lists);
            }
            let last = kept.events.last().map_or(0, |e| e.id);
            latest.push((last, id));
            all.extend(kept.events.into_iter().map(|e| (e.id, id, e)));
        }
        all.sort_unstable_by_key(|&(eid, ..)| eid);
        for (_, room, event) in &all {
            self.record(*room, event, settings.retain, settings.history_bytes);
        }
        // Restoring is not forgetting: what the memory budget left out is still in the store.
        self.history_evicted = 0;
        latest.sort_unstable();
        for (_, id) in latest {
            if id != LOBBY_ID && self.rooms.contains_key(&id) {
                self.tidy(id);
            }
        }
    }

    /// Adds `id` to `room`'s member list, as an operator if the room was empty or its
    /// account operates the room. Whether it is the room's only member now (a cluster
    /// follows the room from then on), and whether that made the account one of the room's
    /// operating accounts (the store must be told).
    /// `elsewhere`: people on other servers are in the room, so whoever enters it first here
    /// is no creator of it (docs/CLUSTER.md, "Topics and modes").
    fn add(&mut self, id: MemberId, room: RoomId, elsewhere: bool) -> (bool, bool) {
        let entry = self.members.get_mut(&id).expect("member");
        let r = self.rooms.get_mut(&room).expect("room exists");
        let mut lists_changed = false;
        let first = r.members.is_empty();
        if room != LOBBY_ID {
            let account = entry.member.account();
            let known = account.as_deref().is_some_and(|a| r.operated_by(a));
            // A room some registered account operates waits for it: whoever comes in first
            // after a restart is not handed someone else's room.
            let unclaimed = r.members.is_empty() && r.op_accounts.is_empty() && !elsewhere;
            if unclaimed || known {
                r.operators.push(id);
                if let (Some(account), false) = (account, known) {
                    lists_changed = r.add_op_account(account);
                }
            }
        }
        if entry.member.ignoring() {
            r.ignorers += 1;
        }
        let index = r.add_member(entry.member.clone(), entry.member.format());
        entry.rooms.push((room, index));
        (first, lists_changed)
    }

    /// Takes `id` out of `room`'s member list, keeping the moved member's slot right;
    /// whether that emptied the room.
    fn remove(&mut self, id: MemberId, room: RoomId) -> bool {
        let Some(entry) = self.members.get_mut(&id) else {
            return false;
        };
        let Some(at) = entry.rooms.iter().position(|&(r, _)| r == room) else {
            return false;
        };
        let (_, slot) = entry.rooms.remove(at);
        let r = self.rooms.get_mut(&room).expect("room exists");
        if entry.member.ignoring() {
            r.ignorers -= 1;
        }
        r.operators.retain(|&op| op != id);
        r.voiced.retain(|&v| v != id);
        if let Some(moved) = r.remove_member(slot) {
            let moved = moved.id;
            let entry = self.members.get_mut(&moved).expect("member");
            if let Some(r) = entry.rooms.iter_mut().find(|(r, _)| *r == room) {
                r.1 = slot;
            }
        }
        self.rooms[&room].members.is_empty()
    }

    /// Forgets `room` if nobody is in it and it holds nothing worth keeping; an empty room
    /// with history is kept, up to [`MAX_IDLE_ROOMS`] of them.
    fn tidy(&mut self, id: RoomId) {
        let Some(room) = self.rooms.get_mut(&id) else {
            return;
        };
        if id == LOBBY_ID || !room.members.is_empty() {
            return;
        }
        if !room.worth_keeping() {
            self.remove_room(id);
            return;
        }
        room.emptied += 1;
        self.idle.push_back((id, room.emptied));
        while self.idle.len() > MAX_IDLE_ROOMS {
            let (old, emptied) = self.idle.pop_front().expect("non-empty");
            let stale = self
                .rooms
                .get(&old)
                .is_some_and(|r| r.members.is_empty() && r.emptied == emptied);
            if stale {
                self.remove_room(old);
            }
        }
    }

    fn remove_room(&mut self, id: RoomId) {
        if let Some(room) = self.rooms.remove(&id) {
            self.room_ids.remove(&room.name.to_ascii_lowercase());
            if let Some(oldest) = room.oldest_id() {
                self.by_oldest.remove(&oldest);
            }
            self.history_bytes -= room.history_bytes;
        }
    }

    /// Keeps `event` in `room`'s history, then evicts the oldest events server-wide, whatever
    /// their room, until the history fits `budget` bytes. A room left with nothing worth
    /// keeping and nobody in it is forgotten.
    fn record(&mut self, room: RoomId, event: &Arc<Event>, retain: usize, budget: usize) {
        self.rekeep(room, budget, |r| r.record(event, retain));
    }

    /// Changes `room`'s history with `change`, keeps the server-wide byte count and the
    /// index by oldest event in step, then evicts the oldest events server-wide, whatever
    /// their room, until the history fits `budget` bytes.
    fn rekeep(&mut self, room: RoomId, budget: usize, change: impl FnOnce(&mut Room)) {
        let r = self.rooms.get_mut(&room).expect("room exists");
        let (oldest, bytes) = (r.oldest_id(), r.history_bytes);
        change(r);
        self.history_bytes = self.history_bytes - bytes + r.history_bytes;
        if r.oldest_id() != oldest {
            if let Some(old) = oldest {
                self.by_oldest.remove(&old);
            }
            if let Some(new) = r.oldest_id() {
                self.by_oldest.insert(new, room);
            }
        }
        while self.history_bytes > budget {
            let Some((_, victim)) = self.by_oldest.pop_first() else {
                break;
            };
            let v = self.rooms.get_mut(&victim).expect("indexed rooms exist");
            self.history_bytes -= v.drop_oldest();
            self.history_evicted += 1;
            match v.oldest_id() {
                Some(next) => {
                    self.by_oldest.insert(next, victim);
                }
                None => {
                    if victim != LOBBY_ID && v.members.is_empty() && !v.worth_keeping() {
                        self.remove_room(victim);
                    }
                }
            }
        }
    }
}

/// The registry of members and of the rooms they are in.
#[derive(Debug)]
pub struct Hub {
    state: Mutex<State>,
    /// Every format members can be rendered for, indexed by [`Member::format`].
    formats: &'static [&'static dyn Render],
    next_guest: AtomicU64,
    next_event: AtomicU64,
    settings: Settings,
    /// Room events go here, recorded under the state lock so the journal has them in the
    /// order the room saw them.
    journal: Option<Box<dyn Journal>>,
    /// Where rooms, topics and history outlive the process (`--data-dir`); appended to under
    /// the state lock, before anyone is handed the event (see [`Store`]).
    store: Option<Arc<dyn Store>>,
    /// The cluster link (`--cluster`).
    relay: Option<Box<dyn Relay>>,
}

impl Hub {
    pub fn new(settings: Settings, formats: &'static [&'static dyn Render]) -> Self {
        assert!(formats.len() <= super::event::MAX_FORMATS);
        Hub {
            state: Mutex::new(State::new()),
            formats,
            next_guest: AtomicU64::new(1),
            next_event: AtomicU64::new(1),
            settings,
            journal: None,
            store: None,
            relay: None,
        }
    }

    /// Keeps rooms, topics and history in `store` from now on, starting from what it `kept`.
    pub fn with_store(mut self, store: Arc<dyn Store>, kept: Kept) -> Self {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        state.restore(kept.rooms, self.settings);
        self.next_event = AtomicU64::new(kept.next_event.max(1));
        self.store = Some(store);
        self
    }

    /// The store, for connection writers to call [`Store::barrier`] before writing.
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }

    fn keep(&self, change: Change<'_>) {
        if let Some(store) = &self.store {
            store.append(change);
        }
    }

    /// Hands the store `room`'s bans, mutes and operating accounts as they are now, under a
    /// fresh id (ids only grow, so the store keeps the latest).
    fn keep_lists(&self, room: &Room) {
        if let Some(store) = &self.store {
            let lists = room.lists();
            store.append(Change::Lists {
                room: &room.name,
                id: self.next_event.fetch_add(1, Relaxed),
                lists: &lists,
            });
        }
    }

    /// Records every room event in `journal` from now on.
    pub fn with_journal(mut self, journal: Box<dyn Journal>) -> Self {
        self.journal = Some(journal);
        self
    }

    fn relay_said(&self, room: &Arc<str>, event: &Arc<Event>) {
        if let Some(relay) = &self.relay {
            relay.said(room, event);
        }
    }

    fn interest(&self, room: &Arc<str>, here: bool) {
        if let Some(relay) = &self.relay {
            relay.interest(room, here);
        }
    }

    fn relay_changed(&self, room: &Arc<str>, event: &Arc<Event>, clock: u64) {
        if let Some(relay) = &self.relay {
            relay.changed(room, event, clock);
        }
    }

    /// Whether people on other servers are in `room` (never, without a cluster).
    fn elsewhere(&self, room: &Arc<str>) -> bool {
        self.relay.as_ref().is_some_and(|r| r.elsewhere(room))
    }

    /// Whether people on other servers are in `room` as `id` enters it: the cluster's claim
    /// for this entry when it made one (exact: of two people entering an empty room on two
    /// servers at once, it says so to exactly one), else this server's lists
    /// (docs/CLUSTER.md, "The creator rule").
    fn elsewhere_for(&self, room: &Arc<str>, id: MemberId) -> bool {
        match self.relay.as_ref().and_then(|r| r.creator(room, id)) {
            Some(creator) => !creator,
            None => self.elsewhere(room),
        }
    }

    /// Hands what local people say and their departures to `relay` from now on.
    pub fn with_relay(mut self, relay: Box<dyn Relay>) -> Self {
        self.relay = Some(relay);
        self
    }

    pub fn settings(&self) -> Settings {
        self.settings
    }

    pub fn formats(&self) -> &'static [&'static dyn Render] {
        self.formats
    }

    fn event(&self, target: Target, from: Option<Arc<Identity>>, kind: Kind) -> Arc<Event> {
        Event::new(self.next_event.fetch_add(1, Relaxed), target, from, kind)
    }

    /// An event with the next id that is fanned out to nobody: what a sender is shown of a
    /// message that left this server (IRC `echo-message` of one to another node's person).
    pub fn unsent(&self, target: Target, from: Option<Arc<Identity>>, kind: Kind) -> Arc<Event> {
        self.event(target, from, kind)
    }

    fn journal(&self, room: &Arc<str>, event: &Arc<Event>) {
        if let Some(journal) = &self.journal {
            journal.record(room, event);
        }
    }

    /// Claims `wanted` (or a free `guest-N` when `None`) for `member`, which is then in no
    /// room. `user` is the IRC user name (the nickname when `None`).
    pub fn register(
        &self,
        member: &Arc<Member>,
        wanted: Option<&str>,
        user: Option<&str>,
        realname: &str,
    ) -> Result<Arc<Identity>, NickError> {
        let mut state = lock(&self.state);
        let nick: Arc<str> = match wanted {
            Some(name) => {
                validate_nick(name)?;
                if state.by_nick.contains_key(&nick_key(name)) {
                    return Err(NickError::Taken(name.to_owned()));
                }
                name.into()
            }
            None => loop {
                let name = self.guest_name();
                if !state.by_nick.contains_key(&name) {
                    break name.into();
                }
            },
        };
        let ip = member.addr.ip().to_canonical().to_string();
        // A host that starts with ':' would read as a trailing parameter in IRC replies.
        let host = if ip.starts_with(':') {
            format!("0{ip}")
        } else {
            ip
        };
        let identity = Arc::new(Identity {
            id: member.id,
            user: user.map_or_else(|| nick.clone(), Arc::from),
            nick: nick.clone(),
            host: host.into(),
            realname: realname.into(),
            account: member.account(),
        });
        state.by_nick.insert(nick_key(&nick), member.id);
        state.members.insert(
            member.id,
            Entry {
                identity: identity.clone(),
                member: member.clone(),
                rooms: Vec::new(),
                away: None,
                created_rooms: None,
                invited: Vec::new(),
            },
        );
        Ok(identity)
    }

    /// The room called `name`, created (within `id`'s creation limit, and as the store kept
    /// it) if there is none.
    fn room_or_create(
        &self,
        state: &mut State,
        name: &str,
        id: MemberId,
    ) -> Result<RoomId, RoomError> {
        let per_minute = self.settings.rooms_per_minute;
        state.room_or_create(name, id, per_minute, self.store.as_ref())
    }

    /// Puts `id` into the room called `name` (creating it), tells the room, and hands `view`
    /// what the newcomer sees of it, all under one lock.
    pub fn enter(
        &self,
        id: MemberId,
        name: &str,
        arrival: Arrival,
        view: impl FnOnce(RoomView<'_>),
    ) -> Result<(), RoomError> {
        let mut state = lock(&self.state);
        let room = self.room_or_create(&mut state, name, id)?;
        let elsewhere = self.elsewhere_for(&state.rooms[&room].name, id);
        if let Err(e) = state.admit(id, room, elsewhere) {
            self.refused_entry(&state, id, &e);
            return Err(e);
        }
        self.enter_locked(&mut state, id, room, arrival, view)
    }

    /// Logs an entry a ban or invite-only refused, naming who tried.
    fn refused_entry(&self, state: &State, id: MemberId, e: &RoomError) {
        if let Some(entry) = state.members.get(&id) {
            tracing::info!(member = id, nick = %entry.identity.nick, error = %e, "entry refused");
        }
    }

    fn enter_locked(
        &self,
        state: &mut State,
        id: MemberId,
        room: RoomId,
        arrival: Arrival,
        view: impl FnOnce(RoomView<'_>),
    ) -> Result<(), RoomError> {
        let Some(entry) = state.members.get(&id) else {
            return Ok(());
        };
        if entry.is_in(room) {
            return Err(RoomError::AlreadyThere(state.rooms[&room].name.clone()));
        }
        let identity = entry.identity.clone();
        let name = state.rooms[&room].name.clone();
        let kind = match arrival {
            Arrival::Connected => Kind::Joined,
            Arrival::Entered => Kind::Entered,
        };
        let event = self.event(Target::Room(name.clone()), Some(identity), kind);
        let limit = self.settings.announce_limit;
        state.rooms.get_mut(&room).expect("room exists").presence(
            &event,
            self.formats,
            limit,
            true,
            id,
        );
        self.journal(&name, &event);
        self.relay_said(&name, &event);
        let elsewhere = self.elsewhere_for(&name, id);
        let (first, lists_changed) = state.add(id, room, elsewhere);
        if first {
            self.interest(&name, true);
        }
        if lists_changed {
            self.keep_lists(&state.rooms[&room]);
        }
        view(RoomView {
            room: &state.rooms[&room],
            members: &state.members,
            event: &event,
            settings: self.settings,
        });
        Ok(())
    }

    /// Takes `id` out of the room `whither` names, telling the room; returns the event, for
    /// the protocols that show the leaver its own departure.
    pub fn part(
        &self,
        id: MemberId,
        whither: Whither<'_>,
        message: Option<&str>,
    ) -> Result<Arc<Event>, RoomError> {
        let mut state = lock(&self.state);
        let (room, _) = state.own_room(id, whither)?;
        Ok(self.part_locked(&mut state, id, room, message))
    }

    fn part_locked(
        &self,
        state: &mut State,
        id: MemberId,
        room: RoomId,
        message: Option<&str>,
    ) -> Arc<Event> {
        let identity = state.members[&id].identity.clone();
        let emptied = state.remove(id, room);
        let r = state.rooms.get_mut(&room).expect("room exists");
        if emptied {
            self.interest(&r.name, false);
        }
        let event = self.event(
            Target::Room(r.name.clone()),
            Some(identity),
            Kind::Parted(message.map(Into::into)),
        );
        r.presence(
            &event,
            self.formats,
            self.settings.announce_limit,
            false,
            id,
        );
        let name = r.name.clone();
        self.journal(&name, &event);
        self.relay_said(&name, &event);
        state.tidy(room);
        event
    }

    /// Moves `id` out of every room it is in and into the one called `name`: the line
    /// protocol's `/join` and `/leave`. Already there (and only there): an error.
    pub fn move_to(
        &self,
        id: MemberId,
        name: &str,
        view: impl FnOnce(RoomView<'_>),
    ) -> Result<(), RoomError> {
        let mut state = lock(&self.state);
        let room = self.room_or_create(&mut state, name, id)?;
        let Some(entry) = state.members.get(&id) else {
            return Ok(());
        };
        let current: Vec<RoomId> = entry.rooms.iter().map(|&(r, _)| r).collect();
        if current == [room] {
            return Err(RoomError::AlreadyThere(state.rooms[&room].name.clone()));
        }
        let elsewhere = self.elsewhere_for(&state.rooms[&room].name, id);
        if let Err(e) = state.admit(id, room, elsewhere) {
            self.refused_entry(&state, id, &e);
            return Err(e);
        }
        for old in current {
            if old != room {
                self.part_locked(&mut state, id, old, None);
            }
        }
        // Leaving may have tidied the room away (empty without history, or the idle room the
        // bound pushed out). Making it again is part of this move, not a new creation: the
        // limit was checked above, and failing now would leave the member in no room.
        let room = state.room_or_create(name, id, 0, self.store.as_ref())?;
        self.enter_locked(&mut state, id, room, Arrival::Entered, view)
    }

    /// Removes `id` from the server and tells everyone who shared a room with it, once each
    /// (except at shutdown, where one shutdown notice replaces everyone's leave notices).
    pub fn leave(&self, id: MemberId, reason: LeaveReason, message: Option<&str>) {
        let mut state = lock(&self.state);
        let Some(entry) = state.members.get(&id) else {
            return;
        };
        let identity = entry.identity.clone();
        let rooms: Vec<RoomId> = entry.rooms.iter().map(|&(r, _)| r).collect();
        for &room in &rooms {
            if state.remove(id, room) {
                self.interest(&state.rooms[&room].name, false);
            }
        }
        state.members.remove(&id);
        state.by_nick.remove(&nick_key(&identity.nick));
        if let Some(relay) = &self.relay {
            relay.left(&identity);
        }
        let event = self.event(
            Target::Peers,
            Some(identity),
            Kind::Left(reason, message.map(Into::into)),
        );
        for &room in &rooms {
            let r = state.rooms.get_mut(&room).expect("room exists");
            if reason != LeaveReason::Shutdown {
                r.presence_once(&event, self.formats, self.settings.announce_limit);
            }
            let name = r.name.clone();
            self.journal(&name, &event);
            self.relay_said(&name, &event);
        }
        for room in rooms {
            state.tidy(room);
        }
    }

    /// Renames `id` to `new` and tells everyone who shares a room with it, once each. A
    /// change of case alone is allowed; the caller tells the member itself.
    pub fn rename(&self, id: MemberId, new: &str) -> Result<Renamed, NickError> {
        validate_nick(new)?;
        let key = nick_key(new);
        let mut state = lock(&self.state);
        if state.by_nick.get(&key).is_some_and(|&owner| owner != id) {
            return Err(NickError::Taken(new.to_owned()));
        }
        let Some(entry) = state.members.get_mut(&id) else {
            return Err(NickError::Invalid);
        };
        let renamed = Arc::new(entry.identity.renamed(new));
        let old = std::mem::replace(&mut entry.identity, renamed.clone());
        let member = entry.member.clone();
        member.mark_renamed();
        let rooms: Vec<RoomId> = entry.rooms.iter().map(|&(r, _)| r).collect();
        state.by_nick.remove(&nick_key(&old.nick));
        state.by_nick.insert(key, id);
        let event = self.event(
            Target::Peers,
            Some(old.clone()),
            Kind::Nick(renamed.clone()),
        );
        // The renamer is a member of its own rooms; it is told by its own protocol instead.
        member.mark_seen(event.id);
        for room in rooms {
            let r = &state.rooms[&room];
            for m in &r.members {
                m.deliver_once(&event, self.formats);
            }
            self.journal(&r.name, &event);
            // Once per room, in the room's order: each node tells its people there when the
            // room's copy arrives, between the lines said before and after it.
            self.relay_said(&r.name, &event);
        }
        if let Some(relay) = &self.relay {
            relay.renamed(&event);
        }
        Ok(Renamed {
            old,
            new: renamed,
            event,
        })
    }

    /// Says `kind` (a message, action or notice) from `id` in the room `whither` names, keeps
    /// it in the room's history and returns it with how many others it was queued for.
    pub fn say(
        &self,
        id: MemberId,
        whither: Whither<'_>,
        kind: Kind,
    ) -> Result<(Arc<Event>, usize), RoomError> {
        let mut state = lock(&self.state);
        let (room, identity) = state.own_room(id, whither)?;
        let State { rooms, members, .. } = &mut *state;
        let r = rooms.get_mut(&room).expect("room exists");
        if let Some(why) = r.silenced(id, || full_name(&identity)) {
            // Server operators have every room operator's rights, speaking included.
            if !members.get(&id).is_some_and(|e| e.member.is_oper()) {
                return Err(RoomError::Silenced {
                    room: r.name.clone(),
                    why,
                });
            }
        }
        let event = self.event(Target::Room(r.name.clone()), Some(identity), kind);
        if self.settings.retain > 0 {
            self.keep(Change::Said(&event));
        }
        if let Some(relay) = &self.relay {
            relay.said(&r.name, &event);
        }
        let delivered = self.said_in(&mut state, room, &event, Some(id));
        Ok((event, delivered))
    }

    /// Fans what was said out to `room`'s members (but `sender`), keeps it in the room's
    /// history and journals it; returns how many it was queued for.
    fn said_in(
        &self,
        state: &mut State,
        room: RoomId,
        event: &Arc<Event>,
        sender: Option<MemberId>,
    ) -> usize {
        let r = state.rooms.get_mut(&room).expect("room exists");
        let delivered = r.fan_out(event, self.formats, sender);
        let name = r.name.clone();
        state.record(
            room,
            event,
            self.settings.retain,
            self.settings.history_bytes,
        );
        self.journal(&name, event);
        delivered
    }

    /// Delivers `kind`, said in the room called `room` by `from` on another server, to this
    /// server's members of that room, and keeps it in the room's history. A room nobody here
    /// is in is not created for it. Returns how many it was queued for.
    pub fn relayed(&self, room: &str, from: Arc<Identity>, at: SystemTime, kind: Kind) -> usize {
        let Ok((_, key)) = room_name(room) else {
            return 0;
        };
        let mut state = lock(&self.state);
        let Some(&room) = state.room_ids.get(&key) else {
            return 0;
        };
        let name = state.rooms[&room].name.clone();
        let id = self.next_event.fetch_add(1, Relaxed);
        let arrived = match kind {
            Kind::Joined | Kind::Entered => true,
            Kind::Parted(_) | Kind::Left(..) => false,
            Kind::Nick(_) => {
                self.relayed_rename(
                    &mut state,
                    room,
                    Event::at(id, at, Target::Peers, Some(from), kind),
                );
                return 0;
            }
            _ => {
                let event = Event::at(id, at, Target::Room(name), Some(from), kind);
                return self.said_in(&mut state, room, &event, None);
            }
        };
        // Told as a local arrival or departure is, within the room's announcement limit;
        // not kept in history, as local ones are not.
        let event = Event::at(id, at, Target::Room(name.clone()), Some(from), kind);
        let limit = self.settings.announce_limit;
        let r = state.rooms.get_mut(&room).expect("room exists");
        r.presence(&event, self.formats, limit, arrived, REMOTE);
        self.journal(&name, &event);
        0
    }

    /// Tells `room`'s members a rename on another node, which arrives once per room the
    /// renamed person is in: each member is told once, at the first copy of a room it is
    /// in, as a local rename is told once to someone sharing several rooms with the renamer.
    /// Not kept in history, as a local rename is not.
    fn relayed_rename(&self, state: &mut State, room: RoomId, event: Arc<Event>) {
        let key = RenameKey::of(&event);
        let renames = &mut state.remote_renames;
        let at = match renames.iter().position(|r| r.key == key) {
            Some(i) => i,
            None => {
                if renames.len() == MAX_REMOTE_RENAMES {
                    renames.pop_front();
                }
                renames.push_back(RemoteRename {
                    key,
                    event,
                    told: HashSet::new(),
                });
                renames.len() - 1
            }
        };
        let rename = &mut renames[at];
        let r = &state.rooms[&room];
        for m in &r.members {
            if rename.told.insert(m.id) {
                m.deliver(&rename.event, self.formats);
            }
        }
        self.journal(&r.name, &rename.event);
    }

    /// Replaces the history of the room called `room` with `loaded`, what the cluster's
    /// stream holds of it (oldest first, said here or elsewhere), so that whoever enters
    /// next sees what was said on every node. Creates the room if there is none, so what
    /// arrives live from now on is kept in it too (the caller enters it next, or calls
    /// [`Hub::settle`]). An event this room kept already (the same sender, millisecond and
    /// text) stays as it was, id and all: someone coming back sees as new only what is.
    /// What was kept here after the last such event and is not in `loaded` (said here while
    /// the stream was read) stays after it; what was kept before it and is not in `loaded`
    /// goes (the stream's record of that time replaces it). Nothing is fanned out: it was
    /// said before.
    pub fn load_history(&self, room: &str, loaded: Vec<(Arc<Identity>, SystemTime, Kind)>) {
        let retain = self.settings.retain;
        if retain == 0 {
            return;
        }
        let mut state = lock(&self.state);
        let Ok(id) = state.room_or_create(room, REMOTE, 0, self.store.as_ref()) else {
            return;
        };
        let name = state.rooms[&id].name.clone();
        let kept: Vec<Arc<Event>> = state.rooms[&id].history().cloned().collect();
        type Key = (Arc<str>, u128, u8, Box<str>);
        let mut by_key: HashMap<Key, VecDeque<usize>> = HashMap::new();
        for (i, e) in kept.iter().enumerate() {
            if let (Some((nick, ms)), Some((tag, text))) = (same_key(e), history_text(&e.kind)) {
                by_key
                    .entry((nick, ms, tag, text.into()))
                    .or_default()
                    .push_back(i);
            }
        }
        let (mut events, mut fresh, mut last_reused) = (Vec::new(), 0, None);
        for (from, at, kind) in loaded {
            let Some((tag, text)) = history_text(&kind) else {
                continue;
            };
            let ms = at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let reused = by_key
                .get_mut(&(from.nick.clone(), ms, tag, text.into()))
                .and_then(VecDeque::pop_front);
            match reused {
                Some(i) => {
                    last_reused = Some(last_reused.map_or(i, |l: usize| l.max(i)));
                    events.push(kept[i].clone());
                }
                None => {
                    fresh += 1;
                    let id = self.next_event.fetch_add(1, Relaxed);
                    let target = Target::Room(name.clone());
                    events.push(Event::at(id, at, target, Some(from), kind));
                }
            }
        }
        // Nothing in common: what this room kept is from before what the stream holds, or
        // was said here while it was read (when the stream holds nothing, it all stays).
        let tail: Vec<Arc<Event>> = match (last_reused, events.last()) {
            (Some(l), _) => {
                let taken: std::collections::HashSet<u64> = events.iter().map(|e| e.id).collect();
                kept[l + 1..]
                    .iter()
                    .filter(|e| !taken.contains(&e.id))
                    .cloned()
                    .collect()
            }
            (None, None) => return,
            (None, Some(newest)) => kept.iter().filter(|e| e.at >= newest.at).cloned().collect(),
        };
        events.extend(tail);
        let budget = self.settings.history_bytes;
        state.rekeep(id, budget, |r| r.replace_history(events, retain, fresh));
    }

    /// Forgets the room called `room` if nobody is in it and it holds nothing worth keeping
    /// (or keeps it as an idle room): after [`Hub::load_history`] made it for an arrival
    /// that did not happen.
    pub fn settle(&self, room: &str) {
        let Ok((_, key)) = room_name(room) else {
            return;
        };
        let mut state = lock(&self.state);
        if let Some(&id) = state.room_ids.get(&key) {
            state.tidy(id);
        }
    }

    /// The next `guest-N`, which may be taken (the caller checks).
    pub fn guest_name(&self) -> String {
        format!("guest-{}", self.next_guest.fetch_add(1, Relaxed))
    }

    /// Delivers `kind`, sent in private by `from` on another server, to the member here
    /// called `to`; whether there is one.
    pub fn relayed_private(
        &self,
        to: &str,
        from: Arc<Identity>,
        at: SystemTime,
        kind: Kind,
    ) -> bool {
        let state = lock(&self.state);
        let Some(target) = state
            .by_nick
            .get(&nick_key(to))
            .and_then(|t| state.members.get(t))
        else {
            return false;
        };
        let id = self.next_event.fetch_add(1, Relaxed);
        let event = Event::at(
            id,
            at,
            Target::Member(target.identity.clone()),
            Some(from),
            kind,
        );
        target.member.deliver(&event, self.formats)
    }

    /// Sends `kind` from `id` to the member called `to`, wherever it is (itself included:
    /// whether that makes sense is the protocol's call); returns the event, whose target
    /// names the recipient as registered.
    pub fn private(&self, id: MemberId, to: &str, kind: Kind) -> Result<Arc<Event>, PrivateError> {
        let state = lock(&self.state);
        let target = state
            .by_nick
            .get(&nick_key(to))
            .and_then(|t| state.members.get(t))
            .ok_or_else(|| PrivateError::NoSuchNick(to.to_owned()))?;
        let Some(sender) = state.members.get(&id) else {
            return Err(PrivateError::NoSuchNick(to.to_owned()));
        };
        if target.member.id != id {
            let recall = sender
                .member
                .partners()
                .check(&nick_key(to), target.member.id);
            if recall == Recall::Changed {
                return Err(PrivateError::Changed(target.identity.nick.to_string()));
            }
            // The recipient remembers the sender too, so its reply is checked the same way.
            target
                .member
                .partners()
                .note(&nick_key(&sender.identity.nick), id);
        }
        let event = self.event(
            Target::Member(target.identity.clone()),
            Some(sender.identity.clone()),
            kind,
        );
        // Someone ignored is not told: to them it was sent as any other.
        if !target.member.ignores(id, &nick_key(&sender.identity.nick)) {
            target.member.deliver(&event, self.formats);
        }
        Ok(event)
    }

    /// The name and topic of the room `whither` names.
    pub fn topic(
        &self,
        id: MemberId,
        whither: Whither<'_>,
    ) -> Result<(Arc<str>, Option<Topic>), RoomError> {
        let state = lock(&self.state);
        let room = &state.rooms[&state.seen_room(id, whither)?];
        Ok((room.name.clone(), room.topic.clone()))
    }

    /// Sets the topic of the room `whither` names, which `id` must be in, and tells everyone
    /// in it, the setter included.
    pub fn set_topic(
        &self,
        id: MemberId,
        whither: Whither<'_>,
        text: &str,
    ) -> Result<Arc<Event>, RoomError> {
        let mut state = lock(&self.state);
        let (room, identity) = state.own_room(id, whither)?;
        let oper = state.members.get(&id).is_some_and(|e| e.member.is_oper());
        let elsewhere = self.elsewhere(&state.rooms[&room].name);
        let r = state.rooms.get_mut(&room).expect("room exists");
        if !r.may_set_topic(id, elsewhere) && !oper {
            return Err(RoomError::NotOperator(r.name.clone()));
        }
        let stamp = r.stamps.next(&identity.nick);
        r.stamps.topic = Some(stamp.clone());
        r.topic = Some(Topic {
            text: text.into(),
            by: identity.nick.clone(),
            at: SystemTime::now(),
        });
        let event = self.tell_room(r, identity, Kind::Topic(text.into()));
        self.relay_changed(&r.name, &event, stamp.clock);
        Ok(event)
    }

    /// Takes a change to the shared state of the room called `room` (a topic, or flags),
    /// made by `from` on another server at `clock`, and tells it to the room's members here
    /// as a change made here reads; only what is newer than what the room holds is taken
    /// ([`Stamps`]), so every server ends with the same. A room nobody here is in is not
    /// created for it. Whether anything was taken.
    ///
    /// A ban taken puts out whoever here it names, as a ban made here does, each told and
    /// shown where they land by `land` (see [`Hub::kick`]).
    pub fn changed_elsewhere(
        &self,
        room: &str,
        from: Arc<Identity>,
        at: SystemTime,
        kind: Kind,
        clock: u64,
        land: impl Fn(&Arc<Member>, RoomView<'_>),
    ) -> bool {
        let Ok((_, key)) = room_name(room) else {
            return false;
        };
        let mut state = lock(&self.state);
        let Some(&id) = state.room_ids.get(&key) else {
            return false;
        };
        let State {
            rooms,
            members,
            by_nick,
            ..
        } = &mut *state;
        let here = |nick: &str| {
            let entry = members.get(by_nick.get(&nick_key(nick))?)?;
            entry.is_in(id).then_some(entry.member.id)
        };
        let r = rooms.get_mut(&id).expect("room exists");
        let Some(kind) = take_change(r, &from, at, kind, clock, &here) else {
            return false;
        };
        let banned =
            matches!(&kind, Kind::Mode(m) if m.iter().any(|c| matches!(c, Mode::Ban(true, _))));
        let event_id = self.next_event.fetch_add(1, Relaxed);
        let name = r.name.clone();
        let event = Event::at(event_id, at, Target::Room(name), Some(from.clone()), kind);
        self.tell(r, &event);
        if banned {
            for victim in state.banned_here(id, None) {
                self.kick_locked(
                    &mut state,
                    &from,
                    id,
                    victim,
                    Some("banned"),
                    &mut |m, v| land(m, v),
                );
            }
        }
        true
    }

    /// Takes the changes to the shared state of the room called `room` that the cluster's
    /// stream holds (in any order: the newest of each part wins), telling nobody: they were
    /// made before. Makes the room if there is none, as [`Hub::load_history`] does.
    pub fn load_state(&self, room: &str, changes: Vec<(Arc<Identity>, SystemTime, Kind, u64)>) {
        let mut state = lock(&self.state);
        let Ok(id) = state.room_or_create(room, REMOTE, 0, self.store.as_ref()) else {
            return;
        };
        let r = state.rooms.get_mut(&id).expect("room exists");
        for (from, at, kind, clock) in changes {
            take_change(r, &from, at, kind, clock, &|_| None);
        }
    }

    /// Tells everyone in `room`, `from` included, of what `from` did there, and journals it.
    fn tell_room(&self, room: &Room, from: Arc<Identity>, kind: Kind) -> Arc<Event> {
        let event = self.event(Target::Room(room.name.clone()), Some(from), kind);
        self.tell(room, &event);
        event
    }

    fn tell(&self, room: &Room, event: &Arc<Event>) {
        let (name, id) = (&*room.name, event.id);
        match (&event.kind, &room.topic) {
            (Kind::Topic(_), Some(topic)) => self.keep(Change::Topic {
                room: name,
                id,
                topic,
            }),
            (Kind::Mode(made), _) if made.iter().any(Mode::is_flag) => {
                let modes = room.modes;
                self.keep(Change::Modes {
                    room: name,
                    id,
                    modes,
                });
            }
            _ => {}
        }
        room.fan_out(event, self.formats, None);
        self.journal(&room.name, event);
    }

    /// Makes `requests` to the room `whither` names, in order, on behalf of `id`, which must
    /// be one of its operators (or a server operator), and tells everyone in it, `id`
    /// included, what changed. What is already so is left out; a change naming someone who
    /// is not there, or a mask that is none, is refused alone.
    pub fn change_modes(
        &self,
        id: MemberId,
        whither: Whither<'_>,
        requests: &[Mode<&str>],
    ) -> Result<ModesChanged, RoomError> {
        let mut state = lock(&self.state);
        let (room, identity) = state.own_room(id, whither)?;
        if room == LOBBY_ID || !state.operates(id, &state.rooms[&room]) {
            return Err(RoomError::NotOperator(state.rooms[&room].name.clone()));
        }
        let State {
            members,
            by_nick,
            rooms,
            ..
        } = &mut *state;
        let r = rooms.get_mut(&room).expect("room exists");
        let stamp = r.stamps.next(&identity.nick);
        let mut made = Vec::new();
        let mut refused = Vec::new();
        let mut lists_changed = false;
        for request in requests {
            let on = request.on();
            // Whether setting `flag` to `on` changes it.
            let flip = |flag: &mut bool| std::mem::replace(flag, on) != on;
            type Made = fn(bool, Arc<str>) -> Mode<Arc<str>>;
            let (list, nick, made_as): (_, _, Made) = match *request {
                Mode::TopicLock(_) | Mode::Secret(_) | Mode::Moderated(_) | Mode::InviteOnly(_) => {
                    let i = request.flag_index().expect("a flag");
                    if flip(r.modes.flag_mut(i)) {
                        r.stamps.flags[i] = Some(stamp.clone());
                        made.push(flag(i, on));
                    }
                    continue;
                }
                Mode::Ban(_, typed) | Mode::Mute(_, typed) => {
                    let ban = matches!(request, Mode::Ban(..));
                    let Some(mask) = normalise_mask(typed) else {
                        refused.push(RoomError::InvalidMask(typed.to_owned()));
                        continue;
                    };
                    let list = if ban { &mut r.bans } else { &mut r.mutes };
                    let at = list.iter().position(|l| l.mask.eq_ignore_ascii_case(&mask));
                    match (on, at) {
                        (true, None) if list.len() >= MAX_LISTED => {
                            refused.push(RoomError::ListFull {
                                room: r.name.clone(),
                                limit: MAX_LISTED,
                            });
                            continue;
                        }
                        (true, None) => {
                            list.push(Listed::new(&mask, &identity.nick, SystemTime::now()))
                        }
                        (false, Some(at)) => {
                            list.remove(at);
                        }
                        _ => continue,
                    }
                    let key = (ban, mask.to_ascii_lowercase());
                    r.stamps.lists.insert(key, stamp.clone());
                    lists_changed = true;
                    let mask: Arc<str> = mask.into();
                    made.push(if ban {
                        Mode::Ban(on, mask)
                    } else {
                        Mode::Mute(on, mask)
                    });
                    continue;
                }
                Mode::Operator(_, nick) => (&mut r.operators, nick, Mode::Operator),
                Mode::Voice(_, nick) => (&mut r.voiced, nick, Mode::Voice),
            };
            let Some(target) = by_nick.get(&nick_key(nick)).and_then(|t| members.get(t)) else {
                refused.push(RoomError::NoSuchNick(nick.to_owned()));
                continue;
            };
            if !target.is_in(room) {
                refused.push(RoomError::NotInRoom {
                    nick: target.identity.nick.to_string(),
                    room: r.name.clone(),
                });
                continue;
            }
            let who = target.member.id;
            if list.contains(&who) == on {
                continue;
            }
            if on {
                list.push(who);
            } else {
                list.retain(|&m| m != who);
            }
            let op = matches!(request, Mode::Operator(..));
            if let (true, Some(account)) = (op, target.member.account()) {
                lists_changed |= if on {
                    r.add_op_account(account)
                } else {
                    r.remove_op_account(&account)
                };
            }
            made.push(made_as(on, target.identity.nick.clone()));
        }
        if lists_changed {
            self.keep_lists(r);
        }
        if made.is_empty() {
            return Ok(ModesChanged {
                event: None,
                refused,
            });
        }
        tracing::info!(by = %identity.nick, member = id, room = %r.name, changes = ?made, "room modes changed");
        let event = self.tell_room(r, identity, Kind::Mode(made.into()));
        self.relay_changed(&r.name, &event, stamp.clock);
        Ok(ModesChanged {
            event: Some(event),
            refused,
        })
    }

    /// Gives or takes `change`, operator status or a voice, in the room `whither` names, to
    /// or from someone on another server who is in it there, on behalf of `id`, one of its
    /// operators (or a server operator): their server applies it to them, since a standing
    /// is a member's; everyone in the room here, `id` included, is told.
    pub fn standing_elsewhere(
        &self,
        id: MemberId,
        whither: Whither<'_>,
        change: Mode<Arc<str>>,
    ) -> Result<Arc<Event>, RoomError> {
        debug_assert!(matches!(change, Mode::Operator(..) | Mode::Voice(..)));
        let mut state = lock(&self.state);
        let (room, identity) = state.own_room(id, whither)?;
        if room == LOBBY_ID || !state.operates(id, &state.rooms[&room]) {
            return Err(RoomError::NotOperator(state.rooms[&room].name.clone()));
        }
        let r = state.rooms.get_mut(&room).expect("room exists");
        let stamp = r.stamps.next(&identity.nick);
        tracing::info!(by = %identity.nick, member = id, room = %r.name, change = ?change, "standing changed on another server");
        let event = self.tell_room(r, identity, Kind::Mode([change].into()));
        self.relay_changed(&r.name, &event, stamp.clock);
        Ok(event)
    }

    /// `account` is registered no more: no room keeps it among its operators, so whoever
    /// registers the name next inherits nothing.
    pub fn forget_account(&self, account: &str) {
        let mut state = lock(&self.state);
        for room in state.rooms.values_mut() {
            if room.remove_op_account(account) {
                self.keep_lists(room);
            }
        }
    }

    /// Puts the member called `nick` out of the room `whither` names, on behalf of `id`, one
    /// of its operators (or a server operator); everyone there, the one put out included,
    /// is told. Someone who must always be in a room (a netcat user) lands in the lobby, and
    /// `land` shows it the lobby as it enters.
    pub fn kick(
        &self,
        id: MemberId,
        whither: Whither<'_>,
        nick: &str,
        reason: Option<&str>,
        land: impl FnOnce(&Arc<Member>, RoomView<'_>),
    ) -> Result<Arc<Event>, RoomError> {
        let mut state = lock(&self.state);
        let (room, _) = state.own_room(id, whither)?;
        if room == LOBBY_ID || !state.operates(id, &state.rooms[&room]) {
            return Err(RoomError::NotOperator(state.rooms[&room].name.clone()));
        }
        let target = state
            .by_nick
            .get(&nick_key(nick))
            .and_then(|t| state.members.get(t))
            .ok_or_else(|| RoomError::NoSuchNick(nick.to_owned()))?;
        if !target.is_in(room) {
            return Err(RoomError::NotInRoom {
                nick: target.identity.nick.to_string(),
                room: state.rooms[&room].name.clone(),
            });
        }
        let victim = target.member.id;
        let by = state.members[&id].identity.clone();
        let mut land = Some(land);
        Ok(
            self.kick_locked(&mut state, &by, room, victim, reason, &mut |m, v| {
                if let Some(land) = land.take() {
                    land(m, v);
                }
            }),
        )
    }

    /// Puts everyone a ban of the room `whither` names out of it, on behalf of `id`, one of
    /// its operators (the netcat `/ban`, which removes whom it bans); operators stay. Returns
    /// the kicks, one event each.
    pub fn kick_banned(
        &self,
        id: MemberId,
        whither: Whither<'_>,
        land: impl Fn(&Arc<Member>, RoomView<'_>),
    ) -> Result<Vec<Arc<Event>>, RoomError> {
        let mut state = lock(&self.state);
        let (room, _) = state.own_room(id, whither)?;
        if room == LOBBY_ID || !state.operates(id, &state.rooms[&room]) {
            return Err(RoomError::NotOperator(state.rooms[&room].name.clone()));
        }
        let by = state.members[&id].identity.clone();
        Ok(state
            .banned_here(room, Some(id))
            .into_iter()
            .map(|victim| {
                self.kick_locked(
                    &mut state,
                    &by,
                    room,
                    victim,
                    Some("banned"),
                    &mut |m, v| land(m, v),
                )
            })
            .collect())
    }

    /// Puts `victim` out of `room` on behalf of `by` (someone here, or an operator on
    /// another server whose ban reached this one).
    fn kick_locked(
        &self,
        state: &mut State,
        by: &Arc<Identity>,
        room: RoomId,
        victim: MemberId,
        reason: Option<&str>,
        land: &mut dyn FnMut(&Arc<Member>, RoomView<'_>),
    ) -> Arc<Event> {
        let by = by.clone();
        let target = &state.members[&victim];
        let who = target.identity.clone();
        let r = &state.rooms[&room];
        tracing::info!(by = %by.nick, nick = %who.nick, room = %r.name, reason, "kicked");
        let kind = Kind::Kicked {
            who,
            reason: reason.map(Into::into),
        };
        let event = self.tell_room(r, by, kind);
        self.relay_said(&r.name, &event);
        self.put_out(state, room, victim, land);
        event
    }

    /// Takes `victim` out of `room`, after the room was told why; a member who must always
    /// be in a room lands in the lobby, shown it by `land`.
    fn put_out(
        &self,
        state: &mut State,
        room: RoomId,
        victim: MemberId,
        land: &mut dyn FnMut(&Arc<Member>, RoomView<'_>),
    ) {
        let member = state.members[&victim].member.clone();
        state.remove(victim, room);
        state.tidy(room);
        let homeless = state.members[&victim].rooms.is_empty();
        if homeless && member.always_in_a_room(self.formats) {
            let _ = self.enter_locked(state, victim, LOBBY_ID, Arrival::Entered, |view| {
                land(&member, view)
            });
        }
    }

    /// Puts the member called `nick` on another server (`who`, as this server shows them)
    /// out of the room `whither` names, on behalf of `id`, one of its operators: everyone in
    /// it here is told, and their server, told in turn, takes them out.
    pub fn kick_elsewhere(
        &self,
        id: MemberId,
        whither: Whither<'_>,
        who: Arc<Identity>,
        reason: Option<&str>,
    ) -> Result<Arc<Event>, RoomError> {
        let state = lock(&self.state);
        let (room, by) = state.own_room(id, whither)?;
        let r = &state.rooms[&room];
        if room == LOBBY_ID || !state.operates(id, r) {
            return Err(RoomError::NotOperator(r.name.clone()));
        }
        tracing::info!(by = %by.nick, member = id, nick = %who.nick, room = %r.name, reason, "kicked on another server");
        let kind = Kind::Kicked {
            who,
            reason: reason.map(Into::into),
        };
        let event = self.tell_room(r, by, kind);
        self.relay_said(&r.name, &event);
        Ok(event)
    }

    /// Tells the room called `room` here that `from`, on another server, put `who` out of it,
    /// and takes them out if they are someone here (shown where they land by `land`).
    pub fn kicked_elsewhere(
        &self,
        room: &str,
        from: Arc<Identity>,
        at: SystemTime,
        kind: Kind,
        land: impl Fn(&Arc<Member>, RoomView<'_>),
    ) {
        let (Ok((_, key)), Kind::Kicked { who, .. }) = (room_name(room), &kind) else {
            return;
        };
        let mut state = lock(&self.state);
        let Some(&id) = state.room_ids.get(&key) else {
            return;
        };
        let victim = state
            .by_nick
            .get(&nick_key(&who.nick))
            .filter(|v| state.members.get(v).is_some_and(|e| e.is_in(id)))
            .copied();
        let event_id = self.next_event.fetch_add(1, Relaxed);
        let r = &state.rooms[&id];
        let event = Event::at(event_id, at, Target::Room(r.name.clone()), Some(from), kind);
        self.tell(r, &event);
        if let Some(victim) = victim {
            self.put_out(&mut state, id, victim, &mut |m, v| land(m, v));
        }
    }

    /// Invites the member called `nick` into the room `whither` names, which `id` is in (and,
    /// while the room is invite-only, operates); the invited member is told. It may then
    /// enter once, invite-only or not.
    pub fn invite(
        &self,
        id: MemberId,
        whither: Whither<'_>,
        nick: &str,
    ) -> Result<Arc<Event>, RoomError> {
        let mut state = lock(&self.state);
        let (room, identity) = state.own_room(id, whither)?;
        let r = &state.rooms[&room];
        if r.modes.invite_only && !state.operates(id, r) {
            return Err(RoomError::NotOperator(r.name.clone()));
        }
        let name = r.name.clone();
        let target = state
            .by_nick
            .get(&nick_key(nick))
            .copied()
            .and_then(|t| state.members.get_mut(&t))
            .ok_or_else(|| RoomError::NoSuchNick(nick.to_owned()))?;
        if target.is_in(room) {
            return Err(RoomError::AlreadyIn {
                nick: target.identity.nick.to_string(),
                room: name,
            });
        }
        target.note_invitation(&name);
        tracing::info!(by = %identity.nick, member = id, nick = %target.identity.nick, room = %name, "invited");
        let event = self.event(
            Target::Member(target.identity.clone()),
            Some(identity),
            Kind::Invited(name),
        );
        target.member.deliver(&event, self.formats);
        Ok(event)
    }

    /// Invites `who`, someone on another server, into the room `whither` names, which `id`
    /// is in (and, while the room is invite-only, operates): the same rights as
    /// [`Hub::invite`]. Nobody here is told; the event is for the caller to send to `who`'s
    /// server, which records it ([`Hub::invited_elsewhere`]).
    pub fn invite_elsewhere(
        &self,
        id: MemberId,
        whither: Whither<'_>,
        who: Arc<Identity>,
    ) -> Result<Arc<Event>, RoomError> {
        let state = lock(&self.state);
        let (room, identity) = state.own_room(id, whither)?;
        let r = &state.rooms[&room];
        if r.modes.invite_only && !state.operates(id, r) {
            return Err(RoomError::NotOperator(r.name.clone()));
        }
        tracing::info!(by = %identity.nick, member = id, nick = %who.nick, room = %r.name, "invited on another server");
        Ok(self.event(
            Target::Member(who),
            Some(identity),
            Kind::Invited(r.name.clone()),
        ))
    }

    /// Records that `from`, on another server, invited the member here called `to` into the
    /// room called `room`, and tells them as a local invitation reads; whether there is
    /// such a member. Their server checked the inviter's right.
    pub fn invited_elsewhere(
        &self,
        to: &str,
        from: Arc<Identity>,
        at: SystemTime,
        room: Arc<str>,
    ) -> bool {
        let mut state = lock(&self.state);
        let Some(target) = state
            .by_nick
            .get(&nick_key(to))
            .copied()
            .and_then(|t| state.members.get_mut(&t))
        else {
            return false;
        };
        target.note_invitation(&room);
        let id = self.next_event.fetch_add(1, Relaxed);
        let target_identity = Target::Member(target.identity.clone());
        let event = Event::at(id, at, target_identity, Some(from), Kind::Invited(room));
        target.member.deliver(&event, self.formats)
    }

    /// Replaces whom `id` ignores, keeping each of its rooms' count of ignorers right.
    pub fn set_ignored(&self, id: MemberId, list: Vec<Ignored>) {
        let mut state = lock(&self.state);
        let State { members, rooms, .. } = &mut *state;
        let Some(entry) = members.get(&id) else {
            return;
        };
        if entry.member.set_ignored(list) {
            let on = entry.member.ignoring();
            for (room, _) in &entry.rooms {
                let r = rooms.get_mut(room).expect("room exists");
                if on {
                    r.ignorers += 1;
                } else {
                    r.ignorers -= 1;
                }
            }
        }
    }

    /// `id` ignores the nickname `nick` from now on (and, while it is connected, whoever holds
    /// it now, renamed or not); returns the new list, or `None` if it was ignored already.
    /// The list is read and replaced under two locks: only the member's own session changes
    /// it, one command at a time.
    pub fn ignore(&self, id: MemberId, nick: &str) -> Result<Option<Vec<Ignored>>, IgnoreError> {
        validate_nick(nick).map_err(|_| IgnoreError::Invalid)?;
        let (mut list, holder) = {
            let state = lock(&self.state);
            let me = state.members.get(&id).ok_or(IgnoreError::Invalid)?;
            let holder = state.by_nick.get(&nick_key(nick)).copied();
            if holder == Some(id) {
                return Err(IgnoreError::Yourself);
            }
            (me.member.ignored(), holder)
        };
        let key = nick_key(nick);
        if list.iter().any(|i| i.key() == key) {
            return Ok(None);
        }
        if list.len() >= MAX_IGNORED {
            return Err(IgnoreError::TooMany(MAX_IGNORED));
        }
        let shown = holder
            .and_then(|h| self.identity(h))
            .map_or_else(|| nick.into(), |i| i.nick.clone());
        list.push(Ignored::new(&shown, holder));
        self.set_ignored(id, list.clone());
        Ok(Some(list))
    }

    /// `id` no longer ignores `nick`; returns the new list, or `None` if it did not.
    pub fn unignore(&self, id: MemberId, nick: &str) -> Option<Vec<Ignored>> {
        let member = self.find_member(id)?;
        let mut list = member.ignored();
        let key = nick_key(nick);
        let before = list.len();
        list.retain(|i| i.key() != key);
        if list.len() == before {
            return None;
        }
        self.set_ignored(id, list.clone());
        Some(list)
    }

    fn find_member(&self, id: MemberId) -> Option<Arc<Member>> {
        lock(&self.state).members.get(&id).map(|e| e.member.clone())
    }

    /// The ban list (`bans`) or mute list of the room `whither` names, oldest first.
    pub fn listed(
        &self,
        id: MemberId,
        whither: Whither<'_>,
        bans: bool,
    ) -> Result<(Arc<str>, Vec<Listed>), RoomError> {
        let state = lock(&self.state);
        let r = &state.rooms[&state.seen_room(id, whither)?];
        let list = if bans { &r.bans } else { &r.mutes };
        Ok((r.name.clone(), list.clone()))
    }

    /// Renders `member`'s events with `formats[slot]` from now on (an IRC client turning
    /// message tags on or off). Through the hub, so each room knows which formats it holds.
    pub fn set_format(&self, member: &Member, slot: usize) {
        assert!(slot < self.formats.len(), "format {slot}");
        let mut state = lock(&self.state);
        let State { members, rooms, .. } = &mut *state;
        if let Some(entry) = members.get(&member.id) {
            for &(room, index) in &entry.rooms {
                rooms
                    .get_mut(&room)
                    .expect("room exists")
                    .change_slot(index, slot);
            }
        }
        member.set_format(slot);
    }

    /// `id`'s member proved an account, or lost it ([`Member::set_account`] says which): its
    /// identity carries it from now on, and those who share a room with it and asked to know
    /// (IRC `account-notify`) are told.
    pub fn account_changed(&self, id: MemberId) {
        let mut state = lock(&self.state);
        let Some(entry) = state.members.get_mut(&id) else {
            return;
        };
        let account = entry.member.account();
        if entry.identity.account == account {
            return;
        }
        let identity = Arc::new(entry.identity.with_account(account.clone()));
        entry.identity = identity.clone();
        let member = entry.member.clone();
        let rooms: Vec<RoomId> = entry.rooms.iter().map(|&(r, _)| r).collect();
        let event = self.event(Target::Peers, Some(identity), Kind::Account(account));
        member.mark_seen(event.id);
        for room in rooms {
            for m in &state.rooms[&room].members {
                if m.wants_account() {
                    m.deliver_once(&event, self.formats);
                }
            }
        }
    }

    /// Marks `id` away (with `message`) or back, telling those who share a room with it and
    /// asked to know.
    pub fn set_away(&self, id: MemberId, message: Option<&str>) {
        let mut state = lock(&self.state);
        let Some(entry) = state.members.get_mut(&id) else {
            return;
        };
        entry.away = message.map(Into::into);
        let identity = entry.identity.clone();
        let member = entry.member.clone();
        let rooms: Vec<RoomId> = entry.rooms.iter().map(|&(r, _)| r).collect();
        let event = self.event(
            Target::Peers,
            Some(identity),
            Kind::Away(message.map(Into::into)),
        );
        member.mark_seen(event.id);
        if let Some(relay) = &self.relay {
            relay.away(&event);
        }
        for room in rooms {
            for m in &state.rooms[&room].members {
                if m.wants_away() {
                    m.deliver_once(&event, self.formats);
                }
            }
        }
    }

    /// Tells every big room with unannounced arrivals or departures how many there were in
    /// the last `period_secs`. Called by the server's presence ticker.
    pub fn summarize_presence(&self, period_secs: u64) {
        let mut state = lock(&self.state);
        for room in state.rooms.values_mut() {
            if let Some((joined, left)) = room.take_presence() {
                let kind = Kind::Presence {
                    joined,
                    left,
                    period_secs,
                    here: room.members.len(),
                };
                let event = self.event(Target::Room(room.name.clone()), None, kind);
                room.fan_out(&event, self.formats, None);
            }
        }
    }

    /// The room `whither` names and who is in it.
    pub fn room_members(
        &self,
        id: MemberId,
        whither: Whither<'_>,
    ) -> Result<(RoomInfo, Vec<MemberInfo>), RoomError> {
        let state = lock(&self.state);
        let rid = state.seen_room(id, whither)?;
        let room = &state.rooms[&rid];
        let mut here = false;
        let members = room
            .members
            .iter()
            .filter_map(|m| {
                here |= m.id == id;
                state.members.get(&m.id).map(|e| e.in_room(room))
            })
            .collect();
        Ok((RoomInfo::of(room, here), members))
    }

    /// The rooms `id` may see (secret ones only if it is in them), unsorted, with `here` set
    /// on those it is in; with `None`, every room (the server's own reports).
    pub fn rooms(&self, id: Option<MemberId>) -> Vec<RoomInfo> {
        let state = lock(&self.state);
        let mine = id.and_then(|id| state.members.get(&id));
        state
            .rooms
            .iter()
            .filter_map(|(&rid, room)| {
                let here = mine.is_some_and(|e| e.is_in(rid));
                (id.is_none() || here || !room.modes.secret).then(|| RoomInfo::of(room, here))
            })
            .collect()
    }

    /// The room `whither` names, as listings show it.
    pub fn room(&self, id: MemberId, whither: Whither<'_>) -> Result<RoomInfo, RoomError> {
        let state = lock(&self.state);
        let rid = state.seen_room(id, whither)?;
        let here = state.members.get(&id).is_some_and(|e| e.is_in(rid));
        Ok(RoomInfo::of(&state.rooms[&rid], here))
    }

    /// Who is here, counted without copying anyone.
    /// `(bytes all rooms' history holds, events the byte budget has evicted since start)`.
    pub fn history_usage(&self) -> (usize, u64) {
        let state = lock(&self.state);
        (state.history_bytes, state.history_evicted)
    }

    pub fn census(&self) -> Census {
        let state = lock(&self.state);
        let members = state.members.values().map(|e| &e.member);
        Census {
            members: state.members.len(),
            opers: members.clone().filter(|m| m.is_oper()).count(),
            invisible: members.filter(|m| m.is_invisible()).count(),
            rooms: state
                .rooms
                .values()
                .filter(|r| !r.members.is_empty())
                .count(),
        }
    }

    /// Every member `viewer` may find by searching, sorted like [`Hub::members`]: an
    /// invisible member only by those who share a room with it (and by itself).
    pub fn members_seen_by(&self, viewer: MemberId) -> Vec<MemberInfo> {
        let state = lock(&self.state);
        let mine = state.members.get(&viewer).map_or(&[][..], |e| &e.rooms);
        let mut list: Vec<MemberInfo> = state
            .members
            .values()
            .filter(|e| {
                e.member.id == viewer
                    || !e.member.is_invisible()
                    || mine.iter().any(|&(r, _)| e.is_in(r))
            })
            .map(Entry::info)
            .collect();
        list.sort_by_cached_key(|m| nick_key(m.nick()));
        list
    }

    /// The rooms `id` is in that `viewer` may see, in the order `id` entered them, with
    /// `id`'s standing in each.
    pub fn rooms_seen_by(&self, id: MemberId, viewer: MemberId) -> Vec<(Arc<str>, Standing)> {
        let state = lock(&self.state);
        state.members.get(&id).map_or_else(Vec::new, |e| {
            e.rooms
                .iter()
                .filter(|&&(r, _)| state.visible(viewer, r))
                .map(|(r, _)| {
                    let room = &state.rooms[r];
                    (room.name.clone(), room.standing(id))
                })
                .collect()
        })
    }

    /// The names of the rooms `id` is in, in the order it entered them.
    /// Whether `room` is secret and `id` not in it, so listings keep it from `id`; `None`
    /// when nobody here is in `room` (on a cluster, only the other nodes know its flags).
    pub fn hidden_from(&self, id: MemberId, room: &str) -> Option<bool> {
        let state = lock(&self.state);
        let (_, key) = room_name(room).ok()?;
        let &room = state.room_ids.get(&key)?;
        Some(!state.visible(id, room))
    }

    pub fn rooms_of(&self, id: MemberId) -> Vec<Arc<str>> {
        let state = lock(&self.state);
        state.members.get(&id).map_or_else(Vec::new, |e| {
            e.rooms
                .iter()
                .map(|(r, _)| state.rooms[r].name.clone())
                .collect()
        })
    }

    /// The name of the room `whither` names and its last `n` messages, newest first. Copies
    /// only reference-counted handles under the lock; rendering happens outside it.
    pub fn history(
        &self,
        id: MemberId,
        whither: Whither<'_>,
        n: usize,
    ) -> Result<(Arc<str>, Vec<Arc<Event>>), RoomError> {
        let (name, mut events) = {
            let state = lock(&self.state);
            let room = &state.rooms[&state.seen_room(id, whither)?];
            let events: Vec<_> = room.recent(n).cloned().collect();
            (room.name.clone(), events)
        };
        // What memory let go of (the byte budget, or a room the hub forgot) is read from the
        // store, outside the lock.
        if let (Some(store), true) = (&self.store, events.len() < n) {
            let before = events.last().map_or(u64::MAX, |e| e.id);
            events.extend(store.older(&name, before, n - events.len()));
        }
        Ok((name, events))
    }

    pub fn len(&self) -> usize {
        lock(&self.state).members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Members and the output queued for them: `(members, total bytes, largest)`, in one
    /// pass and without the copy and sort of [`Hub::members`].
    pub fn queue_totals(&self) -> (usize, usize, usize) {
        let state = lock(&self.state);
        let (sum, max) = queue_totals(state.members.values().map(|e| &*e.member));
        (state.members.len(), sum, max)
    }

    /// How many members came over each of [`PROTOCOLS`], in that order.
    pub fn by_protocol(&self) -> [usize; 3] {
        let state = lock(&self.state);
        let mut counts = [0; 3];
        for entry in state.members.values() {
            let kind = entry.member.kind.protocol;
            if let Some(i) = PROTOCOLS.iter().position(|&p| p == kind) {
                counts[i] += 1;
            }
        }
        counts
    }

    /// Every member's nickname, protocol and rooms, in one pass (what a cluster node tells
    /// the others it has).
    pub fn people(&self) -> Vec<Whereabouts> {
        let state = lock(&self.state);
        state
            .members
            .values()
            .map(|e| {
                let id = e.member.id;
                let names = |which: fn(&Room, MemberId) -> bool| {
                    e.rooms
                        .iter()
                        .map(|(r, _)| &state.rooms[r])
                        .filter(|room| which(room, id))
                        .map(|room| room.name.clone())
                        .collect()
                };
                Whereabouts {
                    nick: e.identity.nick.clone(),
                    protocol: e.member.kind.protocol,
                    rooms: names(|_, _| true),
                    secret: names(|room, _| room.modes.secret),
                    ops: names(|room, id| room.standing(id).op),
                    voiced: names(|room, id| room.standing(id).voice),
                    away: e.away.clone(),
                }
            })
            .collect()
    }

    /// Every member, sorted by nickname (case-insensitively) for stable listings.
    pub fn members(&self) -> Vec<MemberInfo> {
        let mut list: Vec<MemberInfo> = lock(&self.state)
            .members
            .values()
            .map(Entry::info)
            .collect();
        list.sort_by_cached_key(|m| nick_key(m.nick()));
        list
    }

    pub fn find(&self, nick: &str) -> Option<MemberInfo> {
        let state = lock(&self.state);
        let id = state.by_nick.get(&nick_key(nick))?;
        state.members.get(id).map(Entry::info)
    }

    pub fn identity(&self, id: MemberId) -> Option<Arc<Identity>> {
        lock(&self.state)
            .members
            .get(&id)
            .map(|e| e.identity.clone())
    }
}

/// Takes what of `kind` (a topic, or flag changes), made by `from` at `clock` on another
/// server, is newer than what `room` holds, and an operator or voice change for the member
/// `here` finds in the room on this server (for someone elsewhere it is only told); what
/// was taken, to tell, if anything.
fn take_change(
    room: &mut Room,
    from: &Arc<Identity>,
    at: SystemTime,
    kind: Kind,
    clock: u64,
    here: &dyn Fn(&str) -> Option<MemberId>,
) -> Option<Kind> {
    let stamp = Stamp {
        clock,
        by: from.nick.clone(),
    };
    let Stamps {
        clock: ref mut seen,
        ref mut topic,
        ref mut flags,
        ref mut lists,
    } = room.stamps;
    match kind {
        Kind::Topic(text) => {
            if !Stamps::newer(seen, topic, &stamp) {
                return None;
            }
            room.topic = Some(Topic {
                text: (*text).into(),
                by: from.nick.clone(),
                at,
            });
            Some(Kind::Topic(text))
        }
        Kind::Mode(changes) => {
            let mut taken = Vec::new();
            for change in changes.iter() {
                let on = change.on();
                let (list, who) = match change {
                    Mode::Operator(_, who) => (&mut room.operators, who),
                    Mode::Voice(_, who) => (&mut room.voiced, who),
                    Mode::Ban(_, mask) | Mode::Mute(_, mask) => {
                        let ban = matches!(change, Mode::Ban(..));
                        // Only what a node of ours would send: a normalised mask.
                        if normalise_mask(mask).as_deref() != Some(&**mask) {
                            continue;
                        }
                        let mut held = lists.get(&(ban, mask.to_ascii_lowercase())).cloned();
                        if !Stamps::newer(seen, &mut held, &stamp) {
                            continue;
                        }
                        lists.insert((ban, mask.to_ascii_lowercase()), stamp.clone());
                        let list = if ban { &mut room.bans } else { &mut room.mutes };
                        let listed = list.iter().position(|l| l.mask.eq_ignore_ascii_case(mask));
                        match (on, listed) {
                            (true, None) if list.len() < MAX_LISTED => {
                                list.push(Listed::new(mask, &from.nick, at))
                            }
                            (false, Some(i)) => {
                                list.remove(i);
                            }
                            _ => continue,
                        }
                        taken.push(change.clone());
                        continue;
                    }
                    _ => {
                        let Some(i) = change.flag_index() else {
                            continue;
                        };
                        if Stamps::newer(seen, &mut flags[i], &stamp)
                            && std::mem::replace(room.modes.flag_mut(i), on) != on
                        {
                            taken.push(change.clone());
                        }
                        continue;
                    }
                };
                match here(who) {
                    Some(member) if list.contains(&member) != on => {
                        if on {
                            list.push(member);
                        } else {
                            list.retain(|&m| m != member);
                        }
                        taken.push(change.clone());
                    }
                    Some(_) => {}
                    None => taken.push(change.clone()),
                }
            }
            (!taken.is_empty()).then(|| Kind::Mode(taken.into()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::future::Future;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Poll, Waker};

    use bytes::Bytes;

    use super::*;
    use crate::core::member::Kind as MemberKind;
    use crate::core::stats::ClientStats;

    /// A format that counts how often it renders.
    #[derive(Debug)]
    struct Counting(AtomicUsize, &'static str);

    impl Render for Counting {
        fn render(&self, event: &Event) -> Bytes {
            self.0.fetch_add(1, Relaxed);
            Bytes::from(format!("{} {} {:?}\n", self.1, event.nick(), event.kind))
        }
    }

    // Each test has formats of its own: tests run in parallel and the counts must be theirs.
    static A: Counting = Counting(AtomicUsize::new(0), "a");
    static B: Counting = Counting(AtomicUsize::new(0), "b");
    static FORMATS: [&'static dyn Render; 2] = [&A, &B];
    static C: Counting = Counting(AtomicUsize::new(0), "c");
    static ONE_FORMAT: [&'static dyn Render; 1] = [&C];

    fn settings() -> Settings {
        Settings {
            scrollback: 0,
            retain: 10,
            budget: 1 << 16,
            announce_limit: 0,
            history_bytes: usize::MAX,
            rooms_per_minute: 0,
        }
    }

    fn member(hub: &Hub, id: MemberId, format: usize) -> Arc<Member> {
        let kind = MemberKind {
            protocol: "test",
            tls: None,
        };
        let stats = ClientStats::new(tokio::time::Instant::now());
        let addr = "127.0.0.1:1".parse().unwrap();
        let m = Member::new(id, addr, kind, format, stats, 1 << 20, None);
        hub.register(&m, Some(&format!("m{id}")), None, "").unwrap();
        m
    }

    /// Everything queued for `m`, taken as its writer would.
    fn take(m: &Member) -> Vec<Bytes> {
        let mut batch = VecDeque::new();
        let mut cx = Context::from_waker(Waker::noop());
        let outbox = m.outbox();
        let mut poll = std::pin::pin!(std::future::poll_fn(|cx| outbox.poll_take(&mut batch, cx)));
        let _ = matches!(poll.as_mut().poll(&mut cx), Poll::Ready(true));
        batch.into_iter().collect()
    }

    static D: Counting = Counting(AtomicUsize::new(0), "d");
    static IGNORE_FORMATS: [&'static dyn Render; 1] = [&D];

    #[test]
    fn ignored_senders_are_skipped_and_rooms_count_their_ignorers() {
        let hub = Hub::new(settings(), &IGNORE_FORMATS);
        let members: Vec<_> = (1..=3).map(|id| member(&hub, id, 0)).collect();
        for id in 1..=3 {
            hub.enter(id, "r", Arrival::Entered, |_| {}).unwrap();
        }
        let ignorers = |hub: &Hub| {
            let state = lock(&hub.state);
            state.rooms[&state.room_ids["r"]].ignorers
        };
        members.iter().for_each(|m| drop(take(m)));
        assert_eq!(
            hub.ignore(1, "M2"),
            Ok(Some(vec![Ignored::new("m2", Some(2))]))
        );
        assert_eq!(hub.ignore(1, "m1"), Err(IgnoreError::Yourself));
        assert_eq!(ignorers(&hub), 1);
        let (_, delivered) = hub
            .say(2, Whither::Named("r"), Kind::Message("x".into()))
            .unwrap();
        assert_eq!(delivered, 1, "m3 only");
        assert!(take(&members[0]).is_empty());
        assert_eq!(take(&members[2]).len(), 1);
        hub.private(2, "m1", Kind::Message("psst".into())).unwrap();
        assert!(take(&members[0]).is_empty(), "not told either way");
        // A rename does not escape it; m3's lines still arrive.
        hub.rename(2, "other").unwrap();
        hub.say(2, Whither::Named("r"), Kind::Message("y".into()))
            .unwrap();
        hub.say(3, Whither::Named("r"), Kind::Message("z".into()))
            .unwrap();
        let got = take(&members[0]);
        assert_eq!(got.len(), 2, "the rename and m3's line: {got:?}");
        // Leaving and coming back keeps the count right; an empty list takes it to 0.
        hub.part(1, Whither::Named("r"), None).unwrap();
        assert_eq!(ignorers(&hub), 0);
        hub.enter(1, "r", Arrival::Entered, |_| {}).unwrap();
        assert_eq!(ignorers(&hub), 1);
        assert!(hub.unignore(1, "m2").is_some());
        assert_eq!(ignorers(&hub), 0);
        assert!(hub.unignore(1, "m2").is_none());
    }

    #[test]
    fn nobody_can_flush_whom_a_member_wrote_to_and_then_take_the_name() {
        let hub = Hub::new(settings(), &ONE_FORMAT);
        let (alice, bob, mallory) = (member(&hub, 1, 0), member(&hub, 2, 0), member(&hub, 3, 0));
        let msg = |from: MemberId, to: &str| hub.private(from, to, Kind::Message("hi".into()));
        msg(alice.id, "m2").unwrap();
        // Mallory writes to alice under more names than alice remembers partners.
        for i in 0..2 * super::super::partners::MAX_PARTNERS {
            hub.rename(mallory.id, &format!("x{i}")).unwrap();
            msg(mallory.id, "m1").unwrap();
        }
        hub.leave(bob.id, LeaveReason::Quit, None);
        hub.rename(mallory.id, "m2").unwrap();
        assert!(
            matches!(msg(alice.id, "m2"), Err(PrivateError::Changed(_))),
            "the secret must not reach the name's new holder"
        );
    }

    #[test]
    fn a_move_never_leaves_a_member_in_no_room() {
        let hub = Hub::new(
            Settings {
                rooms_per_minute: 1,
                ..settings()
            },
            &ONE_FORMAT,
        );
        // MAX_IDLE_ROOMS emptied rooms with history, "t0" the one emptied longest ago.
        for i in 0..MAX_IDLE_ROOMS as u64 {
            let m = member(&hub, 100 + i, 0);
            let room = format!("t{i}");
            hub.enter(m.id, &room, Arrival::Entered, |_| {}).unwrap();
            hub.say(m.id, Whither::Named(&room), Kind::Message("x".into()))
                .unwrap();
            hub.part(m.id, Whither::Named(&room), None).unwrap();
        }
        let u = member(&hub, 1, 0);
        hub.move_to(u.id, "mine", |_| {}).unwrap();
        hub.say(u.id, Whither::Current, Kind::Message("y".into()))
            .unwrap();
        // Leaving "mine" (kept for its history) pushes "t0" out of the idle bound; the move
        // makes it again although the member's one creation this minute is used.
        hub.move_to(u.id, "t0", |_| {}).unwrap();
        assert_eq!(hub.rooms_of(u.id), [Arc::<str>::from("t0")]);
    }

    #[test]
    fn the_history_budget_evicts_the_oldest_events_of_all_rooms_first() {
        // One event's footprint, as the budget counts it.
        let probe = Hub::new(settings(), &ONE_FORMAT);
        let p = member(&probe, 1, 0);
        probe.enter(p.id, "a", Arrival::Entered, |_| {}).unwrap();
        probe
            .say(1, Whither::Named("a"), Kind::Message("x0".into()))
            .unwrap();
        let one = probe.history_usage().0;

        let hub = Hub::new(
            Settings {
                history_bytes: 4 * one,
                ..settings()
            },
            &ONE_FORMAT,
        );
        let (x, y) = (member(&hub, 1, 0), member(&hub, 2, 0));
        hub.enter(x.id, "a", Arrival::Entered, |_| {}).unwrap();
        hub.enter(y.id, "b", Arrival::Entered, |_| {}).unwrap();
        for i in 0..3 {
            hub.say(
                1,
                Whither::Named("a"),
                Kind::Message(format!("a{i}").into()),
            )
            .unwrap();
        }
        // Room a is left, and kept for its history.
        hub.part(x.id, Whither::Named("a"), None).unwrap();
        assert!(hub.rooms(None).iter().any(|r| &*r.name == "a"));
        for i in 0..3 {
            hub.say(
                2,
                Whither::Named("b"),
                Kind::Message(format!("b{i}").into()),
            )
            .unwrap();
        }
        let (kept, evicted) = hub.history_usage();
        assert_eq!((kept, evicted), (4 * one, 2), "the two oldest went");
        let texts = |room: &str| -> Vec<String> {
            let (_, events) = hub.history(2, Whither::Named(room), 10).unwrap();
            events
                .iter()
                .rev()
                .map(|e| format!("{:?}", e.kind))
                .collect()
        };
        assert_eq!(texts("a"), [r#"Message("a2")"#]);
        assert_eq!(texts("b").len(), 3);
        hub.say(2, Whither::Named("b"), Kind::Message("b3".into()))
            .unwrap();
        // Room a lost its last event; with nobody in it and no topic it is forgotten.
        assert!(!hub.rooms(None).iter().any(|r| &*r.name == "a"));
        assert_eq!(hub.history_usage(), (4 * one, 3));
    }

    #[test]
    fn a_message_is_rendered_once_per_format_and_shared_by_its_members() {
        let hub = Hub::new(settings(), &FORMATS);
        let members: Vec<_> = (0..6).map(|i| member(&hub, i, (i % 2) as usize)).collect();
        for m in &members {
            hub.enter(m.id, "dev", Arrival::Entered, |_| {}).unwrap();
        }
        members.iter().for_each(|m| drop(take(m)));
        let (a, b) = (A.0.load(Relaxed), B.0.load(Relaxed));
        let (event, delivered) = hub
            .say(0, Whither::Named("dev"), Kind::Message("hi".into()))
            .unwrap();
        assert_eq!(delivered, 5, "everyone but the sender");
        assert_eq!((A.0.load(Relaxed) - a, B.0.load(Relaxed) - b), (1, 1));
        assert_eq!(event.renderings(), 2);
        let got: Vec<Vec<Bytes>> = members.iter().map(|m| take(m)).collect();
        assert!(got[0].is_empty(), "no echo without asking for it");
        for (i, lines) in got.iter().enumerate().skip(1) {
            assert_eq!(lines.len(), 1, "member {i}");
            // The same allocation, not an equal copy: one rendering per format.
            let first_of_its_format = if i % 2 == 0 { &got[2][0] } else { &got[1][0] };
            assert_eq!(
                lines[0].as_ptr(),
                first_of_its_format.as_ptr(),
                "member {i}"
            );
        }
        assert_ne!(got[1][0].as_ptr(), got[2][0].as_ptr());
    }

    #[test]
    fn a_member_changing_format_in_a_room_gets_its_new_rendering() {
        static D: Counting = Counting(AtomicUsize::new(0), "d");
        static E: Counting = Counting(AtomicUsize::new(0), "e");
        static TWO: [&'static dyn Render; 2] = [&D, &E];
        let hub = Hub::new(settings(), &TWO);
        let (x, y, z) = (member(&hub, 1, 0), member(&hub, 2, 0), member(&hub, 3, 0));
        for m in [&x, &y, &z] {
            hub.enter(m.id, "dev", Arrival::Entered, |_| {}).unwrap();
        }
        drop((take(&x), take(&y), take(&z)));
        let say = |text: &str| hub.say(1, Whither::Named("dev"), Kind::Message(text.into()));
        say("one").unwrap();
        assert!(take(&y)[0].starts_with(b"d "), "all on format 0");
        hub.set_format(&z, 1);
        let (_, delivered) = say("two").unwrap();
        assert_eq!(delivered, 2);
        assert!(take(&y)[0].starts_with(b"d "));
        let z_got = take(&z);
        assert!(
            z_got[0].starts_with(b"d ") && z_got[1].starts_with(b"e "),
            "{z_got:?}"
        );
        // Leaving takes its format's count with it: the room is uniform again.
        hub.leave(3, LeaveReason::Quit, None);
        let (event, delivered) = say("three").unwrap();
        assert_eq!(delivered, 1);
        assert_eq!(event.renderings(), 1);
    }

    #[test]
    fn a_rename_reaches_someone_sharing_two_rooms_once() {
        let hub = Hub::new(settings(), &ONE_FORMAT);
        let (x, y) = (member(&hub, 1, 0), member(&hub, 2, 0));
        for room in ["one", "two"] {
            hub.enter(1, room, Arrival::Entered, |_| {}).unwrap();
            hub.enter(2, room, Arrival::Entered, |_| {}).unwrap();
        }
        drop((take(&x), take(&y)));
        let renamed = hub.rename(1, "ex").unwrap();
        assert_eq!(&*renamed.new.nick, "ex");
        assert_eq!(take(&y).len(), 1, "one NICK, not one per room");
        assert!(
            take(&x).is_empty(),
            "the renamer is told by its own protocol"
        );
        hub.leave(1, LeaveReason::Quit, None);
        assert_eq!(take(&y).len(), 1, "one departure, not one per room");
        assert_eq!(hub.len(), 1);
    }

    #[test]
    fn operators_change_modes_and_everyone_in_the_room_is_told_once() {
        let hub = Hub::new(settings(), &ONE_FORMAT);
        let (x, y, z) = (member(&hub, 1, 0), member(&hub, 2, 0), member(&hub, 3, 0));
        for m in [&x, &y] {
            hub.enter(m.id, "dev", Arrival::Entered, |_| {}).unwrap();
        }
        hub.enter(3, "ops", Arrival::Entered, |_| {}).unwrap();
        drop((take(&x), take(&y), take(&z)));
        let dev = Whither::Named("dev");

        // m2 is no operator: refused, and nothing changes.
        let refused = hub.change_modes(2, dev, &[Mode::TopicLock(false)]);
        assert!(
            matches!(refused, Err(RoomError::NotOperator(_))),
            "{refused:?}"
        );
        assert!(matches!(
            hub.set_topic(2, dev, "mine"),
            Err(RoomError::NotOperator(_))
        ));
        // The creator unlocks the topic; what is already so is left out of the change.
        let done = hub
            .change_modes(1, dev, &[Mode::TopicLock(false), Mode::Secret(false)])
            .unwrap();
        let event = done.event.expect("a change");
        assert!(matches!(&event.kind, Kind::Mode(m) if **m == [Mode::TopicLock(false)]));
        assert!(done.refused.is_empty());
        assert_eq!((take(&x).len(), take(&y).len()), (1, 1), "setter included");
        assert!(take(&z).is_empty(), "not in the room");
        hub.set_topic(2, dev, "anyone's").unwrap();
        assert!(hub
            .change_modes(1, dev, &[Mode::TopicLock(false)])
            .unwrap()
            .event
            .is_none());

        // Standing: a nickname as typed, someone elsewhere and nobody are refused one by one.
        let done = hub
            .change_modes(
                1,
                dev,
                &[
                    Mode::Voice(true, "M2"),
                    Mode::Operator(true, "m3"),
                    Mode::Operator(true, "nobody"),
                    Mode::TopicLock(true),
                ],
            )
            .unwrap();
        let made = match &done.event.expect("a change").kind {
            Kind::Mode(made) => made.to_vec(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            made,
            [Mode::Voice(true, "m2".into()), Mode::TopicLock(true)]
        );
        assert_eq!(
            done.refused,
            [
                RoomError::NotInRoom {
                    nick: "m3".into(),
                    room: "dev".into()
                },
                RoomError::NoSuchNick("nobody".into()),
            ]
        );
        let (_, members) = hub.room_members(1, dev).unwrap();
        let standing = |id| members.iter().find(|m| m.member.id == id).unwrap().standing;
        assert_eq!(
            standing(1),
            Standing {
                op: true,
                voice: false
            }
        );
        assert_eq!(
            standing(2),
            Standing {
                op: false,
                voice: true
            }
        );
        // A voice is no operator: the locked topic stays shut to m2 until it is made one.
        assert!(hub.set_topic(2, dev, "voiced").is_err());
        hub.change_modes(1, dev, &[Mode::Operator(true, "m2")])
            .unwrap();
        hub.set_topic(2, dev, "op now").unwrap();
        hub.change_modes(2, dev, &[Mode::Operator(false, "m1")])
            .unwrap();
        assert!(hub.change_modes(1, dev, &[Mode::Secret(true)]).is_err());

        // Leaving takes a standing with it.
        hub.part(2, dev, None).unwrap();
        hub.enter(2, "dev", Arrival::Entered, |_| {}).unwrap();
        let (_, members) = hub.room_members(1, dev).unwrap();
        assert!(members.iter().all(|m| m.standing == Standing::default()));
        // The lobby has no operators: nobody changes its modes, anyone sets its topic.
        hub.move_to(3, LOBBY, |_| {}).unwrap();
        let lobby = Whither::Named(LOBBY);
        assert!(hub.change_modes(3, lobby, &[Mode::Secret(true)]).is_err());
        assert!(!hub.room(3, lobby).unwrap().modes.topic_lock);
        hub.set_topic(3, lobby, "welcome").unwrap();
    }

    static E: Counting = Counting(AtomicUsize::new(0), "e");
    static RENAME_FORMATS: [&'static dyn Render; 1] = [&E];

    /// A rename on another node arrives once per room its person is in: someone sharing two
    /// of those rooms is told once, someone in one of them at its copy, a repeat of a copy
    /// tells nobody again, and another rename is told anew.
    #[test]
    fn a_remote_rename_is_told_once_to_each_member() {
        let hub = Hub::new(settings(), &RENAME_FORMATS);
        let (both, dev_only) = (member(&hub, 1, 0), member(&hub, 2, 0));
        hub.enter(1, "ops", Arrival::Entered, |_| {}).unwrap();
        hub.enter(1, "dev", Arrival::Entered, |_| {}).unwrap();
        hub.enter(2, "dev", Arrival::Entered, |_| {}).unwrap();
        for m in [&both, &dev_only] {
            drop(take(m));
        }
        let alice = || -> Arc<Identity> {
            Arc::new(Identity {
                id: REMOTE,
                nick: "alice".into(),
                user: "alice".into(),
                host: "a".into(),
                realname: "".into(),
                account: None,
            })
        };
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(7);
        let renamed = || Kind::Nick(Arc::new(alice().renamed("alice2")));
        hub.relayed("ops", alice(), at, renamed());
        assert_eq!(take(&both).len(), 1, "told at the first copy");
        assert!(take(&dev_only).is_empty(), "not in ops");
        hub.relayed("dev", alice(), at, renamed());
        assert!(take(&both).is_empty(), "told already");
        assert_eq!(take(&dev_only).len(), 1, "told at dev's copy");
        hub.relayed("dev", alice(), at, renamed());
        assert!(take(&both).is_empty() && take(&dev_only).is_empty());
        let later = at + std::time::Duration::from_millis(1);
        hub.relayed("dev", alice(), later, renamed());
        assert_eq!((take(&both).len(), take(&dev_only).len()), (1, 1));
    }

    #[test]
    fn a_secret_room_is_seen_only_by_its_members() {
        let hub = Hub::new(settings(), &ONE_FORMAT);
        let (_x, _y) = (member(&hub, 1, 0), member(&hub, 2, 0));
        hub.enter(1, "hideout", Arrival::Entered, |_| {}).unwrap();
        hub.enter(1, "open", Arrival::Entered, |_| {}).unwrap();
        hub.say(1, Whither::Named("hideout"), Kind::Message("psst".into()))
            .unwrap();
        let hideout = Whither::Named("hideout");
        hub.change_modes(1, hideout, &[Mode::Secret(true)]).unwrap();

        let names = |rooms: Vec<RoomInfo>| {
            let mut names: Vec<String> = rooms.iter().map(|r| r.name.to_string()).collect();
            names.sort();
            names
        };
        assert_eq!(names(hub.rooms(Some(1))), ["hideout", "lobby", "open"]);
        assert_eq!(names(hub.rooms(Some(2))), ["lobby", "open"]);
        assert_eq!(
            names(hub.rooms(None)).len(),
            3,
            "the server's reports count it"
        );
        let hidden = |r: Result<(), RoomError>| {
            assert_eq!(r, Err(RoomError::NoSuchRoom("hideout".into())));
        };
        hidden(hub.room_members(2, hideout).map(drop));
        hidden(hub.topic(2, hideout).map(drop));
        hidden(hub.history(2, hideout, 10).map(drop));
        hidden(hub.room(2, hideout).map(drop));
        assert_eq!(hub.history(1, hideout, 10).unwrap().1.len(), 1);
        let theirs: Vec<Arc<str>> = hub.rooms_seen_by(1, 2).into_iter().map(|r| r.0).collect();
        assert_eq!(theirs, [Arc::from("open")]);
        assert_eq!(hub.rooms_seen_by(1, 1).len(), 2);

        // It can still be entered by name, and then it is seen.
        hub.enter(2, "hideout", Arrival::Entered, |_| {}).unwrap();
        assert_eq!(names(hub.rooms(Some(2))), ["hideout", "lobby", "open"]);
        assert_eq!(hub.room_members(2, hideout).unwrap().1.len(), 2);
    }

    #[test]
    fn an_invisible_member_is_found_only_by_those_sharing_a_room() {
        let hub = Hub::new(settings(), &ONE_FORMAT);
        let (x, _y, _z) = (member(&hub, 1, 0), member(&hub, 2, 0), member(&hub, 3, 0));
        x.set_invisible(true);
        hub.enter(1, "dev", Arrival::Entered, |_| {}).unwrap();
        hub.enter(2, "dev", Arrival::Entered, |_| {}).unwrap();
        let seen = |viewer| -> Vec<MemberId> {
            hub.members_seen_by(viewer)
                .iter()
                .map(|m| m.member.id)
                .collect()
        };
        assert_eq!(seen(1), [1, 2, 3]);
        assert_eq!(seen(2), [1, 2, 3], "shares dev");
        assert_eq!(seen(3), [2, 3]);
        x.set_invisible(false);
        assert_eq!(seen(3), [1, 2, 3]);
    }

    #[test]
    fn a_loaded_history_keeps_what_was_kept_in_the_streams_order() {
        let hub = Hub::new(settings(), &ONE_FORMAT);
        let (m1, m2) = (member(&hub, 1, 0), member(&hub, 2, 0));
        hub.enter(1, "r", Arrival::Entered, |_| {}).unwrap();
        let say = |id, text: &str| {
            hub.say(id, Whither::Named("r"), Kind::Message(text.into()))
                .unwrap()
                .0
        };
        let (a, b) = (say(1, "a"), say(1, "b"));
        let remote = Arc::new(Identity {
            id: REMOTE,
            nick: "x".into(),
            user: "x".into(),
            host: "node-b".into(),
            realname: "".into(),
            account: None,
        });
        let x = |n: u64, text: &str| {
            let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(n);
            (remote.clone(), at, Kind::Message(text.into()))
        };
        let own = |e: &Arc<Event>, text: &str| {
            // As the stream gives it back: a remote identity, the time to the millisecond.
            let ms =
                e.at.duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_millis();
            let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
            let from = Arc::new(Identity {
                host: "node-a".into(),
                ..remote.renamed(e.nick())
            });
            (from, at, Kind::Message(text.into()))
        };
        // Said here while the stream was read: not in what was read.
        let c = say(1, "c");
        hub.load_history(
            "R",
            vec![
                x(1, "x0"),
                own(&a, "a"),
                x(2, "x1"),
                own(&b, "b"),
                x(3, "x2"),
            ],
        );
        let kept = |hub: &Hub| {
            let (_, events) = hub.history(2, Whither::Named("r"), 100).unwrap();
            events
                .iter()
                .rev()
                .map(|e| (e.id, format!("{}: {:?}", e.nick(), e.kind)))
                .collect::<Vec<_>>()
        };
        let got = kept(&hub);
        let texts: Vec<&str> = got.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            texts,
            [
                "x: Message(\"x0\")",
                "m1: Message(\"a\")",
                "x: Message(\"x1\")",
                "m1: Message(\"b\")",
                "x: Message(\"x2\")",
                "m1: Message(\"c\")",
            ]
        );
        // What was kept keeps its id; what is new has a new one, above every earlier id.
        assert_eq!((got[1].0, got[3].0, got[5].0), (a.id, b.id, c.id));
        assert!(got[0].0 > c.id && got[2].0 > c.id && got[4].0 > c.id);
        // Reading again changes nothing; more than the room keeps leaves the newest.
        let later =
            c.at.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 10;
        let again: Vec<_> = (0..12).map(|n| x(later + n, &format!("y{n}"))).collect();
        hub.load_history("r", again);
        let got = kept(&hub);
        assert_eq!(got.len(), 10);
        assert_eq!(got[0].1, "x: Message(\"y2\")");
        drop((m1, m2));
        // An empty read of a room this node has not got makes it; settling forgets it.
        hub.load_history("new", Vec::new());
        assert!(lock(&hub.state).room_ids.contains_key("new"));
        hub.settle("new");
        assert!(!lock(&hub.state).room_ids.contains_key("new"));
    }

    /// Two changes made at once on two servers end the same on every server, whichever each
    /// hears first; one older than what a room holds is not taken or told; one made here
    /// after hearing another is stamped above it.
    #[test]
    fn changes_from_elsewhere_end_the_same_whichever_comes_first() {
        let who = |nick: &str| {
            Arc::new(Identity {
                id: REMOTE,
                nick: nick.into(),
                user: nick.into(),
                host: "elsewhere".into(),
                realname: "".into(),
                account: None,
            })
        };
        let at = SystemTime::UNIX_EPOCH;
        let topic = |text: &str| Kind::Topic(text.into());
        let mut topics = Vec::new();
        for bob_first in [true, false] {
            let hub = Hub::new(settings(), &ONE_FORMAT);
            let x = member(&hub, 1, 0);
            hub.enter(1, "dev", Arrival::Entered, |_| {}).unwrap();
            let (bob, carol) = ((who("bob"), topic("b")), (who("carol"), topic("c")));
            let (first, second) = if bob_first {
                (bob, carol)
            } else {
                (carol, bob)
            };
            assert!(hub.changed_elsewhere("dev", first.0, at, first.1, 5, |_, _| {}));
            let told = hub.changed_elsewhere("dev", second.0, at, second.1, 5, |_, _| {});
            // carol's stamp (5, carol) is above bob's (5, bob): taken only after bob's.
            assert_eq!(told, bob_first);
            assert!(!hub.changed_elsewhere("dev", who("dan"), at, topic("old"), 4, |_, _| {}));
            let shown = take(&x)
                .iter()
                .filter(|b| String::from_utf8_lossy(b).contains("Topic("))
                .count();
            assert_eq!(shown, if bob_first { 2 } else { 1 });
            let (_, now) = hub.topic(1, Whither::Named("dev")).unwrap();
            topics.push(now.unwrap().text.to_string());
            hub.change_modes(1, Whither::Named("dev"), &[Mode::Moderated(true)])
                .unwrap();
            let state = lock(&hub.state);
            let room = &state.rooms[&state.room_ids["dev"]];
            assert_eq!(room.stamps.flags[2].as_ref().unwrap().clock, 6);
        }
        assert_eq!(topics, ["c", "c"]);
    }
}
