//! Server operators, for both protocols: becoming one (IRC `OPER`, netcat `/oper`) and ending
//! someone's connection (`KILL`, `/kill`). Their room rights are the hub's: it treats a
//! server operator as an operator of every room it is in.

use std::sync::Arc;

use bytes::Bytes;

use crate::accounts::OperError;
use crate::context::Shared;
use crate::core::{LeaveReason, Member};

/// Makes `member` a server operator if `password` is operator `name`'s (`--oper` or
/// `--opers FILE`); the check hashes off the runtime thread and is throttled like logins.
pub async fn oper_up(
    shared: &Shared,
    member: &Member,
    name: &str,
    password: &str,
) -> Result<(), OperError> {
    let config = shared.live.get();
    shared
        .accounts
        .verify_oper(
            name,
            password,
            &config.opers,
            &config.oper_hashes,
            member.addr.ip(),
        )
        .await?;
    member.set_oper(true);
    tracing::info!(oper = name, member = member.id, "became a server operator");
    Ok(())
}

/// Why a kill was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillError {
    NotOper,
    NoSuchNick(String),
    Yourself,
}

/// Ends the connection of the member called `victim` on behalf of server operator `by`
/// (`killer`): the victim is told who and why in its own protocol, everyone who shares a room
/// with it reads that it was disconnected by a server operator. Returns its nickname as
/// registered.
pub fn kill(
    shared: &Shared,
    killer: &Member,
    by: &str,
    victim: &str,
    reason: Option<&str>,
) -> Result<Arc<str>, KillError> {
    if !killer.is_oper() {
        return Err(KillError::NotOper);
    }
    let target = shared
        .hub
        .find(victim)
        .ok_or_else(|| KillError::NoSuchNick(victim.to_owned()))?;
    if target.member.id == killer.id {
        return Err(KillError::Yourself);
    }
    let nick = target.nick().clone();
    let why = reason.map_or_else(String::new, |r| format!(": {r}"));
    let farewell = if target.member.always_in_a_room(&crate::proto::FORMATS) {
        format!("You were disconnected by server operator {by}{why}\n")
    } else {
        let text = match reason {
            Some(r) => format!("Killed by {by} ({r})"),
            None => format!("Killed by {by}"),
        };
        format!(":{} KILL {nick} :{text}\r\n", shared.config.server_name)
    };
    let _ = target.member.push(Bytes::from(farewell));
    target.member.kick(LeaveReason::Killed);
    tracing::info!(by, member = killer.id, nick = %nick, victim = target.member.id, reason, "killed");
    Ok(nick)
}
