//! The commands a joined client can type: one table drives both parsing and `/help`, and each
//! command lives in its own file whose doc comment is its grammar.

use std::sync::Arc;

use thiserror::Error;

use crate::context::Shared;
use crate::core::Member;
use crate::proto::line::visits::Visits;

pub mod account;
mod echo;
mod help;
mod history;
mod ignore;
pub mod join;
mod leave;
mod me;
mod metrics;
mod moderate;
mod msg;
pub mod nick;
mod op;
mod oper;
mod ping;
mod quit;
mod rooms;
mod throughput;
mod time;
mod topic;
mod who;

pub use self::metrics::{format_duration, MAX_CLIENT_BLOCKS, MAX_ROOM_LINES};
pub use self::moderate::invite_across;
pub use self::rooms::{add_remote, MAX_ROOMS_LISTED};
pub use self::time::server_time;
pub use crate::proto::line::render::land;

/// The reports the IRC service nick gives too.
pub mod reports {
    pub use super::metrics::report as metrics;
    pub use super::ping::report as ping;
    pub use super::throughput::report as throughput;
}

/// One row of the command table.
#[derive(Debug)]
pub struct Spec {
    /// Lower-case name without the slash; matched case-insensitively.
    pub name: &'static str,
    /// Argument grammar for `/help` and usage errors, e.g. `<name>` or `[token]`.
    pub args: &'static str,
    pub help: &'static str,
    /// Parses the arguments (already trimmed); `None` means wrong arguments.
    parse: fn(&str) -> Option<Command>,
}

/// Commands are identified by name; the parser function is not comparable.
impl PartialEq for Spec {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Spec {}

impl Spec {
    pub fn usage(&self) -> String {
        if self.args.is_empty() {
            format!("/{}", self.name)
        } else {
            format!("/{} {}", self.name, self.args)
        }
    }

    /// Tells someone who typed `/time now` what was wrong, which the grammar alone cannot.
    fn no_args_note(&self) -> &'static str {
        if self.args.is_empty() {
            "; it takes no arguments"
        } else {
            ""
        }
    }
}

/// Every command, in the order `/help` lists them.
pub const COMMANDS: &[Spec] = &[
    help::SPEC,
    time::SPEC,
    ping::SPEC,
    nick::SPEC,
    account::REGISTER,
    account::IDENTIFY,
    account::PASSWORD,
    account::UNREGISTER,
    echo::SPEC,
    who::SPEC,
    join::SPEC,
    leave::SPEC,
    rooms::SPEC,
    msg::SPEC,
    ignore::IGNORE,
    ignore::UNIGNORE,
    me::SPEC,
    history::SPEC,
    topic::SPEC,
    op::OP,
    op::DEOP,
    moderate::KICK,
    moderate::BAN,
    moderate::UNBAN,
    moderate::MUTE,
    moderate::UNMUTE,
    moderate::INVITE,
    moderate::MODE,
    oper::OPER,
    oper::KILL,
    metrics::SPEC,
    throughput::SPEC,
    quit::SPEC,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Time,
    Ping(ping::Ping),
    Nick(nick::Nick),
    Account(account::Request),
    Echo(echo::Echo),
    Who(who::Who),
    Join(join::Join),
    Leave,
    Rooms,
    Msg(msg::Msg),
    Me(me::Me),
    History(history::History),
    Topic(topic::Topic),
    Op(op::Op),
    Moderate(moderate::Moderate),
    Kill(oper::Kill),
    Ignore(ignore::Ignore),
    Metrics(metrics::Metrics),
    Throughput,
    Quit,
}

/// Why a line starting with `/` is not a command we can run. `Display` is the reply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("Unknown command: /{0}. Type /help for the list.")]
    Unknown(String),
    /// A dash, not parentheses: several help texts hold parentheses of their own.
    #[error("Usage: {} - {}{}", .0.usage(), .0.help, .0.no_args_note())]
    Usage(&'static Spec),
}

/// Parses a line that starts with `/`. Pure, so it can be property-tested on arbitrary input.
pub fn parse(line: &str) -> Result<Command, ParseError> {
    let body = line.strip_prefix('/').unwrap_or(line);
    let (name, args) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
    let spec = COMMANDS
        .iter()
        .find(|spec| spec.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| ParseError::Unknown(name.to_owned()))?;
    (spec.parse)(args.trim()).ok_or(ParseError::Usage(spec))
}

/// What the session does after a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
    /// An account request, which the session awaits (hashing runs off the runtime thread).
    Account(account::Request),
    /// `/join` or (`leave`) `/leave` on a cluster: the session reads the room's history from
    /// the stream first, then moves (docs/CLUSTER.md, "Scrollback and /history").
    Move {
        room: String,
        leave: bool,
    },
    /// Whom the caller ignores changed: the session writes it to the caller's account.
    KeepIgnores,
    /// `/nick` on a cluster: the session waits for the broker to give the name.
    Rename(String),
    /// `/nick` to a registered name: the session asks for (or checks) its password.
    Claim {
        name: String,
        password: Option<crate::accounts::Secret>,
    },
}

/// What a command may touch: the server, and the client that typed it.
#[derive(Debug)]
pub struct Ctx<'a> {
    pub shared: &'a Shared,
    pub member: &'a Arc<Member>,
    /// The caller's current nickname; `/nick` replaces it.
    pub nick: &'a mut Arc<str>,
    /// The rooms the caller has left, so coming back shows only what is new.
    pub visits: &'a mut Visits,
}

