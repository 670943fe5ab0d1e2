//! The machinery every stream protocol shares: a connection's member, its reading side
//! (buffering, line framing, flood control, idle and registration timers, `TCP_INFO`
//! sampling) and its writer task, which drains the member's outbox to the socket with one
//! vectored write for everything waiting. A protocol's session reads [`Input`]s from a
//! [`Reader`] and queues everything it says through the member's outbox, so a client sees
//! everything in the order it was queued.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use crate::context::Shared;
use crate::core::member::{self, Member};
use crate::core::outbox::batch_cost;
use crate::core::stats::ClientStats;
use crate::core::LeaveReason;
use crate::net::gate::Pass;
use crate::net::stream::{Stream, Transport};
use crate::net::tls::CLIENT_HELLO_START;
use crate::proto::codec::{Frame, LineDecoder};

/// Queue slots a writer keeps between batches (32 bytes each). Swapped back and forth with the
/// outbox, this bounds what an idle client's two queues hold after any burst.
const KEEP_BATCH_CAPACITY: usize = 16;

/// How long a closing connection waits for the peer to close its side after our FIN, so that
/// unread input does not make the kernel answer with a reset that destroys our final lines.
const LINGER: Duration = Duration::from_secs(1);

/// An accepted connection, set up: its member (not yet in the hub), its reader and its
/// writer task.
#[derive(Debug)]
pub struct Conn {
    pub shared: Arc<Shared>,
    pub member: Arc<Member>,
    pub transport: Transport,
    pub reader: Reader,
    writer: JoinHandle<()>,
    /// The connection's slots (`--max-clients`, `--max-prompt`, `--max-per-ip`), given back in
    /// [`Conn::finish`].
    pass: Pass,
}

/// A connection counts as open (`connections_open`) from [`Conn::start`] until it is dropped,
/// however its session ends.
impl Drop for Conn {
    fn drop(&mut self) {
        self.shared.metrics.connections_open.fetch_sub(1, Relaxed);
    }
}

impl Conn {
    /// Tunes the socket, makes the member that `kind` and `format` describe and starts its
    /// writer. Lines longer than `max_line` are reported as [`Frame::TooLong`].
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        shared: Arc<Shared>,
        stream: Stream,
        peer: SocketAddr,
        id: u64,
        kind: member::Kind,
        format: usize,
        max_line: usize,
        pass: Pass,
    ) -> Conn {
        tracing::info!("connected");
        shared.metrics.connections_open.fetch_add(1, Relaxed);
        // Latency matters more than segment count for chat; batching happens in the writer.
        let _ = stream.tcp().set_nodelay(true);
        if let Err(e) = crate::net::sockopt::tune(stream.tcp(), &shared.config) {
            tracing::warn!(error = %e, "cannot set keepalive/user timeout; dead peers are found late");
        }
        let transport = Transport::from(stream);
        let stats = ClientStats::new(Instant::now());
        let probe = Box::new(transport.clone());
        let member = Member::new(
            id,
            peer,
            kind,
            format,
            stats,
            queue_bytes(&shared),
            Some(probe),
        );
        let drained = Arc::new(Notify::new());
        // Not instrumented: entering the connection span on every poll of the busiest task
        // showed up in profiles, and the writer logs only at debug level.
        let writer = tokio::spawn(write_loop(
            shared.clone(),
            member.clone(),
            transport.clone(),
            drained.clone(),
        ));
        Conn {
            reader: Reader::new(
                &shared,
                member.clone(),
                transport.clone(),
                drained,
                max_line,
            ),
            shared,
            member,
            transport,
            writer,
            pass,
        }
    }

    /// The client has chosen a nickname: it no longer counts against `--max-prompt`.
    pub fn registered(&mut self) {
        self.pass.registered();
    }

    /// Queues bytes for this connection; a reply that does not fit kicks it as a slow consumer,
    /// which its reader notices.
    pub fn send(&self, bytes: impl Into<Bytes>) {
        let _ = self.member.push(bytes.into());
    }

    /// Ends the connection after the session ended for `reason`, having left the hub:
    /// queues `farewell`, flushes or drops what is queued as the reason demands, and logs
    /// what the connection did, counting what the final flush wrote. When the queue is
    /// dropped (a slow consumer, a broken connection) the farewell is still tried, with one
    /// write that never waits, so a client that reads again learns why it was cut off.
    pub async fn finish(
        mut self,
        reason: LeaveReason,
        nick: Option<&str>,
        farewell: Option<Bytes>,
    ) {
        let shared = self.shared.clone();
        shared.metrics.count_disconnect(reason);
        let flushed = match reason {
            // Its queue is full and it is not reading: nothing more can reach it.
            LeaveReason::SlowConsumer
            | LeaveReason::Reset
            | LeaveReason::Error
            | LeaveReason::TimedOut => {
                self.writer.abort();
                let _ = (&mut self.writer).await;
                if let Some(farewell) = farewell {
                    self.transport.try_send(&farewell);
                }
                false
            }
            _ => {
                if let Some(farewell) = farewell {
                    self.send(farewell);
                }
                self.member.outbox().close();
                let grace = shared.config.shutdown_grace;
                if tokio::time::timeout(grace, &mut self.writer).await.is_err() {
                    tracing::info!("could not flush within {grace:?}; closing");
                    self.writer.abort();
                    false
                } else {
                    true
                }
            }
        };
        let stats = &self.member.stats;
        tracing::info!(
            nick = nick.unwrap_or(""),
            %reason,
            messages = stats.messages.load(Relaxed),
            bytes_in = stats.bytes_in.total(),
            bytes_out = stats.bytes_out.total(),
            "left"
        );
        if reason == LeaveReason::SlowConsumer {
            tracing::info!(
                queued = stats.queued.load(Relaxed),
                limit = self.member.outbox().limit(),
                "slow consumer disconnected: outgoing queue full"
            );
        }
        // A last sample, so what the connection retransmitted since the previous one still
        // counts in the server's totals.
        shared.metrics.sample_tcp(&self.member);
        // The chat session is over: its slot is free for the next person even while the
        // socket lingers for at most LINGER.
        self.pass.release();
        if flushed && reason != LeaveReason::Closed {
            self.transport.close(LINGER).await;
        }
    }
}

