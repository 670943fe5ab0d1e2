//! `/history [n]` — the last `n` messages of the caller's room (default
//! [`DEFAULT_HISTORY`], at most what the room keeps), between a header and a footer, each with
//! its time. Output that would fill more than half the caller's queue is cut, oldest first,
//! and the header says so.

use super::{Command, Ctx, Flow, Spec};
use crate::core::hub::Whither;
use crate::proto::line::render::{render_history, Span};

pub const DEFAULT_HISTORY: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    pub n: usize,
}

pub const SPEC: Spec = Spec {
    name: "history",
    args: "[n]",
    help: "show your room's last n messages (default 20)",
    parse: |args| {
        let n = match args {
            "" => DEFAULT_HISTORY,
            n => n.parse().ok().filter(|&n| n > 0)?,
        };
        Some(Command::History(History { n }))
    },
};

impl History {
    pub fn run(self, ctx: &mut Ctx<'_>) -> Flow {
        let hub = &ctx.shared.hub;
        let config = hub.settings();
        let retain = config.retain;
        if retain == 0 {
            ctx.reply("No history is kept on this server (--history-retain 0).");
            return Flow::Continue;
        }
        let Ok((room, entries)) = hub.history(ctx.member.id, Whither::Current, self.n.min(retain))
        else {
            return Flow::Continue;
        };
        if entries.is_empty() {
            ctx.reply(format_args!("No messages in {room} yet."));
            return Flow::Continue;
        }
        let block = render_history(&room, entries.iter(), config.budget, Span::Last);
        let _ = ctx.member.push(block);
        Flow::Continue
    }
}
