//! linechat: a concurrent TCP chat server for `nc localhost 4000`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), linechat::server::Error> {
//! let listener = linechat::server::bind("127.0.0.1:0".parse().unwrap()).await?;
//! linechat::server::run(listener, linechat::Config::default(), tokio::signal::ctrl_c()).await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`server`]: the accept loop, the connection limit, shutdown.
//! - [`session`]: one connection: reads lines, runs commands, and its writer task drains the
//!   client's queue to the socket.
//! - [`codec`]: line framing, the length bound and the text policy.
//! - [`hub`]: who is connected under which nickname; fan-out to bounded per-client queues. It
//!   never does socket I/O and never holds its lock across an `.await`.
//! - [`cmd`]: the command table and one module per command.
//! - [`metrics`]: counters, rate windows, the fan-out histogram, `TCP_INFO` sampling.
//! - [`sockopt`]: keepalive and `TCP_USER_TIMEOUT`, so vanished peers are detected.
//! - [`config`]: the settings and their defaults.

pub mod cmd;
pub mod codec;
pub mod config;
pub mod hub;
pub mod metrics;
pub mod server;
pub mod session;
pub mod sockopt;

pub use config::Config;
