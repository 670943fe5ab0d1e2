//! A value rebuilt at most so many times a second and shared by everyone who asks beyond
//! that: what keeps a report whose cost grows with the server (every client, every room) from
//! being a way to take the CPU away from everyone else, however many ask how often. Below the
//! rate every asker gets a fresh value, so an occasional `/metrics` is always exact.

use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::core::lock;

#[derive(Debug)]
pub struct Snapshot<T> {
    /// Builds allowed per second, and at once.
    per_sec: f64,
    state: Mutex<State<T>>,
}

#[derive(Debug)]
struct State<T> {
    tokens: f64,
    refilled: Instant,
    last: Option<Arc<T>>,
}

impl<T> Snapshot<T> {
    pub fn new(per_sec: u32) -> Self {
        Snapshot {
            per_sec: f64::from(per_sec.max(1)),
            state: Mutex::new(State {
                tokens: f64::from(per_sec.max(1)),
                refilled: Instant::now(),
                last: None,
            }),
        }
    }

    /// A new value from `build` while the rate allows, else the last one built. The lock is
    /// held while building, so builds never overlap: a caller arriving meanwhile waits, then
    /// builds again only if the allowance still has a token (at most `per_sec` builds a
    /// second in all, however many ask).
    pub fn get(&self, build: impl FnOnce() -> T) -> Arc<T> {
        let mut state = lock(&self.state);
        let now = Instant::now();
        let elapsed = now.duration_since(state.refilled).as_secs_f64();
        state.tokens = (state.tokens + elapsed * self.per_sec).min(self.per_sec);
        state.refilled = now;
        if let (Some(last), true) = (&state.last, state.tokens < 1.0) {
            return last.clone();
        }
        state.tokens -= 1.0;
        let value = Arc::new(build());
        state.last = Some(value.clone());
        value
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fresh_within_the_rate_shared_beyond_it() {
        let snapshot = Snapshot::new(3);
        let mut builds = 0;
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(*snapshot.get(|| {
                builds += 1;
                builds
            }));
        }
        assert_eq!(got, [1, 2, 3, 3, 3], "three at once, then the last one");
        tokio::time::sleep(Duration::from_millis(334)).await;
        assert_eq!(*snapshot.get(|| 4), 4, "a build's worth refilled");
        assert_eq!(*snapshot.get(|| 5), 4);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let fresh: Vec<i32> = (6..10).map(|n| *snapshot.get(|| n)).collect();
        assert_eq!(
            fresh,
            [6, 7, 8, 8],
            "the allowance never exceeds one second's"
        );
    }
}
