//! `/leave` — back to the lobby, as `/join lobby` would.

use super::join::moved;
use super::{no_args, Command, Ctx, Flow, Spec};
use crate::core::room::LOBBY;

pub const SPEC: Spec = Spec {
    name: "leave",
    args: "",
    help: "go back to the lobby",
    parse: |args| no_args(args, Command::Leave),
};

pub fn run(ctx: &mut Ctx<'_>) -> Flow {
    if ctx.shared.cluster.is_some() {
        return Flow::Move {
            room: LOBBY.to_owned(),
            leave: true,
        };
    }
    moved(ctx, LOBBY, true);
    Flow::Continue
}
