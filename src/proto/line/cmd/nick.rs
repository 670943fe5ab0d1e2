//! `/nick <name> [password]` — changes the caller's nickname. Replies with an error if the name
//! is taken or invalid; everyone else is told `<old> changed nickname to <new>`. A registered
//! name needs its password (here, or `/identify` next): the session checks it.

use std::sync::Arc;

use super::{Command, Ctx, Flow, Spec};
use crate::accounts::Secret;
use crate::core::hub::Renamed;
use crate::proto::line::words;
use crate::proto::rename::RenameError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nick {
    pub name: String,
    pub password: Option<Secret>,
}

pub const SPEC: Spec = Spec {
    name: "nick",
    args: "<name> [password]",
    help: "change your nickname (a registered one needs its password)",
    parse: |args| {
        let mut words = args.split_whitespace();
        let (name, password) = (words.next()?, words.next());
        words.next().is_none().then(|| {
            Command::Nick(Nick {
                name: name.to_owned(),
                password: password.map(|p| Secret(p.to_owned())),
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
        if ctx.shared.cluster.is_some() {
            // The broker gives the name first (a cluster has no accounts: --data-dir is
            // refused), which the session waits for.
            return Flow::Rename(self.name);
        }
        if ctx.shared.accounts.is_registered(&self.name) {
            return Flow::Claim {
                name: self.name,
                password: self.password,
            };
        }
        rename(ctx, &self.name);
        Flow::Continue
    }
}

/// Renames the caller to `name`, which may be registered (the caller has proved it is theirs).
pub fn rename(ctx: &mut Ctx<'_>, name: &str) {
    let renamed = ctx.shared.hub.rename(ctx.member.id, name);
    done(ctx, renamed.map_err(RenameError::from));
}

/// Tells the caller how a rename went, and keeps the new name.
pub fn done(ctx: &mut Ctx<'_>, renamed: Result<Renamed, RenameError>) {
    match renamed {
        Ok(renamed) => {
            tracing::info!(old = %ctx.nick, new = %renamed.new.nick, "nick change");
            ctx.reply(format_args!(
                "Your nickname has been changed to {}",
                renamed.new.nick
            ));
            *ctx.nick = Arc::clone(&renamed.new.nick);
        }
        Err(e) => ctx.reply(words::rename_error(&e)),
    }
}
