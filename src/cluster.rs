//! The cluster link (`--cluster nats://HOST:PORT`): several servers sharing one chat over a
//! NATS broker with JetStream. docs/CLUSTER.md has the design and which parts are built.
//!
//! Room messages leave through the hub's [`Relay`] (called under the hub lock, so in room
//! order) into one bounded queue that one task publishes from, which keeps each sender's order
//! on the wire. What other nodes publish comes back as [`Remote`] messages, which the server
//! hands to [`crate::core::Hub::relayed`]. Nicknames are claimed in the `lc_nicks` KV bucket
//! with `create`, which the broker applies atomically: of two nodes claiming one name at once,
//! exactly one succeeds.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::core::event::{Event, Identity, Kind, MemberId};
use crate::core::hub::{Relay, REMOTE};
use crate::core::leave::LeaveReason;
use crate::core::lock;
use crate::core::modes::{flags_text, named_text, parse_flags, parse_named, Mode, Standing};
use crate::core::names::nick_key;
use crate::core::room::MAX_LISTED;

/// The bucket that holds every claimed nickname.
const NICKS: &str = "lc_nicks";
/// The bucket of living nodes: key `<node>.<boot>`, rewritten every [`HEARTBEAT`].
const NODES: &str = "lc_nodes";
/// The bucket of rooms' creator claims: key the room's subject token, value a [`Claim`].
const ROOMS_BUCKET: &str = "lc_rooms";
/// Tries of one change to a room's claim against the revisions other nodes keep writing
/// meanwhile, at most: each lost try means another node's change landed first, so a few
/// suffice unless the room has a crowd of nodes arriving at the very same instant.
const CLAIM_TRIES: usize = 16;
/// How often this node's places in the rooms' claims are brought in line again while one
/// change failed (the broker away).
const PLACES_RETRY: Duration = Duration::from_secs(2);
/// How often a node says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// A node whose heartbeats this node has not seen for this long is dead, and its names are freed: with the heartbeat
/// and the sweep, well inside the 20 s the contract allows (docs/CLUSTER.md, "Liveness").
const DEAD_AFTER: Duration = Duration::from_secs(10);
/// Room events are kept in the stream under this prefix, one subject per room, gathered into
/// records ([`RECORD_EVERY`]).
const ROOMS: &str = "lc.room";
/// Room events are told live under this prefix, one core NATS message per event, to the nodes
/// following the room: not kept, not acknowledged (docs/CLUSTER.md, "Exactly once, in order").
const LIVE: &str = "lc.live";
/// How long a node gathers its events in one room before writing them to the stream as one
/// record: the broker stores and acknowledges a record, not each event.
const RECORD_EVERY: Duration = Duration::from_millis(50);
/// Events in one record at most, and its bytes (under the broker's 1 MiB message limit with
/// room to spare): a busier room writes its records sooner.
const RECORD_MAX: usize = 256;
const RECORD_BYTES: usize = 256 * 1024;
/// A node about to read a room from the stream asks here (`lc.flush.<room>`, with a reply
/// subject) for every node's record of it so far, so that the read holds what was said up to
/// its subscription; each node answers once its record is in the stream.
const FLUSH: &str = "lc.flush";
/// How long the asker waits for the answers, at most (a node that died without being swept
/// yet never answers).
const FLUSH_WAIT: Duration = Duration::from_millis(500);
/// How long a live copy may wait for the client's queue: past it the record carries it.
const LIVE_WAIT: Duration = Duration::from_millis(50);
/// Private messages to a node's people: `lc.node.<node>`, which only that node follows.
const NODES_SUBJECT: &str = "lc.node";
/// Events waiting for the link task at most; past this the cluster copy is dropped (and
/// counted): the local room has had it already. docs/CLUSTER.md, "Broker outage".
const QUEUE: usize = 64 * 1024;
/// The bucket of each room's state (its topic, flags, bans and mutes), which the stream's
/// limit per room does not reach: key = the room's subject token, value = [`RoomState`].
const STATES: &str = "lc_room_state";
/// The stream that keeps every room event (subjects `lc.room.>`).
const STREAM: &str = "LINECHAT_ROOMS";
/// Events kept per room in the stream.
const KEPT_PER_ROOM: i64 = 10_000;
/// The stream's deduplication window: a publish retried within it is stored once.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long one publish waits for the stream's acknowledgement before it is sent again.
const ACK_WAIT: Duration = Duration::from_secs(1);
/// How far before the link dropped a catch-up starts reading the stream: what was in flight
/// then, and the difference between this node's clock and the broker's, which stamps the
/// stream's messages (assumed smaller than this).
const CATCH_UP_MARGIN: Duration = Duration::from_secs(30);
/// Events waiting for their acknowledgement, at most; past it the cluster copy is dropped
/// and counted, as for the queue.
const UNACKED: usize = 64 * 1024;
/// Events published to the stream and not yet acknowledged, at most: the publishing window
/// (docs/CLUSTER.md, "Exactly once, in order").
const IN_FLIGHT: usize = 256;
/// How long a receiver holds an origin's events back behind a missing one (a publish that
/// failed mid-window and is being sent again) before it gives the missing one up.
const GAP_WAIT: Duration = Duration::from_secs(5);
/// Events held back per origin and room at most; past it what arrives is dropped, for the
/// origin's records to bring again once the gap is filled.
const HELD_MAX: usize = 8 * IN_FLIGHT;
/// How often held-back events are looked at for a gap that has waited [`GAP_WAIT`].
const GAP_TICK: Duration = Duration::from_millis(250);

/// How often the client pings the broker; two unanswered and it reconnects.
const PING_EVERY: Duration = Duration::from_secs(2);

/// How long a claim or release may wait for the broker before the person is told no.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an arrival waits for the room's history to be read from the stream before it is
/// shown what this node has (docs/CLUSTER.md, "Scrollback and /history").
pub const LOAD_WAIT: Duration = Duration::from_secs(2);
/// Events read from the stream per fetch, loading a room's history.
const LOAD_BATCH: usize = 1000;

/// How to reach the broker, from `--cluster`, `--node-name` and `--cluster-creds`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `nats://HOST:PORT`, one or more (a NATS cluster's seed servers).
    pub urls: Vec<String>,
    pub node: String,
    /// A NATS credentials file (`.creds`); never the secret itself on the command line.
    pub creds: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the cluster credentials {}: {error}", path.display())]
    Creds {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot reach the cluster broker at {0}: {1}")]
    Connect(String, async_nats::ConnectError),
    #[error("the cluster broker at {0} has no JetStream (start nats-server with -js): {1}")]
    JetStream(String, String),
    #[error("the cluster broker did not answer in time")]
    Timeout,
    #[error("the link to the cluster broker is down")]
    Down,
    #[error("the cluster broker: {0}")]
    Broker(String),
}

/// What the link hands the server.
#[derive(Debug)]
pub enum Incoming {
    /// A message, or an arrival or departure, on another node.
    Said(Remote),
    /// A private message for someone on this node.
    Private { to: String, remote: Remote },
    /// Someone here holds a name the broker says is someone else's, on node `holder`, since
    /// an outage: they are to be renamed (docs/CLUSTER.md, "Conflict rule").
    Conflict { nick: String, holder: String },
    /// A node fell silent or vanished: these people of its (nick, rooms) are gone, and this
    /// node's rooms are told so.
    Lost {
        node: String,
        people: Vec<(String, Vec<String>)>,
    },
    /// The broker connection went down (`false`) or came back (`true`); told once per change.
    Link(bool),
    /// What the stream holds of a room this node starts following: its last messages,
    /// oldest first, said here or elsewhere, for the room's history (not to be fanned out),
    /// and every change to its topic and flags it keeps (for the room's state, in any order:
    /// each carries its stamp).
    History {
        room: String,
        events: Vec<Remote>,
        changes: Vec<Remote>,
    },
    /// Someone on another node changed a room's topic or flags.
    Changed(Remote),
}

/// A message said on another node, for the local hub.
#[derive(Debug)]
pub struct Remote {
    pub room: String,
    pub from: Arc<Identity>,
    pub at: SystemTime,
    pub kind: Kind,
    /// For a change to the room's topic or flags: its Lamport clock (`core::modes::Stamp`).
    pub clock: u64,
}

/// What crosses the broker for one room event.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Wire {
    node: String,
    boot: u64,
    /// Increasing per origin and boot, over all its rooms and private messages.
    seq: u64,
    /// Gapless per origin, boot and room, from 1 (0: a private message, or a node from before
    /// it): what a receiver puts the room's events back in order by, and notices a gap with.
    #[serde(default)]
    rseq: u64,
    room: String,
    nick: String,
    /// `msg`, `act`, `note`; presence: `join` (arrived on the server), `enter`, `part`,
    /// `left` (left the server); `nick` (a rename, `text` the new name); the room's state:
    /// `topic` (`text`: the topic), `mode` (`text`: flag changes, `+m-t`); `standing`
    /// (`text`: `+o bob`, `-v bob`); `list` (`text`: `+b mask`, `-q mask`).
    kind: String,
    text: String,
    /// For `left`: the reason's label (`quit`, `timed_out`, ...); for `kick` (`nick`: the
    /// operator, `text`: whom they put out): the reason given, if any.
    #[serde(default)]
    reason: String,
    /// For a private message (on `lc.node.<N>`): whom it is for; empty for a room's events.
    #[serde(default)]
    to: String,
    at_ms: u64,
    /// The microseconds within `at_ms`: what a room's history read from records (each
    /// node's written apart) is put back in the order it was said by, across nodes.
    #[serde(default)]
    at_us: u32,
    /// For `topic` and `mode`: the room's Lamport clock when it was made, which orders
    /// changes made at once on two nodes the same way everywhere.
    #[serde(default)]
    clock: u64,
}

/// The words this node's rooms are told when another node's people vanish with it.
pub const LOST: &str = "connection to their server lost";

/// Someone on a node, as that node's heartbeat says: what cluster-wide listings show.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Person {
    pub nick: String,
    /// `line`, `irc` or `web`; empty when known only from an arrival, until the next beat.
    #[serde(default)]
    pub proto: String,
    pub rooms: Vec<String>,
    /// Those of `rooms` their node knows secret (`+s`): listings here show them only to the
    /// rooms' members. Empty from a node from before it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret: Vec<String>,
    /// Those of `rooms` they are an operator of, and have a voice in (NAMES' `@` and `+`).
    /// Empty from a node from before it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ops: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub voiced: Vec<String>,
    /// Their away message (IRC `AWAY`), while they are away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub away: Option<String>,
}

fn has_room(rooms: &[String], room: &str) -> bool {
    rooms.iter().any(|r| r.eq_ignore_ascii_case(room))
}

/// Puts `room` in `rooms` or takes it out.
fn mark_room(rooms: &mut Vec<String>, room: &str, on: bool) {
    rooms.retain(|r| !r.eq_ignore_ascii_case(room));
    if on {
        rooms.push(room.to_owned());
    }
}

impl Person {
    fn in_secret(&self, room: &str) -> bool {
        has_room(&self.secret, room)
    }

    /// Their standing in `room`, as their node last said.
    pub fn standing(&self, room: &str) -> Standing {
        Standing {
            op: has_room(&self.ops, room),
            voice: has_room(&self.voiced, room),
        }
    }

    fn leave_room(&mut self, room: &str) {
        for rooms in [
            &mut self.rooms,
            &mut self.secret,
            &mut self.ops,
            &mut self.voiced,
        ] {
            mark_room(rooms, room, false);
        }
    }

    /// This person as listings show them to someone in `mine`: without the rooms `hidden`
    /// says are secret to them, or that this person's node says are secret and they are not in.
    pub fn seen_from(mut self, mine: &[Arc<str>], hidden: impl Fn(&str) -> bool) -> Person {
        let keep = |room: &String| {
            let member = mine.iter().any(|m| m.eq_ignore_ascii_case(room));
            member || !(hidden(room) || self.in_secret(room))
        };
        let rooms: Vec<String> = self.rooms.iter().filter(|r| keep(r)).cloned().collect();
        for kept in [&mut self.secret, &mut self.ops, &mut self.voiced] {
            kept.retain(|r| rooms.contains(r));
        }
        self.rooms = rooms;
        self
    }
}

/// The value of a node's `lc_nodes` entry: its people, and its `seq` when they were read, so
/// a receiver can tell which arrivals and departures it already heard are newer.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Beat {
    seq: u64,
    people: Vec<Person>,
}

/// An arrival or departure heard on a room subject, kept until a beat covers it.
#[derive(Debug, Clone)]
enum Change {
    Enter(String, String),
    Part(String, String),
    Left(String),
    /// A rename (old, new) told in a room the person is in.
    Nick(String, String, String),
    /// An operator status or voice given or taken in a room (`Mode::Operator`, `Mode::Voice`).
    Standing(String, Mode<Arc<str>>),
    /// Someone marked away (with the message) or back.
    Away(String, Option<String>),
}

/// Another node's people, as this node knows them: its last beat, with the changes heard
/// since (their `seq` above the beat's) applied on top.
#[derive(Debug, Default)]
struct Peer {
    node: String,
    people: HashMap<String, Person>,
    beat_seq: u64,
    since: Vec<(u64, Change)>,
}

/// Changes kept per peer at most between two beats; past it the oldest go, and the next beat
/// (at most [`HEARTBEAT`] later) restores what they said.
const MAX_CHANGES: usize = 4096;

impl Peer {
    fn apply(&mut self, change: &Change) {
        match change {
            Change::Enter(nick, room) => {
                // An arrival carries no flags: a room the last beat had secret stays so.
                let secret = self.people.values().any(|p| p.in_secret(room));
                let person = self.people.entry(nick_key(nick)).or_insert_with(|| Person {
                    nick: nick.clone(),
                    ..Person::default()
                });
                if !person.rooms.iter().any(|r| r.eq_ignore_ascii_case(room)) {
                    person.rooms.push(room.clone());
                }
                if secret && !person.in_secret(room) {
                    person.secret.push(room.clone());
                }
            }
            Change::Part(nick, room) => {
                if let Some(person) = self.people.get_mut(&nick_key(nick)) {
                    person.leave_room(room);
                }
            }
            Change::Left(nick) => {
                self.people.remove(&nick_key(nick));
            }
            Change::Nick(old, new, room) => {
                // Idempotent like the others: a copy from a second room finds the new name.
                if let Some(mut person) = self.people.remove(&nick_key(old)) {
                    person.nick.clone_from(new);
                    self.people.insert(nick_key(new), person);
                }
                if !room.is_empty() {
                    self.apply(&Change::Enter(new.clone(), room.clone()));
                }
            }
            Change::Standing(room, change) => {
                let (Mode::Operator(on, who) | Mode::Voice(on, who)) = change else {
                    return;
                };
                let Some(person) = self.people.get_mut(&nick_key(who)) else {
                    return;
                };
                if !has_room(&person.rooms, room) {
                    return;
                }
                let rooms = match change {
                    Mode::Operator(..) => &mut person.ops,
                    _ => &mut person.voiced,
                };
                mark_room(rooms, room, *on);
            }
            Change::Away(nick, message) => {
                if let Some(person) = self.people.get_mut(&nick_key(nick)) {
                    person.away.clone_from(message);
                }
            }
        }
    }

    /// Whether this node lists `nick` among its people.
    fn lists(&self, nick: &str) -> bool {
        self.people.contains_key(&nick_key(nick))
    }

    fn heard(&mut self, seq: u64, change: Change) {
        if seq <= self.beat_seq {
            return;
        }
        self.apply(&change);
        if self.since.len() >= MAX_CHANGES {
            self.since.remove(0);
        }
        self.since.push((seq, change));
    }

    /// A beat replaces what was known, and the changes heard after it are applied again
    /// (each is idempotent, so one the beat already includes does no harm).
    fn beat(&mut self, beat: Beat) {
        self.people = beat
            .people
            .into_iter()
            .map(|p| (nick_key(&p.nick), p))
            .collect();
        self.beat_seq = beat.seq;
        for (seq, change) in std::mem::take(&mut self.since) {
            if seq > beat.seq {
                self.apply(&change);
                self.since.push((seq, change));
            }
        }
    }
}

#[derive(Debug)]
enum Out {
    /// A private message: core NATS, not kept.
    Publish(String, Bytes),
    /// A room event: told live on [`LIVE`] and written to [`STREAM`] in this node's next
    /// record of its room, published with `Nats-Msg-Id: <node>:<boot>:<seq of its first>`
    /// until the broker has acknowledged it.
    Store(Said),
    /// A nickname claim to delete: its key and the whole value it was created with.
    Release(String, String),
}

/// The nickname claims this node holds, by key: the name as taken and the claim's whole value
/// (`<node>:<boot>:<member>`), what a reclaim after an outage writes again and what a release
/// compares. A release whose claim is here again (the same member took the name back) frees
/// nothing.
type Held = Arc<std::sync::Mutex<HashMap<String, (String, String)>>>;

/// A nickname claim's value: the node, its boot and the member holding the name, so a release
/// can tell this claim from the same name claimed afterwards by someone else on this node.
fn claim_value(node: &str, boot: u64, member: MemberId) -> String {
    format!("{node}:{boot}:{member}")
}

/// The node and boot a claim's value names: `<node>:<boot>:<member>`, or `<node>:<boot>` as
/// nodes from before the member wrote it (node names hold no `:`).
fn claim_holder(value: &[u8]) -> Option<(&str, u64)> {
    let value = std::str::from_utf8(value).ok()?;
    let (node, rest) = value.split_once(':')?;
    let boot = rest.split_once(':').map_or(rest, |(boot, _)| boot);
    Some((node, boot.parse().ok()?))
}

/// One of this node's room events, for the link to tell live and to record.
#[derive(Debug)]
struct Said {
    /// The room's subject in the stream ([`room_subject`]).
    subject: String,
    /// The room as its events name it.
    room: Arc<str>,
    /// The event ([`Wire`]) as JSON.
    body: Bytes,
    seq: u64,
    rseq: u64,
    /// Written to the stream at once, with what waits before it: presence and the room's
    /// state, which a node starting to follow the room reads from the stream (who is in it,
    /// its topic and flags) and which are rare. Messages wait for [`RECORD_EVERY`].
    now: bool,
    /// A change to the room's state (topic, flags, bans, mutes): kept in [`STATES`] too.
    state: bool,
}

/// This node's events in one room told live and not yet written to the stream.
#[derive(Debug)]
struct Record {
    room: Arc<str>,
    /// The events' JSON, one a line.
    lines: Vec<u8>,
    /// The `seq` of its first event: the record's `Nats-Msg-Id`, unique per node and boot.
    seq: u64,
    first: u64,
    last: u64,
    /// When its first event was said: the duplicate window counts from here.
    since: Instant,
}

