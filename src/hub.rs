//! Who is connected, under which nickname, in which room, and fan-out to their bounded queues.
//!
//! The hub never touches a socket and never awaits: every operation takes the state lock, hands
//! `Bytes` to per-client queues with a non-blocking push, and returns. Text is formatted once,
//! before the lock where possible, and every recipient gets a reference-counted clone of it.

use std::collections::{HashMap, VecDeque};
use std::fmt::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::{lock, ClientStats};
use crate::outbox::{Outbox, Rejected};
use crate::room::{
    render_history, room_name, Entry, Room, RoomError, RoomId, Topic, LOBBY, LOBBY_ID,
    MAX_IDLE_ROOMS,
};
use crate::transcript::{self, Recorder};

/// Connection number, unique for the server's life; shown in logs.
pub type ClientId = u64;

/// Why a client left. The reason shapes both the notice others see and the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    Quit,
    Closed,
    Reset,
    Error,
    /// The peer stopped acknowledging (keepalive or write deadline): it vanished.
    TimedOut,
    IdleTimeout,
    SlowConsumer,
    Shutdown,
    /// Another protocol's client at the prompt (never joined, so never announced).
    NotChat,
}

impl LeaveReason {
    /// Every reason, in declaration order: metrics index counters by `reason as usize`, so a
    /// new reason goes here (and in [`LeaveReason::label`]) too.
    pub const ALL: [LeaveReason; 9] = [
        LeaveReason::Quit,
        LeaveReason::Closed,
        LeaveReason::Reset,
        LeaveReason::Error,
        LeaveReason::TimedOut,
        LeaveReason::IdleTimeout,
        LeaveReason::SlowConsumer,
        LeaveReason::Shutdown,
        LeaveReason::NotChat,
    ];

    /// The `reason` label value in the Prometheus exposition.
    pub fn label(self) -> &'static str {
        match self {
            LeaveReason::Quit => "quit",
            LeaveReason::Closed => "closed",
            LeaveReason::Reset => "reset",
            LeaveReason::Error => "error",
            LeaveReason::TimedOut => "timed_out",
            LeaveReason::IdleTimeout => "idle_timeout",
            LeaveReason::SlowConsumer => "slow_consumer",
            LeaveReason::Shutdown => "shutdown",
            LeaveReason::NotChat => "not_chat",
        }
    }

    /// The parenthesised part of `alice has left the chat (…).`; `None` for a plain `/quit`.
    pub fn explanation(self) -> Option<&'static str> {
        match self {
            LeaveReason::Quit => None,
            LeaveReason::Closed => Some("connection closed"),
            LeaveReason::Reset => Some("connection reset"),
            LeaveReason::Error => Some("connection error"),
            LeaveReason::TimedOut => Some("connection timed out"),
            LeaveReason::IdleTimeout => Some("idle timeout"),
            LeaveReason::SlowConsumer => Some("slow consumer: stopped reading"),
            LeaveReason::Shutdown => Some("server shutting down"),
            LeaveReason::NotChat => Some("not a chat client"),
        }
    }
}

impl fmt::Display for LeaveReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.explanation().unwrap_or("quit"))
    }
}

/// One connected client as the rest of the server sees it.
#[derive(Debug)]
pub struct Client {
    pub id: ClientId,
    pub addr: SocketAddr,
    pub stats: ClientStats,
    /// Kept so `/metrics` can sample this connection's `TCP_INFO`; the `Arc` keeps the file
    /// descriptor from being closed and reused while a sample is taken.
    pub socket: Arc<TcpStream>,
    outbox: Outbox,
    kicked: CancellationToken,
    kick_reason: OnceLock<LeaveReason>,
}

impl Client {
    pub fn new(
        id: ClientId,
        addr: SocketAddr,
        socket: Arc<TcpStream>,
        stats: ClientStats,
        queue_bytes: usize,
    ) -> Arc<Client> {
        Arc::new(Client {
            id,
            addr,
            stats,
            socket,
            outbox: Outbox::new(queue_bytes),
            kicked: CancellationToken::new(),
            kick_reason: OnceLock::new(),
        })
    }

