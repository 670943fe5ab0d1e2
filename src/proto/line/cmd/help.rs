//! `/help` — lists every command with its grammar and what it does.

use super::{no_args, Command, Ctx, Flow, Spec, COMMANDS};

pub const SPEC: Spec = Spec {
    name: "help",
    args: "",
    help: "list the commands",
    parse: |args| no_args(args, Command::Help),
};

pub fn run(ctx: &mut Ctx<'_>) -> Flow {
    let width = COMMANDS.iter().map(|c| c.usage().len()).max().unwrap_or(0);
    let mut text = String::from("Commands (anything else you type is sent to the room):");
    for spec in COMMANDS {
        text.push_str(&format!("\n  {:width$}  {}", spec.usage(), spec.help));
    }
    ctx.reply(text);
    Flow::Continue
}
