//! One netcat connection, from the nickname prompt to the close: frames lines, runs commands
//! and hands chat lines to the hub. The reading and writing machinery is [`crate::proto::conn`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use super::cmd::account::Request;
use super::cmd::{self, format_duration, Command, Ctx, Flow};
use super::render::{arrival_text, Welcome};
use super::visits::Visits;
use super::words;
use crate::accounts::{AccountError, Secret};
use crate::context::Shared;
use crate::core::hub::{Arrival, Whither};
use crate::core::member;
use crate::core::names::{validate_nick, NickError, RoomError};
use crate::core::room::LOBBY;
use crate::core::{Identity, Kind, LeaveReason};
use crate::net::gate::Pass;
use crate::net::stream::Stream;
use crate::proto::codec::{check_text, foreign_protocol, Frame, LineError};
use crate::proto::conn::{Conn, Input};

pub const PROMPT: &str = "Please enter your nickname: ";

/// Asked first on a private server (`--server-password`).
pub const PASSWORD_PROMPT: &str = "This server is private. Password: ";

/// Serves one accepted connection until it ends. `pass` holds its slots under the connection
/// limits until then.
pub fn run(
    shared: Arc<Shared>,
    stream: Stream,
    peer: SocketAddr,
    id: u64,
    pass: Pass,
) -> impl Future<Output = ()> {
    let kind = member::Kind {
        protocol: if stream.web() { "web" } else { "line" },
        tls: stream.tls(),
    };
    let conn = Conn::start(
        shared.clone(),
        stream,
        peer,
        id,
        kind,
        crate::proto::LINE,
        shared.config.max_line,
        pass,
    );
    let mut session = Session {
        conn,
        nick: None,
        visits: Visits::default(),
        claim: None,
    };
    // The stream went into the connection before the future was made, so the session's
    // state (kept while the connection lives) never holds it.
    async move {
        let reason = session.serve().await;
        let Session { conn, nick, .. } = session;
        if nick.is_some() {
            shared.hub.leave(id, reason, None);
        }
        let farewell = (reason == LeaveReason::Shutdown)
            .then(|| Bytes::from_static(b"Server is shutting down.\n"));
        // Boxed, like registration: a task is allocated for its largest state, and every idle
        // connection would otherwise carry room for the ending it has not reached.
        Box::pin(conn.finish(reason, nick.as_deref(), farewell)).await;
    }
}

struct Session {
    conn: Conn,
    /// Set once the client has joined.
    nick: Option<Arc<str>>,
    visits: Visits,
    /// A registered name `/nick` asked for, which `/identify` completes.
    claim: Option<String>,
}

impl Session {
    fn reply(&self, text: impl std::fmt::Display) {
        self.conn.send(format!("{text}\n"));
    }

    fn prompt(&self) {
        self.conn.send(Bytes::from_static(PROMPT.as_bytes()));
    }

    async fn serve(&mut self) -> LeaveReason {
        // Boxed: the prompt's state is needed once, not for the whole of an idle session.
        let nick = match Box::pin(self.register()).await {
            Ok(nick) => nick,
            Err(reason) => return reason,
        };
        tracing::info!(%nick, "joined");
        self.conn.registered();
        self.nick = Some(nick.clone());
        let mut nick = nick;
        let reason = self.chat(&mut nick).await;
        self.nick = Some(nick);
        reason
    }

