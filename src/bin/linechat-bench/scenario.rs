//! One run: connect and set up every client, let the setup traffic settle, send for the
//! warmup and the measured interval, drain, and count what every receiver got.

use std::cell::RefCell;

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use bytes::BytesMut;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, timeout, timeout_at};

use crate::plan::{Endpoint, Plan};
use crate::proto::{show, Events, Handshake, Protocol, Who};
use crate::stats::{
    fmt_us, human, kib, new_histogram, procfs, progress_bar, round2, round3, sample, Sample,
};
use crate::tls::{Rd, Wr};
use crate::track::{Obs, SeqTrack};
use crate::{wire, Args};

/// Messages written per `write_all` at most (one TCP write carries many messages).
const MAX_BATCH: u64 = 256;
/// Size of the per-worker-thread read buffer shared by all connections on that thread.
const SCRATCH_BYTES: usize = 256 * 1024;
/// A connection's unparsed tail may not grow past this (protects against a runaway peer).
const MAX_PARTIAL: usize = 16 * 1024 * 1024;
/// Latency histogram shards (receivers pick one by index, so locks are rarely contended).
const HIST_SHARDS: usize = 32;

/// State shared by all tasks of a run.
#[derive(Debug)]
struct Shared {
    start: Instant,
    senders: usize,
    /// Window size in window mode (rate 0), None in rate mode.
    window: Option<u32>,
    /// Measured interval as ns since `start` (u64::MAX until the senders are started).
    measure_start_ns: AtomicU64,
    measure_end_ns: AtomicU64,
    /// Distinct deliveries so far (all messages, warmup included).
    delivered: AtomicU64,
    /// Distinct deliveries of messages sent in the measured interval.
    measured: AtomicU64,
    /// Lines / frames that were not bench messages (join notices, help, ...).
    other: AtomicU64,
    /// Receiving connections still open.
    live: AtomicUsize,
    /// Whether sender s's own receiving connection is still open.
    own_alive: Vec<AtomicBool>,
    /// Messages written by each sender so far.
    sent: Vec<AtomicU64>,
    /// Window mode: per sender, `window` slots; slot q % W counts receivers that got seq q.
    acks: Vec<Box<[AtomicU32]>>,
    /// Wakes sender s when one of its messages has reached every receiver.
    wake: Vec<Notify>,
    hist: Vec<Mutex<Histogram<u64>>>,
    /// Cluster nodes the clients are spread over (client i on node i mod nodes; 1: one server).
    nodes: usize,
    /// The same, for the deliveries whose sender is on another node than the receiver.
    cross_hist: Vec<Mutex<Histogram<u64>>>,
}

impl Shared {
    fn new(start: Instant, senders: usize, window: Option<u32>, nodes: usize) -> Self {
        Shared {
            start,
            senders,
            window,
            measure_start_ns: AtomicU64::new(u64::MAX),
            measure_end_ns: AtomicU64::new(u64::MAX),
            delivered: AtomicU64::new(0),
            measured: AtomicU64::new(0),
            other: AtomicU64::new(0),
            live: AtomicUsize::new(0),
            own_alive: (0..senders).map(|_| AtomicBool::new(false)).collect(),
            sent: (0..senders).map(|_| AtomicU64::new(0)).collect(),
            acks: (0..senders)
                .map(|_| {
                    (0..window.unwrap_or(0))
                        .map(|_| AtomicU32::new(0))
                        .collect::<Vec<_>>()
                        .into_boxed_slice()
                })
                .collect(),
            wake: (0..senders).map(|_| Notify::new()).collect(),
            hist: (0..HIST_SHARDS)
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
            nodes: nodes.max(1),
            cross_hist: (0..HIST_SHARDS)
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
        }
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// How many receivers a message of sender s must reach right now.
    fn ack_target(&self, s: usize) -> usize {
        let own = usize::from(self.own_alive[s].load(Ordering::Acquire));
        self.live.load(Ordering::Acquire).saturating_sub(own)
    }

    fn receiver_gone(&self, own: Option<usize>) {
        self.live.fetch_sub(1, Ordering::AcqRel);
        if let Some(s) = own {
            self.own_alive[s].store(false, Ordering::Release);
        }
        for w in &self.wake {
            w.notify_one();
        }
    }
}

thread_local! {
    /// Read buffer shared by all connections served by one worker thread: an idle connection
    /// owns no buffer at all, a busy one reads up to 256 KiB per syscall.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Latency samples of the read being parsed, flushed to a histogram shard after it.
    static LAT: RefCell<Lat> = const { RefCell::new(Lat { all: Vec::new(), cross: Vec::new() }) };
}

/// One read's latency samples: every measured delivery, and those that crossed between nodes.
#[derive(Debug, Default)]
pub(crate) struct Lat {
    all: Vec<u64>,
    cross: Vec<u64>,
}

impl Lat {
    fn clear(&mut self) {
        self.all.clear();
        self.cross.clear();
    }

    fn flush(&mut self, sh: &Shared, shard: usize) {
        for (samples, hist) in [(&self.all, &sh.hist), (&self.cross, &sh.cross_hist)] {
            if samples.is_empty() {
                continue;
            }
            let mut h = hist[shard % HIST_SHARDS]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for &v in samples {
                h.saturating_record(v);
            }
        }
        self.clear();
    }
}

#[derive(Debug, Default, Clone)]
struct RecvStats {
    distinct: u64,
    dup: u64,
    late: u64,
    self_deliveries: u64,
    other: u64,
    malformed: u64,
    server_errors: u64,
    last_server_error: Option<String>,
    closed_by_server: bool,
    io_error: Option<String>,
    /// Computed at the end: messages that should have arrived here and did not.
    lost: u64,
    expected: u64,
    publish_replies: u64,
}

/// One receiving connection's counters and sequence trackers.
#[derive(Debug)]
pub(crate) struct RecvCore {
    idx: usize,
    /// Sender index whose messages this connection does not expect (its own).
    own: Option<usize>,
    /// A publisher connection (Redis): not a receiver, only replies to its PUBLISHes come back.
    publisher: bool,
    track: Vec<SeqTrack>,
    st: RecvStats,
    /// Bytes the protocol asked to send back (PONGs), written after the read.
    replies: Vec<u8>,
    // Per-read batches flushed to the shared counters.
    b_delivered: u64,
    b_measured: u64,
    b_other: u64,
}

/// One receiving connection: its protocol, its counters and the unparsed tail of the last read.
#[derive(Debug)]
pub(crate) struct Receiver {
    proto: Arc<dyn Protocol>,
    core: RecvCore,
    partial: Vec<u8>,
}

/// What [`Protocol::parse`] reports into during one read.
struct Rx<'a> {
    core: &'a mut RecvCore,
    now: u64,
    sh: &'a Shared,
    lat: &'a mut Lat,
}

