//! Server-wide figures: counters, the fan-out and RTT histograms, and the folding of each
//! connection's `TCP_INFO` samples into them. Per-member counters live with the member
//! (`crate::core::stats`).
//!
//! Everything on the message path is a relaxed atomic: figures are read rarely (`/metrics`,
//! `/throughput`, a Prometheus scrape) and written on every line, so writers must never wait
//! for readers. The only lock metrics add per message is the fan-out histogram's, once per chat
//! line (not per recipient); the hub's lock and each recipient's outbox lock are the fan-out
//! itself. [`ServerMetrics`] is the one source of every server-wide figure: the
//! chat `/metrics` report and the Prometheus exposition (`crate::ops::prom`) both read it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;

use crate::core::lock;
use crate::core::member::Member;
use crate::core::stats::{ClientStats, Clock, Counter, TcpInfo};
use crate::core::LeaveReason;
use crate::net::gate::Refusal;

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
    /// Connections refused, by [`Refusal`] (indexed by its position in [`Refusal::ALL`]).
    refused: [AtomicU64; Refusal::ALL.len()],
    /// When a refusal was last logged (they are logged at most every few seconds).
    refusal_logged: Mutex<Option<std::time::Instant>>,
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
            refused: Default::default(),
            refusal_logged: Mutex::default(),
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

    pub fn count_refusal(&self, refusal: Refusal) {
        self.refused[refusal as usize].fetch_add(1, Relaxed);
    }

    pub fn refused(&self, refusal: Refusal) -> u64 {
        self.refused[refusal as usize].load(Relaxed)
    }

    /// Whether a refusal should be logged now: the first, and then at most once per `every`.
    pub fn refusal_log_due(&self, every: Duration) -> bool {
        let mut last = lock(&self.refusal_logged);
        let now = std::time::Instant::now();
        match *last {
            Some(at) if now.duration_since(at) < every => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }

    pub fn count_disconnect(&self, reason: LeaveReason) {
        self.disconnects[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn disconnects(&self, reason: LeaveReason) -> u64 {
        self.disconnects[reason as usize].load(Relaxed)
    }

    /// Samples `member`'s transport now, keeps the sample in its log and adds it to the
    /// server-wide RTT histogram and retransmission totals.
    pub fn sample_tcp(&self, member: &Member) -> Option<TcpInfo> {
        let info = member.tcp_info()?;
        let previous = member.stats.push_tcp_sample(info);
        self.add_tcp_sample(&info, previous.as_ref());
        Some(info)
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
