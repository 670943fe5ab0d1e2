//! Rooms: who is in each, its topic, its bounded history, and how history is shown.
//!
//! The hub owns every [`Room`] under its one lock; this module holds what a room is and the
//! pure parts (name rules, history rendering) so they can be tested without a server.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use thiserror::Error;
use time::macros::format_description;
use time::OffsetDateTime;

use crate::hub::{validate_nick, Client, ClientId};

/// Rooms are numbered for the hub's maps: a chat line looks its room up by number, not by
/// hashing a name.
pub type RoomId = u64;

/// Where every client starts, and where `/leave` goes. Never removed.
pub const LOBBY: &str = "lobby";
pub const LOBBY_ID: RoomId = 0;

/// Rooms kept after their last member left because they hold history. Without a bound, one
/// client could create rooms one message at a time until memory ran out; past it the room
/// that has been empty longest is forgotten.
pub const MAX_IDLE_ROOMS: usize = 1000;

/// Why a room command could not be done. `Display` is what the client is told.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RoomError {
    #[error(
        "Error: a room name is 1-32 characters: ASCII letters, digits, '_', '-' or '.', \
         starting with a letter."
    )]
    InvalidName,
    #[error("Error: there is no room called {0}; /rooms lists them.")]
    NoSuchRoom(String),
    #[error("You are already in {0}.")]
    AlreadyThere(Arc<str>),
}

/// The display name and lookup key of a room name as typed. Room names follow the nickname
/// rules; a leading `#` is dropped, since IRC users type it out of habit.
pub fn room_name(typed: &str) -> Result<(&str, String), RoomError> {
    let name = typed.strip_prefix('#').unwrap_or(typed);
    validate_nick(name).map_err(|_| RoomError::InvalidName)?;
    Ok((name, name.to_ascii_lowercase()))
}

/// One stored chat line: the exact bytes the room was sent (`alice: hi\n`), shared with every
/// recipient's queue, and when it was sent.
#[derive(Debug, Clone)]
pub struct Entry {
    pub at: SystemTime,
    pub line: Bytes,
}

#[derive(Debug, Clone)]
pub struct Topic {
    pub text: String,
    pub by: Arc<str>,
}

#[derive(Debug)]
pub struct Room {
    /// As first written by whoever created it.
    pub name: Arc<str>,
    /// The fan-out list: a chat line walks this vector and nothing else. Each member's index
    /// here is kept in the hub's member record so leaving is a `swap_remove`.
    pub members: Vec<Arc<Client>>,
    pub topic: Option<Topic>,
    history: VecDeque<Entry>,
    /// Chat lines and actions ever sent here, retained or not.
    pub messages: u64,
    /// Counts how often the room has emptied, so a stale entry in the hub's idle list cannot
    /// evict a room that has been re-entered and left again since.
    pub emptied: u64,
    /// Arrivals and departures not announced one by one because the room was too big; told
    /// to the room in the next presence summary.
    quiet_arrivals: u32,
    quiet_departures: u32,
}

impl Room {
    pub fn new(name: &str) -> Room {
        Room {
            name: name.into(),
            members: Vec::new(),
            topic: None,
            history: VecDeque::new(),
            messages: 0,
            emptied: 0,
            quiet_arrivals: 0,
            quiet_departures: 0,
        }
    }

    /// Queues `msg` for every member but `except` and returns how many it was queued for. A
    /// full queue kicks its owner, whose session does the leaving outside the hub's lock.
    pub fn fan_out(&self, msg: &Bytes, except: Option<ClientId>) -> usize {
        let mut delivered = 0;
        for client in &self.members {
            if Some(client.id) != except {
                delivered += usize::from(client.push(msg.clone()).is_ok());
            }
        }
        delivered
    }

    /// Someone arrived (`arrived`) or left. Up to `limit` listeners (0 = no limit) each of
    /// them hears `notice`; a bigger room only counts it for [`Room::presence_summary`], since
    /// announcing every join to everyone costs N²/2 lines as a room fills.
    pub fn presence(&mut self, arrived: bool, limit: usize, notice: impl FnOnce() -> String) {
        if limit == 0 || self.members.len() <= limit {
            self.fan_out(&Bytes::from(notice()), None);
        } else if arrived {
            self.quiet_arrivals += 1;
        } else {
            self.quiet_departures += 1;
        }
    }

    /// The summary of the arrivals and departures counted since the last one, or `None` if
    /// there were none (or nobody is left to tell).
    pub fn presence_summary(&mut self, period_secs: u64) -> Option<Bytes> {
        let (joined, left) = (self.quiet_arrivals, self.quiet_departures);
        self.quiet_arrivals = 0;
        self.quiet_departures = 0;
        if joined + left == 0 || self.members.is_empty() {
            return None;
        }
        let people = |n: u32| if n == 1 { "person" } else { "people" };
        let what = match (joined, left) {
            (j, 0) => format!("{j} {} joined", people(j)),
            (0, l) => format!("{l} {} left", people(l)),
            (j, l) => format!("{j} {} joined and {l} left", people(j)),
        };
        Some(Bytes::from(format!(
            "{what} in the last {period_secs} s ({} here now).\n",
            self.members.len()
        )))
    }

