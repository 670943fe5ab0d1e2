//! A room: its members (the fan-out list), its topic and its bounded history of events. The
//! hub owns every room under its one lock.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use super::event::{Event, MemberId, Render, MAX_FORMATS};
use super::member::Member;
pub use super::modes::{Mode, Modes, Silenced, Stamps, Standing};
use super::names::{nick_key, Mask};

/// Rooms are numbered for the hub's maps: a chat line looks its room up by number, not by
/// hashing a name.
pub type RoomId = u64;

/// Where every line-protocol user starts, and where `/leave` goes. Never removed.
pub const LOBBY: &str = "lobby";
pub const LOBBY_ID: RoomId = 0;

/// Rooms kept after their last member left because they hold history. Without a bound, one
/// client could create rooms one message at a time until memory ran out; past it the room
/// that has been empty longest is forgotten.
pub const MAX_IDLE_ROOMS: usize = 1000;

/// Arrivals and departures announced one by one per room per presence period, whatever the
/// room's size; past it they are counted into the period's summary. Without it, a loop that
/// connects and leaves as fast as it can turns every join and leave into a line for every
/// member of a small room, faster than the server can write them, until honest readers'
/// queues fill and they are cut off.
pub const PRESENCE_NOTICES_PER_PERIOD: u32 = 30;

/// Bans (or mutes) one room keeps at most: each is checked against everyone who enters (or
/// speaks), so the list is bounded like everything one client can grow.
pub const MAX_LISTED: usize = 100;

/// An entry of a room's ban or mute list: the mask, who set it and when (IRC's 367).
#[derive(Debug, Clone)]
pub struct Listed {
    pub mask: Arc<str>,
    matcher: Mask,
    pub by: Arc<str>,
    pub at: SystemTime,
}

/// Entries are the same when they say the same (the matcher follows from the mask).
impl PartialEq for Listed {
    fn eq(&self, other: &Self) -> bool {
        (&self.mask, &self.by, self.at) == (&other.mask, &other.by, other.at)
    }
}

impl Listed {
    pub fn new(mask: &str, by: &str, at: SystemTime) -> Listed {
        Listed {
            mask: mask.into(),
            matcher: Mask::new(mask),
            by: by.into(),
            at,
        }
    }

    /// Whether this entry names `who` (`nick!user@host`).
    pub fn matches(&self, who: &str) -> bool {
        self.matcher.matches(who)
    }
}

/// What a room keeps besides its topic and flags, in the store as one record: its bans, its
/// mutes, and the registered accounts that operate it (an account made operator regains the
/// standing whenever it comes back, after a restart too; a nickname nobody registered loses
/// it on leaving, since anyone may take that name next).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lists {
    pub bans: Vec<Listed>,
    pub mutes: Vec<Listed>,
    pub operators: Vec<Arc<str>>,
}

#[derive(Debug, Clone)]
pub struct Topic {
    pub text: Arc<str>,
    pub by: Arc<str>,
    pub at: SystemTime,
}

#[derive(Debug)]
pub struct Room {
    /// As first written by whoever created it.
    pub name: Arc<str>,
    /// The fan-out list: a chat line walks this vector and nothing else. Each member's index
    /// here is kept in the hub's member record so leaving is a `swap_remove`. Changed only
    /// through [`Room::add_member`] and [`Room::remove_member`], which keep `slots` in step.
    pub members: Vec<Arc<Member>>,
    pub topic: Option<Topic>,
    /// How many members of each format are here, so a room of one protocol (the usual case)
    /// fans out with no per-member format lookup. Kept with `slots` by [`Room::add_member`],
    /// [`Room::remove_member`] and [`Room::change_slot`], which the hub calls under its lock
    /// whenever a member enters, leaves or changes format ([`crate::core::Hub::set_format`]).
    formats_here: [u32; MAX_FORMATS],
    /// Each member's format slot, index for index with `members`: a room of several formats
    /// fans out reading this dense array instead of loading each member's own (atomic) format
    /// field.
    slots: Vec<u8>,
    /// Members who may change the room's modes and, while it is topic-locked, its topic:
    /// whoever entered the room when it was empty (as IRC gives a new channel's creator `@`),
    /// and whoever an operator made one. The lobby has none, and a room whose operators all
    /// left has an open topic, so no room is stuck with a topic nobody may change.
    pub operators: Vec<MemberId>,
    /// Members an operator gave a voice (IRC `+v`): a standing shown in member lists.
    pub voiced: Vec<MemberId>,
    /// Masks that may neither enter nor speak here, at most [`MAX_LISTED`].
    pub bans: Vec<Listed>,
    /// Masks that may be here but not speak, at most [`MAX_LISTED`].
    pub mutes: Vec<Listed>,
    /// Registered accounts that operate the room, whether or not they are here, at most
    /// [`MAX_LISTED`]: whoever comes in proved as one of them is an operator.
    pub op_accounts: Vec<Arc<str>>,
    pub modes: Modes,
    /// On a cluster, when the topic and each flag were last set, so that changes made on two
    /// nodes at once end the same everywhere (docs/CLUSTER.md, "Topics and modes").
    pub stamps: Stamps,
    /// Members here who ignore someone ([`Member::ignoring`]): while it is 0 a line fans out
    /// without looking at anyone's ignore list. Kept by the hub, under its lock.
    pub ignorers: u32,
    pub created: SystemTime,
    /// Kept events, oldest first, each with the footprint it was counted at (renderings added
    /// later are not counted, so it is what was added that is taken away).
    history: VecDeque<(Arc<Event>, usize)>,
    /// The sum of the footprints in `history`.
    pub history_bytes: usize,
    /// Messages ever sent here, retained or not.
    pub messages: u64,
    /// Counts how often the room has emptied, so a stale entry in the hub's idle list cannot
    /// evict a room that has been re-entered and left again since.
    pub emptied: u64,
    /// Arrivals and departures not announced one by one because the room was too big; told
    /// to the room in the next presence summary.
    quiet_arrivals: u32,
    quiet_departures: u32,
    /// Notices this room may still announce one by one in this presence period.
    notices_left: u32,
}