impl Ctx<'_> {
    /// Queues a reply for the caller. A reply that does not fit kicks the caller as a slow
    /// consumer, which its session notices; there is nothing more to do here.
    pub fn reply(&self, text: impl std::fmt::Display) {
        let _ = self.member.push(format!("{text}\n").into());
    }

    /// On a cluster, the server that `nick` is on when that is not this one: a room change
    /// naming them would otherwise read "nobody called ... is connected".
    pub fn on_another_server(&self, nick: &str) -> Option<String> {
        let cluster = self.shared.cluster.as_ref()?;
        if self.shared.hub.find(nick).is_some() {
            return None;
        }
        cluster.person(nick).map(|(node, _)| node)
    }

    /// Someone on server `node` of the cluster called `nick`, if that server's lists have
    /// them in the caller's room; else the error a change naming them answers.
    pub fn in_room_elsewhere(
        &self,
        nick: &str,
        node: &str,
    ) -> Result<crate::cluster::Person, crate::core::names::RoomError> {
        use crate::core::names::RoomError;
        let room = self
            .shared
            .hub
            .room(self.member.id, crate::core::hub::Whither::Current)?
            .name;
        self.shared
            .cluster
            .as_ref()
            .and_then(|c| c.person(nick))
            .and_then(|(n, p)| (n == node).then_some(p))
            .filter(|p| p.rooms.iter().any(|r| r.eq_ignore_ascii_case(&room)))
            .ok_or_else(|| RoomError::NotInRoom {
                nick: nick.to_owned(),
                room,
            })
    }

    /// Counts a message the caller sent (a private message or an action) the way a chat line
    /// is counted, with the recipients it reached.
    pub fn count_message(&self, delivered: usize) {
        self.shared
            .metrics
            .count_message(&self.member.stats, delivered);
    }
}

impl Command {
    /// Flood-control lines this command costs beyond its own ([`crate::proto::conn::cost`]).
    pub fn extra_cost(&self) -> u32 {
        use crate::proto::conn::cost;
        match self {
            Command::Metrics(metrics::Metrics { nick: None }) => cost::METRICS,
            Command::Rooms => cost::ROOMS,
            Command::Who(_) => cost::WHO,
            Command::History(_) => cost::HISTORY,
            _ => 0,
        }
    }

    pub fn run(self, ctx: &mut Ctx<'_>) -> Flow {
        match self {
            Command::Help => help::run(ctx),
            Command::Time => time::run(ctx),
            Command::Ping(cmd) => cmd.run(ctx),
            Command::Nick(cmd) => cmd.run(ctx),
            Command::Account(request) => Flow::Account(request),
            Command::Echo(cmd) => cmd.run(ctx),
            Command::Who(cmd) => cmd.run(ctx),
            Command::Join(cmd) => cmd.run(ctx),
            Command::Leave => leave::run(ctx),
            Command::Rooms => rooms::run(ctx),
            Command::Msg(cmd) => cmd.run(ctx),
            Command::Me(cmd) => cmd.run(ctx),
            Command::History(cmd) => cmd.run(ctx),
            Command::Topic(cmd) => cmd.run(ctx),
            Command::Op(cmd) => cmd.run(ctx),
            Command::Moderate(cmd) => cmd.run(ctx),
            Command::Kill(cmd) => cmd.run(ctx),
            Command::Ignore(cmd) => cmd.run(ctx),
            Command::Metrics(cmd) => cmd.run(ctx),
            Command::Throughput => throughput::run(ctx),
            Command::Quit => quit::run(ctx),
        }
    }
}

/// `<nick> [reason]` (`/kick`, `/kill`): the first word, and the rest if there is any.
fn nick_and_reason(args: &str) -> Option<(String, Option<String>)> {
    let (nick, reason) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
    let reason = reason.trim();
    (!nick.is_empty()).then(|| {
        let reason = (!reason.is_empty()).then(|| reason.to_owned());
        (nick.to_owned(), reason)
    })
}

/// For commands that take no arguments.
fn no_args(args: &str, command: Command) -> Option<Command> {
    args.is_empty().then_some(command)
}

/// For commands that take exactly one word (a nickname, a room, a mask, a password).
fn one_word(args: &str) -> Option<String> {
    (!args.is_empty() && !args.contains(char::is_whitespace)).then(|| args.to_owned())
}

/// For commands that take one word or, to list something, none: `Some(None)` for none.
fn at_most_one_word(args: &str) -> Option<Option<String>> {
    if args.is_empty() {
        Some(None)
    } else {
        one_word(args).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_case_insensitively_with_arguments() {
        assert_eq!(parse("/TIME"), Ok(Command::Time));
        assert_eq!(
            parse("/nick  Bob "),
            Ok(Command::Nick(nick::Nick {
                name: "Bob".into(),
                password: None
            }))
        );
        assert_eq!(
            parse("/echo  two  spaces"),
            Ok(Command::Echo(echo::Echo {
                message: "two  spaces".into()
            }))
        );
        assert_eq!(
            parse("/ping"),
            Ok(Command::Ping(ping::Ping { token: None }))
        );
    }

    #[test]
    fn errors_say_what_to_do() {
        assert_eq!(
            parse("/foo bar").unwrap_err().to_string(),
            "Unknown command: /foo. Type /help for the list."
        );
        assert_eq!(
            parse("/nick").unwrap_err().to_string(),
            "Usage: /nick <name> [password] - change your nickname (a registered one needs its password)"
        );
        assert_eq!(
            parse("/time now").unwrap_err().to_string(),
            "Usage: /time - show the server's time (UTC); it takes no arguments"
        );
        assert!(parse("/nick a b c").is_err());
        assert!(parse("/time now").is_err());
        assert!(parse("/echo").is_err());
    }

    #[test]
    fn every_command_is_listed_once() {
        let mut names: Vec<_> = COMMANDS.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COMMANDS.len());
    }
}
