//! A client's outgoing queue: bounded in bytes, filled by anyone, drained by its writer.
//!
//! It is a `VecDeque` under a `std::sync::Mutex` rather than a channel because fan-out pushes
//! to every recipient on the hot path: a push here is one uncontended lock, a `push_back` and
//! an unlock, where a channel send costs several atomic read-modify-writes on cache lines the
//! writer's core owns, plus a waker swap even when the writer is already awake. The writer
//! takes everything queued in one swap, so a busy client's backlog leaves in few large writes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use super::lock;

/// Bytes charged per queued message on top of its length: the `Bytes` handle and its slot.
/// Without it a flood of one-byte messages could queue far more memory than the bound.
pub const ENTRY_OVERHEAD: usize = 64;

/// What one queued message counts against the bound.
pub fn queued_cost(msg: &Bytes) -> usize {
    msg.len() + ENTRY_OVERHEAD
}

/// What [`queued_cost`] charged a batch of `n` entries holding `bytes` bytes in all, without
/// a second pass over it.
pub fn batch_cost(bytes: usize, n: usize) -> usize {
    bytes + n * ENTRY_OVERHEAD
}

#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    limit: usize,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Bytes>,
    /// Cost of what is queued or taken by the writer but not yet written.
    bytes: usize,
    /// The writer, when it is waiting for something to write.
    waker: Option<Waker>,
    /// No more input: the writer drains what is left and stops.
    closing: bool,
    /// The writer has stopped; pushes are discarded.
    finished: bool,
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// It did not fit: the recipient is a slow consumer.
    #[error("outgoing queue full")]
    Full,
    /// The writer has stopped (the connection is closing): nobody will send it.
    #[error("connection closing")]
    Closed,
}

impl Outbox {
    pub fn new(limit: usize) -> Self {
        Outbox {
            state: Mutex::new(State::default()),
            limit,
        }
    }

    /// The bound on queued bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Queues `msg` unless that would pass the bound. `gauge` mirrors the queued byte count
    /// for the metrics; it is stored, never read-modified-written, so it costs no extra atomic
    /// round trip.
    pub fn push(&self, msg: Bytes, gauge: &AtomicUsize) -> Result<(), Rejected> {
        let cost = queued_cost(&msg);
        let waker = {
            let mut state = lock(&self.state);
            if state.finished {
                return Err(Rejected::Closed);
            }
            if state.bytes + cost > self.limit {
                return Err(Rejected::Full);
            }
            state.bytes += cost;
            state.queue.push_back(msg);
            gauge.store(state.bytes, Relaxed);
            state.waker.take()
        };
        // Woken outside the lock, so the writer never wakes up into a held lock.
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Moves everything queued into `batch` (which must be empty). `Ready(false)` when closing
    /// and nothing is left.
    pub fn poll_take(&self, batch: &mut VecDeque<Bytes>, cx: &mut Context<'_>) -> Poll<bool> {
        let mut state = lock(&self.state);
        if !state.queue.is_empty() {
            std::mem::swap(&mut state.queue, batch);
            return Poll::Ready(true);
        }
        if state.closing {
            return Poll::Ready(false);
        }
        match &mut state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Appends whatever was queued since the last take to `batch`, without waiting.
    pub fn take_more(&self, batch: &mut VecDeque<Bytes>) {
        let mut state = lock(&self.state);
        batch.extend(state.queue.drain(..));
    }

    /// The writer wrote `cost` bytes' worth of what it took.
    pub fn written(&self, cost: usize, gauge: &AtomicUsize) {
        let mut state = lock(&self.state);
        state.bytes -= cost.min(state.bytes);
        gauge.store(state.bytes, Relaxed);
    }

    /// Asks the writer to finish once the queue is empty.
    pub fn close(&self) {
        let waker = {
            let mut state = lock(&self.state);
            state.closing = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The writer is gone: drop what is queued and everything pushed from now on.
    pub fn finish(&self, gauge: &AtomicUsize) {
        let mut state = lock(&self.state);
        state.finished = true;
        state.queue = VecDeque::new();
        state.bytes = 0;
        gauge.store(0, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    #[tokio::test]
    async fn bound_is_enforced_in_bytes_and_freed_by_writing() {
        let gauge = AtomicUsize::new(0);
        let outbox = Outbox::new(3 * (10 + ENTRY_OVERHEAD));
        let msg = Bytes::from_static(b"0123456789");
        for _ in 0..3 {
            assert_eq!(outbox.push(msg.clone(), &gauge), Ok(()));
        }
        assert_eq!(outbox.push(msg.clone(), &gauge), Err(Rejected::Full));
        assert_eq!(gauge.load(Relaxed), 3 * (10 + ENTRY_OVERHEAD));

        let mut batch = VecDeque::new();
        assert!(poll_fn(|cx| outbox.poll_take(&mut batch, cx)).await);
        assert_eq!(batch.len(), 3);
        // Taken but not yet written still counts.
        assert_eq!(outbox.push(msg.clone(), &gauge), Err(Rejected::Full));
        outbox.written(3 * (10 + ENTRY_OVERHEAD), &gauge);
        assert_eq!(gauge.load(Relaxed), 0);
        assert_eq!(outbox.push(msg.clone(), &gauge), Ok(()));
    }

    #[test]
    fn a_finished_outbox_takes_nothing_and_says_so() {
        let gauge = AtomicUsize::new(0);
        let outbox = Outbox::new(1 << 20);
        outbox.push(Bytes::from_static(b"a"), &gauge).unwrap();
        outbox.finish(&gauge);
        // Not Ok: fan-out counts Ok pushes as deliveries.
        assert_eq!(
            outbox.push(Bytes::from_static(b"b"), &gauge),
            Err(Rejected::Closed)
        );
        assert_eq!(gauge.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn close_lets_the_writer_drain_then_stop() {
        let gauge = AtomicUsize::new(0);
        let outbox = std::sync::Arc::new(Outbox::new(1 << 20));
        let writer = {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut batch = VecDeque::new();
                while poll_fn(|cx| outbox.poll_take(&mut batch, cx)).await {
                    got.extend(batch.drain(..));
                }
                got
            })
        };
        tokio::task::yield_now().await;
        outbox.push(Bytes::from_static(b"a"), &gauge).unwrap();
        outbox.push(Bytes::from_static(b"b"), &gauge).unwrap();
        outbox.close();
        assert_eq!(writer.await.unwrap(), ["a", "b"]);
    }
}
