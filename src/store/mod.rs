//! The embedded store (`--data-dir`): rooms, topics and history in an append-only log of
//! segment files with a CRC per record, and an index of it in memory. Why a log of our own
//! rather than fjall, redb or SQLite: README, *Architecture*; the format: [`record`].
//!
//! **Off the hub's path, yet before delivery.** [`Log::append`] runs under the hub's lock and
//! only encodes the record into a buffer. The first connection writer about to write to its
//! socket after that calls [`Log::barrier`], which writes everything buffered with one
//! `write(2)` (group commit: under load one write carries many messages) and returns; the
//! other writers find it written and pay two atomic loads. So a message reaches the operating
//! system before anyone can read it, and a crash of the process (`kill -9`) loses nothing
//! delivered. A background thread fsyncs every `--fsync-interval` (a power loss loses at most
//! that much), writes what no writer asked for (a message to an empty room) at the same pace
//! (at least every second), and expires history by age. With `--fsync-interval always` the barrier also fsyncs, once per group.
//!
//! **Failures.** A write that fails (disk full, I/O error) is counted, logged at most every
//! [`ERROR_LOG_INTERVAL`], and the records stay only in memory; the file is cut back to its
//! last whole record (or the next write starts a new segment), the store reports itself
//! degraded, and the next write that succeeds clears it. Chat never waits on it.
//!
//! **Reading.** The index keeps, per room, where each kept message is (32 bytes each), its
//! topic and its modes. The hub keeps the newest history in memory as before; what memory
//! has let go is read from the files ([`Log::older`]).
//!
//! **Retention** is applied to the index as records are written: per room by count
//! (`--history-retain`), by age (`--history-max-age`) and a total byte budget
//! (`--store-bytes`), oldest first. A segment whose every record has been let go is deleted;
//! one less than half kept is compacted (what it keeps is copied forward, then it goes), so
//! the files stay within about twice what is kept.

pub mod lock;
pub mod record;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;

use crate::config::{Config, Fsync};
use crate::core::event::Event;
use crate::core::lock as guard;
use crate::core::modes::Modes;
use crate::core::room::{Lists, Topic};
use crate::core::store::{Change, Kept, KeptRoom, KeptState, Store, StoreStats};
use record::{Record, HEADER_LEN};

/// A segment is closed and a new one started past this size: small enough that deleting a
/// segment whose records all expired gives space back soon, large enough that a busy server
/// starts a new file every few minutes at most.
pub const SEGMENT_BYTES: u64 = 16 << 20;

/// The background thread wakes at least this often, and at each `--fsync-interval`: the
/// longest a record that nobody was delivered (a message to an empty room) waits in memory
/// before it is written, and how often expiry by age runs.
const TICK: Duration = Duration::from_secs(1);

/// Write failures are logged at most this often; a full disk fails every write.
pub const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What the store is asked to keep.
#[derive(Debug, Clone)]
pub struct Options {
    pub fsync: Fsync,
    /// Messages kept per room; 0 = none (rooms and topics are still kept).
    pub retain: usize,
    pub max_age: Option<Duration>,
    /// The most bytes of records all rooms' messages may take together.
    pub max_bytes: u64,
    /// Roughly how many bytes of history the hub keeps in memory: at start only the newest
    /// messages up to this are read back into memory.
    pub memory_bytes: usize,
    pub segment_bytes: u64,
}

impl Options {
    pub fn from_config(config: &Config) -> Options {
        Options {
            fsync: config.fsync,
            retain: config.history_retain,
            max_age: config.history_max_age,
            max_bytes: config.store_bytes,
            memory_bytes: config.history_bytes,
            segment_bytes: SEGMENT_BYTES,
        }
    }
}

/// Why the store could not be opened; worded for whoever starts the server.
#[derive(Debug, Error)]
pub enum OpenError {
    #[error(
        "the data directory {} is in use by another linechat (pid {pid}); stop it or give \
         this one another --data-dir",
        .dir.display()
    )]
    Locked { dir: PathBuf, pid: String },
    #[error("cannot use the data directory {}: {cause}", .dir.display())]
    Io { dir: PathBuf, cause: io::Error },
    #[error("cannot read the store file {}: {why}", .file.display())]
    Format { file: PathBuf, why: String },
}

/// Where a kept record is.
#[derive(Debug, Clone, Copy)]
struct Loc {
    id: u64,
    /// Microseconds since 1970, for expiry by age.
    at: i64,
    seg: u32,
    off: u64,
    len: u32,
}

#[derive(Debug)]
struct RoomIndex {
    name: Arc<str>,
    msgs: VecDeque<Loc>,
    topic: Option<(Topic, Loc)>,
    modes: Option<(Modes, Loc)>,
    lists: Option<(Lists, Loc)>,
}

#[derive(Debug, Default)]
struct Segment {
    /// Records here still kept, and their bytes.
    live: u64,
    live_bytes: u64,
    bytes: u64,
    /// A record in the middle of this file is damaged, so what follows it could not be
    /// read: the file is never deleted or compacted away, so those bytes stay for whoever
    /// can repair them.
    damaged: bool,
}

#[derive(Debug, Default)]
struct Index {
    /// By room name in lower case.
    rooms: HashMap<String, RoomIndex>,
    /// Each room with messages, by the id of its oldest: the byte budget lets go of the
    /// oldest message of all first.
    by_oldest: BTreeMap<u64, String>,
    msg_bytes: u64,
    messages: u64,
    segments: BTreeMap<u32, Segment>,
    /// Open read handles, so `older` does not open a file per message.
    readers: HashMap<u32, Arc<File>>,
    active: u32,
    /// Segments let go of entirely, to be deleted outside the lock.
    dead: Vec<u32>,
    expired: u64,
}

/// A record still kept: its room, what it is, and where.
type KeptRecord = (Arc<str>, PendKind, Loc);

/// A record waiting in [`Pending`] for its write.
#[derive(Debug)]
struct Pend {
    room: Arc<str>,
    id: u64,
    at: i64,
    what: PendKind,
    start: usize,
    len: usize,
    /// A copy made by compaction: where the record was until now.
    moved_from: Option<Loc>,
}

