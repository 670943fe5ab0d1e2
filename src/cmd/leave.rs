//! `/leave` — back to the lobby, as `/join lobby` would.

use super::{no_args, Command, Ctx, Flow, Spec};
use crate::room::{RoomError, LOBBY};

pub const SPEC: Spec = Spec {
    name: "leave",
    args: "",
    help: "go back to the lobby",
    parse: |args| no_args(args, Command::Leave),
};

pub fn run(ctx: &mut Ctx<'_>) -> Flow {
    match ctx.shared.hub.move_to(ctx.client.id, LOBBY) {
        Ok(()) => {}
        Err(RoomError::AlreadyThere(_)) => {
            ctx.reply("You are already in lobby; /quit leaves the chat.")
        }
        Err(e) => ctx.reply(e),
    }
    Flow::Continue
}
