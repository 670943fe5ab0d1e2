//! What every session shares: the settings, the hub, the server-wide figures, and the
//! shutdown signal.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::accounts::Accounts;
use crate::cluster::{Cluster, Person};
use crate::config::{Config, Live, Reloader};
use crate::core::hub::RoomInfo;
use crate::core::{Hub, MemberId};
use crate::net::gate::Gate;
use crate::net::tls::Certs;
use crate::ops::metrics::ServerMetrics;
use crate::ops::snapshot::Snapshot;

#[derive(Debug)]
pub struct Shared {
    /// The configuration the server started with. What a reload may change
    /// ([`crate::config::RELOADABLE`]) is read from [`Shared::live`] instead.
    pub config: Config,
    pub live: Live,
    /// Reads the configuration again on SIGHUP or `REHASH`; `None` when nothing can be read
    /// again (a server started from a `Config` alone, as tests do).
    pub reloader: Option<Box<dyn Reloader>>,
    /// Asks for a reload from outside the runtime (the binary's SIGHUP handler); the
    /// server's reload task waits on it.
    pub reload_requests: std::sync::Arc<Notify>,
    /// Admission: the connection caps and the per-address limits.
    pub gate: Gate,
    pub hub: Hub,
    /// Registered nicknames (`--data-dir`); both protocols prove them here.
    pub accounts: Accounts,
    /// The other servers of the chat (`--cluster`); `None` for a server on its own.
    pub cluster: Option<Arc<Cluster>>,
    pub metrics: ServerMetrics,
    /// Cancelled once, when the server starts shutting down.
    pub shutdown: CancellationToken,
    pub reports: Reports,
    /// The certificate TLS listeners serve; `None` without `--tls-cert`.
    pub tls: Option<Arc<Certs>>,
}

impl Shared {
    /// Everyone on the other nodes (node, person) as listings show them to `asker`: a
    /// secret room `asker` is not in is left out of each person's rooms, whether this node
    /// knows the flag (it follows the room) or only the person's node does (its heartbeat).
    pub fn remote_people(&self, asker: MemberId) -> Vec<(String, Person)> {
        let Some(cluster) = &self.cluster else {
            return Vec::new();
        };
        let mine = self.hub.rooms_of(asker);
        let hidden = |room: &str| self.hub.hidden_from(asker, room) == Some(true);
        cluster
            .people()
            .into_iter()
            .map(|(node, person)| (node, person.seen_from(&mine, hidden)))
            .collect()
    }

    /// The person on another node called `nick`, as listings show them to `asker` (as
    /// [`Shared::remote_people`] does, for one person).
    pub fn remote_person(&self, asker: MemberId, nick: &str) -> Option<(String, Person)> {
        let (node, person) = self.cluster.as_ref()?.person(nick)?;
        let mine = self.hub.rooms_of(asker);
        let hidden = |room: &str| self.hub.hidden_from(asker, room) == Some(true);
        Some((node, person.seen_from(&mine, hidden)))
    }

    /// Reads the configuration again and applies what can change while the server runs: the
    /// [`crate::config::RELOADABLE`] settings, for everyone and at once, with nobody
    /// disconnected. Returns the report that was logged, or why nothing changed.
    ///
    /// Reading a config file blocks this thread for as long as that takes; it is one small
    /// file, read when an operator asks.
    pub fn reload(&self) -> Result<String, String> {
        let Some(reloader) = &self.reloader else {
            tracing::info!("reload asked for: there is no configuration to read again");
            return Err("this server has no configuration to read again".to_owned());
        };
        match reloader.reload() {
            Ok(mut new) => {
                let before = self.live.get();
                let running = self.live.set(&new.config);
                // The flag names a file; a new text in the same file is a change the
                // comparison of settings cannot see.
                if before.motd != running.motd && !new.report.contains("motd ") {
                    const NEW_TEXT: &str = "motd (a new text in the file)";
                    new.report = match new.report.strip_prefix("applied ") {
                        Some(rest) => format!("applied {NEW_TEXT}, {rest}"),
                        None => match new.report.split_once(';') {
                            Some((_, rest)) => format!("applied {NEW_TEXT};{rest}"),
                            None => format!("applied {NEW_TEXT}"),
                        },
                    };
                }
                self.gate.update(&running);
                let floor = 2 * self.hub.settings().budget;
                if running.queue_bytes < floor {
                    tracing::warn!(
                        queue_bytes = running.queue_bytes,
                        floor,
                        "new connections get queues of {floor} bytes, not less, until a restart: \
                         the history shown on entering a room is sized from the queue-bytes the \
                         server started with"
                    );
                }
                tracing::info!(source = %reloader.source(), "configuration reloaded: {}", new.report);
                reloader.after();
                Ok(new.report)
            }
            Err(e) => {
                tracing::warn!(source = %reloader.source(), "configuration not reloaded, the running one stays: {e}");
                Err(e)
            }
        }
    }
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

    fn by_protocol(&self) -> Vec<(&'static str, u64)> {
        let counts = self.hub.by_protocol();
        crate::core::member::PROTOCOLS
            .into_iter()
            .zip(counts.map(|n| n as u64))
            .collect()
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

    fn tls(&self) -> Option<&Certs> {
        self.tls.as_deref()
    }

    fn cluster(&self) -> Option<crate::ops::prom::ClusterStats> {
        let cluster = self.cluster.as_ref()?;
        let here = (cluster.node().to_owned(), self.hub.len() as u64);
        let elsewhere = cluster.people_by_node().into_iter();
        let people = std::iter::once(here)
            .chain(elsewhere.map(|(node, n)| (node, n as u64)))
            .collect();
        Some(crate::ops::prom::ClusterStats {
            link_up: cluster.link_up(),
            people,
            nodes_heard: cluster.peers() as u64,
            not_relayed: cluster.dropped.load(std::sync::atomic::Ordering::Relaxed),
            given_up: cluster.given_up(),
        })
    }

    fn logins(&self) -> Option<(u64, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        let a = &self.accounts;
        self.config
            .data_dir
            .is_some()
            .then(|| (a.failed.load(Relaxed), a.throttled.load(Relaxed)))
    }
}
