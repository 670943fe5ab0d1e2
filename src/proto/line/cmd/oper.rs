//! `/oper <name> <password>` — become a server operator (`--oper`, `--opers FILE`): every room
//! operator's rights in every room one is in, and `/kill`. The password is checked on a
//! blocking thread, so the session awaits it (see [`super::account`]).
//!
//! `/kill <nick> [reason]` — a server operator ends someone's connection: they read who did it
//! and why, and those who share a room with them `bob has left the chat (disconnected by a
//! server operator).`

use super::account::Request;
use super::{Command, Ctx, Flow, Spec};
use crate::accounts::Secret;
use crate::proto::oper::{kill, KillError};

pub const OPER: Spec = Spec {
    name: "oper",
    args: "<name> <password>",
    help: "become a server operator: every room's operator rights, and /kill",
    parse: |args| {
        let (name, password) = args.split_once(char::is_whitespace)?;
        let password = password.trim();
        (!password.contains(char::is_whitespace)).then(|| {
            Command::Account(Request::Oper {
                name: name.to_owned(),
                password: Secret(password.to_owned()),
            })
        })
    },
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    pub nick: String,
    pub reason: Option<String>,
}

pub const KILL: Spec = Spec {
    name: "kill",
    args: "<nick> [reason]",
    help: "end someone's connection (server operators only)",
    parse: |args| {
        super::nick_and_reason(args).map(|(nick, reason)| Command::Kill(Kill { nick, reason }))
    },
};

impl Kill {
    pub fn run(self, ctx: &mut Ctx<'_>) -> Flow {
        let reason = self.reason.as_deref();
        match kill(ctx.shared, ctx.member, ctx.nick, &self.nick, reason) {
            Ok(nick) => ctx.reply(format_args!("You disconnected {nick}.")),
            Err(KillError::NotOper) => ctx.reply(
                "Error: only server operators may /kill; /oper <name> <password> makes you one.",
            ),
            Err(KillError::NoSuchNick(nick)) => {
                ctx.reply(format_args!("Error: nobody called {nick} is connected."))
            }
            Err(KillError::Yourself) => ctx.reply("Error: that is you; /quit leaves."),
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    #[test]
    fn grammar() {
        assert!(parse("/oper alice").is_err());
        assert!(parse("/oper alice pw extra").is_err());
        assert_eq!(
            parse("/kill bob  spamming  again"),
            Ok(Command::Kill(Kill {
                nick: "bob".into(),
                reason: Some("spamming  again".into())
            }))
        );
        assert!(parse("/kill").is_err());
    }
}
