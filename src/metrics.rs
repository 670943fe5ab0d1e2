//! Counters, rate windows, the fan-out and RTT histograms and `TCP_INFO` sampling.
//!
//! Everything on the message path is a relaxed atomic: figures are read rarely (`/metrics`,
//! `/throughput`, a Prometheus scrape) and written on every line, so writers must never wait
//! for readers. The only lock metrics add per message is the fan-out histogram's, once per chat
//! line (not per recipient); the hub's lock and each recipient's outbox lock are the fan-out
//! itself. [`ServerMetrics`] is the one source of every server-wide figure: the
//! chat `/metrics` report and the Prometheus exposition (`crate::prom`) both read it.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::hub::LeaveReason;

/// Seconds covered by the "last 10 s" figures.
pub const WINDOW_SECS: u64 = 10;
/// One bucket more than the window, so the current, partly filled second can be left out.
const BUCKETS: usize = WINDOW_SECS as usize + 1;
const COUNT_BITS: u32 = 40;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// Locks a mutex whose data stays valid even if a holder panicked (plain counters and logs).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counts events per second over the last [`WINDOW_SECS`] whole seconds, lock-free.
///
/// Each bucket packs the second it belongs to (upper 24 bits) with its count (lower 40 bits),
/// so a bucket left over from an earlier lap of the ring is recognised and restarted with one
/// compare-and-swap. Seconds wrap after 2^24 s (194 days); a stale bucket could only be
/// mistaken for a current one if it went untouched for exactly a multiple of that.
#[derive(Debug)]
pub struct RateWindow {
    buckets: [AtomicU64; BUCKETS],
}

impl Default for RateWindow {
    fn default() -> Self {
        RateWindow {
            buckets: std::array::from_fn(|_| AtomicU64::new(u64::MAX)),
        }
    }
}

impl RateWindow {
    pub fn add(&self, second: u64, n: u64) {
        let tag = (second & 0xFF_FFFF) << COUNT_BITS;
        let bucket = &self.buckets[(second % BUCKETS as u64) as usize];
        let mut current = bucket.load(Relaxed);
        loop {
            let next = if current & !COUNT_MASK == tag && current != u64::MAX {
                current + n.min(COUNT_MASK - (current & COUNT_MASK))
            } else {
                tag | n.min(COUNT_MASK)
            };
            match bucket.compare_exchange_weak(current, next, Relaxed, Relaxed) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    /// Events per second over the whole seconds before `now_second`, using only as many seconds
    /// as the thing being measured has existed (`age_secs`), so a client connected for 3 s is
    /// not averaged over 10.
    pub fn per_sec(&self, now_second: u64, age_secs: u64) -> f64 {
        let span = WINDOW_SECS.min(age_secs).min(now_second);
        if span == 0 {
            return 0.0;
        }
        let total: u64 = (now_second - span..now_second)
            .map(|s| {
                let v = self.buckets[(s % BUCKETS as u64) as usize].load(Relaxed);
                if v != u64::MAX && v >> COUNT_BITS == s & 0xFF_FFFF {
                    v & COUNT_MASK
                } else {
                    0
                }
            })
            .sum();
        total as f64 / span as f64
    }
}

/// A monotonically growing count together with its recent rate.
#[derive(Debug, Default)]
pub struct Counter {
    total: AtomicU64,
    window: RateWindow,
}

impl Counter {
    pub fn add(&self, clock: &Clock, n: u64) {
        self.add_at(clock.second(), n);
    }
    /// [`Counter::add`] with the second already read, for callers that count several things
    /// at once.
    pub fn add_at(&self, second: u64, n: u64) {
        self.total.fetch_add(n, Relaxed);
        self.window.add(second, n);
    }
    pub fn total(&self) -> u64 {
        self.total.load(Relaxed)
    }
    pub fn recent_per_sec(&self, clock: &Clock, since: Instant) -> f64 {
        let age = clock.now().saturating_duration_since(since).as_secs();
        self.window.per_sec(clock.second(), age)
    }
}

/// The server's time origin. Tokio's `Instant` so paused-time tests see consistent figures.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            start: Instant::now(),
        }
    }
    pub fn now(&self) -> Instant {
        Instant::now()
    }
    pub fn start(&self) -> Instant {
        self.start
    }
    pub fn second(&self) -> u64 {
        self.start.elapsed().as_secs()
    }
    pub fn uptime(&self) -> Duration {
        self.start.elapsed()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Server-wide figures.
#[derive(Debug)]
pub struct ServerMetrics {
    pub clock: Clock,
    /// Wall-clock time the server started, for `linechat_start_time_seconds`.
    pub started: SystemTime,
    /// Chat messages accepted (relayed to the room), not commands.
    pub messages: Counter,
    /// Copies of chat messages queued for recipients: one message to a room of five is four
    /// deliveries. Added once per message, not once per recipient.
    pub messages_delivered: AtomicU64,
    pub commands: AtomicU64,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub connections_accepted: AtomicU64,
    pub connections_refused_full: AtomicU64,
    /// Connections being served now, joined or at the prompt.
    pub connections_open: AtomicU64,
    /// Connections that ended, by [`LeaveReason`] (indexed by its discriminant). A connection
    /// that never chose a nickname in time counts as an idle timeout.
    disconnects: [AtomicU64; LeaveReason::ALL.len()],
    /// Times flood control paused reading a client until its allowance refilled.
    pub rate_limited: AtomicU64,
    /// TCP segments retransmitted and sent, over every connection's life, closed ones
    /// included: each `TCP_INFO` sample adds what grew since the connection's previous one, and
    /// a last sample is taken as a connection closes, so the totals never go backwards.
    pub tcp_retransmits: AtomicU64,
    pub tcp_segments_out: AtomicU64,
    /// Shared with the transcript writer, which runs outside the server's tasks.
    pub transcript: Arc<TranscriptCounters>,
    /// Microseconds from taking a chat line off a connection's buffer to having it queued for
    /// every recipient.
    fanout_us: Mutex<LatencyHistogram>,
    /// Every `TCP_INFO` round-trip sample of every connection, in microseconds.
    rtt_us: Mutex<LatencyHistogram>,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics {
            clock: Clock::new(),
            started: SystemTime::now(),
            messages: Counter::default(),
            messages_delivered: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            connections_accepted: AtomicU64::new(0),
            connections_refused_full: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            disconnects: Default::default(),
            rate_limited: AtomicU64::new(0),
            tcp_retransmits: AtomicU64::new(0),
            tcp_segments_out: AtomicU64::new(0),
            transcript: Arc::default(),
            fanout_us: Mutex::default(),
            rtt_us: Mutex::default(),
        }
    }
}