#[derive(Debug)]
enum PendKind {
    Said,
    Topic(Topic),
    Modes(Modes),
    Lists(Lists),
}

#[derive(Debug, Default)]
struct Pending {
    buf: Vec<u8>,
    records: Vec<Pend>,
    /// Records appended since start; [`Inner::appended`] mirrors it for the barrier.
    count: u64,
}

#[derive(Debug)]
struct Active {
    file: Arc<File>,
    seg: u32,
    len: u64,
    /// A failed write could not be cut back: the next write starts a new segment.
    broken: bool,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    options: Options,
    /// Held while the store is open; let go by [`Log::close`], after which nothing is written.
    lock: Mutex<Option<File>>,
    pending: Mutex<Pending>,
    /// Records appended, and records written (or given up on). Equal: nothing to do.
    appended: AtomicU64,
    written: AtomicU64,
    active: Mutex<Active>,
    index: Mutex<Index>,
    /// Segments closed since the last fsync, to be fsynced by the background thread.
    closed: Mutex<Vec<Arc<File>>>,
    dirty: AtomicBool,
    /// Segments out of the index whose files wait to be deleted until an fsync has made
    /// what replaced them (compaction's copies, a newer topic) durable: deleted at once, a
    /// power loss could take both the old record and its copy still in the page cache.
    doomed: Mutex<Vec<u32>>,
    /// The last fsync failed and none has succeeded since: writes into the page cache may
    /// still succeed, so this is kept apart from `degraded`, which a write clears.
    sync_failed: AtomicBool,
    stop: AtomicBool,
    /// Set by [`Log::close`] under its own lock, which [`Inner::flush`] also takes: a late
    /// append after close is never written into a directory another server may own by then.
    closed_for_good: Mutex<bool>,
    written_total: AtomicU64,
    /// Bytes of records written since start, for the bytes per message on disk.
    written_bytes: AtomicU64,
    failed: AtomicU64,
    degraded: AtomicBool,
    errors: Mutex<ErrorLog>,
}

#[derive(Debug, Default)]
struct ErrorLog {
    last: Option<Instant>,
    unlogged: u64,
}

