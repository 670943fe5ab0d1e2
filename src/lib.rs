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
//! - [`hub`]: who is connected under which nickname and in which room; fan-out to bounded
//!   per-client queues. It never does socket I/O and never holds its lock across an `.await`.
//! - [`outbox`]: a client's byte-bounded outgoing queue.
//! - [`room`]: a room's members, topic and bounded history; room names; history rendering.
//! - [`cmd`]: the command table and one module per command.
//! - [`metrics`]: counters, rate windows, the fan-out and RTT histograms, `TCP_INFO` sampling.
//! - [`prom`]: the HTTP endpoint for Prometheus (`/metrics`) and health checks (`/healthz`).
//! - [`transcript`]: chat events appended to a JSON-lines file by a writer thread.
//! - [`sockopt`]: keepalive and `TCP_USER_TIMEOUT`, so vanished peers are detected.
//! - [`config`]: the settings and their defaults.

pub mod cmd;
pub mod codec;
pub mod config;
pub mod hub;
pub mod metrics;
pub mod outbox;
pub mod prom;
pub mod room;
pub mod server;
pub mod session;
pub mod sockopt;
pub mod transcript;

pub use config::Config;

/// The git commit this was built from (`unknown` outside a git checkout); see `build.rs`.
pub const GIT_COMMIT: &str = env!("LINECHAT_GIT_COMMIT");