/// What the transcript writer did; see `crate::transcript`.
#[derive(Debug, Default)]
pub struct TranscriptCounters {
    /// Set once a transcript is configured, so reports can say "off" rather than "0 lines".
    pub enabled: std::sync::atomic::AtomicBool,
    pub written: AtomicU64,
    /// Events not recorded because the writer had fallen a whole buffer behind.
    pub dropped: AtomicU64,
    /// Lines lost to write errors (a full disk, a vanished directory).
    pub write_errors: AtomicU64,
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// A latency distribution in microseconds with an exact sum, which HDR histograms do not keep
/// and the Prometheus `_sum` series needs.
#[derive(Debug)]
pub struct LatencyHistogram {
    hist: Histogram<u64>,
    sum_us: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            // 3 significant digits, auto-resizing: a fan-out stuck behind a descheduled thread
            // for seconds is still recorded, not clamped.
            hist: Histogram::new(3).expect("3 significant figures is valid"),
            sum_us: 0,
        }
    }
}

/// A histogram as Prometheus wants it: bucket upper bounds in seconds with the count of
/// samples in each bucket (not cumulative), then the sum in seconds and the total count.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    pub buckets: Vec<(f64, u64)>,
    pub sum_secs: f64,
    pub count: u64,
}

impl LatencyHistogram {
    pub fn record(&mut self, us: u64) {
        // Recording can only fail for values beyond the auto-resized range, i.e. never here.
        let _ = self.hist.record(us);
        self.sum_us = self.sum_us.saturating_add(us);
    }

    pub fn percentiles(&self) -> Option<Percentiles> {
        let h = &self.hist;
        (!h.is_empty()).then(|| Percentiles {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        })
    }