impl Room {
    pub fn new(name: &str) -> Room {
        Room {
            name: name.into(),
            members: Vec::new(),
            topic: None,
            operators: Vec::new(),
            voiced: Vec::new(),
            bans: Vec::new(),
            mutes: Vec::new(),
            op_accounts: Vec::new(),
            modes: Modes::NEW,
            stamps: Stamps::default(),
            ignorers: 0,
            formats_here: [0; MAX_FORMATS],
            slots: Vec::new(),
            created: SystemTime::now(),
            history: VecDeque::new(),
            history_bytes: 0,
            messages: 0,
            emptied: 0,
            quiet_arrivals: 0,
            quiet_departures: 0,
            notices_left: PRESENCE_NOTICES_PER_PERIOD,
        }
    }

    pub fn standing(&self, id: MemberId) -> Standing {
        Standing {
            op: self.operators.contains(&id),
            voice: self.voiced.contains(&id),
        }
    }

    /// Whether `id` may set the topic now; `elsewhere`: people on other nodes of the cluster
    /// are in the room, whose operators this node does not know, so a room without one here
    /// is not taken for a room whose operators all left.
    pub fn may_set_topic(&self, id: MemberId, elsewhere: bool) -> bool {
        !self.modes.topic_lock
            || (self.operators.is_empty() && !elsewhere)
            || self.operators.contains(&id)
    }

    /// Whether the room holds anything worth keeping once nobody is in it: history, a
    /// topic, or bans and mutes (forgetting those would lift them).
    pub fn worth_keeping(&self) -> bool {
        self.has_history()
            || self.topic.is_some()
            || !self.bans.is_empty()
            || !self.mutes.is_empty()
            || !self.op_accounts.is_empty()
    }

    /// The lists as the store keeps them.
    pub fn lists(&self) -> Lists {
        Lists {
            bans: self.bans.clone(),
            mutes: self.mutes.clone(),
            operators: self.op_accounts.clone(),
        }
    }

    /// Takes the lists the store kept.
    pub fn restore_lists(&mut self, lists: Lists) {
        self.bans = lists.bans;
        self.mutes = lists.mutes;
        self.op_accounts = lists.operators;
    }

    /// Makes `account` one of the room's operating accounts; true if it was not.
    pub fn add_op_account(&mut self, account: Arc<str>) -> bool {
        if self.operated_by(&account) || self.op_accounts.len() >= MAX_LISTED {
            return false;
        }
        self.op_accounts.push(account);
        true
    }

    /// Takes `account` off the room's operating accounts; true if it was there.
    pub fn remove_op_account(&mut self, account: &str) -> bool {
        let before = self.op_accounts.len();
        self.op_accounts
            .retain(|a| !a.eq_ignore_ascii_case(account));
        self.op_accounts.len() != before
    }

    /// Whether `account` (any case) operates the room.
    pub fn operated_by(&self, account: &str) -> bool {
        self.op_accounts
            .iter()
            .any(|a| a.eq_ignore_ascii_case(account))
    }

    /// Whether a ban names `who` (`nick!user@host`).
    pub fn bans(&self, who: &str) -> bool {
        self.bans.iter().any(|b| b.matches(who))
    }

