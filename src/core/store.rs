//! Where rooms, topics and history outlive the process: the one interface the hub keeps them
//! through. The embedded log (`crate::store`) implements it over a data directory; a cluster
//! link can implement it over a replicated stream. Without one, history lives in memory only.
//!
//! The promise it carries: a change is handed over with [`Store::append`] under the hub's lock,
//! before its event is queued for anyone, and every connection's writer calls
//! [`Store::barrier`] before it writes to its socket. So nothing can be delivered before the
//! store holds what it shows, while the hub itself never waits for the disk.

use std::fmt;
use std::sync::Arc;

use super::event::Event;
use super::modes::Modes;
use super::room::{Lists, Topic};

/// One change worth keeping.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// A message, action or notice said in a room (the room is the event's target).
    Said(&'a Arc<Event>),
    /// A room's topic was set, by the event with this id.
    Topic {
        room: &'a str,
        id: u64,
        topic: &'a Topic,
    },
    /// A room's modes changed, by the event with this id.
    Modes {
        room: &'a str,
        id: u64,
        modes: Modes,
    },
    /// A room's bans, mutes or operating accounts changed, by the event with this id: the
    /// whole lists, as they are now.
    Lists {
        room: &'a str,
        id: u64,
        lists: &'a Lists,
    },
}

/// What the store kept of a room besides its history.
#[derive(Debug, Clone, Default)]
pub struct KeptState {
    pub topic: Option<Topic>,
    pub modes: Option<Modes>,
    pub lists: Option<Lists>,
}

/// A room as the store kept it.
#[derive(Debug, Clone)]
pub struct KeptRoom {
    pub name: Arc<str>,
    pub topic: Option<Topic>,
    pub modes: Option<Modes>,
    pub lists: Option<Lists>,
    /// Its most recent messages, oldest first.
    pub events: Vec<Arc<Event>>,
}

/// What a store had when it was opened: the hub starts from it.
#[derive(Debug, Default)]
pub struct Kept {
    pub rooms: Vec<KeptRoom>,
    /// One more than the highest event id ever kept, so ids (IRC `msgid`) never repeat.
    pub next_event: u64,
}

/// The store's figures, for `/metrics`, Prometheus and the health check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Records in the operating system's hands (written), since start.
    pub written: u64,
    /// Records that could not be written (disk full, I/O errors) and are only in memory.
    pub failed: u64,
    /// Messages retention removed (count, age or the byte budget), since start.
    pub expired: u64,
    /// Messages kept now, and the bytes of the log files on disk.
    pub messages: u64,
    pub disk_bytes: u64,
    /// The last write failed and none has succeeded since.
    pub degraded: bool,
}

pub trait Store: Send + Sync + fmt::Debug {
    /// Keeps `change`. Called under the hub's lock, in the order the room saw it, before the
    /// event is queued for anyone: it must not wait for the disk.
    fn append(&self, change: Change<'_>);

    /// Returns once every change appended so far is in the store (for the embedded log: in
    /// the operating system's hands, or on the disk with `--fsync-interval always`), or has
    /// failed and been counted. Called by a connection's writer before each write.
    fn barrier(&self);

    /// Up to `n` messages of the room called `room` (any case) with ids below `before`,
    /// newest first: what memory no longer holds.
    fn older(&self, room: &str, before: u64, n: usize) -> Vec<Arc<Event>>;

    /// The topic, modes and lists kept for the room called `room`, if any: a room the hub
    /// forgot (too many idle rooms) comes back as it was.
    fn room(&self, room: &str) -> Option<KeptState>;

    fn stats(&self) -> StoreStats;
}
