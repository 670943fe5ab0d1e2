//! Operations: the server-wide figures, the Prometheus endpoint that exposes them, and the
//! transcript of chat events.

pub mod metrics;
pub mod prom;
pub mod snapshot;
pub mod transcript;