    /// Queues `msg` without waiting. A full queue disconnects the client as a slow consumer;
    /// a closing connection takes nothing more (and that is not counted as a delivery).
    pub fn push(&self, msg: Bytes) -> Result<(), Rejected> {
        let result = self.outbox.push(msg, &self.stats.queued);
        if result == Err(Rejected::Full) {
            self.stats.dropped.fetch_add(1, Relaxed);
            self.kick(LeaveReason::SlowConsumer);
        }
        result
    }

    /// The queue this client's writer drains.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Queues a text line, adding the `\n`.
    pub fn send_line(&self, text: impl fmt::Display) -> Result<(), Rejected> {
        self.push(Bytes::from(format!("{text}\n")))
    }

    /// Asks the client's session to end for `reason`. The first reason wins; returns whether
    /// this call was the first.
    pub fn kick(&self, reason: LeaveReason) -> bool {
        let first = self.kick_reason.set(reason).is_ok();
        self.kicked.cancel();
        first
    }

    pub fn kick_reason(&self) -> Option<LeaveReason> {
        self.kick_reason.get().copied()
    }

    pub async fn kicked(&self) {
        self.kicked.cancelled().await
    }
}

/// Why a nickname was refused. The `Display` text is what the client is told.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NickError {
    #[error(
        "Error: a nickname is 1-{MAX_NICK} characters: ASCII letters, digits, '_', '-' or '.', \
         starting with a letter."
    )]
    Invalid,
    #[error("Error: the nickname {0} is already taken; choose another.")]
    Taken(String),
}

pub const MAX_NICK: usize = 32;

/// Bytes queued over `clients`, and the most for any one: the `Queued output` figures.
pub fn queue_totals<'a>(clients: impl Iterator<Item = &'a Client>) -> (usize, usize) {
    clients.fold((0, 0), |(sum, max), client| {
        let q = client.stats.queued.load(Relaxed);
        (sum + q, max.max(q))
    })
}

/// ASCII only, starting with a letter, so nobody can impersonate someone with look-alike
/// Unicode or a name that reads as a command.
pub fn validate_nick(name: &str) -> Result<(), NickError> {
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if starts_with_letter && rest_ok && name.len() <= MAX_NICK {
        Ok(())
    } else {
        Err(NickError::Invalid)
    }
}

#[derive(Debug)]
struct Member {
    nick: Arc<str>,
    client: Arc<Client>,
    room: RoomId,
    /// Index of `client` in its room's member list, so leaving a room is O(1).
    slot: usize,
}

#[derive(Debug)]
struct State {
    members: HashMap<ClientId, Member>,
    /// Lower-cased nickname → client, for case-insensitive uniqueness.
    by_nick: HashMap<String, ClientId>,
    rooms: HashMap<RoomId, Room>,
    /// Lower-cased room name → room.
    room_ids: HashMap<String, RoomId>,
    next_room: RoomId,
    /// Rooms that emptied while holding history, oldest first, with their `emptied` count at
    /// the time; bounded by [`MAX_IDLE_ROOMS`].
    idle: VecDeque<(RoomId, u64)>,
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
        };
        state.rooms.insert(LOBBY_ID, Room::new(LOBBY));
        state.room_ids.insert(LOBBY.to_owned(), LOBBY_ID);
        state
    }

    fn room_of(&self, id: ClientId) -> Option<&Room> {
        self.rooms.get(&self.members.get(&id)?.room)
    }

    /// Adds a member (not yet in `members`' room lists) to `room`, returning its slot.
    fn enter(&mut self, room: RoomId, client: &Arc<Client>) -> usize {
        let list = &mut self.rooms.get_mut(&room).expect("room exists").members;
        list.push(client.clone());
        list.len() - 1
    }

    /// Takes `id` out of its room's member list, keeping the moved member's slot right.
    fn exit(&mut self, id: ClientId) {
        let Some(member) = self.members.get(&id) else {
            return;
        };
        let (room, slot) = (member.room, member.slot);
        let list = &mut self.rooms.get_mut(&room).expect("room exists").members;
        list.swap_remove(slot);
        if let Some(moved) = list.get(slot) {
            let moved = moved.id;
            self.members.get_mut(&moved).expect("member").slot = slot;
        }
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
        if !room.has_history() {
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
        }
    }
}

