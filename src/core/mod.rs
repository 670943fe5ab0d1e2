//! The protocol-neutral core: who is here, which rooms they are in, and the events that pass
//! between them. Nothing here touches a socket, awaits, or words anything for a person to read:
//! members own a bounded [`outbox::Outbox`] and a format slot, and each protocol renders the
//! events it is handed (see [`event::Render`]).

use std::sync::{Mutex, MutexGuard, PoisonError};

pub mod event;
pub mod hub;
pub mod leave;
pub mod member;
pub mod modes;
pub mod names;
pub mod outbox;
pub mod partners;
pub mod room;
pub mod stats;
pub mod store;

pub use event::{Event, Identity, Kind, MemberId, Render};
pub use hub::Hub;
pub use leave::LeaveReason;
pub use member::Member;

/// Locks a mutex whose data stays valid even if a holder panicked (plain counters and logs).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
