//! `/quit` — says `Goodbye!` and closes the connection once everything queued is written.

use super::{no_args, Command, Ctx, Flow, Spec};

pub const SPEC: Spec = Spec {
    name: "quit",
    args: "",
    help: "leave the chat",
    parse: |args| no_args(args, Command::Quit),
};

pub fn run(ctx: &mut Ctx<'_>) -> Flow {
    ctx.reply("Goodbye!");
    Flow::Quit
}
