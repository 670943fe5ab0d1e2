//! A member: someone the hub can deliver to. It owns a bounded outbox and a format slot, and
//! has no socket: whatever drains the outbox (a TCP writer, later a WebSocket or a cluster
//! link) is the protocol's business.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::event::{Event, MemberId, Render};
use super::leave::LeaveReason;
use super::lock;
use super::outbox::{Outbox, Rejected};
use super::partners::Partners;
use super::stats::{ClientStats, TcpInfo};

/// Where a member's transport figures come from (`TCP_INFO` for a TCP connection).
pub trait Probe: Send + Sync + fmt::Debug {
    fn tcp_info(&self) -> Option<TcpInfo>;
}

/// What a member is, for reports: the protocol it speaks and whether its transport is
/// encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// One of [`PROTOCOLS`].
    pub protocol: &'static str,
    /// `None` for plaintext.
    pub tls: Option<TlsInfo>,
}

/// What a TLS connection negotiated, as rustls names it (`TLSv1.3`,
/// `TLS13_AES_256_GCM_SHA384`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsInfo {
    pub version: &'static str,
    pub suite: &'static str,
}

#[derive(Debug)]
pub struct Member {
    pub id: MemberId,
    pub addr: SocketAddr,
    pub kind: Kind,
    pub stats: ClientStats,
    probe: Option<Box<dyn Probe>>,
    outbox: Outbox,
    /// The slot of the hub's formats this member's events are rendered with. Changes when an
    /// IRC client turns message tags on or off.
    format: AtomicUsize,
    /// Whether the member is sent its own messages back (IRC `echo-message`).
    echo: AtomicBool,
    /// Whether the member is told when people go away and come back (IRC `away-notify`).
    wants_away: AtomicBool,
    /// Whether the member is told when people log in and out (IRC `account-notify`).
    wants_account: AtomicBool,
    /// A server operator (IRC `OPER`).
    oper: AtomicBool,
    /// Hidden from WHO by those who share no room with it (IRC user mode `+i`).
    invisible: AtomicBool,
    /// Renamed by the hub since its session last looked ([`Member::take_renamed`]): on a
    /// cluster the server itself may rename it (the conflict rule after an outage), and the
    /// session asks the hub for its name only then, not under the hub's lock per command.
    renamed: AtomicBool,
    /// The id of the last event fanned out to this member across several rooms, so an event
    /// that reaches it through two rooms is delivered once.
    seen: AtomicU64,
    kicked: CancellationToken,
    kick_reason: OnceLock<LeaveReason>,
    /// Whom it talked to in private lately, so a name taken over is noticed (the hub's
    /// `private`).
    partners: Mutex<Partners>,
    /// The registered account this connection proved (by password, SASL or `PASS`), if any:
    /// rooms it operates give it operator status as it enters.
    account: Mutex<Option<Arc<str>>>,
    /// Whom this member ignores: their room lines and private messages are not delivered to
    /// it. Changed only through the hub, which keeps each room's count of ignorers in step
    /// with `ignoring`, so a room where nobody ignores anyone fans out as if ignoring did not
    /// exist.
    ignores: Mutex<Vec<Ignored>>,
    ignoring: AtomicBool,
}

/// Someone ignored: by nickname (so it holds across reconnects) and, while that connection
/// lasts, by connection (so a rename does not escape it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// As typed, for listings.
    pub nick: Arc<str>,
    /// Lower case, for matching.
    key: String,
    pub member: Option<MemberId>,
}

impl Ignored {
    pub fn new(nick: &str, member: Option<MemberId>) -> Ignored {
        Ignored {
            nick: nick.into(),
            key: nick.to_ascii_lowercase(),
            member,
        }
    }

    /// Whether this names the sender `id`, whose nickname in lower case is `key`.
    pub fn names(&self, id: MemberId, key: &str) -> bool {
        self.member == Some(id) || self.key == key
    }

    pub fn key(&self) -> &str {
        &self.key
    }
}

/// Most people one member ignores.
pub const MAX_IGNORED: usize = 100;

impl Member {
    pub fn new(
        id: MemberId,
        addr: SocketAddr,
        kind: Kind,
        format: usize,
        stats: ClientStats,
        queue_bytes: usize,
        probe: Option<Box<dyn Probe>>,
    ) -> Arc<Member> {
        Arc::new(Member {
            id,
            addr,
            kind,
            stats,
            probe,
            outbox: Outbox::new(queue_bytes),
            format: AtomicUsize::new(format),
            echo: AtomicBool::new(false),
            wants_away: AtomicBool::new(false),
            wants_account: AtomicBool::new(false),
            renamed: AtomicBool::new(false),
            oper: AtomicBool::new(false),
            invisible: AtomicBool::new(false),
            seen: AtomicU64::new(0),
            kicked: CancellationToken::new(),
            kick_reason: OnceLock::new(),
            partners: Mutex::default(),
            account: Mutex::default(),
            ignores: Mutex::default(),
            ignoring: AtomicBool::new(false),
        })
    }