/// The embedded store over one data directory, held for the server's life.
#[derive(Debug)]
pub struct Log {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn segment_path(dir: &Path, seg: u32) -> PathBuf {
    dir.join(format!("{seg:08}.log"))
}

fn room_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

fn micros(at: SystemTime) -> i64 {
    match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

impl Log {
    /// Opens (creating it if needed) and locks the store in `dir`, reads what it keeps, and
    /// starts its background thread.
    pub fn open(dir: &Path, options: Options) -> Result<(Arc<Log>, Kept), OpenError> {
        let io_err = |cause| OpenError::Io {
            dir: dir.to_owned(),
            cause,
        };
        fs::create_dir_all(dir).map_err(io_err)?;
        let lock = lock::acquire(dir)?;
        let started = Instant::now();
        let (mut index, kept) = load(dir, &options)?;
        let seg = (index.segments.keys().chain(&index.dead).max()).map_or(1, |s| s + 1);
        let file = new_segment(dir, seg).map_err(io_err)?;
        sync_dir(dir).map_err(io_err)?;
        index.begin(seg);
        // After a crash of the process (not of the machine) what it wrote may still be only in
        // the page cache, copies of the records in the segments about to go among it.
        for &kept_seg in index.segments.keys() {
            if let Ok(f) = File::open(segment_path(dir, kept_seg)) {
                f.sync_data().map_err(io_err)?;
            }
        }
        let dead = std::mem::take(&mut index.dead);
        for seg in dead {
            let _ = fs::remove_file(segment_path(dir, seg));
        }
        tracing::info!(
            dir = %dir.display(),
            rooms = kept.rooms.len(),
            messages = index.messages,
            ms = started.elapsed().as_millis() as u64,
            "opened the store"
        );
        let inner = Arc::new(Inner {
            dir: dir.to_owned(),
            options,
            lock: Mutex::new(Some(lock)),
            pending: Mutex::default(),
            appended: AtomicU64::new(0),
            written: AtomicU64::new(0),
            active: Mutex::new(Active {
                file: Arc::new(file),
                seg,
                len: HEADER_LEN as u64,
                broken: false,
            }),
            index: Mutex::new(index),
            closed: Mutex::default(),
            dirty: AtomicBool::new(false),
            doomed: Mutex::default(),
            sync_failed: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            closed_for_good: Mutex::new(false),
            written_total: AtomicU64::new(0),
            written_bytes: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            degraded: AtomicBool::new(false),
            errors: Mutex::default(),
        });
        let background = inner.clone();
        let thread = std::thread::Builder::new()
            .name("store".into())
            .spawn(move || background.run())
            .map_err(io_err)?;
        Ok((
            Arc::new(Log {
                inner,
                thread: Mutex::new(Some(thread)),
            }),
            kept,
        ))
    }

    /// Writes and fsyncs everything, and stops the background thread: a clean shutdown.
    pub fn close(&self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = guard(&self.thread).take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
        self.inner.flush();
        self.inner.sync();
        *guard(&self.inner.closed_for_good) = true;
        guard(&self.inner.lock).take();
        let records = self.inner.written_total.load(Ordering::Relaxed);
        let bytes = self.inner.written_bytes.load(Ordering::Relaxed);
        tracing::info!(
            dir = %self.inner.dir.display(),
            records,
            bytes,
            bytes_per_record = bytes.checked_div(records).unwrap_or(0),
            "store closed"
        );
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

impl Store for Log {
    fn append(&self, change: Change<'_>) {
        let mut p = guard(&self.inner.pending);
        let start = p.buf.len();
        let (room, id, at, what) = match change {
            Change::Said(event) => {
                let Some(room) = event.room() else { return };
                if !record::encode_said(&mut p.buf, event) {
                    return;
                }
                (room.clone(), event.id, event.at, PendKind::Said)
            }
            Change::Topic { room, id, topic } => {
                record::encode_topic(&mut p.buf, room, id, topic);
                (room.into(), id, topic.at, PendKind::Topic(topic.clone()))
            }
            Change::Modes { room, id, modes } => {
                record::encode_modes(&mut p.buf, room, id, modes);
                (room.into(), id, SystemTime::now(), PendKind::Modes(modes))
            }
            Change::Lists { room, id, lists } => {
                record::encode_lists(&mut p.buf, room, id, lists);
                let what = PendKind::Lists(lists.clone());
                (room.into(), id, SystemTime::now(), what)
            }
        };
        let len = p.buf.len() - start;
        p.records.push(Pend {
            room,
            id,
            at: micros(at),
            what,
            start,
            len,
            moved_from: None,
        });
        p.count += 1;
        self.inner.appended.store(p.count, Ordering::Release);
    }

    fn barrier(&self) {
        self.inner.barrier();
    }

    fn older(&self, room: &str, before: u64, n: usize) -> Vec<Arc<Event>> {
        let wanted: Vec<(Loc, Arc<File>)> = {
            let mut index = guard(&self.inner.index);
            let Some(r) = index.rooms.get(&room_key(room)) else {
                return Vec::new();
            };
            let end = r.msgs.partition_point(|l| l.id < before);
            let locs: Vec<Loc> = r.msgs.range(..end).rev().take(n).copied().collect();
            let mut out = Vec::with_capacity(locs.len());
            for loc in locs {
                match reader(&mut index, &self.inner.dir, loc.seg) {
                    Ok(file) => out.push((loc, file)),
                    Err(e) => tracing::warn!(error = %e, "cannot read the store"),
                }
            }
            out
        };
        let mut buf = Vec::new();
        wanted
            .into_iter()
            .filter_map(|(loc, file)| {
                buf.resize(loc.len as usize, 0);
                file.read_exact_at(&mut buf, loc.off).ok()?;
                let (payload, _) = record::payload(&buf)?;
                record::decode(payload)?.event()
            })
            .collect()
    }

    fn room(&self, room: &str) -> Option<KeptState> {
        let index = guard(&self.inner.index);
        let r = index.rooms.get(&room_key(room))?;
        Some(KeptState {
            topic: r.topic.as_ref().map(|(t, _)| t.clone()),
            modes: r.modes.map(|(m, _)| m),
            lists: r.lists.as_ref().map(|(l, _)| l.clone()),
        })
    }

    fn stats(&self) -> StoreStats {
        let index = guard(&self.inner.index);
        StoreStats {
            written: self.inner.written_total.load(Ordering::Relaxed),
            failed: self.inner.failed.load(Ordering::Relaxed),
            expired: index.expired,
            messages: index.messages,
            disk_bytes: index.segments.values().map(|s| s.bytes).sum(),
            degraded: self.inner.degraded.load(Ordering::Relaxed)
                || self.inner.sync_failed.load(Ordering::Relaxed),
        }
    }
}

fn reader(index: &mut Index, dir: &Path, seg: u32) -> io::Result<Arc<File>> {
    if let Some(f) = index.readers.get(&seg) {
        return Ok(f.clone());
    }
    let f = Arc::new(File::open(segment_path(dir, seg))?);
    index.readers.insert(seg, f.clone());
    Ok(f)
}

fn new_segment(dir: &Path, seg: u32) -> io::Result<File> {
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(segment_path(dir, seg))?;
    file.write_all(&record::header())?;
    // A file whose size reached the disk but not its header would stop the next start.
    file.sync_data()?;
    Ok(file)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Inner {
    fn barrier(&self) {
        if self.written.load(Ordering::Acquire) < self.appended.load(Ordering::Acquire) {
            self.flush();
        }
    }

    /// Writes everything appended so far, with one write.
    fn flush(&self) {
        let mut active = guard(&self.active);
        if *guard(&self.closed_for_good) {
            let upto = guard(&self.pending).count;
            self.written.store(upto, Ordering::Release);
            return;
        }
        let (buf, records, upto) = {
            let mut p = guard(&self.pending);
            let buf = std::mem::take(&mut p.buf);
            (buf, std::mem::take(&mut p.records), p.count)
        };
        if records.is_empty() {
            self.written.store(upto, Ordering::Release);
            return;
        }
        let result = self.write(&mut active, &buf);
        let n = records.len() as u64;
        match &result {
            Ok(base) => {
                self.written_total.fetch_add(n, Ordering::Relaxed);
                self.written_bytes
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::warn!("the store is writing again");
                }
                self.dirty.store(true, Ordering::Relaxed);
                let seg = active.seg;
                self.index_written(seg, *base, records);
            }
            Err(e) => {
                self.failed.fetch_add(n, Ordering::Relaxed);
                self.degraded.store(true, Ordering::Relaxed);
                self.log_error(e, n);
            }
        }
        // With `always`, other writers' barriers must not find these written before they
        // are on the disk: `written` moves only after the fsync.
        if self.options.fsync == Fsync::Always && result.is_ok() {
            self.synced(active.file.sync_data());
        }
        self.written.store(upto, Ordering::Release);
        if active.len >= self.options.segment_bytes {
            self.rotate(&mut active);
        }
        // Keep the buffer's allocation for the next group, unless a burst made it huge.
        if buf.capacity() <= 1 << 20 {
            let mut p = guard(&self.pending);
            if p.buf.is_empty() {
                let mut buf = buf;
                buf.clear();
                p.buf = buf;
            }
        }
    }

    /// Appends `buf` to the active segment; returns the offset it starts at. A failed write
    /// leaves no torn record behind to hide the records after it: the file is cut back, or,
    /// if even that fails, the next write starts a new segment.
    fn write(&self, active: &mut Active, buf: &[u8]) -> io::Result<u64> {
        if active.broken {
            self.rotate(active);
            if active.broken {
                return Err(io::Error::other("cannot start a new log segment"));
            }
        }
        let base = active.len;
        match (&*active.file).write_all(buf) {
            Ok(()) => {
                active.len += buf.len() as u64;
                Ok(base)
            }
            Err(e) => {
                if active.file.set_len(base).is_err() {
                    active.broken = true;
                }
                Err(e)
            }
        }
    }

    /// Closes the active segment and starts the next one.
    fn rotate(&self, active: &mut Active) {
        let seg = active.seg + 1;
        let file = match new_segment(&self.dir, seg) {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_file(segment_path(&self.dir, seg));
                active.broken = true;
                self.degraded.store(true, Ordering::Relaxed);
                self.log_error(&e, 0);
                return;
            }
        };
        let old = std::mem::replace(&mut active.file, Arc::new(file));
        active.seg = seg;
        active.len = HEADER_LEN as u64;
        active.broken = false;
        if self.options.fsync == Fsync::Always {
            let _ = old.sync_data();
            let _ = sync_dir(&self.dir);
        } else {
            guard(&self.closed).push(old);
        }
        let mut index = guard(&self.index);
        let previous = index.begin(seg);
        if index.segments.get(&previous).is_some_and(|s| s.live == 0) {
            index.dead.push(previous);
        }
        self.delete_dead(index);
    }

    /// Adds the records just written at `base` of `seg` to the index, applying retention.
    fn index_written(&self, seg: u32, base: u64, records: Vec<Pend>) {
        let mut index = guard(&self.index);
        let o = &self.options;
        let written: u64 = records.iter().map(|r| r.len as u64).sum();
        if let Some(s) = index.segments.get_mut(&seg) {
            s.bytes += written;
        }
        for r in records {
            let loc = Loc {
                id: r.id,
                at: r.at,
                seg,
                off: base + r.start as u64,
                len: r.len as u32,
            };
            match r.moved_from {
                Some(old) => index.moved(&r.room, &r.what, old, loc),
                None => index.add(&r.room, r.what, loc, o.retain),
            }
        }
        index.within_budget(o.max_bytes);
        self.delete_dead(index);
    }

    fn delete_dead(&self, mut index: std::sync::MutexGuard<'_, Index>) {
        if index.dead.is_empty() {
            return;
        }
        let dead = std::mem::take(&mut index.dead);
        for seg in &dead {
            index.segments.remove(seg);
            index.readers.remove(seg);
        }
        drop(index);
        guard(&self.doomed).extend(dead);
    }

    fn synced(&self, result: io::Result<()>) -> bool {
        match result {
            Ok(()) => {
                self.sync_failed.store(false, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.sync_failed.store(true, Ordering::Relaxed);
                self.log_error(&e, 0);
                false
            }
        }
    }

    fn log_error(&self, e: &io::Error, records: u64) {
        let mut log = guard(&self.errors);
        log.unlogged += records;
        let now = Instant::now();
        if log
            .last
            .is_some_and(|at| now.duration_since(at) < ERROR_LOG_INTERVAL)
        {
            return;
        }
        log.last = Some(now);
        tracing::error!(
            dir = %self.dir.display(),
            error = %e,
            records_not_kept = log.unlogged,
            "cannot write the store; chat goes on, and these messages are only in memory"
        );
        log.unlogged = 0;
    }

    /// Fsyncs what was written since the last time, then deletes the segments doomed before
    /// it began (what replaced their records is among what it made durable).
    fn sync(&self) {
        let doomed = std::mem::take(&mut *guard(&self.doomed));
        // The file and the flag together, under the lock a rotation takes: a rotation in
        // between would leave the new file's records unsynced until the next write.
        let (file, dirty) = {
            let active = guard(&self.active);
            (
                active.file.clone(),
                self.dirty.swap(false, Ordering::Relaxed),
            )
        };
        let closed = std::mem::take(&mut *guard(&self.closed));
        let mut ok = true;
        for f in &closed {
            ok &= self.synced(f.sync_data());
        }
        if dirty {
            ok &= self.synced(file.sync_data());
        }
        if !closed.is_empty() {
            ok &= self.synced(sync_dir(&self.dir));
        }
        if !ok {
            // Tried again at the next tick.
            self.dirty.store(true, Ordering::Relaxed);
            guard(&self.closed).extend(closed);
            guard(&self.doomed).extend(doomed);
            return;
        }
        if !doomed.is_empty() {
            for seg in doomed {
                let _ = fs::remove_file(segment_path(&self.dir, seg));
            }
            let _ = sync_dir(&self.dir);
        }
    }

    /// The background thread: writes what nobody's delivery wrote, fsyncs, expires by age.
    fn run(&self) {
        let tick = match self.options.fsync {
            Fsync::Every(interval) => interval.min(TICK),
            Fsync::Always => TICK,
        };
        while !self.stop.load(Ordering::Relaxed) {
            std::thread::park_timeout(tick);
            self.barrier();
            // With `always` the writers fsync their own groups; this is then for the
            // closed segments and the doomed ones.
            self.sync();
            if let Some(age) = self.options.max_age {
                let oldest = micros(
                    SystemTime::now()
                        .checked_sub(age)
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                );
                let mut index = guard(&self.index);
                index.expire_before(oldest);
                self.delete_dead(index);
            }
            self.compact();
        }
    }

    /// Copies what is still kept in the sparsest closed segment (less than half kept) to the
    /// end of the log, so that segment can go: without it, one old message of a quiet room
    /// would keep a whole segment on disk. One segment per tick, read whole outside the
    /// index's lock; the copies are written like any record, and the index moves to them
    /// as they are written (a record let go of meanwhile is not brought back).
    fn compact(&self) {
        let Some((seg, keys)) = guard(&self.index).sparse_segment() else {
            return;
        };
        // A few rooms at a time, so a million kept messages never hold the index's lock (and
        // with it the writers' barrier) for more than a fraction of a millisecond.
        let live: Vec<KeptRecord> = keys
            .chunks(64)
            .flat_map(|chunk| guard(&self.index).kept_in(seg, chunk))
            .collect();
        let bytes = match fs::read(segment_path(&self.dir, seg)) {
            Ok(b) => b,
            Err(e) => return tracing::warn!(error = %e, seg, "cannot read a segment to compact"),
        };
        let mut p = guard(&self.pending);
        for (room, what, loc) in live {
            let Some(raw) = bytes.get(loc.off as usize..(loc.off + u64::from(loc.len)) as usize)
            else {
                continue;
            };
            let start = p.buf.len();
            p.buf.extend_from_slice(raw);
            p.records.push(Pend {
                room,
                id: loc.id,
                at: loc.at,
                what,
                start,
                len: raw.len(),
                moved_from: Some(loc),
            });
            p.count += 1;
        }
        self.appended.store(p.count, Ordering::Release);
        drop(p);
        self.barrier();
    }
}

impl Index {
    /// `seg` is the segment being written from now on; returns the one that was.
    fn begin(&mut self, seg: u32) -> u32 {
        let segment = Segment {
            live: 0,
            live_bytes: 0,
            bytes: HEADER_LEN as u64,
            damaged: false,
        };
        self.segments.insert(seg, segment);
        std::mem::replace(&mut self.active, seg)
    }

    fn add(&mut self, room: &Arc<str>, what: PendKind, loc: Loc, retain: usize) {
        self.add_keyed(&room_key(room), room, what, loc, retain);
    }

    /// [`Index::add`] for a room whose key (its name in lower case) the caller has.
    fn add_keyed(&mut self, key: &str, room: &Arc<str>, what: PendKind, loc: Loc, retain: usize) {
        // A record older than the topic or modes already kept (a compacted copy of a
        // superseded one read after its successor) changes nothing.
        let stale = |kept: Option<Loc>| kept.is_some_and(|k| k.id > loc.id);
        if let Some(r) = self.rooms.get(key) {
            let stale = match what {
                PendKind::Said => false,
                PendKind::Topic(_) => stale(r.topic.as_ref().map(|(_, l)| *l)),
                PendKind::Modes(_) => stale(r.modes.map(|(_, l)| l)),
                PendKind::Lists(_) => stale(r.lists.as_ref().map(|(_, l)| *l)),
            };
            if stale {
                return;
            }
        }
        self.hold(loc);
        let r = match self.rooms.get_mut(key) {
            Some(r) => r,
            None => self
                .rooms
                .entry(key.to_owned())
                .or_insert_with(|| RoomIndex {
                    name: room.clone(),
                    msgs: VecDeque::new(),
                    topic: None,
                    modes: None,
                    lists: None,
                }),
        };
        let superseded = match what {
            PendKind::Said => {
                if r.msgs.is_empty() {
                    self.by_oldest.insert(loc.id, key.to_owned());
                }
                r.msgs.push_back(loc);
                self.msg_bytes += u64::from(loc.len);
                self.messages += 1;
                None
            }
            PendKind::Topic(t) => r.topic.replace((t, loc)).map(|(_, l)| l),
            PendKind::Modes(m) => r.modes.replace((m, loc)).map(|(_, l)| l),
            PendKind::Lists(lists) => r.lists.replace((lists, loc)).map(|(_, l)| l),
        };
        let over = r.msgs.len().saturating_sub(retain);
        if let Some(old) = superseded {
            self.release(old);
        }
        for _ in 0..over {
            self.drop_oldest_of(key);
        }
    }

    /// Lets go of the oldest message of the room `key`.
    fn drop_oldest_of(&mut self, key: &str) {
        let Some(r) = self.rooms.get_mut(key) else {
            return;
        };
        let Some(loc) = r.msgs.pop_front() else {
            return;
        };
        let next = r.msgs.front().map(|l| l.id);
        self.by_oldest.remove(&loc.id);
        if let Some(next) = next {
            self.by_oldest.insert(next, key.to_owned());
        }
        self.msg_bytes -= u64::from(loc.len);
        self.messages -= 1;
        self.expired += 1;
        self.release(loc);
    }

    /// Counts `loc` as kept in its segment.
    fn hold(&mut self, loc: Loc) {
        if let Some(s) = self.segments.get_mut(&loc.seg) {
            s.live += 1;
            s.live_bytes += u64::from(loc.len);
        }
    }

    /// Compaction wrote a copy of the record at `old` to `new`: the index points there now,
    /// unless the record was let go of meanwhile (then the copy is simply not kept).
    fn moved(&mut self, room: &str, what: &PendKind, old: Loc, new: Loc) {
        let Some(r) = self.rooms.get_mut(&room_key(room)) else {
            return;
        };
        let same = |l: &Loc| l.seg == old.seg && l.off == old.off;
        let slot = match what {
            PendKind::Said => {
                let at = r.msgs.partition_point(|l| l.id < old.id);
                r.msgs.get_mut(at).filter(|l| same(l))
            }
            PendKind::Topic(_) => r.topic.as_mut().map(|(_, l)| l).filter(|l| same(l)),
            PendKind::Modes(_) => r.modes.as_mut().map(|(_, l)| l).filter(|l| same(l)),
            PendKind::Lists(_) => r.lists.as_mut().map(|(_, l)| l).filter(|l| same(l)),
        };
        if let Some(slot) = slot {
            *slot = new;
            self.hold(new);
            self.release(old);
        }
    }

    /// The closed segment holding the least of what it once held, if less than half of it is
    /// still kept, and the rooms to look for its records in.
    fn sparse_segment(&self) -> Option<(u32, Vec<String>)> {
        let (&seg, _) = self
            .segments
            .iter()
            .filter(|&(&seg, s)| {
                seg != self.active && !s.damaged && s.live > 0 && s.live_bytes * 2 < s.bytes
            })
            .min_by_key(|(_, s)| s.live_bytes * 1000 / s.bytes.max(1))?;
        Some((seg, self.rooms.keys().cloned().collect()))
    }

    /// What the rooms `keys` still keep in segment `seg`.
    fn kept_in(&self, seg: u32, keys: &[String]) -> Vec<KeptRecord> {
        let here = |l: &Loc| l.seg == seg;
        let mut live = Vec::new();
        for r in keys.iter().filter_map(|k| self.rooms.get(k)) {
            live.extend(
                (r.msgs.iter().filter(|l| here(l))).map(|&l| (r.name.clone(), PendKind::Said, l)),
            );
            if let Some((t, l)) = r.topic.as_ref().filter(|(_, l)| here(l)) {
                live.push((r.name.clone(), PendKind::Topic(t.clone()), *l));
            }
            if let Some((m, l)) = r.modes.filter(|(_, l)| here(l)) {
                live.push((r.name.clone(), PendKind::Modes(m), l));
            }
            if let Some((lists, l)) = r.lists.as_ref().filter(|(_, l)| here(l)) {
                live.push((r.name.clone(), PendKind::Lists(lists.clone()), *l));
            }
        }
        live
    }

    fn release(&mut self, loc: Loc) {
        if let Some(s) = self.segments.get_mut(&loc.seg) {
            s.live = s.live.saturating_sub(1);
            s.live_bytes = s.live_bytes.saturating_sub(u64::from(loc.len));
            if s.live == 0 && loc.seg != self.active && !s.damaged {
                self.dead.push(loc.seg);
            }
        }
    }

    fn within_budget(&mut self, max_bytes: u64) {
        while self.msg_bytes > max_bytes {
            let Some((_, key)) = self.by_oldest.first_key_value() else {
                break;
            };
            let key = key.clone();
            self.drop_oldest_of(&key);
        }
    }

    fn expire_before(&mut self, micros: i64) {
        let old: Vec<String> = self
            .rooms
            .iter()
            .filter(|(_, r)| r.msgs.front().is_some_and(|l| l.at < micros))
            .map(|(k, _)| k.clone())
            .collect();
        for key in old {
            while self.rooms[&key].msgs.front().is_some_and(|l| l.at < micros) {
                self.drop_oldest_of(&key);
            }
        }
    }
}

/// Reads every segment of `dir` into an index, applies retention, and reads back the newest
/// messages (up to `options.memory_bytes`) for the hub's memory.
fn load(dir: &Path, options: &Options) -> Result<(Index, Kept), OpenError> {
    let io_err = |cause| OpenError::Io {
        dir: dir.to_owned(),
        cause,
    };
    let mut segs: Vec<u32> = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err)? {
        let name = entry.map_err(io_err)?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name.strip_suffix(".log").and_then(|n| n.parse().ok()) {
            segs.push(n);
        }
    }
    segs.sort_unstable();
    let mut index = Index::default();
    // Every record, in id order per room after the sort below; duplicates cannot arise today,
    // but a later compaction that copies records would make them, so they are skipped.
    // Each room's name as written, to its key and shared name: one lookup per record, no
    // allocation but for a room's first.
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut rooms: Vec<(String, Arc<str>)> = Vec::new();
    let mut next_event = 1;
    let mut empty = Vec::new();
    for &seg in &segs {
        let path = segment_path(dir, seg);
        let bytes = fs::read(&path).map_err(io_err)?;
        if bytes.len() < HEADER_LEN {
            // A segment created just before a crash, its header not yet written.
            empty.push(seg);
            continue;
        }
        record::version(&bytes).map_err(|why| OpenError::Format {
            file: path.clone(),
            why,
        })?;
        index.segments.insert(
            seg,
            Segment {
                live: 0,
                live_bytes: 0,
                bytes: bytes.len() as u64,
                damaged: false,
            },
        );
        let mut at = HEADER_LEN;
        while at < bytes.len() {
            // Only the CRC and the fields the index needs are read here: a million records
            // must open in well under the 2 s a restart may take.
            let peeked = record::payload(&bytes[at..])
                .and_then(|(payload, len)| Some((record::peek(payload)?, payload, len)));
            let Some(((kind, id, micros, room), payload, len)) = peeked else {
                // A record cut short at the end is what a crash while writing leaves; one
                // with bytes after it is damage, and what follows may be good records.
                let declared = (bytes.get(at..at + 4))
                    .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
                let torn = declared.is_none_or(|len| at + record::FRAME_LEN + len >= bytes.len());
                if torn {
                    tracing::warn!(
                        file = %path.display(),
                        offset = at,
                        bytes = bytes.len() - at,
                        "the store file ends in a record cut short (a crash or power loss \
                         while writing); reading this file stops there"
                    );
                } else {
                    tracing::error!(
                        file = %path.display(),
                        offset = at,
                        bytes = bytes.len() - at,
                        "a record in the store file is damaged; the records after it in this \
                         file cannot be read, and the file is kept as it is (never deleted or \
                         compacted) for repair"
                    );
                    if let Some(s) = index.segments.get_mut(&seg) {
                        s.damaged = true;
                    }
                }
                break;
            };
            let slot = match names.get(room) {
                Some(&slot) => slot,
                None => {
                    rooms.push((room_key(room), Arc::from(room)));
                    names.insert(room.to_owned(), rooms.len() - 1);
                    rooms.len() - 1
                }
            };
            let (key, name) = &rooms[slot];
            let loc = Loc {
                id,
                at: micros,
                seg,
                off: at as u64,
                len: len as u32,
            };
            next_event = next_event.max(id + 1);
            let what = if kind == record::TYPE_SAID {
                Some(PendKind::Said)
            } else {
                match record::decode(payload) {
                    Some(Record::Modes { modes, .. }) => Some(PendKind::Modes(modes)),
                    Some(Record::Lists { lists, .. }) => Some(PendKind::Lists(lists)),
                    Some(r @ Record::Topic { .. }) => r.topic().map(PendKind::Topic),
                    _ => None,
                }
            };
            if let Some(what) = what {
                index.add_keyed(key, name, what, loc, usize::MAX);
            }
            at += len;
        }
    }
    index.expired = 0;
    // Retention as configured now, which may be tighter than when the records were written.
    let keys: Vec<String> = index.rooms.keys().cloned().collect();
    index.by_oldest.clear();
    for key in &keys {
        let r = index.rooms.get_mut(key).expect("listed");
        r.msgs.make_contiguous().sort_by_key(|l| l.id);
        // A crash between compaction's copy and the old segment's deletion leaves a record
        // twice: the later copy is kept, so the sparse segment can still go.
        let mut once: VecDeque<Loc> = VecDeque::with_capacity(r.msgs.len());
        let mut twice = Vec::new();
        for loc in r.msgs.drain(..) {
            match once.back_mut() {
                Some(last) if last.id == loc.id => twice.push(std::mem::replace(last, loc)),
                _ => once.push_back(loc),
            }
        }
        r.msgs = once;
        for loc in twice {
            index.msg_bytes -= u64::from(loc.len);
            index.messages -= 1;
            index.release(loc);
        }
        if let Some(first) = index.rooms[key].msgs.front().map(|l| l.id) {
            index.by_oldest.insert(first, key.clone());
        }
        while index.rooms[key].msgs.len() > options.retain {
            index.drop_oldest_of(key);
        }
    }
    if let Some(age) = options.max_age {
        index.expire_before(micros(
            SystemTime::now()
                .checked_sub(age)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        ));
    }
    index.within_budget(options.max_bytes);
    // A segment none of whose records is kept goes now (never the newest, so a store whose
    // every record was let go still shows how far its ids reached).
    let newest = segs.last().copied();
    index.dead = (index.segments.iter())
        .filter(|&(&seg, s)| s.live == 0 && !s.damaged && Some(seg) != newest)
        .map(|(&seg, _)| seg)
        .collect();
    index.dead.extend(empty);
    // Ids must not repeat across restarts (IRC clients drop a message whose msgid they have
    // seen, and CHATHISTORY selects by it), yet the highest stored id is not the highest
    // given out: private messages are not stored, a torn tail or a full disk loses some, and
    // retention may let every record go. The clock in microseconds is past every id given
    // before, unless the last run gave out more than a million a second, or the clock went
    // back; the highest stored id covers what it can of those.
    let clock = u64::try_from(micros(SystemTime::now())).unwrap_or(0);
    let next_event = next_event.max(clock);
    let kept = read_back(dir, &mut index, options.memory_bytes, next_event)?;
    Ok((index, kept))
}

/// The rooms in `index` with their topics, modes and newest messages, up to roughly
/// `memory_bytes` of history over all rooms, newest first.
fn read_back(
    dir: &Path,
    index: &mut Index,
    memory_bytes: usize,
    next_event: u64,
) -> Result<Kept, OpenError> {
    // The newest messages of all rooms, walking each room back from its newest.
    let mut wanted: Vec<(u32, u64, u32, usize)> = Vec::new(); // (seg, off, len, room)
    let keys: Vec<&String> = index.rooms.keys().collect();
    let mut heads: std::collections::BinaryHeap<(u64, usize, usize)> = keys
        .iter()
        .enumerate()
        .filter_map(|(i, k)| {
            let msgs = &index.rooms[*k].msgs;
            msgs.back().map(|l| (l.id, i, msgs.len() - 1))
        })
        .collect();
    // An event in memory costs its text and renderings plus ~150 bytes of its own.
    let mut budget = memory_bytes;
    while let Some((_, room, at)) = heads.pop() {
        let loc = index.rooms[keys[room]].msgs[at];
        let cost = 3 * loc.len as usize + 150;
        if cost > budget {
            break;
        }
        budget -= cost;
        wanted.push((loc.seg, loc.off, loc.len, room));
        if at > 0 {
            let prev = index.rooms[keys[room]].msgs[at - 1];
            heads.push((prev.id, room, at - 1));
        }
    }
    wanted.sort_unstable();
    let mut events: Vec<Vec<Arc<Event>>> = vec![Vec::new(); keys.len()];
    // One read per segment rather than one per message: the segments are in the page cache
    // from the index pass, and 100 000 preads would cost more than reading them whole.
    let mut file: Option<(u32, Vec<u8>)> = None;
    for (seg, off, len, room) in wanted {
        if file.as_ref().is_none_or(|(s, _)| *s != seg) {
            let bytes = fs::read(segment_path(dir, seg)).map_err(|cause| OpenError::Io {
                dir: dir.to_owned(),
                cause,
            })?;
            file = Some((seg, bytes));
        }
        let (_, bytes) = file.as_ref().expect("read");
        let Some(raw) = bytes.get(off as usize..off as usize + len as usize) else {
            continue;
        };
        if let Some(event) = record::payload(raw)
            .and_then(|(p, _)| record::decode(p))
            .and_then(|r| r.event())
        {
            events[room].push(event);
        }
    }
    let rooms = keys
        .iter()
        .zip(events)
        .map(|(k, mut events)| {
            let r = &index.rooms[*k];
            events.sort_by_key(|e| e.id);
            KeptRoom {
                name: r.name.clone(),
                topic: r.topic.as_ref().map(|(t, _)| t.clone()),
                modes: r.modes.map(|(m, _)| m),
                lists: r.lists.as_ref().map(|(l, _)| l.clone()),
                events,
            }
        })
        .collect();
    Ok(Kept { rooms, next_event })
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::core::event::{Identity, Kind, Target};

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("linechat-store-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn options() -> Options {
        Options {
            fsync: Fsync::Every(Duration::from_secs(1)),
            retain: 1000,
            max_age: None,
            max_bytes: 1 << 30,
            memory_bytes: 1 << 20,
            segment_bytes: SEGMENT_BYTES,
        }
    }

    fn said(id: u64, room: &str, at: SystemTime, text: &str) -> Arc<Event> {
        let from = Identity {
            id: 1,
            nick: "alice".into(),
            user: "alice".into(),
            host: "::1".into(),
            realname: "".into(),
            account: None,
        };
        Event::at(
            id,
            at,
            Target::Room(room.into()),
            Some(Arc::new(from)),
            Kind::Message(text.into()),
        )
    }

    fn texts(kept: &Kept, room: &str) -> Vec<String> {
        let r = kept.rooms.iter().find(|r| &*r.name == room).expect(room);
        r.events
            .iter()
            .map(|e| match &e.kind {
                Kind::Message(t) => t.to_string(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn age_and_the_byte_budget_let_go_of_the_oldest_first_and_count_it() {
        let dir = scratch("age");
        let now = SystemTime::now();
        let (log, _) = Log::open(&dir, options()).unwrap();
        let day = Duration::from_secs(86_400);
        log.append(Change::Said(&said(1, "a", now - 3 * day, "three days old")));
        log.append(Change::Said(&said(2, "b", now - day / 2, "half a day old")));
        log.append(Change::Said(&said(3, "a", now, "new")));
        log.close();
        let clock = micros(SystemTime::now()) as u64;
        let (log, kept) = Log::open(
            &dir,
            Options {
                max_age: Some(day),
                ..options()
            },
        )
        .unwrap();
        assert_eq!(texts(&kept, "a"), ["new"]);
        assert_eq!(texts(&kept, "b"), ["half a day old"]);
        assert_eq!((log.stats().messages, log.stats().expired), (2, 1));
        assert!(
            kept.next_event >= clock.max(4),
            "ids continue past every record ever kept, and past the clock: {}",
            kept.next_event
        );
        log.close();
        // A budget of one record's bytes keeps the newest message of all rooms: "new" in "a"
        // is a frame (8), type, id, time, kind (18), and five strings with their lengths
        // ("a", "alice" twice, "::1", "new": 5 + 9 + 9 + 7 + 7).
        let one = 8 + 18 + 5 + 9 + 9 + 7 + 7;
        let (log, kept) = Log::open(
            &dir,
            Options {
                max_bytes: one as u64,
                ..options()
            },
        )
        .unwrap();
        assert_eq!(log.stats().messages, 1);
        assert_eq!(texts(&kept, "a"), ["new"]);
        assert!(texts(&kept, "b").is_empty());
        log.close();
        let _ = fs::remove_dir_all(&dir);
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut s: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        s.sort();
        s
    }

    #[test]
    fn compaction_frees_a_segment_a_quiet_room_pinned_and_a_copy_is_read_once() {
        let dir = scratch("compact");
        let small = Options {
            retain: 2,
            segment_bytes: 400,
            ..options()
        };
        let (log, _) = Log::open(&dir, small.clone()).unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        log.append(Change::Said(&said(1, "quiet", at, "the only line")));
        let topic = Topic {
            text: "kept".into(),
            by: "alice".into(),
            at,
        };
        log.append(Change::Topic {
            room: "quiet",
            id: 2,
            topic: &topic,
        });
        for id in 3..=40 {
            log.append(Change::Said(&said(
                id,
                "busy",
                at,
                &format!("line {id:02}"),
            )));
            log.barrier();
        }
        let first = segments(&dir)[0].clone();
        let before = fs::read(&first).unwrap();
        // The first segment holds two kept records and many let go of: it is copied forward.
        log.inner.compact();
        // Deleted only once an fsync has made the copies durable.
        assert!(first.exists(), "deleted before its copies were synced");
        log.inner.sync();
        assert!(!first.exists(), "the sparse segment is deleted");
        log.close();
        // As if the process had died between the copy and the deletion: both copies exist.
        fs::write(&first, &before).unwrap();
        let (log, kept) = Log::open(&dir, small).unwrap();
        assert_eq!(texts(&kept, "quiet"), ["the only line"]);
        assert_eq!(texts(&kept, "busy"), ["line 39", "line 40"]);
        let quiet = kept.rooms.iter().find(|r| &*r.name == "quiet").unwrap();
        assert_eq!(quiet.topic.as_ref().map(|t| &*t.text), Some("kept"));
        assert_eq!(log.stats().messages, 3);
        log.close();
        let _ = fs::remove_dir_all(&dir);
    }

    /// One damaged record in the middle of a segment: the records before it are read, the
    /// file is kept (before, it was deleted at the second start, with the good records after
    /// the damage), and ids go on past the clock.
    #[test]
    fn a_damaged_record_keeps_its_segment_for_repair() {
        let dir = scratch("damaged");
        let (log, _) = Log::open(&dir, options()).unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        for id in 1..=5 {
            log.append(Change::Said(&said(id, "r", at, &format!("line {id}"))));
            log.barrier();
        }
        log.close();
        let first = segment_path(&dir, 1);
        let mut bytes = fs::read(&first).unwrap();
        // A byte of the first record's payload.
        bytes[HEADER_LEN + record::FRAME_LEN + 2] ^= 0xFF;
        fs::write(&first, &bytes).unwrap();
        for _ in 0..2 {
            let clock = micros(SystemTime::now()) as u64;
            let (log, kept) = Log::open(&dir, options()).unwrap();
            // The first record was damaged; the four after it cannot be read.
            assert!(kept.rooms.iter().all(|r| &*r.name != "r"));
            assert!(kept.next_event >= clock);
            log.close();
            assert_eq!(
                fs::read(&first).unwrap(),
                bytes,
                "the damaged file is kept as it is"
            );
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_segment_whose_records_all_went_is_deleted_and_a_torn_tail_is_skipped() {
        let dir = scratch("segments");
        let (log, _) = Log::open(
            &dir,
            Options {
                retain: 2,
                segment_bytes: 200,
                ..options()
            },
        )
        .unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        for id in 1..=20 {
            log.append(Change::Said(&said(id, "r", at, &format!("line {id:02}"))));
            log.barrier();
        }
        log.close();
        let segments = || {
            let mut s: Vec<String> = fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.ends_with(".log"))
                .collect();
            s.sort();
            s
        };
        // 20 records of ~60 bytes rotate every few; only those holding the last two remain
        // (and the newest segment).
        assert!(segments().len() <= 3, "{:?}", segments());
        // A write cut short at the end of the newest segment: reported and skipped.
        let last = dir.join(segments().last().unwrap());
        let mut f = OpenOptions::new().append(true).open(&last).unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, 5]).unwrap();
        drop(f);
        let (log, kept) = Log::open(
            &dir,
            Options {
                retain: 2,
                ..options()
            },
        )
        .unwrap();
        assert_eq!(texts(&kept, "r"), ["line 19", "line 20"]);
        assert!(kept.next_event > 20);
        log.close();
        let _ = fs::remove_dir_all(&dir);
    }
}
