//! One IRC connection: capability negotiation and registration, then the commands a modern
//! client uses, each answered with the numerics RFC 2812 and the IRCv3 specifications give.
//! Everything that happens in rooms comes from the hub as events, rendered by
//! [`super::render`]; what is said here goes to the hub, which renders it for every protocol.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use time::macros::format_description;
use time::OffsetDateTime;
use tokio::time::Instant;

use super::message::{self, write, Message, ParseError, Tag, MAX_BODY_LEN};
use super::render::{channel, numeric, source, write_event};
use crate::context::Shared;
use crate::core::event::{Event, Identity, Kind, Target};
use crate::core::hub::{
    Arrival, IgnoreError, MemberInfo, PrivateError, Renamed, Standing, Whither,
};
use crate::core::member;
use crate::core::modes::Silenced;
use crate::core::names::{validate_nick, Mask, NickError, RoomError, MAX_NICK, MAX_ROOM};
use crate::core::room::Mode;
use crate::core::LeaveReason;
use crate::net::gate::Pass;
use crate::net::stream::Stream;
use crate::proto::codec::{disguise, foreign_protocol, strip_disguise, ForeignProtocol, Frame};
use crate::proto::conn::{cost, Conn, Input};
use crate::proto::line::{cmd, words};
use crate::proto::oper::KillError;
use crate::proto::rename::RenameError;

/// Accounts over IRC: SASL PLAIN, `PASS`, and registered nicknames.
mod account;
/// What IRC does differently on a cluster: claims, history reads, other nodes' people.
mod cluster;

/// The longest line read: a body of 512 bytes with its CRLF, behind the most tag data a client
/// may send. Longer lines are answered with 417 without being buffered.
const MAX_IRC_LINE: usize = MAX_BODY_LEN + 2 + message::MAX_CLIENT_TAG_DATA_LEN + 2;

/// The longest `user@host` an IRC member can have, less the `@`: `~` and 10 characters of
/// `USER`, and an IPv6 address in full (39) with the `0` put before one starting with `:`.
const MAX_USER_HOST: usize = 11 + 40;

/// Longest topic accepted (ISUPPORT `TOPICLEN`).
const TOPICLEN: usize = 390;

/// Longest away message (`AWAYLEN`).
const AWAYLEN: usize = 200;

/// Channels one JOIN or PART may name, so one line cannot make the server do unbounded work.
const MAX_TARGETS: usize = 10;

/// Changes that name someone (`+o`, `+v`) one MODE may make (ISUPPORT `MODES`); more are
/// left out, so one line cannot make the server look up hundreds of nicknames.
const MAX_MODE_ARGS: usize = 4;

/// Messages one CHATHISTORY request returns at most (`CHATHISTORY=` in ISUPPORT).
const CHATHISTORY_LIMIT: usize = 100;

/// The service nickname that answers the line protocol's own commands.
const SERVICE: &str = "linechat";

/// Capabilities offered, in `CAP LS` order.
const CAPS: &[&str] = &[
    "account-notify",
    "account-tag",
    "away-notify",
    "batch",
    "cap-notify",
    "draft/chathistory",
    "echo-message",
    "message-tags",
    "multi-prefix",
    "sasl",
    "server-time",
];

/// 432's text: why, in the words netcat users get (the web client shows it as it is).
fn erroneous(e: &NickError) -> String {
    let why = words::nick_error(e);
    format!("Erroneous nickname: {}", why.trim_start_matches("Error: "))
}

/// Serves one accepted IRC connection until it ends.
pub fn run(
    shared: Arc<Shared>,
    stream: Stream,
    peer: SocketAddr,
    id: u64,
    pass: Pass,
) -> impl Future<Output = ()> {
    let kind = member::Kind {
        protocol: if stream.web() { "web" } else { "irc" },
        tls: stream.tls(),
    };
    let conn = Conn::start(
        shared.clone(),
        stream,
        peer,
        id,
        kind,
        crate::proto::IRC,
        MAX_IRC_LINE,
        pass,
    );
    let mut session = Session {
        server: shared.config.server_name.clone(),
        conn,
        nick: None,
        wanted: None,
        user: None,
        caps: BTreeSet::new(),
        negotiating: false,
        quit_message: None,
        next_batch: 0,
        password: None,
        account: None,
        sasl: None,
        pending: None,
    };
    // The stream went into the connection before the future was made, so the session's
    // state (kept while the connection lives) never holds it.
    async move {
        let reason = session.serve().await;
        let registered = session.nick.clone();
        if registered.is_some() {
            shared
                .hub
                .leave(id, reason, session.quit_message.as_deref());
        }
        let why = match (reason, &session.quit_message) {
            (LeaveReason::Quit, Some(m)) => format!("Quit: {m}"),
            (LeaveReason::Quit, None) => "Quit".to_owned(),
            (LeaveReason::SlowConsumer, _) => "SendQ exceeded".to_owned(),
            (LeaveReason::IdleTimeout, _) => "Ping timeout".to_owned(),
            // Only a TLS ClientHello on this plaintext port ends a session as not chat.
            (LeaveReason::NotChat, _) => {
                "this port speaks plain IRC, not TLS; connect without TLS, or to the ircs:// port"
                    .to_owned()
            }
            (reason, _) => reason.explanation().unwrap_or("Quit").to_owned(),
        };
        let host = peer.ip().to_canonical().to_string();
        let farewell = format!("ERROR :Closing link: ({host}) [{why}]\r\n");
        let Session { conn, .. } = session;
        conn.finish(reason, registered.as_deref(), Some(Bytes::from(farewell)))
            .await;
    }
}

struct Session {
    server: String,
    conn: Conn,
    /// Set once registered.
    nick: Option<Arc<str>>,
    /// The NICK given before registration.
    wanted: Option<String>,
    /// `USER`'s user name and real name.
    user: Option<(String, String)>,
    caps: BTreeSet<&'static str>,
    /// Between `CAP LS`/`REQ` and `CAP END`, registration waits.
    negotiating: bool,
    quit_message: Option<String>,
    next_batch: u64,
    /// What `PASS` gave, checked against `--server-password` when registration completes.
    password: Option<String>,
    /// The account this connection proved (SASL PLAIN, or `PASS` for a registered nickname).
    account: Option<String>,
    /// Base64 gathered between `AUTHENTICATE PLAIN` and its last chunk.
    sasl: Option<String>,
    /// Work that waits (for a hash, or for the cluster), done by [`Session::serve`] after the
    /// line that asked.
    pending: Option<account::Pending>,
}

impl Session {
    /// The nickname replies are addressed to: `*` before registration.
    fn me(&self) -> &str {
        match (&self.nick, &self.wanted) {
            (Some(nick), _) => nick,
            (None, Some(wanted)) => wanted,
            (None, None) => "*",
        }
    }

    fn send(&self, bytes: BytesMut) {
        self.conn.send(bytes.freeze());
    }

    fn reply(&self, code: u16, params: &[&str]) {
        let mut out = BytesMut::new();
        numeric(&mut out, &self.server, code, self.me(), params);
        self.send(out);
    }

    /// A line from the server itself: `:server COMMAND params`.
    fn server_line(&self, command: &str, params: &[&str]) {
        let mut out = BytesMut::new();
        write(&mut out, &[], Some(&self.server), command, params);
        self.send(out);
    }

    fn has(&self, cap: &str) -> bool {
        self.caps.contains(cap)
    }

    fn tagged(&self) -> bool {
        self.has("server-time") || self.has("message-tags")
    }

    /// Queues `event` in this connection's own format (its own JOIN, PART, NICK, echo).
    fn show(&self, event: &Event) {
        let member = &self.conn.member;
        member.deliver(event, self.conn.shared.hub.formats());
    }

    async fn serve(&mut self) -> LeaveReason {
        let shared = self.conn.shared.clone();
        let deadline = Instant::now() + shared.config.register_timeout;
        loop {
            let registered = self.nick.is_some();
            let input = self
                .conn
                .reader
                .next((!registered).then_some(deadline))
                .await;
            let line = match input {
                Input::End(reason) => return reason,
                Input::RegisterTimeout => {
                    self.server_line(
                        "NOTICE",
                        &[self.me(), "No registration within the time allowed"],
                    );
                    return LeaveReason::RegisterTimeout;
                }
                Input::IdleWarning => {
                    self.server_line("PING", &[&self.server.clone()]);
                    continue;
                }
                Input::IdleTimeout => return LeaveReason::IdleTimeout,
                Input::Line(Frame::TooLong, _) => {
                    self.reply(417, &["Input line was too long"]);
                    continue;
                }
                Input::Line(Frame::Line(line), taken_at) => (line, taken_at),
            };
            let (bytes, taken_at) = line;
            if !registered && foreign_protocol(&bytes) == Some(ForeignProtocol::Tls) {
                tracing::info!("TLS client on a plaintext IRC port; closing");
                return LeaveReason::NotChat;
            }
            let Ok(text) = std::str::from_utf8(&bytes) else {
                self.fail_utf8(&bytes);
                continue;
            };
            let msg = match message::parse(text) {
                Ok(msg) => msg,
                Err(ParseError::Empty) => continue,
                Err(ParseError::InputTooLong | ParseError::TagsTooLong) => {
                    self.reply(417, &["Input line was too long"]);
                    continue;
                }
                Err(ParseError::BadCommand) => {
                    let word = text.split(' ').find(|w| !w.starts_with(['@', ':']));
                    self.reply(421, &[word.unwrap_or("?"), "Unknown command"]);
                    continue;
                }
                Err(_) => continue,
            };
            shared.metrics.commands.fetch_add(1, Relaxed);
            let done = if registered {
                self.command(&msg, taken_at)
            } else {
                self.register(&msg)
            };
            if let Some(reason) = done {
                return reason;
            }
            if let Some(pending) = self.pending.take() {
                // Boxed: the waits behind it (a hash, the broker's claim, a room's history
                // from the stream) would otherwise be part of every idle connection's future.
                Box::pin(self.finish(pending)).await;
            }
        }
    }

