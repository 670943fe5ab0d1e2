//! `/nick <name>` — changes the caller's nickname. Replies with an error if the name is taken or
//! invalid; everyone else is told `<old> changed nickname to <new>`.

use std::sync::Arc;

use super::{Command, Ctx, Flow, Spec};
use crate::proto::line::words;

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
        match ctx.shared.hub.rename(ctx.member.id, &self.name) {
            Ok(renamed) => {
                tracing::info!(old = %ctx.nick, new = %renamed.new.nick, "nick change");
                ctx.reply(format_args!(
                    "Your nickname has been changed to {}",
                    renamed.new.nick
                ));
                *ctx.nick = Arc::clone(&renamed.new.nick);
            }
            Err(e) => ctx.reply(words::nick_error(&e)),
        }
        Flow::Continue
    }
}
