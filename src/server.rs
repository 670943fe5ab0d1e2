//! The server: builds the shared state, runs one accept loop per listener and hands each
//! connection to its protocol's session, admitting connections up to the limit; on shutdown
//! stops accepting and waits (with a deadline) for every session to flush. Beside them run
//! the optional [`Extras`]: the metrics endpoint and the transcript writer.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info_span, Instrument};

use crate::cluster::Incoming;
use crate::config::{Config, Live, Reloader};
use crate::context::Shared;
use crate::core::event::{Kind, Notice};
use crate::core::hub::{Hub, Settings};
use crate::core::leave::LeaveReason;
use crate::core::member::Member;
use crate::core::store::Kept;
use crate::net::gate::{Gate, Pass, Refusal};
use crate::net::listen::{self, accept_loop, Scheme};
use crate::net::stream::Stream;
use crate::net::tls::Certs;
use crate::ops::metrics::ServerMetrics;
use crate::ops::transcript::Transcript;
use crate::proto;
use crate::store::Log;

/// Why the server could not start. The messages are written for the person starting it.
#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Listen(#[from] listen::Error),
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

/// Binds the metrics endpoint's socket (see [`crate::ops::prom`]).
pub async fn bind_metrics(addr: SocketAddr) -> Result<TcpListener, Error> {
    listen::bind_socket(addr).map_err(|cause| Error::MetricsBind { addr, cause })
}

/// Binds a listening socket, turning the usual failures into advice.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    Ok(listen::bind(addr)?)
}

/// A bound listener and what it speaks.
#[derive(Debug)]
pub struct Listener {
    pub scheme: Scheme,
    /// Whether connections shake hands with [`Extras::tls`]'s certificate first.
    pub tls: bool,
    pub socket: TcpListener,
}

/// What a server may run besides chat. Each is set up before [`serve`], so that a port in
/// use or a path that cannot be written is reported when the server starts.
#[derive(Debug, Default)]
pub struct Extras {
    /// Serves `/metrics` and `/healthz` over HTTP; from [`bind_metrics`].
    pub metrics: Option<TcpListener>,
    /// Where every chat event is appended.
    pub transcript: Option<Transcript>,
    /// The opened store (`--data-dir`) and what it kept: from [`crate::store::Log::open`].
    pub store: Option<(Arc<Log>, Kept)>,
    /// Reads the configuration again when a reload is asked for (see [`Shared::reload`]).
    pub reloader: Option<Box<dyn Reloader>>,
    /// Each `notify_one` asks for one reload (the binary does on SIGHUP); one asked for while
    /// another runs is not lost.
    pub reload_requests: Arc<Notify>,
    /// The certificate TLS listeners serve, kept by the caller too so it can reload it.
    pub tls: Option<Arc<Certs>>,
    /// The accounts, read already (the binary does, to refuse to start on a damaged file);
    /// without, [`serve`] reads them from `config.data_dir`.
    pub accounts: Option<crate::accounts::Accounts>,
    /// The connected cluster link (`--cluster`): from [`crate::cluster::connect`].
    pub cluster: Option<(Arc<crate::cluster::Cluster>, crate::cluster::Link)>,
}

/// Renames the local `nick`, whose name the broker gives to someone on `holder` since an
/// outage, to a guest name claimed across the cluster, and tells them why; nobody is
/// disconnected. Gives up (the name stays, and is claimed again after the next outage) if
/// the broker cannot confirm a guest name.
async fn rename_loser(shared: Arc<Shared>, nick: String, holder: String) {
    /// Guest names tried, as at the prompt.
    const TRIES: usize = 8;
    let (Some(cluster), Some(info)) = (&shared.cluster, shared.hub.find(&nick)) else {
        return;
    };
    for _ in 0..TRIES {
        let name = shared.hub.guest_name();
        match cluster.claim(&name, info.member.id).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, %nick, "cluster: a lost name could not be replaced");
                return;
            }
        }
        match shared.hub.rename(info.member.id, &name) {
            Ok(renamed) => {
                tracing::warn!(%nick, %holder, new = %name, "cluster: a name held on two nodes went to the broker's holder");
                let notice = Notice::ClusterRenamed {
                    old: &renamed.old,
                    holder: &holder,
                    new: &renamed.new.nick,
                };
                tell(&shared, &info.member, &renamed.new.nick, &notice);
                return;
            }
            Err(_) => cluster.release(&name, info.member.id),
        }
    }
}

