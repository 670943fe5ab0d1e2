//! `/join <room>` — leaves the caller's room for `<room>`, creating it if it does not exist.
//! The old room is told `alice has left the room.`, the new one `alice has joined the room.`,
//! and the caller gets `You are now in dev (3 people here).`, the topic and the scrollback.

use super::{Command, Ctx, Flow, Spec};

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
        if let Err(e) = ctx.shared.hub.move_to(ctx.client.id, &self.room) {
            ctx.reply(e);
        }
        Flow::Continue
    }
}