/// The first line of a record in the stream (`R` and this, as JSON), then its events, one
/// [`Wire`] a line: what a node reads to learn whether it has every event of it already
/// without reading them.
#[derive(Debug, Serialize, Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    node: std::borrow::Cow<'a, str>,
    boot: u64,
    #[serde(borrow)]
    room: std::borrow::Cow<'a, str>,
    /// The `rseq` of its first and last events (gapless between).
    first: u64,
    last: u64,
}

/// The marker a record's first line starts with; a single event (from a node of before
/// records, or a live copy) starts with `{`.
const RECORD_MARK: u8 = b'R';

impl Record {
    fn new(said: &Said) -> Record {
        Record {
            room: said.room.clone(),
            lines: Vec::with_capacity(said.body.len() + 1),
            seq: said.seq,
            first: said.rseq,
            last: said.rseq,
            since: Instant::now(),
        }
    }

    fn push(&mut self, said: &Said) {
        self.lines.extend_from_slice(&said.body);
        self.lines.push(b'\n');
        self.last = said.rseq;
    }

    /// Its events are gapless from `first` to `last`.
    fn events(&self) -> usize {
        (self.last + 1 - self.first) as usize
    }

    fn full(&self) -> bool {
        self.events() >= RECORD_MAX || self.lines.len() >= RECORD_BYTES
    }

    /// The record as the stream keeps it.
    fn body(&self, node: &str, boot: u64) -> Bytes {
        let head = Head {
            node: node.into(),
            boot,
            room: (*self.room).into(),
            first: self.first,
            last: self.last,
        };
        let mut body = Vec::with_capacity(self.lines.len() + 96);
        body.push(RECORD_MARK);
        // A struct of strings and numbers always serializes.
        let _ = serde_json::to_writer(&mut body, &head);
        body.push(b'\n');
        body.extend_from_slice(&self.lines);
        body.into()
    }
}

impl Head<'_> {
    /// Whether this head is a true account of the record it leads, as far as can be told
    /// without reading its events: written for the room of the subject it came on, and
    /// holding as many lines as its range says. Only a head that fits is trusted to skip a
    /// record; one that does not (a node's bug, a damaged message) costs reading its events,
    /// each then taken on its own fields, never the events themselves.
    fn fits(&self, subject: &str, lines: usize) -> bool {
        let room = room_subject(&self.room);
        self.last >= self.first
            && (self.last - self.first + 1) as usize == lines
            && subject.strip_prefix(ROOMS) == room.strip_prefix(ROOMS)
    }
}

/// What a message on a room's subject holds: a record's head and its events' lines, or one
/// event (its head `None`).
fn unpack(payload: &[u8]) -> (Option<Head<'_>>, impl Iterator<Item = &[u8]>) {
    let (head, rest) = match payload.split_first() {
        Some((&RECORD_MARK, rest)) => {
            let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            (
                serde_json::from_slice::<Head>(&rest[..end]).ok(),
                rest.get(end + 1..).unwrap_or_default(),
            )
        }
        _ => (None, payload),
    };
    let lines = rest.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    (head, lines)
}

/// The rooms' subjects this node has members in, as the hub last said: a set the link brings
/// its subscriptions in line with, rather than a queue of changes, so a full queue can never
/// lose a room's first arrival (and leave the room deaf to the others for good).
#[derive(Debug, Default)]
struct Interest {
    wanted: std::sync::Mutex<HashSet<String>>,
    changed: tokio::sync::Notify,
    loads: std::sync::Mutex<Loads>,
    /// Woken with `changed`, for the task that keeps this node's places in the rooms'
    /// claims ([`Places`]) in line with the same sets: a [`tokio::sync::Notify`] wakes one
    /// waiter, so each task has its own.
    places: tokio::sync::Notify,
}

impl Interest {
    /// Whether someone here is in the room on `subject`, or about to enter it.
    fn desired(&self, subject: &str) -> bool {
        let wanted = lock(&self.wanted).contains(subject);
        wanted || lock(&self.loads).held.contains_key(subject)
    }
}

/// The rooms whose history this node has read from the stream since it last started
/// following them, and the arrivals waiting for that.
#[derive(Debug, Default)]
struct Loads {
    /// Subjects followed, and their history read, since they were last followed.
    ready: HashSet<String>,
    /// Subjects followed for someone about to enter (count of [`Hold`]s), whether or not
    /// anyone here is in the room yet.
    held: HashMap<String, usize>,
    /// Who waits for a subject's history: told whether it was read.
    waiting: HashMap<String, Vec<tokio::sync::oneshot::Sender<bool>>>,
    /// The answer of each entry's claim (by subject and member, while its [`Hold`] lives):
    /// whether nobody on another node was in the room ([`Relay::creator`]).
    creators: HashMap<(String, MemberId), bool>,
}

/// Keeps a room followed (and its history, once read, kept up to date) until someone has
/// entered it: from [`Cluster::prepare`].
#[derive(Debug)]
pub struct Hold {
    interest: Arc<Interest>,
    subject: String,
    /// Whose entry this is: its claim's answer is kept for the hub under it until then.
    member: MemberId,
    /// Whether the room's history here covers what the stream holds: `false` when it could
    /// not be read within [`LOAD_WAIT`] (the broker away, or slow).
    pub loaded: bool,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut loads = lock(&self.interest.loads);
        if let Some(n) = loads.held.get_mut(&self.subject) {
            *n -= 1;
            if *n == 0 {
                loads.held.remove(&self.subject);
            }
        }
        loads.creators.remove(&(self.subject.clone(), self.member));
        drop(loads);
        self.interest.changed.notify_one();
        self.interest.places.notify_one();
    }
}

/// A room's entry in `lc_rooms`: who created it (`<node>:<boot>:<member>`, as a nickname's
/// claim names its holder) and the nodes (`<node>.<boot>`, their `lc_nodes` keys) with
/// people in it or about to enter it. Only the set decides; the creator is what the broker
/// ordered first, kept to be read.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
struct Claim {
    creator: String,
    nodes: Vec<String>,
}

/// What a node entering a room does with its claim as read: whether it enters as nobody
/// elsewhere is in the room (the creator), and the claim to write against the revision read
/// (`None`: nothing to change). Nodes not `alive` (no `lc_nodes` entry: dead, and swept)
/// are dropped from it, so a dead node's place frees within the liveness bound. `creator`
/// is written only by an entry that finds nobody else, or by a claim made anew.
fn entering(
    claim: &Claim,
    me: &str,
    creator: Option<&str>,
    alive: impl Fn(&str) -> bool,
) -> (bool, Option<Claim>) {
    let mut next = Claim {
        creator: claim.creator.clone(),
        nodes: claim
            .nodes
            .iter()
            .filter(|n| *n != me && alive(n))
            .cloned()
            .collect(),
    };
    let alone = next.nodes.is_empty();
    next.nodes.push(me.to_owned());
    if let (true, Some(creator)) = (alone, creator) {
        next.creator = creator.to_owned();
    }
    let same = next.creator == claim.creator && {
        let mut was = claim.nodes.clone();
        was.sort();
        let mut now = next.nodes.clone();
        now.sort();
        was == now
    };
    (alone, (!same).then_some(next))
}

/// What a node whose last person left a room does with its claim as read: nothing (it is
/// not in the set), the claim without it, or the key deleted (nobody left, or only nodes
/// that are not `alive`).
#[derive(Debug, PartialEq, Eq)]
enum Leaving {
    Nothing,
    Write(Claim),
    Delete,
}

fn leaving(claim: &Claim, me: &str, alive: impl Fn(&str) -> bool) -> Leaving {
    if !claim.nodes.iter().any(|n| n == me) {
        return Leaving::Nothing;
    }
    let nodes: Vec<String> = claim
        .nodes
        .iter()
        .filter(|n| *n != me && alive(n))
        .cloned()
        .collect();
    match nodes.is_empty() {
        true => Leaving::Delete,
        false => Leaving::Write(Claim {
            creator: claim.creator.clone(),
            nodes,
        }),
    }
}

/// This node's places in the rooms' claims (`lc_rooms`, docs/CLUSTER.md, "The creator
/// rule"): an entry into a room nobody here is in claims it first ([`Cluster::prepare`]),
/// and one task keeps the places in line with who is here ([`keep_places`]): taken out of a
/// room's set once nobody here is in it or about to enter it, put in for a room people
/// here are in without a place (their entry's claim unanswered, or the others took this
/// node for dead). Each room's changes here are made one at a time.
#[derive(Debug)]
struct Places {
    client: async_nats::Client,
    rooms: kv::Store,
    nodes: kv::Store,
    /// This node's `lc_nodes` key, `<node>.<boot>`: its name in a claim's set.
    me: String,
    node: Arc<str>,
    boot: u64,
    interest: Arc<Interest>,
    /// Subjects whose claim may list this node: a change was sent, answered or not.
    listed: std::sync::Mutex<HashSet<String>>,
    /// Those of them the broker said it lists this node in.
    confirmed: std::sync::Mutex<HashSet<String>>,
    /// One lock per room whose claim this node is changing.
    busy: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Whether this node's `lc_nodes` entry has been written: a place in a set before it
    /// would read as a dead node's to whoever looks.
    beating: tokio::sync::watch::Sender<bool>,
}

/// A room's claim (under its `lc_rooms` key) as the broker has it, with its revision; `None`
/// when there is none (never made, or deleted).
async fn read_claim(rooms: &kv::Store, key: &str) -> Result<Option<(Claim, u64)>, String> {
    let entry = rooms.entry(key).await.map_err(|e| e.to_string())?;
    Ok(entry
        .filter(|e| e.operation == kv::Operation::Put)
        // A value that does not read is a claim that lists nobody.
        .map(|e| {
            (
                serde_json::from_slice(&e.value).unwrap_or_default(),
                e.revision,
            )
        }))
}

impl Places {
    /// The `lc_rooms` key of the room on `subject`.
    fn key(subject: &str) -> &str {
        subject_token(subject)
    }

    /// The nodes of `claim` other than this one that have an `lc_nodes` entry.
    async fn living(&self, claim: &Claim) -> Result<HashSet<String>, String> {
        let others = claim.nodes.iter().filter(|n| **n != self.me);
        let read = futures_util::future::join_all(others.map(|n| async move {
            let e = self.nodes.entry(n).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(e.filter(|e| e.operation == kv::Operation::Put).map(|_| n))
        }))
        .await;
        let mut living = HashSet::new();
        for n in read {
            if let Some(n) = n? {
                living.insert(n.clone());
            }
        }
        Ok(living)
    }

    /// This room's turn: no other change of this node to its claim runs meanwhile.
    async fn turn(&self, subject: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let busy = lock(&self.busy)
            .entry(subject.to_owned())
            .or_default()
            .clone();
        busy.lock_owned().await
    }

    fn done(&self, turn: tokio::sync::OwnedMutexGuard<()>) {
        drop(turn);
        lock(&self.busy).retain(|_, m| Arc::strong_count(m) > 1);
    }

    /// Puts this node in the set of the room on `subject` (making the claim when there is
    /// none, as its creator `member`'s); whether it was alone there, the living nodes'
    /// other people out of it. `member` `None`: the place of people already in the room.
    async fn enter(&self, subject: &str, member: Option<MemberId>) -> Result<bool, String> {
        let key = Self::key(subject);
        let creator = member.map(|m| claim_value(&self.node, self.boot, m));
        let made = creator
            .clone()
            .unwrap_or_else(|| format!("{}:{}", self.node, self.boot));
        for _ in 0..CLAIM_TRIES {
            let read = read_claim(&self.rooms, key).await?;
            lock(&self.listed).insert(subject.to_owned());
            let Some((claim, revision)) = read else {
                let claim = Claim {
                    creator: made.clone(),
                    nodes: vec![self.me.clone()],
                };
                let value = Bytes::from(serde_json::to_vec(&claim).unwrap_or_default());
                match self.rooms.create(key, value).await {
                    Ok(_) => {
                        lock(&self.confirmed).insert(subject.to_owned());
                        return Ok(true);
                    }
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e.to_string()),
                }
            };
            let living = self.living(&claim).await?;
            let (alone, next) =
                entering(&claim, &self.me, creator.as_deref(), |n| living.contains(n));
            if let Some(next) = next {
                let value = Bytes::from(serde_json::to_vec(&next).unwrap_or_default());
                match self.rooms.update(key, value, revision).await {
                    Ok(_) => {}
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                    Err(e) => return Err(e.to_string()),
                }
            }
            lock(&self.confirmed).insert(subject.to_owned());
            return Ok(alone);
        }
        Err("the room's claim kept changing".to_owned())
    }

    /// Takes this node out of the set of the room on `subject`, deleting the claim when
    /// nobody living is left in it.
    async fn leave(&self, subject: &str) -> Result<(), String> {
        let key = Self::key(subject);
        for _ in 0..CLAIM_TRIES {
            let Some((claim, revision)) = read_claim(&self.rooms, key).await? else {
                break;
            };
            let living = self.living(&claim).await?;
            match leaving(&claim, &self.me, |n| living.contains(n)) {
                Leaving::Nothing => break,
                Leaving::Write(next) => {
                    let value = Bytes::from(serde_json::to_vec(&next).unwrap_or_default());
                    match self.rooms.update(key, value, revision).await {
                        Ok(_) => break,
                        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                        Err(e) => return Err(e.to_string()),
                    }
                }
                // A failed delete reads the claim again: another node changed it first (the
                // client does not tell that from the broker failing, which the read does).
                Leaving::Delete => {
                    if self
                        .rooms
                        .delete_expect_revision(key, Some(revision))
                        .await
                        .is_ok()
                    {
                        break;
                    }
                }
            }
        }
        lock(&self.listed).remove(subject);
        lock(&self.confirmed).remove(subject);
        Ok(())
    }

    /// The claim of an entry by `member` into the room on `subject`: whether nobody on
    /// another node is in it, or `None` when the broker did not answer within [`LOAD_WAIT`]
    /// (the local rule decides, and the place is left to [`keep_places`]). People here in
    /// the room already: someone is in it, with no question to the broker.
    async fn claim(&self, subject: &str, member: MemberId) -> Option<bool> {
        if lock(&self.interest.wanted).contains(subject) {
            return Some(false);
        }
        let claimed = async {
            // While the link is down the client would keep the change and send it once back,
            // after the person was let in by the local rule.
            if self.client.connection_state() != async_nats::connection::State::Connected {
                return None;
            }
            let _ = self.beating.subscribe().wait_for(|b| *b).await;
            let turn = self.turn(subject).await;
            let entered = self.enter(subject, Some(member)).await;
            self.done(turn);
            match entered {
                Ok(alone) => Some(alone),
                Err(error) => {
                    tracing::debug!(%error, subject, "cluster: a room's claim was not made");
                    None
                }
            }
        };
        let answer = tokio::time::timeout(LOAD_WAIT, claimed)
            .await
            .ok()
            .flatten();
        if answer.is_none() {
            self.interest.places.notify_one();
        }
        answer
    }

    /// Brings this node's places in line with who is here: out of the rooms nobody here is
    /// in or about to enter, into those people here are in without a confirmed place.
    /// Whether every change got through.
    async fn keep(&self) -> bool {
        let mut wanted = lock(&self.interest.wanted).clone();
        // The lobby has no operators, so no claim.
        wanted.remove(&room_subject(crate::core::room::LOBBY));
        let listed = lock(&self.listed).clone();
        let confirmed = lock(&self.confirmed).clone();
        let mut ok = true;
        let leaving = listed.iter().filter(|s| !self.interest.desired(s));
        for subject in leaving {
            let turn = self.turn(subject).await;
            // Someone may have come (or be coming) meanwhile: then the place stays.
            let stays = self.interest.desired(subject);
            let left = match stays {
                true => Ok(()),
                false => self.leave(subject).await,
            };
            self.done(turn);
            if let Err(error) = left {
                tracing::debug!(%error, subject, "cluster: a room's place was not given up");
                ok = false;
            }
        }
        for subject in wanted.iter().filter(|s| !confirmed.contains(*s)) {
            let turn = self.turn(subject).await;
            let taken = lock(&self.confirmed).contains(subject);
            let entered = match taken {
                true => Ok(false),
                false => self.enter(subject, None).await,
            };
            self.done(turn);
            if let Err(error) = entered {
                tracing::debug!(%error, subject, "cluster: a room's place was not taken");
                ok = false;
            }
        }
        ok
    }

    /// After an outage, or after the others took this node for dead: its places may have
    /// been dropped by whoever read them, so each is checked again.
    fn again(&self) {
        lock(&self.confirmed).clear();
        self.interest.places.notify_one();
    }
}

/// Keeps this node's places in the rooms' claims in line with who is here ([`Places::keep`])
/// each time that changes, and again every [`PLACES_RETRY`] while a change failed, until
/// `stop`.
async fn keep_places(places: Arc<Places>, stop: CancellationToken) {
    let mut failed = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = places.interest.places.notified() => {}
            () = tokio::time::sleep(PLACES_RETRY), if failed => {}
        }
        failed = !places.keep().await;
    }
}

/// This node's end of the cluster: what sessions ask of it (claims) and the relay the hub
/// writes to.
#[derive(Debug)]
pub struct Cluster {
    node: Arc<str>,
    boot: u64,
    /// Asked whether the broker is there before a claim is sent.
    client: async_nats::Client,
    nicks: kv::Store,
    held: Held,
    out: mpsc::Sender<Out>,
    seq: Arc<AtomicU64>,
    /// Each room's last `rseq` (by subject): the events of this node in it handed to the link.
    room_seqs: std::sync::Mutex<HashMap<String, u64>>,
    interest: Arc<Interest>,
    /// This node's places in the rooms' creator claims.
    places: Arc<Places>,
    /// The other nodes' people, by `<node>.<boot>`.
    peers: Arc<std::sync::Mutex<HashMap<String, Peer>>>,
    /// Cluster copies dropped because the queue was full.
    pub dropped: Arc<AtomicU64>,
    /// Whether the link to the broker is up, as last told to this node's people.
    link_up: Arc<AtomicBool>,
    /// Other nodes' events given up by the receivers' order (never arrived within the wait).
    given_up: Arc<AtomicU64>,
}

/// A room this node follows: the task forwarding its subscription, and since when.
#[derive(Debug)]
struct Followed {
    forward: tokio::task::JoinHandle<()>,
    since: SystemTime,
}

/// One origin's events in one room, as this node delivers them: in `rseq` order, each once.
#[derive(Debug, Default)]
struct Order {
    /// The last `rseq` delivered here (0: none yet; the first heard sets where this node
    /// starts, since it need not have followed the room from the origin's first event).
    last: u64,
    /// Events that arrived ahead of a missing one, by `rseq`.
    held: BTreeMap<u64, Wire>,
    /// Since when the first gap has been waited for (set while `held` is not empty).
    since: Option<Instant>,
    /// When an event was first dropped for `held` being full, since its gap last closed:
    /// the record that would have brought it again may have come and gone meanwhile, so the
    /// room is read again from the stream from then once the gap closes.
    dropped: Option<SystemTime>,
}