    /// The nickname prompt, repeated until a valid free name, `/quit`, or the registration
    /// deadline; then the lobby.
    async fn register(&mut self) -> Result<Arc<str>, LeaveReason> {
        let shared = self.conn.shared.clone();
        let deadline = Instant::now() + shared.config.register_timeout;
        // Bound first: a temporary in the `if let` would live, and take room in this future,
        // across every await of the password prompt.
        let password = shared.live.get().server_password.clone();
        if let Some(password) = password {
            self.conn
                .send(Bytes::from_static(PASSWORD_PROMPT.as_bytes()));
            match self.conn.reader.next(Some(deadline)).await {
                Input::Line(Frame::Line(line), _) if *line == *password.as_bytes() => {}
                Input::End(reason) => return Err(reason),
                Input::RegisterTimeout | Input::IdleTimeout | Input::IdleWarning => {
                    return Err(LeaveReason::RegisterTimeout)
                }
                Input::Line(..) => {
                    self.reply("Error: wrong password; closing the connection.");
                    return Err(LeaveReason::Quit);
                }
            }
        }
        self.prompt();
        loop {
            let text = match self.conn.reader.next(Some(deadline)).await {
                Input::End(reason) => return Err(reason),
                Input::IdleWarning | Input::IdleTimeout | Input::RegisterTimeout => {
                    self.reply(format_args!(
                        "Error: no nickname chosen within {}; closing the connection.",
                        format_duration(shared.config.register_timeout)
                    ));
                    tracing::info!("registration timeout");
                    return Err(LeaveReason::RegisterTimeout);
                }
                Input::Line(Frame::TooLong, _) => {
                    self.reply(LineError::TooLong(shared.config.max_line));
                    self.prompt();
                    continue;
                }
                Input::Line(Frame::Line(line), _) => {
                    if let Some(protocol) = foreign_protocol(&line) {
                        self.reply(protocol);
                        tracing::info!(?protocol, "not a chat client; closing");
                        return Err(LeaveReason::NotChat);
                    }
                    match check_text(&line) {
                        Ok(text) => text.trim().to_owned(),
                        Err(e) => {
                            self.reply(e);
                            self.prompt();
                            continue;
                        }
                    }
                }
            };
            if text.starts_with('/') {
                if cmd::parse(&text) == Ok(Command::Quit) {
                    self.reply("Goodbye!");
                    return Err(LeaveReason::Quit);
                }
                self.reply("Error: choose a nickname first; commands work once you have joined.");
                self.prompt();
                continue;
            }
            // `nick password` proves a registered nickname in one line.
            let mut words = text.split_whitespace();
            let (name, given) = (words.next(), words.next().map(str::to_owned));
            if words.next().is_some() {
                self.reply("Error: a nickname is one word (or a nickname and its password).");
                self.prompt();
                continue;
            }
            if let Some(name) = name.filter(|n| shared.accounts.is_registered(n)) {
                if !self.prove_at_prompt(name, given, deadline).await? {
                    self.prompt();
                    continue;
                }
            } else if given.is_some() {
                self.reply(format_args!(
                    "Error: {} is not registered; give just a nickname (then /register <password>).",
                    name.unwrap_or_default()
                ));
                self.prompt();
                continue;
            }
            let identity = match self.take_name(name).await {
                Ok(identity) => identity,
                Err(why) => {
                    self.reply(why);
                    self.prompt();
                    continue;
                }
            };
            let member = self.conn.member.clone();
            crate::proto::ignore::restore(&shared, &member);
            let nick = identity.nick.clone();
            let live = shared.live.get();
            let welcome = Welcome {
                nick: &nick,
                motd: live.motd.as_deref().unwrap_or_default(),
            };
            // On a cluster, the lobby's history from every node is read first (bounded).
            let hold = match &shared.cluster {
                Some(cluster) => cluster.prepare(LOBBY, member.id).await,
                None => None,
            };
            let entered = shared
                .hub
                .enter(member.id, LOBBY, Arrival::Connected, |view| {
                    for part in arrival_text(&view, Some(welcome), None) {
                        let _ = member.push(part);
                    }
                });
            if let Err(e) = entered {
                tracing::error!(error = %e, "cannot enter the lobby");
            }
            if hold.is_some_and(|h| !h.loaded) {
                let _ = member.push(words::history_unread(LOBBY).into());
            }
            return Ok(nick);
        }
    }