/// What the reader hands the session.
#[derive(Debug)]
pub enum Input {
    /// A framed line, with the moment it was taken off the buffer (for fan-out latency).
    Line(Frame, std::time::Instant),
    IdleWarning,
    IdleTimeout,
    /// The registration deadline passed.
    RegisterTimeout,
    End(LeaveReason),
}

/// The receiving side of a connection: buffering, framing, flood control and timers.
#[derive(Debug)]
pub struct Reader {
    shared: Arc<Shared>,
    client: Arc<Member>,
    transport: Transport,
    buf: BytesMut,
    decoder: LineDecoder,
    eof: bool,
    limiter: Option<TokenBucket>,
    /// The reload generation `limiter` was set up for (see `Live::generation`).
    seen: u64,
    last_input: Instant,
    idle_warned: bool,
    /// Whether flood control is holding reading back, so each pause is counted once.
    throttled: bool,
    next_rtt_sample: Instant,
    /// Signalled by the writer after each write, for a reader waiting on its own backlog.
    drained: Arc<Notify>,
    /// Whether anything has been read yet: a TLS ClientHello is recognised in the first read.
    spoke: bool,
}

impl Reader {
    fn new(
        shared: &Arc<Shared>,
        client: Arc<Member>,
        transport: Transport,
        drained: Arc<Notify>,
        max_line: usize,
    ) -> Self {
        let config = shared.live.get();
        let now = Instant::now();
        Reader {
            seen: shared.live.generation(),
            shared: shared.clone(),
            client,
            transport,
            buf: BytesMut::new(),
            decoder: LineDecoder::new(max_line),
            eof: false,
            limiter: config
                .rate_limit
                .map(|rate| TokenBucket::new(rate, config.rate_burst, now)),
            last_input: now,
            idle_warned: false,
            throttled: false,
            next_rtt_sample: now,
            drained,
            spoke: false,
        }
    }