/// Tells `member`, called `to`, the server's `notice` in the words of its own format (a
/// WebSocket carries either protocol, so the format decides, not the listener).
fn tell(shared: &Shared, member: &Member, to: &str, notice: &Notice<'_>) {
    let format = shared.hub.formats()[member.format()];
    let bytes = format.notice(&shared.config.server_name, to, notice);
    if !bytes.is_empty() {
        let _ = member.push(bytes);
    }
}

/// Extra time, beyond the flush grace, that shutdown gives sessions to close their sockets
/// (the lingering close that keeps a final line from being lost to a reset).
const CLOSE_ALLOWANCE: Duration = Duration::from_secs(2);

/// Serves the line protocol on `listener` until `shutdown` completes, then tells every
/// client, flushes what is queued (up to `config.shutdown_grace`), and returns.
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
    let listeners = vec![Listener {
        scheme: Scheme::Line,
        tls: false,
        socket: listener,
    }];
    serve(listeners, extras, config, shutdown).await
}

/// Serves every listener until `shutdown` completes.
pub async fn serve(
    listeners: Vec<Listener>,
    extras: Extras,
    config: Config,
    shutdown: impl Future,
) {
    let grace = config.shutdown_grace;
    let metrics = ServerMetrics::default();
    let mut hub = Hub::new(Settings::from_config(&config), &proto::FORMATS);
    let store = match extras.store {
        Some((log, kept)) => {
            hub = hub.with_store(log.clone(), kept);
            Some(log)
        }
        None => None,
    };
    let transcript = match extras
        .transcript
        .map(|t| t.start(metrics.transcript.clone()))
    {
        None => None,
        Some(Ok((recorder, writer))) => {
            hub = hub.with_journal(Box::new(recorder));
            Some(writer)
        }
        Some(Err(e)) => {
            tracing::error!(error = %e, "cannot start the transcript writer; chat goes on without it");
            None
        }
    };
    let accounts = extras.accounts.unwrap_or_else(|| {
        crate::accounts::Accounts::open(config.data_dir.as_deref())
            .with_min_password(config.min_password)
    });
    let (cluster, link) = match extras.cluster {
        Some((cluster, link)) => {
            hub = hub.with_relay(cluster.relay());
            (Some(cluster), Some(link))
        }
        None => (None, None),
    };
    let shared = Arc::new(Shared {
        accounts,
        gate: Gate::new(&config),
        live: Live::new(&config),
        config,
        reloader: extras.reloader,
        reload_requests: extras.reload_requests,
        hub,
        cluster,
        metrics,
        shutdown: CancellationToken::new(),
        reports: Default::default(),
        tls: extras.tls,
    });
    // The endpoint outlives the chat listeners, so /healthz can say 503 while clients flush.
    let stop_metrics = CancellationToken::new();
    let metrics_task = extras.metrics.map(|listener| {
        tokio::spawn(crate::ops::prom::serve(
            listener,
            shared.clone(),
            stop_metrics.clone(),
        ))
    });
    let stop_link = CancellationToken::new();
    let link_task = link.map(|link| {
        let link = link.with_history(shared.hub.settings().retain);
        let shared = shared.clone();
        let deliver = shared.clone();
        let people = shared.clone();
        tokio::spawn(link.run(
            Arc::new(move |incoming| match incoming {
                Incoming::Said(r) if matches!(r.kind, Kind::Kicked { .. }) => {
                    let land = proto::line::render::land;
                    deliver
                        .hub
                        .kicked_elsewhere(&r.room, r.from, r.at, r.kind, land);
                }
                Incoming::Said(remote) => {
                    deliver
                        .hub
                        .relayed(&remote.room, remote.from, remote.at, remote.kind);
                }
                Incoming::Private { to, remote } if matches!(remote.kind, Kind::Invited(_)) => {
                    if let Kind::Invited(room) = remote.kind {
                        deliver
                            .hub
                            .invited_elsewhere(&to, remote.from, remote.at, room);
                    }
                }
                Incoming::Private { to, remote } => {
                    deliver
                        .hub
                        .relayed_private(&to, remote.from, remote.at, remote.kind);
                }
                Incoming::Conflict { nick, holder } => {
                    tokio::spawn(rename_loser(deliver.clone(), nick, holder));
                }
                Incoming::Lost { node, people } => {
                    let why = Some(crate::cluster::LOST.into());
                    let at = std::time::SystemTime::now();
                    for (nick, rooms) in people {
                        let from = crate::cluster::remote_identity(&nick, &node);
                        for room in rooms {
                            let kind = Kind::Left(LeaveReason::Quit, why.clone());
                            deliver.hub.relayed(&room, from.clone(), at, kind);
                        }
                    }
                }
                Incoming::History {
                    room,
                    events,
                    changes,
                } => {
                    let events = events.into_iter().map(|r| (r.from, r.at, r.kind)).collect();
                    deliver.hub.load_history(&room, events);
                    let changes = changes
                        .into_iter()
                        .map(|r| (r.from, r.at, r.kind, r.clock))
                        .collect();
                    deliver.hub.load_state(&room, changes);
                }
                Incoming::Changed(r) => {
                    // Line-protocol words for whoever a ban puts out, as for the lobby.
                    let land = proto::line::render::land;
                    deliver
                        .hub
                        .changed_elsewhere(&r.room, r.from, r.at, r.kind, r.clock, land);
                }
                Incoming::Link(up) => {
                    for info in deliver.hub.members() {
                        tell(
                            &deliver,
                            &info.member,
                            info.nick(),
                            &Notice::ClusterLink(up),
                        );
                    }
                }
            }),
            Arc::new(move || {
                people
                    .hub
                    .people()
                    .into_iter()
                    .map(|w| crate::cluster::Person {
                        nick: w.nick.to_string(),
                        proto: w.protocol.to_owned(),
                        rooms: w.rooms.iter().map(|r| r.to_string()).collect(),
                        secret: w.secret.iter().map(|r| r.to_string()).collect(),
                        ops: w.ops.iter().map(|r| r.to_string()).collect(),
                        voiced: w.voiced.iter().map(|r| r.to_string()).collect(),
                        away: w.away.as_deref().map(Into::into),
                    })
                    .collect()
            }),
            stop_link.clone(),
        ))
    });
    let sessions = TaskTracker::new();
    let next_id = Arc::new(AtomicU64::new(1));
    let stop_accepting = CancellationToken::new();
    let accepting = TaskTracker::new();
    for Listener {
        scheme,
        tls,
        socket,
    } in listeners
    {
        let url = scheme.url_scheme(tls);
        let certs = match (tls, &shared.tls) {
            (false, _) => None,
            (true, Some(certs)) => Some(certs.clone()),
            (true, None) => {
                // The binary refuses this at start; a caller of the library that forgets the
                // certificate gets no listener rather than one that cannot shake hands.
                tracing::error!(
                    listener = url,
                    "a TLS listener without a certificate; not opened"
                );
                continue;
            }
        };
        match socket.local_addr() {
            Ok(addr) => tracing::info!(
                %addr,
                protocol = url,
                connect = %scheme.how_to_connect(addr, tls),
                "listening"
            ),
            Err(e) => tracing::warn!(error = %e, "listening (address unknown)"),
        }
        let (shared, sessions, next_id) = (shared.clone(), sessions.clone(), next_id.clone());
        let stop = stop_accepting.clone().cancelled_owned();
        accepting.spawn(async move {
            accept_loop(&socket, url, stop, |stream, peer| {
                admit(
                    &shared,
                    &sessions,
                    &next_id,
                    scheme,
                    certs.as_ref(),
                    stream,
                    peer,
                )
            })
            .await;
        });
    }
    accepting.close();
    let ticker = tokio::spawn(presence_ticker(shared.clone()));
    let reloads = tokio::spawn(reload_on_request(shared.clone()));

    shutdown.await;
    stop_accepting.cancel();
    accepting.wait().await;
    tracing::info!(
        connections = shared.metrics.connections_open.load(Relaxed),
        "shutting down: no longer accepting, telling clients"
    );
    shared.shutdown.cancel();
    let _ = ticker.await;
    let _ = reloads.await;
    sessions.close();
    if tokio::time::timeout(grace + CLOSE_ALLOWANCE, sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = sessions.len(),
            "shutdown deadline passed with connections still flushing; closing them"
        );
    }
    // After the sessions: their departures (the names they free) are in the link's queue.
    stop_link.cancel();
    if let Some(task) = link_task {
        let _ = task.await;
    }
    if let Some(writer) = transcript {
        writer.close(grace).await;
    }
    if let Some(log) = store {
        // A blocking fsync, once: shutdown has nothing else left to do on this thread.
        log.close();
    }
    stop_metrics.cancel();
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    tracing::info!("shutdown complete");
}

