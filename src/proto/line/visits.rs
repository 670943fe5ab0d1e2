//! Where a netcat user has been: for each room it left, the id of the event that moved it out.
//! Event ids grow with every event the hub makes, and a member sees everything said in its room
//! while it is there, so coming back, only history above that id is new to it.

use crate::core::names::room_name;

/// Rooms remembered per connection; past this the one left longest ago is forgotten (and shows
/// its full scrollback again, as on a first visit).
const MAX_REMEMBERED: usize = 64;

/// A short list, searched in full: at most [`MAX_REMEMBERED`] entries, and it lives in every
/// netcat session, so an empty one must cost as little as possible.
#[derive(Debug, Default)]
pub struct Visits {
    /// Room key and the id of the event that took the user out of it.
    left_at: Vec<(String, u64)>,
}

impl Visits {
    /// Notes that the user left `room` no later than event `id`.
    pub fn left(&mut self, room: &str, id: u64) {
        let Ok((_, key)) = room_name(room) else {
            return;
        };
        if let Some(entry) = self.left_at.iter_mut().find(|(k, _)| *k == key) {
            entry.1 = id;
            return;
        }
        if self.left_at.len() >= MAX_REMEMBERED {
            // The one left longest ago: marks only grow.
            let oldest = (0..self.left_at.len()).min_by_key(|&i| self.left_at[i].1);
            if let Some(i) = oldest {
                self.left_at.swap_remove(i);
            }
        }
        self.left_at.push((key, id));
    }

    /// The mark left in `room`, if the user has been there before.
    pub fn mark(&self, room: &str) -> Option<u64> {
        let (_, key) = room_name(room).ok()?;
        self.left_at
            .iter()
            .find(|(k, _)| *k == key)
            .map(|&(_, id)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_case_insensitively_and_forgets_the_oldest() {
        let mut visits = Visits::default();
        assert_eq!(visits.mark("dev"), None);
        visits.left("Dev", 7);
        assert_eq!(visits.mark("#dev"), Some(7));
        visits.left("dev", 9);
        assert_eq!(visits.mark("dev"), Some(9));
        for i in 0..MAX_REMEMBERED as u64 {
            visits.left(&format!("r{i}"), 100 + i);
        }
        assert_eq!(visits.mark("dev"), None, "the oldest went first");
        assert_eq!(visits.mark("r0"), Some(100));
        assert_eq!(visits.left_at.len(), MAX_REMEMBERED);
    }
}