    /// Why member `id`, shown as `who` (`nick!user@host`, built only if a list is not
    /// empty), may not speak here, if it may not. Operators always may; a voice lifts the
    /// moderation, not a ban or a mute.
    pub fn silenced(&self, id: MemberId, who: impl FnOnce() -> String) -> Option<Silenced> {
        if self.bans.is_empty() && self.mutes.is_empty() && !self.modes.moderated {
            return None;
        }
        if self.operators.contains(&id) {
            return None;
        }
        if !self.bans.is_empty() || !self.mutes.is_empty() {
            let who = who();
            if self.bans(&who) {
                return Some(Silenced::Banned);
            }
            if self.mutes.iter().any(|m| m.matches(&who)) {
                return Some(Silenced::Muted);
            }
        }
        (self.modes.moderated && !self.voiced.contains(&id)).then_some(Silenced::Moderated)
    }

    /// Queues `event` for every member, except `sender` unless it asked for its own messages
    /// back (echo), and returns how many others it was queued for. A full queue kicks its
    /// owner, whose session does the leaving outside the hub's lock.
    pub fn fan_out(
        &self,
        event: &Event,
        formats: &[&'static dyn Render],
        sender: Option<MemberId>,
    ) -> usize {
        // Who is speaking, when someone here ignores someone and this is something said:
        // each member that ignores anyone is then asked whether it ignores the speaker.
        let speaker = match &event.from {
            Some(from) if self.ignorers > 0 && event.is_said() => {
                Some((from.id, nick_key(&from.nick)))
            }
            _ => None,
        };
        if let (Some(slot), None) = (self.only_format(), &speaker) {
            let bytes = event.rendered(formats, slot);
            if bytes.is_empty() {
                return 0;
            }
            return self
                .members
                .iter()
                .map(|member| usize::from(push_to(member, bytes, sender)))
                .sum();
        }
        // Several formats (or an ignorer): each present format's rendering is fetched once, up
        // front (`None` for a format that does not show this event), and each member's slot
        // comes from the dense `slots` array, so the loop is the one-format loop plus an
        // indexed load.
        let mut rendered: [Option<&Bytes>; MAX_FORMATS] = [None; MAX_FORMATS];
        for (slot, &n) in self.formats_here.iter().enumerate() {
            if n > 0 {
                rendered[slot] = Some(event.rendered(formats, slot)).filter(|b| !b.is_empty());
            }
        }
        let mut delivered = 0;
        for (member, &slot) in self.members.iter().zip(&self.slots) {
            let Some(bytes) = rendered[usize::from(slot)] else {
                continue;
            };
            if let Some((id, key)) = &speaker {
                if member.ignores(*id, key) {
                    continue;
                }
            }
            delivered += usize::from(push_to(member, bytes, sender));
        }
        delivered
    }

    /// Appends `member` (of format `slot`) to the fan-out list; returns its index there.
    pub fn add_member(&mut self, member: Arc<Member>, slot: usize) -> usize {
        self.formats_here[slot] += 1;
        self.members.push(member);
        self.slots.push(u8::try_from(slot).expect("format slot"));
        self.members.len() - 1
    }

    /// Takes the member at `index` out of the fan-out list by `swap_remove`; returns the
    /// member that moved into `index`, if any, whose index the caller must update.
    pub fn remove_member(&mut self, index: usize) -> Option<&Arc<Member>> {
        let slot = self.slots.swap_remove(index);
        self.formats_here[usize::from(slot)] -= 1;
        self.members.swap_remove(index);
        self.members.get(index)
    }

    /// The member at `index` is rendered with format `slot` from now on.
    pub fn change_slot(&mut self, index: usize, slot: usize) {
        let old = std::mem::replace(
            &mut self.slots[index],
            u8::try_from(slot).expect("format slot"),
        );
        self.formats_here[usize::from(old)] -= 1;
        self.formats_here[slot] += 1;
    }

    /// The one format every member here has, if they all have the same.
    fn only_format(&self) -> Option<usize> {
        let mut present = self.formats_here.iter().enumerate().filter(|(_, &n)| n > 0);
        match (present.next(), present.next()) {
            (Some((slot, _)), None) => Some(slot),
            _ => None,
        }
    }

    /// Whether the next arrival or departure is announced to everyone: up to `limit` members
    /// (0 = always, summaries off) and [`PRESENCE_NOTICES_PER_PERIOD`] a period; otherwise
    /// only formats that need every arrival (IRC's member lists) hear it one by one.
    fn announce_each(&mut self, limit: usize) -> bool {
        if limit == 0 {
            return true;
        }
        if self.members.len() > limit || self.notices_left == 0 {
            return false;
        }
        self.notices_left -= 1;
        true
    }

    /// Someone arrived or left. While [`Room::announce_each`] allows, every member hears it;
    /// otherwise the rest hear it counted in the next summary, since announcing every join to
    /// everyone costs N²/2 lines as a room fills, and churn can make any room's notices
    /// outrun its readers.
    pub fn presence(
        &mut self,
        event: &Event,
        formats: &[&'static dyn Render],
        limit: usize,
        arrived: bool,
        except: MemberId,
    ) {
        if self.announce_each(limit) {
            self.fan_out(event, formats, Some(except));
            return;
        }
        for member in &self.members {
            if member.id != except && formats[member.format()].every_presence() {
                member.deliver(event, formats);
            }
        }
        if arrived {
            self.quiet_arrivals += 1;
        } else {
            self.quiet_departures += 1;
        }
    }

    /// Like [`Room::presence`] for an event that may reach a member through several rooms
    /// (a departure from the server): each member gets it once.
    pub fn presence_once(&mut self, event: &Event, formats: &[&'static dyn Render], limit: usize) {
        let everyone = self.announce_each(limit);
        for member in &self.members {
            if everyone || formats[member.format()].every_presence() {
                member.deliver_once(event, formats);
            }
        }
        if !everyone {
            self.quiet_departures += 1;
        }
    }

    /// The arrivals and departures counted since the last summary, or `None` if there were
    /// none (or nobody is left to tell); the next presence period starts with a full
    /// allowance of notices.
    pub fn take_presence(&mut self) -> Option<(u32, u32)> {
        self.notices_left = PRESENCE_NOTICES_PER_PERIOD;
        let counts = (self.quiet_arrivals, self.quiet_departures);
        self.quiet_arrivals = 0;
        self.quiet_departures = 0;
        (counts.0 + counts.1 > 0 && !self.members.is_empty()).then_some(counts)
    }

    /// Counts a message and keeps it, dropping the oldest beyond `retain`.
    pub fn record(&mut self, event: &Arc<Event>, retain: usize) {
        self.messages += 1;
        if retain == 0 {
            return;
        }
        while self.history.len() >= retain {
            self.drop_oldest();
        }
        let cost = event.footprint();
        self.history_bytes += cost;
        self.history.push_back((event.clone(), cost));
    }

    /// Replaces the kept events with `events` (oldest first), the newest `retain` of them;
    /// counts as messages sent here those `fresh` ones it had not kept before.
    pub fn replace_history(&mut self, events: Vec<Arc<Event>>, retain: usize, fresh: u64) {
        self.messages += fresh;
        self.history.clear();
        self.history_bytes = 0;
        let skip = events.len().saturating_sub(retain);
        for event in events.into_iter().skip(skip) {
            let cost = event.footprint();
            self.history_bytes += cost;
            self.history.push_back((event, cost));
        }
    }

    /// Forgets the oldest kept event, if any; returns the bytes that freed.
    pub fn drop_oldest(&mut self) -> usize {
        let Some((_, cost)) = self.history.pop_front() else {
            return 0;
        };
        self.history_bytes -= cost;
        cost
    }

    /// The id of the oldest kept event: the hub's history budget evicts across rooms by it.
    pub fn oldest_id(&self) -> Option<u64> {
        self.history.front().map(|(e, _)| e.id)
    }

    pub fn has_history(&self) -> bool {
        !self.history.is_empty()
    }

    /// The last `n` events, newest first.
    pub fn recent(&self, n: usize) -> impl Iterator<Item = &Arc<Event>> {
        self.history.iter().rev().take(n).map(|(e, _)| e)
    }

    /// Every kept event, oldest first.
    pub fn history(&self) -> impl DoubleEndedIterator<Item = &Arc<Event>> + ExactSizeIterator {
        self.history.iter().map(|(e, _)| e)
    }
}

/// Queues `bytes` for `member`, the sender only if it asked for its own messages back; true
/// when it was queued for someone other than the sender (a delivery).
#[inline]
fn push_to(member: &Member, bytes: &Bytes, sender: Option<MemberId>) -> bool {
    if Some(member.id) == sender {
        if member.echo() {
            let _ = member.push(bytes.clone());
        }
        false
    } else {
        member.push(bytes.clone()).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::{Kind, Target};

    #[test]
    fn retention_drops_the_oldest() {
        let mut room = Room::new("r");
        for i in 0..5 {
            let event = Event::new(
                i,
                Target::Room(room.name.clone()),
                None,
                Kind::Message(i.to_string().into()),
            );
            room.record(&event, 3);
        }
        assert_eq!(room.messages, 5);
        let kept: Vec<u64> = room.recent(10).map(|e| e.id).collect();
        assert_eq!(kept, [4, 3, 2]);
        let counted: usize = room.history().map(|e| e.footprint()).sum();
        assert_eq!(room.history_bytes, counted);
        assert_eq!(room.oldest_id(), Some(2));
        let mut off = Room::new("r");
        off.record(&Event::new(0, Target::Peers, None, Kind::Joined), 0);
        assert!(!off.has_history());
        assert_eq!(off.messages, 1);
    }
}
