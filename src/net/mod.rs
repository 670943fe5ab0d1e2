//! The network: listeners and their accept loop, and socket options. Nothing here knows what
//! a connection speaks; `crate::server` hands each accepted stream to its protocol.
//!
//! The transport seam is [`stream`]: a listener hands a protocol a [`stream::Stream`] (TCP, or
//! a layer on it such as TLS), `crate::proto::conn` reads and writes it only through
//! [`stream::Transport`], and a member reaches its transport's figures only through
//! `crate::core::member::Probe`.

pub mod cidr;
pub mod gate;
pub mod listen;
pub mod sockopt;
pub mod stream;
pub mod tls;