/// The events with an `rseq`, put in order per origin and room: each delivered once, in its
/// origin's order, however the stream or the live subscription had them. Apart from the link
/// so it can be tested without a broker.
#[derive(Debug, Default)]
struct Reorder {
    /// By the origin's node, its boot, then the room: looked up with the event's own fields,
    /// so taking an event allocates nothing once its origin and room have been heard from.
    orders: Orders,
    /// How many of `orders` hold events back.
    holding: usize,
    /// Events given up so far (`/metrics` and Prometheus).
    given_up: Arc<AtomicU64>,
    /// Rooms to read again from the stream, and from when: a gap closed in them behind
    /// which events were dropped ([`Order::dropped`]).
    rereads: Vec<(String, SystemTime)>,
}

/// Which order: the origin's node and boot, and the room (owned only on the rare paths that
/// must name several orders at once).
type OrderKey = (String, u64, String);

type Orders = HashMap<String, HashMap<u64, HashMap<String, Order>>>;

fn order<'o>(orders: &'o mut Orders, node: &str, boot: u64, room: &str) -> &'o mut Order {
    slot(slot(orders, node).entry(boot).or_default(), room)
}

/// What is to be delivered now, in order: usually just the event taken, which needs no
/// allocation; sometimes what it, or a gap given up, lets follow.
#[derive(Debug, Default)]
struct Ready {
    first: Option<Wire>,
    rest: Vec<Wire>,
}

impl Ready {
    fn extend(&mut self, more: Ready) {
        match (&self.first, more.first) {
            (None, first) => self.first = first,
            (Some(_), Some(w)) => self.rest.push(w),
            (Some(_), None) => {}
        }
        self.rest.extend(more.rest);
    }
}

impl IntoIterator for Ready {
    type Item = Wire;
    type IntoIter = std::iter::Chain<std::option::IntoIter<Wire>, std::vec::IntoIter<Wire>>;

    fn into_iter(self) -> Self::IntoIter {
        self.first.into_iter().chain(self.rest)
    }
}

/// `map[key]`, made empty first if missing; a borrowed key, so a hit allocates nothing.
fn slot<'m, V: Default>(map: &'m mut HashMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

impl Reorder {
    fn holding(&self) -> bool {
        self.holding > 0
    }

    /// Takes one event (its origin is its `node` and `boot`); returns what is to be
    /// delivered now, in order: nothing for a repeat or an event ahead of a missing one, else
    /// it and whatever it lets follow.
    fn accept(&mut self, w: Wire, now: Instant) -> Ready {
        let order = order(&mut self.orders, &w.node, w.boot, &w.room);
        if order.last == 0 {
            order.last = w.rseq - 1;
        }
        if w.rseq <= order.last || order.held.contains_key(&w.rseq) {
            return Ready::default();
        }
        if w.rseq > order.last + 1 {
            // Full: the origin's records bring this one again, in order, after the gap; or,
            // if its record came already, a read of the stream once the gap closes.
            if order.held.len() >= HELD_MAX {
                order.dropped.get_or_insert_with(SystemTime::now);
                return Ready::default();
            }
            if order.held.is_empty() {
                order.since = Some(now);
                self.holding += 1;
            }
            order.held.insert(w.rseq, w);
            return Ready::default();
        }
        order.last = w.rseq;
        let rest = if order.held.is_empty() {
            Vec::new()
        } else {
            Self::release(order, &mut self.holding, now)
        };
        if let Some(from) = order.dropped.take() {
            self.rereads.push((w.room.clone(), from));
        }
        Ready {
            first: Some(w),
            rest,
        }
    }

    /// What `order` holds that now follows on what was delivered, up to the next gap (whose
    /// wait then starts).
    fn release(order: &mut Order, holding: &mut usize, now: Instant) -> Vec<Wire> {
        let mut ready = Vec::new();
        while let Some(entry) = order.held.first_entry() {
            if *entry.key() != order.last + 1 {
                break;
            }
            order.last += 1;
            ready.push(entry.remove());
        }
        if order.held.is_empty() {
            order.since = None;
            *holding -= 1;
        } else if !ready.is_empty() {
            order.since = Some(now);
        }
        ready
    }

    /// The events missing ahead of what `key`'s order holds are given up: not stored in time
    /// (dropped by their sender), or dropped by the broker on the way here.
    fn give_up_gap(&mut self, key: &OrderKey, now: Instant) -> Ready {
        let (node, boot, room) = key;
        let Some(order) = (self.orders.get_mut(node))
            .and_then(|boots| boots.get_mut(boot))
            .and_then(|rooms| rooms.get_mut(room))
        else {
            return Ready::default();
        };
        let Some(&first) = order.held.keys().next() else {
            return Ready::default();
        };
        tracing::warn!(
            origin = %format_args!("{node}.{boot}"),
            %room,
            missing = first - order.last - 1,
            "cluster: events from another server never arrived; going on without them"
        );
        self.given_up.fetch_add(first - order.last - 1, Relaxed);
        order.last = first - 1;
        let rest = Self::release(order, &mut self.holding, now);
        if let Some(from) = order.dropped.take() {
            self.rereads.push((room.clone(), from));
        }
        Ready { first: None, rest }
    }

    /// Gives up every gap waited for since [`GAP_WAIT`] before `now`.
    fn give_up(&mut self, now: Instant) -> Ready {
        let mut expired: Vec<OrderKey> = Vec::new();
        for (node, boots) in &self.orders {
            for (&boot, rooms) in boots {
                for (room, order) in rooms {
                    if order
                        .since
                        .is_some_and(|t| now.duration_since(t) >= GAP_WAIT)
                    {
                        expired.push((node.clone(), boot, room.clone()));
                    }
                }
            }
        }
        let mut ready = Ready::default();
        for key in expired {
            ready.extend(self.give_up_gap(&key, now));
        }
        ready
    }

    fn every_order(&mut self) -> impl Iterator<Item = &mut Order> {
        self.orders
            .values_mut()
            .flat_map(HashMap::values_mut)
            .flat_map(HashMap::values_mut)
    }

    /// Every open gap waits [`GAP_WAIT`] from `now` (the link is back: what fills it can come).
    fn wait_anew(&mut self, now: Instant) {
        for order in self.every_order() {
            if order.since.is_some() {
                order.since = Some(now);
            }
        }
    }

    /// Whether this node has delivered `room`'s events from `node`'s `boot` up to `rseq`.
    fn through(&self, node: &str, boot: u64, room: &str, rseq: u64) -> bool {
        let last = self
            .orders
            .get(node)
            .and_then(|boots| boots.get(&boot))
            .and_then(|rooms| rooms.get(room))
            .map_or(0, |order| order.last);
        last > 0 && last >= rseq
    }

    /// Notes that the events of `node`'s boot `boot` in `room` up to `rseq` are delivered
    /// (read from the stream for the room's history): none of them is delivered again, and
    /// the next one expected is the one after.
    fn had(&mut self, node: &str, boot: u64, room: &str, rseq: u64) {
        let order = order(&mut self.orders, node, boot, room);
        order.last = order.last.max(rseq);
        let was_holding = !order.held.is_empty();
        order.held.retain(|&k, _| k > order.last);
        if was_holding && order.held.is_empty() {
            order.since = None;
            self.holding -= 1;
        }
    }

    /// Forgets the rooms `keep` says no to: followed again, a room starts afresh.
    fn retain_rooms(&mut self, keep: impl Fn(&str) -> bool) {
        let holding = &mut self.holding;
        for boots in self.orders.values_mut() {
            for rooms in boots.values_mut() {
                rooms.retain(|room, order| {
                    let kept = keep(room);
                    if !kept && !order.held.is_empty() {
                        *holding -= 1;
                    }
                    kept
                });
            }
            boots.retain(|_, rooms| !rooms.is_empty());
        }
        self.orders.retain(|_, boots| !boots.is_empty());
    }
}

/// An event for the stream, waiting for its acknowledgement.
#[derive(Debug)]
struct Stored {
    subject: String,
    body: Bytes,
    /// Its `Nats-Msg-Id`.
    id: String,
    /// When its first event was said: the duplicate window counts from here.
    queued: Instant,
    /// Answered (an empty message each) once the stream has it and all before it, or they
    /// are given up: the nodes that asked for this node's records of a room before reading
    /// the stream ([`FLUSH`]). The publisher answers, so an ask costs no task and no wait in
    /// the link.
    replies: Vec<async_nats::Subject>,
}

impl Stored {
    /// Nothing to store, only `reply` to answer once everything handed to the publisher
    /// before it is in the stream: an ask for a room whose record was written already.
    fn ask(reply: async_nats::Subject) -> Stored {
        Stored {
            subject: String::new(),
            body: Bytes::new(),
            id: String::new(),
            queued: Instant::now(),
            replies: vec![reply],
        }
    }

    fn is_ask(&self) -> bool {
        self.subject.is_empty()
    }

    /// The stream has it, or it is given up: whoever asked is answered.
    async fn done(self, client: &async_nats::Client) {
        for reply in self.replies {
            // A core publish only queues in the client: it never waits for the broker.
            let _ = client.publish(reply, Bytes::new()).await;
        }
    }
}

/// The task half: publishes the queue and receives the other nodes' messages.
#[derive(Debug)]
pub struct Link {
    js: jetstream::Context,
    /// The cluster's count of events not relayed.
    dropped: Arc<AtomicU64>,
    /// The cluster's view of whether the link is up.
    link_up: Arc<AtomicBool>,
    /// The last `seq` delivered here per origin (`<node>.<boot>`) and room: what a repeat
    /// (a publish retried, a catch-up overlapping live delivery) is told apart by.
    marks: HashMap<(String, String), u64>,
    /// Events with an `rseq`, put in order per origin and room.
    reorder: Reorder,
    client: async_nats::Client,
    nodes: kv::Store,
    /// Each room's state beyond the stream's reach ([`STATES`]).
    states: kv::Store,
    /// What the rooms' subscriptions receive, in one queue (each room's in its order).
    incoming: mpsc::Receiver<async_nats::Message>,
    incoming_tx: mpsc::Sender<async_nats::Message>,
    /// One forwarding task per room this node has members in.
    rooms: HashMap<String, Followed>,
    /// A room subject made from a live one, to look it up in `rooms` without allocating.
    scratch: String,
    /// Messages a room's history holds here (`--history-retain`): what is read of a room
    /// from the stream when this node starts following it.
    keep: usize,
    interest: Arc<Interest>,
    peers: Arc<std::sync::Mutex<HashMap<String, Peer>>>,
    /// Whether the liveness task has read the other nodes' entries once: until then `peers`
    /// is empty whether or not there are others, and an ask for records would ask nobody.
    peers_read: Arc<tokio::sync::watch::Sender<bool>>,
    seq: Arc<AtomicU64>,
    nicks: kv::Store,
    held: Held,
    node: Arc<str>,
    boot: u64,
    out: mpsc::Receiver<Out>,
    /// This node's events told live and not yet written to the stream, by room subject.
    records: HashMap<String, Record>,
    /// When the oldest of them is to be written ([`RECORD_EVERY`] after it was said).
    record_due: Option<Instant>,
    /// The client's connection events (a handful at a time: one per drop and return).
    events: mpsc::Receiver<async_nats::Event>,
    places: Arc<Places>,
}

/// Connects to the broker and opens (or creates) the nickname bucket.
pub async fn connect(settings: &Settings) -> Result<(Arc<Cluster>, Link), Error> {
    let (events_tx, events) = mpsc::channel(16);
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("linechat {}", settings.node))
        .no_echo()
        // A path that silently drops everything (a cut cable, a firewall) shows no error;
        // unanswered pings are what notice it: a few of these, not the default minute.
        .ping_interval(PING_EVERY)
        .event_callback(move |event| {
            let tx = events_tx.clone();
            // Full only if the link task is stuck, and then a lost event changes nothing.
            async move {
                let _ = tx.try_send(event);
            }
        });
    if let Some(path) = &settings.creds {
        options = options
            .credentials_file(path)
            .await
            .map_err(|error| Error::Creds {
                path: path.clone(),
                error,
            })?;
    }
    let urls = settings.urls.join(",");
    let addrs: Vec<async_nats::ServerAddr> = settings
        .urls
        .iter()
        .map(|u| u.parse())
        .collect::<Result<_, _>>()
        .map_err(|e: std::io::Error| Error::Broker(format!("{urls}: {e}")))?;
    let client = options
        .connect(addrs)
        .await
        .map_err(|e| Error::Connect(urls.clone(), e))?;
    let js = jetstream::new(client.clone());
    let open = |name| {
        let (js, urls) = (&js, &urls);
        async move {
            bucket(js, name)
                .await
                .map_err(|e| Error::JetStream(urls.clone(), e))
        }
    };
    let (nicks, nodes) = (open(NICKS).await?, open(NODES).await?);
    let (rooms, states) = (open(ROOMS_BUCKET).await?, open(STATES).await?);
    js.get_or_create_stream(stream::Config {
        name: STREAM.to_owned(),
        subjects: vec![format!("{ROOMS}.>")],
        max_messages_per_subject: KEPT_PER_ROOM,
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .map_err(|e| Error::JetStream(urls.clone(), e.to_string()))?;
    let (incoming_tx, incoming) = mpsc::channel(QUEUE);
    // This node's own subject, followed before anyone is let in and confirmed by the flush's
    // round trip, so a private message sent to someone here from the moment they are listed
    // arrives.
    let private = client
        .subscribe(token_subject(NODES_SUBJECT, &settings.node))
        .await
        .map_err(|e| Error::Broker(e.to_string()))?;
    client
        .flush()
        .await
        .map_err(|e| Error::Broker(e.to_string()))?;
    let asks = client
        .subscribe(format!("{FLUSH}.>"))
        .await
        .map_err(|e| Error::Broker(e.to_string()))?;
    let mut private = futures_util::stream::select(private, asks);
    let forward = incoming_tx.clone();
    tokio::spawn(async move {
        while let Some(msg) = private.next().await {
            if forward.send(msg).await.is_err() {
                break;
            }
        }
    });
    let (tx, rx) = mpsc::channel(QUEUE);
    let node: Arc<str> = settings.node.as_str().into();
    let boot = boot_id();
    let interest = Arc::new(Interest::default());
    let peers = Arc::<std::sync::Mutex<HashMap<String, Peer>>>::default();
    let seq = Arc::<AtomicU64>::default();
    let held = Held::default();
    let places = Arc::new(Places {
        client: client.clone(),
        rooms,
        nodes: nodes.clone(),
        me: format!("{node}.{boot}"),
        node: node.clone(),
        boot,
        interest: interest.clone(),
        listed: Default::default(),
        confirmed: Default::default(),
        busy: Default::default(),
        beating: tokio::sync::watch::Sender::new(false),
    });
    let cluster = Arc::new(Cluster {
        node: node.clone(),
        boot,
        client: client.clone(),
        nicks: nicks.clone(),
        held: held.clone(),
        out: tx,
        seq: seq.clone(),
        room_seqs: Default::default(),
        interest: interest.clone(),
        places: places.clone(),
        peers: peers.clone(),
        dropped: Arc::default(),
        link_up: Arc::new(AtomicBool::new(true)),
        given_up: Arc::default(),
    });
    let link = Link {
        dropped: cluster.dropped.clone(),
        link_up: cluster.link_up.clone(),
        js,
        marks: HashMap::new(),
        reorder: Reorder {
            given_up: cluster.given_up.clone(),
            ..Reorder::default()
        },
        client,
        nodes,
        states,
        incoming,
        incoming_tx,
        rooms: HashMap::new(),
        scratch: String::new(),
        keep: 0,
        interest,
        peers,
        peers_read: Arc::new(tokio::sync::watch::Sender::new(false)),
        seq,
        nicks,
        held,
        node,
        boot,
        out: rx,
        records: HashMap::new(),
        record_due: None,
        events,
        places,
    };
    Ok((cluster, link))
}

/// The KV bucket `name`, made if missing. Its stream is made by hand, as the KV client would
/// make it: the client's `create_key_value` reads the account's figures first, whose reply
/// from nats-server 2.9 lacks fields the client requires.
async fn bucket(js: &jetstream::Context, name: &str) -> Result<kv::Store, String> {
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    js.get_key_value(name).await.map_err(|e| e.to_string())
}

/// A number that differs between two starts of the same node, so nothing from a previous life
/// is taken for this one's.
fn boot_id() -> u64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32)
}

/// A KV key for a nickname: its lower-case key in hex, since KV keys cannot hold IRC's
/// `[]\^{}|` and backquote.
fn nick_subject_key(nick: &str) -> String {
    nick_key(nick).bytes().map(|b| format!("{b:02x}")).collect()
}

/// A room's subject: the room key is letters, digits, `_`, `-` and `.`; a `.` would split the
/// subject into tokens, so it is written `_2e` (and `_` as `__`, so no two rooms meet).
fn room_subject(room: &str) -> String {
    token_subject(ROOMS, room)
}

/// The last token of a room's subject (`dev`, `a_2eb`): the key of the room's entries in
/// the KV buckets ([`ROOMS_BUCKET`], [`STATES`]).
fn subject_token(subject: &str) -> &str {
    subject
        .strip_prefix(ROOMS)
        .and_then(|t| t.strip_prefix('.'))
        .unwrap_or(subject)
}

