//! `/nick <name>` — changes the caller's nickname. Replies with an error if the name is taken or
//! invalid; everyone else is told `<old> changed nickname to <new>`.

use std::sync::Arc;

use super::{Command, Ctx, Flow, Spec};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nick {
    pub name: String,
}

pub const SPEC: Spec = Spec {
    name: "nick",
    args: "<name>",
    help: "change your nickname",
    parse: |args| {
        (!args.is_empty() && !args.contains(char::is_whitespace)).then(|| {
            Command::Nick(Nick {
                name: args.to_owned(),
            })
        })
    },
};

impl Nick {
    pub fn run(self, ctx: &mut Ctx<'_>) -> Flow {
        if *self.name == **ctx.nick {
            ctx.reply("You already have that nickname.");
            return Flow::Continue;
        }
        match ctx.shared.hub.rename(ctx.client.id, &self.name) {
            Ok(new) => {
                // The connection span keeps the name it joined with; this event ties the two.
                tracing::info!(old = %ctx.nick, new = %new, "nick change");
                *ctx.nick = Arc::clone(&new);
            }
            Err(e) => ctx.reply(e),
        }
        Flow::Continue
    }
}
