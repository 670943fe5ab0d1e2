//! Chat transcripts: every chat event appended to a file as one JSON line, written off the hot
//! path.
//!
//! The hub records events under its lock (so the transcript has them in the order the room saw
//! them) with a non-blocking push into a bounded channel; a dedicated thread drains it and
//! writes. A thread rather than a task because file writes block, and a disk that stalls must
//! stall only this thread: when the channel is full, chat goes on and the event is counted as
//! dropped (and logged, at most every [`DROP_LOG_INTERVAL`]) instead of slowing the room or
//! growing memory. The hub hands over its own shared event, so recording one costs two
//! reference-count increments and no copy; it is encoded on the writer thread.
//!
//! Each line: `{"time":"2026-11-27T09:15:02.123Z","room":"lobby","sender":"alice",
//! "kind":"message","text":"hello"}`. `kind` is `message`, `action` or `notice` (text: what was
//! said), `join` or `enter` (text empty), `part` (text: the parting message, if any), `leave`
//! (text: the reason, as in the leave notice, or an IRC QUIT's message; recorded once for each
//! room the leaver was in), `nick` (sender: the old name, text: the new one), `topic` (text:
//! the new topic) or `mode` (text: what an operator changed, e.g. `topic unlocked, op bob`). [`Control::reopen`] makes the writer reopen the path, for log rotation
//! on SIGHUP.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::oneshot;

use crate::core::event::{Event, Kind};
use crate::core::hub::Journal;
use crate::core::room::Mode;
use crate::core::LeaveReason;
use crate::ops::metrics::TranscriptCounters;

/// Events the writer may fall behind by before new ones are dropped. A disk that keeps up
/// drains this within a write; one that stalls for a second under 8 000 messages/s fills it.
/// Memory stays bounded: an event is some 100 bytes plus its share of the line it records.
pub const DEFAULT_CAPACITY: usize = 8192;

/// How often, at most, dropped events are logged: a stalled disk drops thousands per second,
/// and one log line each would make the log the next thing to stall.
pub const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Events written with one `write` at most, so a burst is written in a few large writes.
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// An event as the writer receives it: the room it is recorded under (a departure is recorded
/// once for each room the leaver was in) and the hub's event itself, shared, not copied.
#[derive(Debug)]
struct Entry {
    room: Arc<str>,
    event: Arc<Event>,
}

#[derive(Debug)]
enum Msg {
    Event(Entry),
    /// Wakes the writer to look at its control flags.
    Wake,
}

/// An opened transcript file, not yet being written. Opening first lets the caller report a
/// bad path before the server starts.
#[derive(Debug)]
pub struct Transcript {
    path: PathBuf,
    file: File,
    rx: Receiver<Msg>,
    tx: SyncSender<Msg>,
    control: Control,
}