/// The room (its key) a room subject is for: [`room_subject`] undone.
fn subject_room(subject: &str) -> Option<String> {
    let token = subject.strip_prefix(ROOMS)?.strip_prefix('.')?;
    let mut room = String::with_capacity(token.len());
    let mut rest = token;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("_2e") {
            room.push('.');
            rest = after;
        } else if let Some(after) = rest.strip_prefix("__") {
            room.push('_');
            rest = after;
        } else {
            room.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    Some(room)
}

/// `prefix.<name>`, the name lower-cased and written as one token (see [`room_subject`]).
fn token_subject(prefix: &str, name: &str) -> String {
    let key = name.to_ascii_lowercase();
    let mut s = String::with_capacity(prefix.len() + 1 + key.len());
    s.push_str(prefix);
    s.push('.');
    for c in key.chars() {
        match c {
            '.' => s.push_str("_2e"),
            '_' => s.push_str("__"),
            c => s.push(c),
        }
    }
    s
}

impl Cluster {
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Claims `nick` across the cluster for `member`. `Ok(false)`: someone on some node has
    /// it. A claim whose answer is lost (the bound passed) may still reach the broker: it is
    /// released, by its whole value, so it cannot stay held by nobody.
    pub async fn claim(&self, nick: &str, member: MemberId) -> Result<bool, Error> {
        // While the link is down the client keeps what it is asked to send and sends it once
        // back: a claim given up on would then be made after all, and held by nobody.
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(Error::Down);
        }
        let key = nick_subject_key(nick);
        let value = claim_value(&self.node, self.boot, member);
        let created = self.nicks.create(&key, Bytes::from(value.clone()));
        match tokio::time::timeout(CLAIM_TIMEOUT, created).await {
            Err(_) => {
                self.queue_release(key, value);
                Err(Error::Timeout)
            }
            Ok(Ok(_)) => {
                lock(&self.held).insert(key, (nick.to_owned(), value));
                Ok(true)
            }
            Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Ok(Err(e)) => Err(Error::Broker(e.to_string())),
        }
    }

    /// Gives back `member`'s claim of `nick` (the local hub refused the name, or they left).
    pub fn release(&self, nick: &str, member: MemberId) {
        let (key, value) = self.forget(nick, member);
        self.queue_release(key, value);
    }

    /// The claim of `nick` by `member` taken out of [`Held`]: its key and value.
    fn forget(&self, nick: &str, member: MemberId) -> (String, String) {
        let key = nick_subject_key(nick);
        let value = claim_value(&self.node, self.boot, member);
        let mut held = lock(&self.held);
        if held.get(&key).is_some_and(|(_, v)| *v == value) {
            held.remove(&key);
        }
        (key, value)
    }

    fn queue_release(&self, key: String, value: String) {
        if self.out.try_send(Out::Release(key, value)).is_err() {
            self.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Gives back a name `member` no longer uses (renamed away from) before returning, at
    /// most [`CLAIM_TIMEOUT`]; if the broker fails it now, the release is queued for the
    /// link to try again.
    pub async fn release_now(&self, nick: &str, member: MemberId) {
        let (key, value) = self.forget(nick, member);
        let released =
            tokio::time::timeout(CLAIM_TIMEOUT, release_claim(&self.nicks, &key, &value)).await;
        if !matches!(released, Ok(Ok(()))) {
            tracing::debug!(?released, "cluster: a release waits for the link");
            self.queue_release(key, value);
        }
    }

    /// Everyone on the other nodes (node name, person), as their last heartbeats and the
    /// arrivals and departures heard since say.
    pub fn people(&self) -> Vec<(String, Person)> {
        let peers = lock(&self.peers);
        peers
            .values()
            .flat_map(|p| {
                p.people
                    .values()
                    .map(|person| (p.node.clone(), person.clone()))
            })
            .collect()
    }

    /// The person another node lists as `nick` (case-blind), with that node's name: one
    /// keyed lookup per node, not a copy of everyone.
    pub fn person(&self, nick: &str) -> Option<(String, Person)> {
        let key = nick_key(nick);
        lock(&self.peers).values().find_map(|p| {
            p.people
                .get(&key)
                .map(|person| (p.node.clone(), person.clone()))
        })
    }

    /// Sends `kind` from `from` (someone here) to `to` on whichever other node lists them;
    /// the recipient's nickname as listed, or `None` when no node lists anyone called `to`.
    /// A message, action or notice, or an invitation (`text`: the room).
    pub fn private(&self, from: &Identity, to: &str, kind: &Kind) -> Option<String> {
        let (kind, text) = match kind {
            Kind::Message(t) => ("msg", &**t),
            Kind::Action(t) => ("act", &**t),
            Kind::Notice(t) => ("note", &**t),
            Kind::Invited(room) => ("invite", &**room),
            _ => return None,
        };
        let (node, Person { nick, .. }) = self.person(to)?;
        let wire = Wire {
            node: self.node.to_string(),
            boot: self.boot,
            seq: self.seq.fetch_add(1, Relaxed) + 1,
            rseq: 0,
            room: String::new(),
            nick: from.nick.to_string(),
            kind: kind.to_owned(),
            text: text.to_string(),
            reason: String::new(),
            to: nick.clone(),
            at_ms: ms_since_epoch(SystemTime::now()),
            at_us: 0,
            clock: 0,
        };
        let body = serde_json::to_vec(&wire).ok()?;
        let subject = token_subject(NODES_SUBJECT, &node);
        if self
            .out
            .try_send(Out::Publish(subject, body.into()))
            .is_err()
        {
            self.dropped.fetch_add(1, Relaxed);
        }
        Some(nick)
    }

    /// Makes sure the room called `room` is followed here and its history read from the
    /// stream before `member` enters it, waiting at most [`LOAD_WAIT`]: at once when the
    /// room is followed already. Meanwhile, for a room nobody here is in, the room's claim
    /// (`lc_rooms`) says whether anyone on another node is, for the hub to tell whether
    /// `member` is its creator ([`Relay::creator`]). The room stays followed while the
    /// [`Hold`] lives; it is to be dropped once the person is in the room (or the entry
    /// failed).
    pub async fn prepare(&self, room: &str, member: MemberId) -> Option<Hold> {
        let (name, key) = crate::core::names::room_name(room).ok()?;
        let subject = room_subject(name);
        let waiter = {
            let mut loads = lock(&self.interest.loads);
            *loads.held.entry(subject.clone()).or_default() += 1;
            (!loads.ready.contains(&subject)).then(|| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                loads.waiting.entry(subject.clone()).or_default().push(tx);
                rx
            })
        };
        let mut hold = Hold {
            interest: self.interest.clone(),
            subject,
            member,
            loaded: true,
        };
        // The lobby has no operators: nothing to claim.
        let claim = async {
            match key == crate::core::room::LOBBY {
                true => None,
                false => self.places.claim(&hold.subject, member).await,
            }
        };
        let load = async {
            match waiter {
                Some(rx) => {
                    self.interest.changed.notify_one();
                    matches!(tokio::time::timeout(LOAD_WAIT, rx).await, Ok(Ok(true)))
                }
                None => true,
            }
        };
        let (creator, loaded) = tokio::join!(claim, load);
        hold.loaded = loaded;
        if let Some(creator) = creator {
            let key = (hold.subject.clone(), member);
            lock(&self.interest.loads).creators.insert(key, creator);
        }
        Some(hold)
    }

    /// How many other nodes this node hears from.
    pub fn peers(&self) -> usize {
        lock(&self.peers).len()
    }

    /// How many people each other node has, by node name, in name order.
    pub fn people_by_node(&self) -> Vec<(String, usize)> {
        let mut counts: Vec<(String, usize)> = Vec::new();
        for (node, _) in self.people() {
            match counts.iter_mut().find(|(n, _)| *n == node) {
                Some((_, count)) => *count += 1,
                None => counts.push((node, 1)),
            }
        }
        counts.sort();
        counts
    }

    /// Whether the link to the broker is up (as this node's people were last told).
    pub fn link_up(&self) -> bool {
        self.link_up.load(Relaxed)
    }

    /// Other nodes' events this node gave up waiting for (a gap in an origin's order).
    pub fn given_up(&self) -> u64 {
        self.given_up.load(Relaxed)
    }

    /// The relay the hub hands local room events and departures to.
    pub fn relay(self: &Arc<Self>) -> Box<dyn Relay> {
        Box::new(Outbound(self.clone()))
    }
}

#[derive(Debug)]
struct Outbound(Arc<Cluster>);

impl Relay for Outbound {
    fn said(&self, room: &Arc<str>, event: &Arc<Event>) {
        let (kind, text, reason) = match &event.kind {
            Kind::Message(t) => ("msg", &**t, ""),
            Kind::Action(t) => ("act", &**t, ""),
            Kind::Notice(t) => ("note", &**t, ""),
            Kind::Joined => ("join", "", ""),
            Kind::Entered => ("enter", "", ""),
            Kind::Parted(why) => ("part", why.as_deref().unwrap_or_default(), ""),
            Kind::Left(reason, why) => ("left", why.as_deref().unwrap_or_default(), reason.label()),
            Kind::Nick(new) => ("nick", &*new.nick, ""),
            Kind::Kicked { who, reason } => {
                ("kick", &*who.nick, reason.as_deref().unwrap_or_default())
            }
            _ => return,
        };
        self.publish(room, event, kind, text, reason, 0);
    }

    fn changed(&self, room: &Arc<str>, event: &Arc<Event>, clock: u64) {
        match &event.kind {
            Kind::Topic(text) => self.publish(room, event, "topic", text, "", clock),
            Kind::Mode(changes) => {
                let flags = flags_text(changes);
                if !flags.is_empty() {
                    self.publish(room, event, "mode", &flags, "", clock);
                }
                for change in changes.iter() {
                    let Some(text) = named_text(change) else {
                        continue;
                    };
                    // A member's standing is theirs: their node applies it, the others tell
                    // it. Bans and mutes are the room's, like its flags.
                    let kind = match change {
                        Mode::Ban(..) | Mode::Mute(..) => "list",
                        _ => "standing",
                    };
                    self.publish(room, event, kind, &text, "", clock);
                }
            }
            _ => {}
        }
    }

    fn elsewhere(&self, room: &Arc<str>) -> bool {
        lock(&self.0.peers).values().any(|p| {
            p.people
                .values()
                .any(|person| person.rooms.iter().any(|r| r.eq_ignore_ascii_case(room)))
        })
    }

    fn creator(&self, room: &Arc<str>, member: MemberId) -> Option<bool> {
        let key = (room_subject(room), member);
        lock(&self.0.interest.loads).creators.get(&key).copied()
    }

    fn left(&self, identity: &Arc<Identity>) {
        self.0.release(&identity.nick, identity.id);
    }

    /// Every other node is told on its own subject, so the nodes that follow none of the
    /// person's rooms list the new name at once too, not at the next heartbeat. Core NATS,
    /// not kept: one lost in an outage is the next heartbeat's to correct.
    fn renamed(&self, event: &Arc<Event>) {
        if let Kind::Nick(new) = &event.kind {
            self.tell_nodes(event, "nick", &new.nick);
        }
    }

    /// Told node-wide like a rename, for WHOIS, WHO and PRIVMSG's 301 everywhere.
    fn away(&self, event: &Arc<Event>) {
        let Kind::Away(message) = &event.kind else {
            return;
        };
        self.tell_nodes(event, "away", message.as_deref().unwrap_or_default());
    }

    fn interest(&self, room: &Arc<str>, here: bool) {
        let interest = &self.0.interest;
        let subject = room_subject(room);
        let mut wanted = interest.wanted.lock().unwrap_or_else(|e| e.into_inner());
        if here {
            wanted.insert(subject);
        } else {
            wanted.remove(&subject);
        }
        interest.changed.notify_one();
        interest.places.notify_one();
    }
}

impl Outbound {
    /// Tells every other node, on its own subject, what `event` changes in this node's
    /// list of people (`kind`, `text`).
    fn tell_nodes(&self, event: &Arc<Event>, kind: &str, text: &str) {
        let c = &self.0;
        let nodes: HashSet<String> = lock(&c.peers).values().map(|p| p.node.clone()).collect();
        for node in nodes {
            let wire = Wire {
                node: c.node.to_string(),
                boot: c.boot,
                seq: c.seq.fetch_add(1, Relaxed) + 1,
                rseq: 0,
                room: String::new(),
                nick: event.nick().to_owned(),
                kind: kind.to_owned(),
                text: text.to_owned(),
                reason: String::new(),
                to: String::new(),
                at_ms: ms_since_epoch(event.at),
                at_us: 0,
                clock: 0,
            };
            let Ok(body) = serde_json::to_vec(&wire) else {
                return;
            };
            let subject = token_subject(NODES_SUBJECT, &node);
            if c.out.try_send(Out::Publish(subject, body.into())).is_err() {
                c.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Numbers a room event and queues it for the stream, or counts it dropped.
    fn publish(
        &self,
        room: &Arc<str>,
        event: &Arc<Event>,
        kind: &str,
        text: &str,
        reason: &str,
        clock: u64,
    ) {
        let c = &self.0;
        let seq = c.seq.fetch_add(1, Relaxed) + 1;
        let subject = room_subject(room);
        // Held until the event is in the queue, so only what the link was handed is numbered:
        // a copy dropped here leaves no gap for the receivers to wait on.
        let mut room_seqs = lock(&c.room_seqs);
        let rseq = room_seqs.get(&subject).copied().unwrap_or(0) + 1;
        let wire = Wire {
            node: c.node.to_string(),
            boot: c.boot,
            seq,
            rseq,
            room: room.to_string(),
            nick: event.nick().to_owned(),
            kind: kind.to_owned(),
            text: text.to_owned(),
            reason: reason.to_owned(),
            to: String::new(),
            at_ms: ms_since_epoch(event.at),
            at_us: us_within_ms(event.at),
            clock,
        };
        let Ok(body) = serde_json::to_vec(&wire) else {
            return;
        };
        let said = Said {
            subject: subject.clone(),
            room: room.clone(),
            body: body.into(),
            seq,
            rseq,
            now: !wire.is_message(),
            state: wire.changes_state() && wire.kind != "standing",
        };
        if c.out.try_send(Out::Store(said)).is_ok() {
            room_seqs.insert(subject, rseq);
        } else {
            c.dropped.fetch_add(1, Relaxed);
        }
    }
}

impl Link {
    /// Reads up to `keep` messages of a room's history from the stream when this node starts
    /// following it (the hub's `--history-retain`); 0, the default, reads none.
    pub fn with_history(mut self, keep: usize) -> Self {
        self.keep = keep;
        self
    }

    /// Publishes what this node's people do and hands what the others' do to `deliver`,
    /// until `stop`. `people` lists this node's people for its heartbeats.
    pub async fn run(
        mut self,
        deliver: Arc<dyn Fn(Incoming) + Send + Sync>,
        people: Arc<dyn Fn() -> Vec<Person> + Send + Sync>,
        stop: CancellationToken,
    ) {
        let owner = format!("{}:{}", self.node, self.boot);
        let liveness = tokio::spawn(liveness(
            Beats {
                nodes: self.nodes.clone(),
                nicks: self.nicks.clone(),
                held: self.held.clone(),
                me: format!("{}.{}", self.node, self.boot),
                seq: self.seq.clone(),
                people,
                peers: self.peers.clone(),
                peers_read: self.peers_read.clone(),
                deliver: deliver.clone(),
                places: self.places.clone(),
            },
            stop.clone(),
        ));
        let places = tokio::spawn(keep_places(self.places.clone(), stop.clone()));
        let (stored_tx, stored_rx) = mpsc::channel(UNACKED);
        let publisher = tokio::spawn(publish_stored(
            self.js.clone(),
            stored_rx,
            stop.clone(),
            self.dropped.clone(),
        ));
        let mut stored = Some(stored_tx);
        // The client reconnects by itself, with backoff, and subscribes again; this only says
        // so, once each way (the client reports every failed attempt as another disconnect).
        let mut up = true;
        let mut down_at = SystemTime::now();
        let mut gap_tick = tokio::time::interval(GAP_TICK);
        gap_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                // Not while the link is down: what fills a gap then comes with the catch-up.
                _ = gap_tick.tick(), if up && self.reorder.holding() => {
                    for w in self.reorder.give_up(Instant::now()) {
                        self.hand(w, &*deliver);
                    }
                    self.reread(&*deliver).await;
                }
                out = self.out.recv() => match out {
                    None => break,
                    Some(out) => self.send(out, &owner, stored.as_ref()).await,
                },
                () = wait_until(self.record_due) => self.write_records(&owner, stored.as_ref()),
                () = self.interest.changed.notified() => self.follow(&*deliver).await,
                Some(event) = self.events.recv() => {
                    let now = match event {
                        async_nats::Event::Connected => true,
                        async_nats::Event::Disconnected => false,
                        _ => up,
                    };
                    if now != up {
                        up = now;
                        self.link_up.store(up, Relaxed);
                        if up {
                            // The client reports the connection before it has subscribed
                            // again; a round trip behind those subscriptions makes "back"
                            // mean that what others say from now on arrives.
                            let _ = tokio::time::timeout(CLAIM_TIMEOUT, self.client.flush()).await;
                            tracing::info!("cluster: the link to the broker is back");
                            deliver(Incoming::Link(up));
                            // What the rooms' subscriptions missed meanwhile is in the stream;
                            // what arrives live meanwhile waits in the queue, and repeats of
                            // either are dropped by the marks.
                            self.catch_up(down_at, &*deliver).await;
                            // A gap still open was waited for while nothing could fill it.
                            self.reorder.wait_anew(Instant::now());
                        } else {
                            down_at = SystemTime::now();
                            tracing::warn!("cluster: the link to the broker is down; chat goes on on this server");
                            deliver(Incoming::Link(up));
                        }
                    }
                }
                msg = self.incoming.recv() => match msg {
                    None => break,
                    Some(msg) if msg.subject.starts_with(FLUSH) => {
                        self.flush_asked(msg, &owner, stored.as_ref()).await;
                    }
                    // Forwarded before its room was given up (the forwarding task is gone,
                    // what it queued is not): nobody here is in the room any more, and its
                    // events would reach the hub's copy of it out of any order.
                    Some(msg) if !self.following(&msg.subject) => {}
                    Some(msg) => {
                        self.receive(&msg.subject, &msg.payload, &*deliver);
                        self.reread(&*deliver).await;
                    }
                },
            }
        }
        // What was said last, and the names of those who left, still go out before the
        // server stops: the sessions have ended by now, so the queue no longer grows.
        while let Ok(out) = self.out.try_recv() {
            self.send(out, &owner, stored.as_ref()).await;
        }
        self.write_records(&owner, stored.as_ref());
        // The publisher sends what it holds (one try each now that `stop` is set) and ends.
        drop(stored.take());
        let _ = tokio::time::timeout(CLAIM_TIMEOUT, publisher).await;
        let _ = liveness.await;
        let _ = places.await;
        // Leaving on purpose: this node's entry goes at once, not after DEAD_AFTER.
        let _ = self
            .nodes
            .delete(format!("{}.{}", self.node, self.boot))
            .await;
        let _ = self.client.flush().await;
    }

    /// Subscribes to the rooms the hub wants (or someone about to enter holds) and not yet
    /// followed, reads the history of each newly followed one from the stream, and drops
    /// those no longer wanted.
    async fn follow(&mut self, deliver: &(dyn Fn(Incoming) + Send + Sync)) {
        let mut wanted = self
            .interest
            .wanted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // The rooms to read from the stream: those followed from now on, and those someone
        // waits for whose first read failed.
        let mut new = Vec::new();
        let retry: Vec<String> = {
            let mut loads = lock(&self.interest.loads);
            wanted.extend(loads.held.keys().cloned());
            // A room no longer followed is read again when it is followed again: what was
            // said in it meanwhile did not reach this node.
            loads.ready.retain(|subject| wanted.contains(subject));
            let Loads { ready, waiting, .. } = &*loads;
            waiting
                .keys()
                .filter(|s| !ready.contains(*s) && wanted.contains(*s))
                .cloned()
                .collect()
        };
        // Aborting a forwarding task drops its subscriber, which unsubscribes.
        self.rooms.retain(|subject, followed| {
            let keep = wanted.contains(subject);
            if !keep {
                followed.forward.abort();
            }
            keep
        });
        // A room followed again starts where its events are then: what was said meanwhile
        // is no gap to wait for.
        self.reorder
            .retain_rooms(|room| wanted.contains(&room_subject(room)));
        for subject in wanted {
            if self.rooms.contains_key(&subject) {
                continue;
            }
            match self.subscribe_room(&subject).await {
                Ok(mut sub) => {
                    let tx = self.incoming_tx.clone();
                    let forward = tokio::spawn(async move {
                        while let Some(msg) = sub.next().await {
                            if tx.send(msg).await.is_err() {
                                break;
                            }
                        }
                    });
                    let since = SystemTime::now();
                    self.rooms
                        .insert(subject.clone(), Followed { forward, since });
                    new.push(subject);
                }
                Err(e) => {
                    tracing::warn!(error = %e, %subject, "cluster: cannot follow a room")
                }
            }
        }
        for subject in retry {
            if self.rooms.contains_key(&subject) && !new.contains(&subject) {
                new.push(subject);
            }
        }
        if new.is_empty() {
            return;
        }
        // The subscriptions are in at the broker before the stream is read: what is published
        // from then on arrives live (and is dropped by the marks if the read had it), what was
        // published before is in the stream. So nothing said around the first arrival here
        // falls between the two.
        let flushed = matches!(
            tokio::time::timeout(LOAD_WAIT, self.client.flush()).await,
            Ok(Ok(()))
        );
        let reads = match flushed {
            true => {
                self.ask_records(&new).await;
                self.load_all(&new, deliver).await
            }
            false => vec![Err("the broker did not answer".to_owned()); new.len()],
        };
        for (subject, read) in new.into_iter().zip(reads) {
            if let Err(e) = &read {
                tracing::warn!(error = %e, %subject, "cluster: a room's history was not read from the stream");
            }
            let waiting = {
                let mut loads = lock(&self.interest.loads);
                if read.is_ok() {
                    loads.ready.insert(subject.clone());
                }
                loads.waiting.remove(&subject).unwrap_or_default()
            };
            for tx in waiting {
                let _ = tx.send(read.is_ok());
            }
        }
    }

    /// Whether a message on `subject` is for this node now: a room's, live or recorded, only
    /// while the room is followed; anything else (its own `lc.node.<N>`) always.
    fn following(&mut self, subject: &str) -> bool {
        if let Some(token) = subject.strip_prefix(LIVE) {
            self.scratch.clear();
            self.scratch.push_str(ROOMS);
            self.scratch.push_str(token);
            return self.rooms.contains_key(&self.scratch);
        }
        !subject.starts_with(ROOMS) || self.rooms.contains_key(subject)
    }

    /// Both of a room's subjects, as one: its events live, and its records as they are
    /// written, which bring what a live copy lost (a reconnect, the client's buffer) within
    /// [`RECORD_EVERY`] and an acknowledgement.
    async fn subscribe_room(
        &self,
        subject: &str,
    ) -> Result<impl futures_util::Stream<Item = async_nats::Message>, async_nats::SubscribeError>
    {
        let live = format!("{LIVE}{}", &subject[ROOMS.len()..]);
        let live = self.client.subscribe(live).await?;
        let records = self.client.subscribe(subject.to_owned()).await?;
        Ok(futures_util::stream::select(live, records))
    }

    /// Reads the rooms on `subjects` from the stream, each its newest records as far back as
    /// its last [`Link::keep`] messages need ([`read_room`]), and hands those messages to the
    /// room's history here, oldest first, with its state: the changes kept in [`STATES`] and
    /// those the records read hold. Every other node's event read sets where its origin
    /// stands in the room, so none is delivered again live or by a catch-up; nothing older
    /// can be either (docs/CLUSTER.md, "Scrollback and /history"). The reads go at once,
    /// each bounded by [`LOAD_WAIT`]: a broker slow to answer costs the link, which delivers
    /// nothing meanwhile, one wait, not one per room of a JOIN. Each read is taken in turn
    /// once all are done, before anything that arrived live meanwhile; how many events each
    /// held.
    async fn load_all(
        &mut self,
        subjects: &[String],
        deliver: &(dyn Fn(Incoming) + Send + Sync),
    ) -> Vec<Result<usize, String>> {
        let reads = futures_util::future::join_all(subjects.iter().map(|subject| {
            let read = read_room(&self.js, &self.states, subject, self.keep);
            async move {
                let started = Instant::now();
                match tokio::time::timeout(LOAD_WAIT, read).await {
                    Ok(read) => read.map(|room| (room, started.elapsed())),
                    Err(_) => Err("timed out".to_owned()),
                }
            }
        }))
        .await;
        subjects
            .iter()
            .zip(reads)
            .map(|(subject, read)| {
                read.map(|(room, took)| self.take_read(subject, room, took, deliver))
            })
            .collect()
    }

    /// Takes one room's read ([`Link::load_all`]); how many events it held.
    fn take_read(
        &mut self,
        subject: &str,
        room: RoomRead,
        took: Duration,
        deliver: &(dyn Fn(Incoming) + Send + Sync),
    ) -> usize {
        tracing::debug!(
            %subject,
            records = room.records,
            read = room.read,
            probes = room.probes,
            events = room.events.len(),
            ?took,
            "cluster: read a room from the stream"
        );
        let RoomRead {
            events: mut read,
            records,
            state,
            ..
        } = room;
        let n = read.len();
        // Each origin's records are in its order; between origins, the order said in.
        read.sort_by_key(|w| (w.at_ms, w.at_us));
        let mut kept = std::collections::VecDeque::with_capacity(self.keep.min(n));
        let mut changes: Vec<Remote> = Vec::new();
        // What the records hold that the state entry lacks (its origin's write failed, or
        // came from a node of before the entry) is merged into it from here.
        let mut entry = RoomState::default();
        for w in &state {
            entry.take(w);
        }
        let mut lacking = Vec::new();
        for w in read {
            self.had(&w);
            self.heard_read(&w);
            // A standing is a member's, given while they were in the room: none is here yet.
            if w.changes_state() {
                if w.kind != "standing" {
                    if entry.take(&w) {
                        lacking.push(w.clone());
                    }
                    changes.extend(w.into_remote());
                }
                continue;
            }
            if !w.is_message() || self.keep == 0 {
                continue;
            }
            if kept.len() == self.keep {
                kept.pop_front();
            }
            kept.push_back(w);
        }
        self.keep_changes(subject, lacking);
        // Taken by their stamps, so what the entry and the records both hold is taken once.
        let known = !state.is_empty();
        changes.extend(state.into_iter().filter_map(Wire::into_remote));
        // Handed over even with no messages when the room exists in the cluster (someone's
        // arrival is in the stream, or its state is kept): the hub makes it, so that what
        // arrives live before the arrival it is read for is kept for it. A room the cluster
        // knows nothing of is made by the entry, within the creation limit
        // (`--rooms-per-minute`).
        if let (Some(room), true) = (subject_room(subject), records > 0 || known) {
            let events = kept.into_iter().filter_map(Wire::into_remote).collect();
            deliver(Incoming::History {
                room,
                events,
                changes,
            });
        }
        n
    }

    /// Notes that `w`, read from the stream for a room's history, is delivered: neither it
    /// nor anything before it from its origin in its room is to be delivered again. A
    /// numbered event (`rseq`) tells the reorder where that origin's room now stands: the
    /// marks are only for events without one.
    fn had(&mut self, w: &Wire) {
        if w.node == *self.node && w.boot == self.boot {
            return;
        }
        if w.rseq > 0 {
            self.reorder.had(&w.node, w.boot, &w.room, w.rseq);
            return;
        }
        let origin = format!("{}.{}", w.node, w.boot);
        let mark = self.marks.entry((origin, w.room.clone())).or_default();
        *mark = (*mark).max(w.seq);
    }

    /// Applies an arrival or departure read from the stream to its node's people, if that
    /// node is alive (a beat of its own is known): so who is in the room is known before
    /// someone here enters it, not a heartbeat later, and whoever enters is not taken for
    /// its creator. A dead origin's events make no ghosts.
    fn heard_read(&self, w: &Wire) {
        let Some(change) = w.change() else {
            return;
        };
        let origin = format!("{}.{}", w.node, w.boot);
        if let Some(peer) = lock(&self.peers).get_mut(&origin) {
            peer.heard(w.seq, change);
        }
    }

    /// One event from another node, live or from the stream: delivered unless this node has
    /// delivered it (or a later one from the same origin in the same room) already.
    fn receive(
        &mut self,
        subject: &str,
        payload: &[u8],
        deliver: &(dyn Fn(Incoming) + Send + Sync),
    ) {
        let (head, events) = unpack(payload);
        // A record whose every event was told here live already: the usual case, known
        // without parsing them.
        if let Some(h) = head {
            if self.reorder.through(&h.node, h.boot, &h.room, h.last) {
                // Each event's line ends in a newline, as does the head's.
                let lines = memchr::memchr_iter(b'\n', payload)
                    .count()
                    .saturating_sub(1);
                if h.fits(subject, lines) {
                    return;
                }
                tracing::warn!(%subject, origin = %format_args!("{}.{}", h.node, h.boot),
                    "cluster: a record's head does not match its events; reading them one by one");
            }
        }
        for event in events {
            self.receive_one(event, deliver);
        }
    }

    fn receive_one(&mut self, payload: &[u8], deliver: &(dyn Fn(Incoming) + Send + Sync)) {
        let w = match serde_json::from_slice::<Wire>(payload) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: an unreadable message, ignored");
                return;
            }
        };
        if w.node == *self.node && w.boot == self.boot {
            return;
        }
        // A rename told node-wide (no room, nobody's): it only changes a list, which a repeat
        // or a late one leaves as it is, so it needs no mark, and takes none from the private
        // messages it shares the subject with.
        if w.room.is_empty() && w.to.is_empty() {
            self.hand(w, deliver);
            return;
        }
        if w.rseq == 0 {
            let origin = format!("{}.{}", w.node, w.boot);
            let mark = self.marks.entry((origin, w.room.clone())).or_default();
            if w.seq <= *mark {
                return;
            }
            *mark = w.seq;
            self.hand(w, deliver);
            return;
        }
        for w in self.reorder.accept(w, Instant::now()) {
            self.hand(w, deliver);
        }
    }

    /// Hands one event from another node to this node, in its order.
    fn hand(&mut self, w: Wire, deliver: &(dyn Fn(Incoming) + Send + Sync)) {
        if let Some(change) = w.change() {
            let mut peers = lock(&self.peers);
            let origin = format!("{}.{}", w.node, w.boot);
            // A standing is its member's, who may be on a third node: theirs to list at once,
            // and their node's next beat to confirm (no seq of that node orders it).
            let third = match &change {
                Change::Standing(_, Mode::Operator(_, who) | Mode::Voice(_, who))
                    if !peers.get(&origin).is_some_and(|p| p.lists(who)) =>
                {
                    peers
                        .iter()
                        .find(|(_, p)| p.lists(who))
                        .map(|(k, _)| k.clone())
                }
                _ => None,
            };
            if let Some(holder) = third.and_then(|key| peers.get_mut(&key)) {
                holder.apply(&change);
            } else {
                let peer = peers.entry(origin).or_default();
                peer.node.clone_from(&w.node);
                peer.heard(w.seq, change);
            }
        }
        if !w.to.is_empty() {
            let to = w.to.clone();
            if let Some(remote) = w.into_remote() {
                deliver(Incoming::Private { to, remote });
            }
        } else if w.room.is_empty() {
            // A rename or an away told node-wide: the list above is all it changes.
        } else if w.changes_state() {
            if let Some(remote) = w.into_remote() {
                deliver(Incoming::Changed(remote));
            }
        } else if let Some(remote) = w.into_remote() {
            deliver(Incoming::Said(remote));
        }
    }

    /// Reads each followed room's events from the stream since shortly before the link
    /// dropped, and delivers those not delivered yet, in the stream's order (each sender's).
    async fn catch_up(&mut self, since: SystemTime, deliver: &(dyn Fn(Incoming) + Send + Sync)) {
        let start = since.checked_sub(CATCH_UP_MARGIN).unwrap_or(UNIX_EPOCH);
        // Never from before the room was followed here: what was said in it before is not
        // this node's to deliver (it has no marks for it), and would read as said just now.
        let rooms: Vec<(String, SystemTime)> = self
            .rooms
            .iter()
            .map(|(subject, f)| (subject.clone(), f.since.max(start)))
            .collect();
        let mut caught = 0;
        for (subject, start) in rooms {
            match self.read_since(&subject, start, deliver).await {
                Ok(n) => caught += n,
                Err(e) => {
                    tracing::warn!(error = %e, %subject, "cluster: a room's catch-up did not finish")
                }
            }
        }
        tracing::info!(caught, "cluster: caught up from the stream");
        // A room first followed while the broker was away has not had its history read: it
        // is now, after its catch-up, so what was said meanwhile was told live first.
        let unread: Vec<String> = {
            let loads = lock(&self.interest.loads);
            self.rooms
                .keys()
                .filter(|s| !loads.ready.contains(*s))
                .cloned()
                .collect()
        };
        let reads = self.load_all(&unread, deliver).await;
        for (subject, read) in unread.into_iter().zip(reads) {
            match read {
                Ok(_) => {
                    lock(&self.interest.loads).ready.insert(subject);
                }
                Err(e) => {
                    tracing::warn!(error = %e, %subject, "cluster: a room's history was not read from the stream")
                }
            }
        }
    }

    /// Reads again from the stream the rooms where events were dropped behind a gap now
    /// closed ([`Order::dropped`]): their records may have come while there was no room to
    /// hold them. What was delivered already is dropped by the order as a repeat.
    async fn reread(&mut self, deliver: &(dyn Fn(Incoming) + Send + Sync)) {
        while let Some((room, from)) = self.reorder.rereads.pop() {
            let subject = room_subject(&room);
            let Some(followed) = self.rooms.get(&subject) else {
                continue;
            };
            let start = from.checked_sub(CATCH_UP_MARGIN).unwrap_or(UNIX_EPOCH);
            let start = start.max(followed.since);
            match self.read_since(&subject, start, deliver).await {
                Ok(n) => {
                    tracing::info!(%room, read = n, "cluster: read a room again after events were dropped behind a gap")
                }
                Err(e) => {
                    tracing::warn!(error = %e, %room, "cluster: a room was not read again after events were dropped behind a gap")
                }
            }
        }
    }

    async fn read_since(
        &mut self,
        subject: &str,
        start: SystemTime,
        deliver: &(dyn Fn(Incoming) + Send + Sync),
    ) -> Result<usize, String> {
        use jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
        let stream = self
            .js
            .get_stream(STREAM)
            .await
            .map_err(|e| e.to_string())?;
        let consumer = stream
            .create_consumer(pull::Config {
                deliver_policy: DeliverPolicy::ByStartTime {
                    start_time: start.into(),
                },
                ack_policy: AckPolicy::None,
                filter_subject: subject.to_owned(),
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let mut read = 0;
        loop {
            let mut batch = consumer
                .fetch()
                .max_messages(500)
                .expires(Duration::from_millis(300))
                .messages()
                .await
                .map_err(|e| e.to_string())?;
            let mut n = 0;
            while let Some(msg) = batch.next().await {
                let msg = msg.map_err(|e| e.to_string())?;
                n += 1;
                self.receive(&msg.subject, &msg.payload, deliver);
            }
            read += n;
            if n == 0 {
                return Ok(read);
            }
        }
    }

    async fn send(&mut self, out: Out, owner: &str, stored: Option<&mpsc::Sender<Stored>>) {
        match out {
            Out::Store(said) => {
                if said.state {
                    self.keep_state(&said);
                }
                self.tell_live(&said).await;
                // Looked up by reference: the room's subject is copied once per record, not
                // once per event.
                let record = match self.records.get_mut(&said.subject) {
                    Some(record) => record,
                    None => self
                        .records
                        .entry(said.subject.clone())
                        .or_insert_with(|| Record::new(&said)),
                };
                record.push(&said);
                if said.now || record.full() {
                    if let Some(record) = self.records.remove(&said.subject) {
                        self.write_record(said.subject, record, owner, stored, Vec::new());
                    }
                }
                self.record_due
                    .get_or_insert_with(|| Instant::now() + RECORD_EVERY);
            }
            Out::Publish(subject, body) => {
                if let Err(e) = self.client.publish(subject, body).await {
                    tracing::warn!(error = %e, "cluster: a message did not reach the broker");
                }
            }
            Out::Release(key, value) => self.release(&key, &value).await,
        }
    }

    /// Merges a change this node made to a room's state into the room's entry in [`STATES`],
    /// apart from the link's loop (the broker may take a while): the stream keeps only the
    /// room's last records, the entry keeps its state however long ago it changed. Tried
    /// again while the broker fails it; two tries at once (two changes) merge like any two.
    fn keep_state(&self, said: &Said) {
        if let Ok(w) = serde_json::from_slice::<Wire>(&said.body) {
            self.keep_changes(&said.subject, vec![w]);
        }
    }

    /// Merges `changes` into the entry of the room on `subject` in [`STATES`], as
    /// [`Link::keep_state`] says: all in one compare-and-set, so a read that found many
    /// changes the entry lacks costs one task and one write, not one each.
    fn keep_changes(&self, subject: &str, changes: Vec<Wire>) {
        let Some(first) = changes.first() else {
            return;
        };
        let room = first.room.clone();
        let (states, key) = (self.states.clone(), subject_token(subject).to_owned());
        tokio::spawn(async move {
            for _ in 0..STATE_TRIES {
                match merge_state(&states, &key, &changes).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::debug!(error = %e, "cluster: a room's state waits for the broker")
                    }
                }
                tokio::time::sleep(STATE_RETRY).await;
            }
            tracing::warn!(%room, "cluster: a room's state change was not kept beyond the stream");
        });
    }

    /// The live copy of one of this node's events, to the nodes following its room now: none
    /// while the link is down, and none if the client's queue stays full (the link just
    /// dropped), since the record carries the event to them either way.
    async fn tell_live(&self, said: &Said) {
        if !self.link_up.load(Relaxed) {
            return;
        }
        let subject = format!("{LIVE}{}", &said.subject[ROOMS.len()..]);
        let sent = tokio::time::timeout(LIVE_WAIT, self.client.publish(subject, said.body.clone()));
        if let Ok(Err(e)) = sent.await {
            tracing::debug!(error = %e, "cluster: a live copy did not reach the client");
        }
    }

    /// Asks every other node for its records of the rooms on `subjects` so far and waits for
    /// their answers, all at once (up to [`FLUSH_WAIT`] in all, however many rooms): what they
    /// said before this node followed the rooms is then in the stream, and what they say after
    /// reaches it live. One wait, not one per room: a node that died and is not swept yet
    /// never answers, and a JOIN of many channels must not wait for it once per channel.
    async fn ask_records(&self, subjects: &[String]) {
        // Just started, the others may not be known yet: asking nobody would read the stream
        // without what they hold back. Once per start, and within the asks' own bound.
        let mut read = self.peers_read.subscribe();
        let _ = tokio::time::timeout(FLUSH_WAIT, read.wait_for(|read| *read)).await;
        let nodes = lock(&self.peers)
            .values()
            .map(|p| p.node.clone())
            .collect::<HashSet<_>>()
            .len();
        if nodes == 0 || subjects.is_empty() {
            return;
        }
        let inbox = self.client.new_inbox();
        let Ok(mut answers) = self.client.subscribe(inbox.clone()).await else {
            return;
        };
        let mut asked = 0;
        for subject in subjects {
            let ask = format!("{FLUSH}{}", &subject[ROOMS.len()..]);
            let sent = self
                .client
                .publish_with_reply(ask, inbox.clone(), Bytes::new());
            if sent.await.is_ok() {
                asked += nodes;
            }
        }
        let _ = tokio::time::timeout(FLUSH_WAIT, async {
            for _ in 0..asked {
                if answers.next().await.is_none() {
                    break;
                }
            }
        })
        .await;
    }

    /// Another node asks for this node's record of a room ([`FLUSH`]): written now, and
    /// answered once the stream has it. With no record waiting, the ask still goes through
    /// the publisher, answered behind what it holds: a record written a moment before may
    /// not be acknowledged yet.
    async fn flush_asked(
        &mut self,
        msg: async_nats::Message,
        owner: &str,
        stored: Option<&mpsc::Sender<Stored>>,
    ) {
        let Some(reply) = msg.reply else {
            return;
        };
        let subject = format!("{ROOMS}{}", &msg.subject[FLUSH.len()..]);
        let Some(record) = self.records.remove(&subject) else {
            // The publisher full (or gone): answered at once rather than left to time out.
            if stored.is_none_or(|tx| tx.try_send(Stored::ask(reply.clone())).is_err()) {
                let _ = self.client.publish(reply, Bytes::new()).await;
            }
            return;
        };
        self.write_record(subject, record, owner, stored, vec![reply]);
    }

    /// Writes every record waiting, each room's in its order.
    fn write_records(&mut self, owner: &str, stored: Option<&mpsc::Sender<Stored>>) {
        self.record_due = None;
        for (subject, record) in std::mem::take(&mut self.records) {
            self.write_record(subject, record, owner, stored, Vec::new());
        }
    }

    /// Hands one record to the publisher, which publishes it until acknowledged.
    fn write_record(
        &self,
        subject: String,
        record: Record,
        owner: &str,
        stored: Option<&mpsc::Sender<Stored>>,
        replies: Vec<async_nats::Subject>,
    ) {
        let event = Stored {
            body: record.body(&self.node, self.boot),
            subject,
            id: format!("{owner}:{}", record.seq),
            queued: record.since,
            replies,
        };
        // Counted with the queue's drops, in /metrics (a log line each could flood).
        if stored.is_none_or(|tx| tx.try_send(event).is_err()) {
            self.dropped.fetch_add(record.events() as u64, Relaxed);
        }
    }

    async fn release(&self, key: &str, value: &str) {
        // Claimed again by the same member since (a name whose first answer was lost, taken
        // once it was free again): theirs now, not to free.
        if lock(&self.held).get(key).is_some_and(|(_, v)| v == value) {
            return;
        }
        if let Err(error) = release_claim(&self.nicks, key, value).await {
            tracing::warn!(%error, "cluster: a nickname was not released");
        }
    }
}

