//! `/leave` — back to the lobby, as `/join lobby` would.

use super::join::move_to;
use super::{no_args, Command, Ctx, Flow, Spec};
use crate::core::names::RoomError;
use crate::core::room::LOBBY;
use crate::proto::line::words;

pub const SPEC: Spec = Spec {
    name: "leave",
    args: "",
    help: "go back to the lobby",
    parse: |args| no_args(args, Command::Leave),
};

pub fn run(ctx: &mut Ctx<'_>) -> Flow {
    match move_to(ctx, LOBBY) {
        Ok(()) => {}
        Err(RoomError::AlreadyThere(_)) => {
            ctx.reply("You are already in lobby; /quit leaves the chat.")
        }
        Err(e) => ctx.reply(words::room_error(&e)),
    }
    Flow::Continue
}
