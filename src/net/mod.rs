//! The network: listeners and their accept loop, and socket options. Nothing here knows what
//! a connection speaks; `crate::server` hands each accepted stream to its protocol.
//!
//! The transport seam: a session reads and writes an accepted `TcpStream` through
//! `crate::proto::conn`, and a member reaches its transport's figures only through
//! `crate::core::member::Probe`, so a TLS or WebSocket transport slots in there.

pub mod cidr;
pub mod gate;
pub mod listen;
pub mod sockopt;
