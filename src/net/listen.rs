//! Listeners: what `--listen URL` names, binding it (both IPv4 and IPv6 for `[::]`), and the
//! one accept loop every listener uses, chat and metrics alike, with its handling of running
//! out of descriptors.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// The netcat line protocol.
    Line,
    Irc,
    /// The web client and WebSocket (line protocol or IRC).
    Http,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Line => "line",
            Scheme::Irc => "irc",
            Scheme::Http => "http",
        }
    }

    /// The URL scheme, with TLS or without.
    pub fn url_scheme(self, tls: bool) -> &'static str {
        match (self, tls) {
            (Scheme::Line, false) => "line",
            (Scheme::Line, true) => "line+tls",
            (Scheme::Irc, false) => "irc",
            (Scheme::Irc, true) => "ircs",
            (Scheme::Http, false) => "http",
            (Scheme::Http, true) => "https",
        }
    }

    /// How a person connects to `addr` with the usual client, for the start-up log.
    pub fn how_to_connect(self, addr: SocketAddr, tls: bool) -> String {
        let host = match addr.ip() {
            ip if ip.is_unspecified() => "localhost".to_owned(),
            ip => ip.to_string(),
        };
        let port = addr.port();
        match (self, tls) {
            (Scheme::Line, false) => format!("nc {host} {port}"),
            (Scheme::Line, true) => format!("ncat --ssl {host} {port}"),
            (Scheme::Irc, false) => format!("an IRC client, server {host} port {port}"),
            (Scheme::Irc, true) => format!("an IRC client with TLS, server {host} port {port}"),
            (Scheme::Http, tls) => {
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host
                };
                let scheme = if tls { "https" } else { "http" };
                format!("a browser, {scheme}://{host}:{port}/")
            }
        }
    }
}

/// The schemes `--listen` takes, for the messages that list them.
const SCHEMES: &str =
    "line:// (or a bare HOST:PORT), line+tls://, irc://, ircs://, http:// and https://";

/// A parsed `--listen` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenUrl {
    pub scheme: Scheme,
    /// `line+tls://`, `ircs://`: the protocol over TLS (`crate::net::tls`).
    pub tls: bool,
    /// `HOST:PORT` as written (the host may be a name to resolve).
    pub authority: String,
}

impl fmt::Display for ListenUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}",
            self.scheme.url_scheme(self.tls),
            self.authority
        )
    }
}

/// Why a `--listen` value or a bind was refused. The texts are for the person starting the
/// server.
#[derive(Debug, Error)]
pub enum Error {
    #[error("--listen {0}: unknown scheme {1}://; the schemes are {SCHEMES}")]
    UnknownScheme(String, String),
    #[error("--listen {0}: a TLS listener needs --tls-cert PEM and --tls-key PEM")]
    NoCertificate(String),
    #[error("--listen {0}: expected HOST:PORT (e.g. 127.0.0.1:4000, [::]:6667)")]
    Malformed(String),
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
}

impl ListenUrl {
    pub fn parse(text: &str) -> Result<ListenUrl, Error> {
        let (scheme, tls, authority) = match text.split_once("://") {
            None => (Scheme::Line, false, text),
            Some(("line", rest)) => (Scheme::Line, false, rest),
            Some(("line+tls", rest)) => (Scheme::Line, true, rest),
            Some(("irc", rest)) => (Scheme::Irc, false, rest),
            Some(("ircs", rest)) => (Scheme::Irc, true, rest),
            Some(("http", rest)) => (Scheme::Http, false, rest),
            Some(("https", rest)) => (Scheme::Http, true, rest),
            Some((other, _)) => {
                return Err(Error::UnknownScheme(text.to_owned(), other.to_owned()))
            }
        };
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        if authority
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(Error::Malformed(text.to_owned()));
        }
        Ok(ListenUrl {
            scheme,
            tls,
            authority: authority.to_owned(),
        })
    }

    /// The address to bind: the first the host resolves to.
    pub fn resolve(&self) -> Result<SocketAddr, Error> {
        self.authority
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| Error::Malformed(self.to_string()))
    }
}

/// The listeners opened when no `--listen` is given (docs/PROTOCOL.md, "Listeners").
pub fn defaults() -> Vec<ListenUrl> {
    vec![
        ListenUrl {
            scheme: Scheme::Line,
            tls: false,
            authority: "[::]:4000".to_owned(),
        },
        ListenUrl {
            scheme: Scheme::Irc,
            tls: false,
            authority: "[::]:6667".to_owned(),
        },
        ListenUrl {
            scheme: Scheme::Http,
            tls: false,
            authority: "[::]:8080".to_owned(),
        },
    ]
}