impl Events for Rx<'_> {
    fn payload(&mut self, p: &[u8]) {
        self.core.on_payload(p, self.now, self.sh, self.lat);
    }
    fn other(&mut self) {
        self.core.b_other += 1;
    }
    fn server_error(&mut self, line: &[u8]) {
        let st = &mut self.core.st;
        st.server_errors += 1;
        if st.last_server_error.is_none() {
            st.last_server_error = Some(show(line));
        }
    }
    fn malformed(&mut self) {
        self.core.st.malformed += 1;
    }
    fn publish_reply(&mut self) {
        self.core.st.publish_replies += 1;
    }
    fn reply(&mut self, bytes: &[u8]) {
        self.core.replies.extend_from_slice(bytes);
    }
}

impl RecvCore {
    fn on_payload(&mut self, p: &[u8], now: u64, sh: &Shared, lat: &mut Lat) {
        let Some((s, q, ts)) = wire::parse_payload(p) else {
            self.b_other += 1;
            return;
        };
        if s >= sh.senders || q == 0 {
            self.st.malformed += 1;
            return;
        }
        if Some(s) == self.own {
            self.st.self_deliveries += 1;
            return;
        }
        if self.track.is_empty() {
            self.track = vec![SeqTrack::default(); sh.senders];
        }
        match self.track[s].observe(q) {
            Obs::Dup => {
                self.st.dup += 1;
                return;
            }
            Obs::Late => self.st.late += 1,
            Obs::Fresh => {}
        }
        self.st.distinct += 1;
        self.b_delivered += 1;
        let ms = sh.measure_start_ns.load(Ordering::Relaxed);
        let me = sh.measure_end_ns.load(Ordering::Relaxed);
        if ts >= ms && ts < me {
            self.b_measured += 1;
            let l = now.saturating_sub(ts).max(1);
            lat.all.push(l);
            // Sender s is client s, on node s mod nodes.
            if sh.nodes > 1 && s % sh.nodes != self.idx % sh.nodes {
                lat.cross.push(l);
            }
        }
        if let Some(w) = sh.window {
            let slot = &sh.acks[s][(q % u64::from(w)) as usize];
            let got = slot.fetch_add(1, Ordering::AcqRel) as usize + 1;
            if got >= sh.ack_target(s) {
                sh.wake[s].notify_one();
            }
        }
    }
}

impl Receiver {
    fn new(
        proto: Arc<dyn Protocol>,
        idx: usize,
        own: Option<usize>,
        publisher: bool,
        leftover: Vec<u8>,
    ) -> Self {
        Receiver {
            proto,
            core: RecvCore {
                idx,
                own,
                publisher,
                track: Vec::new(),
                st: RecvStats::default(),
                replies: Vec::new(),
                b_delivered: 0,
                b_measured: 0,
                b_other: 0,
            },
            partial: leftover,
        }
    }

    fn counts_as_receiver(&self) -> bool {
        !self.core.publisher
    }

    /// Parses as many complete messages as `buf` holds; returns the bytes consumed.
    fn process(
        &mut self,
        buf: &[u8],
        now: u64,
        sh: &Shared,
        lat: &mut Lat,
    ) -> Result<usize, String> {
        let mut rx = Rx {
            core: &mut self.core,
            now,
            sh,
            lat,
        };
        self.proto.parse(buf, &mut rx)
    }

    fn flush_counters(&mut self, sh: &Shared) {
        let c = &mut self.core;
        if c.b_delivered > 0 {
            sh.delivered.fetch_add(c.b_delivered, Ordering::Relaxed);
            c.b_delivered = 0;
        }
        if c.b_measured > 0 {
            sh.measured.fetch_add(c.b_measured, Ordering::Relaxed);
            c.b_measured = 0;
        }
        if c.b_other > 0 {
            c.st.other += c.b_other;
            sh.other.fetch_add(c.b_other, Ordering::Relaxed);
            c.b_other = 0;
        }
    }

    fn poll_read_process(
        &mut self,
        rd: &mut Rd,
        cx: &mut std::task::Context<'_>,
        sh: &Shared,
    ) -> Poll<std::io::Result<bool>> {
        let res = SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let pl = self.partial.len();
            if scratch.len() < pl + SCRATCH_BYTES {
                scratch.resize(pl + SCRATCH_BYTES, 0);
            }
            scratch[..pl].copy_from_slice(&self.partial);
            let mut rb = ReadBuf::new(&mut scratch[pl..]);
            match Pin::new(&mut *rd).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let n = rb.filled().len();
            if n == 0 {
                return Poll::Ready(Ok(false));
            }
            let total = pl + n;
            let now = sh.now_ns();
            let parsed = LAT.with(|lat| {
                let mut lat = lat.borrow_mut();
                let consumed = self
                    .process(&scratch[..total], now, sh, &mut lat)
                    .map_err(std::io::Error::other)?;
                self.partial.clear();
                self.partial.extend_from_slice(&scratch[consumed..total]);
                if self.partial.capacity() > 64 * 1024 && self.partial.len() < 4096 {
                    self.partial.shrink_to(4096);
                }
                lat.flush(sh, self.core.idx);
                Ok::<(), std::io::Error>(())
            });
            if let Err(e) = parsed {
                return Poll::Ready(Err(e));
            }
            if self.partial.len() > MAX_PARTIAL {
                return Poll::Ready(Err(std::io::Error::other(
                    "incomplete message larger than 16 MiB",
                )));
            }
            Poll::Ready(Ok(true))
        });
        // Drop the scratch buffer of a thread if it grew for one huge message.
        if self.partial.len() > SCRATCH_BYTES {
            SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                if s.len() > 4 * SCRATCH_BYTES {
                    s.truncate(SCRATCH_BYTES);
                    s.shrink_to_fit();
                }
            });
        }
        self.flush_counters(sh);
        res
    }
}

