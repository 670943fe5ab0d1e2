//! Room moderation, for a room's operators (and server operators), through the same hub calls
//! as IRC's `KICK`, `MODE` and `INVITE`, so one set of rights serves both grammars:
//!
//! - `/kick <nick> [reason]` — puts someone out of the caller's room (a netcat user lands in
//!   the lobby); everyone there reads `alice kicked bob out of dev (reason).`
//! - `/ban [nick|mask]` — bans a nickname (`bob` is `bob!*@*`) or a `nick!user@host` mask from
//!   entering and speaking, and puts out whoever it names; alone, lists the bans.
//! - `/unban <nick|mask>` — lifts a ban.
//! - `/mute [nick|mask]`, `/unmute <nick|mask>` — the same for speaking only.
//! - `/invite <nick>` — lets someone into an invite-only room once, and tells them.
//! - `/mode [+-imst]` — shows the room's modes, or changes them: `i` invite-only, `m`
//!   moderated (only operators and voices speak), `s` secret, `t` topic locked.

use std::sync::Arc;

use super::{at_most_one_word, one_word, Command, Ctx, Flow, Spec};
use crate::cluster::remote_identity;
use crate::context::Shared;
use crate::core::event::{Event, Kind, MemberId};
use crate::core::hub::Whither;
use crate::core::modes::normalise_mask;
use crate::core::names::RoomError;
use crate::core::room::Mode;
use crate::proto::line::render::land;
use crate::proto::line::words;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moderate {
    Kick {
        nick: String,
        reason: Option<String>,
    },
    /// `None`: list them.
    Ban(Option<String>),
    Unban(String),
    Mute(Option<String>),
    Unmute(String),
    Invite(String),
    /// `None`: show them.
    Mode(Option<String>),
}

pub const KICK: Spec = Spec {
    name: "kick",
    args: "<nick> [reason]",
    help: "put someone out of your room; netcat users land in the lobby (operators only)",
    parse: |args| {
        super::nick_and_reason(args)
            .map(|(nick, reason)| Command::Moderate(Moderate::Kick { nick, reason }))
    },
};

pub const BAN: Spec = Spec {
    name: "ban",
    args: "[nick|mask]",
    help: "keep a nickname or nick!user@host mask out of your room and put them out; alone, list the bans (operators only)",
    parse: |args| at_most_one_word(args).map(|who| Command::Moderate(Moderate::Ban(who))),
};

pub const UNBAN: Spec = Spec {
    name: "unban",
    args: "<nick|mask>",
    help: "lift a ban (operators only)",
    parse: |args| one_word(args).map(|who| Command::Moderate(Moderate::Unban(who))),
};

pub const MUTE: Spec = Spec {
    name: "mute",
    args: "[nick|mask]",
    help: "stop a nickname or mask speaking in your room; alone, list the mutes (operators only)",
    parse: |args| at_most_one_word(args).map(|who| Command::Moderate(Moderate::Mute(who))),
};

pub const UNMUTE: Spec = Spec {
    name: "unmute",
    args: "<nick|mask>",
    help: "let a muted nickname or mask speak again (operators only)",
    parse: |args| one_word(args).map(|who| Command::Moderate(Moderate::Unmute(who))),
};

pub const INVITE: Spec = Spec {
    name: "invite",
    args: "<nick>",
    help: "invite someone into your room (into an invite-only one: operators only)",
    parse: |args| one_word(args).map(|who| Command::Moderate(Moderate::Invite(who))),
};

pub const MODE: Spec = Spec {
    name: "mode",
    args: "[+-imst]",
    help: "show your room's modes, or change them: i invite-only, m moderated, s secret, t topic locked (operators only)",
    parse: |args| {
        if args.is_empty() {
            return Some(Command::Moderate(Moderate::Mode(None)));
        }
        let valid = args.starts_with(['+', '-'])
            && args.chars().all(|c| "+-imst".contains(c));
        valid.then(|| Command::Moderate(Moderate::Mode(Some(args.to_owned()))))
    },
};

impl Moderate {
    pub fn run(self, ctx: &mut Ctx<'_>) -> Flow {
        match self {
            Moderate::Kick { nick, reason } => kick(ctx, &nick, reason.as_deref()),
            Moderate::Ban(None) => list(ctx, true),
            Moderate::Mute(None) => list(ctx, false),
            Moderate::Ban(Some(who)) => {
                if listed(ctx, Mode::Ban(true, &who)) {
                    let hub = &ctx.shared.hub;
                    if let Err(e) = hub.kick_banned(ctx.member.id, Whither::Current, land) {
                        ctx.reply(words::room_error(&e));
                    }
                }
            }
            Moderate::Unban(who) => {
                listed(ctx, Mode::Ban(false, &who));
            }
            Moderate::Mute(Some(who)) => {
                listed(ctx, Mode::Mute(true, &who));
            }
            Moderate::Unmute(who) => {
                listed(ctx, Mode::Mute(false, &who));
            }
            Moderate::Invite(nick) => invite(ctx, &nick),
            Moderate::Mode(None) => show_modes(ctx),
            Moderate::Mode(Some(changes)) => change_modes(ctx, &changes),
        }
        Flow::Continue
    }
}

