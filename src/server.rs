//! The accept loop: binds, admits connections up to the limit, starts a session for each, and
//! on shutdown stops accepting and waits (with a deadline) for every session to flush. Beside
//! it run the optional [`Extras`]: the metrics endpoint and the transcript writer.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{field, info_span, Instrument};

use crate::config::Config;
use crate::hub::{HistoryConfig, Hub};
use crate::metrics::ServerMetrics;
use crate::session;
use crate::transcript::Transcript;

/// State every session shares.
#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    pub hub: Hub,
    pub metrics: ServerMetrics,
    /// Cancelled once, when the server starts shutting down.
    pub shutdown: CancellationToken,
}

/// Why the server could not start. The messages are written for the person starting it.
#[derive(Debug, Error)]
pub enum Error {
    #[error(
        "cannot listen on {addr}: port {port} is already in use (another linechat, or another \
         program). Stop it, or pick another port with --port N or --listen HOST:PORT."
    )]
    AddrInUse { addr: SocketAddr, port: u16 },
    #[error(
        "cannot listen on {addr}: permission denied (ports below 1024 need privileges). Pick a \
         port of 1024 or above with --port N."
    )]
    PermissionDenied { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error(
        "cannot serve metrics on {addr}: {}. Pick another address with --metrics-addr HOST:PORT.",
        describe_bind_error(.cause, .addr)
    )]
    MetricsBind { addr: SocketAddr, cause: io::Error },
}

fn describe_bind_error(e: &io::Error, addr: &SocketAddr) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => format!("port {} is already in use", addr.port()),
        io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need privileges)".into()
        }
        _ => e.to_string(),
    }
}

/// Binds the metrics endpoint's socket (see [`crate::prom`]).
pub async fn bind_metrics(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|cause| Error::MetricsBind { addr, cause })
}

/// What a server may run besides chat. Each is set up before [`run_with`], so that a port in
/// use or a path that cannot be written is reported when the server starts.
#[derive(Debug, Default)]
pub struct Extras {
    /// Serves `/metrics` and `/healthz` over HTTP; from [`bind_metrics`].
    pub metrics: Option<TcpListener>,
    /// Where every chat event is appended.
    pub transcript: Option<Transcript>,
}

/// Binds the listening socket, turning the usual failures into advice.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| match source.kind() {
            io::ErrorKind::AddrInUse => Error::AddrInUse {
                addr,
                port: addr.port(),
            },
            io::ErrorKind::PermissionDenied => Error::PermissionDenied { addr },
            _ => Error::Bind { addr, source },
        })
}

/// Extra time, beyond the flush grace, that shutdown gives sessions to close their sockets
/// (the lingering close that keeps a final line from being lost to a reset).
const CLOSE_ALLOWANCE: Duration = Duration::from_secs(2);

/// Back-off when `accept` fails for lack of resources (EMFILE and the like): retrying at once
/// would spin, and descriptors free up only as clients leave.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves chat on `listener` until `shutdown` completes, then tells every client, flushes what
/// is queued (up to `config.shutdown_grace`), and returns.
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future) {
    run_with(listener, Extras::default(), config, shutdown).await
}

