//! The netcat line protocol (docs/PROTOCOL.md, version 1): a nickname prompt, then plain
//! lines, `/` commands, and sentences for everything that happens in the user's one room.

pub mod cmd;
pub mod render;
pub mod session;
pub mod visits;
mod words;

pub use session::run;