    /// The next thing the session must act on. `register_deadline` replaces the idle timer
    /// while the client is at the nickname prompt.
    ///
    /// The registration deadline is checked before anything else, so that nothing a client at
    /// the prompt sends (a flood of garbage lines that always leaves one to frame, or input
    /// whose answers it never reads) keeps it there past the deadline.
    pub async fn next(&mut self, register_deadline: Option<Instant>) -> Input {
        loop {
            if register_deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Input::RegisterTimeout;
            }
            if let Some(end) = self.wait_for_own_backlog(register_deadline).await {
                return end;
            }
            if self.shared.live.generation() != self.seen {
                self.reloaded();
            }
            let now = Instant::now();
            let throttled_until = self.limiter.as_mut().and_then(|l| l.blocked_until(now));
            if throttled_until.is_some() && !self.throttled {
                self.shared.metrics.rate_limited.fetch_add(1, Relaxed);
            }
            self.throttled = throttled_until.is_some();
            if throttled_until.is_none() {
                let frame = if self.eof {
                    self.decoder.decode_eof(&mut self.buf)
                } else {
                    self.decoder.decode(&mut self.buf)
                };
                if let Some(frame) = frame {
                    if let Some(limiter) = &mut self.limiter {
                        limiter.take();
                    }
                    let stats = &self.client.stats;
                    stats.lines_in.add(&self.shared.metrics.clock, 1);
                    self.mark_input(now);
                    return Input::Line(frame, std::time::Instant::now());
                }
                if self.eof {
                    return Input::End(LeaveReason::Closed);
                }
                if self.buf.is_empty() && self.buf.capacity() > 0 {
                    // Give the buffer back while idle: 10 000 quiet clients then cost no
                    // read buffers at all.
                    self.buf = BytesMut::new();
                }
            }
            let (timer_at, timer_event) = self.timer(register_deadline);
            // One timer for the earliest of the three deadlines this pass waits for: a timer is
            // among the largest parts of an idle connection's task, and there are 10 000 such.
            let wake_at = [throttled_until, timer_at]
                .into_iter()
                .flatten()
                .fold(self.next_rtt_sample, Instant::min);
            let transport = self.transport.clone();
            tokio::select! {
                biased;
                _ = self.shared.shutdown.cancelled() => return Input::End(LeaveReason::Shutdown),
                _ = self.client.kicked() => {
                    return Input::End(self.client.kick_reason().unwrap_or(LeaveReason::Error));
                }
                _ = sleep_until(wake_at) => {
                    // In the order the deadlines matter: the end of a flood-control pause
                    // first (the next pass may find a line), then the idle or registration
                    // timer, then the periodic RTT sample.
                    if throttled_until.is_some_and(|t| t <= wake_at) {
                        continue;
                    }
                    if timer_at.is_some_and(|t| t <= wake_at) {
                        if matches!(timer_event, Input::IdleWarning) {
                            self.idle_warned = true;
                        }
                        return timer_event;
                    }
                    self.shared.metrics.sample_tcp(&self.client);
                    self.next_rtt_sample = Instant::now() + self.shared.config.rtt_sample_interval;
                }
                read = transport.read_some(&mut self.buf), if throttled_until.is_none() => match read {
                    Ok(0) => self.eof = true,
                    Ok(n) => {
                        let second = self.shared.metrics.clock.second();
                        self.client.stats.bytes_in.add_at(second, n as u64);
                        self.shared.metrics.bytes_in.add_at(second, n as u64);
                        self.mark_input(Instant::now());
                        // A TLS client's ClientHello on a plaintext port has no line ending
                        // more often than not (it is mostly random bytes), so waiting for one
                        // would leave the client hanging until the registration deadline. Its
                        // first read is handed over whole, for the session to answer.
                        if !std::mem::replace(&mut self.spoke, true)
                            && self.buf.starts_with(&CLIENT_HELLO_START)
                        {
                            let hello = self.buf.split().freeze();
                            return Input::Line(Frame::Line(hello), std::time::Instant::now());
                        }
                        // A socket with data ready never makes `readable()` wait, so without
                        // this a fast sender could fan out read after read while the writers
                        // of its recipients never run, and their queues would overflow though
                        // the clients are reading. Yielding once per read (at most READ_CHUNK
                        // bytes) bounds what one sender queues for others between their turns.
                        tokio::task::yield_now().await;
                    }
                    Err(e) => return Input::End(leave_reason_for(&e)),
                },
            }
        }
    }

    /// Replies to a client's own commands go through its queue like everything else, and one
    /// read can hold hundreds of commands: 900 `/metrics` in 8 KiB ask for about 1 MB. Past half
    /// the queue bound the reader stops taking lines until the writer has caught up, so TCP
    /// slows such a client down instead of the queue overflowing and cutting it off as a slow
    /// consumer. (A client that stops reading altogether is still cut off, by the other half of
    /// the bound or by the write timeout, and one still at the prompt by the registration
    /// deadline.)
    async fn wait_for_own_backlog(&self, register_deadline: Option<Instant>) -> Option<Input> {
        let threshold = own_backlog_threshold(&self.client);
        // The common case, checked without registering with the Notify: this runs per line.
        if self.client.stats.queued.load(Relaxed) <= threshold {
            return None;
        }
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            // Registered before the check, so a write finishing in between is not missed.
            drained.as_mut().enable();
            if self.client.stats.queued.load(Relaxed) <= threshold {
                return None;
            }
            tokio::select! {
                biased;
                _ = self.shared.shutdown.cancelled() => return Some(Input::End(LeaveReason::Shutdown)),
                _ = self.client.kicked() => {
                    return Some(Input::End(self.client.kick_reason().unwrap_or(LeaveReason::Error)));
                }
                _ = drained => {}
                _ = sleep_until(register_deadline.unwrap_or_else(Instant::now)),
                    if register_deadline.is_some() => return Some(Input::RegisterTimeout),
            }
        }
    }

    /// Takes the flood-control settings of a reload. An allowance already used up stays used:
    /// a client cannot get a fresh burst by waiting for a reload.
    fn reloaded(&mut self) {
        self.seen = self.shared.live.generation();
        let config = self.shared.live.get();
        let now = Instant::now();
        self.limiter = match (config.rate_limit, self.limiter.take()) {
            (None, _) => None,
            (Some(rate), None) => Some(TokenBucket::new(rate, config.rate_burst, now)),
            (Some(rate), Some(mut bucket)) => {
                bucket.blocked_until(now);
                bucket.rate = rate;
                bucket.burst = f64::from(config.rate_burst.max(1));
                bucket.tokens = bucket.tokens.min(bucket.burst);
                Some(bucket)
            }
        };
    }

    /// Charges flood control `lines` more than the one line the command took: for commands
    /// whose reply costs the server work that grows with it. The allowance may go below
    /// zero; reading then pauses until it has refilled.
    pub fn charge(&mut self, lines: u32) {
        if let Some(limiter) = &mut self.limiter {
            limiter.tokens -= f64::from(lines);
        }
    }

    fn mark_input(&mut self, now: Instant) {
        self.last_input = now;
        self.client.stats.mark_input(now);
        self.idle_warned = false;
    }

    /// The next timer to fire and what it means.
    fn timer(&self, register_deadline: Option<Instant>) -> (Option<Instant>, Input) {
        if let Some(deadline) = register_deadline {
            return (Some(deadline), Input::RegisterTimeout);
        }
        let live = &self.shared.live;
        match (live.idle_timeout(), live.idle_warning_after()) {
            (Some(timeout), Some(warn)) if !self.idle_warned && warn < timeout => {
                (Some(self.last_input + warn), Input::IdleWarning)
            }
            (Some(timeout), _) => (Some(self.last_input + timeout), Input::IdleTimeout),
            (None, _) => (None, Input::IdleTimeout),
        }
    }
}