/// Starts a session for an accepted connection, or refuses it (see [`Gate`]): before anything
/// of it reaches a protocol or the hub. On a TLS listener the session's task shakes hands
/// first (holding the connection's slots, so the limits bound handshakes in progress too).
fn admit(
    shared: &Arc<Shared>,
    sessions: &TaskTracker,
    next_id: &AtomicU64,
    scheme: Scheme,
    tls: Option<&Arc<Certs>>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    shared.metrics.connections_accepted.fetch_add(1, Relaxed);
    let pass = match shared.gate.admit(peer.ip()) {
        Ok(pass) => pass,
        Err(refusal) => {
            shared.metrics.count_refusal(refusal);
            refuse(shared, stream, peer, scheme, refusal);
            return;
        }
    };
    let id = next_id.fetch_add(1, Relaxed);
    let span = info_span!("conn", %peer, id, proto = scheme.url_scheme(tls.is_some()));
    let shared = shared.clone();
    let Some(certs) = tls else {
        spawn_session(
            sessions,
            span,
            shared,
            scheme,
            Stream::Tcp(stream),
            peer,
            id,
            pass,
        );
        return;
    };
    let (certs, tracker) = (certs.clone(), sessions.clone());
    sessions.spawn(
        async move {
            // Boxed, and a task of its own: once the handshake is done its state is freed and
            // the session starts in a task as small as a plaintext one's.
            let handshake = Box::pin(certs.handshake(
                stream,
                shared.config.tls_handshake_timeout,
                |addr| plaintext_on_tls(scheme, addr),
            ));
            let stream = tokio::select! {
                // Shutdown does not wait for handshakes: nobody has joined yet.
                _ = shared.shutdown.cancelled() => return,
                stream = handshake => stream,
            };
            if let Some(stream) = stream {
                let span = tracing::Span::current();
                spawn_session(&tracker, span, shared, scheme, stream, peer, id, pass);
            }
        }
        .instrument(span),
    );
}