    /// A line that is not UTF-8 (`UTF8ONLY`): refused, as IRCv3's UTF8ONLY says.
    fn fail_utf8(&self, bytes: &[u8]) {
        let lossy = String::from_utf8_lossy(bytes);
        let command = message::parse(&lossy)
            .ok()
            .map_or_else(|| "*".to_owned(), |m| m.command_upper().into_owned());
        self.server_line(
            "FAIL",
            &[
                &command,
                "INVALID_UTF8",
                "Message rejected, your IRC software MUST use UTF-8",
            ],
        );
    }

    /// Before registration: CAP, NICK, USER, PASS, PING and QUIT; anything else is 451.
    fn register(&mut self, msg: &Message<'_>) -> Option<LeaveReason> {
        let command = msg.command_upper();
        match &*command {
            "CAP" => self.cap(msg),
            "AUTHENTICATE" => self.authenticate(msg),
            "PASS" => match msg.param(0) {
                Some(pass) => self.password = Some(pass.to_owned()),
                None => self.reply(461, &["PASS", "Not enough parameters"]),
            },
            "NICK" => match msg.param(0).filter(|n| !n.is_empty()) {
                None => self.reply(431, &["No nickname given"]),
                Some(nick) => match validate_nick(nick) {
                    Err(e) => self.reply(432, &[nick, &erroneous(&e)]),
                    Ok(()) if self.conn.shared.hub.find(nick).is_some() => {
                        self.reply(433, &[nick, "Nickname is already in use"])
                    }
                    Ok(()) => self.wanted = Some(nick.to_owned()),
                },
            },
            "USER" => {
                if msg.params.len() < 4 || msg.params[0].is_empty() || msg.params[3].is_empty() {
                    self.reply(461, &["USER", "Not enough parameters"]);
                } else {
                    let user: String = msg.params[0]
                        .chars()
                        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                        .take(10)
                        .collect();
                    let user = if user.is_empty() {
                        "user".to_owned()
                    } else {
                        user
                    };
                    self.user = Some((format!("~{user}"), msg.params[3].to_owned()));
                }
            }
            "PING" => self.pong(msg),
            "PONG" => {}
            "QUIT" => {
                self.quit_message = msg.param(0).map(|m| strip_disguise(m).into_owned());
                return Some(LeaveReason::Quit);
            }
            _ => self.reply(451, &["You have not registered"]),
        }
        if !self.negotiating {
            if let (Some(_), Some(_)) = (&self.wanted, &self.user) {
                let wanted = self.conn.shared.live.get().server_password.clone();
                if wanted.is_some() && wanted != self.password {
                    self.reply(464, &["Password incorrect"]);
                    return Some(LeaveReason::Quit);
                }
                // After a registered nickname is proved: see `account::Session::finish`.
                self.pending = Some(account::Pending::Complete);
            }
        }
        None
    }

    fn complete_registration(&mut self) {
        let Some(wanted) = self.wanted.clone() else {
            return;
        };
        let (user, realname) = self.user.clone().unwrap_or_default();
        let shared = self.conn.shared.clone();
        match shared
            .hub
            .register(&self.conn.member, Some(&wanted), Some(&user), &realname)
        {
            Ok(identity) => {
                tracing::info!(nick = %identity.nick, "joined");
                crate::proto::ignore::restore(&shared, &self.conn.member);
                self.conn.registered();
                self.nick = Some(identity.nick.clone());
                self.welcome(&identity);
            }
            Err(NickError::Taken(_)) => {
                self.release_wanted(&wanted);
                self.wanted = None;
                self.reply(433, &[&wanted, "Nickname is already in use"]);
            }
            Err(e) => {
                self.release_wanted(&wanted);
                self.wanted = None;
                self.reply(432, &[&wanted, &erroneous(&e)]);
            }
        }
    }

