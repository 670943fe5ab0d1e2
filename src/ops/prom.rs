//! The monitoring endpoint: `GET /metrics` in the Prometheus text exposition format and
//! `GET /healthz` for load balancers and orchestrators, over HTTP/1.1.
//!
//! Nothing here is updated on the chat path. A scrape reads the same atomics and histograms the
//! chat `/metrics` command reads ([`ServerMetrics`]) through a custom [`Collector`], so the two
//! can never disagree and chat pays nothing for being monitored. Histogram buckets are derived
//! from the HDR histograms at scrape time. Labels are few and fixed (a disconnect reason, a
//! refusal reason, the build): never a nickname or an address, whose number has no bound.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::LeaveReason;
use crate::net::gate::Refusal;
use crate::net::listen::accept_loop;
use crate::net::tls::{Certs, Failure};
use crate::ops::metrics::{Buckets, ServerMetrics};

/// What the endpoint reads: the server-wide figures, the queues, and whether the server is
/// shutting down (for `/healthz`).
pub trait Source: Send + Sync + fmt::Debug + 'static {
    fn metrics(&self) -> &ServerMetrics;
    /// `(members, bytes queued for them, the most for one)`.
    fn queue_totals(&self) -> (usize, usize, usize);
    /// Members per protocol (`line`, `irc`, `web`).
    fn by_protocol(&self) -> Vec<(&'static str, u64)>;
    /// `(bytes of history kept, the limit, events evicted to stay within it)`.
    fn history(&self) -> (usize, usize, u64);
    /// Source addresses the per-address limits are keeping an entry for now.
    fn addresses_tracked(&self) -> usize;
    fn shutting_down(&self) -> bool;
    /// The store's figures, with `--data-dir`.
    fn store(&self) -> Option<crate::core::store::StoreStats> {
        None
    }

    /// The TLS certificate and handshake counters, when TLS is configured.
    fn tls(&self) -> Option<&Certs> {
        None
    }

    /// `(wrong passwords, attempts refused by throttling)` since start, with accounts.
    fn logins(&self) -> Option<(u64, u64)> {
        None
    }

    /// The cluster link's figures, with `--cluster`.
    fn cluster(&self) -> Option<ClusterStats> {
        None
    }
}

/// What a node of a cluster shows of it. Node names are few and the operator's own, so they
/// may be a label.
#[derive(Debug, Clone, Default)]
pub struct ClusterStats {
    pub link_up: bool,
    /// People by node, this one included.
    pub people: Vec<(String, u64)>,
    /// Other nodes this one hears from.
    pub nodes_heard: u64,
    /// This node's events whose cluster copy was dropped (queue full, or not acknowledged
    /// within the broker's duplicate window).
    pub not_relayed: u64,
    /// Other nodes' events given up after waiting for a gap in their order.
    pub given_up: u64,
}

type Shared = dyn Source;

/// The exposition format version Prometheus negotiates for text.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Fan-out bucket bounds in seconds: a few microseconds for a small room, milliseconds for
/// ten thousand recipients, and room above for a stalled thread.
pub const FANOUT_BUCKETS: &[f64] = &[
    2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05,
    0.1, 0.25,
];

/// TCP round-trip bucket bounds in seconds: loopback and LAN (tens of microseconds) through
/// intercontinental links and congested mobile ones (seconds).
pub const RTT_BUCKETS: &[f64] = &[
    2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5,
];

/// Concurrent HTTP connections served. Monitoring needs a handful, and this port must not
/// become a way to exhaust the server's descriptors: a connection beyond it takes the place of
/// the one that has been quiet longest (see [`Slots`]), so idle connections can never keep a
/// health check out. Twice tokio's per-poll budget (128): a burst of accepts in one poll of
/// the accept loop cannot evict a connection accepted in it before its request is read, even
/// when every new connection evicts another (an attacker reconnecting at once).
const MAX_HTTP_CONNECTIONS: usize = 256;

