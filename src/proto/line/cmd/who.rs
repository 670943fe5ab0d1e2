//! `/who [room]` — the nicknames of everyone in the caller's room, or in the named room, with
//! how each came when it is not netcat: `In lobby (3): alice, bob (irc), carol (web)`. On a
//! cluster, the other nodes' people too, and everyone with their node:
//! `In lobby (2): alice (on a), bob (irc, on b)`.

use std::sync::Arc;

use super::{Command, Ctx, Flow, Spec};
use crate::cluster::Person;
use crate::core::hub::Whither;
use crate::core::names::RoomError;
use crate::proto::line::words;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    pub room: Option<String>,
}

pub const SPEC: Spec = Spec {
    name: "who",
    args: "[room]",
    help: "list the people in your room, or in another",
    parse: |args| super::at_most_one_word(args).map(|room| Command::Who(Who { room })),
};

impl Who {
    pub fn run(self, ctx: &mut Ctx<'_>) -> Flow {
        let whither = match &self.room {
            Some(room) => Whither::Named(room),
            None => Whither::Current,
        };
        let cluster = ctx.shared.cluster.as_deref();
        // On a cluster everyone is shown with the node they are on, this one's people too.
        let label = |nick: &str, proto: &str, node: Option<&str>| -> Arc<str> {
            match (proto, node) {
                ("line" | "", None) => nick.into(),
                (proto, None) => format!("{nick} ({proto})").into(),
                ("line" | "", Some(node)) => format!("{nick} (on {node})").into(),
                (proto, Some(node)) => format!("{nick} ({proto}, on {node})").into(),
            }
        };
        let here = cluster.map(|c| c.node());
        let remote = ctx.shared.remote_people(ctx.member.id);
        let (room, mut people) = match ctx.shared.hub.room_members(ctx.member.id, whither) {
            Ok((room, members)) => {
                let people: Vec<(String, Arc<str>)> = members
                    .iter()
                    .map(|m| {
                        let nick = m.nick();
                        (
                            nick.to_ascii_lowercase(),
                            label(nick, m.member.kind.protocol, here),
                        )
                    })
                    .collect();
                (room.name, people)
            }
            // A room nobody here is in may still have people on other nodes.
            Err(RoomError::NoSuchRoom(typed)) if !in_room(&remote, &typed).is_empty() => {
                (typed.into(), Vec::new())
            }
            Err(e) => {
                ctx.reply(words::room_error(&e));
                return Flow::Continue;
            }
        };
        for (node, person) in in_room(&remote, &room) {
            let nick = &person.nick;
            people.push((
                nick.to_ascii_lowercase(),
                label(nick, &person.proto, Some(&node)),
            ));
        }
        people.sort();
        let nicks: Vec<Arc<str>> = people.into_iter().map(|(_, l)| l).collect();
        if nicks.is_empty() {
            ctx.reply(format_args!("In {room} (0): nobody"));
        } else {
            ctx.reply(format_args!(
                "In {room} ({}): {}",
                nicks.len(),
                nicks.join(", ")
            ));
        }
        Flow::Continue
    }
}

/// The people of other nodes in `room`.
fn in_room(people: &[(String, Person)], room: &str) -> Vec<(String, Person)> {
    people
        .iter()
        .filter(|(_, p)| p.rooms.iter().any(|r| r.eq_ignore_ascii_case(room)))
        .cloned()
        .collect()
}