fn leave_reason_for(e: &io::Error) -> LeaveReason {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => LeaveReason::Reset,
        io::ErrorKind::TimedOut => LeaveReason::TimedOut,
        // A TLS peer that closed its TCP connection without a close_notify first. Most
        // command-line clients do, and for chat nothing is lost that a FIN would not lose.
        io::ErrorKind::UnexpectedEof => LeaveReason::Closed,
        _ => LeaveReason::Error,
    }
}

/// What the commands whose replies grow with the server cost in flood control, in lines beyond
/// the one they take: with 3 000 clients and 4 000 rooms a `/metrics` is milliseconds of work,
/// and a hundred clients asking 15 times a second took the whole CPU. At the default 20 lines
/// a second, /metrics can then be asked twice a second, sustained.
pub mod cost {
    pub const METRICS: u32 = 9;
    pub const ROOMS: u32 = 4;
    pub const WHO: u32 = 2;
    pub const HISTORY: u32 = 2;
}

/// Flood control: a token bucket refilled at `rate` lines per second up to `burst`. When it is
/// empty the session stops reading the socket, so TCP flow control slows the sender down and
/// nothing it sent is dropped.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// `None` when a line may be taken now, else when the next token arrives.
    fn blocked_until(&mut self, now: Instant) -> Option<Instant> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        (self.tokens < 1.0).then(|| now + Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
    }

    fn take(&mut self) {
        self.tokens -= 1.0;
    }
}

