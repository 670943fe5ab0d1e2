//! `/ignore [nick]` — stops that person's room lines and private messages reaching you (they
//! are not told); alone, lists whom you ignore. `/unignore <nick>` undoes it. A registered
//! user's list is kept with the account, for its next connection.

use super::{Command, Ctx, Flow, Spec};
use crate::core::hub::IgnoreError;
use crate::core::member::MAX_IGNORED;
use crate::core::names::NickError;
use crate::proto::line::words;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignore {
    /// `None`: list them.
    Add(Option<String>),
    Remove(String),
}

pub const IGNORE: Spec = Spec {
    name: "ignore",
    args: "[nick]",
    help: "stop someone's messages and private messages reaching you; alone, list whom you ignore",
    parse: |args| super::at_most_one_word(args).map(|who| Command::Ignore(Ignore::Add(who))),
};

pub const UNIGNORE: Spec = Spec {
    name: "unignore",
    args: "<nick>",
    help: "let someone you ignored reach you again",
    parse: |args| super::one_word(args).map(|who| Command::Ignore(Ignore::Remove(who))),
};

impl Ignore {
    pub fn run(self, ctx: &mut Ctx<'_>) -> Flow {
        let hub = &ctx.shared.hub;
        let id = ctx.member.id;
        match self {
            Ignore::Add(None) => {
                let list = ctx.member.ignored();
                if list.is_empty() {
                    ctx.reply("You are ignoring nobody; /ignore <nick> stops someone's messages reaching you.");
                } else {
                    let nicks: Vec<&str> = list.iter().map(|i| &*i.nick).collect();
                    ctx.reply(format_args!(
                        "You are ignoring ({}): {}",
                        nicks.len(),
                        nicks.join(", ")
                    ));
                }
                Flow::Continue
            }
            Ignore::Add(Some(nick)) => match hub.ignore(id, &nick) {
                Ok(Some(list)) => {
                    let shown = list.last().map_or(nick.as_str(), |i| &*i.nick).to_owned();
                    tracing::info!(by = %ctx.nick, nick = %shown, "ignoring");
                    ctx.reply(format_args!(
                        "You are ignoring {shown}: their messages and private messages no longer reach you (/unignore {shown} undoes it)."
                    ));
                    Flow::KeepIgnores
                }
                Ok(None) => {
                    ctx.reply(format_args!(
                        "Nothing changed: you are already ignoring {nick}."
                    ));
                    Flow::Continue
                }
                Err(IgnoreError::Yourself) => {
                    ctx.reply("Error: that is you; you cannot ignore yourself.");
                    Flow::Continue
                }
                Err(IgnoreError::TooMany(_)) => {
                    ctx.reply(format_args!(
                        "Error: you are ignoring {MAX_IGNORED} people, the most allowed; /unignore someone first."
                    ));
                    Flow::Continue
                }
                Err(IgnoreError::Invalid) => {
                    ctx.reply(words::nick_error(&NickError::Invalid));
                    Flow::Continue
                }
            },
            Ignore::Remove(nick) => match hub.unignore(id, &nick) {
                Some(_) => {
                    tracing::info!(by = %ctx.nick, nick, "no longer ignoring");
                    ctx.reply(format_args!("You no longer ignore {nick}."));
                    Flow::KeepIgnores
                }
                None => {
                    ctx.reply(format_args!(
                        "Nothing changed: you were not ignoring {nick}."
                    ));
                    Flow::Continue
                }
            },
        }
    }
}
