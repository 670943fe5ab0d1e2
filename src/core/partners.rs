//! Whom a member has been talking to in private, so a message does not follow a nickname to
//! whoever took it over. Until accounts exist a nickname names a connection, not a person:
//! `mallory` can take `alice` the moment alice's connection ends, and `/msg alice my secret`
//! would then reach mallory. Each member remembers, for its recent private partners, which
//! connection (member id) was behind the name at their last exchange; the hub refuses a
//! private message whose recipient's name now belongs to another connection and tells the
//! sender, who must send again to reach the new holder. The accounts issue closes this
//! properly.

use std::collections::VecDeque;

use super::event::MemberId;

/// Partners remembered per member, the least recent forgotten first: enough for any real
/// conversation, and a bound on what one member can make the server keep.
pub const MAX_PARTNERS: usize = 64;

/// Recent private partners: nickname key → the member id behind it at the last exchange, in
/// two lists. What a member sent is written only by its own sends, so nobody else can push a
/// real conversation out of it; what it received holds one entry per sending connection,
/// however often that connection renames, so flooding it takes as many connections as entries.
#[derive(Debug, Default)]
pub struct Partners {
    sent: VecDeque<(String, MemberId)>,
    received: VecDeque<(String, MemberId)>,
}

/// What a member's memory says about a private message to a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recall {
    /// No exchange with anyone by this name remembered, or with this very connection.
    Fine,
    /// The name belonged to another connection at the last exchange.
    Changed,
}

impl Partners {
    /// Checks a message to `key`, now held by `id`, and remembers `id` behind it either way:
    /// after one refusal, sending again reaches the new holder.
    pub fn check(&mut self, key: &str, id: MemberId) -> Recall {
        let sent = remember(&mut self.sent, key, id, false);
        let received = take(&mut self.received, key);
        match sent.or(received) {
            Some(known) if known != id => Recall::Changed,
            _ => Recall::Fine,
        }
    }

    /// Remembers that `key`, held by `id`, wrote to this member.
    pub fn note(&mut self, key: &str, id: MemberId) {
        remember(&mut self.received, key, id, true);
    }
}

/// Removes `key`'s entry from `list`, returning the connection it named.
fn take(list: &mut VecDeque<(String, MemberId)>, key: &str) -> Option<MemberId> {
    let at = list.iter().position(|(k, _)| k == key)?;
    list.remove(at).map(|(_, known)| known)
}

/// Makes `key` → `id` the most recent entry of `list` (dropping the least recent past
/// [`MAX_PARTNERS`]), and, with `one_per_id`, any older entry for the same connection; returns
/// what `key` was before.
fn remember(
    list: &mut VecDeque<(String, MemberId)>,
    key: &str,
    id: MemberId,
    one_per_id: bool,
) -> Option<MemberId> {
    let before = take(list, key);
    if one_per_id {
        list.retain(|&(_, known)| known != id);
    }
    if list.len() == MAX_PARTNERS {
        list.pop_front();
    }
    list.push_back((key.to_owned(), id));
    before
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_held_by_another_connection_is_noticed_once() {
        let mut p = Partners::default();
        assert_eq!(p.check("alice", 1), Recall::Fine);
        assert_eq!(p.check("alice", 1), Recall::Fine);
        assert_eq!(p.check("alice", 7), Recall::Changed);
        assert_eq!(p.check("alice", 7), Recall::Fine);
    }

    #[test]
    fn the_least_recent_partner_is_forgotten_first() {
        let mut p = Partners::default();
        for id in 0..MAX_PARTNERS as u64 {
            p.check(&format!("n{id}"), id);
        }
        // Talking to n0 again makes it the most recent, so n1 goes next.
        p.check("n0", 0);
        p.check("new", 999);
        assert_eq!(p.check("n0", 5), Recall::Changed);
        assert_eq!(p.check("n1", 5), Recall::Fine);
        assert!(p.sent.len() <= MAX_PARTNERS);
    }

    #[test]
    fn others_writing_cannot_push_out_whom_a_member_wrote_to() {
        let mut p = Partners::default();
        p.check("bob", 2);
        // Mallory writes under 200 names from one connection, then 200 connections write.
        for i in 0..200 {
            p.note(&format!("m{i}"), 3);
        }
        assert_eq!(p.received.len(), 1, "one entry per connection");
        for i in 0..200 {
            p.note(&format!("x{i}"), 100 + i);
        }
        assert!(p.received.len() <= MAX_PARTNERS);
        // bob left; whoever holds the name now is not who alice wrote to.
        assert_eq!(p.check("bob", 3), Recall::Changed);
    }

    #[test]
    fn a_reply_is_checked_against_who_wrote() {
        let mut p = Partners::default();
        p.note("carol", 4);
        assert_eq!(p.check("carol", 9), Recall::Changed);
        assert_eq!(p.check("carol", 9), Recall::Fine);
    }
}