    /// Sorts the samples into buckets with the given upper bounds (seconds, ascending); samples
    /// above the last bound are left to the implicit `+Inf` bucket. A sample is placed by the
    /// lowest value HDR cannot tell apart from it, so one recorded exactly on a bound falls in
    /// that bound's bucket; anything else is within the histogram's 0.1 % precision.
    pub fn buckets(&self, bounds_secs: &[f64]) -> Buckets {
        let mut counts = vec![0u64; bounds_secs.len()];
        for v in self.hist.iter_recorded() {
            let secs = self.hist.lowest_equivalent(v.value_iterated_to()) as f64 / 1e6;
            if let Some(i) = bounds_secs.iter().position(|&b| secs <= b) {
                counts[i] += v.count_at_value();
            }
        }
        Buckets {
            buckets: bounds_secs.iter().copied().zip(counts).collect(),
            sum_secs: self.sum_us as f64 / 1e6,
            count: self.hist.len(),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl ServerMetrics {
    /// Counts a message a client sent (a chat line, an action or a private message) and the
    /// recipients it was queued for: Total Messages, Deliveries, and the sender's Messages.
    pub fn count_message(&self, sender: &ClientStats, delivered: usize) {
        self.messages.add(&self.clock, 1);
        self.messages_delivered.fetch_add(delivered as u64, Relaxed);
        sender.messages.fetch_add(1, Relaxed);
    }

    pub fn record_fanout(&self, took: Duration) {
        lock(&self.fanout_us).record(micros(took));
    }

    pub fn fanout(&self) -> Option<Percentiles> {
        lock(&self.fanout_us).percentiles()
    }

    pub fn fanout_buckets(&self, bounds_secs: &[f64]) -> Buckets {
        lock(&self.fanout_us).buckets(bounds_secs)
    }

    pub fn rtt(&self) -> Option<Percentiles> {
        lock(&self.rtt_us).percentiles()
    }

    pub fn rtt_buckets(&self, bounds_secs: &[f64]) -> Buckets {
        lock(&self.rtt_us).buckets(bounds_secs)
    }

    pub fn count_disconnect(&self, reason: LeaveReason) {
        self.disconnects[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn disconnects(&self, reason: LeaveReason) -> u64 {
        self.disconnects[reason as usize].load(Relaxed)
    }

    /// Counts an open connection until the guard is dropped.
    pub fn connection_opened(&self) -> OpenConnection<'_> {
        self.connections_open.fetch_add(1, Relaxed);
        OpenConnection(self)
    }

    /// Folds a new `TCP_INFO` sample into the server-wide figures. `previous` is the same
    /// connection's previous sample, so only what grew since then is added.
    fn add_tcp_sample(&self, info: &TcpInfo, previous: Option<&TcpInfo>) {
        let retrans = info
            .total_retrans
            .saturating_sub(previous.map_or(0, |p| p.total_retrans));
        self.tcp_retransmits.fetch_add(u64::from(retrans), Relaxed);
        if let Some(segs) = info.segs_out {
            let before = previous.and_then(|p| p.segs_out).unwrap_or(0);
            self.tcp_segments_out
                .fetch_add(u64::from(segs.saturating_sub(before)), Relaxed);
        }
        lock(&self.rtt_us).record(u64::from(info.rtt_us));
    }
}

/// See [`ServerMetrics::connection_opened`].
#[derive(Debug)]
pub struct OpenConnection<'a>(&'a ServerMetrics);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Relaxed);
    }
}

/// One client's figures, shared between its session, its writer and `/metrics`.
#[derive(Debug)]
pub struct ClientStats {
    pub connected_at: Instant,
    /// Chat messages this client sent (relayed), the "Messages" of the original server.
    pub messages: AtomicU64,
    pub lines_in: Counter,
    pub bytes_in: Counter,
    pub lines_out: Counter,
    pub bytes_out: Counter,
    /// Messages the server could not queue for this client (its queue was full). Each such
    /// event also disconnects the client, so this stays 0 for everyone still connected.
    pub dropped: AtomicU64,
    /// Bytes waiting in this client's outgoing queue (with per-entry overhead).
    pub queued: AtomicUsize,
    pub rtt: Mutex<RttLog>,
}

impl ClientStats {
    pub fn new(now: Instant) -> Self {
        ClientStats {
            connected_at: now,
            messages: AtomicU64::new(0),
            lines_in: Counter::default(),
            bytes_in: Counter::default(),
            lines_out: Counter::default(),
            bytes_out: Counter::default(),
            dropped: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            rtt: Mutex::new(RttLog::default()),
        }
    }

    /// Reads the socket's `TCP_INFO` now, keeps it as the newest sample, and adds it to the
    /// server-wide RTT histogram and retransmission totals.
    pub fn sample_tcp(&self, socket: &impl AsRawFd, server: &ServerMetrics) -> Option<TcpInfo> {
        let info = tcp_info(socket)?;
        let previous = {
            let mut log = lock(&self.rtt);
            let previous = log.last;
            log.push(info);
            previous
        };
        server.add_tcp_sample(&info, previous.as_ref());
        Some(info)
    }
}

/// How many RTT samples a client keeps for display.
pub const RTT_SAMPLES: usize = 8;

/// Recent round-trip samples of one connection, plus the newest retransmission counters.
#[derive(Debug, Default, Clone)]
pub struct RttLog {
    pub recent: VecDeque<u32>,
    pub min_us: Option<u32>,
    sum_us: u64,
    pub count: u64,
    pub last: Option<TcpInfo>,
}

impl RttLog {
    fn push(&mut self, info: TcpInfo) {
        if self.recent.len() == RTT_SAMPLES {
            self.recent.pop_front();
        }
        self.recent.push_back(info.rtt_us);
        self.min_us = Some(self.min_us.map_or(info.rtt_us, |m| m.min(info.rtt_us)));
        self.sum_us += u64::from(info.rtt_us);
        self.count += 1;
        self.last = Some(info);
    }

    pub fn avg_us(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_us as f64 / self.count as f64)
    }
}

