//! linechat: one chat hub for every client — netcat, IRC, and (later) browsers.
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
//! The layers, each importing only those above it in this list:
//!
//! - [`core`]: the protocol-neutral hub. Members (a bounded outbox, no socket), rooms, events
//!   and their per-format rendering cache, nickname and room rules, typed errors. No I/O.
//! - [`store`]: the embedded store (`--data-dir`): rooms, topics and history in a log of
//!   segment files, behind the hub's [`core::store::Store`] interface.
//! - [`accounts`]: registered nicknames and their argon2id hashes (`accounts.json` in the
//!   data directory), hashed on blocking threads, failed attempts throttled.
//! - [`cluster`]: the link to the other servers of a cluster over NATS (`--cluster`): the
//!   hub's relay out, remote messages in, nickname claims. See docs/CLUSTER.md.
//! - [`net`]: listeners (`--listen URL`), the accept loop, socket options.
//! - [`ops`]: server-wide metrics, the Prometheus endpoint, the transcript.
//! - [`context`]: what every session shares (settings, hub, metrics, shutdown), and
//!   [`context::Shared::reload`].
//! - [`proto`]: the protocols. [`proto::conn`] is the connection machinery they share
//!   (reading, framing, flood control, timers, the writer); [`proto::line`] is netcat's,
//!   [`proto::irc`] IRC's; each renders events and words errors its own way.
//! - [`server`]: wires it together: one accept loop per listener, shutdown.
//! - [`config`]: the settings and their defaults, and [`config::Live`]: those a reload
//!   (SIGHUP, IRC `REHASH`) changes while the server runs.

pub mod accounts;
pub mod cluster;
pub mod config;
pub mod context;
pub mod core;
pub mod net;
pub mod ops;
pub mod proto;
pub mod server;
pub mod store;

pub use config::Config;

/// The git commit this was built from (`unknown` outside a git checkout); see `build.rs`.
pub const GIT_COMMIT: &str = env!("LINECHAT_GIT_COMMIT");