    /// 001–005, LUSERS and the MOTD.
    fn welcome(&self, me: &Identity) {
        let server = &self.server;
        let version = concat!("linechat-", env!("CARGO_PKG_VERSION"));
        self.reply(
            1,
            &[&format!(
                "Welcome to the linechat IRC network, {}",
                source(me)
            )],
        );
        self.reply(
            2,
            &[&format!("Your host is {server}, running version {version}")],
        );
        let started = OffsetDateTime::from(self.conn.shared.metrics.started)
            .format(format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
            ))
            .unwrap_or_default();
        self.reply(3, &[&format!("This server was created {started}")]);
        self.reply(4, &[server, version, "i", "bnostv", "bov"]);
        self.isupport();
        self.lusers();
        self.motd();
    }

    fn isupport(&self) {
        let tokens = [
            "AWAYLEN=200".to_owned(),
            "CASEMAPPING=ascii".to_owned(),
            format!("CHANNELLEN={}", MAX_ROOM + 1),
            "CHANLIMIT=#:".to_owned(),
            "CHANMODES=bq,,,imnst".to_owned(),
            "CHANTYPES=#".to_owned(),
            format!("CHATHISTORY={CHATHISTORY_LIMIT}"),
            "ELIST=".to_owned(),
            format!("MODES={MAX_MODE_ARGS}"),
            "NETWORK=linechat".to_owned(),
            format!("NICKLEN={MAX_NICK}"),
            "PREFIX=(ov)@+".to_owned(),
            format!("SILENCE={}", crate::core::member::MAX_IGNORED),
            format!(
                "TARGMAX=JOIN:{MAX_TARGETS},PART:{MAX_TARGETS},NAMES:{MAX_TARGETS},PRIVMSG:4,\
                 NOTICE:4,WHOIS:1,KICK:{MAX_MODE_ARGS}"
            ),
            format!("TOPICLEN={TOPICLEN}"),
            "UTF8ONLY".to_owned(),
            "WHOX".to_owned(),
        ];
        for chunk in tokens.chunks(12) {
            let mut params: Vec<&str> = chunk.iter().map(String::as_str).collect();
            params.push("are supported by this server");
            self.reply(5, &params);
        }
    }

    fn lusers(&self) {
        let census = self.conn.shared.hub.census();
        let (users, visible) = (census.members, census.members - census.invisible);
        self.reply(
            251,
            &[&format!(
                "There are {visible} users and {} invisible on 1 servers",
                census.invisible
            )],
        );
        self.reply(252, &[&census.opers.to_string(), "operator(s) online"]);
        self.reply(254, &[&census.rooms.to_string(), "channels formed"]);
        self.reply(255, &[&format!("I have {users} clients and 0 servers")]);
        // The optional current/max numbers are left out: the maximum is not tracked.
        self.reply(265, &[&format!("Current local users: {users}")]);
        self.reply(266, &[&format!("Current global users: {users}")]);
    }

    /// `--motd`'s text as it reads now (a reload may have changed it), else a built-in one;
    /// an empty file is no MOTD (422).
    fn motd(&self) {
        const BUILT_IN: &[&str] = &[
            "One hub for every client: the people here may be on netcat, IRC or the web.",
            "/msg linechat help lists the server's own commands.",
        ];
        let config = self.conn.shared.live.get();
        let lines: Vec<&str> = match &config.motd {
            Some(lines) => lines.iter().map(String::as_str).collect(),
            None => BUILT_IN.to_vec(),
        };
        if lines.is_empty() {
            self.reply(422, &["MOTD File is missing"]);
            return;
        }
        self.reply(375, &[&format!("- {} Message of the day - ", self.server)]);
        for line in lines {
            self.reply(372, &[&format!("- {line}")]);
        }
        self.reply(376, &["End of /MOTD command."]);
    }

    /// `REHASH`: a server operator reloads the configuration (what SIGHUP does). 382 names
    /// what was read; a NOTICE says what changed, or why nothing did.
    fn rehash(&self) {
        if !self.conn.member.is_oper() {
            self.reply(481, &["Permission Denied- You're not an IRC operator"]);
            return;
        }
        let shared = &self.conn.shared;
        // One IRC parameter: no spaces, no leading ':'.
        let source = shared
            .reloader
            .as_ref()
            .map(|r| r.source().split_whitespace().collect::<Vec<_>>().join("_"))
            .map(|s| s.trim_start_matches(':').to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "-".to_owned());
        tracing::info!(by = self.me(), "REHASH: reloading the configuration");
        // As SIGHUP does: a certificate that cannot be used is logged and the one in use
        // stays (`Certs::reload`).
        if let Some(certs) = &shared.tls {
            let _ = certs.reload();
        }
        match shared.reload() {
            Ok(report) => {
                self.reply(382, &[&source, "Rehashing"]);
                self.server_line("NOTICE", &[self.me(), &format!("Reloaded: {report}")]);
            }
            Err(e) => {
                self.server_line(
                    "NOTICE",
                    &[self.me(), &format!("REHASH failed, nothing changed: {e}")],
                );
            }
        }
    }

    fn pong(&self, msg: &Message<'_>) {
        match msg.param(0) {
            Some(token) => self.server_line("PONG", &[&self.server.clone(), token]),
            None => self.reply(409, &["No origin specified"]),
        }
    }

    fn cap(&mut self, msg: &Message<'_>) {
        let sub = msg.param(0).unwrap_or("").to_ascii_uppercase();
        let me = self.me().to_owned();
        match sub.as_str() {
            "LS" => {
                if self.nick.is_none() {
                    self.negotiating = true;
                }
                if msg
                    .param(1)
                    .is_some_and(|v| v.parse::<u32>().unwrap_or(0) >= 302)
                {
                    self.caps.insert("cap-notify");
                }
                self.server_line("CAP", &[&me, "LS", &CAPS.join(" ")]);
            }
            "LIST" => {
                let list: Vec<&str> = self.caps.iter().copied().collect();
                self.server_line("CAP", &[&me, "LIST", &list.join(" ")]);
            }
            "REQ" => {
                if self.nick.is_none() {
                    self.negotiating = true;
                }
                let asked = msg.param(1).unwrap_or("");
                let mut changes = Vec::new();
                let mut ok = true;
                for word in asked.split(' ').filter(|w| !w.is_empty()) {
                    let (off, name) = match word.strip_prefix('-') {
                        Some(name) => (true, name),
                        None => (false, word),
                    };
                    match CAPS.iter().find(|c| **c == name) {
                        Some(cap) => changes.push((off, *cap)),
                        None => ok = false,
                    }
                }
                if !ok || changes.is_empty() {
                    self.server_line("CAP", &[&me, "NAK", asked]);
                    return;
                }
                for (off, cap) in changes {
                    if off {
                        self.caps.remove(cap);
                    } else {
                        self.caps.insert(cap);
                    }
                }
                self.apply_caps();
                self.server_line("CAP", &[&me, "ACK", asked]);
            }
            "END" => {
                self.negotiating = false;
            }
            _ => self.reply(410, &[msg.param(0).unwrap_or("*"), "Invalid CAP command"]),
        }
    }

    /// Makes the member's format and flags follow the capabilities.
    fn apply_caps(&self) {
        let member = &self.conn.member;
        let slot = match (self.tagged(), self.has("account-tag")) {
            (false, false) => crate::proto::IRC,
            (true, false) => crate::proto::IRC_TAGGED,
            (false, true) => crate::proto::IRC_ACCOUNT,
            (true, true) => crate::proto::IRC_TAGGED_ACCOUNT,
        };
        self.conn.shared.hub.set_format(member, slot);
        member.set_echo(self.has("echo-message"));
        member.set_wants_away(self.has("away-notify"));
        member.set_wants_account(self.has("account-notify"));
    }

    /// After registration.
    fn command(&mut self, msg: &Message<'_>, taken_at: std::time::Instant) -> Option<LeaveReason> {
        self.follow_rename();
        let command = msg.command_upper();
        match &*command {
            "PING" => self.pong(msg),
            "PONG" => {}
            "CAP" => self.cap(msg),
            "AUTHENTICATE" => self.authenticate(msg),
            "PASS" | "USER" => self.reply(462, &["You may not reregister"]),
            "NICK" => self.nick(msg),
            "JOIN" => self.join(msg),
            "PART" => self.part(msg),
            "PRIVMSG" | "NOTICE" => self.say(msg, command == "NOTICE", taken_at),
            "TOPIC" => self.topic(msg),
            "NAMES" => {
                self.conn.reader.charge(cost::WHO);
                self.names(msg)
            }
            "LIST" => {
                self.conn.reader.charge(cost::ROOMS);
                self.list()
            }
            "WHO" => {
                self.conn.reader.charge(cost::WHO);
                self.who(msg)
            }
            "WHOIS" => self.whois(msg),
            "WHOWAS" => {
                let nick = msg.param(0).unwrap_or("*");
                self.reply(406, &[nick, "There was no such nickname"]);
                self.reply(369, &[nick, "End of WHOWAS"]);
            }
            "MODE" => self.mode(msg),
            "KICK" => self.kick(msg),
            "INVITE" => self.invite(msg),
            "OPER" => {
                let (Some(name), Some(password)) = (msg.param(0), msg.param(1)) else {
                    self.reply(461, &["OPER", "Not enough parameters"]);
                    return None;
                };
                // Checked off the runtime thread (a hashed password takes tens of ms).
                self.pending = Some(account::Pending::Oper {
                    name: name.to_owned(),
                    password: password.to_owned(),
                });
            }
            "KILL" => self.kill(msg),
            "SILENCE" => self.silence(msg),
            "REHASH" => self.rehash(),
            "AWAY" => self.away(msg),
            "ISON" => {
                let hub = &self.conn.shared.hub;
                let on: Vec<String> = msg
                    .params
                    .iter()
                    .flat_map(|p| p.split(' '))
                    .filter_map(|n| {
                        hub.find(n)
                            .map(|m| m.nick().to_string())
                            .or_else(|| self.remote_named(n).map(|(_, p)| p.nick))
                    })
                    .collect();
                self.reply(303, &[&on.join(" ")]);
            }
            "USERHOST" => {
                let hub = &self.conn.shared.hub;
                let found: Vec<String> = msg
                    .params
                    .iter()
                    .take(5)
                    .filter_map(|n| {
                        let here = hub.find(n).map(|m| {
                            let away = if m.away.is_some() { '-' } else { '+' };
                            format!(
                                "{}={away}{}@{}",
                                m.identity.nick, m.identity.user, m.identity.host
                            )
                        });
                        // Elsewhere: their user is their nickname and their host their node.
                        here.or_else(|| {
                            self.remote_named(n)
                                .map(|(node, p)| format!("{0}=+{0}@{node}", p.nick))
                        })
                    })
                    .collect();
                self.reply(302, &[&found.join(" ")]);
            }
            "TIME" => {
                let now = OffsetDateTime::now_utc()
                    .format(format_description!(
                        "[weekday] [month repr:long] [day] [year] -- [hour]:[minute]:[second] UTC"
                    ))
                    .unwrap_or_default();
                self.reply(391, &[&self.server.clone(), &now]);
            }
            "VERSION" => {
                let version = concat!("linechat-", env!("CARGO_PKG_VERSION"));
                self.reply(351, &[version, &self.server.clone(), crate::GIT_COMMIT]);
                self.isupport();
            }
            "MOTD" => self.motd(),
            "LUSERS" => self.lusers(),
            // Each reads up to --history-retain events, from the store when memory let
            // them go: charged like netcat's /history.
            "CHATHISTORY" => {
                self.conn.reader.charge(cost::HISTORY);
                self.chathistory(msg)
            }
            "QUIT" => {
                self.quit_message = msg.param(0).map(|m| strip_disguise(m).into_owned());
                return Some(LeaveReason::Quit);
            }
            other => self.reply(421, &[other, "Unknown command"]),
        }
        None
    }

    fn nick(&mut self, msg: &Message<'_>) {
        let Some(new) = msg.param(0).filter(|n| !n.is_empty()) else {
            self.reply(431, &["No nickname given"]);
            return;
        };
        if Some(new) == self.nick.as_deref() {
            return;
        }
        let shared = self.conn.shared.clone();
        if shared.accounts.is_registered(new) && !self.proved(new) {
            self.reply(433, &[new, account::REGISTERED]);
            return;
        }
        if shared.cluster.is_some() {
            // The broker gives the new name first (docs/CLUSTER.md, "Renames"), which waits.
            self.pending = Some(account::Pending::Rename(new.to_owned()));
            return;
        }
        let renamed = shared.hub.rename(self.conn.member.id, new);
        self.answer_rename(new, renamed.map_err(Into::into));
    }

    /// Says what came of `NICK new`: the NICK line everyone sharing a channel gets, or why not.
    fn answer_rename(&mut self, new: &str, renamed: Result<Renamed, RenameError>) {
        match renamed {
            Ok(renamed) => {
                tracing::info!(old = %renamed.old.nick, new = %renamed.new.nick, "nick change");
                self.show(&renamed.event);
                self.nick = Some(renamed.new.nick.clone());
            }
            Err(RenameError::Nick(NickError::Taken(_))) => {
                self.reply(433, &[new, "Nickname is already in use"])
            }
            Err(RenameError::Nick(e)) => self.reply(432, &[new, &erroneous(&e)]),
            Err(RenameError::Unsure(e)) => self.reply(
                433,
                &[
                    new,
                    &format!("The cluster cannot confirm that nickname now ({e}); try again"),
                ],
            ),
        }
    }

    fn join(&mut self, msg: &Message<'_>) {
        let Some(targets) = msg.param(0).filter(|t| !t.is_empty()) else {
            self.reply(461, &["JOIN", "Not enough parameters"]);
            return;
        };
        if targets == "0" {
            let shared = self.conn.shared.clone();
            for room in shared.hub.rooms_of(self.conn.member.id) {
                if let Ok(event) = shared
                    .hub
                    .part(self.conn.member.id, Whither::Named(&room), None)
                {
                    self.show(&event);
                }
            }
            return;
        }
        if self.conn.shared.cluster.is_some() {
            // Each room's history is read from the other nodes first, which waits.
            self.pending = Some(account::Pending::Join(targets.to_owned()));
            return;
        }
        for target in targets.split(',').take(MAX_TARGETS) {
            self.enter(target);
        }
    }

    /// Enters the channel `target`, showing it (its topic and names) as IRC does.
    fn enter(&mut self, target: &str) {
        if !target.starts_with('#') {
            self.reply(403, &[target, "No such channel"]);
            return;
        }
        let shared = self.conn.shared.clone();
        let member = self.conn.member.clone();
        let formats = shared.hub.formats();
        let server = self.server.clone();
        let me = self.me().to_owned();
        let multi = self.has("multi-prefix");
        // Asked before the hub's lock is taken: the cluster's list has its own.
        let remote: Vec<String> = self
            .remote_in(target)
            .into_iter()
            .map(|(_, p)| remote_prefixed(&p, target, multi))
            .collect();
        let joined = shared
            .hub
            .enter(member.id, target, Arrival::Entered, |view| {
                member.deliver(view.event, formats);
                let name = channel(view.name());
                let mut out = BytesMut::new();
                if let Some(topic) = view.topic() {
                    numeric(&mut out, &server, 332, &me, &[&name, &topic.text]);
                    let at = unix(topic.at).to_string();
                    numeric(&mut out, &server, 333, &me, &[&name, &topic.by, &at]);
                }
                let mut nicks: Vec<String> = view.members().map(|m| prefixed(&m, multi)).collect();
                nicks.extend(remote);
                let secret = view.modes().secret;
                names_lines(&mut out, &server, &me, &name, secret, &nicks);
                numeric(&mut out, &server, 366, &me, &[&name, "End of /NAMES list"]);
                let _ = member.push(out.freeze());
            });
        match joined {
            Ok(()) | Err(RoomError::AlreadyThere(_)) => {}
            Err(RoomError::InvalidName) => self.reply(479, &[target, "Illegal channel name"]),
            Err(RoomError::Banned(room)) => self.reply(
                474,
                &[&channel(&room), "Cannot join channel (+b) - you are banned"],
            ),
            Err(RoomError::InviteOnly(room)) => self.reply(
                473,
                &[
                    &channel(&room),
                    "Cannot join channel (+i) - you must be invited",
                ],
            ),
            // ERR_TOOMANYCHANNELS: the nearest numeric clients know for "not now".
            Err(e @ RoomError::TooManyCreated { .. }) => {
                self.reply(405, &[target, &format!("You have {e}")])
            }
            Err(e) => self.reply(403, &[target, &e.to_string()]),
        }
    }

    fn part(&mut self, msg: &Message<'_>) {
        let Some(targets) = msg.param(0).filter(|t| !t.is_empty()) else {
            self.reply(461, &["PART", "Not enough parameters"]);
            return;
        };
        let reason = msg.param(1).map(strip_disguise);
        let reason = reason.as_deref().filter(|r| !r.is_empty());
        for target in targets.split(',').take(MAX_TARGETS) {
            let shared = self.conn.shared.clone();
            match room_of(target).and_then(|room| {
                shared
                    .hub
                    .part(self.conn.member.id, Whither::Named(room), reason)
            }) {
                Ok(event) => self.show(&event),
                Err(RoomError::NotThere(_)) => {
                    self.reply(442, &[target, "You're not on that channel"])
                }
                Err(_) => self.reply(403, &[target, "No such channel"]),
            }
        }
    }

    fn say(&mut self, msg: &Message<'_>, notice: bool, taken_at: std::time::Instant) {
        let command = if notice { "NOTICE" } else { "PRIVMSG" };
        let Some(targets) = msg.param(0).filter(|t| !t.is_empty()) else {
            if !notice {
                self.reply(411, &[&format!("No recipient given ({command})")]);
            }
            return;
        };
        let Some(text) = msg.param(1).filter(|t| !t.is_empty()) else {
            if !notice {
                self.reply(412, &["No text to send"]);
            }
            return;
        };
        if let Some(c) = disguise(text) {
            if !notice {
                self.refuse_disguise(command, c);
            }
            return;
        }
        let shared = self.conn.shared.clone();
        for target in targets.split(',').take(4) {
            if !target.eq_ignore_ascii_case(SERVICE) {
                if let Some(over) = self.relayed_too_long(command, target, text) {
                    self.reply(417, &[&over]);
                    continue;
                }
            }
            let kind = || {
                if notice {
                    Kind::Notice(text.into())
                } else if let Some(action) = text
                    .strip_prefix("\u{1}ACTION ")
                    .map(|a| a.strip_suffix('\u{1}').unwrap_or(a))
                {
                    Kind::Action(action.into())
                } else {
                    Kind::Message(text.into())
                }
            };
            if target.starts_with('#') {
                let said = room_of(target).and_then(|room| {
                    shared
                        .hub
                        .say(self.conn.member.id, Whither::Named(room), kind())
                });
                match said {
                    Ok((_, delivered)) => {
                        shared
                            .metrics
                            .count_message(&self.conn.member.stats, delivered);
                        shared.metrics.record_fanout(taken_at.elapsed());
                    }
                    Err(_) if notice => {}
                    Err(RoomError::NotThere(_)) => {
                        self.reply(404, &[target, "Cannot send to channel"])
                    }
                    Err(RoomError::Silenced { room, why }) => {
                        let why = match why {
                            Silenced::Banned => "Cannot send to channel (+b) - you are banned",
                            Silenced::Muted => "Cannot send to channel (+q) - you are muted",
                            Silenced::Moderated => {
                                "Cannot send to channel (+m) - only operators and voices speak"
                            }
                        };
                        self.reply(404, &[&channel(&room), why])
                    }
                    Err(_) => self.reply(403, &[target, "No such channel"]),
                }
                continue;
            }
            if target.eq_ignore_ascii_case(SERVICE) {
                if !notice {
                    self.service(text);
                }
                continue;
            }
            match shared.hub.private(self.conn.member.id, target, kind()) {
                Ok(event) => {
                    let to_self =
                        matches!(&event.target, Target::Member(to) if to.id == self.conn.member.id);
                    // To oneself the message itself is the echo, and no one else received it.
                    shared
                        .metrics
                        .count_message(&self.conn.member.stats, usize::from(!to_self));
                    if self.has("echo-message") && !to_self {
                        self.show(&event);
                    }
                    if !notice {
                        if let Some(away) = shared.hub.find(target).and_then(|m| m.away) {
                            self.reply(301, &[target, &away]);
                        }
                    }
                }
                // Said even to a NOTICE: the server, not a client, answers, and the sender
                // must know that what it sent went nowhere.
                Err(PrivateError::Changed(name)) => {
                    let text = words::changed_partner(&name);
                    let text = text.strip_prefix("Error: ").unwrap_or(&text);
                    self.server_line("NOTICE", &[self.me(), text]);
                }
                // Nobody here by that name: someone on another node may have it.
                Err(PrivateError::NoSuchNick(_)) if self.private_across(target, kind()) => {}
                Err(_) if notice => {}
                Err(PrivateError::NoSuchNick(_)) => {
                    self.reply(401, &[target, "No such nick/channel"])
                }
            }
        }
    }

    /// Why `text` to `target` cannot be relayed, if it cannot: with the sender's
    /// `:nick!user@host` in front, the line IRC readers would get must fit IRC's 512 bytes
    /// (510 without the CRLF; tags have their own budget). Cutting it would lose the end
    /// for every reader without the sender knowing, so the sender is told instead, with
    /// how much text fits. Lines that fit whatever the user and host are never look the
    /// sender up.
    fn relayed_too_long(&self, command: &str, target: &str, text: &str) -> Option<String> {
        // `:` `!` `@` and the three separators (` `, ` `, ` :`): 7 bytes.
        let fixed = 7 + self.me().len() + command.len() + target.len();
        if fixed + text.len() <= MAX_BODY_LEN - MAX_USER_HOST {
            return None;
        }
        let me = self.conn.shared.hub.find(self.me())?.identity;
        let overhead = fixed + me.user.len() + me.host.len();
        let len = overhead + text.len();
        (len > MAX_BODY_LEN).then(|| {
            format!(
                "Message too long: relayed as :{}!{}@{} {command} {target} :... it would be \
                 {len} bytes, over IRC's 510 (512 with CRLF); at most {} bytes of text fit",
                me.nick,
                me.user,
                me.host,
                MAX_BODY_LEN.saturating_sub(overhead)
            )
        })
    }

    /// Text with a character that could disguise it (a right-to-left override, a line
    /// separator, a zero-width space) is refused, as the line protocol refuses it; the IRCv3
    /// standard reply says why.
    fn refuse_disguise(&self, command: &str, c: char) {
        let why = format!(
            "Message rejected: it contains U+{:04X}, an invisible or direction-changing \
             character that can disguise text",
            c as u32
        );
        self.server_line("FAIL", &[command, "INVALID_TEXT", &why]);
    }

    /// `/msg linechat help|time|ping|metrics|throughput`: the server's own commands, answered
    /// with NOTICEs from the service nick.
    fn service(&mut self, text: &str) {
        let shared = &self.conn.shared;
        let word = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let member = &self.conn.member;
        let report = match word.as_str() {
            "time" => cmd::server_time(),
            "ping" => cmd::reports::ping(shared, member, None),
            "metrics" => {
                self.conn.reader.charge(cost::METRICS);
                cmd::reports::metrics(shared)
            }
            "throughput" => cmd::reports::throughput(shared, member, self.me()),
            _ => {
                "I answer: help, time, ping, metrics, throughput (the netcat commands of the same \
                  names).\nRooms are channels (#lobby); JOIN, PART, TOPIC, WHO and PRIVMSG work as \
                  in any IRC client."
                    .to_owned()
            }
        };
        let reply: Vec<&str> = report.lines().filter(|l| !l.is_empty()).collect();
        let src = format!("{SERVICE}!{SERVICE}@{}", self.server);
        for line in reply {
            let mut out = BytesMut::new();
            write(&mut out, &[], Some(&src), "NOTICE", &[self.me(), line]);
            self.send(out);
        }
    }

    fn topic(&mut self, msg: &Message<'_>) {
        let Some(target) = msg.param(0).filter(|t| !t.is_empty()) else {
            self.reply(461, &["TOPIC", "Not enough parameters"]);
            return;
        };
        let shared = self.conn.shared.clone();
        let id = self.conn.member.id;
        match msg.param(1) {
            Some(text) => {
                if let Some(c) = disguise(text) {
                    self.refuse_disguise("TOPIC", c);
                    return;
                }
                let text: String = text.chars().take(TOPICLEN).collect();
                match room_of(target)
                    .and_then(|room| shared.hub.set_topic(id, Whither::Named(room), &text))
                {
                    Ok(_) => {}
                    Err(RoomError::NotThere(_)) => {
                        self.reply(442, &[target, "You're not on that channel"])
                    }
                    Err(RoomError::NotOperator(_)) => {
                        self.reply(482, &[target, "You're not channel operator"])
                    }
                    Err(_) => self.reply(403, &[target, "No such channel"]),
                }
            }
            None => {
                match room_of(target).and_then(|room| shared.hub.topic(id, Whither::Named(room))) {
                    Ok((name, Some(topic))) => {
                        let name = channel(&name);
                        self.reply(332, &[&name, &topic.text]);
                        self.reply(333, &[&name, &topic.by, &unix(topic.at).to_string()]);
                    }
                    Ok((name, None)) => self.reply(331, &[&channel(&name), "No topic is set"]),
                    Err(_) => self.reply(403, &[target, "No such channel"]),
                }
            }
        }
    }

    fn names(&mut self, msg: &Message<'_>) {
        let shared = self.conn.shared.clone();
        let Some(targets) = msg.param(0).filter(|t| !t.is_empty()) else {
            self.reply(366, &["*", "End of /NAMES list"]);
            return;
        };
        // Each channel's 353s, then one 366 naming the targets as given (so a client can tell
        // which request ended); a channel not found (or secret) just has no 353.
        let multi = self.has("multi-prefix");
        let mut out = BytesMut::new();
        for target in targets.split(',').take(MAX_TARGETS) {
            let found = room_of(target).and_then(|room| {
                shared
                    .hub
                    .room_members(self.conn.member.id, Whither::Named(room))
            });
            let remote = self.remote_in(target);
            let (chan, secret, mut nicks) = match found {
                Ok((room, members)) => {
                    let nicks: Vec<String> = members.iter().map(|m| prefixed(m, multi)).collect();
                    (channel(&room.name), room.modes.secret, nicks)
                }
                // A channel nobody here is in may have people on other nodes.
                Err(RoomError::NoSuchRoom(_)) if !remote.is_empty() => {
                    (target.to_owned(), false, Vec::new())
                }
                Err(_) => continue,
            };
            nicks.extend(
                remote
                    .iter()
                    .map(|(_, p)| remote_prefixed(p, target, multi)),
            );
            names_lines(&mut out, &self.server, self.me(), &chan, secret, &nicks);
        }
        numeric(
            &mut out,
            &self.server,
            366,
            self.me(),
            &[targets, "End of /NAMES list"],
        );
        self.send(out);
    }

    fn list(&mut self) {
        let mut rooms = self.conn.shared.hub.rooms(Some(self.conn.member.id));
        cmd::add_remote(&mut rooms, &self.remote_people());
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        self.reply(321, &["Channel", "Users  Name"]);
        for room in rooms.iter().filter(|r| r.members > 0) {
            let topic = room.topic.as_ref().map_or("", |t| &*t.text);
            self.reply(
                322,
                &[&channel(&room.name), &room.members.to_string(), topic],
            );
        }
        self.reply(323, &["End of /LIST"]);
    }

    /// `WHO <mask> [o][%fields[,token]]`: a channel's members (none for a secret channel the
    /// asker is not in), the user a nickname names, or everyone whose nickname, user name,
    /// host, real name or server the mask matches (`*`, `?`; `0` is everyone) except invisible
    /// users who share no channel with the asker. With `o`, server operators only.
    fn who(&mut self, msg: &Message<'_>) {
        let mask = msg.param(0).unwrap_or("*");
        let shared = self.conn.shared.clone();
        let (options, whox) = match msg.param(1) {
            Some(second) => match second.split_once('%') {
                Some((options, whox)) => (options, Some(whox)),
                None => (second, None),
            },
            None => ("", None),
        };
        let (fields, token) = match whox {
            Some(spec) => match spec.split_once(',') {
                Some((fields, token)) => (Some(fields), Some(token)),
                None => (Some(spec), None),
            },
            None => (None, None),
        };
        let me = self.conn.member.id;
        // Each member with the channel its row names ("*" for none) and its standing there.
        let rows: Vec<(String, MemberInfo)> = if mask.starts_with('#') {
            match room_of(mask).and_then(|room| shared.hub.room_members(me, Whither::Named(room))) {
                Ok((room, members)) => {
                    let chan = channel(&room.name);
                    members.into_iter().map(|m| (chan.clone(), m)).collect()
                }
                Err(_) => Vec::new(),
            }
        } else {
            let pattern = Mask::new(if mask == "0" { "*" } else { mask });
            match shared.hub.find(mask).filter(|_| !pattern.is_wild()) {
                // A nickname is no search: it finds its user even if invisible, shown in the
                // first channel of theirs the asker may see.
                Some(found) => {
                    let first = shared.hub.rooms_seen_by(found.member.id, me);
                    let (chan, standing) = first
                        .first()
                        .map_or(("*".to_owned(), Standing::default()), |(room, standing)| {
                            (channel(room), *standing)
                        });
                    vec![(chan, MemberInfo { standing, ..found })]
                }
                None => {
                    let server = self.server.as_str();
                    shared
                        .hub
                        .members_seen_by(me)
                        .into_iter()
                        .filter(|m| {
                            let id = &m.identity;
                            [&*id.nick, &*id.user, &*id.host, &*id.realname, server]
                                .into_iter()
                                .any(|field| pattern.matches(field))
                        })
                        .map(|m| ("*".to_owned(), m))
                        .collect()
                }
            }
        };
        // The other nodes' people the mask names, each with its row's channel.
        let remote: Vec<(String, cluster::Remote)> = if mask.starts_with('#') {
            let chan = rows
                .first()
                .map_or_else(|| mask.to_owned(), |(c, _)| c.clone());
            self.remote_in(mask)
                .into_iter()
                .map(|r| (chan.clone(), r))
                .collect()
        } else {
            // A nickname found here is nobody's elsewhere (names are the cluster's); a search
            // matches elsewhere by nickname and node.
            let pattern = Mask::new(if mask == "0" { "*" } else { mask });
            let found_here = !pattern.is_wild() && shared.hub.find(mask).is_some();
            self.remote_people()
                .into_iter()
                .filter(|_| !found_here)
                .filter(|(node, p)| [&*p.nick, node].into_iter().any(|f| pattern.matches(f)))
                .map(|r| ("*".to_owned(), r))
                .collect()
        };
        let opers_only = options.contains('o');
        let multi = self.has("multi-prefix");
        let now = Instant::now();
        let mut lines: Vec<WhoRow> = rows
            .iter()
            .filter(|(_, m)| !opers_only || m.member.is_oper())
            .map(|(chan, m)| WhoRow::local(chan, m, &self.server, multi, now))
            .collect();
        // Whether someone elsewhere is an operator is their node's to know.
        if !opers_only {
            lines.extend(
                remote
                    .iter()
                    .map(|(chan, r)| WhoRow::remote(chan, r, multi)),
            );
        }
        for row in &lines {
            let mut out = BytesMut::new();
            match fields {
                None => numeric(
                    &mut out,
                    &self.server,
                    352,
                    self.me(),
                    &[
                        &row.chan,
                        &row.user,
                        &row.host,
                        &row.server,
                        &row.nick,
                        &row.flags,
                        &format!("0 {}", row.realname),
                    ],
                ),
                Some(fields) => {
                    let mut params: Vec<String> = Vec::new();
                    for field in "tcuihsnfdlaor".chars().filter(|f| fields.contains(*f)) {
                        params.push(match field {
                            't' => token.unwrap_or("").to_owned(),
                            'c' => row.chan.clone(),
                            'u' => row.user.clone(),
                            'i' => row.ip.clone(),
                            'h' => row.host.clone(),
                            's' => row.server.clone(),
                            'n' => row.nick.clone(),
                            'f' => row.flags.clone(),
                            'd' => "0".to_owned(),
                            'l' => row.idle.clone(),
                            'a' => row.account.clone(),
                            'o' => "n/a".to_owned(),
                            _ => row.realname.clone(),
                        });
                    }
                    // Only the last parameter may be empty or spaced.
                    let last = params.len().saturating_sub(1);
                    for (i, p) in params.iter_mut().enumerate() {
                        if i < last && (p.is_empty() || p.contains(' ') || p.starts_with(':')) {
                            *p = "*".to_owned();
                        }
                    }
                    let params: Vec<&str> = params.iter().map(String::as_str).collect();
                    numeric(&mut out, &self.server, 354, self.me(), &params);
                }
            }
            self.send(out);
        }
        self.reply(315, &[mask, "End of WHO list"]);
    }

    fn whois(&mut self, msg: &Message<'_>) {
        let Some(nick) = msg.params.last().copied().filter(|n| !n.is_empty()) else {
            self.reply(431, &["No nickname given"]);
            return;
        };
        let shared = self.conn.shared.clone();
        let Some(found) = shared.hub.find(nick) else {
            if let Some(remote) = self.remote_named(nick) {
                return self.whois_remote(&remote);
            }
            self.reply(401, &[nick, "No such nick/channel"]);
            self.reply(318, &[nick, "End of /WHOIS list"]);
            return;
        };
        let id = &found.identity;
        self.reply(311, &[&id.nick, &id.user, &id.host, "*", &id.realname]);
        let multi = self.has("multi-prefix");
        let rooms: Vec<String> = shared
            .hub
            .rooms_seen_by(found.member.id, self.conn.member.id)
            .iter()
            .map(|(room, standing)| format!("{}{}", prefixes(*standing, multi), channel(room)))
            .collect();
        if !rooms.is_empty() {
            self.reply(319, &[&id.nick, &rooms.join(" ")]);
        }
        self.reply(312, &[&id.nick, &self.server.clone(), "linechat"]);
        if let Some(away) = &found.away {
            self.reply(301, &[&id.nick, away]);
        }
        let protocol = found.member.kind.protocol;
        self.reply(320, &[&id.nick, &format!("is connected over {protocol}")]);
        let stats = &found.member.stats;
        let idle = stats.idle(Instant::now()).as_secs().to_string();
        let signon = unix(SystemTime::now() - stats.connected_at.elapsed()).to_string();
        self.reply(
            317,
            &[&id.nick, &idle, &signon, "seconds idle, signon time"],
        );
        self.reply(318, &[&id.nick, "End of /WHOIS list"]);
    }

    fn mode(&mut self, msg: &Message<'_>) {
        let Some(target) = msg.param(0) else {
            self.reply(461, &["MODE", "Not enough parameters"]);
            return;
        };
        if target.starts_with('#') {
            self.channel_mode(target, msg);
            return;
        }
        let shared = self.conn.shared.clone();
        if !self.me().eq_ignore_ascii_case(target) {
            if shared.hub.find(target).is_some() {
                self.reply(502, &["Can't change mode for other users"]);
            } else {
                self.reply(401, &[target, "No such nick/channel"]);
            }
            return;
        }
        let member = self.conn.member.clone();
        match msg.param(1) {
            None => self.reply(221, &[if member.is_invisible() { "+i" } else { "+" }]),
            Some(change) => {
                let mut on = true;
                let mut applied = String::new();
                for c in change.chars() {
                    match c {
                        '+' => on = true,
                        '-' => on = false,
                        'i' if on != member.is_invisible() => {
                            member.set_invisible(on);
                            applied.push(if on { '+' } else { '-' });
                            applied.push('i');
                        }
                        'i' => {}
                        _ => {
                            self.reply(501, &["Unknown MODE flag"]);
                            return;
                        }
                    }
                }
                if !applied.is_empty() {
                    let me = self.me().to_owned();
                    let mut out = BytesMut::new();
                    write(&mut out, &[], Some(&me), "MODE", &[&me, &applied]);
                    self.send(out);
                }
            }
        }
    }

    /// `MODE #chan` reports the channel's modes, `MODE #chan b` its ban list and `MODE #chan
    /// q` its mute list; anything else is changes (`+t`, `-s`, `+o nick`, `+b mask`…), which
    /// the hub makes if the asker is an operator there and broadcasts to the channel as one
    /// MODE.
    fn channel_mode(&mut self, target: &str, msg: &Message<'_>) {
        let shared = self.conn.shared.clone();
        let id = self.conn.member.id;
        let Ok(room) = room_of(target).and_then(|room| shared.hub.room(id, Whither::Named(room)))
        else {
            self.reply(403, &[target, "No such channel"]);
            return;
        };
        let name = channel(&room.name);
        let Some(changes) = msg.param(1) else {
            let mut modes = String::from("+");
            // `n` first, then as version 2 first listed them (clients sort them anyway).
            let m = room.modes;
            for (on, letter) in [
                (true, 'n'),
                (m.topic_lock, 't'),
                (m.secret, 's'),
                (m.moderated, 'm'),
                (m.invite_only, 'i'),
            ] {
                if on {
                    modes.push(letter);
                }
            }
            self.reply(324, &[&name, &modes]);
            self.reply(329, &[&name, &unix(room.created).to_string()]);
            return;
        };
        let mut args = msg.params.iter().skip(2).copied();
        let mut on = true;
        let mut requests = Vec::new();
        let mut named = 0;
        for letter in changes.chars() {
            match letter {
                '+' => on = true,
                '-' => on = false,
                't' => requests.push(Mode::TopicLock(on)),
                's' => requests.push(Mode::Secret(on)),
                'm' => requests.push(Mode::Moderated(on)),
                'i' => requests.push(Mode::InviteOnly(on)),
                'o' | 'v' | 'b' | 'q' => {
                    let Some(who) = args.next() else {
                        match letter {
                            'b' => self.list_masks(&name, true),
                            'q' => self.list_masks(&name, false),
                            _ => self.reply(461, &["MODE", "Not enough parameters"]),
                        }
                        continue;
                    };
                    named += 1;
                    if named > MAX_MODE_ARGS {
                        continue;
                    }
                    if matches!(letter, 'o' | 'v')
                        && self.standing_elsewhere(target, letter, on, who)
                    {
                        continue;
                    }
                    requests.push(match letter {
                        'o' => Mode::Operator(on, who),
                        'v' => Mode::Voice(on, who),
                        'b' => Mode::Ban(on, who),
                        _ => Mode::Mute(on, who),
                    });
                }
                // No messages from outside (`n`) is how every room works; it cannot be turned off.
                'n' => {}
                other => self.reply(472, &[&other.to_string(), "is unknown mode char to me"]),
            }
        }
        if requests.is_empty() {
            return;
        }
        match shared
            .hub
            .change_modes(id, Whither::Named(target), &requests)
        {
            Ok(done) => {
                for refused in done.refused {
                    match refused {
                        RoomError::NotInRoom { nick, .. } => {
                            self.reply(441, &[&nick, &name, "They aren't on that channel"])
                        }
                        RoomError::NoSuchNick(nick) => {
                            self.reply(401, &[&nick, "No such nick/channel"])
                        }
                        RoomError::ListFull { limit, .. } => self.reply(
                            478,
                            &[
                                &name,
                                "*",
                                &format!("Channel list is full ({limit} entries)"),
                            ],
                        ),
                        // ERR_INVALIDMODEPARAM (modern IRC's numeric for a bad parameter).
                        RoomError::InvalidMask(mask) => {
                            self.reply(696, &[&name, "b", &mask, "Not a nick!user@host mask"])
                        }
                        _ => {}
                    }
                }
            }
            Err(RoomError::NotThere(_)) => self.reply(442, &[&name, "You're not on that channel"]),
            Err(RoomError::NotOperator(_)) => {
                self.reply(482, &[&name, "You're not channel operator"])
            }
            Err(_) => self.reply(403, &[target, "No such channel"]),
        }
    }

    /// `MODE #chan +o/+v who` for someone on another node: the change is told to the
    /// channel on every node and their own node applies it. False when `who` is not someone
    /// elsewhere (the hub's own change handles them, or says who is missing).
    fn standing_elsewhere(&mut self, target: &str, letter: char, on: bool, who: &str) -> bool {
        let Ok(room) = room_of(target) else {
            return false;
        };
        let name = channel(room);
        let person = match self.elsewhere_in(who, room) {
            None => return false,
            Some(Err(())) => {
                self.reply(441, &[who, &name, "They aren't on that channel"]);
                return true;
            }
            Some(Ok((_, person))) => person,
        };
        let nick: Arc<str> = person.nick.as_str().into();
        let change = match letter {
            'o' => Mode::Operator(on, nick),
            _ => Mode::Voice(on, nick),
        };
        let shared = self.conn.shared.clone();
        let id = self.conn.member.id;
        match shared
            .hub
            .standing_elsewhere(id, Whither::Named(room), change)
        {
            Ok(_) => {}
            Err(RoomError::NotThere(_)) => self.reply(442, &[&name, "You're not on that channel"]),
            Err(RoomError::NotOperator(_)) => {
                self.reply(482, &[&name, "You're not channel operator"])
            }
            Err(_) => self.reply(403, &[target, "No such channel"]),
        }
        true
    }

    /// The ban list (367, 368) or the mute list (728, 729, as Solanum numbers its quiet list).
    fn list_masks(&mut self, name: &str, bans: bool) {
        let shared = self.conn.shared.clone();
        let listed = room_of(name).and_then(|room| {
            shared
                .hub
                .listed(self.conn.member.id, Whither::Named(room), bans)
        });
        let list = listed.map(|(_, list)| list).unwrap_or_default();
        let mut out = BytesMut::new();
        for entry in &list {
            let at = unix(entry.at).to_string();
            if bans {
                numeric(
                    &mut out,
                    &self.server,
                    367,
                    self.me(),
                    &[name, &entry.mask, &entry.by, &at],
                );
            } else {
                numeric(
                    &mut out,
                    &self.server,
                    728,
                    self.me(),
                    &[name, "q", &entry.mask, &entry.by, &at],
                );
            }
        }
        if bans {
            numeric(
                &mut out,
                &self.server,
                368,
                self.me(),
                &[name, "End of channel ban list"],
            );
        } else {
            numeric(
                &mut out,
                &self.server,
                729,
                self.me(),
                &[name, "q", "End of channel quiet list"],
            );
        }
        self.send(out);
    }

    /// `KICK #chan nick[,nick…] [:reason]`, or `KICK #a,#b nick1,nick2` (pairwise): the hub's
    /// kick for each nick named, at most [`MAX_MODE_ARGS`] (TARGMAX `KICK`); each is sent to
    /// the channel as a KICK of its own, as RFC 2812 wants.
    fn kick(&mut self, msg: &Message<'_>) {
        let (Some(targets), Some(nicks)) = (msg.param(0), msg.param(1)) else {
            self.reply(461, &["KICK", "Not enough parameters"]);
            return;
        };
        let reason = msg.param(2).map(strip_disguise);
        let reason = reason.as_deref().filter(|r| !r.is_empty());
        let shared = self.conn.shared.clone();
        let id = self.conn.member.id;
        let channels: Vec<&str> = targets.split(',').collect();
        for (i, nick) in nicks.split(',').take(MAX_MODE_ARGS).enumerate() {
            let target = if channels.len() == 1 {
                channels[0]
            } else {
                match channels.get(i) {
                    Some(target) => target,
                    None => break,
                }
            };
            let kicked = room_of(target).and_then(|room| match self.elsewhere_in(nick, room) {
                // Their own node puts them out when it hears of it.
                Some(Ok((node, person))) => {
                    let who = crate::cluster::remote_identity(&person.nick, &node);
                    shared
                        .hub
                        .kick_elsewhere(id, Whither::Named(room), who, reason)
                }
                Some(Err(())) => Err(RoomError::NotInRoom {
                    nick: nick.to_owned(),
                    room: room.into(),
                }),
                None => shared
                    .hub
                    .kick(id, Whither::Named(room), nick, reason, cmd::land),
            });
            match kicked {
                Ok(_) => {}
                Err(RoomError::NotThere(_)) => {
                    self.reply(442, &[target, "You're not on that channel"])
                }
                Err(RoomError::NotOperator(_)) => {
                    self.reply(482, &[target, "You're not channel operator"])
                }
                Err(RoomError::NoSuchNick(_)) => self.reply(401, &[nick, "No such nick/channel"]),
                Err(RoomError::NotInRoom { .. }) => {
                    self.reply(441, &[nick, target, "They aren't on that channel"])
                }
                Err(_) => self.reply(403, &[target, "No such channel"]),
            }
        }
    }

    /// `SILENCE` lists whom this connection ignores (271, 272); `SILENCE +nick` / `-nick`
    /// (or `+nick!*@*`) changes it, as the netcat `/ignore` does, echoing the change.
    fn silence(&mut self, msg: &Message<'_>) {
        let shared = self.conn.shared.clone();
        let member = self.conn.member.clone();
        let Some(change) = msg.param(0).filter(|c| !c.is_empty()) else {
            let mut out = BytesMut::new();
            for ignored in member.ignored() {
                let mask = format!("{}!*@*", ignored.nick);
                numeric(&mut out, &self.server, 271, self.me(), &[self.me(), &mask]);
            }
            numeric(
                &mut out,
                &self.server,
                272,
                self.me(),
                &["End of Silence List"],
            );
            self.send(out);
            return;
        };
        let (on, rest) = match change.strip_prefix('-') {
            Some(rest) => (false, rest),
            None => (true, change.strip_prefix('+').unwrap_or(change)),
        };
        // Only whole nicknames are silenced: `nick` or `nick!*@*`.
        let nick = rest.strip_suffix("!*@*").unwrap_or(rest);
        let changed = if on {
            match shared.hub.ignore(member.id, nick) {
                Ok(changed) => changed.is_some(),
                Err(IgnoreError::TooMany(n)) => {
                    self.reply(511, &[change, &format!("Your silence list is full ({n})")]);
                    return;
                }
                Err(_) => {
                    self.reply(
                        476,
                        &[
                            change,
                            "Bad silence mask: give a nickname you are not using",
                        ],
                    );
                    return;
                }
            }
        } else {
            shared.hub.unignore(member.id, nick).is_some()
        };
        if changed {
            tracing::info!(nick, on, "silence list changed");
            let me = self.me().to_owned();
            let mask = format!("{}{nick}!*@*", if on { '+' } else { '-' });
            let mut out = BytesMut::new();
            write(&mut out, &[], Some(&me), "SILENCE", &[&mask]);
            self.send(out);
            self.pending = Some(account::Pending::KeepIgnores);
        }
    }

    /// `KILL nick [:reason]`: a server operator ends someone's connection.
    fn kill(&mut self, msg: &Message<'_>) {
        let Some(nick) = msg.param(0).filter(|n| !n.is_empty()) else {
            self.reply(461, &["KILL", "Not enough parameters"]);
            return;
        };
        let reason = msg.param(1).map(strip_disguise);
        let reason = reason.as_deref().filter(|r| !r.is_empty());
        let shared = self.conn.shared.clone();
        let me = self.me().to_owned();
        match crate::proto::oper::kill(&shared, &self.conn.member, &me, nick, reason) {
            Ok(_) => {}
            Err(KillError::NotOper) => {
                self.reply(481, &["Permission Denied- You're not an IRC operator"])
            }
            Err(KillError::NoSuchNick(_)) => self.reply(401, &[nick, "No such nick/channel"]),
            Err(KillError::Yourself) => self.reply(483, &["You can't kill yourself; QUIT leaves"]),
        }
    }

    /// `INVITE nick #chan`: 341 to the inviter, an INVITE line to the invited.
    fn invite(&mut self, msg: &Message<'_>) {
        let (Some(nick), Some(target)) = (msg.param(0), msg.param(1)) else {
            self.reply(461, &["INVITE", "Not enough parameters"]);
            return;
        };
        let shared = self.conn.shared.clone();
        let id = self.conn.member.id;
        // Someone on another node is invited through their node, as the line `/invite` does.
        let elsewhere = match shared.hub.find(nick) {
            Some(_) => None,
            None => match self.remote_named(nick) {
                Some((node, _)) => Some(node),
                None => {
                    self.reply(401, &[nick, "No such nick/channel"]);
                    return;
                }
            },
        };
        let invited = room_of(target).and_then(|room| match &elsewhere {
            Some(node) => cmd::invite_across(&shared, id, Whither::Named(room), nick, node),
            None => shared.hub.invite(id, Whither::Named(room), nick),
        });
        match invited {
            Ok(event) => {
                let to = match &event.target {
                    Target::Member(to) => to.nick.clone(),
                    _ => nick.into(),
                };
                let chan = match &event.kind {
                    Kind::Invited(room) => channel(room),
                    _ => target.to_owned(),
                };
                self.reply(341, &[&to, &chan]);
            }
            Err(RoomError::NotThere(_)) => self.reply(442, &[target, "You're not on that channel"]),
            Err(RoomError::NotOperator(_)) => {
                self.reply(482, &[target, "You're not channel operator"])
            }
            Err(RoomError::AlreadyIn { nick, .. }) => {
                self.reply(443, &[&nick, target, "is already on channel"])
            }
            Err(RoomError::NoSuchNick(_)) => self.reply(401, &[nick, "No such nick/channel"]),
            Err(_) => self.reply(403, &[target, "No such channel"]),
        }
    }

    fn away(&mut self, msg: &Message<'_>) {
        let message = msg
            .param(0)
            .filter(|m| !m.is_empty())
            .map(|m| strip_disguise(m).chars().take(AWAYLEN).collect::<String>());
        self.conn
            .shared
            .hub
            .set_away(self.conn.member.id, message.as_deref());
        match message {
            Some(_) => self.reply(306, &["You have been marked as being away"]),
            None => self.reply(305, &["You are no longer marked as being away"]),
        }
    }

    /// `CHATHISTORY LATEST|BEFORE|AFTER|AROUND|BETWEEN #chan …`, served from the room's
    /// history (the same as `/history`), in a `chathistory` batch when the client has `batch`.
    fn chathistory(&mut self, msg: &Message<'_>) {
        let sub = msg.param(0).unwrap_or("").to_ascii_uppercase();
        let Some(target) = msg.param(1) else {
            self.server_line(
                "FAIL",
                &["CHATHISTORY", "INVALID_PARAMS", "Missing parameters"],
            );
            return;
        };
        if sub == "TARGETS" {
            self.batch("draft/chathistory-targets", None, &[]);
            return;
        }
        let shared = self.conn.shared.clone();
        let Ok((name, mut events)) = room_of(target).and_then(|room| {
            let retain = shared.hub.settings().retain;
            shared
                .hub
                .history(self.conn.member.id, Whither::Named(room), retain)
        }) else {
            self.server_line(
                "FAIL",
                &["CHATHISTORY", "INVALID_TARGET", target, "No such channel"],
            );
            return;
        };
        events.reverse(); // oldest first
        let limit_at = |i: usize| {
            msg.param(i)
                .and_then(|l| l.parse::<usize>().ok())
                .unwrap_or(CHATHISTORY_LIMIT)
                .min(CHATHISTORY_LIMIT)
        };
        let position = |selector: Option<&str>| -> Option<Result<u64, SystemTime>> {
            let selector = selector?;
            if let Some(id) = selector.strip_prefix("msgid=") {
                return id.parse().ok().map(Ok);
            }
            let at = selector.strip_prefix("timestamp=")?;
            let at =
                OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()?;
            Some(Err(SystemTime::from(at)))
        };
        let before = |e: &Arc<Event>, p: &Result<u64, SystemTime>| match p {
            Ok(id) => e.id < *id,
            Err(at) => e.at < *at,
        };
        let after = |e: &Arc<Event>, p: &Result<u64, SystemTime>| match p {
            Ok(id) => e.id > *id,
            Err(at) => e.at > *at,
        };
        let selected: Vec<Arc<Event>> = match sub.as_str() {
            "LATEST" => {
                let limit = limit_at(3);
                let from = position(msg.param(2).filter(|s| *s != "*"));
                let newer: Vec<_> = events
                    .into_iter()
                    .filter(|e| from.as_ref().is_none_or(|p| after(e, p)))
                    .collect();
                let skip = newer.len().saturating_sub(limit);
                newer.into_iter().skip(skip).collect()
            }
            "BEFORE" => {
                let (Some(p), limit) = (position(msg.param(2)), limit_at(3)) else {
                    return self.invalid_history();
                };
                let older: Vec<_> = events.into_iter().filter(|e| before(e, &p)).collect();
                let skip = older.len().saturating_sub(limit);
                older.into_iter().skip(skip).collect()
            }
            "AFTER" => {
                let (Some(p), limit) = (position(msg.param(2)), limit_at(3)) else {
                    return self.invalid_history();
                };
                events
                    .into_iter()
                    .filter(|e| after(e, &p))
                    .take(limit)
                    .collect()
            }
            "AROUND" => {
                let (Some(p), limit) = (position(msg.param(2)), limit_at(3)) else {
                    return self.invalid_history();
                };
                let centre = events
                    .iter()
                    .position(|e| !before(e, &p))
                    .unwrap_or(events.len());
                let start = centre.saturating_sub(limit / 2);
                events.into_iter().skip(start).take(limit).collect()
            }
            "BETWEEN" => {
                let (Some(a), Some(b), limit) =
                    (position(msg.param(2)), position(msg.param(3)), limit_at(4))
                else {
                    return self.invalid_history();
                };
                events
                    .into_iter()
                    .filter(|e| (after(e, &a) && before(e, &b)) || (after(e, &b) && before(e, &a)))
                    .take(limit)
                    .collect()
            }
            _ => {
                self.server_line(
                    "FAIL",
                    &["CHATHISTORY", "INVALID_PARAMS", &sub, "Unknown subcommand"],
                );
                return;
            }
        };
        self.batch("chathistory", Some(&channel(&name)), &selected);
    }

    fn invalid_history(&self) {
        self.server_line(
            "FAIL",
            &[
                "CHATHISTORY",
                "INVALID_PARAMS",
                "Expected msgid=ID or timestamp=TIME and a limit",
            ],
        );
    }

    /// Sends `events` inside a batch of `kind` when the client has `batch`, else plainly.
    fn batch(&mut self, kind: &str, target: Option<&str>, events: &[Arc<Event>]) {
        let mut out = BytesMut::new();
        let batched = self.has("batch");
        self.next_batch += 1;
        let id = format!("h{}", self.next_batch);
        if batched {
            let mut params = vec![format!("+{id}"), kind.to_owned()];
            params.extend(target.map(str::to_owned));
            let params: Vec<&str> = params.iter().map(String::as_str).collect();
            write(&mut out, &[], Some(&self.server), "BATCH", &params);
        }
        let tag = [Tag::new("batch", id.as_str())];
        let extra: &[Tag<'_>] = if batched { &tag } else { &[] };
        for event in events {
            write_event(&mut out, event, self.tagged() || batched, extra);
        }
        if batched {
            write(
                &mut out,
                &[],
                Some(&self.server),
                "BATCH",
                &[&format!("-{id}")],
            );
        }
        self.send(out);
    }
}