/// `Error: only operators of dev may <what>.`
fn not_operator(room: &str, what: &str) -> String {
    format!("Error: only operators of {room} may {what}.")
}

fn kick(ctx: &mut Ctx<'_>, nick: &str, reason: Option<&str>) {
    let hub = &ctx.shared.hub;
    let kicked = match ctx.on_another_server(nick) {
        // Their server takes them out when it hears of it (docs/CLUSTER.md, "Topics and modes").
        Some(node) => ctx.in_room_elsewhere(nick, &node).and_then(|person| {
            let who = crate::cluster::remote_identity(&person.nick, &node);
            hub.kick_elsewhere(ctx.member.id, Whither::Current, who, reason)
        }),
        None => hub.kick(ctx.member.id, Whither::Current, nick, reason, land),
    };
    match kicked {
        Ok(_) => {}
        Err(RoomError::NotOperator(room)) => ctx.reply(not_operator(&room, "put people out of it")),
        Err(e) => ctx.reply(words::room_error(&e)),
    }
}

/// Adds or lifts a ban or mute; whether it changed anything.
fn listed(ctx: &mut Ctx<'_>, change: Mode<&str>) -> bool {
    let (on, ban, typed) = match change {
        Mode::Ban(on, who) => (on, true, who),
        Mode::Mute(on, who) => (on, false, who),
        _ => unreachable!("only bans and mutes are listed"),
    };
    let hub = &ctx.shared.hub;
    match hub.change_modes(ctx.member.id, Whither::Current, &[change]) {
        Ok(done) => {
            for refused in &done.refused {
                ctx.reply(words::room_error(refused));
            }
            if done.event.is_none() && done.refused.is_empty() {
                let mask = normalise_mask(typed).unwrap_or_else(|| typed.to_owned());
                let what = if ban { "banned" } else { "muted" };
                let not = if on { "already" } else { "not" };
                ctx.reply(format_args!(
                    "Nothing changed: {mask} is {not} {what} here."
                ));
            }
            done.event.is_some()
        }
        Err(RoomError::NotOperator(room)) => {
            let what = if ban {
                "ban or unban people"
            } else {
                "mute or unmute people"
            };
            ctx.reply(not_operator(&room, what));
            false
        }
        Err(e) => {
            ctx.reply(words::room_error(&e));
            false
        }
    }
}

/// `Bans in dev (2): bob!*@* (by alice), *!*@10.0.0.9 (by alice)`.
fn list(ctx: &mut Ctx<'_>, bans: bool) {
    match ctx.shared.hub.listed(ctx.member.id, Whither::Current, bans) {
        Ok((room, list)) if list.is_empty() => {
            let what = if bans { "banned" } else { "muted" };
            ctx.reply(format_args!("Nobody is {what} in {room}."))
        }
        Ok((room, list)) => {
            let entries: Vec<String> = list
                .iter()
                .map(|l| format!("{} (by {})", l.mask, l.by))
                .collect();
            let (n, entries) = (list.len(), entries.join(", "));
            if bans {
                ctx.reply(format_args!("Bans in {room} ({n}): {entries}"));
            } else {
                ctx.reply(format_args!("Mutes in {room} ({n}): {entries}"));
            }
        }
        Err(e) => ctx.reply(words::room_error(&e)),
    }
}

/// Invites `nick`, listed on server `node` of the cluster, into the room `whither` names on
/// behalf of `id`: this server checks the right as for someone here (and that they are not
/// in the room there, as its lists say); their server records the invitation and tells them
/// (docs/CLUSTER.md, "Topics and modes"). The invitation, naming them as listed.
pub fn invite_across(
    shared: &Shared,
    id: MemberId,
    whither: Whither<'_>,
    nick: &str,
    node: &str,
) -> Result<Arc<Event>, RoomError> {
    let no_such_nick = || RoomError::NoSuchNick(nick.to_owned());
    let cluster = shared.cluster.as_ref().ok_or_else(no_such_nick)?;
    let person = cluster
        .person(nick)
        .and_then(|(n, p)| (n == node).then_some(p))
        .ok_or_else(no_such_nick)?;
    let who = remote_identity(&person.nick, node);
    let event = shared.hub.invite_elsewhere(id, whither, who)?;
    let (Kind::Invited(room), Some(from)) = (&event.kind, &event.from) else {
        unreachable!("an invitation, from the inviter");
    };
    if person.rooms.iter().any(|r| r.eq_ignore_ascii_case(room)) {
        return Err(RoomError::AlreadyIn {
            nick: person.nick,
            room: room.clone(),
        });
    }
    cluster
        .private(from, &person.nick, &event.kind)
        .ok_or_else(no_such_nick)?;
    Ok(event)
}