/// The parts of Linux's `struct tcp_info` that the metrics use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpInfo {
    /// Smoothed round-trip time, microseconds.
    pub rtt_us: u32,
    pub rttvar_us: u32,
    /// Segments retransmitted over the connection's life.
    pub total_retrans: u32,
    /// Segments sent over the connection's life; `None` on kernels older than 4.2.
    pub segs_out: Option<u32>,
}

/// `getsockopt(TCP_INFO)`. `None` where the platform has no `TCP_INFO` or the call fails, which
/// the reports show as "unavailable" rather than as zero.
#[cfg(target_os = "linux")]
pub fn tcp_info(socket: &impl AsRawFd) -> Option<TcpInfo> {
    // SAFETY: tcp_info is plain old data, so all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the pointer and length describe `info`, which outlives the call; the kernel
    // writes at most `len` bytes and reports how many it wrote.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    let has = |end: usize| len as usize >= end;
    if !has(std::mem::offset_of!(libc::tcp_info, tcpi_total_retrans) + 4) {
        return None;
    }
    let segs_end = std::mem::offset_of!(libc::tcp_info, tcpi_segs_out) + 4;
    Some(TcpInfo {
        rtt_us: info.tcpi_rtt,
        rttvar_us: info.tcpi_rttvar,
        total_retrans: info.tcpi_total_retrans,
        segs_out: has(segs_end).then_some(info.tcpi_segs_out),
    })
}

#[cfg(not(target_os = "linux"))]
pub fn tcp_info(_socket: &impl AsRawFd) -> Option<TcpInfo> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_window_counts_whole_recent_seconds_only() {
        let w = RateWindow::default();
        for s in 0..20 {
            w.add(s, 5);
        }
        w.add(20, 1000); // the current second is not complete and is left out
        assert_eq!(w.per_sec(20, 100), 5.0);
        // a young thing is averaged over its own age
        assert_eq!(w.per_sec(20, 2), 5.0);
        // seconds with nothing in them count as zero, even if their bucket is stale
        assert_eq!(w.per_sec(40, 100), 0.0);
        assert_eq!(w.per_sec(0, 100), 0.0);
    }

    #[test]
    fn rtt_log_keeps_bounded_recent_samples_and_true_min_avg() {
        let mut log = RttLog::default();
        for rtt in 1..=20 {
            log.push(TcpInfo {
                rtt_us: rtt * 10,
                rttvar_us: 0,
                total_retrans: 0,
                segs_out: Some(1),
            });
        }
        assert_eq!(log.recent.len(), RTT_SAMPLES);
        assert_eq!(log.recent.back(), Some(&200));
        assert_eq!(log.min_us, Some(10));
        assert_eq!(log.avg_us(), Some(105.0));
    }

    #[test]
    fn histogram_buckets_are_per_bucket_counts_in_seconds_with_an_exact_sum() {
        let mut h = LatencyHistogram::default();
        for us in [3, 10, 10, 11, 25_000, 2_000_000] {
            h.record(us);
        }
        let b = h.buckets(&[1e-5, 2.5e-2, 1.0]);
        // 10 µs lands in the 10 µs bucket, 25 ms exactly on its bound too; 2 s is above them
        // all and is left for +Inf.
        assert_eq!(b.buckets, [(1e-5, 3), (2.5e-2, 2), (1.0, 0)]);
        assert_eq!(b.count, 6);
        assert!((b.sum_secs - 2.025034).abs() < 1e-9, "{}", b.sum_secs);
        assert_eq!(LatencyHistogram::default().buckets(&[1.0]).count, 0);
    }

    #[test]
    fn tcp_samples_add_only_what_grew_since_the_previous_one() {
        let server = ServerMetrics::default();
        let sample = |retrans, segs| TcpInfo {
            rtt_us: 50,
            rttvar_us: 10,
            total_retrans: retrans,
            segs_out: Some(segs),
        };
        let mut previous = None;
        for (retrans, segs) in [(0, 10), (2, 30), (2, 35)] {
            server.add_tcp_sample(&sample(retrans, segs), previous.as_ref());
            previous = Some(sample(retrans, segs));
        }
        // A second connection starts from zero.
        server.add_tcp_sample(&sample(1, 5), None);
        assert_eq!(server.tcp_retransmits.load(Relaxed), 3);
        assert_eq!(server.tcp_segments_out.load(Relaxed), 40);
        assert_eq!(server.rtt().unwrap().count, 4);
    }

    #[test]
    fn tcp_info_reads_a_real_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let info = tcp_info(&client);
        if cfg!(target_os = "linux") {
            let info = info.expect("TCP_INFO on Linux");
            assert!(info.segs_out.unwrap() >= 1, "the SYN was sent");
        } else {
            assert!(info.is_none());
        }
    }
}