/// Deletes a nickname's claim if its value is still `value` (node, boot and member), by
/// revision, so a release that arrives late cannot free a name someone else has taken since,
/// on another node or this one.
async fn release_claim(nicks: &kv::Store, key: &str, value: &str) -> Result<(), String> {
    match nicks.entry(key).await.map_err(|e| e.to_string())? {
        Some(e) if e.operation == kv::Operation::Put && e.value == value.as_bytes() => nicks
            .delete_expect_revision(key, Some(e.revision))
            .await
            .map_err(|e| e.to_string()),
        _ => Ok(()),
    }
}

/// What the liveness task needs: the buckets, this node's `<node>.<boot>`, what to beat
/// with, and where to keep and tell what it learns of the others.
struct Beats {
    nodes: kv::Store,
    nicks: kv::Store,
    held: Held,
    me: String,
    seq: Arc<AtomicU64>,
    people: Arc<dyn Fn() -> Vec<Person> + Send + Sync>,
    peers: Arc<std::sync::Mutex<HashMap<String, Peer>>>,
    /// Set once the others' entries have been read (the first sweep, done or failed).
    peers_read: Arc<tokio::sync::watch::Sender<bool>>,
    deliver: Arc<dyn Fn(Incoming) + Send + Sync>,
    /// Told when this node's entry is first written, and when its places are to be checked
    /// again (as its names are claimed again).
    places: Arc<Places>,
}

