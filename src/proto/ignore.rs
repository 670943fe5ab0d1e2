//! Whom someone ignores, kept with their account: restored when a connection proves the
//! account, written back (in `accounts.json`) when it changes. Unregistered users' ignores last
//! as long as their connection.

use crate::accounts::AccountError;
use crate::context::Shared;
use crate::core::member::Ignored;
use crate::core::Member;

/// Adds what `member`'s account ignores to what the connection ignores already. Called
/// once the member is in the hub and has proved an account.
pub fn restore(shared: &Shared, member: &Member) {
    let Some(account) = member.account() else {
        return;
    };
    let kept = shared.accounts.ignores(&account);
    if kept.is_empty() {
        return;
    }
    let mut list = member.ignored();
    for nick in kept {
        let holder = shared.hub.find(&nick).map(|m| m.member.id);
        let new = Ignored::new(&nick, holder);
        if !list.iter().any(|i| i.key() == new.key()) && holder != Some(member.id) {
            list.push(new);
        }
    }
    shared.hub.set_ignored(member.id, list);
}

/// Writes whom `member` ignores to its account, if it proved one; returns once it is on
/// disk.
pub async fn keep(shared: &Shared, member: &Member) -> Result<(), AccountError> {
    let Some(account) = member.account() else {
        return Ok(());
    };
    let nicks = member
        .ignored()
        .iter()
        .map(|i| i.nick.to_string())
        .collect();
    shared.accounts.set_ignores(&account, nicks).await
}