type Writer = Arc<tokio::sync::Mutex<Wr>>;
/// A set-up connection: (index, writer, its receive task).
type Conn = (usize, Writer, JoinHandle<Receiver>);

/// Writes what the protocol asked to send back (PONGs) on the connection's shared writer.
async fn send_replies(r: &mut Receiver, w: &Writer) -> bool {
    if r.core.replies.is_empty() {
        return true;
    }
    let mut w = w.lock().await;
    let res = async {
        w.write_all(&r.core.replies).await?;
        w.flush().await
    }
    .await;
    r.core.replies.clear();
    if let Err(e) = res {
        r.core.st.io_error = Some(e.to_string());
        return false;
    }
    true
}

/// Reads and parses until stopped or the connection closes; returns the receiver's state.
async fn recv_loop(
    mut rd: Rd,
    wr: Writer,
    mut r: Receiver,
    sh: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Receiver {
    // Bytes that arrived with the handshake.
    if !r.partial.is_empty() {
        let data = std::mem::take(&mut r.partial);
        LAT.with(|lat| {
            let mut lat = lat.borrow_mut();
            match r.process(&data, sh.now_ns(), &sh, &mut lat) {
                Ok(used) => r.partial.extend_from_slice(&data[used..]),
                Err(e) => r.core.st.io_error = Some(e),
            }
            lat.clear();
        });
        r.flush_counters(&sh);
    }
    let own = r.core.own;
    let counts = r.counts_as_receiver();
    loop {
        if r.core.st.io_error.is_some() || !send_replies(&mut r, &wr).await {
            break;
        }
        let step = std::future::poll_fn(|cx| r.poll_read_process(&mut rd, cx, &sh));
        let res = tokio::select! {
            biased;
            _ = stop.changed() => break,
            res = step => res,
        };
        match res {
            Ok(true) => {}
            Ok(false) => {
                r.core.st.closed_by_server = true;
                break;
            }
            Err(e) => {
                r.core.st.io_error = Some(e.to_string());
                break;
            }
        }
    }
    if counts && !*stop.borrow() {
        // Gone before the end of the run: senders must stop waiting for it.
        sh.receiver_gone(own);
    }
    r
}

#[derive(Debug, Default, Clone)]
struct SenderStats {
    sent: u64,
    sent_measured: u64,
    stalls: u64,
    write_error: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct Timeline {
    t0: Instant,
    measure_end: Instant,
    hard_end: Instant,
}

struct SenderCtx {
    s: usize,
    w: Writer,
    sh: Arc<Shared>,
    proto: Arc<dyn Protocol>,
    msg_size: usize,
    tl: Timeline,
    out: BytesMut,
    tmp: BytesMut,
    st: SenderStats,
    next_seq: u64,
    stall_ms: u64,
}

impl std::fmt::Debug for SenderCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderCtx").field("s", &self.s).finish()
    }
}

impl SenderCtx {
    /// Builds and writes `n` messages in one write. Returns false if the connection failed.
    async fn send(&mut self, n: u64) -> bool {
        let ts = self.sh.now_ns();
        self.out.clear();
        for i in 0..n {
            self.tmp.clear();
            wire::put_payload(&mut self.tmp, self.s, self.next_seq + i, ts, self.msg_size);
            self.proto.put_message(&mut self.out, &self.tmp);
        }
        let mut w = self.w.lock().await;
        let write = async {
            w.write_all(&self.out).await?;
            // TLS may hold the last record back until flushed; for TCP this does nothing.
            w.flush().await
        };
        match timeout_at(self.tl.hard_end.into(), write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.st.write_error = Some(e.to_string());
                return false;
            }
            Err(_) => {
                self.st.write_error = Some("write blocked until the end of the run".into());
                return false;
            }
        }
        self.next_seq += n;
        self.st.sent += n;
        let ms = self.sh.measure_start_ns.load(Ordering::Relaxed);
        let me = self.sh.measure_end_ns.load(Ordering::Relaxed);
        if ts >= ms && ts < me {
            self.st.sent_measured += n;
        }
        self.sh.sent[self.s].store(self.st.sent, Ordering::Release);
        true
    }
}

/// Open loop: sender s sends `per_sec` messages per second on a fixed schedule (staggered
/// among senders), catching up in batches when a timer fires late.
async fn sender_rate(mut c: SenderCtx, per_sec: f64, senders: usize) -> SenderStats {
    let stagger = Duration::from_secs_f64((c.s as f64 / senders as f64) / per_sec);
    let begin = c.tl.t0 + stagger.min(Duration::from_secs(1));
    sleep_until(begin.into()).await;
    loop {
        let now = Instant::now();
        if now >= c.tl.measure_end {
            break;
        }
        let due = ((now - begin).as_secs_f64() * per_sec) as u64 + 1;
        let sent = c.next_seq - 1;
        let n = due.saturating_sub(sent).min(MAX_BATCH);
        if n > 0 && !c.send(n).await {
            break;
        }
        let next_due = begin + Duration::from_secs_f64((c.next_seq - 1) as f64 / per_sec);
        let wake = next_due.min(c.tl.measure_end);
        if wake > Instant::now() {
            sleep_until(wake.into()).await;
        }
    }
    c.st
}

/// Closed loop: at most W messages in flight per sender, where in flight means sent but not
/// yet received by EVERY receiver that should get it. Counting all receivers (not one
/// designated receiver) bounds what the server holds queued for its slowest client, so the
/// run measures sustained fan-out throughput and the latencies are those of a server that
/// keeps up, not of a growing backlog. A message that has not reached everyone within
/// --stall-timeout-ms is given up on (a stall) so that a loss cannot freeze the sender.
async fn sender_window(mut c: SenderCtx, w: u32) -> SenderStats {
    let wn = u64::from(w);
    let stall = Duration::from_millis(c.stall_ms);
    let mut sent_at = vec![c.tl.t0; w as usize];
    let mut oldest = 1u64; // oldest sequence number not yet retired
    sleep_until(c.tl.t0.into()).await;
    loop {
        let now = Instant::now();
        if now >= c.tl.measure_end {
            break;
        }
        let target = c.sh.ack_target(c.s);
        while oldest < c.next_seq {
            let i = (oldest % wn) as usize;
            let slot = &c.sh.acks[c.s][i];
            let done = slot.load(Ordering::Acquire) as usize >= target;
            if done || now.duration_since(sent_at[i]) >= stall {
                slot.store(0, Ordering::Release);
                if !done {
                    c.st.stalls += 1;
                }
                oldest += 1;
            } else {
                break;
            }
        }
        let in_flight = c.next_seq - oldest;
        if in_flight < wn {
            let n = (wn - in_flight).min(MAX_BATCH);
            let first = c.next_seq;
            if !c.send(n).await {
                break;
            }
            let t = Instant::now();
            for q in first..first + n {
                sent_at[(q % wn) as usize] = t;
            }
            continue;
        }
        let deadline = (sent_at[(oldest % wn) as usize] + stall).min(c.tl.measure_end);
        tokio::select! {
            _ = c.sh.wake[c.s].notified() => {}
            _ = sleep_until(deadline.into()) => {}
        }
    }
    c.st
}

