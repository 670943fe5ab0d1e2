//! The log's bytes. A segment file is a header, then records:
//!
//! ```text
//! header:  "LINECHAT" (8 bytes)  version: u32 LE  (12 bytes)
//! record:  length: u32 LE  crc32(payload): u32 LE  payload (length bytes)
//! payload: type: u8, then by type
//!   1 said:   id u64, at i64 (µs since 1970), kind u8 (0 message, 1 action, 2 notice),
//!             room, nick, user, host, text
//!   2 topic:  id u64, at i64, room, by, text
//!   3 modes:  id u64, at i64, room, flags u8 (1 topic lock, 2 secret, 4 moderated,
//!             8 invite-only; a reader ignores bits it does not know)
//!   4 lists:  id u64, at i64, room, then three lists, each a count u32 and its entries:
//!             bans (mask, by, at i64), mutes (mask, by, at i64), operating accounts (name)
//!             (format 2 on)
//! strings: length u32 LE, UTF-8 bytes
//! ```
//!
//! Integers are little-endian. A newer version of linechat reads every older version (a
//! committed fixture of version 1 is opened by the tests); it refuses a newer one, by name.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::core::event::{Event, Identity, Kind, Target};
use crate::core::modes::Modes;
use crate::core::room::{Listed, Lists, Topic};

pub const MAGIC: &[u8; 8] = b"LINECHAT";
/// The format written now. 2 added the lists record; a segment of format 1 holds none, and
/// reads as it always did.
pub const VERSION: u32 = 2;
pub const HEADER_LEN: usize = 12;
/// Length and CRC before each payload.
pub const FRAME_LEN: usize = 8;

const SAID: u8 = 1;
const TOPIC: u8 = 2;
const MODES: u8 = 3;
const LISTS: u8 = 4;

