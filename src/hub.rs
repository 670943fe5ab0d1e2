//! Who is connected, under which nickname, and fan-out to their bounded queues.
//!
//! The hub never touches a socket and never awaits: every operation takes the state lock, hands
//! `Bytes` to per-client queues with a non-blocking push, and returns. Text is formatted once,
//! before the lock where possible, and every recipient gets a reference-counted clone of it.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::{lock, ClientStats};

/// Connection number, unique for the server's life; shown in logs.
pub type ClientId = u64;

/// Bytes charged per queued message on top of its length: the channel slot and the `Bytes`
/// handle. Without it a flood of one-byte messages could queue far more memory than the bound.
const ENTRY_OVERHEAD: usize = 64;

/// Why a client left. The reason shapes both the notice others see and the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    Quit,
    Closed,
    Reset,
    Error,
    /// The peer stopped acknowledging (keepalive or write deadline): it vanished.
    TimedOut,
    IdleTimeout,
    SlowConsumer,
    Shutdown,
    /// Another protocol's client at the prompt (never joined, so never announced).
    NotChat,
}

impl LeaveReason {
    /// The parenthesised part of `alice has left the chat (…).`; `None` for a plain `/quit`.
    pub fn explanation(self) -> Option<&'static str> {
        match self {
            LeaveReason::Quit => None,
            LeaveReason::Closed => Some("connection closed"),
            LeaveReason::Reset => Some("connection reset"),
            LeaveReason::Error => Some("connection error"),
            LeaveReason::TimedOut => Some("connection timed out"),
            LeaveReason::IdleTimeout => Some("idle timeout"),
            LeaveReason::SlowConsumer => Some("slow consumer: stopped reading"),
            LeaveReason::Shutdown => Some("server shutting down"),
            LeaveReason::NotChat => Some("not a chat client"),
        }
    }
}

impl fmt::Display for LeaveReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.explanation().unwrap_or("quit"))
    }
}

/// A client's outgoing queue, bounded in bytes rather than in messages because a 1 KiB line
/// and a 10-byte line cost different memory. The channel itself is unbounded; the byte count
/// checked before every push is the bound.
#[derive(Debug)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Bytes>,
    limit: usize,
}

/// The client's queue had no room: it is disconnected as a slow consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("outgoing queue full")]
pub struct QueueFull;

/// The receiving end, drained by the connection's writer.
#[derive(Debug)]
pub struct OutboxReceiver {
    pub rx: mpsc::UnboundedReceiver<Bytes>,
}

/// What the writer must subtract from the queue's byte count after writing `msg`.
pub fn queued_cost(msg: &Bytes) -> usize {
    msg.len() + ENTRY_OVERHEAD
}

/// One connected client as the rest of the server sees it.
#[derive(Debug)]
pub struct Client {
    pub id: ClientId,
    pub addr: SocketAddr,
    pub stats: ClientStats,
    /// Kept so `/metrics` can sample this connection's `TCP_INFO`; the `Arc` keeps the file
    /// descriptor from being closed and reused while a sample is taken.
    pub socket: Arc<TcpStream>,
    outbox: Outbox,
    kicked: CancellationToken,
    kick_reason: OnceLock<LeaveReason>,
}

impl Client {
    pub fn new(
        id: ClientId,
        addr: SocketAddr,
        socket: Arc<TcpStream>,
        stats: ClientStats,
        queue_bytes: usize,
    ) -> (Arc<Client>, OutboxReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let client = Arc::new(Client {
            id,
            addr,
            stats,
            socket,
            outbox: Outbox {
                tx,
                limit: queue_bytes,
            },
            kicked: CancellationToken::new(),
            kick_reason: OnceLock::new(),
        });
        (client, OutboxReceiver { rx })
    }

