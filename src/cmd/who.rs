//! `/who` — the nicknames of everyone in the caller's room.

use super::{no_args, Command, Ctx, Flow, Spec};

pub const SPEC: Spec = Spec {
    name: "who",
    args: "",
    help: "list the people in your room",
    parse: |args| no_args(args, Command::Who),
};

pub fn run(ctx: &mut Ctx<'_>) -> Flow {
    let members = ctx.shared.hub.members();
    let names: Vec<&str> = members.iter().map(|m| &*m.nick).collect();
    ctx.reply(format_args!(
        "In lobby ({}): {}",
        names.len(),
        names.join(", ")
    ));
    Flow::Continue
}
