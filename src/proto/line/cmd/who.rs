//! `/who [room]` — the nicknames of everyone in the caller's room, or in the named room, with
//! how each came when it is not netcat: `In lobby (3): alice, bob (irc), carol (web)`.

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
                let mut members: Vec<_> = members.iter().collect();
                members.sort_by_cached_key(|m| m.nick().to_ascii_lowercase());
                let nicks: Vec<Arc<str>> = members
                    .iter()
                    .map(|m| match m.member.kind.protocol {
                        "line" => m.nick().clone(),
                        other => format!("{} ({other})", m.nick()).into(),
                    })
                    .collect();
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
