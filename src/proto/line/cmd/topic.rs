//! `/topic [text]` — shows the caller's room's topic, or sets it: everyone in the room, the
//! setter included, gets `alice set the topic of dev: text`. Whoever enters the room is shown
//! it.

use super::{Command, Ctx, Flow, Spec};
use crate::core::hub::Whither;
use crate::proto::line::render::push_topic_line;
use crate::proto::line::words;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    pub text: Option<String>,
}

pub const SPEC: Spec = Spec {
    name: "topic",
    args: "[text]",
    help: "show or set your room's topic",
    parse: |args| {
        Some(Command::Topic(Topic {
            text: (!args.is_empty()).then(|| args.to_owned()),
        }))
    },
};

impl Topic {
    pub fn run(self, ctx: &mut Ctx<'_>) -> Flow {
        let hub = &ctx.shared.hub;
        if let Some(text) = self.text {
            if let Err(e) = hub.set_topic(ctx.member.id, Whither::Current, &text) {
                ctx.reply(words::room_error(&e));
            }
            return Flow::Continue;
        }
        match hub.topic(ctx.member.id, Whither::Current) {
            Ok((room, Some(topic))) => {
                let mut line = String::new();
                push_topic_line(&mut line, &room, &topic);
                ctx.reply(line.trim_end());
            }
            Ok((room, None)) => ctx.reply(format_args!(
                "No topic is set in {room}; /topic <text> sets one."
            )),
            Err(e) => ctx.reply(words::room_error(&e)),
        }
        Flow::Continue
    }
}
