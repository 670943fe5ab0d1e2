//! The core's typed errors, worded for netcat users (the texts version 1 used).

use crate::core::event::Notice;
use crate::core::hub::PrivateError;
use crate::core::modes::Silenced;
use crate::core::names::{NickError, RoomError, MAX_NICK};
use crate::proto::rename::RenameError;

pub fn nick_error(e: &NickError) -> String {
    match e {
        NickError::Invalid => format!(
            "Error: a nickname is 1-{MAX_NICK} characters: ASCII letters, digits or any of \
             _ - [ ] \\ ^ {{ }} | `, starting with a letter."
        ),
        NickError::Reserved(name) => {
            format!("Error: the nickname {name} is reserved for the server; choose another.")
        }
        NickError::Taken(name) => {
            format!("Error: the nickname {name} is already taken; choose another.")
        }
    }
}

pub fn rename_error(e: &RenameError) -> String {
    match e {
        RenameError::Nick(e) => nick_error(e),
        RenameError::Unsure(e) => cluster_unsure(e),
    }
}

/// A name the broker could not confirm in time (docs/CLUSTER.md, "Broker outage"): the
/// person keeps what they had, or stays at the prompt.
pub fn cluster_unsure(e: &crate::cluster::Error) -> String {
    format!("Error: the cluster cannot confirm that name now ({e}); try again.")
}

pub fn room_error(e: &RoomError) -> String {
    match e {
        RoomError::InvalidName => "Error: a room name is 1-32 characters: ASCII letters, \
                                   digits, '_', '-' or '.', starting with a letter."
            .to_owned(),
        RoomError::NoSuchRoom(name) => {
            format!("Error: there is no room called {name}; /rooms lists them.")
        }
        RoomError::AlreadyThere(name) => format!("You are already in {name}."),
        RoomError::NotThere(name) => format!("Error: you are not in {name}."),
        RoomError::NotOperator(name) => {
            format!("Error: the topic of {name} is locked; only its operators may change it.")
        }
        RoomError::NoSuchNick(name) => private_error(&PrivateError::NoSuchNick(name.clone())),
        RoomError::NotInRoom { nick, room } => format!("Error: {nick} is not in {room}."),
        RoomError::Banned(room) => format!("Error: you are banned from {room}."),
        RoomError::InviteOnly(room) => {
            format!("Error: {room} is invite-only; one of its operators can /invite you.")
        }
        RoomError::Silenced { room, why } => match why {
            Silenced::Banned => {
                format!("Error: you are banned from {room}; your message was not sent.")
            }
            Silenced::Muted => {
                format!("Error: you are muted in {room}; your message was not sent.")
            }
            Silenced::Moderated => format!(
                "Error: {room} is moderated: only its operators and those with a voice may \
                 speak; your message was not sent."
            ),
        },
        RoomError::InvalidMask(typed) => format!(
            "Error: {typed} is neither a nickname nor a nick!user@host mask (* and ? match \
             anything)."
        ),
        RoomError::ListFull { room, limit } => {
            format!("Error: {room} already has {limit} of those, the most allowed; lift one first.")
        }
        RoomError::AlreadyIn { nick, room } => format!("Error: {nick} is already in {room}."),
        RoomError::TooManyCreated { limit, retry_secs } => format!(
            "Error: you have created {limit} rooms in the last minute, the most allowed; try \
             again in {retry_secs} s, or join a room that exists (/rooms lists them)."
        ),
    }
}

/// `/msg` to one's own nickname.
pub const TO_SELF: &str = "Error: that is you; a private message goes to someone else.";

pub fn private_error(e: &PrivateError) -> String {
    match e {
        PrivateError::NoSuchNick(name) => format!("Error: nobody called {name} is connected."),
        PrivateError::Changed(name) => changed_partner(name),
    }
}

/// A private message to a name that another connection held at the last exchange (the IRC
/// gateway sends it as a NOTICE).
pub fn changed_partner(name: &str) -> String {
    format!(
        "Error: {name} is not the {name} you were talking to (they reconnected, or someone \
         else took the name); your message was not sent. Send it again to reach the new {name}."
    )
}

/// What someone is told who lost their name to its holder on another node (docs/CLUSTER.md,
/// "Conflict rule").
pub fn cluster_renamed(old: &str, holder: &str, new: &str) -> String {
    format!(
        "Server: while this server was cut off from the cluster, someone on {holder} took the \
         nickname {old}; you are now {new}.\n"
    )
}

/// A server [`Notice`] as the line protocol says it (IRC says the same words, without
/// `Server: `).
pub fn notice(notice: &Notice<'_>) -> String {
    match notice {
        Notice::ClusterLink(up) => cluster_link(*up).to_owned(),
        Notice::ClusterRenamed { old, holder, new } => cluster_renamed(&old.nick, holder, new),
    }
}

/// What everyone on this server is told when the cluster link drops or returns.
pub fn cluster_link(up: bool) -> &'static str {
    if up {
        "Server: the cluster link is back; you are chatting with every server again.\n"
    } else {
        "Server: the cluster link is down; chat goes on among the people on this server.\n"
    }
}

/// Told after the scrollback when the cluster's history of `room` could not be read in time
/// (docs/CLUSTER.md, "Scrollback and /history"): what was shown is this server's alone.
pub fn history_unread(room: &str) -> String {
    format!(
        "Server: the cluster's history of {room} could not be read just now; the scrollback holds only what this server has.\n"
    )
}