/// Scrollback shown when a client enters a room, and how much history each room keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Messages shown on entering a room; 0 = none.
    pub scrollback: usize,
    /// Messages kept per room; 0 = none.
    pub retain: usize,
    /// Most bytes of history sent at once: half a client's queue, so history alone can never
    /// get a client disconnected as a slow consumer.
    pub budget: usize,
}

impl HistoryConfig {
    pub fn from_config(config: &Config) -> Self {
        HistoryConfig {
            scrollback: config.history,
            retain: config.history_retain,
            budget: config.queue_bytes / 2,
        }
    }
}

/// Room listing for `/rooms` and `/metrics`.
#[derive(Debug, Clone)]
pub struct RoomInfo {
    pub name: Arc<str>,
    pub members: usize,
    pub messages: u64,
    /// Whether the client that asked is in it.
    pub here: bool,
}

/// Why a private message was not delivered. `Display` is what the sender is told.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PrivateError {
    #[error("Error: nobody called {0} is connected.")]
    NoSuchNick(String),
    #[error("Error: that is you; a private message goes to someone else.")]
    ToSelf,
}

/// The registry of joined clients and of the rooms they are in.
#[derive(Debug)]
pub struct Hub {
    state: Mutex<State>,
    next_guest: AtomicU64,
    history: HistoryConfig,
    /// Rooms with more listeners than this get presence summaries instead of a notice per
    /// arrival and departure; 0 = always individual notices.
    announce_limit: usize,
    /// Chat events go here, recorded under the state lock so the transcript has them in the
    /// order the room saw them. Recording never waits (see [`Recorder::record`]).
    transcript: Option<Recorder>,
}

/// A joined client as listed by [`Hub::members`].
#[derive(Debug, Clone)]
pub struct MemberInfo {
    pub nick: Arc<str>,
    pub client: Arc<Client>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    /// A hub with the default history settings.
    pub fn new() -> Self {
        Hub::with_history(HistoryConfig::from_config(&Config::default()))
    }

    pub fn with_history(history: HistoryConfig) -> Self {
        Hub {
            state: Mutex::new(State::new()),
            next_guest: AtomicU64::new(1),
            history,
            announce_limit: Config::default().announce_limit,
            transcript: None,
        }
    }

    /// Records every chat event in a transcript.
    pub fn with_transcript(mut self, recorder: Recorder) -> Self {
        self.transcript = Some(recorder);
        self
    }

    fn record(&self, room: &Arc<str>, sender: &Arc<str>, event: transcript::Kind) {
        if let Some(transcript) = &self.transcript {
            transcript.record(room, sender, event);
        }
    }

    /// Sets the room size above which arrivals and departures are summarised.
    pub fn with_announce_limit(mut self, limit: usize) -> Self {
        self.announce_limit = limit;
        self
    }

    /// Tells every room with unannounced arrivals or departures how many there were in the
    /// last `period_secs`. Called by the server's presence ticker.
    pub fn summarize_presence(&self, period_secs: u64) {
        let mut state = lock(&self.state);
        for room in state.rooms.values_mut() {
            if let Some(summary) = room.presence_summary(period_secs) {
                room.fan_out(&summary, None);
            }
        }
    }

    pub fn history_config(&self) -> HistoryConfig {
        self.history
    }

