//! Per-member accounting: counters, rate windows and round-trip samples, shared between a
//! member's session, its writer and the reports. Everything on the message path is a relaxed
//! atomic: figures are read rarely and written on every line, so writers never wait for readers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::lock;

/// Seconds covered by the "last 10 s" figures.
pub const WINDOW_SECS: u64 = 10;
/// One bucket more than the window, so the current, partly filled second can be left out.
const BUCKETS: usize = WINDOW_SECS as usize + 1;
const COUNT_BITS: u32 = 40;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

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
    /// When this client last sent anything, in milliseconds after `connected_at` (for IRC's
    /// idle time in WHOIS and WHO).
    last_input_ms: AtomicU64,
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
            last_input_ms: AtomicU64::new(0),
        }
    }

    /// Notes that input arrived at `now`.
    pub fn mark_input(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.connected_at).as_millis();
        self.last_input_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Relaxed);
    }

    /// How long this client has sent nothing, as of `now`.
    pub fn idle(&self, now: Instant) -> Duration {
        let last = self.connected_at + Duration::from_millis(self.last_input_ms.load(Relaxed));
        now.saturating_duration_since(last)
    }

    /// Keeps `info` as the newest sample and returns the one before it, so server-wide totals
    /// can add only what grew since.
    pub fn push_tcp_sample(&self, info: TcpInfo) -> Option<TcpInfo> {
        let mut log = lock(&self.rtt);
        let previous = log.last;
        log.push(info);
        previous
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
}
