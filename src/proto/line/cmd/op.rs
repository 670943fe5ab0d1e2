//! `/op <nick>` and `/deop <nick>` — a room operator gives or takes operator status in the
//! caller's room: IRC's `MODE #room +o nick`, through the same hub call, so one set of rights
//! serves both grammars. Everyone in the room is told `alice made bob an operator of dev.`

use super::{Command, Ctx, Flow, Spec};
use crate::core::hub::Whither;
use crate::core::names::RoomError;
use crate::core::room::Mode;
use crate::proto::line::words;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub on: bool,
    pub nick: String,
}

fn one_nick(args: &str, on: bool) -> Option<Command> {
    super::one_word(args).map(|nick| Command::Op(Op { on, nick }))
}

pub const OP: Spec = Spec {
    name: "op",
    args: "<nick>",
    help: "make someone an operator of your room (operators only)",
    parse: |args| one_nick(args, true),
};

pub const DEOP: Spec = Spec {
    name: "deop",
    args: "<nick>",
    help: "take operator status in your room from someone (operators only)",
    parse: |args| one_nick(args, false),
};

impl Op {
    pub fn run(self, ctx: &mut Ctx<'_>) -> Flow {
        if let Some(node) = ctx.on_another_server(&self.nick) {
            self.elsewhere(ctx, &node);
            return Flow::Continue;
        }
        let change = [Mode::Operator(self.on, self.nick.as_str())];
        match ctx
            .shared
            .hub
            .change_modes(ctx.member.id, Whither::Current, &change)
        {
            Ok(done) => {
                for refused in &done.refused {
                    ctx.reply(words::room_error(refused));
                }
                if done.event.is_none() && done.refused.is_empty() {
                    let already = if self.on { "already" } else { "not" };
                    ctx.reply(format_args!(
                        "Nothing changed: {} is {already} an operator here.",
                        self.nick
                    ));
                } else if let Some(event) = done.event {
                    tracing::info!(by = %ctx.nick, nick = %self.nick, on = self.on, room = ?event.room(), "operator status changed");
                }
            }
            Err(e) => not_changed(ctx, &e),
        }
        Flow::Continue
    }

    /// The same for someone on server `node` of the cluster, who must be in the caller's room
    /// there: their server applies it to them (docs/CLUSTER.md, "Topics and modes").
    fn elsewhere(&self, ctx: &mut Ctx<'_>, node: &str) {
        let changed = ctx.in_room_elsewhere(&self.nick, node).and_then(|person| {
            let change = Mode::Operator(self.on, person.nick.as_str().into());
            let hub = &ctx.shared.hub;
            hub.standing_elsewhere(ctx.member.id, Whither::Current, change)
        });
        if let Err(e) = changed {
            not_changed(ctx, &e);
        }
    }
}

fn not_changed(ctx: &Ctx<'_>, e: &RoomError) {
    match e {
        RoomError::NotOperator(room) => ctx.reply(format_args!(
            "Error: only operators of {room} may change who operates it."
        )),
        e => ctx.reply(words::room_error(e)),
    }
}