/// Spawns the protocol's session for an admitted connection.
#[allow(clippy::too_many_arguments)]
fn spawn_session(
    sessions: &TaskTracker,
    span: tracing::Span,
    shared: Arc<Shared>,
    scheme: Scheme,
    stream: Stream,
    peer: SocketAddr,
    id: u64,
    pass: Pass,
) {
    // Entered while the session is made, too: making it starts the connection, which logs.
    let entered = span.enter();
    match scheme {
        Scheme::Line => {
            let session = proto::line::run(shared, stream, peer, id, pass);
            drop(entered);
            sessions.spawn(session.instrument(span))
        }
        Scheme::Irc => {
            let session = proto::irc::run(shared, stream, peer, id, pass);
            drop(entered);
            sessions.spawn(session.instrument(span))
        }
        Scheme::Http => {
            let session = proto::web::run(shared, stream, peer, id, pass);
            drop(entered);
            sessions.spawn(session.instrument(span))
        }
    };
}

/// What a plaintext client on a TLS port is told, in its protocol's framing, before the
/// connection is closed. `addr` is the address it connected to.
pub fn plaintext_on_tls(scheme: Scheme, addr: SocketAddr) -> String {
    let host_port = crate::net::tls::host_port(addr);
    let (host, port) = host_port
        .rsplit_once(':')
        .expect("host_port always has a port");
    let text = format!(
        "this port speaks TLS; connect with TLS, e.g. openssl s_client -connect {host_port} \
         or ncat --ssl {host} {port}"
    );
    match scheme {
        Scheme::Line => format!("Error: {text}.\n"),
        Scheme::Irc => format!("ERROR :Closing link: {text}\r\n"),
        Scheme::Http => proto::web::http::plain(
            400,
            "Bad Request",
            &format!("this port speaks TLS: open https://{host_port}/\n"),
        ),
    }
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

/// Reloads the configuration each time one is asked for, until shutdown.
async fn reload_on_request(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = shared.reload_requests.notified() => {
                let _ = shared.reload();
            }
        }
    }
}

