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
    parse: |args| {
        (!args.is_empty() && !args.contains(char::is_whitespace)).then(|| {
            Command::Join(Join {
                room: args.to_owned(),
            })
        })
    },
};

impl Join {
    pub fn run(self, ctx: &mut Ctx<'_>) -> Flow {
        if let Err(e) = move_to(ctx, &self.room) {
            ctx.reply(words::room_error(&e));
        }
        Flow::Continue
    }
}

/// Moves the caller to `room`, showing it the room as it enters.
pub(super) fn move_to(ctx: &mut Ctx<'_>, room: &str) -> Result<(), RoomError> {
    let member = ctx.member.clone();
    ctx.shared.hub.move_to(ctx.member.id, room, |view| {
        for part in arrival_text(&view, None) {
            let _ = member.push(part);
        }
    })
}
