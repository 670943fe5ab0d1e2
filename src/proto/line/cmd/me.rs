//! `/me <action>` — `* alice waves` to the caller's room. Like a chat line, it is kept in the
//! room's history and not echoed to the sender.

use crate::core::hub::Whither;
use crate::core::Kind;

use super::{Command, Ctx, Flow, Spec};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    pub action: String,
}

pub const SPEC: Spec = Spec {
    name: "me",
    args: "<action>",
    help: "tell the room what you are doing: * you <action>",
    parse: |args| {
        (!args.is_empty()).then(|| {
            Command::Me(Me {
                action: args.to_owned(),
            })
        })
    },
};

impl Me {
    pub fn run(self, ctx: &mut Ctx<'_>) -> Flow {
        let action = Kind::Action(self.action.into());
        match ctx.shared.hub.say(ctx.member.id, Whither::Current, action) {
            Ok((_, delivered)) => ctx.count_message(delivered),
            Err(e @ crate::core::names::RoomError::Silenced { .. }) => {
                ctx.reply(crate::proto::line::words::room_error(&e))
            }
            Err(_) => {}
        }
        Flow::Continue
    }
}
