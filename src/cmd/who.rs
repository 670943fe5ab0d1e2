//! `/who [room]` — the nicknames of everyone in the caller's room, or in the named room:
//! `In lobby (2): alice, bob`.

use super::{Command, Ctx, Flow, Spec};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    pub room: Option<String>,
}

pub const SPEC: Spec = Spec {
    name: "who",
    args: "[room]",
    help: "list the people in your room, or in another",
    parse: |args| match args {
        "" => Some(Command::Who(Who { room: None })),
        room if !room.contains(char::is_whitespace) => Some(Command::Who(Who {
            room: Some(room.to_owned()),
        })),
        _ => None,
    },
};

impl Who {
    pub fn run(self, ctx: &mut Ctx<'_>) -> Flow {
        match ctx.shared.hub.who(ctx.client.id, self.room.as_deref()) {
            Ok((room, nicks)) if nicks.is_empty() => {
                ctx.reply(format_args!("In {room} (0): nobody"))
            }
            Ok((room, nicks)) => ctx.reply(format_args!(
                "In {room} ({}): {}",
                nicks.len(),
                nicks.join(", ")
            )),
            Err(e) => ctx.reply(e),
        }
        Flow::Continue
    }
}