    /// Queues `msg` without waiting. A full queue disconnects the client as a slow consumer.
    pub fn push(&self, msg: Bytes) -> Result<(), QueueFull> {
        let cost = queued_cost(&msg);
        let before = self.stats.queued.fetch_add(cost, Relaxed);
        if before + cost > self.outbox.limit {
            self.stats.queued.fetch_sub(cost, Relaxed);
            self.stats.dropped.fetch_add(1, Relaxed);
            self.kick(LeaveReason::SlowConsumer);
            return Err(QueueFull);
        }
        if self.outbox.tx.send(msg).is_err() {
            // The writer is gone: the connection is closing for another reason already.
            self.stats.queued.fetch_sub(cost, Relaxed);
        }
        Ok(())
    }

    /// Queues a text line, adding the `\n`.
    pub fn send_line(&self, text: impl fmt::Display) -> Result<(), QueueFull> {
        self.push(Bytes::from(format!("{text}\n")))
    }

    /// Asks the client's session to end for `reason`. The first reason wins; returns whether
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

/// Why a nickname was refused. The `Display` text is what the client is told.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NickError {
    #[error(
        "Error: a nickname is 1-{MAX_NICK} characters: ASCII letters, digits, '_', '-' or '.', \
         starting with a letter."
    )]
    Invalid,
    #[error("Error: the nickname {0} is already taken; choose another.")]
    Taken(String),
}

pub const MAX_NICK: usize = 32;

/// ASCII only, starting with a letter, so nobody can impersonate someone with look-alike
/// Unicode or a name that reads as a command.
pub fn validate_nick(name: &str) -> Result<(), NickError> {
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if starts_with_letter && rest_ok && name.len() <= MAX_NICK {
        Ok(())
    } else {
        Err(NickError::Invalid)
    }
}

#[derive(Debug)]
struct Member {
    nick: Arc<str>,
    client: Arc<Client>,
}

#[derive(Debug, Default)]
struct State {
    members: HashMap<ClientId, Member>,
    /// Lower-cased nickname → client, for case-insensitive uniqueness.
    by_nick: HashMap<String, ClientId>,
}

impl State {
    /// Queues `msg` for every member but `except`. Full queues kick their owners; the sessions
    /// of those clients do the leaving, outside this lock.
    fn fan_out(&self, msg: &Bytes, except: Option<ClientId>) {
        for (id, member) in &self.members {
            if Some(*id) != except {
                deliver(member, msg.clone());
            }
        }
    }
}

fn deliver(member: &Member, msg: Bytes) {
    // A full queue has already kicked its owner; the owner's session counts and logs it.
    let _ = member.client.push(msg);
}

/// The registry of joined clients.
#[derive(Debug, Default)]
pub struct Hub {
    state: Mutex<State>,
    next_guest: AtomicU64,
}

/// A joined client as listed by [`Hub::members`].
#[derive(Debug, Clone)]
pub struct MemberInfo {
    pub nick: Arc<str>,
    pub client: Arc<Client>,
}

impl Hub {
    pub fn new() -> Self {
        Hub {
            state: Mutex::new(State::default()),
            next_guest: AtomicU64::new(1),
        }
    }

    /// Registers `client` under `nick` (or a free `guest-N` when `None`), welcomes it and
    /// announces it to everyone else, all under one lock so nobody sees the newcomer speak
    /// before being told it joined.
    pub fn join(&self, client: &Arc<Client>, nick: Option<&str>) -> Result<Arc<str>, NickError> {
        let mut state = lock(&self.state);
        let nick: Arc<str> = match nick {
            Some(name) => {
                validate_nick(name)?;
                if state.by_nick.contains_key(&name.to_ascii_lowercase()) {
                    return Err(NickError::Taken(name.to_owned()));
                }
                name.into()
            }
            None => loop {
                let n = self.next_guest.fetch_add(1, Relaxed);
                let name = format!("guest-{n}");
                if !state.by_nick.contains_key(&name) {
                    break name.into();
                }
            },
        };
        // The welcome cannot fail: it is the first thing queued after the prompt.
        let _ = client.send_line(format_args!(
            "Welcome to the chat, {nick}!\nType /help for the list of commands."
        ));
        let notice = Bytes::from(format!("{nick} has joined the chat.\n"));
        state.fan_out(&notice, None);
        state.by_nick.insert(nick.to_ascii_lowercase(), client.id);
        state.members.insert(
            client.id,
            Member {
                nick: nick.clone(),
                client: client.clone(),
            },
        );
        Ok(nick)
    }