/// What a refused connection is told, without the protocol's framing.
pub fn refusal_text(refusal: Refusal, gate: &Gate) -> String {
    match refusal {
        Refusal::Full => format!(
            "the server is full ({} connections); please try again later",
            gate.max_clients()
        ),
        Refusal::PerAddress => format!(
            "too many connections from your address ({} open); close one and try again",
            gate.max_per_ip()
        ),
        Refusal::Rate => format!(
            "too many new connections from your address (at most {} a second); wait a moment \
             and try again",
            gate.connect_rate().map_or(0.0, |(rate, _)| rate)
        ),
        Refusal::Prompt => format!(
            "too many connections are waiting at the nickname prompt ({}); please try again \
             in a moment",
            gate.max_prompt()
        ),
    }
}

/// How often refusals are logged at most (each is counted in the metrics): an attack refused
/// thousands of times a second must not flood the log.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Answers a refused connection with one line and closes it, without ever waiting on it: the
/// line fits any fresh socket's send buffer, and a peer that is not reading loses nothing it
/// did not ask for.
fn refuse(shared: &Shared, stream: TcpStream, peer: SocketAddr, scheme: Scheme, refusal: Refusal) {
    let text = refusal_text(refusal, &shared.gate);
    let msg = match scheme {
        Scheme::Line => format!("Error: {text}.\n"),
        Scheme::Irc => format!("ERROR :Closing link: {text}\r\n"),
        Scheme::Http => proto::web::http::plain(503, "Service Unavailable", &format!("{text}.\n")),
    };
    let _ = stream.try_write(msg.as_bytes());
    let reason = refusal.label();
    if shared.metrics.refusal_log_due(REFUSAL_LOG_EVERY) {
        let counts: Vec<String> = Refusal::ALL
            .iter()
            .map(|&r| format!("{}={}", r.label(), shared.metrics.refused(r)))
            .collect();
        tracing::info!(%peer, reason, totals = %counts.join(" "), "refused connection (logged at most every 10 s; the metrics count them all)");
    } else {
        tracing::debug!(%peer, reason, "refused connection");
    }
}
