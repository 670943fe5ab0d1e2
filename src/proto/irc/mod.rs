//! IRC (RFC 1459/2812 with the IRCv3 capabilities docs/PROTOCOL.md lists): the same people,
//! rooms and history as every other protocol, seen as ordinary IRC. A room `dev` is the
//! channel `#dev`.

pub mod message;
pub mod render;
mod session;

pub use session::run;