/// A client must finish sending its request headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long in-flight scrapes may finish once the server stops.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A registry holding the linechat collector, prefixed `linechat_`.
pub fn registry(shared: Arc<Shared>) -> Registry {
    let mut registry = Registry::with_prefix("linechat");
    registry.register_collector(Box::new(ServerCollector { shared }));
    registry
}

/// The text exposition of `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail, and the collector's own encoding does not either.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
    out
}

/// Serves `/metrics` and `/healthz` on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    match listener.local_addr() {
        Ok(addr) => tracing::info!(%addr, "serving metrics"),
        Err(e) => tracing::warn!(error = %e, "serving metrics (address unknown)"),
    }
    let registry = Arc::new(registry(shared.clone()));
    let connections = TaskTracker::new();
    let slots = Arc::new(Slots::new(MAX_HTTP_CONNECTIONS));
    accept_loop(
        &listener,
        "metrics",
        stop.clone().cancelled_owned(),
        |stream, peer| {
            let (slot, evicted) = Slots::take(&slots);
            let registry = registry.clone();
            let shared = shared.clone();
            let stop = stop.clone();
            connections.spawn(async move {
                let active = slot.clone();
                let service = service_fn(move |req| {
                    active.touch();
                    let response = respond(&req, &registry, &*shared);
                    async move { Ok::<_, Infallible>(response) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                let result = tokio::select! {
                    result = conn.as_mut() => result,
                    _ = evicted.cancelled() => {
                        tracing::debug!(%peer, "metrics: quiet connection closed to make room");
                        Ok(())
                    }
                    _ = stop.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        tokio::time::timeout(CLOSE_GRACE, conn).await.unwrap_or(Ok(()))
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "metrics: connection ended with an error");
                }
            });
        },
    )
    .await;
    connections.close();
    let _ = tokio::time::timeout(CLOSE_GRACE, connections.wait()).await;
}

/// The endpoint's connections, at most `cap`, each with when it last began a request (or was
/// accepted). A new connection when all are taken evicts the one quiet longest: an idle or
/// half-sent connection, not one being answered (answering is immediate). So a health check,
/// which sends its request as soon as it connects, is answered however many idle connections
/// an attacker keeps open; to push it out before its request arrives, `cap` new connections
/// would have to arrive within that round trip.
#[derive(Debug)]
struct Slots {
    cap: usize,
    open: std::sync::Mutex<Open>,
}

/// The last id given out, and each open connection's last activity and eviction token.
type Open = (u64, HashMap<u64, (Instant, CancellationToken)>);

/// One connection's place in [`Slots`]; dropping it gives the place back.
#[derive(Debug)]
struct Slot {
    slots: Arc<Slots>,
    id: u64,
}

impl Slots {
    fn new(cap: usize) -> Slots {
        Slots {
            cap,
            open: std::sync::Mutex::default(),
        }
    }

    /// A place for a new connection, evicting the quietest if all are taken, and the token
    /// that says when this one is evicted in turn.
    fn take(slots: &Arc<Slots>) -> (Arc<Slot>, CancellationToken) {
        let mut open = crate::core::lock(&slots.open);
        if open.1.len() >= slots.cap {
            if let Some((&quietest, _)) = open.1.iter().min_by_key(|(_, (at, _))| *at) {
                if let Some((_, token)) = open.1.remove(&quietest) {
                    token.cancel();
                }
            }
        }
        open.0 += 1;
        let id = open.0;
        let token = CancellationToken::new();
        open.1.insert(id, (Instant::now(), token.clone()));
        let slot = Arc::new(Slot {
            slots: slots.clone(),
            id,
        });
        (slot, token)
    }
}

impl Slot {
    /// A request has begun: this connection is the least likely to be evicted.
    fn touch(&self) {
        if let Some(entry) = crate::core::lock(&self.slots.open).1.get_mut(&self.id) {
            entry.0 = Instant::now();
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        crate::core::lock(&self.slots.open).1.remove(&self.id);
    }
}

fn respond(req: &Request<Incoming>, registry: &Registry, shared: &Shared) -> Response<Full<Bytes>> {
    let readable = matches!(*req.method(), Method::GET | Method::HEAD);
    match (req.uri().path(), readable) {
        ("/metrics", true) => {
            let mut response = text(StatusCode::OK, encode(registry));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_TEXT));
            response
        }
        // Healthy means accepting chat clients: once shutdown starts, a load balancer should
        // send nobody new here.
        ("/healthz", true) if shared.shutting_down() => {
            text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into())
        }
        // Degraded is still 200: chat goes on, so a load balancer should keep sending people
        // here; alerting reads the body or linechat_store_degraded.
        ("/healthz", true) if shared.store().is_some_and(|s| s.degraded) => text(
            StatusCode::OK,
            "degraded: the data directory cannot be written; chat goes on in memory\n".into(),
        ),
        ("/healthz", true) => text(StatusCode::OK, "ok\n".into()),
        ("/metrics" | "/healthz", false) => {
            let mut response = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET and HEAD here\n".into(),
            );
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics or /healthz\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Reads the server's figures at scrape time.
#[derive(Debug)]
struct ServerCollector {
    shared: Arc<Shared>,
}

impl Collector for ServerCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let shared = &self.shared;
        let m: &ServerMetrics = shared.metrics();
        let (clients, queued, largest) = shared.queue_totals();

        info(
            &mut enc,
            "build",
            "The running build: crate version and git commit.",
            vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", crate::GIT_COMMIT),
            ],
        )?;
        let started = m
            .started
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        gauge(
            &mut enc,
            "start_time_seconds",
            "When the server started, in seconds since the Unix epoch.",
            started.as_secs_f64(),
        )?;

        gauge(
            &mut enc,
            "connections",
            "TCP connections open now, joined or still at the nickname prompt.",
            m.connections_open.load(Relaxed),
        )?;
        gauge(
            &mut enc,
            "clients",
            "Clients that have chosen a nickname and are in the chat now.",
            clients as u64,
        )?;
        labeled(
            &mut enc,
            "clients_by_protocol",
            "Clients in the chat now by how they came: line (netcat), irc, web (WebSocket, \
             whichever protocol it carries).",
            "protocol",
            &shared.by_protocol(),
            ConstGauge::new,
        )?;
        counter(
            &mut enc,
            "connections_accepted",
            "TCP connections accepted, including those then refused.",
            m.connections_accepted.load(Relaxed),
        )?;
        let refused: Vec<_> = Refusal::ALL
            .iter()
            .map(|&r| (r.label(), m.refused(r)))
            .collect();
        labeled_counter(
            &mut enc,
            "connections_refused",
            "Connections refused, by reason: server_full (--max-clients reached), per_address \
             (--max-per-ip), connect_rate (--connect-rate), prompt_full (--max-prompt).",
            "reason",
            &refused,
        )?;
        gauge(
            &mut enc,
            "tracked_addresses",
            "Source addresses (IPv6: /64s) the per-address limits keep an entry for now: those \
             with connections open or whose connection-rate allowance is refilling.",
            shared.addresses_tracked() as u64,
        )?;
        let disconnects: Vec<_> = LeaveReason::ALL
            .iter()
            .map(|&r| (r.label(), m.disconnects(r)))
            .collect();
        labeled_counter(
            &mut enc,
            "disconnects",
            "Connections that ended, by reason. A connection that chose no nickname in time \
             counts as register_timeout.",
            "reason",
            &disconnects,
        )?;

        counter(
            &mut enc,
            "messages_received",
            "Chat messages received and relayed to the room (commands are not counted).",
            m.messages.total(),
        )?;
        counter(
            &mut enc,
            "messages_delivered",
            "Copies of chat messages queued for recipients (one message to five others is five).",
            m.messages_delivered.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "commands",
            "Commands received (lines starting with /), valid or not.",
            m.commands.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "received_bytes",
            "Bytes read from client connections.",
            m.bytes_in.total(),
        )?;
        counter(
            &mut enc,
            "sent_bytes",
            "Bytes written to client connections.",
            m.bytes_out.total(),
        )?;
        counter(
            &mut enc,
            "rate_limited_reads",
            "Times flood control paused reading a client until its allowance refilled.",
            m.rate_limited.load(Relaxed),
        )?;

        gauge(
            &mut enc,
            "queued_bytes",
            "Output waiting in client queues now, summed over joined clients (each message \
             charged its length plus 64 bytes of bookkeeping).",
            queued as u64,
        )?;
        gauge(
            &mut enc,
            "client_queue_max_bytes",
            "The longest queue of any one joined client now, in bytes; --queue-bytes is its limit.",
            largest as u64,
        )?;

        let (kept, limit, evicted) = shared.history();
        gauge(
            &mut enc,
            "history_bytes",
            "Bytes the history of all rooms holds now (events, their text and renderings).",
            kept as u64,
        )?;
        gauge(
            &mut enc,
            "history_limit_bytes",
            "The most history may hold (--history-bytes); past it the oldest events go first.",
            limit as u64,
        )?;
        counter(
            &mut enc,
            "history_evicted",
            "History events forgotten to keep within --history-bytes.",
            evicted,
        )?;

        if let Some(st) = shared.store() {
            counter(
                &mut enc,
                "store_written_records",
                "Records (messages, topics, modes) the store has written (--data-dir).",
                st.written,
            )?;
            counter(
                &mut enc,
                "store_failed_records",
                "Records the store could not write (disk full, I/O errors): kept in memory only.",
                st.failed,
            )?;
            counter(
                &mut enc,
                "store_expired_messages",
                "Stored messages let go of by retention (--history-retain, --history-max-age, \
                 --store-bytes).",
                st.expired,
            )?;
            gauge(
                &mut enc,
                "store_messages",
                "Messages the store keeps now.",
                st.messages,
            )?;
            gauge(
                &mut enc,
                "store_disk_bytes",
                "Bytes of the store's log files on disk.",
                st.disk_bytes,
            )?;
            gauge(
                &mut enc,
                "store_degraded",
                "1 while the store's last write failed (health check: degraded), else 0.",
                u64::from(st.degraded),
            )?;
        }
        if let Some(c) = shared.cluster() {
            encode_cluster(&mut enc, &c)?;
        }
        if let Some((failed, throttled)) = shared.logins() {
            counter(
                &mut enc,
                "login_failures",
                "Wrong passwords for registered nicknames (prompt, /identify, /nick, PASS, SASL).",
                failed,
            )?;
            counter(
                &mut enc,
                "login_throttled",
                "Login attempts refused unheard: too many failures for the account or address.",
                throttled,
            )?;
        }
        histogram(
            &mut enc,
            "fanout_latency_seconds",
            "Time from taking a chat line off the sender's buffer to having it queued for every \
             recipient.",
            m.fanout_buckets(FANOUT_BUCKETS),
        )?;
        histogram(
            &mut enc,
            "tcp_rtt_seconds",
            "Smoothed TCP round-trip time of client connections (TCP_INFO), one observation per \
             sample: periodically per connection (Config::rtt_sample_interval), and on /ping and /metrics.",
            m.rtt_buckets(RTT_BUCKETS),
        )?;
        counter(
            &mut enc,
            "tcp_retransmitted_segments",
            "TCP segments retransmitted to clients (TCP_INFO), closed connections included.",
            m.tcp_retransmits.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "tcp_sent_segments",
            "TCP segments sent to clients (TCP_INFO), closed connections included.",
            m.tcp_segments_out.load(Relaxed),
        )?;

        let t = &m.transcript;
        counter(
            &mut enc,
            "transcript_lines",
            "Chat events written to the transcript (--transcript).",
            t.written.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "transcript_dropped_lines",
            "Chat events left out of the transcript because its writer was a whole buffer behind.",
            t.dropped.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "transcript_write_error_lines",
            "Chat events lost to transcript write errors (a full disk, say).",
            t.write_errors.load(Relaxed),
        )?;
        match shared.tls() {
            Some(certs) => tls(&mut enc, certs),
            None => Ok(()),
        }
    }
}