    /// Registers `wanted`, or a guest name when `None`; on a cluster, only a name the broker
    /// has given to this node (docs/CLUSTER.md, "Nicknames"). The error is the reply.
    async fn take_name(&self, wanted: Option<&str>) -> Result<Arc<Identity>, String> {
        /// Guest names tried before asking for a nickname instead: each taken one means
        /// another node drew the same number.
        const GUEST_TRIES: usize = 8;
        let shared = &self.conn.shared;
        let member = &self.conn.member;
        let register = |name| {
            shared
                .hub
                .register(member, name, None, "netcat user")
                .map_err(|e| words::nick_error(&e))
        };
        let Some(cluster) = &shared.cluster else {
            return register(wanted);
        };
        let unsure = |e| words::cluster_unsure(&e);
        if let Some(name) = wanted {
            validate_nick(name).map_err(|e| words::nick_error(&e))?;
            if !cluster.claim(name, member.id).await.map_err(unsure)? {
                return Err(words::nick_error(&NickError::Taken(name.to_owned())));
            }
            return register(wanted).inspect_err(|_| cluster.release(name, member.id));
        }
        for _ in 0..GUEST_TRIES {
            let identity = register(None)?;
            match cluster.claim(&identity.nick, member.id).await {
                Ok(true) => return Ok(identity),
                // In no room yet: leaving tells nobody, and the release it asks for finds the
                // name someone else's and leaves it.
                Ok(false) => shared.hub.leave(member.id, LeaveReason::Quit, None),
                Err(e) => {
                    shared.hub.leave(member.id, LeaveReason::Quit, None);
                    return Err(unsure(e));
                }
            }
        }
        Err("Error: no guest name is free just now; choose a nickname.".to_owned())
    }

    async fn chat(&mut self, nick: &mut Arc<str>) -> LeaveReason {
        let shared = self.conn.shared.clone();
        let config = &shared.config;
        loop {
            let (line, taken_at) = match self.conn.reader.next(None).await {
                Input::End(reason) => return reason,
                // Over WebSocket the browser answers a ping by itself, and its pong restarts
                // the idle timer: an open page is not idle, a vanished one is dropped.
                Input::IdleWarning if self.conn.transport.ping() => continue,
                Input::IdleWarning => {
                    let idle = shared.live.idle_warning_after().unwrap_or_default();
                    let timeout = shared.live.idle_timeout().unwrap_or_default();
                    let left = timeout.saturating_sub(idle);
                    self.reply(format_args!(
                        "Warning: you have been idle for {}; you will be disconnected in {} \
                         unless you send something.",
                        format_duration(idle),
                        format_duration(left)
                    ));
                    continue;
                }
                Input::IdleTimeout | Input::RegisterTimeout => {
                    self.reply(format_args!(
                        "You have been disconnected after {} without input (idle timeout).",
                        format_duration(shared.live.idle_timeout().unwrap_or_default())
                    ));
                    return LeaveReason::IdleTimeout;
                }
                Input::Line(Frame::TooLong, _) => {
                    self.reply(LineError::TooLong(config.max_line));
                    continue;
                }
                Input::Line(Frame::Line(line), taken_at) => (line, taken_at),
            };
            let text = match check_text(&line) {
                Ok(text) => text,
                Err(e) => {
                    self.reply(e);
                    continue;
                }
            };
            if text.trim().is_empty() {
                continue;
            }
            if text.starts_with('/') {
                shared.metrics.commands.fetch_add(1, Relaxed);
                let flow = match cmd::parse(text) {
                    Ok(command) => {
                        self.conn.reader.charge(command.extra_cost());
                        command.run(&mut Ctx {
                            shared: &shared,
                            member: &self.conn.member,
                            nick,
                            visits: &mut self.visits,
                        })
                    }
                    Err(e) => {
                        self.reply(e);
                        Flow::Continue
                    }
                };
                match flow {
                    Flow::Quit => return LeaveReason::Quit,
                    Flow::Continue => {}
                    // The account work waits for a hash or a file. Boxed, and with the line
                    // gone first, its state is held only while it runs: a task is allocated
                    // for its largest state, and every idle connection would carry it.
                    flow => {
                        drop(line);
                        Box::pin(self.follow(flow, nick)).await;
                    }
                }
                continue;
            }
            self.relay(text, taken_at);
        }
    }