/// Says every [`HEARTBEAT`] that this node is alive, with its people, and frees the names of
/// any node whose entry this one has watched stay the same for [`DEAD_AFTER`] while its own
/// heartbeats were getting through. Watched by this node's own monotonic clock, so no two
/// clocks need agree; and a broker outage (a heartbeat that fails or times out) starts the
/// watch over, so nobody is declared dead for the silence the outage forced on everyone.
async fn liveness(beats: Beats, stop: CancellationToken) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Each other node's entry revision, and since when this node has seen it unchanged.
    let mut watched: HashMap<String, (u64, Instant)> = HashMap::new();
    // This node's entry's revision as it last wrote it, and whether its people's names are to
    // be claimed again (after an outage, or after the others took it for dead).
    let (mut mine, mut reclaim): (Option<u64>, bool) = (None, false);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // The seq is read before the people: every change up to it is in the list.
        let beat = Beat {
            seq: beats.seq.load(Relaxed),
            people: (beats.people)(),
        };
        let value = Bytes::from(serde_json::to_vec(&beat).unwrap_or_default());
        match beat_once(&beats, value, mine).await {
            Ok((revision, swept)) => {
                mine = Some(revision);
                beats
                    .places
                    .beating
                    .send_if_modified(|b| !std::mem::replace(b, true));
                if swept {
                    tracing::warn!(
                        "cluster: the others took this server for dead; claiming its names again"
                    );
                    reclaim = true;
                }
            }
            Err(failed) => {
                tracing::debug!(%failed, "cluster: heartbeat not stored; watching anew");
                watched.clear();
                // After an outage the broker may have lost claims, or freed ours.
                (mine, reclaim) = (None, true);
                continue;
            }
        }
        if reclaim {
            beats.places.again();
            match claim_again(&beats).await {
                Ok(()) => reclaim = false,
                Err(e) => tracing::debug!(error = %e, "cluster: names not all claimed again"),
            }
        }
        if let Err(e) = sweep(&beats, &mut watched).await {
            tracing::debug!(error = %e, "cluster: the dead-node sweep did not finish");
        }
        beats
            .peers_read
            .send_if_modified(|read| !std::mem::replace(read, true));
    }
}

/// A stream publish's acknowledgement to come.
type AckFuture = <jetstream::context::PublishAckFuture as std::future::IntoFuture>::IntoFuture;

/// An event published to the stream, and its acknowledgement to come (`None`: the publish
/// itself failed).
struct InFlight {
    event: Stored,
    sent: Instant,
    ack: Option<AckFuture>,
}

/// Publishes the room events to the stream, in order, up to [`IN_FLIGHT`] at a time, their
/// acknowledgements awaited in the order they were sent. One connection delivers them to
/// the broker in that order, so while nothing fails the stream holds each sender's events in
/// its order. When the oldest one fails or is not acknowledged within [`ACK_WAIT`], every
/// event of the window from it on is sent again, in order, one at a time and each until
/// acknowledged (stored once, `Nats-Msg-Id`), and only then does the window open again. A
/// later event may have been stored before the one that failed (it went out on the
/// connection after a reconnect, where the failed one was lost with the old one); receivers
/// put those back in order by `rseq` (docs/CLUSTER.md, "Exactly once, in order"). Once `stop`
/// is set, one try each in the recovery.
async fn publish_stored(
    js: jetstream::Context,
    mut rx: mpsc::Receiver<Stored>,
    stop: CancellationToken,
    dropped: Arc<AtomicU64>,
) {
    let client = js.client();
    let mut window: VecDeque<InFlight> = VecDeque::with_capacity(IN_FLIGHT);
    let mut open = true;
    // Nothing more is sent behind an event whose publish failed: it is sent again first.
    let room = |window: &VecDeque<InFlight>| {
        window.len() < IN_FLIGHT && window.back().is_none_or(|f| f.ack.is_some())
    };
    loop {
        // Fill the window with what is queued, waiting only when it is empty.
        while open && room(&window) {
            let next = if window.is_empty() {
                rx.recv().await
            } else {
                match rx.try_recv() {
                    Ok(event) => Some(event),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            };
            let Some(event) = next else {
                open = false;
                break;
            };
            push(&js, &mut window, event).await;
        }
        let more = open && room(&window);
        let Some(front) = window.front_mut() else {
            if open {
                continue;
            }
            return;
        };
        let Some(ack) = front.ack.as_mut() else {
            recover(&js, &mut window, &stop, &dropped).await;
            continue;
        };
        let deadline = front.sent + ACK_WAIT;
        tokio::select! {
            biased;
            acked = tokio::time::timeout_at(deadline, ack) => match acked {
                Ok(Ok(_)) => {
                    if let Some(f) = window.pop_front() {
                        f.event.done(&client).await;
                    }
                }
                failed => {
                    let id = window.front().map(|f| f.event.id.clone()).unwrap_or_default();
                    tracing::debug!(?failed, %id, "cluster: not acknowledged; sending the window again");
                    recover(&js, &mut window, &stop, &dropped).await;
                }
            },
            event = rx.recv(), if more => match event {
                Some(event) => {
                    push(&js, &mut window, event).await;
                }
                None => open = false,
            },
        }
    }
}
/// Publishes `event` and puts it at the end of the window (without an acknowledgement to
/// come if the publish itself failed: the window is recovered when it reaches the front).
/// An ask is not published: it rides on the newest event of the window, answered with it,
/// since the window is acknowledged in order; at once when the window is empty.
async fn push(js: &jetstream::Context, window: &mut VecDeque<InFlight>, event: Stored) {
    if event.is_ask() {
        match window.back_mut() {
            Some(last) => last.event.replies.extend(event.replies),
            None => event.done(&js.client()).await,
        }
        return;
    }
    let ack = publish_once(js, &event).await;
    window.push_back(InFlight {
        event,
        sent: Instant::now(),
        ack,
    });
}

/// One publish of `event` with its `Nats-Msg-Id`: its acknowledgement to come, or `None` if it
/// could not even be handed to the client within [`ACK_WAIT`].
async fn publish_once(js: &jetstream::Context, event: &Stored) -> Option<AckFuture> {
    let Stored {
        subject, body, id, ..
    } = event;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id.as_str());
    match tokio::time::timeout(
        ACK_WAIT,
        js.publish_with_headers(subject.clone(), headers, body.clone()),
    )
    .await
    {
        Ok(Ok(ack)) => Some(std::future::IntoFuture::into_future(ack)),
        failed => {
            tracing::debug!(?failed, %id, "cluster: not published");
            None
        }
    }
}

/// After a failure at the front of the window: every event in it, oldest first, sent again
/// one at a time, each until acknowledged. Whatever of them the broker already stored it
/// acknowledges as a duplicate and does not store again, and none is sent before the one
/// ahead of it is in the stream, so from here on the stream has them in order.
async fn recover(
    js: &jetstream::Context,
    window: &mut VecDeque<InFlight>,
    stop: &CancellationToken,
    dropped: &AtomicU64,
) {
    // Once per failure, not per event: an outage does not flood the log.
    tracing::info!(
        events = window.len(),
        "cluster: an acknowledgement failed; sending the window again, in order"
    );
    while let Some(InFlight { event, .. }) = window.pop_front() {
        publish_until_acked(js, &event, stop, dropped).await;
        event.done(&js.client()).await;
    }
}