    /// Counts a chat line and keeps it, dropping the oldest beyond `retain`.
    pub fn record(&mut self, line: &Bytes, at: SystemTime, retain: usize) {
        self.messages += 1;
        if retain == 0 {
            return;
        }
        while self.history.len() >= retain {
            self.history.pop_front();
        }
        self.history.push_back(Entry {
            at,
            line: line.clone(),
        });
    }

    pub fn has_history(&self) -> bool {
        !self.history.is_empty()
    }

    /// The last `n` entries, newest first.
    pub fn recent(&self, n: usize) -> impl Iterator<Item = &Entry> {
        self.history.iter().rev().take(n)
    }
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

/// History as one message, set apart from live traffic by a header and a footer. `newest_first`
/// is walked until `budget` bytes are used, so a long history cannot overflow the reader's
/// queue and get it disconnected as a slow consumer; the header then says how much was left out.
pub fn render_history<'a>(
    room: &str,
    newest_first: impl Iterator<Item = &'a Entry>,
    budget: usize,
) -> Bytes {
    const STAMP_MAX: usize = "[2026-11-26 09:15:02] ".len();
    let mut shown = Vec::new();
    let mut used = 0;
    let mut total = 0;
    for entry in newest_first {
        total += 1;
        let cost = STAMP_MAX + entry.line.len();
        if shown.len() == total - 1 && used + cost <= budget {
            used += cost;
            shown.push(entry);
        }
    }
    let today = OffsetDateTime::now_utc().date();
    let mut out = String::with_capacity(used + 160);
    let what = match (shown.len(), total) {
        (1, 1) => "the last message".to_owned(),
        (n, t) if n == t => format!("the last {n} messages"),
        (n, t) => format!("the last {n} of {t} messages (the rest would overflow your queue)"),
    };
    let _ = writeln!(out, "--- History of {room}: {what}, times in UTC ---");
    for entry in shown.iter().rev() {
        out.push_str(&stamp(entry.at, today));
        out.push_str(&String::from_utf8_lossy(&entry.line));
    }
    out.push_str("--- End of history ---\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn entry(secs: u64, line: &str) -> Entry {
        Entry {
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            line: Bytes::from(format!("{line}\n")),
        }
    }

    #[test]
    fn room_names_follow_nickname_rules() {
        assert_eq!(room_name("Dev").unwrap(), ("Dev", "dev".to_owned()));
        assert_eq!(room_name("#ops").unwrap(), ("ops", "ops".to_owned()));
        for bad in ["", "#", "9x", "a b", "##x", "é"] {
            assert_eq!(room_name(bad), Err(RoomError::InvalidName), "{bad}");
        }
    }

    #[test]
    fn retention_drops_the_oldest() {
        let mut room = Room::new("r");
        let lines: Vec<Bytes> = (0..5).map(|i| Bytes::from(format!("{i}\n"))).collect();
        for line in &lines {
            room.record(line, SystemTime::UNIX_EPOCH, 3);
        }
        assert_eq!(room.messages, 5);
        let kept: Vec<&[u8]> = room.recent(10).map(|e| &e.line[..]).collect();
        assert_eq!(kept, [&b"4\n"[..], b"3\n", b"2\n"]);
        let mut off = Room::new("r");
        off.record(&lines[0], SystemTime::UNIX_EPOCH, 0);
        assert!(!off.has_history());
        assert_eq!(off.messages, 1);
    }

    #[test]
    fn history_is_framed_oldest_first_with_times_and_bounded_by_budget() {
        let entries = [
            entry(3, "carol: c"),
            entry(2, "* bob waves"),
            entry(1, "alice: a"),
        ];
        let text = render_history("dev", entries.iter(), 10_000);
        assert_eq!(
            std::str::from_utf8(&text).unwrap(),
            "--- History of dev: the last 3 messages, times in UTC ---\n\
             [1970-01-01 00:00:01] alice: a\n\
             [1970-01-01 00:00:02] * bob waves\n\
             [1970-01-01 00:00:03] carol: c\n\
             --- End of history ---\n"
        );
        let cut = render_history("dev", entries.iter(), 70);
        let cut = std::str::from_utf8(&cut).unwrap();
        assert!(
            cut.starts_with("--- History of dev: the last 2 of 3 messages (the rest"),
            "{cut}"
        );
        assert!(!cut.contains("alice: a"), "{cut}");
        let now = Entry {
            at: SystemTime::now(),
            line: Bytes::from_static(b"x: y\n"),
        };
        let one = render_history("r", std::iter::once(&now), 1000);
        let one = std::str::from_utf8(&one).unwrap();
        assert!(one.contains("the last message,"), "{one}");
        // Today's lines carry the time alone.
        assert_eq!(one.lines().nth(1).unwrap().len(), "[00:00:00] x: y".len());
    }
}
