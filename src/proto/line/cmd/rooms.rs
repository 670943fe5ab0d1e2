//! `/rooms` — every room with its member and message counts, the caller's marked:
//! `* lobby: 3 people, 12 messages (you are here)`. At most [`MAX_ROOMS_LISTED`] rooms, the
//! fullest first; the caller's is always among them.

use std::fmt::Write;
use std::sync::Arc;

use super::{no_args, Command, Ctx, Flow, Spec};
use crate::context::Shared;
use crate::core::hub::RoomInfo;

/// Rooms listed at most, so a server with thousands of rooms does not flood the caller.
pub const MAX_ROOMS_LISTED: usize = 50;

pub const SPEC: Spec = Spec {
    name: "rooms",
    args: "",
    help: "list the rooms, with people and messages",
    parse: |args| no_args(args, Command::Rooms),
};

pub fn run(ctx: &mut Ctx<'_>) -> Flow {
    let all = all_rooms(ctx.shared);
    let mine = ctx.shared.hub.rooms_of(ctx.member.id);
    let here = |room: &RoomInfo| mine.iter().any(|m| **m == *room.name);
    // Secret rooms are listed only to their members.
    let mut rooms: Vec<(&RoomInfo, bool)> = all
        .iter()
        .map(|room| (room, here(room)))
        .filter(|&(room, here)| here || !room.modes.secret)
        .collect();
    let total = rooms.len();
    if let Some(at) = rooms.iter().position(|&(_, here)| here) {
        if at >= MAX_ROOMS_LISTED {
            rooms.swap(at, MAX_ROOMS_LISTED - 1);
        }
    }
    let mut out = format!("Rooms ({total}):");
    for &(room, here) in rooms.iter().take(MAX_ROOMS_LISTED) {
        let _ = write!(
            out,
            "\n{} {}: {}, {}{}",
            if here { '*' } else { ' ' },
            room.name,
            plural(room.members as u64, "person", "people"),
            plural(room.messages, "message", "messages"),
            if here { " (you are here)" } else { "" },
        );
    }
    if total > MAX_ROOMS_LISTED {
        let _ = write!(
            out,
            "\n  ... and {} more rooms (/who <room> shows one)",
            total - MAX_ROOMS_LISTED
        );
    }
    ctx.reply(out);
    Flow::Continue
}

/// Every room, secret ones included, fullest first, as built at most
/// [`crate::context::Reports::PER_SEC`] times a second.
pub(super) fn all_rooms(shared: &Shared) -> Arc<Vec<RoomInfo>> {
    shared.reports.rooms.get(|| {
        let mut rooms = shared.hub.rooms(None);
        if let Some(cluster) = &shared.cluster {
            add_remote(&mut rooms, &cluster.people());
        }
        sort_fullest_first(&mut rooms);
        rooms
    })
}

/// Counts the other nodes' people in their rooms; a room nobody here is in is listed with
/// them alone (its topic and message count live on the other nodes, not here), secret when
/// this node or the heartbeat of any node with people in it says so.
pub fn add_remote(rooms: &mut Vec<RoomInfo>, people: &[(String, crate::cluster::Person)]) {
    for (_, person) in people {
        for name in &person.rooms {
            let secret = person.secret.contains(name);
            match rooms.iter().position(|r| r.name.eq_ignore_ascii_case(name)) {
                Some(at) => {
                    let room = &mut rooms[at];
                    room.members += 1;
                    // Secret if either node says so: this one's flag may be a beat newer.
                    room.modes.secret |= secret;
                }
                None => rooms.push(RoomInfo {
                    name: name.as_str().into(),
                    members: 1,
                    messages: 0,
                    topic: None,
                    created: std::time::UNIX_EPOCH,
                    modes: crate::core::room::Modes {
                        secret,
                        ..crate::core::room::Modes::NEW
                    },
                    here: false,
                }),
            }
        }
    }
}

/// Most members first, then by name (case-insensitively), so listings are stable.
fn sort_fullest_first(rooms: &mut [RoomInfo]) {
    rooms.sort_by_cached_key(|r| (std::cmp::Reverse(r.members), r.name.to_ascii_lowercase()));
}

pub(super) fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}