/// The TLS families, present only when a certificate is configured.
fn tls(enc: &mut DescriptorEncoder, certs: &Certs) -> fmt::Result {
    let c = &certs.counters;
    gauge(
        enc,
        "tls_certificate_expiry_timestamp_seconds",
        "When the TLS certificate served now expires (its notAfter), in seconds since the Unix \
         epoch.",
        certs.current().not_after,
    )?;
    counter(
        enc,
        "tls_handshakes",
        "TLS handshakes completed.",
        c.handshakes.load(Relaxed),
    )?;
    let failures: Vec<_> = Failure::ALL
        .iter()
        .map(|&f| (f.label(), c.failed(f)))
        .collect();
    labeled_counter(
        enc,
        "tls_handshake_failures",
        "Connections to a TLS listener that did not complete a handshake, by reason: plaintext \
         (a plaintext client, answered in plain and closed), timeout, closed (by the client), \
         incompatible (no common version or cipher suite), alert (the client refused our \
         certificate), invalid (malformed handshake).",
        "reason",
        &failures,
    )?;
    labeled_counter(
        enc,
        "tls_certificate_reloads",
        "Certificate reloads (SIGHUP), by result; a failed one keeps the previous certificate.",
        "result",
        &[
            ("ok", c.reloads.load(Relaxed)),
            ("error", c.reload_failures.load(Relaxed)),
        ],
    )
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(enc.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeGaugeValue,
) -> fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(enc.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn encode_cluster(enc: &mut DescriptorEncoder, c: &ClusterStats) -> fmt::Result {
    gauge(
        enc,
        "cluster_link_up",
        "1 while this node's link to the cluster's broker is up, 0 while chat goes on here alone.",
        u64::from(c.link_up),
    )?;
    let mut family = enc.encode_descriptor(
        "cluster_people",
        "People connected, by the node they are on (this node's own count is exact; the others' \
         are as their last heartbeat and the arrivals and departures heard since).",
        None,
        MetricType::Gauge,
    )?;
    for (node, n) in &c.people {
        ConstGauge::new(*n).encode(family.encode_family(&[("node", node.as_str())])?)?;
    }
    gauge(
        enc,
        "cluster_nodes_heard",
        "Other nodes this node hears from.",
        c.nodes_heard,
    )?;
    counter(
        enc,
        "cluster_events_not_relayed",
        "This node's room events whose cluster copy was dropped: the queue to the broker was \
         full, or the broker did not acknowledge them within its duplicate window. People here \
         got them; other nodes did not.",
        c.not_relayed,
    )?;
    counter(
        enc,
        "cluster_events_given_up",
        "Other nodes' room events that never arrived here: a gap in their sender's order, \
         waited for and then given up.",
        c.given_up,
    )
}

fn labeled_counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    values: &[(&'static str, u64)],
) -> fmt::Result {
    labeled(enc, name, help, label, values, ConstCounter::new)
}

/// One family with a value per label value, each made by `make`.
fn labeled<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    values: &[(&'static str, u64)],
    make: fn(u64) -> M,
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, make(0).metric_type())?;
    for &(value, count) in values {
        make(count).encode(family.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}

fn info(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labels: Vec<(&'static str, &'static str)>,
) -> fmt::Result {
    let metric = Info::new(labels);
    metric.encode(enc.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn histogram(enc: &mut DescriptorEncoder, name: &str, help: &str, b: Buckets) -> fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(b.sum_secs, b.count, &b.buckets, None)
}
