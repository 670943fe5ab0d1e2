//! `/register <password>`, `/identify <password>`, `/password <new password>`, `/unregister`:
//! accounts for nicknames. Hashing takes tens of milliseconds on a blocking thread, so these
//! hand a [`Request`] back to the session, which awaits it; the table here is only grammar.

use super::{Command, Spec};
use crate::accounts::Secret;

/// What the session is asked to do with the accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Register(Secret),
    /// Proves the name the caller asked for last (`/nick` to a registered name), or their own.
    Identify(Secret),
    Password(Secret),
    Unregister,
    /// `/oper <name> <password>`: become server operator `name`.
    Oper {
        name: String,
        password: Secret,
    },
}

/// One word: `nick password` at the prompt and `/nick name password` split on spaces.
fn word(args: &str) -> Option<Secret> {
    super::one_word(args).map(Secret)
}

pub const REGISTER: Spec = Spec {
    name: "register",
    args: "<password>",
    help: "register your nickname, so only you can use it",
    parse: |args| word(args).map(|p| Command::Account(Request::Register(p))),
};

pub const IDENTIFY: Spec = Spec {
    name: "identify",
    args: "<password>",
    help: "prove a registered nickname is yours (after /nick to it, or at the prompt)",
    parse: |args| word(args).map(|p| Command::Account(Request::Identify(p))),
};

pub const PASSWORD: Spec = Spec {
    name: "password",
    args: "<new password>",
    help: "change your registered nickname's password",
    parse: |args| word(args).map(|p| Command::Account(Request::Password(p))),
};

pub const UNREGISTER: Spec = Spec {
    name: "unregister",
    args: "",
    help: "drop your nickname's registration",
    parse: |args| super::no_args(args, Command::Account(Request::Unregister)),
};