    /// What a command left for the session to wait for.
    async fn follow(&mut self, flow: Flow, nick: &mut Arc<str>) {
        match flow {
            Flow::Quit | Flow::Continue => {}
            Flow::Account(request) => self.account(request, nick).await,
            Flow::Claim { name, password } => self.claim(name, password, nick).await,
            Flow::Rename(name) => {
                let shared = self.conn.shared.clone();
                let renamed =
                    crate::proto::rename::rename(&shared, self.conn.member.id, &name).await;
                cmd::nick::done(&mut self.ctx(&shared, nick), renamed);
            }
            Flow::Move { room, leave } => {
                let shared = self.conn.shared.clone();
                let hold = match &shared.cluster {
                    Some(cluster) => cluster.prepare(&room, self.conn.member.id).await,
                    None => None,
                };
                cmd::join::moved(&mut self.ctx(&shared, nick), &room, leave);
                shared.hub.settle(&room);
                if hold.is_some_and(|h| !h.loaded) {
                    self.reply(words::history_unread(&room).trim_end());
                }
            }
            Flow::KeepIgnores => {
                let member = self.conn.member.clone();
                if let Err(e) = crate::proto::ignore::keep(&self.conn.shared, &member).await {
                    self.reply(e);
                }
            }
        }
    }

    /// A registered `name` chosen at the prompt: proved by `given`, or by a password asked for
    /// until it is right. False: back to the nickname prompt (an empty line, or throttled).
    async fn prove_at_prompt(
        &mut self,
        name: &str,
        mut given: Option<String>,
        deadline: Instant,
    ) -> Result<bool, LeaveReason> {
        let shared = self.conn.shared.clone();
        loop {
            let password = match given.take() {
                Some(p) => p,
                None => {
                    self.conn.send(format!(
                        "{name} is registered. Password (an empty line to choose another nickname): "
                    ));
                    match self.conn.reader.next(Some(deadline)).await {
                        Input::End(reason) => return Err(reason),
                        Input::Line(Frame::Line(line), _) => {
                            String::from_utf8_lossy(&line).trim().to_owned()
                        }
                        Input::Line(Frame::TooLong, _) => String::new(),
                        _ => return Err(LeaveReason::RegisterTimeout),
                    }
                }
            };
            if password.is_empty() {
                return Ok(false);
            }
            match shared
                .accounts
                .verify(name, &password, self.conn.member.addr.ip())
                .await
            {
                Ok(account) => {
                    tracing::info!(%account, "identified");
                    self.prove(account);
                    return Ok(true);
                }
                Err(e @ AccountError::Wrong(_)) => self.reply(e),
                Err(e) => {
                    self.reply(e);
                    return Ok(false);
                }
            }
        }
    }

