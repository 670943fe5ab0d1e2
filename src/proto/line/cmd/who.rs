//! `/who [room]` — the nicknames of everyone in the caller's room, or in the named room:
//! `In lobby (2): alice, bob`.

use std::sync::Arc;

use super::{Command, Ctx, Flow, Spec};
use crate::core::hub::Whither;
use crate::proto::line::words;

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
        let whither = match &self.room {
            Some(room) => Whither::Named(room),
            None => Whither::Current,
        };
        let listing = ctx
            .shared
            .hub
            .room_members(ctx.member.id, whither)
            .map(|(room, members)| {
                let mut nicks: Vec<Arc<str>> = members.iter().map(|m| m.nick().clone()).collect();
                nicks.sort_by_cached_key(|n| n.to_ascii_lowercase());
                (room.name, nicks)
            });
        match listing {
            Ok((room, nicks)) if nicks.is_empty() => {
                ctx.reply(format_args!("In {room} (0): nobody"))
            }
            Ok((room, nicks)) => ctx.reply(format_args!(
                "In {room} ({}): {}",
                nicks.len(),
                nicks.join(", ")
            )),
            Err(e) => ctx.reply(words::room_error(&e)),
        }
        Flow::Continue
    }
}
