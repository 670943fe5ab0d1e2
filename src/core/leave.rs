//! Why a member left: the reason shapes the notice others see, the log line and the counters.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    Quit,
    Closed,
    Reset,
    Error,
    /// The peer stopped acknowledging (keepalive or write deadline): it vanished.
    TimedOut,
    IdleTimeout,
    /// No nickname was chosen within the registration timeout (never joined, never announced).
    RegisterTimeout,
    SlowConsumer,
    Shutdown,
    /// Another protocol's client at the prompt (never joined, so never announced).
    NotChat,
    /// A server operator ended the connection (`/kill`, IRC `KILL`).
    Killed,
}

impl LeaveReason {
    /// Every reason, in declaration order: metrics index counters by `reason as usize`, so a
    /// new reason goes here (and in [`LeaveReason::label`]) too.
    pub const ALL: [LeaveReason; 11] = [
        LeaveReason::Quit,
        LeaveReason::Closed,
        LeaveReason::Reset,
        LeaveReason::Error,
        LeaveReason::TimedOut,
        LeaveReason::IdleTimeout,
        LeaveReason::RegisterTimeout,
        LeaveReason::SlowConsumer,
        LeaveReason::Shutdown,
        LeaveReason::NotChat,
        LeaveReason::Killed,
    ];

    /// The `reason` label value in the Prometheus exposition.
    pub fn label(self) -> &'static str {
        match self {
            LeaveReason::Quit => "quit",
            LeaveReason::Closed => "closed",
            LeaveReason::Reset => "reset",
            LeaveReason::Error => "error",
            LeaveReason::TimedOut => "timed_out",
            LeaveReason::IdleTimeout => "idle_timeout",
            LeaveReason::RegisterTimeout => "register_timeout",
            LeaveReason::SlowConsumer => "slow_consumer",
            LeaveReason::Shutdown => "shutdown",
            LeaveReason::NotChat => "not_chat",
            LeaveReason::Killed => "killed",
        }
    }

    /// The parenthesised part of `alice has left the chat (…).`; `None` for a plain `/quit`.
    pub fn explanation(self) -> Option<&'static str> {
        match self {
            LeaveReason::Quit => None,
            LeaveReason::Closed => Some("connection closed"),
            LeaveReason::Reset => Some("connection reset"),
            LeaveReason::Error => Some("connection error"),
            LeaveReason::TimedOut => Some("connection timed out"),
            LeaveReason::IdleTimeout => Some("idle timeout"),
            LeaveReason::RegisterTimeout => Some("no nickname chosen in time"),
            LeaveReason::SlowConsumer => Some("slow consumer: stopped reading"),
            LeaveReason::Shutdown => Some("server shutting down"),
            LeaveReason::NotChat => Some("not a chat client"),
            LeaveReason::Killed => Some("disconnected by a server operator"),
        }
    }
}

impl fmt::Display for LeaveReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.explanation().unwrap_or("quit"))
    }
}

#[cfg(test)]
mod reason_tests {
    use super::*;

    #[test]
    fn every_leave_reason_is_listed_at_its_own_index() {
        for (i, reason) in LeaveReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i, "{reason:?}");
        }
    }
}