pub fn header() -> [u8; HEADER_LEN] {
    let mut h = [0; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// The version a segment's header names, or why it is not a segment.
pub fn version(header: &[u8]) -> Result<u32, String> {
    if header.len() < HEADER_LEN || &header[..8] != MAGIC {
        return Err("not a linechat log segment (bad header)".into());
    }
    let v = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if v == 0 || v > VERSION {
        return Err(format!(
            "written in store format {v}, newer than this linechat reads ({VERSION}); \
             run the newer linechat that wrote it"
        ));
    }
    Ok(v)
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Said {
        id: u64,
        at: SystemTime,
        kind: u8,
        room: String,
        nick: String,
        user: String,
        host: String,
        text: String,
    },
    Topic {
        id: u64,
        at: SystemTime,
        room: String,
        by: String,
        text: String,
    },
    Modes {
        id: u64,
        at: SystemTime,
        room: String,
        modes: Modes,
    },
    Lists {
        id: u64,
        at: SystemTime,
        room: String,
        lists: Lists,
    },
}

impl Record {
    pub fn id(&self) -> u64 {
        match self {
            Record::Said { id, .. }
            | Record::Topic { id, .. }
            | Record::Modes { id, .. }
            | Record::Lists { id, .. } => *id,
        }
    }

    pub fn room(&self) -> &str {
        match self {
            Record::Said { room, .. }
            | Record::Topic { room, .. }
            | Record::Modes { room, .. }
            | Record::Lists { room, .. } => room,
        }
    }

    pub fn at(&self) -> SystemTime {
        match self {
            Record::Said { at, .. }
            | Record::Topic { at, .. }
            | Record::Modes { at, .. }
            | Record::Lists { at, .. } => *at,
        }
    }

    /// The event a `Said` record was made from, as history shows it (the sender's connection
    /// number is gone with the process: 0).
    pub fn event(&self) -> Option<Arc<Event>> {
        let Record::Said {
            id,
            at,
            kind,
            room,
            nick,
            user,
            host,
            text,
        } = self
        else {
            return None;
        };
        let text: Box<str> = text.as_str().into();
        let kind = match kind {
            1 => Kind::Action(text),
            2 => Kind::Notice(text),
            _ => Kind::Message(text),
        };
        let from = Identity {
            id: 0,
            nick: nick.as_str().into(),
            user: user.as_str().into(),
            host: host.as_str().into(),
            realname: "".into(),
            account: None,
        };
        Some(Event::at(
            *id,
            *at,
            Target::Room(room.as_str().into()),
            Some(Arc::new(from)),
            kind,
        ))
    }

    pub fn topic(&self) -> Option<Topic> {
        match self {
            Record::Topic { at, by, text, .. } => Some(Topic {
                text: text.as_str().into(),
                by: by.as_str().into(),
                at: *at,
            }),
            _ => None,
        }
    }
}

fn micros(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

fn time(micros: i64) -> SystemTime {
    let d = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

struct Out<'a>(&'a mut Vec<u8>);

impl Out<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn at(&mut self, at: SystemTime) {
        self.0.extend_from_slice(&micros(at).to_le_bytes());
    }
    /// A count (of list entries: at most a few hundred).
    fn u32(&mut self, n: usize) {
        let n = u32::try_from(n).expect("a list under 4 G entries");
        self.0.extend_from_slice(&n.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        let len = u32::try_from(s.len()).expect("chat text under 4 GiB");
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
}

/// Appends one framed record for `event` (a message, action or notice in a room) to `buf`;
/// false (nothing appended) for any other event.
pub fn encode_said(buf: &mut Vec<u8>, event: &Event) -> bool {
    let (kind, text) = match &event.kind {
        Kind::Message(t) => (0, t),
        Kind::Action(t) => (1, t),
        Kind::Notice(t) => (2, t),
        _ => return false,
    };
    let (Some(room), Some(from)) = (event.room(), &event.from) else {
        return false;
    };
    frame(buf, |out| {
        out.u8(SAID);
        out.u64(event.id);
        out.at(event.at);
        out.u8(kind);
        out.str(room);
        out.str(&from.nick);
        out.str(&from.user);
        out.str(&from.host);
        out.str(text);
    });
    true
}

pub fn encode_topic(buf: &mut Vec<u8>, room: &str, id: u64, topic: &Topic) {
    frame(buf, |out| {
        out.u8(TOPIC);
        out.u64(id);
        out.at(topic.at);
        out.str(room);
        out.str(&topic.by);
        out.str(&topic.text);
    });
}

pub fn encode_modes(buf: &mut Vec<u8>, room: &str, id: u64, modes: Modes) {
    frame(buf, |out| {
        out.u8(MODES);
        out.u64(id);
        out.at(SystemTime::now());
        out.str(room);
        out.u8(u8::from(modes.topic_lock)
            | u8::from(modes.secret) << 1
            | u8::from(modes.moderated) << 2
            | u8::from(modes.invite_only) << 3);
    });
}

pub fn encode_lists(buf: &mut Vec<u8>, room: &str, id: u64, lists: &Lists) {
    frame(buf, |out| {
        out.u8(LISTS);
        out.u64(id);
        out.at(SystemTime::now());
        out.str(room);
        for list in [&lists.bans, &lists.mutes] {
            out.u32(list.len());
            for entry in list {
                out.str(&entry.mask);
                out.str(&entry.by);
                out.at(entry.at);
            }
        }
        out.u32(lists.operators.len());
        for account in &lists.operators {
            out.str(account);
        }
    });
}

/// Writes the frame (length, CRC) around what `body` appends.
fn frame(buf: &mut Vec<u8>, body: impl FnOnce(&mut Out<'_>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; FRAME_LEN]);
    body(&mut Out(buf));
    let payload = &buf[start + FRAME_LEN..];
    let len = u32::try_from(payload.len()).expect("record under 4 GiB");
    let crc = crc32fast::hash(payload);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What is at the start of `bytes`.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// A whole record, `len` bytes with its frame.
    Record(Record, usize),
    /// The rest is too short for the record it starts, or fails its CRC: a write cut short
    /// (power loss, a full disk) or damage.
    Torn,
    End,
}

/// Reads the record at the start of `bytes`.
pub fn next(bytes: &[u8]) -> Next {
    if bytes.is_empty() {
        return Next::End;
    }
    let Some((payload, len)) = payload(bytes) else {
        return Next::Torn;
    };
    match decode(payload) {
        Some(r) => Next::Record(r, len),
        None => Next::Torn,
    }
}

/// The payload of the framed record at the start of `bytes` and the frame's whole length, if
/// it is whole and its CRC matches.
pub fn payload(bytes: &[u8]) -> Option<(&[u8], usize)> {
    if bytes.len() < FRAME_LEN {
        return None;
    }
    let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let payload = bytes.get(FRAME_LEN..FRAME_LEN + len)?;
    (crc32fast::hash(payload) == crc).then_some((payload, FRAME_LEN + len))
}

struct In<'a>(&'a [u8]);

impl<'a> In<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn at(&mut self) -> Option<SystemTime> {
        self.take(8)
            .map(|b| time(i64::from_le_bytes(b.try_into().expect("8 bytes"))))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn str(&mut self) -> Option<String> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
        let bytes = self.take(len as usize)?;
        String::from_utf8(bytes.to_vec()).ok()
    }
}

/// What the index needs of a payload, without copying its strings: its type (see
/// [`Record`]: 1 said, 2 topic, 3 modes), id, time (µs since 1970) and room.
pub fn peek(payload: &[u8]) -> Option<(u8, u64, i64, &str)> {
    let mut r = In(payload);
    let kind = r.u8()?;
    if !(SAID..=LISTS).contains(&kind) {
        return None;
    }
    let id = r.u64()?;
    let at = i64::from_le_bytes(r.take(8)?.try_into().ok()?);
    if kind == SAID {
        r.u8()?;
    }
    let len = u32::from_le_bytes(r.take(4)?.try_into().ok()?);
    let room = std::str::from_utf8(r.take(len as usize)?).ok()?;
    Some((kind, id, at, room))
}

pub const TYPE_SAID: u8 = SAID;

/// A payload's record; `None` if it is not one this version knows. Format 2 only adds a
/// record type, so one reader serves segments of either.
pub fn decode(payload: &[u8]) -> Option<Record> {
    let mut r = In(payload);
    let record = match r.u8()? {
        SAID => Record::Said {
            id: r.u64()?,
            at: r.at()?,
            kind: r.u8()?,
            room: r.str()?,
            nick: r.str()?,
            user: r.str()?,
            host: r.str()?,
            text: r.str()?,
        },
        TOPIC => Record::Topic {
            id: r.u64()?,
            at: r.at()?,
            room: r.str()?,
            by: r.str()?,
            text: r.str()?,
        },
        MODES => {
            let (id, at, room, flags) = (r.u64()?, r.at()?, r.str()?, r.u8()?);
            Record::Modes {
                id,
                at,
                room,
                modes: Modes {
                    topic_lock: flags & 1 != 0,
                    secret: flags & 2 != 0,
                    moderated: flags & 4 != 0,
                    invite_only: flags & 8 != 0,
                },
            }
        }
        LISTS => {
            let (id, at, room) = (r.u64()?, r.at()?, r.str()?);
            let mut masks = || -> Option<Vec<Listed>> {
                let n = r.u32()?;
                // Bounded by what is there: a damaged count cannot make a huge allocation.
                let mut list = Vec::with_capacity(n.min(1024) as usize);
                for _ in 0..n {
                    let (mask, by, at) = (r.str()?, r.str()?, r.at()?);
                    list.push(Listed::new(&mask, &by, at));
                }
                Some(list)
            };
            let (bans, mutes) = (masks()?, masks()?);
            let n = r.u32()?;
            let mut operators = Vec::with_capacity(n.min(1024) as usize);
            for _ in 0..n {
                operators.push(r.str()?.into());
            }
            Record::Lists {
                id,
                at,
                room,
                lists: Lists {
                    bans,
                    mutes,
                    operators,
                },
            }
        }
        _ => return None,
    };
    Some(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written_and_damage_is_seen() {
        let event = Event::at(
            7,
            UNIX_EPOCH + Duration::from_micros(1_796_000_000_123_456),
            Target::Room("Dev".into()),
            Some(Arc::new(Identity {
                id: 3,
                nick: "alice".into(),
                user: "al".into(),
                host: "127.0.0.1".into(),
                realname: "Alice".into(),
                account: None,
            })),
            Kind::Action("waves ✋".into()),
        );
        let mut buf = Vec::new();
        assert!(encode_said(&mut buf, &event));
        let topic = Topic {
            text: "release on friday".into(),
            by: "bob".into(),
            at: UNIX_EPOCH + Duration::from_secs(1_796_000_000),
        };
        encode_topic(&mut buf, "Dev", 8, &topic);
        let Next::Record(first, len) = next(&buf) else {
            panic!("a record")
        };
        let back = first.event().expect("an event");
        assert_eq!((back.id, back.at, back.nick()), (7, event.at, "alice"));
        assert!(matches!(&back.kind, Kind::Action(t) if &**t == "waves ✋"));
        let Next::Record(second, len2) = next(&buf[len..]) else {
            panic!("a record")
        };
        assert_eq!(
            second.topic().map(|t| t.text),
            Some("release on friday".into())
        );
        assert_eq!(next(&buf[len + len2..]), Next::End);
        // A cut-short write and a flipped bit are both torn, never misread.
        assert_eq!(next(&buf[..len - 1]), Next::Torn);
        let mut flipped = buf.clone();
        flipped[len - 2] ^= 1;
        assert_eq!(next(&flipped), Next::Torn);
        let lists = Lists {
            bans: vec![Listed::new("bob!*@*", "alice", topic.at)],
            mutes: vec![
                Listed::new("*!*@10.0.0.9", "alice", topic.at),
                Listed::new("c?rol!*@*", "dave", topic.at),
            ],
            operators: vec!["alice".into()],
        };
        let mut more = Vec::new();
        encode_lists(&mut more, "Dev", 9, &lists);
        let Next::Record(
            Record::Lists {
                id,
                room,
                lists: back,
                ..
            },
            n,
        ) = next(&more)
        else {
            panic!("a lists record")
        };
        assert_eq!((id, room.as_str(), n), (9, "Dev", more.len()));
        assert_eq!(back, lists);
        assert!(back.mutes[1].matches("carol!x@y"));
        assert_eq!(next(&more[..n - 1]), Next::Torn);
        assert!(version(&header()).is_ok());
        let mut newer = header();
        newer[8] = 9;
        assert!(version(&newer).unwrap_err().contains("format 9"));
    }
}