    /// Registers `client` under `nick` (or a free `guest-N` when `None`) in the lobby, welcomes
    /// it (with the lobby's topic and scrollback) and announces it to the lobby, all under one
    /// lock so nobody sees the newcomer speak before being told it joined.
    pub fn join(&self, client: &Arc<Client>, nick: Option<&str>) -> Result<Arc<str>, NickError> {
        let mut state = lock(&self.state);
        let nick: Arc<str> = match nick {
            Some(name) => {
                validate_nick(name)?;
                if state.by_nick.contains_key(&name.to_ascii_lowercase()) {
                    return Err(NickError::Taken(name.to_owned()));
                }
                name.into()
            }
            None => loop {
                let n = self.next_guest.fetch_add(1, Relaxed);
                let name = format!("guest-{n}");
                if !state.by_nick.contains_key(&name) {
                    break name.into();
                }
            },
        };
        let lobby = state.rooms.get(&LOBBY_ID).expect("lobby");
        let mut welcome =
            format!("Welcome to the chat, {nick}!\nType /help for the list of commands.\n");
        if let Some(topic) = &lobby.topic {
            push_topic_line(&mut welcome, &lobby.name, topic);
        }
        // The welcome cannot fail: it is the first thing queued after the prompt.
        let _ = client.push(Bytes::from(welcome));
        self.scrollback(client, lobby);
        let limit = self.announce_limit;
        let lobby = state.rooms.get_mut(&LOBBY_ID).expect("lobby");
        lobby.presence(true, limit, || format!("{nick} has joined the chat.\n"));
        self.record(&lobby.name, &nick, transcript::Kind::Join);
        let slot = state.enter(LOBBY_ID, client);
        state.by_nick.insert(nick.to_ascii_lowercase(), client.id);
        state.members.insert(
            client.id,
            Member {
                nick: nick.clone(),
                client: client.clone(),
                room: LOBBY_ID,
                slot,
            },
        );
        Ok(nick)
    }

    /// Queues the room's last messages for someone entering it; nothing if there are none.
    fn scrollback(&self, client: &Client, room: &Room) {
        if self.history.scrollback > 0 && room.has_history() {
            let block = render_history(
                &room.name,
                room.recent(self.history.scrollback),
                self.history.budget,
            );
            let _ = client.push(block);
        }
    }

    /// Removes a client and tells its room why it left (except at shutdown, where one
    /// shutdown notice replaces everyone's leave notices).
    pub fn leave(&self, id: ClientId, reason: LeaveReason) {
        let mut state = lock(&self.state);
        state.exit(id);
        let Some(member) = state.members.remove(&id) else {
            return;
        };
        state.by_nick.remove(&member.nick.to_ascii_lowercase());
        if let Some(room) = state.rooms.get(&member.room) {
            self.record(&room.name, &member.nick, transcript::Kind::Leave(reason));
        }
        if reason != LeaveReason::Shutdown {
            if let Some(room) = state.rooms.get_mut(&member.room) {
                room.presence(false, self.announce_limit, || match reason.explanation() {
                    None => format!("{} has left the chat.\n", member.nick),
                    Some(why) => format!("{} has left the chat ({why}).\n", member.nick),
                });
            }
        }
        state.tidy(member.room);
    }

    /// Renames `id` to `new`. The caller has already checked that `new` differs from the
    /// current name; a change of case alone is allowed.
    pub fn rename(&self, id: ClientId, new: &str) -> Result<Arc<str>, NickError> {
        validate_nick(new)?;
        let key = new.to_ascii_lowercase();
        let mut state = lock(&self.state);
        if state.by_nick.get(&key).is_some_and(|&owner| owner != id) {
            return Err(NickError::Taken(new.to_owned()));
        }
        let Some(member) = state.members.get_mut(&id) else {
            return Err(NickError::Invalid);
        };
        let new: Arc<str> = new.into();
        let old = std::mem::replace(&mut member.nick, new.clone());
        let client = member.client.clone();
        state.by_nick.remove(&old.to_ascii_lowercase());
        state.by_nick.insert(key, id);
        let _ = client.send_line(format_args!("Your nickname has been changed to {new}"));
        let notice = Bytes::from(format!("{old} changed nickname to {new}\n"));
        if let Some(room) = state.room_of(id) {
            room.fan_out(&notice, Some(id));
            self.record(&room.name, &old, transcript::Kind::Nick(new.clone()));
        }
        Ok(new)
    }

    /// Relays an already formatted chat line (or action) to the rest of its sender's room,
    /// keeps it in the room's history, and returns how many recipients it was queued for.
    pub fn broadcast(&self, from: ClientId, msg: &Bytes) -> usize {
        let at = SystemTime::now();
        let mut state = lock(&self.state);
        let State { members, rooms, .. } = &mut *state;
        let Some((sender, room)) = members
            .get(&from)
            .and_then(|m| Some((&m.nick, rooms.get_mut(&m.room)?)))
        else {
            return 0;
        };
        let delivered = room.fan_out(msg, Some(from));
        room.record(msg, at, self.history.retain);
        self.record(&room.name, sender, transcript::Kind::Message(msg.clone()));
        delivered
    }

