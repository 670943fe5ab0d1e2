//! `/join <room>` — leaves the caller's room for `<room>`, creating it if it does not exist.
//! The old room is told `alice has left the room.`, the new one `alice has joined the room.`,
//! and the caller gets `You are now in dev (3 people here).`, the topic and the scrollback.

use super::{Command, Ctx, Flow, Spec};
use crate::core::names::RoomError;
use crate::proto::line::render::arrival_text;
use crate::proto::line::words;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    pub room: String,
}

pub const SPEC: Spec = Spec {
    name: "join",
    args: "<room>",
    help: "move to a room (created if new)",
    parse: |args| super::one_word(args).map(|room| Command::Join(Join { room })),
};

impl Join {
    pub fn run(self, ctx: &mut Ctx<'_>) -> Flow {
        if ctx.shared.cluster.is_some() {
            return Flow::Move {
                room: self.room,
                leave: false,
            };
        }
        moved(ctx, &self.room, false);
        Flow::Continue
    }
}

/// Moves the caller to `room` (`leave`: back to the lobby, with `/leave`'s words) and says
/// what went wrong, if anything.
pub fn moved(ctx: &mut Ctx<'_>, room: &str, leave: bool) {
    match move_to(ctx, room) {
        Ok(()) => {}
        Err(RoomError::AlreadyThere(_)) if leave => {
            ctx.reply("You are already in lobby; /quit leaves the chat.")
        }
        Err(e) => ctx.reply(words::room_error(&e)),
    }
}

/// Moves the caller to `room`, showing it the room as it enters.
pub(super) fn move_to(ctx: &mut Ctx<'_>, room: &str) -> Result<(), RoomError> {
    let member = ctx.member.clone();
    let hub = &ctx.shared.hub;
    // Only this session moves a netcat user, so the rooms it is in cannot change meanwhile.
    let leaving = hub.rooms_of(member.id);
    let visits = &mut *ctx.visits;
    hub.move_to(member.id, room, |view| {
        // Everything said in the rooms left came before this arrival's event.
        for old in &leaving {
            visits.left(old, view.event.id);
        }
        for part in arrival_text(&view, None, visits.mark(view.name())) {
            let _ = member.push(part);
        }
    })
}