impl Transcript {
    /// Opens `path` for appending (creating it, readable by owner and group only: chat is
    /// private), with room for `capacity` events between the room and the disk.
    pub fn open(path: impl Into<PathBuf>, capacity: usize) -> io::Result<Transcript> {
        let path = path.into();
        let file = open_append(&path)?;
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let control = Control(Arc::new(ControlInner {
            reopen: AtomicBool::new(false),
            close: AtomicBool::new(false),
            wake: tx.clone(),
        }));
        Ok(Transcript {
            path,
            file,
            rx,
            tx,
            control,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle that can ask the writer to reopen the file (SIGHUP) from anywhere.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// Starts the writer thread. Events given to the returned [`Recorder`] are written; the
    /// [`Writer`] stops it.
    pub fn start(self, counters: Arc<TranscriptCounters>) -> io::Result<(Recorder, Writer)> {
        counters.enabled.store(true, Relaxed);
        let (done_tx, done_rx) = oneshot::channel();
        let control = self.control.clone();
        let state = WriterState {
            path: self.path.clone(),
            file: self.file,
            control: self.control.0.clone(),
            counters: counters.clone(),
            failing: false,
        };
        let rx = self.rx;
        std::thread::Builder::new()
            .name("transcript".into())
            .spawn(move || {
                state.run(rx);
                let _ = done_tx.send(());
            })?;
        tracing::info!(path = %self.path.display(), "writing the chat transcript");
        let recorder = Recorder {
            tx: self.tx,
            counters,
            epoch: Instant::now(),
            next_drop_log_ms: AtomicU64::new(0),
        };
        Ok((
            recorder,
            Writer {
                control,
                done: done_rx,
            },
        ))
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// Asks the writer to reopen its file or to stop; cheap to clone.
#[derive(Debug, Clone)]
pub struct Control(Arc<ControlInner>);

#[derive(Debug)]
struct ControlInner {
    reopen: AtomicBool,
    close: AtomicBool,
    wake: SyncSender<Msg>,
}

impl Control {
    /// Reopens the transcript path before the next write: after logrotate renamed the file,
    /// new events go to a new file under the old name.
    pub fn reopen(&self) {
        self.0.reopen.store(true, Relaxed);
        self.wake();
    }

    fn wake(&self) {
        // A full channel means the writer is busy and checks the flags before its next write.
        let _ = self.0.wake.try_send(Msg::Wake);
    }
}

/// The running writer, as the server holds it to stop it.
#[derive(Debug)]
pub struct Writer {
    control: Control,
    done: oneshot::Receiver<()>,
}

impl Writer {
    /// Writes what is buffered and stops, waiting at most `within`; a writer stuck on a stalled
    /// disk is left behind (it is a plain thread; process exit ends it).
    pub async fn close(self, within: Duration) {
        self.control.0.close.store(true, Relaxed);
        self.control.wake();
        if tokio::time::timeout(within, self.done).await.is_err() {
            tracing::warn!("the transcript writer did not finish within {within:?}; leaving it");
        }
    }
}

/// The sending side, held by the hub.
#[derive(Debug)]
pub struct Recorder {
    tx: SyncSender<Msg>,
    counters: Arc<TranscriptCounters>,
    epoch: Instant,
    /// Milliseconds since `epoch` before which no further drop is logged.
    next_drop_log_ms: AtomicU64,
}

impl Recorder {
    /// Hands an event to the writer without waiting; when the writer is a whole buffer behind,
    /// the event is dropped and counted.
    pub fn record(&self, room: &Arc<str>, event: &Arc<Event>) {
        let entry = Entry {
            room: room.clone(),
            event: event.clone(),
        };
        match self.tx.try_send(Msg::Event(entry)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.dropped(),
        }
    }

    fn dropped(&self) {
        let total = self.counters.dropped.fetch_add(1, Relaxed) + 1;
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_drop_log_ms.load(Relaxed);
        let later = now.saturating_add(DROP_LOG_INTERVAL.as_millis() as u64);
        if now >= next
            && self
                .next_drop_log_ms
                .compare_exchange(next, later, Relaxed, Relaxed)
                .is_ok()
        {
            tracing::warn!(
                dropped_total = total,
                "the transcript cannot keep up: chat events are being left out of it \
                 (chat is unaffected; logged at most every {DROP_LOG_INTERVAL:?})"
            );
        }
    }
}

/// The writer thread's state.
struct WriterState {
    path: PathBuf,
    file: File,
    control: Arc<ControlInner>,
    counters: Arc<TranscriptCounters>,
    /// Whether the last write failed, so a failing disk is logged once, not per batch.
    failing: bool,
}

impl WriterState {
    fn run(mut self, rx: Receiver<Msg>) {
        let mut batch = Vec::with_capacity(MAX_BATCH_BYTES);
        let mut lines = 0u64;
        // `recv` fails only when every sender is gone; `close` normally ends the loop first.
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            while let Some(msg) = next {
                if let Msg::Event(event) = msg {
                    encode(&event, &mut batch);
                    lines += 1;
                }
                if batch.len() >= MAX_BATCH_BYTES {
                    self.write(&mut batch, &mut lines);
                }
                next = rx.try_recv().ok();
            }
            self.write(&mut batch, &mut lines);
            if self.control.close.load(Relaxed) {
                break;
            }
        }
        self.write(&mut batch, &mut lines);
    }

    /// Writes the batch, reopening the file first if asked to.
    fn write(&mut self, batch: &mut Vec<u8>, lines: &mut u64) {
        if self.control.reopen.swap(false, Relaxed) {
            self.reopen();
        }
        if batch.is_empty() {
            return;
        }
        match self.file.write_all(batch) {
            Ok(()) => {
                self.counters.written.fetch_add(*lines, Relaxed);
                if std::mem::take(&mut self.failing) {
                    tracing::info!(path = %self.path.display(), "transcript writes work again");
                }
            }
            Err(e) => {
                self.counters.write_errors.fetch_add(*lines, Relaxed);
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::error!(
                        path = %self.path.display(), error = %e,
                        "cannot write the transcript; its lines are lost until writes work again"
                    );
                }
            }
        }
        batch.clear();
        *lines = 0;
    }

    fn reopen(&mut self) {
        match open_append(&self.path) {
            Ok(file) => {
                self.file = file;
                tracing::info!(path = %self.path.display(), "transcript reopened");
            }
            Err(e) => tracing::error!(
                path = %self.path.display(), error = %e,
                "cannot reopen the transcript; still writing to the file open before"
            ),
        }
    }
}

#[derive(Serialize)]
struct Line<'a> {
    time: &'a str,
    room: &'a str,
    sender: &'a str,
    kind: &'static str,
    text: &'a str,
}

const TIME_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
);

/// Appends the event's JSON line to `out`.
fn encode(entry: &Entry, out: &mut Vec<u8>) {
    let event = &entry.event;
    let time = time::OffsetDateTime::from(event.at)
        .format(TIME_FORMAT)
        .unwrap_or_default();
    let modes;
    let (kind, text): (&str, &str) = match &event.kind {
        Kind::Message(text) => ("message", text),
        Kind::Action(text) => ("action", text),
        Kind::Notice(text) => ("notice", text),
        Kind::Joined => ("join", ""),
        Kind::Entered => ("enter", ""),
        Kind::Parted(message) => ("part", message.as_deref().unwrap_or("")),
        Kind::Left(reason, message) => match (reason, message) {
            (LeaveReason::Quit, Some(message)) => ("leave", message),
            _ => ("leave", reason.explanation().unwrap_or("quit")),
        },
        Kind::Nick(new) => ("nick", &new.nick),
        Kind::Topic(text) => ("topic", text),
        Kind::Mode(changes) => {
            modes = mode_text(changes);
            ("mode", &modes)
        }
        Kind::Kicked { who, reason } => {
            modes = match reason {
                Some(reason) => format!("{}: {reason}", who.nick),
                None => who.nick.to_string(),
            };
            ("kick", &modes)
        }
        Kind::Away(_) | Kind::Presence { .. } | Kind::Invited(_) | Kind::Account(_) => return,
    };
    let line = Line {
        time: &time,
        room: &entry.room,
        sender: event.nick(),
        kind,
        text,
    };
    // Serializing plain strings into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &line);
    out.push(b'\n');
}

/// A mode event's text: `topic locked, secret, op bob`: the changes in order, in words no
/// protocol owns.
fn mode_text(changes: &[Mode<Arc<str>>]) -> String {
    let words: Vec<String> = changes
        .iter()
        .map(|change| match change {
            Mode::TopicLock(true) => "topic locked".to_owned(),
            Mode::TopicLock(false) => "topic unlocked".to_owned(),
            Mode::Secret(true) => "secret".to_owned(),
            Mode::Secret(false) => "public".to_owned(),
            Mode::Operator(true, who) => format!("op {who}"),
            Mode::Operator(false, who) => format!("deop {who}"),
            Mode::Voice(true, who) => format!("voice {who}"),
            Mode::Voice(false, who) => format!("devoice {who}"),
            Mode::Moderated(true) => "moderated".to_owned(),
            Mode::Moderated(false) => "unmoderated".to_owned(),
            Mode::InviteOnly(true) => "invite-only".to_owned(),
            Mode::InviteOnly(false) => "open".to_owned(),
            Mode::Ban(true, mask) => format!("ban {mask}"),
            Mode::Ban(false, mask) => format!("unban {mask}"),
            Mode::Mute(true, mask) => format!("mute {mask}"),
            Mode::Mute(false, mask) => format!("unmute {mask}"),
        })
        .collect();
    words.join(", ")
}

impl Journal for Recorder {
    fn record(&self, room: &Arc<str>, event: &Arc<Event>) {
        Recorder::record(self, room, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_encode_as_one_json_line_each() {
        use crate::core::event::{Identity, Target};
        let at = std::time::SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let lobby: Arc<str> = "lobby".into();
        let alice = Arc::new(Identity {
            id: 1,
            nick: "alice".into(),
            user: "alice".into(),
            host: "127.0.0.1".into(),
            realname: "".into(),
            account: None,
        });
        let mut out = Vec::new();
        for kind in [
            Kind::Message("say \"hi\"\tthere".into()),
            Kind::Joined,
            Kind::Left(LeaveReason::IdleTimeout, None),
            Kind::Left(LeaveReason::Quit, None),
            Kind::Nick(Arc::new(alice.renamed("alicia"))),
            Kind::Action("waves".into()),
            Kind::Entered,
            Kind::Parted(None),
            Kind::Topic("soon".into()),
            Kind::Mode(
                [
                    Mode::TopicLock(false),
                    Mode::Secret(true),
                    Mode::Operator(true, "bob".into()),
                    Mode::Voice(false, "carol".into()),
                    Mode::Moderated(true),
                    Mode::InviteOnly(false),
                    Mode::Ban(true, "bob!*@*".into()),
                    Mode::Mute(false, "*!*@10.0.0.9".into()),
                ]
                .into(),
            ),
            Kind::Kicked {
                who: Arc::new(alice.renamed("bob")),
                reason: Some("spam".into()),
            },
        ] {
            let event = Event::at(
                1,
                at,
                Target::Room(lobby.clone()),
                Some(alice.clone()),
                kind,
            );
            let entry = Entry {
                room: lobby.clone(),
                event,
            };
            encode(&entry, &mut out);
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let head = r#"{"time":"2023-11-14T22:13:20.123Z","room":"lobby","sender":"alice","#;
        assert_eq!(
            lines,
            [
                format!(r#"{head}"kind":"message","text":"say \"hi\"\tthere"}}"#),
                format!(r#"{head}"kind":"join","text":""}}"#),
                format!(r#"{head}"kind":"leave","text":"idle timeout"}}"#),
                format!(r#"{head}"kind":"leave","text":"quit"}}"#),
                format!(r#"{head}"kind":"nick","text":"alicia"}}"#),
                format!(r#"{head}"kind":"action","text":"waves"}}"#),
                format!(r#"{head}"kind":"enter","text":""}}"#),
                format!(r#"{head}"kind":"part","text":""}}"#),
                format!(r#"{head}"kind":"topic","text":"soon"}}"#),
                format!(
                    r#"{head}"kind":"mode","text":"topic unlocked, secret, op bob, devoice carol, moderated, open, ban bob!*@*, unmute *!*@10.0.0.9"}}"#
                ),
                format!(r#"{head}"kind":"kick","text":"bob: spam"}}"#),
            ]
        );
    }
}