    /// Queues a message for everyone in every room (server notices).
    pub fn announce(&self, msg: &Bytes) {
        for member in lock(&self.state).members.values() {
            let _ = member.client.push(msg.clone());
        }
    }

    /// Moves `id` into the room called `name` (creating it), telling the room it left, the room
    /// it enters, and the mover (with the new room's topic and scrollback).
    pub fn move_to(&self, id: ClientId, name: &str) -> Result<(), RoomError> {
        let (display, key) = room_name(name)?;
        let mut state = lock(&self.state);
        let Some(member) = state.members.get(&id) else {
            return Ok(());
        };
        let (nick, client, old) = (member.nick.clone(), member.client.clone(), member.room);
        let new = match state.room_ids.get(&key) {
            Some(&new) if new == old => {
                let name = state.rooms[&new].name.clone();
                return Err(RoomError::AlreadyThere(name));
            }
            Some(&new) => new,
            None => {
                let new = state.next_room;
                state.next_room += 1;
                state.rooms.insert(new, Room::new(display));
                state.room_ids.insert(key, new);
                new
            }
        };
        state.exit(id);
        let limit = self.announce_limit;
        let rooms = &mut state.rooms;
        let old_room = rooms.get_mut(&old).expect("room exists");
        old_room.presence(false, limit, || format!("{nick} has left the room.\n"));
        self.record(&old_room.name, &nick, transcript::Kind::Part);
        let new_room = rooms.get_mut(&new).expect("room exists");
        new_room.presence(true, limit, || format!("{nick} has joined the room.\n"));
        self.record(&new_room.name, &nick, transcript::Kind::Enter);
        let slot = state.enter(new, &client);
        let member = state.members.get_mut(&id).expect("member");
        member.room = new;
        member.slot = slot;
        let room = &state.rooms[&new];
        let mut intro = match room.members.len() {
            1 => format!("You are now in {} (just you so far).\n", room.name),
            n => format!("You are now in {} ({n} people here).\n", room.name),
        };
        if let Some(topic) = &room.topic {
            push_topic_line(&mut intro, &room.name, topic);
        }
        let _ = client.push(Bytes::from(intro));
        self.scrollback(&client, room);
        state.tidy(old);
        Ok(())
    }

    /// The name of `id`'s room, or of the room called `name`, and who is in it, sorted.
    pub fn who(
        &self,
        id: ClientId,
        name: Option<&str>,
    ) -> Result<(Arc<str>, Vec<Arc<str>>), RoomError> {
        let state = lock(&self.state);
        let room = match name {
            None => state.room_of(id),
            Some(typed) => {
                let (_, key) = room_name(typed)?;
                state.room_ids.get(&key).and_then(|r| state.rooms.get(r))
            }
        };
        let Some(room) = room else {
            return Err(RoomError::NoSuchRoom(name.unwrap_or(LOBBY).to_owned()));
        };
        let mut nicks: Vec<Arc<str>> = room
            .members
            .iter()
            .filter_map(|c| state.members.get(&c.id).map(|m| m.nick.clone()))
            .collect();
        let room_name = room.name.clone();
        drop(state);
        nicks.sort_by_cached_key(|n| n.to_ascii_lowercase());
        Ok((room_name, nicks))
    }

    /// Every room, unsorted, with `here` set on `id`'s.
    pub fn rooms(&self, id: Option<ClientId>) -> Vec<RoomInfo> {
        let state = lock(&self.state);
        let mine = id.and_then(|id| state.members.get(&id)).map(|m| m.room);
        state
            .rooms
            .iter()
            .map(|(&rid, room)| RoomInfo {
                name: room.name.clone(),
                members: room.members.len(),
                messages: room.messages,
                here: Some(rid) == mine,
            })
            .collect()
    }