    fn ctx<'a>(
        &'a mut self,
        shared: &'a crate::context::Shared,
        nick: &'a mut Arc<str>,
    ) -> Ctx<'a> {
        Ctx {
            shared,
            member: &self.conn.member,
            nick,
            visits: &mut self.visits,
        }
    }

    /// This connection proved `account`: it stays proved for going back to that name, and
    /// the hub knows it (rooms it operates make it an operator as it enters).
    fn prove(&mut self, account: String) {
        self.conn.member.set_account(Some(&account));
        self.conn.shared.hub.account_changed(self.conn.member.id);
        // Before registration the hub does not know the member yet; `register` restores then.
        crate::proto::ignore::restore(&self.conn.shared, &self.conn.member);
    }

    /// The member holds the account it proved (the hub's identity shows it to others).
    fn proved(&self, name: &str) -> bool {
        self.conn
            .member
            .account()
            .is_some_and(|a| a.eq_ignore_ascii_case(name))
    }

    /// `/nick` to a registered name: done if proved already or now, else kept for `/identify`.
    async fn claim(&mut self, name: String, password: Option<Secret>, nick: &mut Arc<str>) {
        let shared = self.conn.shared.clone();
        if !self.proved(&name) {
            let Some(Secret(password)) = password else {
                self.reply(format_args!(
                    "{name} is registered; you are still {nick}. /identify <password> completes the change."
                ));
                self.claim = Some(name);
                return;
            };
            match shared
                .accounts
                .verify(&name, &password, self.conn.member.addr.ip())
                .await
            {
                Ok(account) => self.prove(account),
                Err(e) => return self.reply(e),
            }
        }
        cmd::nick::rename(&mut self.ctx(&shared, nick), &name);
    }

    async fn account(&mut self, request: Request, nick: &mut Arc<str>) {
        let shared = self.conn.shared.clone();
        let accounts = &shared.accounts;
        let addr = self.conn.member.addr.ip();
        match request {
            Request::Register(Secret(password)) => match accounts.register(nick, &password).await {
                Ok(()) => {
                    tracing::info!(account = %nick, "registered");
                    self.prove(nick.to_string());
                    self.reply(format_args!(
                        "Your nickname {nick} is registered. Next time, answer the prompt with '{nick} <password>' or /identify <password>."
                    ));
                }
                Err(e) => self.reply(e),
            },
            Request::Identify(Secret(password)) => {
                let name = self.claim.take().unwrap_or_else(|| nick.to_string());
                match accounts.verify(&name, &password, addr).await {
                    Ok(account) => {
                        tracing::info!(%account, "identified");
                        self.reply(format_args!("You are identified as {account}."));
                        self.prove(account);
                        if !name.eq_ignore_ascii_case(nick) {
                            cmd::nick::rename(&mut self.ctx(&shared, nick), &name);
                        }
                    }
                    Err(e) => self.reply(e),
                }
            }
            Request::Password(Secret(password)) if self.proved(nick) => {
                match accounts.set_password(nick, &password).await {
                    Ok(()) => {
                        tracing::info!(account = %nick, "password changed");
                        self.reply(format_args!("Your password for {nick} is changed."));
                    }
                    Err(e) => self.reply(e),
                }
            }
            Request::Unregister if self.proved(nick) => match accounts.unregister(nick).await {
                Ok(()) => {
                    tracing::info!(account = %nick, "unregistered");
                    self.conn.member.set_account(None);
                    shared.hub.account_changed(self.conn.member.id);
                    shared.hub.forget_account(nick);
                    self.reply(format_args!("{nick} is no longer registered."));
                }
                Err(e) => self.reply(e),
            },
            Request::Oper { name, password } => {
                let member = self.conn.member.clone();
                match crate::proto::oper::oper_up(&shared, &member, &name, &password.0).await {
                    Ok(()) => self.reply(format_args!(
                        "You are now server operator {name}: you have every room operator's rights in the rooms you are in, and /kill."
                    )),
                    Err(e) => self.reply(e),
                }
            }
            Request::Password(_) | Request::Unregister => {
                if accounts.is_registered(nick) {
                    self.reply(format_args!(
                        "Error: identify as {nick} first: /identify <password>."
                    ));
                } else {
                    self.reply(AccountError::NotRegistered(nick.to_string()));
                }
            }
        }
    }

    /// Hands the chat line to the hub, which renders it once per format in the room.
    fn relay(&self, text: &str, taken_at: std::time::Instant) {
        let shared = &self.conn.shared;
        let said = shared.hub.say(
            self.conn.member.id,
            Whither::Current,
            Kind::Message(text.into()),
        );
        match said {
            Ok((_, delivered)) => {
                shared
                    .metrics
                    .count_message(&self.conn.member.stats, delivered);
                shared.metrics.record_fanout(taken_at.elapsed());
            }
            // Muted, banned, or a moderated room: the sender must know it went nowhere.
            Err(e @ RoomError::Silenced { .. }) => {
                let _ = self
                    .conn
                    .member
                    .push(format!("{}\n", words::room_error(&e)).into());
            }
            Err(_) => {}
        }
    }
}