fn invite(ctx: &mut Ctx<'_>, nick: &str) {
    if ctx.nick.eq_ignore_ascii_case(nick) {
        ctx.reply("Error: that is you; you are in your room already.");
        return;
    }
    let invited = match ctx.on_another_server(nick) {
        Some(node) => invite_across(ctx.shared, ctx.member.id, Whither::Current, nick, &node),
        None => ctx.shared.hub.invite(ctx.member.id, Whither::Current, nick),
    };
    match invited {
        Ok(event) => {
            let room = match &event.kind {
                Kind::Invited(room) => room.clone(),
                _ => unreachable!("an invitation"),
            };
            let to = match &event.target {
                crate::core::event::Target::Member(to) => to.nick.clone(),
                _ => unreachable!("to a member"),
            };
            ctx.reply(format_args!(
                "You invited {to} to {room}; they may come in once, invite-only or not."
            ));
        }
        Err(RoomError::NotOperator(room)) => ctx.reply(not_operator(
            &room,
            "invite people into it while it is invite-only",
        )),
        Err(e) => ctx.reply(words::room_error(&e)),
    }
}

fn show_modes(ctx: &mut Ctx<'_>) {
    match ctx.shared.hub.room(ctx.member.id, Whither::Current) {
        Ok(room) => {
            let m = room.modes;
            let mut said = Vec::new();
            for (on, what) in [
                (m.invite_only, "invite-only (+i)"),
                (m.moderated, "moderated (+m)"),
                (m.secret, "secret (+s)"),
                (m.topic_lock, "topic locked (+t)"),
            ] {
                if on {
                    said.push(what);
                }
            }
            if said.is_empty() {
                ctx.reply(format_args!("Modes of {}: none.", room.name));
            } else {
                ctx.reply(format_args!("Modes of {}: {}.", room.name, said.join(", ")));
            }
        }
        Err(e) => ctx.reply(words::room_error(&e)),
    }
}

fn change_modes(ctx: &mut Ctx<'_>, changes: &str) {
    let mut on = true;
    let mut requests = Vec::new();
    for c in changes.chars() {
        match c {
            '+' => on = true,
            '-' => on = false,
            'i' => requests.push(Mode::InviteOnly(on)),
            'm' => requests.push(Mode::Moderated(on)),
            's' => requests.push(Mode::Secret(on)),
            't' => requests.push(Mode::TopicLock(on)),
            _ => unreachable!("the parser lets only +-imst through"),
        }
    }
    if requests.is_empty() {
        ctx.reply("Nothing changed: name a mode (i, m, s or t) after + or -.");
        return;
    }
    match ctx
        .shared
        .hub
        .change_modes(ctx.member.id, Whither::Current, &requests)
    {
        Ok(done) if done.event.is_none() => {
            ctx.reply("Nothing changed: the room already has those modes.")
        }
        Ok(_) => {}
        Err(RoomError::NotOperator(room)) => ctx.reply(not_operator(&room, "change its modes")),
        Err(e) => ctx.reply(words::room_error(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    #[test]
    fn grammar() {
        assert_eq!(
            parse("/kick bob  too  loud "),
            Ok(Command::Moderate(Moderate::Kick {
                nick: "bob".into(),
                reason: Some("too  loud".into())
            }))
        );
        assert_eq!(parse("/ban"), Ok(Command::Moderate(Moderate::Ban(None))));
        assert_eq!(
            parse("/ban *!*@10.0.0.9"),
            Ok(Command::Moderate(Moderate::Ban(Some(
                "*!*@10.0.0.9".into()
            ))))
        );
        assert!(parse("/ban a b").is_err());
        assert!(parse("/unban").is_err());
        assert!(parse("/invite").is_err());
        assert!(parse("/mode +x").is_err());
        assert!(parse("/mode i").is_err());
        assert_eq!(
            parse("/mode +i-t"),
            Ok(Command::Moderate(Moderate::Mode(Some("+i-t".into()))))
        );
    }
}