    /// The name of `id`'s room and its last `n` messages, newest first. Copies only
    /// reference-counted handles under the lock; rendering happens outside it.
    pub fn history(&self, id: ClientId, n: usize) -> Option<(Arc<str>, Vec<Entry>)> {
        let state = lock(&self.state);
        let room = state.room_of(id)?;
        Some((room.name.clone(), room.recent(n).cloned().collect()))
    }

    /// The name and topic of `id`'s room.
    pub fn topic(&self, id: ClientId) -> Option<(Arc<str>, Option<Topic>)> {
        let state = lock(&self.state);
        let room = state.room_of(id)?;
        Some((room.name.clone(), room.topic.clone()))
    }

    /// Sets the topic of `id`'s room and tells everyone in it, the setter included.
    pub fn set_topic(&self, id: ClientId, text: &str) {
        let mut state = lock(&self.state);
        let State { members, rooms, .. } = &mut *state;
        let Some(member) = members.get(&id) else {
            return;
        };
        let room = rooms.get_mut(&member.room).expect("room exists");
        let notice = Bytes::from(format!(
            "{} set the topic of {}: {text}\n",
            member.nick, room.name
        ));
        room.topic = Some(Topic {
            text: text.to_owned(),
            by: member.nick.clone(),
        });
        room.fan_out(&notice, None);
    }

    /// Queues an already formatted private message for the client called `to`, wherever it
    /// is, and returns that client's nickname as registered.
    pub fn send_private(
        &self,
        from: ClientId,
        to: &str,
        msg: Bytes,
    ) -> Result<Arc<str>, PrivateError> {
        let state = lock(&self.state);
        let target = state
            .by_nick
            .get(&to.to_ascii_lowercase())
            .and_then(|id| state.members.get(id))
            .ok_or_else(|| PrivateError::NoSuchNick(to.to_owned()))?;
        if target.client.id == from {
            return Err(PrivateError::ToSelf);
        }
        let _ = target.client.push(msg);
        Ok(target.nick.clone())
    }

    pub fn len(&self) -> usize {
        lock(&self.state).members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Joined clients and the output queued for them: `(clients, total bytes, largest)`, in
    /// one pass and without the copy and sort of [`Hub::members`].
    pub fn queue_totals(&self) -> (usize, usize, usize) {
        let state = lock(&self.state);
        let (sum, max) = queue_totals(state.members.values().map(|m| &*m.client));
        (state.members.len(), sum, max)
    }

    /// Every joined client, sorted by nickname (case-insensitively) for stable listings.
    pub fn members(&self) -> Vec<MemberInfo> {
        let mut list: Vec<MemberInfo> = lock(&self.state)
            .members
            .values()
            .map(|m| MemberInfo {
                nick: m.nick.clone(),
                client: m.client.clone(),
            })
            .collect();
        list.sort_by_cached_key(|m| m.nick.to_ascii_lowercase());
        list
    }

    pub fn find(&self, nick: &str) -> Option<MemberInfo> {
        let state = lock(&self.state);
        let id = state.by_nick.get(&nick.to_ascii_lowercase())?;
        state.members.get(id).map(|m| MemberInfo {
            nick: m.nick.clone(),
            client: m.client.clone(),
        })
    }
}

/// `Topic of dev: release on Friday (set by alice)` plus a newline.
pub fn push_topic_line(out: &mut String, room: &str, topic: &Topic) {
    let _ = writeln!(out, "Topic of {room}: {} (set by {})", topic.text, topic.by);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nickname_rules() {
        for ok in ["a", "Alice", "bob_2", "c-d.e", &"x".repeat(MAX_NICK)] {
            assert_eq!(validate_nick(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "_a",
            "a b",
            "al!ce",
            "аlice",
            "/nick",
            &"x".repeat(MAX_NICK + 1),
        ] {
            assert_eq!(validate_nick(bad), Err(NickError::Invalid), "{bad}");
        }
    }
}

#[cfg(test)]
mod reason_tests {
    use super::*;

    #[test]
    fn every_leave_reason_is_listed_at_its_own_index() {
        for (i, reason) in LeaveReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i, "{reason:?}");
        }
    }
}