/// Past this much queued output a client's own input is no longer read (see
/// `Reader::wait_for_own_backlog`): half the queue bound.
fn own_backlog_threshold(member: &Member) -> usize {
    member.outbox().limit() / 2
}

/// The queue bound of a new connection: `--queue-bytes` as the last reload left it, but never
/// under twice the history the hub sends at once (half the queue bound the server started
/// with), so that entering a room can never make anyone a slow consumer.
pub fn queue_bytes(shared: &Shared) -> usize {
    shared
        .live
        .get()
        .queue_bytes
        .max(2 * shared.hub.settings().budget)
}

/// Drains the client's queue to the socket until the session closes it, a write fails or
/// times out, or the task is aborted. `drained` tells the reader each time output was written.
async fn write_loop(
    shared: Arc<Shared>,
    client: Arc<Member>,
    transport: Transport,
    drained: Arc<Notify>,
) {
    let mut batch = VecDeque::new();
    let outbox = client.outbox();
    let pause_above = own_backlog_threshold(&client);
    while poll_fn(|cx| outbox.poll_take(&mut batch, cx)).await {
        // Let the sessions with input already waiting run first: a yielded task resumes only
        // after the runtime has polled its sockets, so lines that arrive meanwhile join this
        // write instead of costing one each. Under load that is most of them; when idle it
        // costs one extra poll.
        tokio::task::yield_now().await;
        outbox.take_more(&mut batch);
        let deadline = shared.config.write_timeout;
        // Nothing leaves for a socket before the store holds what it shows (see
        // `core::store`): the first writer after new messages writes them, the rest find
        // them written.
        if let Some(store) = shared.hub.store() {
            store.barrier();
        }
        if let Err(e) = transport
            .write_batch(batch.make_contiguous(), deadline)
            .await
        {
            if e.kind() == io::ErrorKind::TimedOut {
                tracing::info!(
                    id = client.id,
                    queued = client.stats.queued.load(Relaxed),
                    "peer stopped acknowledging output; connection timed out"
                );
            } else {
                tracing::debug!(id = client.id, error = %e, "write failed");
            }
            client.kick(leave_reason_for(&e));
            break;
        }
        // Counted after the write, not before: nothing but the batch is then held across the
        // `.await`, which keeps every idle connection's writer task a size step smaller.
        let n = batch.len();
        let bytes: usize = batch.iter().map(Bytes::len).sum();
        let before = client.stats.queued.load(Relaxed);
        outbox.written(batch_cost(bytes, n), &client.stats.queued);
        // Only a reader paused on its own backlog waits for this (see wait_for_own_backlog),
        // and it pauses only above the threshold: below it, skip the Notify's lock.
        if before > pause_above {
            drained.notify_waiters();
        }
        let second = shared.metrics.clock.second();
        client.stats.lines_out.add_at(second, n as u64);
        client.stats.bytes_out.add_at(second, bytes as u64);
        shared.metrics.bytes_out.add_at(second, bytes as u64);
        batch.clear();
        if batch.capacity() > KEEP_BATCH_CAPACITY {
            // A burst (a join storm, a paste) must not leave every client holding a queue
            // sized for it: the allocation goes back and the next burst grows a new one.
            batch = VecDeque::new();
        }
    }
    outbox.finish(&client.stats.queued);
}
