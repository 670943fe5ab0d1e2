//! The protocols: how each kind of client talks to the core. Each renders events its own way
//! and words the core's typed errors its own way; all share the connection machinery in
//! [`conn`] and the framing in [`codec`].

use crate::core::Render;

pub mod codec;
pub mod conn;
pub mod ignore;
pub mod irc;
pub mod line;
pub mod oper;
pub mod rename;
pub mod web;

/// Every format the hub renders events for; a member's format is its index here.
pub static FORMATS: [&'static dyn Render; 5] = [
    &line::render::LINE,
    &irc::render::PLAIN,
    &irc::render::TAGGED,
    &irc::render::ACCOUNT,
    &irc::render::TAGGED_ACCOUNT,
];

/// The line protocol's slot in [`FORMATS`].
pub const LINE: usize = 0;
/// IRC without message tags.
pub const IRC: usize = 1;
/// IRC with `time` and `msgid` tags (`server-time` or `message-tags`).
pub const IRC_TAGGED: usize = 2;
/// IRC with the sender's `account` tag only (`account-tag`).
pub const IRC_ACCOUNT: usize = 3;
/// IRC with `time`, `msgid` and `account` tags.
pub const IRC_TAGGED_ACCOUNT: usize = 4;