#[derive(Debug)]
pub struct Report {
    pub json: bool,
    pub value: Value,
    pub table: String,
}

/// Connect + register + join, within `--connect-timeout`.
async fn set_up(ep: &Endpoint, who: Who) -> Result<Handshake> {
    let proto = &*ep.proto;
    let mut c = Handshake::connect(ep.addr, ep.tls.clone()).await?;
    proto.register(&mut c, who).await?;
    proto.join(&mut c, who).await?;
    Ok(c)
}

pub async fn run(args: Args, plan: Plan) -> Result<Report> {
    let start = Instant::now();
    let plan = Arc::new(plan);
    let connect_timeout = Duration::from_secs_f64(args.connect_timeout);
    let n = args.clients;
    let s_count = args.senders;
    let window = (args.rate == 0.0 && s_count > 0).then_some(args.window);
    let sh = Arc::new(Shared::new(start, s_count, window, plan.nodes));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut warnings: Vec<String> = Vec::new();

    // --- connect -------------------------------------------------------------------------
    let before = sample(&args.server_pid);
    let pb = progress_bar(
        n as u64,
        "connecting {bar:40} {pos}/{len} connections [{elapsed}]",
    );
    let sem = Arc::new(Semaphore::new(args.connect_concurrency));
    let mut setup: Vec<JoinHandle<Result<Conn>>> = Vec::with_capacity(n + s_count);
    let publishers = plan.separate_publishers();
    let total_conns = n + if publishers { s_count } else { 0 };
    let setup_failed = Arc::new(AtomicBool::new(false));
    for idx in 0..total_conns {
        // Take the permit before spawning, so that only `connect_concurrency` handshakes (and
        // their buffers) exist at once, and stop early once one has failed.
        let permit = sem.clone().acquire_owned().await?;
        if setup_failed.load(Ordering::Relaxed) {
            break;
        }
        let (plan, sh, stop_rx, pb, setup_failed) = (
            plan.clone(),
            sh.clone(),
            stop_rx.clone(),
            pb.clone(),
            setup_failed.clone(),
        );
        let publisher = idx >= n;
        // A publisher goes where its sender's subscriber went.
        let client = if publisher { idx - n } else { idx };
        let who = Who {
            idx: client,
            sender: client < s_count,
            publisher,
        };
        setup.push(tokio::spawn(async move {
            let _permit = permit;
            let what = if publisher { "publisher " } else { "client " };
            let ep = plan.endpoint(client).clone();
            let res = timeout(connect_timeout, set_up(&ep, who)).await;
            if !matches!(res, Ok(Ok(_))) {
                setup_failed.store(true, Ordering::Relaxed);
            }
            let c = res
                .map_err(|_| {
                    anyhow!(
                        "{what}{idx}: connect + handshake took longer than --connect-timeout {:?} \
                         (is the server at {} really speaking {}?)",
                        connect_timeout,
                        ep.addr,
                        ep.proto.name()
                    )
                })?
                .with_context(|| format!("{what}{idx}"))?;
            let Handshake { rd, wr, buf, .. } = c;
            let wr: Writer = Arc::new(tokio::sync::Mutex::new(wr));
            let own = (!publisher && who.sender).then_some(client);
            if !publisher {
                sh.live.fetch_add(1, Ordering::AcqRel);
                if let Some(s) = own {
                    sh.own_alive[s].store(true, Ordering::Release);
                }
            }
            let r = Receiver::new(ep.proto.clone(), idx, own, publisher, buf);
            let h = tokio::spawn(recv_loop(rd, wr.clone(), r, sh, stop_rx));
            pb.inc(1);
            Ok((idx, wr, h))
        }));
    }
    let mut writers: Vec<Option<Writer>> = vec![None; total_conns];
    let mut receivers: Vec<JoinHandle<Receiver>> = Vec::with_capacity(total_conns);
    let mut failures = 0usize;
    let mut first_error: Option<anyhow::Error> = None;
    for h in setup {
        match h.await {
            Ok(Ok((idx, wr, rh))) => {
                writers[idx] = Some(wr);
                receivers.push(rh);
            }
            Ok(Err(e)) => {
                failures += 1;
                first_error.get_or_insert(e);
            }
            Err(e) => {
                failures += 1;
                first_error.get_or_insert(anyhow!("setup task failed: {e}"));
            }
        }
    }
    pb.finish_and_clear();
    if let Some(e) = first_error {
        let _ = stop_tx.send(true);
        return Err(e.context(format!(
            "{failures} of the {total_conns} connections could not be set up (stopped at the first failure)"
        )));
    }
    let setup_s = start.elapsed().as_secs_f64();

    // --- settle: wait until join notices etc. stop flowing -----------------------------------
    let settle_deadline = Instant::now() + Duration::from_secs_f64(args.settle_max);
    let quiet = plan.settle_quiet();
    let mut last = sh.other.load(Ordering::Relaxed);
    let mut last_change = Instant::now();
    while Instant::now() < settle_deadline {
        sleep(Duration::from_millis(50)).await;
        let cur = sh.other.load(Ordering::Relaxed);
        if cur != last {
            last = cur;
            last_change = Instant::now();
        } else if last_change.elapsed() >= quiet {
            break;
        }
    }
    if sh.live.load(Ordering::Acquire) < n {
        warnings.push(format!(
            "{} clients were disconnected during setup",
            n - sh.live.load(Ordering::Acquire)
        ));
    }
    let after_join = sample(&args.server_pid);

    // --- run ------------------------------------------------------------------------------
    let warmup = if s_count == 0 { 0.0 } else { args.warmup };
    let t0 = Instant::now() + Duration::from_millis(20);
    let measure_start = t0 + Duration::from_secs_f64(warmup);
    let measure_end = measure_start + Duration::from_secs_f64(args.duration);
    let tl = Timeline {
        t0,
        measure_end,
        hard_end: measure_end + Duration::from_secs_f64(args.drain + 5.0),
    };
    let to_ns = |t: Instant| t.duration_since(start).as_nanos() as u64;
    sh.measure_start_ns
        .store(to_ns(measure_start), Ordering::Release);
    sh.measure_end_ns
        .store(to_ns(measure_end), Ordering::Release);

    let stall_ms = args.stall_timeout_ms;
    let mut sender_handles = Vec::with_capacity(s_count);
    for s in 0..s_count {
        let widx = if publishers { n + s } else { s };
        let w = writers[widx].clone().expect("writer of a connected client");
        let c = SenderCtx {
            s,
            w,
            sh: sh.clone(),
            proto: plan.endpoint(s).proto.clone(),
            msg_size: args.msg_size,
            tl,
            out: BytesMut::with_capacity(64 * 1024),
            tmp: BytesMut::with_capacity(args.msg_size + 64),
            st: SenderStats::default(),
            next_seq: 1,
            stall_ms,
        };
        sender_handles.push(match window {
            Some(w) => tokio::spawn(sender_window(c, w)),
            None => tokio::spawn(sender_rate(c, args.rate / s_count as f64, s_count)),
        });
    }

    let total_ms = ((warmup + args.duration) * 1000.0) as u64;
    let pb = progress_bar(total_ms, "{spinner} {bar:40} {elapsed}/{duration} {msg}");
    pb.enable_steady_tick(Duration::from_millis(200));
    let mut m_start: Option<Sample> = None;
    let mut cpu_each_start = Vec::new();
    let mut rate_probe = (Instant::now(), 0u64);
    loop {
        let now = Instant::now();
        if m_start.is_none() && now >= measure_start {
            m_start = Some(sample(&args.server_pid));
            cpu_each_start = cpu_each(&args.server_pid);
        }
        if now >= measure_end {
            break;
        }
        pb.set_position(now.saturating_duration_since(t0).as_millis() as u64);
        let d = sh.delivered.load(Ordering::Relaxed);
        let dt = now.duration_since(rate_probe.0).as_secs_f64();
        if dt >= 0.5 {
            let rate = (d - rate_probe.1) as f64 / dt;
            let phase = if now < measure_start {
                "warmup"
            } else {
                "measuring"
            };
            let sent: u64 = sh.sent.iter().map(|a| a.load(Ordering::Relaxed)).sum();
            pb.set_message(format!(
                "{phase}: sent {sent}, delivered {d} ({}/s)",
                human(rate)
            ));
            rate_probe = (now, d);
        }
        let next = (now + Duration::from_millis(100))
            .min(measure_end)
            .min(if m_start.is_none() {
                measure_start
            } else {
                measure_end
            });
        sleep_until(next.into()).await;
    }
    let m_end = sample(&args.server_pid);
    let cpu_each_end = cpu_each(&args.server_pid);
    let m_start = m_start.unwrap_or(after_join);
    pb.finish_and_clear();

    // --- drain ----------------------------------------------------------------------------
    let mut sstats = Vec::with_capacity(s_count);
    for h in sender_handles {
        sstats.push(h.await.unwrap_or_default());
    }
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain);
    loop {
        let expected_now: u64 = (0..s_count)
            .map(|s| sh.sent[s].load(Ordering::Acquire) * sh.ack_target(s) as u64)
            .sum();
        if sh.delivered.load(Ordering::Acquire) >= expected_now || Instant::now() >= drain_deadline
        {
            break;
        }
        sleep(Duration::from_millis(10)).await;
    }
    let drain_s = Instant::now().duration_since(measure_end).as_secs_f64();
    let _ = stop_tx.send(true);
    let mut rstats: Vec<Receiver> = Vec::with_capacity(receivers.len());
    for h in receivers {
        if let Ok(r) = h.await {
            rstats.push(r);
        }
    }
    let end = sample(&args.server_pid);
    let bench_mem = procfs::mem_kib(None);
    drop(writers);

    // --- tally ----------------------------------------------------------------------------
    let sent_by: Vec<u64> = sstats.iter().map(|s| s.sent).collect();
    let mut tot = RecvStats::default();
    let mut disconnected = 0u64;
    let mut io_errors = 0u64;
    let mut first_io_error: Option<String> = None;
    let mut subscribers = 0u64;
    for r in rstats.iter_mut() {
        if r.counts_as_receiver() {
            subscribers += 1;
            for (s, &sent) in sent_by.iter().enumerate() {
                let c = &mut r.core;
                if Some(s) == c.own {
                    continue;
                }
                let got = c.track.get(s).map_or(0, SeqTrack::distinct);
                c.st.expected += sent;
                c.st.lost += sent.saturating_sub(got);
            }
        }
        let st = &r.core.st;
        tot.distinct += st.distinct;
        tot.dup += st.dup;
        tot.late += st.late;
        tot.self_deliveries += st.self_deliveries;
        tot.other += st.other;
        tot.malformed += st.malformed;
        tot.server_errors += st.server_errors;
        tot.publish_replies += st.publish_replies;
        tot.lost += st.lost;
        tot.expected += st.expected;
        if tot.last_server_error.is_none() {
            tot.last_server_error.clone_from(&st.last_server_error);
        }
        if st.closed_by_server {
            disconnected += 1;
        }
        if let Some(e) = &st.io_error {
            io_errors += 1;
            first_io_error.get_or_insert_with(|| e.clone());
        }
    }
    let merge = |shards: &[Mutex<Histogram<u64>>]| {
        let mut hist = new_histogram();
        for h in shards {
            let h = h.lock().unwrap_or_else(|e| e.into_inner());
            hist.add(&*h).ok();
        }
        hist
    };
    let hist = merge(&sh.hist);
    let cross_hist = merge(&sh.cross_hist);
    let sent: u64 = sent_by.iter().sum();
    let sent_measured: u64 = sstats.iter().map(|s| s.sent_measured).sum();
    let stalls: u64 = sstats.iter().map(|s| s.stalls).sum();
    let write_errors: Vec<&String> = sstats
        .iter()
        .filter_map(|s| s.write_error.as_ref())
        .collect();
    let measured = sh.measured.load(Ordering::Relaxed);
    let dur = args.duration;
    let deliveries_per_s = measured as f64 / dur;
    let cpu_delta = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some((b - a).max(0.0)),
        _ => None,
    };
    let interval_s = match (m_start.at, m_end.at) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64().max(1e-9),
        _ => dur,
    };
    let server_cpu = cpu_delta(m_start.server_cpu, m_end.server_cpu);
    let bench_cpu = cpu_delta(m_start.bench_cpu, m_end.bench_cpu);
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
    let per_cpu_s = server_cpu.and_then(|c| (c > 0.0 && s_count > 0).then(|| measured as f64 / c));
    let bench_util = bench_cpu.map(|c| c / interval_s);
    let server_util = server_cpu.map(|c| c / interval_s);
    let mut bench_bottleneck = false;
    if let Some(u) = bench_util {
        if u > 0.9 * cores && s_count > 0 {
            bench_bottleneck = true;
            warnings.push(format!(
                "the bench used {:.0}% of the {} cores: it may be the bottleneck",
                u * 100.0,
                cores
            ));
        } else if let Some(su) = server_util {
            if u + su > 0.9 * cores && s_count > 0 {
                warnings.push(format!(
                    "bench ({:.0}%) and server ({:.0}%) together used ~all {} cores: the two compete for CPU, \
                     so throughput is a lower bound",
                    u * 100.0,
                    su * 100.0,
                    cores
                ));
            }
        }
    }
    if args.rate > 0.0 && s_count > 0 {
        let achieved = sent_measured as f64 / dur;
        if achieved < 0.95 * args.rate {
            warnings.push(format!(
                "achieved send rate {:.0}/s is below the requested {:.0}/s (server pushing back or bench too slow{})",
                achieved,
                args.rate,
                plan.rate_hint()
            ));
        }
    }
    for &pid in &args.server_pid {
        if !procfs::alive(pid) {
            warnings.push(format!("the server process {pid} exited during the run"));
        }
    }
    if tot.lost > 0 {
        warnings.push(format!("{} deliveries LOST", tot.lost));
    }
    if tot.dup > 0 {
        warnings.push(format!("{} deliveries DUPLICATED", tot.dup));
    }
    if tot.late > 0 {
        warnings.push(format!("{} deliveries REORDERED", tot.late));
    }
    if stalls > 0 {
        warnings.push(format!(
            "{stalls} window stalls: messages not delivered to every receiver within {stall_ms} ms"
        ));
    }
    if disconnected > 0 {
        warnings.push(format!(
            "{disconnected} connections were closed by the server"
        ));
    }
    if io_errors > 0 {
        warnings.push(format!(
            "{io_errors} connections failed: {}",
            first_io_error.clone().unwrap_or_default()
        ));
    }
    if let Some(e) = write_errors.first() {
        warnings.push(format!(
            "{} senders failed to write: {e}",
            write_errors.len()
        ));
    }
    if tot.server_errors > 0 {
        warnings.push(format!(
            "{} error replies from the server, e.g. {}",
            tot.server_errors,
            tot.last_server_error.clone().unwrap_or_default()
        ));
    }
    if tot.malformed > 0 {
        warnings.push(format!("{} malformed bench messages", tot.malformed));
    }
    warnings.extend(plan.warnings());

    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    let latency = latency_json(&hist);
    // On a cluster: the deliveries whose sender is on another node than the receiver, the
    // ones that went through the broker.
    let cross_node = (plan.nodes > 1).then(|| {
        json!({
            "nodes": plan.nodes,
            "deliveries_measured": cross_hist.len(),
            "latency_us": latency_json(&cross_hist),
        })
    });
    let rss_per_conn = match (before.server_mem, after_join.server_mem) {
        (Some((_, b)), Some((_, a))) => Some((a as f64 - b as f64) * 1024.0 / n as f64),
        _ => None,
    };
    let rss_per_conn_end = match (before.server_mem, end.server_mem) {
        (Some((_, b)), Some((_, a))) => Some((a as f64 - b as f64) * 1024.0 / n as f64),
        _ => None,
    };
    let peak_hwm = [before, after_join, m_start, m_end, end]
        .iter()
        .filter_map(|s| s.server_mem.map(|m| m.0))
        .max();
    let expected_def = plan.expected_definition;
    let mode = if s_count == 0 {
        "idle".to_string()
    } else if let Some(w) = window {
        format!("window {w} in flight per sender (until delivered to all receivers)")
    } else {
        format!("rate {} msgs/s total", args.rate)
    };
    let mode_name = if s_count == 0 {
        "idle"
    } else if window.is_some() {
        "window"
    } else {
        "rate"
    };
    let mut value = json!({
        "proto": plan.name,
        "addr": plan.addrs(),
        "mode": mode_name,
        "clients": n,
        "senders": s_count,
        "rate": args.rate,
        "window": window,
        "duration_s": dur,
        "warmup_s": warmup,
        "msg_size": args.msg_size,
        "setup_s": round2(setup_s),
        "drain_s": round2(drain_s),
        "expected_definition": expected_def,
        "subscribers": subscribers,
        "sent": sent,
        "sent_measured": sent_measured,
        "sent_per_s": round2(sent_measured as f64 / dur),
        "expected_deliveries": tot.expected,
        "deliveries": tot.distinct,
        "deliveries_measured": measured,
        "deliveries_per_s": round2(deliveries_per_s),
        "lost": tot.lost,
        "duplicated": tot.dup,
        "reordered": tot.late,
        "self_deliveries": tot.self_deliveries,
        "other_lines": tot.other,
        "malformed": tot.malformed,
        "window_stalls": stalls,
        "disconnected_by_server": disconnected,
        "connection_errors": io_errors,
        "server_errors": tot.server_errors,
        "latency_us": latency,
        "cross_node": cross_node,
    });
    let extra = json!({
        "server": {
            "pid": match args.server_pid.as_slice() {
                [] => Value::Null,
                [p] => json!(p),
                ps => json!(ps),
            },
            "cpu_s": server_cpu.map(round3),
            // Each PID's share, in --server-pid's order (a cluster: where the CPU went).
            "cpu_s_each": (args.server_pid.len() > 1).then(|| {
                cpu_each_start
                    .iter()
                    .zip(&cpu_each_end)
                    .map(|(a, b)| a.zip(*b).map(|(a, b)| round3(b - a)))
                    .collect::<Vec<_>>()
            }),
            "cpu_util": server_util.map(round3),
            "deliveries_per_cpu_s": per_cpu_s.map(round2),
            "vm_hwm_kib": peak_hwm,
            "rss_kib_before": before.server_mem.map(|m| m.1),
            "rss_kib_after_join": after_join.server_mem.map(|m| m.1),
            "rss_kib_end": end.server_mem.map(|m| m.1),
            "rss_bytes_per_conn": rss_per_conn.map(round2),
            "rss_bytes_per_conn_end": rss_per_conn_end.map(round2),
        },
        "bench": {
            "cpu_s": bench_cpu.map(round3),
            "cpu_util": bench_util.map(round3),
            "cores": cores,
            "maybe_bottleneck": bench_bottleneck,
            "vm_hwm_kib": bench_mem.map(|m| m.0),
        },
        "warnings": warnings,
    });
    if let (Some(v), Value::Object(extra)) = (value.as_object_mut(), extra) {
        v.extend(extra);
    }

    // --- table ----------------------------------------------------------------------------
    let mut t = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        t,
        "linechat-bench: {} at {}, {} clients, {} senders, {}, {} B payload, {} s measured (+{} s warmup)",
        plan.name,
        plan.addrs(),
        n,
        s_count,
        mode,
        args.msg_size,
        dur,
        warmup
    );
    let _ = writeln!(t, "  {:<22} {}", "expected deliveries", expected_def);
    let _ = writeln!(t, "  {:<22} {:.2} s", "setup (connect+join)", setup_s);
    if s_count > 0 {
        let _ = writeln!(
            t,
            "  {:<22} {} ({} in measured interval, {}/s)",
            "messages sent",
            sent,
            sent_measured,
            human(sent_measured as f64 / dur)
        );
        let _ = writeln!(
            t,
            "  {:<22} {} of {} expected ({} measured, {}/s)",
            "deliveries",
            tot.distinct,
            tot.expected,
            measured,
            human(deliveries_per_s)
        );
        let _ = writeln!(
            t,
            "  {:<22} LOST {}  DUPLICATED {}  REORDERED {}",
            "integrity", tot.lost, tot.dup, tot.late
        );
        if !hist.is_empty() {
            let _ = writeln!(
                t,
                "  {:<22} p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                "one-way latency",
                fmt_us(q(0.5)),
                fmt_us(q(0.9)),
                fmt_us(q(0.99)),
                fmt_us(q(0.999)),
                fmt_us(hist.max() as f64 / 1000.0)
            );
        }
        if plan.nodes > 1 && !cross_hist.is_empty() {
            let xq = |p: f64| cross_hist.value_at_quantile(p) as f64 / 1000.0;
            let _ = writeln!(
                t,
                "  {:<22} {} deliveries across {} nodes: p50 {}  p99 {}  p99.9 {}  max {}",
                "cross-node latency",
                cross_hist.len(),
                plan.nodes,
                fmt_us(xq(0.5)),
                fmt_us(xq(0.99)),
                fmt_us(xq(0.999)),
                fmt_us(cross_hist.max() as f64 / 1000.0)
            );
        }
        if window.is_some() {
            let _ = writeln!(t, "  {:<22} {}", "window stalls", stalls);
        }
    }
    if !args.server_pid.is_empty() {
        let pids: Vec<String> = args.server_pid.iter().map(u32::to_string).collect();
        let _ = writeln!(
            t,
            "  {:<22} pid {}: CPU {} s ({}% of a core){}",
            "server",
            pids.join("+"),
            server_cpu.map_or("?".into(), |c| format!("{c:.2}")),
            server_util.map_or("?".into(), |u| format!("{:.0}", u * 100.0)),
            per_cpu_s.map_or(String::new(), |d| format!(
                ", {} deliveries per CPU-second",
                human(d)
            ))
        );
        let _ = writeln!(
            t,
            "  {:<22} peak (VmHWM) {}, RSS before {}, after join {}, end {}",
            "server memory",
            kib(peak_hwm),
            kib(before.server_mem.map(|m| m.1)),
            kib(after_join.server_mem.map(|m| m.1)),
            kib(end.server_mem.map(|m| m.1)),
        );
        if let Some(b) = rss_per_conn {
            let _ = writeln!(
                t,
                "  {:<22} {:.0} B per connection after join ({} at the end)",
                "server RSS growth",
                b,
                rss_per_conn_end.map_or("?".into(), |e| format!("{e:.0} B"))
            );
        }
    }
    let _ = writeln!(
        t,
        "  {:<22} CPU {} s ({}% of a core, {} cores), peak memory {}",
        "bench",
        bench_cpu.map_or("?".into(), |c| format!("{c:.2}")),
        bench_util.map_or("?".into(), |u| format!("{:.0}", u * 100.0)),
        cores,
        kib(bench_mem.map(|m| m.0))
    );
    for w in &warnings {
        let _ = writeln!(t, "  WARNING: {w}");
    }
    Ok(Report {
        json: args.json,
        value,
        table: t,
    })
}

