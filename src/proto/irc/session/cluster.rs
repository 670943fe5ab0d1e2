//! IRC on a cluster (docs/CLUSTER.md): the nickname claimed across every node at
//! registration, a room's history read from the stream before JOIN, the other nodes' people
//! in NAMES, WHO, WHOIS and LIST (their host and server are their node), and PRIVMSG to
//! them. Without `--cluster` each of these does nothing or finds nobody.

use futures_util::future::join_all;

use super::{Session, MAX_TARGETS};
use crate::cluster::{remote_identity, Person};
use crate::core::event::{Kind, Target};
use crate::proto::irc::render::channel;
use crate::proto::line::words;

/// Someone on another node: the node's name, and what its heartbeat says of them.
pub(super) type Remote = (String, Person);

impl Session {
    /// Claims the nickname asked for across the cluster before it is taken here (the
    /// broker's `lc_nicks`, as the line protocol's prompt does). False, with 433 said and the
    /// name forgotten, when someone on any node has it or the broker cannot confirm it now.
    /// True at once on a server alone.
    pub(super) async fn claim_wanted(&mut self) -> bool {
        let (Some(cluster), Some(wanted)) = (self.conn.shared.cluster.clone(), self.wanted.clone())
        else {
            return true;
        };
        let refusal = match cluster.claim(&wanted, self.conn.member.id).await {
            Ok(true) => return true,
            Ok(false) => "Nickname is already in use".to_owned(),
            Err(e) => format!("The cluster cannot confirm that nickname now ({e}); try again"),
        };
        self.wanted = None;
        self.reply(433, &[&wanted, &refusal]);
        false
    }

    /// Gives back a name [`Session::claim_wanted`] claimed and the hub then refused.
    pub(super) fn release_wanted(&self, wanted: &str) {
        if let Some(cluster) = &self.conn.shared.cluster {
            cluster.release(wanted, self.conn.member.id);
        }
    }

    /// `JOIN` on a cluster: each room this node does not follow has its history read from
    /// the stream first (at most [`crate::cluster::LOAD_WAIT`], all the channels of one JOIN
    /// at once, so a broker away costs one wait, not one per channel), so CHATHISTORY covers
    /// what every node said in it; each room stays followed until this connection is in it.
    pub(super) async fn join_across(&mut self, targets: &str) {
        let Some(cluster) = self.conn.shared.cluster.clone() else {
            return;
        };
        let targets: Vec<&str> = targets.split(',').take(MAX_TARGETS).collect();
        let holds = join_all(targets.iter().map(|target| async {
            match target.starts_with('#') {
                true => cluster.prepare(target, self.conn.member.id).await,
                false => None,
            }
        }))
        .await;
        for (target, hold) in targets.into_iter().zip(holds) {
            self.enter(target);
            self.conn.shared.hub.settle(target);
            if hold.is_some_and(|h| !h.loaded) {
                let words = words::history_unread(target);
                let text = words.trim_end();
                let text = text.strip_prefix("Server: ").unwrap_or(text);
                self.server_line("NOTICE", &[self.me(), text]);
            }
        }
    }

    /// The nickname as the hub has it now: on a cluster the server itself may rename this
    /// connection (the conflict rule after an outage), and replies must follow.
    pub(super) fn follow_rename(&mut self) {
        if self.conn.shared.cluster.is_none() || !self.conn.member.take_renamed() {
            return;
        }
        if let Some(identity) = self.conn.shared.hub.identity(self.conn.member.id) {
            self.nick = Some(identity.nick.clone());
        }
    }

    /// WHOIS of someone on another node: their node as host and server, their channels, and
    /// how they came.
    pub(super) fn whois_remote(&self, (node, person): &Remote) {
        let nick = person.nick.as_str();
        self.reply(311, &[nick, nick, node, "*", ""]);
        let rooms: Vec<String> = person.rooms.iter().map(|r| channel(r)).collect();
        if !rooms.is_empty() {
            self.reply(319, &[nick, &rooms.join(" ")]);
        }
        self.reply(312, &[nick, node, "a linechat node of this cluster"]);
        if let Some(away) = &person.away {
            self.reply(301, &[nick, away]);
        }
        if !person.proto.is_empty() {
            let how = format!("is connected over {} to {node}", person.proto);
            self.reply(320, &[nick, &how]);
        }
        self.reply(318, &[nick, "End of /WHOIS list"]);
    }

    /// Someone on another node called `nick` (nobody here is), if the cluster lists them in
    /// `room` (`#dev` or `dev`): whom an operator's `KICK` or `MODE +o/+v` here may name,
    /// applied by their own node (docs/CLUSTER.md, "Topics and modes"). `None` on a server
    /// alone, or when `nick` is someone here.
    pub(super) fn elsewhere_in(&self, nick: &str, room: &str) -> Option<Result<Remote, ()>> {
        if self.conn.shared.hub.find(nick).is_some() {
            return None;
        }
        let remote = self.remote_named(nick)?;
        let room = room.strip_prefix('#').unwrap_or(room);
        let there = remote.1.rooms.iter().any(|r| r.eq_ignore_ascii_case(room));
        Some(if there { Ok(remote) } else { Err(()) })
    }

    /// The other nodes' people in `room` (`#dev` or `dev`).
    pub(super) fn remote_in(&self, room: &str) -> Vec<Remote> {
        let room = room.strip_prefix('#').unwrap_or(room);
        self.remote_people()
            .into_iter()
            .filter(|(_, p)| p.rooms.iter().any(|r| r.eq_ignore_ascii_case(room)))
            .collect()
    }

    /// The person on another node called `nick` (case-blind), if any.
    pub(super) fn remote_named(&self, nick: &str) -> Option<Remote> {
        self.conn.shared.remote_person(self.conn.member.id, nick)
    }

    /// Everyone on the other nodes, as their heartbeats and the arrivals heard since say,
    /// without the secret rooms this connection is not in.
    pub(super) fn remote_people(&self) -> Vec<Remote> {
        self.conn.shared.remote_people(self.conn.member.id)
    }

    /// `kind` to `target`, whom nobody here is called, sent to the node that lists them
    /// (with the sender's own copy for `echo-message`). False when no node does.
    pub(super) fn private_across(&self, target: &str, kind: Kind) -> bool {
        let shared = &self.conn.shared;
        let (Some(cluster), Some((node, person))) = (&shared.cluster, self.remote_named(target))
        else {
            return false;
        };
        let Some(from) = shared.hub.identity(self.conn.member.id) else {
            return false;
        };
        if cluster.private(&from, &person.nick, &kind).is_none() {
            return false;
        }
        shared.metrics.count_message(&self.conn.member.stats, 1);
        // As on one server: a NOTICE is answered by nothing, a PRIVMSG by the away message.
        let away = person
            .away
            .as_ref()
            .filter(|_| !matches!(kind, Kind::Notice(_)));
        if self.has("echo-message") {
            let to = remote_identity(&person.nick, &node);
            self.show(&shared.hub.unsent(Target::Member(to), Some(from), kind));
        }
        if let Some(away) = away {
            self.reply(301, &[&person.nick, away]);
        }
        true
    }
}