/// Binds `addr`, turning the usual failures into advice. `[::]` is bound dual-stack, so IPv4
/// clients reach it too.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    bind_socket(addr).map_err(|source| match source.kind() {
        io::ErrorKind::AddrInUse => Error::AddrInUse {
            addr,
            port: addr.port(),
        },
        io::ErrorKind::PermissionDenied => Error::PermissionDenied { addr },
        _ => Error::Bind { addr, source },
    })
}

/// [`bind`] without the advice, for listeners whose errors their caller words.
pub fn bind_socket(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Back-off when `accept` fails for lack of resources (EMFILE and the like): retrying at once
/// would spin, and descriptors free up only as clients leave.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How often a server that stays out of descriptors says so again.
const STARVED_LOG_EVERY: Duration = Duration::from_secs(10);

/// Accepts on `listener` until `stop` completes, handing each connection to `serve`. Failures
/// for lack of resources are logged when they start, every [`STARVED_LOG_EVERY`] while they
/// last and when they end, not on every retry.
pub async fn accept_loop(
    listener: &TcpListener,
    what: &str,
    stop: impl Future,
    mut serve: impl FnMut(TcpStream, SocketAddr),
) {
    tokio::pin!(stop);
    let mut starved = Starved::default();
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    starved.recovered(what);
                    serve(stream, peer);
                }
                Err(e) => {
                    tokio::select! {
                        _ = &mut stop => return,
                        _ = starved.accept_failed(what, &e) => {}
                    }
                }
            },
        }
    }
}

#[derive(Debug, Default)]
struct Starved {
    since: Option<tokio::time::Instant>,
    last_logged: Option<tokio::time::Instant>,
    retries: u64,
}

impl Starved {
    async fn accept_failed(&mut self, what: &str, e: &io::Error) {
        match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                let now = tokio::time::Instant::now();
                self.retries += 1;
                if self.since.is_none() {
                    self.since = Some(now);
                    self.last_logged = Some(now);
                    tracing::error!(
                        error = %e,
                        listener = what,
                        "cannot accept: out of resources; serving existing clients and retrying \
                         every {ACCEPT_BACKOFF:?}"
                    );
                } else if self
                    .last_logged
                    .is_some_and(|at| now.duration_since(at) >= STARVED_LOG_EVERY)
                {
                    self.last_logged = Some(now);
                    tracing::warn!(error = %e, listener = what, retries = self.retries, "still cannot accept");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
            // The peer gave up between SYN and accept: nothing to do.
            Some(libc::ECONNABORTED | libc::EPROTO | libc::EPERM) => {
                tracing::debug!(error = %e, listener = what, "connection aborted before accept");
            }
            _ => {
                tracing::warn!(error = %e, listener = what, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }

    fn recovered(&mut self, what: &str) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                after = ?since.elapsed(),
                retries = self.retries,
                listener = what,
                "accepting again"
            );
            self.retries = 0;
            self.last_logged = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_urls() {
        let line = ListenUrl::parse("127.0.0.1:4000").unwrap();
        assert_eq!(
            (line.scheme, line.authority.as_str()),
            (Scheme::Line, "127.0.0.1:4000")
        );
        assert_eq!(
            ListenUrl::parse("line://[::]:1").unwrap().scheme,
            Scheme::Line
        );
        assert_eq!(
            ListenUrl::parse("irc://localhost:6667/").unwrap().scheme,
            Scheme::Irc
        );
        let ircs = ListenUrl::parse("ircs://x:6697").unwrap();
        assert_eq!((ircs.scheme, ircs.tls), (Scheme::Irc, true));
        assert_eq!(ircs.to_string(), "ircs://x:6697");
        let line_tls = ListenUrl::parse("line+tls://[::1]:4443").unwrap();
        assert_eq!((line_tls.scheme, line_tls.tls), (Scheme::Line, true));
        assert!(!ListenUrl::parse("irc://x:1").unwrap().tls);
        let http = ListenUrl::parse("http://[::]:8080").unwrap();
        assert_eq!((http.scheme, http.tls), (Scheme::Http, false));
        let https = ListenUrl::parse("https://x:8443").unwrap();
        assert_eq!((https.scheme, https.tls), (Scheme::Http, true));
        assert_eq!(https.to_string(), "https://x:8443");
        assert!(matches!(
            ListenUrl::parse("gopher://x:1"),
            Err(Error::UnknownScheme(..))
        ));
        for bad in ["4000", "host", "irc://:1", "x:99999"] {
            assert!(
                matches!(ListenUrl::parse(bad), Err(Error::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn the_unspecified_ipv6_address_takes_ipv4_too() {
        let listener = bind("[::]:0".parse().unwrap()).unwrap();
        let port = listener.local_addr().unwrap().port();
        TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        TcpStream::connect(("::1", port)).await.unwrap();
    }
}