/// One WHO reply's fields, for a member here or someone on another node.
struct WhoRow {
    chan: String,
    user: String,
    host: String,
    ip: String,
    server: String,
    nick: String,
    flags: String,
    idle: String,
    /// The account name, or "0" for none (WHOX, as ircu and solanum answer).
    account: String,
    realname: String,
}

impl WhoRow {
    fn local(chan: &str, m: &MemberInfo, server: &str, multi: bool, now: Instant) -> WhoRow {
        let id = &m.identity;
        WhoRow {
            chan: chan.to_owned(),
            user: id.user.to_string(),
            host: id.host.to_string(),
            ip: m.member.addr.ip().to_canonical().to_string(),
            server: server.to_owned(),
            nick: id.nick.to_string(),
            flags: format!(
                "{}{}{}",
                if m.away.is_some() { "G" } else { "H" },
                if m.member.is_oper() { "*" } else { "" },
                prefixes(m.standing, multi)
            ),
            idle: m.member.stats.idle(now).as_secs().to_string(),
            account: m
                .member
                .account()
                .map_or_else(|| "0".to_owned(), |a| a.to_string()),
            realname: id.realname.to_string(),
        }
    }

    /// Someone on `node`: their node is their host and their server, as their messages'
    /// source says (`bob!bob@node-b`); what only their node knows (address, idleness,
    /// away and standing as their node's beats and events say) is left out.
    fn remote(chan: &str, (node, person): &cluster::Remote, multi: bool) -> WhoRow {
        let standing = match chan.strip_prefix('#') {
            Some(room) => person.standing(room),
            None => Standing::default(),
        };
        WhoRow {
            chan: chan.to_owned(),
            user: person.nick.clone(),
            host: node.clone(),
            ip: "255.255.255.255".to_owned(),
            server: node.clone(),
            nick: person.nick.clone(),
            flags: format!(
                "{}{}",
                if person.away.is_some() { "G" } else { "H" },
                prefixes(standing, multi)
            ),
            idle: "0".to_owned(),
            account: "0".to_owned(),
            realname: String::new(),
        }
    }
}