    /// Removes a client and tells the others why it left (except at shutdown, where one
    /// shutdown notice replaces everyone's leave notices).
    pub fn leave(&self, id: ClientId, reason: LeaveReason) {
        let mut state = lock(&self.state);
        let Some(member) = state.members.remove(&id) else {
            return;
        };
        state.by_nick.remove(&member.nick.to_ascii_lowercase());
        if reason == LeaveReason::Shutdown {
            return;
        }
        let notice = match reason.explanation() {
            None => format!("{} has left the chat.\n", member.nick),
            Some(why) => format!("{} has left the chat ({why}).\n", member.nick),
        };
        state.fan_out(&Bytes::from(notice), None);
    }

    /// Renames `id` to `new`. The caller has already checked that `new` differs from the
    /// current name; a change of case alone is allowed.
    pub fn rename(&self, id: ClientId, new: &str) -> Result<Arc<str>, NickError> {
        validate_nick(new)?;
        let key = new.to_ascii_lowercase();
        let mut state = lock(&self.state);
        if state.by_nick.get(&key).is_some_and(|&owner| owner != id) {
            return Err(NickError::Taken(new.to_owned()));
        }
        let Some(member) = state.members.get_mut(&id) else {
            return Err(NickError::Invalid);
        };
        let old = std::mem::replace(&mut member.nick, new.into());
        let client = member.client.clone();
        state.by_nick.remove(&old.to_ascii_lowercase());
        state.by_nick.insert(key, id);
        let _ = client.send_line(format_args!("Your nickname has been changed to {new}"));
        let notice = Bytes::from(format!("{old} changed nickname to {new}\n"));
        state.fan_out(&notice, Some(id));
        Ok(new.into())
    }

    /// Relays an already formatted chat line to everyone but its sender.
    pub fn broadcast(&self, from: ClientId, msg: &Bytes) {
        lock(&self.state).fan_out(msg, Some(from));
    }

    /// Queues a message for everyone (server notices).
    pub fn announce(&self, msg: &Bytes) {
        lock(&self.state).fan_out(msg, None);
    }

    pub fn len(&self) -> usize {
        lock(&self.state).members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every joined client, sorted by nickname (case-insensitively) for stable listings.
    pub fn members(&self) -> Vec<MemberInfo> {
        let mut list: Vec<MemberInfo> = lock(&self.state)
            .members
            .values()
            .map(|m| MemberInfo {
                nick: m.nick.clone(),
                client: m.client.clone(),
            })
            .collect();
        list.sort_by_cached_key(|m| m.nick.to_ascii_lowercase());
        list
    }

    pub fn find(&self, nick: &str) -> Option<MemberInfo> {
        let state = lock(&self.state);
        let id = state.by_nick.get(&nick.to_ascii_lowercase())?;
        state.members.get(id).map(|m| MemberInfo {
            nick: m.nick.clone(),
            client: m.client.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nickname_rules() {
        for ok in ["a", "Alice", "bob_2", "c-d.e", &"x".repeat(MAX_NICK)] {
            assert_eq!(validate_nick(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "_a",
            "a b",
            "al!ce",
            "аlice",
            "/nick",
            &"x".repeat(MAX_NICK + 1),
        ] {
            assert_eq!(validate_nick(bad), Err(NickError::Invalid), "{bad}");
        }
    }
}