    /// Its recent private partners.
    pub fn partners(&self) -> MutexGuard<'_, Partners> {
        lock(&self.partners)
    }

    /// Queues `msg` without waiting. A full queue disconnects the member as a slow consumer;
    /// a closing connection takes nothing more (and that is not counted as a delivery).
    #[inline]
    pub fn push(&self, msg: Bytes) -> Result<(), Rejected> {
        // Some replies are empty (IRC's CHATHISTORY of an empty room, to a client without
        // `batch`). Nothing to send is no message: it is not counted as queued and does not
        // wake the writer. (The writer copes with empty entries too, `Progress::new`, so a
        // batch of them cannot read as a dead peer whatever queues them.)
        if msg.is_empty() {
            return Ok(());
        }
        let result = self.outbox.push(msg, &self.stats.queued);
        if result == Err(Rejected::Full) {
            self.stats.dropped.fetch_add(1, Relaxed);
            self.kick(LeaveReason::SlowConsumer);
        }
        result
    }

    /// Queues `event` as this member's format renders it; `false` if it was not queued or
    /// this format does not show it.
    pub fn deliver(&self, event: &Event, formats: &[&'static dyn Render]) -> bool {
        let bytes = event.rendered(formats, self.format.load(Relaxed));
        !bytes.is_empty() && self.push(bytes.clone()).is_ok()
    }

    /// [`Member::deliver`], unless this member already got `event` through another room.
    pub fn deliver_once(&self, event: &Event, formats: &[&'static dyn Render]) -> bool {
        self.seen.swap(event.id, Relaxed) != event.id && self.deliver(event, formats)
    }

    /// Counts `event_id` as delivered, so [`Member::deliver_once`] skips it.
    pub fn mark_seen(&self, event_id: u64) {
        self.seen.store(event_id, Relaxed);
    }

    /// The queue this member's writer drains.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    #[inline]
    pub fn format(&self) -> usize {
        self.format.load(Relaxed)
    }

    /// Only the hub changes a member's format, so rooms' format counts stay right.
    pub(super) fn set_format(&self, slot: usize) {
        self.format.store(slot, Relaxed);
    }

    pub fn echo(&self) -> bool {
        self.echo.load(Relaxed)
    }

    pub fn set_echo(&self, on: bool) {
        self.echo.store(on, Relaxed);
    }

    /// Set by the hub, under its lock, once the new name is in place.
    pub fn mark_renamed(&self) {
        self.renamed.store(true, Relaxed);
    }

    /// Whether the hub renamed this member since the last call: a plain load while not.
    pub fn take_renamed(&self) -> bool {
        self.renamed.load(Relaxed) && self.renamed.swap(false, Relaxed)
    }

    pub fn wants_away(&self) -> bool {
        self.wants_away.load(Relaxed)
    }

    pub fn set_wants_away(&self, on: bool) {
        self.wants_away.store(on, Relaxed);
    }

    pub fn wants_account(&self) -> bool {
        self.wants_account.load(Relaxed)
    }

    pub fn set_wants_account(&self, on: bool) {
        self.wants_account.store(on, Relaxed);
    }

    pub fn is_oper(&self) -> bool {
        self.oper.load(Relaxed)
    }

    pub fn set_oper(&self, on: bool) {
        self.oper.store(on, Relaxed);
    }

    pub fn is_invisible(&self) -> bool {
        self.invisible.load(Relaxed)
    }

    pub fn set_invisible(&self, on: bool) {
        self.invisible.store(on, Relaxed);
    }

    /// The registered account this connection proved, if any.
    pub fn account(&self) -> Option<Arc<str>> {
        lock(&self.account).clone()
    }

    /// Records the account this connection proved (`None`: it no longer has one).
    pub fn set_account(&self, account: Option<&str>) {
        *lock(&self.account) = account.map(Into::into);
    }

    /// Whether this member ignores anyone (one load, on the fan-out path of rooms that have
    /// an ignorer in them).
    #[inline]
    pub fn ignoring(&self) -> bool {
        self.ignoring.load(Relaxed)
    }

    /// Whether this member ignores sender `id`, whose nickname in lower case is `key`.
    pub fn ignores(&self, id: MemberId, key: &str) -> bool {
        self.ignoring() && lock(&self.ignores).iter().any(|i| i.names(id, key))
    }

    /// Whom this member ignores.
    pub fn ignored(&self) -> Vec<Ignored> {
        lock(&self.ignores).clone()
    }

    /// Replaces whom this member ignores; only the hub calls it, under its lock, since rooms
    /// count their ignorers. Returns whether [`Member::ignoring`] changed.
    pub(super) fn set_ignored(&self, list: Vec<Ignored>) -> bool {
        let on = !list.is_empty();
        *lock(&self.ignores) = list;
        self.ignoring.swap(on, Relaxed) != on
    }

    /// Whether this member is always in exactly one room, as its format says (the line
    /// protocol, over TCP or WebSocket): put out of one, it lands in the lobby.
    pub fn always_in_a_room(&self, formats: &[&'static dyn Render]) -> bool {
        formats[self.format()].always_in_a_room()
    }

    /// The transport's current figures, where it has any.
    pub fn tcp_info(&self) -> Option<TcpInfo> {
        self.probe.as_ref()?.tcp_info()
    }

    /// Asks the member's session to end for `reason`. The first reason wins; returns whether
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

/// Bytes queued over `members`, and the most for any one: the `Queued output` figures.
/// What [`Kind::protocol`] may be: the netcat line protocol, IRC, and WebSocket (whichever of
/// the two it carries).
pub const PROTOCOLS: [&str; 3] = ["line", "irc", "web"];

pub fn queue_totals<'a>(members: impl Iterator<Item = &'a Member>) -> (usize, usize) {
    members.fold((0, 0), |(sum, max), member| {
        let q = member.stats.queued.load(Relaxed);
        (sum + q, max.max(q))
    })
}