/// Publishes `event` until the broker acknowledges it (1 s per try, 50 ms-1 s apart), so an
/// event in flight when the broker went away is sent again, stored once (`Nats-Msg-Id`).
/// Once `stop` is set, one try.
async fn publish_until_acked(
    js: &jetstream::Context,
    event: &Stored,
    stop: &CancellationToken,
    dropped: &AtomicU64,
) {
    let Stored { id, queued, .. } = event;
    let mut pause = Duration::from_millis(50);
    loop {
        // Past the duplicate window a try could be stored twice, and an outage that long
        // must not hold every later event behind this one: given up, and counted.
        if queued.elapsed() >= DUPLICATE_WINDOW {
            dropped.fetch_add(1, Relaxed);
            return;
        }
        if let Some(ack) = publish_once(js, event).await {
            match tokio::time::timeout(ACK_WAIT, ack).await {
                Ok(Ok(_)) => return,
                failed => tracing::debug!(?failed, %id, "cluster: not acknowledged; sending again"),
            }
        }
        if stop.is_cancelled() {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// Until `at`, or never.
async fn wait_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Writes this node's entry: an update against the revision it wrote last, which fails when
/// another node has deleted the entry (this node was silent past [`DEAD_AFTER`]: cut off, or
/// stalled), and then a put that makes it anew. The new revision, and whether it was swept.
async fn beat_once(beats: &Beats, value: Bytes, mine: Option<u64>) -> Result<(u64, bool), String> {
    let put = |value| async {
        match tokio::time::timeout(HEARTBEAT, beats.nodes.put(&beats.me, value)).await {
            Ok(Ok(revision)) => Ok(revision),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_owned()),
        }
    };
    let Some(revision) = mine else {
        return put(value).await.map(|r| (r, false));
    };
    let updated = tokio::time::timeout(
        HEARTBEAT,
        beats.nodes.update(&beats.me, value.clone(), revision),
    )
    .await;
    match updated {
        Ok(Ok(revision)) => Ok((revision, false)),
        Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
            put(value).await.map(|r| (r, true))
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

/// Claims every name this node holds again, with the value it was first claimed with. A name
/// whose claim is still this node's, or free, stays theirs; one that someone on another node
/// holds now goes to that holder, the one the broker has (docs/CLUSTER.md, "Conflict rule"),
/// and the server renames the local person.
async fn claim_again(beats: &Beats) -> Result<(), String> {
    let held: Vec<(String, (String, String))> = lock(&beats.held)
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, (nick, value)) in held {
        let ours = claim_holder(value.as_bytes());
        let created = tokio::time::timeout(
            CLAIM_TIMEOUT,
            beats.nicks.create(&key, Bytes::from(value.clone())),
        )
        .await
        .map_err(|_| "timed out".to_owned())?;
        match created {
            Ok(_) => {}
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                let entry = beats.nicks.entry(&key).await.map_err(|e| e.to_string())?;
                if let Some(e) = entry.filter(|e| e.operation == kv::Operation::Put) {
                    let holder = claim_holder(&e.value);
                    if holder != ours {
                        lock(&beats.held).remove(&key);
                        (beats.deliver)(Incoming::Conflict {
                            nick,
                            holder: holder.map_or_else(String::new, |(n, _)| n.to_owned()),
                        });
                    }
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// Reads every other node's beat, and frees the names of every node whose entry has stood
/// still for [`DEAD_AFTER`]. Any node may do it, several at once: each delete names the
/// revision it read, so only one succeeds and none frees a name that was taken again
/// meanwhile. A node found dead, or whose entry is gone (swept by another node, or stopped),
/// has its people told to this node's rooms as gone, once.
async fn sweep(beats: &Beats, watched: &mut HashMap<String, (u64, Instant)>) -> Result<(), String> {
    let (nodes, nicks, me) = (&beats.nodes, &beats.nicks, beats.me.as_str());
    let now = Instant::now();
    let mut dead = Vec::new();
    let mut seen = Vec::new();
    let mut keys = nodes.keys().await.map_err(|e| e.to_string())?;
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| e.to_string())?;
        if key == me {
            continue;
        }
        let Some(e) = nodes.entry(&key).await.map_err(|e| e.to_string())? else {
            continue;
        };
        if e.operation != kv::Operation::Put {
            continue;
        }
        seen.push(key.clone());
        let since = watched.entry(key.clone()).or_insert((e.revision, now));
        if since.0 != e.revision {
            *since = (e.revision, now);
        } else if now - since.1 >= DEAD_AFTER {
            dead.push(e);
            continue;
        }
        // An empty or unreadable value (a node of the groundwork) lists nobody.
        if let Ok(beat) = serde_json::from_slice::<Beat>(&e.value) {
            let mut peers = lock(&beats.peers);
            let peer = peers.entry(key.clone()).or_default();
            if let Some((name, _)) = key.rsplit_once('.') {
                peer.node = name.to_owned();
            }
            peer.beat(beat);
        }
    }
    watched.retain(|k, _| seen.contains(k));
    let gone: Vec<String> = lock(&beats.peers)
        .keys()
        .filter(|k| !seen.contains(k))
        .cloned()
        .collect();
    for key in gone {
        lost(beats, &key);
    }
    for node in dead {
        // `<node>.<boot>` names the node and boot its claims' values begin with.
        let Some((name, boot)) = node.key.rsplit_once('.') else {
            continue;
        };
        // Told before the names are free, so nobody here sees a newcomer take a name its
        // holder has not yet been seen to leave.
        lost(beats, &node.key);
        let owner = boot.parse().ok().map(|boot| (name, boot));
        let mut freed = 0;
        let mut names = nicks.keys().await.map_err(|e| e.to_string())?;
        while let Some(key) = names.next().await {
            let key = key.map_err(|e| e.to_string())?;
            if let Some(e) = nicks.entry(&key).await.map_err(|e| e.to_string())? {
                if e.operation == kv::Operation::Put
                    && owner.is_some()
                    && claim_holder(&e.value) == owner
                    && nicks
                        .delete_expect_revision(&key, Some(e.revision))
                        .await
                        .is_ok()
                {
                    freed += 1;
                }
            }
        }
        watched.remove(&node.key);
        if nodes
            .delete_expect_revision(&node.key, Some(node.revision))
            .await
            .is_ok()
        {
            tracing::warn!(
                node = name,
                freed,
                "cluster: a node fell silent; its nicknames are free again"
            );
        }
    }
    Ok(())
}

/// Forgets the node `key` and tells this node's rooms that whoever was still listed there is
/// gone. A node that stopped cleanly said each departure itself, so nobody is left to tell.
fn lost(beats: &Beats, key: &str) {
    let Some(peer) = lock(&beats.peers).remove(key) else {
        return;
    };
    let people: Vec<(String, Vec<String>)> = peer
        .people
        .into_values()
        .map(|p| (p.nick, p.rooms))
        .collect();
    if !people.is_empty() {
        (beats.deliver)(Incoming::Lost {
            node: peer.node,
            people,
        });
    }
}

/// Every event the stream holds on `subject` (one room's; at most [`KEPT_PER_ROOM`]), in the
/// stream's order, through an ephemeral pull consumer: read up to what it held when the
/// consumer was made.
/// What a node reads of a room as it starts following it ([`read_room`]).
#[derive(Debug, Default)]
struct RoomRead {
    /// The events of the room's newest records, in the stream's order.
    events: Vec<Wire>,
    /// How many records the stream holds of the room (0: it knows nothing of it).
    records: u64,
    /// How many of them were read, and how many consumers were made to find where to start.
    read: u64,
    probes: u32,
    /// The room's state as [`STATES`] keeps it: one event for each part, the newest.
    state: Vec<Wire>,
}

/// A pull consumer of `subject`'s records from stream sequence `start` on, and how many
/// it has to deliver: JetStream 2.9 reads a subject only forwards, but says at once how many
/// of its messages lie ahead of any point, which is what finding where to start uses.
async fn consumer_at(
    stream: &stream::Stream,
    subject: &str,
    start: u64,
) -> Result<(jetstream::consumer::PullConsumer, u64), String> {
    use jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start.max(1),
            },
            ack_policy: AckPolicy::None,
            filter_subject: subject.to_owned(),
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let pending = consumer.cached_info().num_pending;
    Ok((consumer, pending))
}

/// The consumer goes with its inactivity threshold; deleting it now spares the broker. Not
/// waited for: nothing depends on it.
fn drop_consumer(stream: &stream::Stream, consumer: jetstream::consumer::PullConsumer) {
    let stream = stream.clone();
    let name = consumer.cached_info().name.clone();
    tokio::spawn(async move {
        let _ = stream.delete_consumer(&name).await;
    });
}

/// Where to start reading `subject` so that what lies between there and `end` holds at least
/// `want` of its records and, when the stream allows, at most about twice as many: found by
/// interpolating between what is known to hold too many (`lo`, a sequence and the records
/// from it on) and too few (`end`, likewise), halving when the guess does not narrow it.
/// Returns the consumer made there, with its count; `lo` itself when nothing between will do.
async fn start_between(
    stream: &stream::Stream,
    subject: &str,
    mut lo: (u64, u64),
    end: (u64, u64),
    want: u64,
    probes: &mut u32,
) -> Result<(u64, jetstream::consumer::PullConsumer, u64), String> {
    let (target, most) = (end.1 + want, end.1 + 2 * want);
    let mut hi = end;
    let mut halve = false;
    while hi.0 > lo.0 + 1 && *probes < PROBES_MAX {
        let at = if halve || lo.1 <= hi.1 {
            lo.0 + (hi.0 - lo.0) / 2
        } else {
            // Aim between the bounds of what will do, as if the room's records were spread
            // evenly over the stream between the two points known.
            let aim = (target + most) / 2;
            let frac = (aim.saturating_sub(hi.1)) as f64 / (lo.1 - hi.1) as f64;
            let back = ((hi.0 - lo.0) as f64 * frac.min(1.0)) as u64;
            hi.0.saturating_sub(back).clamp(lo.0 + 1, hi.0 - 1)
        };
        *probes += 1;
        let (consumer, count) = consumer_at(stream, subject, at).await?;
        if (target..=most).contains(&count) {
            return Ok((at, consumer, count));
        }
        drop_consumer(stream, consumer);
        let before = hi.0 - lo.0;
        if count >= target {
            lo = (at, count);
        } else {
            hi = (at, count);
        }
        // An interpolation that left more than half standing is followed by a halving.
        halve = !halve && (hi.0 - lo.0) * 2 > before;
    }
    *probes += 1;
    let (consumer, count) = consumer_at(stream, subject, lo.0).await?;
    Ok((lo.0, consumer, count))
}

/// Consumers made at most to find where a room's read starts, over all its steps back (the
/// count is the read's, not a step's): about twice the halvings a stream of a few million
/// messages needs.
const PROBES_MAX: u32 = 48;

/// Reads the newest of the room's records on `subject`, stepping back from the end of the
/// stream until what was read holds `keep` messages in records that are not the first read
/// of their origin: a node gathers a room's next record once it has written the last, so
/// what such a record holds was said after its origin's record before it was stored, and so
/// after everything in the records not read (stored before that). The first record read of
/// each origin may overlap in time with older records of others (records of two nodes are
/// written apart: the stream's order is not quite the order said in), so it does not count.
/// No clock is compared. `keep` 0 reads the newest records alone (for the marks and who is
/// in the room). Also reads the room's state from [`STATES`], which the stream's limit does
/// not reach.
async fn read_room(
    js: &jetstream::Context,
    states: &kv::Store,
    subject: &str,
    keep: usize,
) -> Result<RoomRead, String> {
    let stream = js.get_stream(STREAM).await.map_err(|e| e.to_string())?;
    let info = stream.cached_info();
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let mut room = RoomRead {
        // The bucket failing costs the state it keeps (the records read still bring what
        // they hold), not the whole history.
        state: read_state(states, subject).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, %subject, "cluster: a room's kept state was not read");
            Vec::new()
        }),
        ..RoomRead::default()
    };
    let (whole, records) = consumer_at(&stream, subject, first).await?;
    room.records = records;
    if records == 0 {
        drop_consumer(&stream, whole);
        return Ok(room);
    }
    let mut whole = Some(whole);
    let keep = keep as u64;
    // Each record read, in the stream's order: its origin, and how many messages it holds.
    let mut stored: Vec<(Origin, u64)> = Vec::new();
    let mut want = keep.div_ceil(RECORD_MAX as u64) + 2;
    // Where what is still unread ends, and how many records lie from there on: at first the
    // end of the stream, read to whatever is stored by then.
    let mut end = (last + 1, 0);
    let mut limit = u64::MAX;
    loop {
        let (start, consumer, count) = if records <= end.1 + 2 * want {
            // Little enough left to read it all.
            let consumer = match whole.take() {
                Some(c) => c,
                None => consumer_at(&stream, subject, first).await?.0,
            };
            (first, consumer, records.max(end.1))
        } else {
            start_between(
                &stream,
                subject,
                (first, records),
                end,
                want,
                &mut room.probes,
            )
            .await?
        };
        let got = read_records(&consumer, count - end.1, limit, &mut room.events).await?;
        drop_consumer(&stream, consumer);
        room.read += got.len() as u64;
        stored.splice(0..0, got);
        let messages: u64 = stored.iter().map(|(_, m)| m).sum();
        let newer = newer_messages(&stored);
        if start <= first || keep == 0 || newer >= keep {
            break;
        }
        // Enough more records, by how many messages a record held so far, with a margin.
        let per_record = messages as f64 / room.read.max(1) as f64;
        want = if per_record > 0.0 {
            ((keep - newer) as f64 / per_record * 1.25).ceil() as u64 + 2
        } else {
            room.read * 2
        };
        (end, limit) = ((start, count), start);
    }
    if let Some(c) = whole {
        drop_consumer(&stream, c);
    }
    Ok(room)
}

/// Who wrote a record: its node and boot.
type Origin = (String, u64);

/// The messages of `records` (in the stream's order) certainly newer than anything stored
/// before them: those of each record but the first of its origin ([`read_room`]).
fn newer_messages(records: &[(Origin, u64)]) -> u64 {
    let mut seen: HashSet<&Origin> = HashSet::new();
    records
        .iter()
        .filter(|(origin, _)| !seen.insert(origin))
        .map(|(_, m)| m)
        .sum()
}

/// Reads up to `count` records from `consumer`, those stored before stream sequence `limit`,
/// their events into `events`; for each record, in the stream's order, its origin and how
/// many messages it holds.
async fn read_records(
    consumer: &jetstream::consumer::PullConsumer,
    count: u64,
    limit: u64,
    events: &mut Vec<Wire>,
) -> Result<Vec<(Origin, u64)>, String> {
    let mut records = Vec::new();
    let mut got = 0;
    'read: while got < count {
        let mut batch = consumer
            .fetch()
            .max_messages(LOAD_BATCH.min((count - got) as usize))
            .messages()
            .await
            .map_err(|e| e.to_string())?;
        let before = got;
        while let Some(msg) = batch.next().await {
            let msg = msg.map_err(|e| e.to_string())?;
            got += 1;
            let info = msg.info().map_err(|e| e.to_string())?;
            if info.stream_sequence >= limit {
                break 'read;
            }
            let (head, lines) = unpack(&msg.payload);
            let mut origin = head.map(|h| (h.node.into_owned(), h.boot));
            let mut messages = 0;
            for event in lines {
                match serde_json::from_slice::<Wire>(event) {
                    Ok(w) => {
                        messages += u64::from(w.is_message());
                        // A single event (a node of before records) is its own origin's.
                        origin.get_or_insert_with(|| (w.node.clone(), w.boot));
                        events.push(w);
                    }
                    Err(e) => tracing::warn!(error = %e, "cluster: an unreadable message, ignored"),
                }
            }
            records.push((origin.unwrap_or_default(), messages));
        }
        // A fetch that does not wait comes back empty only when nothing is left to read.
        if got == before {
            break;
        }
    }
    Ok(records)
}

/// A room's state as [`STATES`] keeps it: for each part (the topic, each flag, each ban or
/// mute mask set or lifted) the newest change to it, as the stream carries changes, so the
/// changes that rebuild the room's state are these few, however long ago they were made.
/// Merged by the stamps the hub takes changes by (the clock, then the setter's name), so two
/// nodes writing at once end with the same entry whichever lands first.
#[derive(Debug, Default, Serialize, Deserialize)]
struct RoomState {
    parts: BTreeMap<String, Wire>,
}

/// Parts kept at most; past it the lifted bans and mutes made longest ago go (what the
/// stream may still hold from before them is older than what the entry keeps of the room).
/// Set by what is in force, which the room's own limits bound (a topic, its flags, at most
/// [`MAX_LISTED`] bans and as many mutes), with as many lifted masks again: some 450 events
/// of a few hundred bytes each, well under the broker's 1 MiB message, which the entry must
/// fit in to be written at all.
const STATE_PARTS_MAX: usize = 4 * MAX_LISTED + 50;

impl RoomState {
    /// Takes each part of `w` (a `topic`, `mode` or `list` event) that is newer than the one
    /// held; whether any was.
    fn take(&mut self, w: &Wire) -> bool {
        let mut taken = false;
        for (part, text) in state_parts(w) {
            let newer = self
                .parts
                .get(&part)
                .is_none_or(|held| (held.clock, held.nick.as_str()) < (w.clock, w.nick.as_str()));
            if newer {
                let mut one = w.clone();
                one.text = text;
                self.parts.insert(part, one);
                taken = true;
            }
        }
        while self.parts.len() > STATE_PARTS_MAX {
            let oldest_lifted = self
                .parts
                .iter()
                .filter(|(part, w)| !part.starts_with("topic") && w.text.starts_with('-'))
                .min_by_key(|(_, w)| w.clock)
                .map(|(part, _)| part.clone());
            match oldest_lifted {
                Some(part) => self.parts.remove(&part),
                None => break,
            };
        }
        taken
    }
}