/// Each server process's CPU seconds so far.
fn cpu_each(pids: &[u32]) -> Vec<Option<f64>> {
    pids.iter().map(|&p| procfs::cpu_seconds(Some(p))).collect()
}

/// A latency histogram in µs for the JSON report (null when empty).
fn latency_json(hist: &Histogram<u64>) -> Value {
    if hist.is_empty() {
        return Value::Null;
    }
    let q = |p: f64| round2(hist.value_at_quantile(p) as f64 / 1000.0);
    json!({
        "samples": hist.len(),
        "mean": round2(hist.mean() / 1000.0),
        "p50": q(0.50),
        "p90": q(0.90),
        "p99": q(0.99),
        "p999": q(0.999),
        "max": round2(hist.max() as f64 / 1000.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Setup;
    use crate::{irc, line, nats, redis};

    fn setup() -> Setup {
        Setup {
            nick_prefix: "b".into(),
            room: "lobby".into(),
            subject: "linechat.bench".into(),
            msg_size: 64,
            irc_oper: None,
            irc_sender_modes: None,
        }
    }

    /// Feeds `data` to a receiver in two reads split at every position, the way
    /// `poll_read_process` does (unparsed tail first, then the new bytes).
    fn feed_split(
        proto: Arc<dyn Protocol>,
        own: Option<usize>,
        data: &[u8],
    ) -> Vec<(RecvStats, Vec<u8>)> {
        let mut out = Vec::new();
        for cut in 0..=data.len() {
            let sh = Shared::new(Instant::now(), 2, Some(4), 1);
            sh.measure_start_ns.store(0, Ordering::Relaxed);
            sh.measure_end_ns.store(u64::MAX, Ordering::Relaxed);
            sh.live.store(3, Ordering::Relaxed);
            let mut r = Receiver::new(proto.clone(), 0, own, false, Vec::new());
            let mut lat = Lat::default();
            for chunk in [&data[..cut], &data[cut..]] {
                let mut buf = std::mem::take(&mut r.partial);
                buf.extend_from_slice(chunk);
                let used = r.process(&buf, 1_000_000, &sh, &mut lat).unwrap();
                r.partial = buf[used..].to_vec();
                r.flush_counters(&sh);
            }
            assert!(r.partial.is_empty(), "cut {cut}: tail left");
            assert_eq!(lat.all.len() as u64, r.core.st.distinct, "cut {cut}");
            assert_eq!(sh.acks[0][1].load(Ordering::Relaxed), 1, "cut {cut}");
            out.push((r.core.st, r.core.replies));
        }
        out
    }

    #[test]
    fn linechat_lines_split_anywhere() {
        let data = b"b2 has joined the chat.\nb0: ~B0,1,5,xxxx\r\nb1: ~B1,1,6,x\nb0: ~B0,1,5,xxxx\nb0: hello: ~B\n";
        for (st, _) in feed_split(Arc::new(line::Line::new(&setup())), Some(1), data) {
            assert_eq!(st.distinct, 1);
            assert_eq!(st.dup, 1);
            assert_eq!(st.self_deliveries, 1);
            assert_eq!(st.other, 2);
        }
    }

    /// On a cluster (client i on node i mod 3), only the deliveries from senders on another
    /// node than the receiver's are put in the cross-node histogram.
    #[test]
    fn cross_node_latency_counts_only_other_nodes_senders() {
        let sh = Shared::new(Instant::now(), 4, None, 3);
        sh.measure_start_ns.store(0, Ordering::Relaxed);
        sh.measure_end_ns.store(u64::MAX, Ordering::Relaxed);
        // Client 4 is on node 1, as sender 1 is; senders 0 and 3 are on node 0, 2 on node 2.
        let mut r = Receiver::new(
            Arc::new(line::Line::new(&setup())),
            4,
            None,
            false,
            Vec::new(),
        );
        let data = b"b0: ~B0,1,5,x\nb1: ~B1,1,5,x\nb2: ~B2,1,5,x\nb3: ~B3,1,5,x\nb1: ~B1,2,5,x\n";
        let mut lat = Lat::default();
        let used = r.process(data, 1_000_000, &sh, &mut lat).unwrap();
        assert_eq!(used, data.len());
        assert_eq!(lat.all.len(), 5);
        assert_eq!(lat.cross.len(), 3, "senders 0, 2 and 3, not 1");
        lat.flush(&sh, 4);
        assert_eq!(sh.cross_hist[4].lock().unwrap().len(), 3);
        assert_eq!(sh.hist[4].lock().unwrap().len(), 5);
    }

    #[test]
    fn nats_frames_split_anywhere() {
        let data = b"PING\r\nMSG linechat.bench 1 12\r\n~B0,1,5,xxxx\r\n+OK\r\nMSG s 2 r 10\r\n~B0,2,6,xx\r\n";
        for (st, replies) in feed_split(Arc::new(nats::Nats::new(&setup())), None, data) {
            assert_eq!(st.distinct, 2);
            assert_eq!(st.other, 1);
            assert_eq!(replies, b"PONG\r\n");
        }
    }

    #[test]
    fn redis_pushes_split_anywhere() {
        let data = b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$12\r\n~B0,1,5,xxxx\r\n\
                     *3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$9\r\n~B1,1,5,x\r\n";
        for (st, _) in feed_split(Arc::new(redis::Redis::new(&setup())), Some(1), data) {
            assert_eq!(st.distinct, 1);
            assert_eq!(st.self_deliveries, 1);
        }
    }

    #[test]
    fn irc_lines_split_anywhere() {
        let data = b":b2!~bench@localhost JOIN :#lobby\r\n\
                     :b0!~bench@localhost PRIVMSG #lobby :~B0,1,5,xxxx\r\n\
                     PING :irc.bench\r\n\
                     :b1!~bench@localhost PRIVMSG #Lobby :~B1,1,6,x\r\n\
                     :b0!~bench@localhost PRIVMSG #lobby :~B0,1,5,xxxx\r\n\
                     :b0!~bench@localhost PRIVMSG b3 :~B0,2,5,xxxx\r\n\
                     :irc.bench 404 b3 #lobby :Cannot send to channel\r\n";
        for (st, replies) in feed_split(Arc::new(irc::Irc::new(&setup())), Some(1), data) {
            assert_eq!(st.distinct, 1);
            assert_eq!(st.dup, 1);
            assert_eq!(st.self_deliveries, 1);
            assert_eq!(st.other, 3); // JOIN, the private message, the 404
            assert_eq!(st.server_errors, 1);
            assert_eq!(replies, b"PONG :irc.bench\r\n");
        }
    }

    #[test]
    fn frames_carry_the_payload() {
        let s = setup();
        let cases: [(Arc<dyn Protocol>, &[u8]); 4] = [
            (Arc::new(line::Line::new(&s)), b"~B0,1,2,\n"),
            (
                Arc::new(nats::Nats::new(&s)),
                b"PUB linechat.bench 8\r\n~B0,1,2,\r\n",
            ),
            (
                Arc::new(redis::Redis::new(&s)),
                b"*3\r\n$7\r\nPUBLISH\r\n$14\r\nlinechat.bench\r\n$8\r\n~B0,1,2,\r\n",
            ),
            (Arc::new(irc::Irc::new(&s)), b"PRIVMSG #lobby :~B0,1,2,\r\n"),
        ];
        for (p, want) in cases {
            let mut out = BytesMut::new();
            p.put_message(&mut out, b"~B0,1,2,");
            assert_eq!(&out[..], want, "{}", p.name());
        }
    }
}
