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

/// Recent private partners: nickname key → the member id behind it at the last exchange.
#[derive(Debug, Default)]
pub struct Partners(VecDeque<(String, MemberId)>);

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
        let before = self.note(key, id);
        match before {
            Some(known) if known != id => Recall::Changed,
            _ => Recall::Fine,
        }
    }

    /// Remembers that `key` is `id` now, as the most recent partner; returns what was
    /// remembered before.
    pub fn note(&mut self, key: &str, id: MemberId) -> Option<MemberId> {
        let before = self
            .0
            .iter()
            .position(|(k, _)| k == key)
            .and_then(|at| self.0.remove(at))
            .map(|(_, known)| known);
        if self.0.len() == MAX_PARTNERS {
            self.0.pop_front();
        }
        self.0.push_back((key.to_owned(), id));
        before
    }
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
            p.note(&format!("n{id}"), id);
        }
        // Talking to n0 again makes it the most recent, so n1 goes next.
        p.note("n0", 0);
        p.note("new", 999);
        assert_eq!(p.check("n0", 5), Recall::Changed);
        assert_eq!(p.check("n1", 5), Recall::Fine);
        assert!(p.0.len() <= MAX_PARTNERS);
    }
}