/// The parts of the room's state a `topic`, `mode` (one part per flag) or `list` event sets,
/// each with its text alone.
fn state_parts(w: &Wire) -> Vec<(String, String)> {
    match w.kind.as_str() {
        "topic" => vec![("topic".to_owned(), w.text.clone())],
        "mode" => w
            .text
            .as_bytes()
            .chunks(2)
            .filter_map(|pair| {
                let text = std::str::from_utf8(pair).ok()?;
                parse_flags::<Arc<str>>(text)?;
                Some((format!("flag {}", &text[1..]), text.to_owned()))
            })
            .collect(),
        "list" => match parse_named(&w.text) {
            Some(Mode::Ban(_, mask)) => {
                vec![(format!("ban {}", mask.to_ascii_lowercase()), w.text.clone())]
            }
            Some(Mode::Mute(_, mask)) => {
                vec![(
                    format!("mute {}", mask.to_ascii_lowercase()),
                    w.text.clone(),
                )]
            }
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// The changes [`STATES`] keeps for the room on `subject` (none when it has no entry).
async fn read_state(states: &kv::Store, subject: &str) -> Result<Vec<Wire>, String> {
    let (state, _) = state_entry(states, subject_token(subject)).await?;
    Ok(state.parts.into_values().collect())
}

/// The room's entry in [`STATES`] under `key` and its revision (`None`: there is none, or it
/// was deleted).
async fn state_entry(states: &kv::Store, key: &str) -> Result<(RoomState, Option<u64>), String> {
    let entry = states.entry(key).await.map_err(|e| e.to_string())?;
    Ok(match entry {
        Some(e) if e.operation == kv::Operation::Put => (
            serde_json::from_slice::<RoomState>(&e.value).unwrap_or_default(),
            Some(e.revision),
        ),
        _ => (RoomState::default(), None),
    })
}

/// Merges `changes` into their room's entry in [`STATES`] by compare-and-set: read, merged,
/// written against the revision read, and all again when another node wrote in between (up
/// to [`STATE_RACES`] times; past it the caller tries again later).
async fn merge_state(states: &kv::Store, key: &str, changes: &[Wire]) -> Result<(), String> {
    for _ in 0..STATE_RACES {
        let (mut state, revision) = state_entry(states, key).await?;
        let mut taken = false;
        for w in changes {
            taken |= state.take(w);
        }
        if !taken {
            return Ok(());
        }
        let value: Bytes = serde_json::to_vec(&state)
            .map_err(|e| e.to_string())?
            .into();
        // Written by another node in between: merged again with what it wrote.
        match revision {
            Some(revision) => match states.update(key, value, revision).await {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
                Err(e) => return Err(e.to_string()),
            },
            None => match states.create(key, value).await {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.to_string()),
            },
        }
    }
    Err("other nodes kept writing the entry".to_owned())
}

/// Compare-and-sets one merge makes at most before it waits [`STATE_RETRY`]: each loss means
/// another node's write landed, so a few are a burst of changes, not a stall.
const STATE_RACES: u32 = 16;

/// How often, and how far apart, a change is tried again into [`STATES`] while the broker
/// fails it: 2 minutes, past the outages the cluster rides out by itself (the tests' 12 s,
/// the 10 s liveness bound); the stream holds the change meanwhile, and any node reading the
/// room merges in what the entry lacks.
const STATE_TRIES: u32 = 60;
const STATE_RETRY: Duration = Duration::from_secs(2);

fn us_within_ms(at: SystemTime) -> u32 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_micros()
        % 1000
}

fn ms_since_epoch(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// How a person on node `node` appears here: the node is the host part.
pub fn remote_identity(nick: &str, node: &str) -> Arc<Identity> {
    let nick: Arc<str> = nick.into();
    Arc::new(Identity {
        id: REMOTE,
        user: nick.clone(),
        nick,
        host: node.into(),
        realname: "".into(),
        // Accounts are one server's (`--cluster` refuses `--data-dir`): none travels yet.
        account: None,
    })
}

impl Wire {
    /// What this event changes in its origin's list of people, if anything.
    fn change(&self) -> Option<Change> {
        let (nick, room) = (self.nick.clone(), self.room.clone());
        Some(match self.kind.as_str() {
            "join" | "enter" => Change::Enter(nick, room),
            "part" => Change::Part(nick, room),
            "left" => Change::Left(nick),
            "nick" => Change::Nick(nick, self.text.clone(), room),
            // Known to be on the origin when their own node put them out; otherwise their
            // node's next beat says so.
            "kick" => Change::Part(self.text.clone(), room),
            "standing" => Change::Standing(room, parse_named(&self.text)?),
            "away" => Change::Away(nick, (!self.text.is_empty()).then(|| self.text.clone())),
            _ => return None,
        })
    }

    /// Whether this is something said (a message, an action, a notice): scrollback.
    fn is_message(&self) -> bool {
        matches!(self.kind.as_str(), "msg" | "act" | "note")
    }

    /// Whether this is a change to the room's topic or flags (room state, not chat).
    fn changes_state(&self) -> bool {
        matches!(self.kind.as_str(), "topic" | "mode" | "standing" | "list")
    }

    fn into_remote(self) -> Option<Remote> {
        let kind = match self.kind.as_str() {
            "topic" => Kind::Topic(self.text.into()),
            "mode" => Kind::Mode(parse_flags(&self.text)?.into()),
            "standing" | "list" => Kind::Mode([parse_named(&self.text)?].into()),
            "kick" => Kind::Kicked {
                who: remote_identity(&self.text, &self.node),
                reason: (!self.reason.is_empty()).then(|| self.reason.as_str().into()),
            },
            "msg" => Kind::Message(self.text.into()),
            "act" => Kind::Action(self.text.into()),
            "note" => Kind::Notice(self.text.into()),
            "invite" => Kind::Invited(self.text.into()),
            "join" => Kind::Joined,
            "enter" => Kind::Entered,
            "part" => Kind::Parted((!self.text.is_empty()).then(|| self.text.into())),
            "left" => Kind::Left(
                LeaveReason::ALL
                    .into_iter()
                    .find(|r| r.label() == self.reason)
                    .unwrap_or(LeaveReason::Quit),
                (!self.text.is_empty()).then(|| self.text.into()),
            ),
            "nick" => Kind::Nick(remote_identity(&self.text, &self.node)),
            _ => return None,
        };
        Some(Remote {
            from: remote_identity(&self.nick, &self.node),
            room: self.room,
            at: UNIX_EPOCH
                + Duration::from_millis(self.at_ms)
                + Duration::from_micros(self.at_us.into()),
            kind,
            clock: self.clock,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_subjects_are_one_token_and_distinct() {
        assert_eq!(room_subject("Dev"), "lc.room.dev");
        assert_eq!(room_subject("a.b"), "lc.room.a_2eb");
        assert_ne!(room_subject("a_2eb"), room_subject("a.b"));
    }

    fn wire(room: &str, rseq: u64) -> Wire {
        Wire {
            node: "a".into(),
            boot: 1,
            seq: rseq,
            rseq,
            room: room.into(),
            nick: "alice".into(),
            kind: "msg".into(),
            text: format!("line {rseq}"),
            reason: String::new(),
            to: String::new(),
            at_ms: 0,
            at_us: 0,
            clock: 0,
        }
    }

    /// A change to dev's state by `nick` at `clock`.
    fn change(kind: &str, text: &str, nick: &str, clock: u64) -> Wire {
        Wire {
            kind: kind.into(),
            text: text.into(),
            nick: nick.into(),
            clock,
            ..wire("dev", clock)
        }
    }

    /// What the state entry holds: each part's text and setter.
    fn parts(state: &RoomState) -> Vec<(String, String, String)> {
        let parts = state.parts.iter();
        parts
            .map(|(p, w)| (p.clone(), w.text.clone(), w.nick.clone()))
            .collect()
    }

    /// Two nodes' changes merged into a room's state entry in either order end the same: per
    /// part (the topic, each flag of a `mode`, each mask) the newest stamp, the setter's name
    /// breaking a tie as the hub does; a change older than the entry's is no change.
    #[test]
    fn room_state_merges_the_same_whichever_lands_first() {
        let changes = [
            change("topic", "first", "alice", 1),
            change("mode", "+m-t", "alice", 2),
            change("topic", "second", "bob", 3),
            change("topic", "tie", "alice", 3),
            change("mode", "-m", "bob", 4),
            change("list", "+b zed!*@*", "alice", 5),
            change("list", "-b ZED!*@*", "bob", 6),
            change("standing", "+o bob", "alice", 7),
        ];
        let mut forwards = RoomState::default();
        for w in &changes {
            forwards.take(w);
        }
        let mut backwards = RoomState::default();
        for w in changes.iter().rev() {
            backwards.take(w);
        }
        let want = [
            ("ban zed!*@*", "-b ZED!*@*", "bob"),
            ("flag m", "-m", "bob"),
            ("flag t", "-t", "alice"),
            ("topic", "second", "bob"),
        ]
        .map(|(p, t, n)| (p.to_owned(), t.to_owned(), n.to_owned()));
        assert_eq!(parts(&forwards), want);
        assert_eq!(parts(&backwards), want);
        assert!(!forwards.take(&change("topic", "stale", "zed", 2)));
        // What the entry keeps reads back as the events the stream carries.
        let back: RoomState =
            serde_json::from_slice(&serde_json::to_vec(&forwards).unwrap()).unwrap();
        let kinds: Vec<Option<Kind>> = back
            .parts
            .into_values()
            .map(|w| w.into_remote().map(|r| r.kind))
            .collect();
        assert!(kinds.iter().all(Option::is_some), "{kinds:?}");
    }

    /// Of the records read, the first of each origin does not count towards the scrollback's
    /// messages: it may overlap in time with older records of others.
    #[test]
    fn only_an_origins_later_records_count_as_newer_than_the_unread() {
        let a = || ("a".to_owned(), 1);
        let b = || ("b".to_owned(), 1);
        assert_eq!(newer_messages(&[(a(), 5)]), 0);
        assert_eq!(newer_messages(&[(a(), 5), (b(), 7), (a(), 3), (b(), 2)]), 5);
        assert_eq!(newer_messages(&[(a(), 5), (("a".to_owned(), 2), 4)]), 0);
    }

    fn take(r: &mut Reorder, room: &str, rseq: u64, now: Instant) -> Vec<u64> {
        seqs(r.accept(wire(room, rseq), now))
    }

    fn seqs(ready: Ready) -> Vec<u64> {
        ready.into_iter().map(|w| w.rseq).collect()
    }

    /// A later event stored before an earlier one (the earlier one's publish failed mid-window
    /// and was sent again) is held until the earlier one comes; repeats go.
    #[test]
    fn events_are_put_back_in_order_once() {
        let t = Instant::now();
        let mut r = Reorder::default();
        assert_eq!(take(&mut r, "lobby", 1, t), [1]);
        assert_eq!(take(&mut r, "lobby", 3, t), Vec::<u64>::new());
        assert_eq!(take(&mut r, "lobby", 4, t), Vec::<u64>::new());
        assert!(r.holding());
        assert_eq!(
            take(&mut r, "lobby", 3, t),
            Vec::<u64>::new(),
            "a repeat while held"
        );
        assert_eq!(take(&mut r, "lobby", 2, t), [2, 3, 4]);
        assert!(!r.holding());
        for again in 1..=4 {
            assert_eq!(take(&mut r, "lobby", again, t), Vec::<u64>::new());
        }
        assert_eq!(take(&mut r, "lobby", 5, t), [5]);
    }

    /// Rooms and origins are ordered apart: a gap in one holds nothing of another.
    #[test]
    fn a_gap_holds_only_its_origin_and_room() {
        let t = Instant::now();
        let mut r = Reorder::default();
        assert_eq!(take(&mut r, "lobby", 1, t), [1]);
        assert_eq!(take(&mut r, "lobby", 3, t), Vec::<u64>::new());
        assert_eq!(take(&mut r, "dev", 1, t), [1]);
        assert_eq!(take(&mut r, "dev", 2, t), [2]);
        let other = seqs(r.accept(
            Wire {
                node: "b".into(),
                boot: 7,
                ..wire("lobby", 1)
            },
            t,
        ));
        assert_eq!(other, [1]);
    }

    /// A node that starts following a room mid-conversation starts at the first event it
    /// hears, and one followed again starts afresh.
    #[test]
    fn the_first_event_heard_is_where_a_room_starts() {
        let t = Instant::now();
        let mut r = Reorder::default();
        assert_eq!(take(&mut r, "lobby", 57, t), [57]);
        assert_eq!(take(&mut r, "lobby", 58, t), [58]);
        assert_eq!(take(&mut r, "lobby", 60, t), Vec::<u64>::new());
        r.retain_rooms(|room| room != "lobby");
        assert!(!r.holding());
        assert_eq!(take(&mut r, "lobby", 90, t), [90]);
    }

    /// What a room's history read had is where its origin stands: the live copies of those
    /// events (the subscription was in before the read) go, the next one is delivered at
    /// once, and what was held behind a gap the read filled goes too.
    #[test]
    fn what_the_history_read_had_is_not_delivered_again() {
        let t = Instant::now();
        let mut r = Reorder::default();
        r.had("a", 1, "lobby", 20);
        for again in [19, 20] {
            assert_eq!(take(&mut r, "lobby", again, t), Vec::<u64>::new());
        }
        assert_eq!(take(&mut r, "lobby", 21, t), [21]);
        assert_eq!(take(&mut r, "lobby", 23, t), Vec::<u64>::new());
        assert!(r.holding());
        r.had("a", 1, "lobby", 23);
        assert!(!r.holding());
        assert_eq!(take(&mut r, "lobby", 24, t), [24]);
    }

    /// A missing event is waited for GAP_WAIT, then given up; if it comes after all it is
    /// not delivered out of order. The wait starts again when the link comes back.
    #[test]
    fn a_gap_is_given_up_after_the_wait() {
        let t = Instant::now();
        let mut r = Reorder::default();
        assert_eq!(take(&mut r, "lobby", 1, t), [1]);
        assert_eq!(take(&mut r, "lobby", 3, t), Vec::<u64>::new());
        assert_eq!(take(&mut r, "lobby", 5, t), Vec::<u64>::new());
        assert!(seqs(r.give_up(t + GAP_WAIT / 2)).is_empty());
        r.wait_anew(t + GAP_WAIT / 2);
        assert!(seqs(r.give_up(t + GAP_WAIT)).is_empty());
        let later = t + GAP_WAIT / 2 + GAP_WAIT;
        assert_eq!(seqs(r.give_up(later)), [3], "the first gap only");
        assert!(r.holding(), "5 still waits for 4, from now");
        assert!(seqs(r.give_up(later + GAP_WAIT / 2)).is_empty());
        assert_eq!(
            take(&mut r, "lobby", 2, later),
            Vec::<u64>::new(),
            "too late"
        );
        assert_eq!(take(&mut r, "lobby", 4, later), [4, 5]);
        assert!(!r.holding());
    }

    /// A record is read back as its head and each of its events, and a single event (a live
    /// copy, or the stream of a node from before records) as itself.
    #[test]
    fn a_record_unpacks_to_its_head_and_events() {
        let room: Arc<str> = "lobby".into();
        let said = |rseq: u64| {
            let w = wire("lobby", rseq);
            Said {
                subject: room_subject(&room),
                room: room.clone(),
                body: serde_json::to_vec(&w).unwrap().into(),
                seq: rseq,
                rseq,
                now: false,
                state: false,
            }
        };
        let mut record = Record::new(&said(4));
        for rseq in 4..=6 {
            record.push(&said(rseq));
        }
        let body = record.body("x", 1);
        let (head, events) = unpack(&body);
        let head = head.expect("a head");
        assert_eq!((&*head.node, head.boot, &*head.room), ("x", 1, "lobby"));
        assert_eq!((head.first, head.last), (4, 6));
        let rseqs: Vec<u64> = events
            .map(|e| serde_json::from_slice::<Wire>(e).unwrap().rseq)
            .collect();
        assert_eq!(rseqs, [4, 5, 6]);
        let one = serde_json::to_vec(&wire("lobby", 9)).unwrap();
        let (head, events) = unpack(&one);
        assert!(head.is_none());
        assert_eq!(events.count(), 1);
    }

    /// A head is trusted to skip its record only when it fits: its room is the subject's, and
    /// its range counts the lines it leads.
    #[test]
    fn a_record_head_fits_only_its_own_subject_and_line_count() {
        let head = |room: &'static str, first: u64, last: u64| Head {
            node: "x".into(),
            boot: 1,
            room: room.into(),
            first,
            last,
        };
        assert!(head("lobby", 4, 6).fits("lc.room.lobby", 3));
        assert!(head("Dev", 1, 1).fits("lc.room.dev", 1));
        assert!(
            !head("lobby", 4, 6).fits("lc.room.lobby", 2),
            "a line short"
        );
        assert!(!head("lobby", 4, 6).fits("lc.room.lobby", 4), "a line over");
        assert!(
            !head("lobby", 4, 6).fits("lc.room.dev", 3),
            "another room's subject"
        );
        assert!(
            !head("lobby", 6, 4).fits("lc.room.lobby", 3),
            "a range backwards"
        );
        assert!(
            !head("lobby", 1, 1).fits("lc.live.lobby", 1),
            "not a room subject"
        );
    }

    /// A record is known to be delivered only when every one of its events is.
    #[test]
    fn a_record_is_through_only_up_to_what_was_delivered() {
        let t = Instant::now();
        let mut r = Reorder::default();
        assert!(!r.through("a", 1, "lobby", 1), "nothing heard yet");
        assert_eq!(take(&mut r, "lobby", 1, t), [1]);
        assert_eq!(take(&mut r, "lobby", 2, t), [2]);
        assert!(r.through("a", 1, "lobby", 2));
        assert!(!r.through("a", 1, "lobby", 3));
        assert!(take(&mut r, "lobby", 4, t).is_empty());
        assert!(!r.through("a", 1, "lobby", 4), "4 is held, 3 still missing");
        assert!(!r.through("a", 2, "lobby", 1), "another boot");
    }

    /// More than HELD_MAX events behind one gap: the gap is still waited for, and what came
    /// past the limit is dropped (the origin's records bring it again after the gap).
    #[test]
    fn a_gap_with_too_much_behind_it_drops_what_is_past_the_limit() {
        let t = Instant::now();
        let mut r = Reorder::default();
        assert_eq!(take(&mut r, "lobby", 1, t), [1]);
        let past = HELD_MAX as u64 + 3;
        for q in 3..=past {
            assert!(take(&mut r, "lobby", q, t).is_empty());
        }
        assert!(r.holding());
        assert!(r.rereads.is_empty(), "read again only once the gap closes");
        assert_eq!(take(&mut r, "lobby", 2, t), (2..past).collect::<Vec<_>>());
        assert!(!r.holding());
        let rooms: Vec<&str> = r.rereads.iter().map(|(room, _)| room.as_str()).collect();
        assert_eq!(
            rooms,
            ["lobby"],
            "what was dropped may have had its record already"
        );
        assert_eq!(take(&mut r, "lobby", past, t), [past]);
    }

    /// A gap given up with events dropped behind it asks for the room to be read again too;
    /// one with nothing dropped does not.
    #[test]
    fn a_gap_given_up_with_events_dropped_behind_it_reads_the_room_again() {
        let t = Instant::now();
        let mut r = Reorder::default();
        assert_eq!(take(&mut r, "lobby", 1, t), [1]);
        assert_eq!(take(&mut r, "dev", 1, t), [1]);
        let past = HELD_MAX as u64 + 3;
        for q in 3..=past {
            take(&mut r, "lobby", q, t);
        }
        assert!(take(&mut r, "dev", 3, t).is_empty());
        let later = t + GAP_WAIT;
        let given: Vec<u64> = r.give_up(later).into_iter().map(|w| w.rseq).collect();
        assert_eq!(given.len(), HELD_MAX + 1, "lobby's held and dev's 3");
        let rooms: Vec<&str> = r.rereads.iter().map(|(room, _)| room.as_str()).collect();
        assert_eq!(rooms, ["lobby"]);
    }

    /// A rename heard in a room moves the person to the new name with their rooms and
    /// protocol; its copy from another room changes nothing more, and one heard before the
    /// beat listed the person lists them under the new name.
    #[test]
    fn a_rename_moves_the_person_in_their_nodes_list() {
        let mut peer = Peer::default();
        peer.beat(Beat {
            seq: 1,
            people: vec![Person {
                nick: "alice".into(),
                proto: "line".into(),
                rooms: vec!["lobby".into(), "dev".into()],
                ..Person::default()
            }],
        });
        let nick = |room: &str| Change::Nick("Alice".into(), "alice2".into(), room.into());
        peer.heard(2, nick("lobby"));
        peer.heard(3, nick("dev"));
        assert!(!peer.people.contains_key("alice"));
        let moved = &peer.people["alice2"];
        assert_eq!(
            (moved.nick.as_str(), moved.proto.as_str()),
            ("alice2", "line")
        );
        assert_eq!(moved.rooms, ["lobby", "dev"]);
        let mut unlisted = Peer::default();
        unlisted.heard(1, Change::Nick("bob".into(), "bob2".into(), "dev".into()));
        assert_eq!(unlisted.people["bob2"].rooms, ["dev"]);
    }

    /// A beat from a node from before secret rooms travelled still reads, with none secret;
    /// someone heard entering a room the last beat had secret is secret there too, and
    /// listings keep such a room only from those not in it.
    #[test]
    fn secret_rooms_in_a_beat_are_kept_from_those_not_in_them() {
        let old: Beat =
            serde_json::from_str(r#"{"seq":1,"people":[{"nick":"bob","rooms":["dev"]}]}"#).unwrap();
        assert!(old.people[0].secret.is_empty());
        let mut peer = Peer::default();
        peer.beat(Beat {
            seq: 1,
            people: vec![Person {
                nick: "alice".into(),
                proto: "line".into(),
                rooms: vec!["lobby".into(), "dev".into()],
                secret: vec!["dev".into()],
                ..Person::default()
            }],
        });
        peer.heard(2, Change::Enter("carol".into(), "dev".into()));
        assert_eq!(peer.people["carol"].secret, ["dev"]);
        let alice = peer.people["alice"].clone();
        let outside = alice.clone().seen_from(&["lobby".into()], |_| false);
        assert_eq!(
            (outside.rooms, outside.secret),
            (vec!["lobby".to_owned()], vec![])
        );
        let inside = alice.clone().seen_from(&["dev".into()], |_| false);
        assert_eq!(inside.rooms, ["lobby", "dev"]);
        // A room this node follows and knows secret, before the person's node says so.
        let known_here = Person {
            secret: Vec::new(),
            ..alice
        };
        assert_eq!(known_here.seen_from(&[], |r| r == "dev").rooms, ["lobby"]);
    }

    #[test]
    fn standing_and_away_heard_change_the_list_at_once() {
        let mut peer = Peer::default();
        peer.heard(1, Change::Enter("alice".into(), "dev".into()));
        let op = |on| Change::Standing("dev".into(), Mode::Operator(on, "Alice".into()));
        peer.heard(2, op(true));
        peer.heard(3, Change::Away("alice".into(), Some("lunch".into())));
        let alice = &peer.people["alice"];
        assert!(alice.standing("DEV").op && !alice.standing("dev").voice);
        assert_eq!(alice.away.as_deref(), Some("lunch"));
        // A beat from before both keeps them: the changes heard since are applied again.
        peer.beat(Beat {
            seq: 1,
            people: vec![Person {
                nick: "alice".into(),
                rooms: vec!["dev".into()],
                ..Person::default()
            }],
        });
        assert!(peer.people["alice"].standing("dev").op);
        peer.heard(4, op(false));
        assert!(!peer.people["alice"].standing("dev").op);
        peer.heard(5, op(true));
        peer.heard(6, Change::Part("alice".into(), "dev".into()));
        peer.heard(7, Change::Enter("alice".into(), "dev".into()));
        assert!(
            !peer.people["alice"].standing("dev").op,
            "a standing leaves with them"
        );
    }

    #[test]
    fn a_room_subject_gives_back_its_room() {
        for room in ["dev", "a.b", "a_2eb", "x__y", "a_b.c-d"] {
            assert_eq!(subject_room(&room_subject(room)).as_deref(), Some(room));
        }
        assert_eq!(subject_room("lc.node.a"), None);
    }

    #[test]
    fn a_claim_value_gives_back_its_node_and_boot_old_or_new() {
        let value = claim_value("node-a.1", 42, 7);
        assert_eq!(value, "node-a.1:42:7");
        assert_eq!(claim_holder(value.as_bytes()), Some(("node-a.1", 42)));
        // As nodes from before the member wrote it.
        assert_eq!(claim_holder(b"node-a.1:42"), Some(("node-a.1", 42)));
        assert_eq!(claim_holder(b"node-a.1"), None);
        assert_eq!(claim_holder(b"node-a.1:x:7"), None);
    }

    fn claim(creator: &str, nodes: &[&str]) -> Claim {
        Claim {
            creator: creator.to_owned(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn a_room_claim_is_won_only_with_nobody_living_elsewhere() {
        let alive = |n: &str| n != "c.3";
        // Someone on b is in the room: a joins the set, and is no creator.
        let (alone, next) = entering(&claim("b.2:9", &["b.2"]), "a.1", Some("a.1:5"), alive);
        assert!(!alone);
        assert_eq!(next, Some(claim("b.2:9", &["b.2", "a.1"])));
        // Already in the set with b: nothing to write.
        let (alone, next) = entering(&claim("b.2:9", &["b.2", "a.1"]), "a.1", None, alive);
        assert_eq!((alone, next), (false, None));
        // Only a dead node (no lc_nodes entry) was there: it is dropped, a is the creator.
        let (alone, next) = entering(&claim("c.3:1", &["c.3"]), "a.1", Some("a.1:5"), alive);
        assert!(alone);
        assert_eq!(next, Some(claim("a.1:5", &["a.1"])));
        // A place with no member to name (people already here): the creator stays.
        let (alone, next) = entering(&claim("c.3:1", &["c.3"]), "a.1", None, alive);
        assert!(alone);
        assert_eq!(next, Some(claim("c.3:1", &["a.1"])));
    }

    #[test]
    fn a_room_claim_goes_with_its_last_living_node() {
        let alive = |n: &str| n != "c.3";
        let two = claim("a.1:5", &["a.1", "b.2"]);
        assert_eq!(
            leaving(&two, "a.1", alive),
            Leaving::Write(claim("a.1:5", &["b.2"]))
        );
        assert_eq!(leaving(&two, "d.4", alive), Leaving::Nothing);
        assert_eq!(
            leaving(&claim("a.1:5", &["a.1"]), "a.1", alive),
            Leaving::Delete
        );
        // Nobody living left but for a dead node's place: deleted too.
        let with_dead = claim("a.1:5", &["c.3", "a.1"]);
        assert_eq!(leaving(&with_dead, "a.1", alive), Leaving::Delete);
    }

    #[test]
    fn nick_keys_are_case_blind_and_kv_safe() {
        assert_eq!(nick_subject_key("Bob"), nick_subject_key("bOB"));
        assert!(nick_subject_key("a[]\\^{}|`")
            .bytes()
            .all(|b| b.is_ascii_hexdigit()));
    }
}