/// The room a channel name names: `#dev` is `dev`; a name without `#` is no channel.
fn room_of(target: &str) -> Result<&str, RoomError> {
    target
        .strip_prefix('#')
        .map(|_| target)
        .ok_or(RoomError::InvalidName)
}

/// Someone elsewhere as NAMES lists them in `target` (`#dev`): with their standing there.
fn remote_prefixed(person: &crate::cluster::Person, target: &str, multi: bool) -> String {
    let room = target.strip_prefix('#').unwrap_or(target);
    format!("{}{}", prefixes(person.standing(room), multi), person.nick)
}

/// `@` for an operator, `+` for a voice: the highest alone, or both with `multi-prefix`.
fn prefixes(standing: Standing, multi: bool) -> &'static str {
    match (standing.op, standing.voice) {
        (true, true) if multi => "@+",
        (true, _) => "@",
        (false, true) => "+",
        (false, false) => "",
    }
}

/// A nickname as NAMES shows it, with its prefixes.
fn prefixed(m: &MemberInfo, multi: bool) -> String {
    format!("{}{}", prefixes(m.standing, multi), m.nick())
}

/// 353 lines of at most ~400 bytes each (the caller ends the list with 366). The channel's
/// symbol is `@` for a secret one and `=` for the rest (RFC 2812 3.2.5).
fn names_lines(
    out: &mut BytesMut,
    server: &str,
    me: &str,
    chan: &str,
    secret: bool,
    nicks: &[String],
) {
    let symbol = if secret { "@" } else { "=" };
    let mut line = String::new();
    for nick in nicks {
        if line.len() + nick.len() > 400 {
            numeric(out, server, 353, me, &[symbol, chan, &line]);
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(nick);
    }
    if !line.is_empty() {
        numeric(out, server, 353, me, &[symbol, chan, &line]);
    }
}

fn unix(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}