/// [`run`], with the metrics endpoint and the transcript when `extras` has them.
pub async fn run_with(
    listener: TcpListener,
    extras: Extras,
    config: Config,
    shutdown: impl Future,
) {
    let grace = config.shutdown_grace;
    let permits = Arc::new(Semaphore::new(config.max_clients));
    let max_clients = config.max_clients;
    let metrics = ServerMetrics::default();
    let hub = Hub::with_history(HistoryConfig::from_config(&config))
        .with_announce_limit(config.announce_limit);
    let (hub, transcript) = match extras
        .transcript
        .map(|t| t.start(metrics.transcript.clone()))
    {
        None => (hub, None),
        Some(Ok((recorder, writer))) => (hub.with_transcript(recorder), Some(writer)),
        Some(Err(e)) => {
            tracing::error!(error = %e, "cannot start the transcript writer; chat goes on without it");
            (hub, None)
        }
    };
    let shared = Arc::new(Shared {
        config,
        hub,
        metrics,
        shutdown: CancellationToken::new(),
    });
    // The endpoint outlives the chat listener, so /healthz can say 503 while clients flush.
    let stop_metrics = CancellationToken::new();
    let metrics_task = extras.metrics.map(|listener| {
        tokio::spawn(crate::prom::serve(
            listener,
            shared.clone(),
            stop_metrics.clone(),
        ))
    });
    let tracker = TaskTracker::new();
    let next_id = AtomicU64::new(1);
    match listener.local_addr() {
        Ok(addr) => tracing::info!(%addr, "listening"),
        Err(e) => tracing::warn!(error = %e, "listening (address unknown)"),
    }

    tracker.spawn(presence_ticker(shared.clone()));

    tokio::pin!(shutdown);
    let mut starved = Starved::default();
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    starved.recovered();
                    conn
                }
                Err(e) => {
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = starved.accept_failed(&e) => continue,
                    }
                }
            },
        };
        shared.metrics.connections_accepted.fetch_add(1, Relaxed);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            shared
                .metrics
                .connections_refused_full
                .fetch_add(1, Relaxed);
            refuse_full(stream, peer, max_clients);
            continue;
        };
        let id = next_id.fetch_add(1, Relaxed);
        let span = info_span!("conn", %peer, id, nick = field::Empty);
        tracker.spawn(session::run(shared.clone(), stream, peer, id, permit).instrument(span));
    }

    drop(listener);
    tracing::info!(
        clients = tracker.len(),
        "shutting down: no longer accepting, telling clients"
    );
    shared.shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(grace + CLOSE_ALLOWANCE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = tracker.len(),
            "shutdown deadline passed with connections still flushing; closing them"
        );
    }
    if let Some(writer) = transcript {
        writer.close(grace).await;
    }
    stop_metrics.cancel();
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    tracing::info!("shutdown complete");
}

/// Sends big rooms their arrivals-and-departures summary every `presence_interval`.
async fn presence_ticker(shared: Arc<Shared>) {
    let period = shared.config.presence_interval;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = ticks.tick() => shared.hub.summarize_presence(period.as_secs()),
        }
    }
}

/// How often a server that stays out of descriptors says so again.
const STARVED_LOG_EVERY: Duration = Duration::from_secs(10);

/// Accept failures for lack of resources: logged when they start, every
/// [`STARVED_LOG_EVERY`] while they last and when they end, not on every retry.
#[derive(Debug, Default)]
struct Starved {
    since: Option<tokio::time::Instant>,
    last_logged: Option<tokio::time::Instant>,
    retries: u64,
}

impl Starved {
    async fn accept_failed(&mut self, e: &io::Error) {
        match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                let now = tokio::time::Instant::now();
                self.retries += 1;
                if self.since.is_none() {
                    self.since = Some(now);
                    self.last_logged = Some(now);
                    tracing::error!(
                        error = %e,
                        "cannot accept: out of resources; serving existing clients and retrying \
                         every {ACCEPT_BACKOFF:?}"
                    );
                } else if self
                    .last_logged
                    .is_some_and(|at| now.duration_since(at) >= STARVED_LOG_EVERY)
                {
                    self.last_logged = Some(now);
                    tracing::warn!(error = %e, retries = self.retries, "still cannot accept");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
            // The peer gave up between SYN and accept: nothing to do.
            Some(libc::ECONNABORTED | libc::EPROTO | libc::EPERM) => {
                tracing::debug!(error = %e, "connection aborted before accept");
            }
            _ => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }

    fn recovered(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                after = ?since.elapsed(),
                retries = self.retries,
                "accepting again"
            );
            self.retries = 0;
            self.last_logged = None;
        }
    }
}

/// Answers a connection over the limit with one line and closes it, without ever waiting on
/// it: the line fits any fresh socket's send buffer, and a peer that is not reading loses
/// nothing it did not ask for.
fn refuse_full(stream: TcpStream, peer: SocketAddr, max_clients: usize) {
    let msg =
        format!("Error: the server is full ({max_clients} connections); please try again later.\n");
    let _ = stream.try_write(msg.as_bytes());
    tracing::info!(%peer, max_clients, "refused connection: server full");
}
