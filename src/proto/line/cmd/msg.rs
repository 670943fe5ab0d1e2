//! `/msg <nick> <text>` — a private message: only `<nick>` gets `[private] alice: text`,
//! wherever it is; the sender gets `[private to bob] text`. An unknown nick, or the sender's
//! own, gets an error.

use crate::core::event::{Kind, Target};
use crate::core::hub::PrivateError;
use crate::core::names::nick_key;
use crate::proto::line::words;

use super::{Command, Ctx, Flow, Spec};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub to: String,
    pub text: String,
}

pub const SPEC: Spec = Spec {
    name: "msg",
    args: "<nick> <text>",
    help: "send a private message",
    parse: |args| {
        let (to, text) = args.split_once(char::is_whitespace)?;
        let text = text.trim_start();
        (!text.is_empty()).then(|| {
            Command::Msg(Msg {
                to: to.to_owned(),
                text: text.to_owned(),
            })
        })
    },
};

impl Msg {
    pub fn run(self, ctx: &mut Ctx<'_>) -> Flow {
        if nick_key(&self.to) == nick_key(ctx.nick) {
            ctx.reply(words::TO_SELF);
            return Flow::Continue;
        }
        let text = Kind::Message(self.text.as_str().into());
        match ctx.shared.hub.private(ctx.member.id, &self.to, text) {
            Ok(event) => {
                ctx.count_message(1);
                if let Target::Member(to) = &event.target {
                    ctx.reply(format_args!("[private to {}] {}", to.nick, self.text));
                }
            }
            // Nobody here by that name: someone on another node may have it.
            Err(PrivateError::NoSuchNick(_)) if ctx.shared.cluster.is_some() => {
                let sent = ctx.shared.cluster.as_ref().and_then(|c| {
                    let from = ctx.shared.hub.identity(ctx.member.id)?;
                    c.private(&from, &self.to, &Kind::Message(self.text.as_str().into()))
                });
                match sent {
                    Some(to) => {
                        ctx.count_message(1);
                        ctx.reply(format_args!("[private to {to}] {}", self.text));
                    }
                    None => ctx.reply(words::private_error(&PrivateError::NoSuchNick(self.to))),
                }
            }
            Err(e) => ctx.reply(words::private_error(&e)),
        }
        Flow::Continue
    }
}
