//! What every session shares: the settings, the hub, the server-wide figures, and the
//! shutdown signal.

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::core::Hub;
use crate::net::gate::Gate;
use crate::ops::metrics::ServerMetrics;

#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    /// Admission: the connection caps and the per-address limits.
    pub gate: Gate,
    pub hub: Hub,
    pub metrics: ServerMetrics,
    /// Cancelled once, when the server starts shutting down.
    pub shutdown: CancellationToken,
}

impl crate::ops::prom::Source for Shared {
    fn metrics(&self) -> &ServerMetrics {
        &self.metrics
    }

    fn queue_totals(&self) -> (usize, usize, usize) {
        self.hub.queue_totals()
    }

    fn history(&self) -> (usize, usize, u64) {
        let (kept, evicted) = self.hub.history_usage();
        (kept, self.config.history_bytes, evicted)
    }

    fn addresses_tracked(&self) -> usize {
        self.gate.tracked()
    }

    fn shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }
}
