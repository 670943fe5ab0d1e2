//! What every session shares: the settings, the hub, the server-wide figures, and the
//! shutdown signal.

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::core::hub::RoomInfo;
use crate::core::Hub;
use crate::net::gate::Gate;
use crate::ops::metrics::ServerMetrics;
use crate::ops::snapshot::Snapshot;

#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    /// Admission: the connection caps and the per-address limits.
    pub gate: Gate,
    pub hub: Hub,
    pub metrics: ServerMetrics,
    /// Cancelled once, when the server starts shutting down.
    pub shutdown: CancellationToken,
    pub reports: Reports,
}

/// The reports whose work grows with the server, each rebuilt at most [`Reports::PER_SEC`]
/// times a second however many ask: together with their cost in flood control, this is what
/// keeps them from being a way to take the CPU from everyone else.
#[derive(Debug)]
pub struct Reports {
    /// The `/metrics` text (also `/msg linechat metrics`).
    pub metrics: Snapshot<String>,
    /// Every room, secret ones included, fullest first: `/rooms` and `/metrics` pick theirs.
    pub rooms: Snapshot<Vec<RoomInfo>>,
}

impl Reports {
    pub const PER_SEC: u32 = 10;
}

impl Default for Reports {
    fn default() -> Self {
        Reports {
            metrics: Snapshot::new(Self::PER_SEC),
            rooms: Snapshot::new(Self::PER_SEC),
        }
    }
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

    fn store(&self) -> Option<crate::core::store::StoreStats> {
        self.hub.store().map(|s| s.stats())
    }
}
