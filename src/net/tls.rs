//! TLS on any listener: the certificate in use, swapped whole on reload so that open
//! connections keep the one they shook hands with; the handshake, one step of admission that
//! runs in the connection's own task after the per-address gate; and what it counts.
//!
//! rustls with the `ring` provider, named explicitly here rather than taken from a process-wide
//! default, so the library never depends on what a binary installed; TLS 1.2 and 1.3 only.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ServerConfig;
use rustls::{InconsistentKeys, ProtocolVersion};
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::{rustls, TlsAcceptor};

use super::stream::{Layered, Stream, Transport};
use crate::core::member::TlsInfo;

/// How every TLS connection opens: a record of content type 22 (handshake), protocol major
/// version 3.
pub const CLIENT_HELLO_START: [u8; 2] = [0x16, 0x03];

/// How long a plaintext client answered on a TLS port is given to read the answer before the
/// connection is closed (as for any connection's last line: `proto::conn`).
const LINGER: Duration = Duration::from_secs(1);

/// Expiry closer than this is warned about at start and at every reload.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// Why a certificate or key could not be used. Each names the file and the flag it came from,
/// for the one line a person starting the server (or reloading it) reads.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("--tls-cert {}: {why}", .path.display())]
    Cert { path: PathBuf, why: String },
    #[error("--tls-key {}: {why}", .path.display())]
    Key { path: PathBuf, why: String },
    #[error(
        "--tls-key {} is not the key of the certificate in --tls-cert {}: {why}",
        .key.display(), .cert.display()
    )]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        why: String,
    },
}

/// A certificate chain and its key, ready to serve, and what the logs and metrics say of it.
#[derive(Debug)]
pub struct Identity {
    pub config: Arc<ServerConfig>,
    /// The leaf certificate's subject, `CN=chat.example.org` style.
    pub subject: String,
    /// The leaf certificate's `notAfter`, in seconds since the Unix epoch.
    pub not_after: i64,
    /// SHA-256 of the leaf certificate's DER, as hex: what `openssl x509 -fingerprint -sha256`
    /// shows, so an operator can tell which certificate is being served.
    pub fingerprint: String,
}

impl Identity {
    /// Reads and checks a PEM certificate chain (leaf first) and its private key (PKCS#1 RSA,
    /// SEC1 ECDSA or PKCS#8).
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, LoadError> {
        let cert_err = |why: String| LoadError::Cert {
            path: cert.to_owned(),
            why,
        };
        let key_err = |why: String| LoadError::Key {
            path: key.to_owned(),
            why,
        };
        let cert_pem = std::fs::read(cert).map_err(|e| cert_err(read_error(&e)))?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cert_err(pem_error(&e, "CERTIFICATE")))?;
        let Some(leaf) = chain.first() else {
            return Err(cert_err(
                "no certificate in it (expected PEM blocks \"-----BEGIN CERTIFICATE-----\", the \
                 server's certificate first)"
                    .into(),
            ));
        };
        let (subject, not_after) = match x509_parser::parse_x509_certificate(leaf) {
            Ok((_, parsed)) => (
                parsed.subject().to_string(),
                parsed.validity().not_after.timestamp(),
            ),
            Err(e) => return Err(cert_err(format!("not a valid X.509 certificate: {e}"))),
        };
        let fingerprint = ring::digest::digest(&ring::digest::SHA256, leaf)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let key_pem = std::fs::read(key).map_err(|e| key_err(read_error(&e)))?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| key_err(pem_error(&e, "PRIVATE KEY")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let signing = provider
            .key_provider
            .load_private_key(key_der)
            .map_err(|e| key_err(format!("unusable private key: {e}")))?;
        let certified = rustls::sign::CertifiedKey::new(chain, signing);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
                return Err(LoadError::Mismatch {
                    cert: cert.to_owned(),
                    key: key.to_owned(),
                    why: "its public key differs from the certificate's".into(),
                })
            }
            Err(e) => return Err(cert_err(e.to_string())),
        }
        let config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| cert_err(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
        Ok(Identity {
            config: Arc::new(config),
            subject,
            not_after,
            fingerprint,
        })
    }

    /// How long until it expires; `None` once it has.
    pub fn remaining(&self) -> Option<Duration> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        u64::try_from(self.not_after - now)
            .ok()
            .map(Duration::from_secs)
    }

    /// `notAfter` as `2027-01-31 12:00:00 UTC`.
    pub fn expires(&self) -> String {
        time::OffsetDateTime::from_unix_timestamp(self.not_after)
            .ok()
            .and_then(|t| {
                t.format(time::macros::format_description!(
                    "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
                ))
                .ok()
            })
            .unwrap_or_else(|| self.not_after.to_string())
    }

    /// One log line on what is now served; a warning when it expires soon or has expired.
    fn log(&self, what: &str) {
        let (subject, expires, fingerprint) = (&self.subject, self.expires(), &self.fingerprint);
        match self.remaining() {
            None => tracing::error!(
                %subject, %expires, %fingerprint,
                "{what}: the TLS certificate has EXPIRED; clients will refuse it"
            ),
            Some(left) if left < EXPIRY_WARNING => tracing::warn!(
                %subject, %expires, %fingerprint, days_left = left.as_secs() / 86_400,
                "{what}: the TLS certificate expires within 14 days"
            ),
            Some(left) => tracing::info!(
                %subject, %expires, %fingerprint, days_left = left.as_secs() / 86_400,
                "{what}: TLS certificate"
            ),
        }
    }
}

fn read_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file".into(),
        io::ErrorKind::PermissionDenied => "permission denied (cannot read it)".into(),
        io::ErrorKind::IsADirectory => "is a directory, not a PEM file".into(),
        _ => format!("cannot read it: {e}"),
    }
}

fn pem_error(e: &pem::Error, label: &str) -> String {
    match e {
        pem::Error::NoItemsFound => format!(
            "no {} in it (expected a PEM block \"-----BEGIN {label}-----\"{})",
            label.to_ascii_lowercase(),
            if label == "PRIVATE KEY" {
                ", or RSA PRIVATE KEY, or EC PRIVATE KEY"
            } else {
                ""
            }
        ),
        e => format!("not a valid PEM file: {e}"),
    }
}

/// Why a handshake did not complete, for the metrics (`linechat_tls_handshake_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The first byte was not a TLS handshake record: a plaintext client, answered in plain.
    Plaintext,
    /// Not complete within the handshake deadline.
    Timeout,
    /// The peer closed or reset the connection during it.
    Closed,
    /// No TLS version or cipher suite in common (an old client).
    Incompatible,
    /// The client sent an alert: usually that it does not trust our certificate.
    Alert,
    /// Malformed or unexpected handshake messages.
    Invalid,
}

impl Failure {
    pub const ALL: [Failure; 6] = [
        Failure::Plaintext,
        Failure::Timeout,
        Failure::Closed,
        Failure::Incompatible,
        Failure::Alert,
        Failure::Invalid,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Failure::Plaintext => "plaintext",
            Failure::Timeout => "timeout",
            Failure::Closed => "closed",
            Failure::Incompatible => "incompatible",
            Failure::Alert => "alert",
            Failure::Invalid => "invalid",
        }
    }

    fn of(e: &io::Error) -> Failure {
        let tls = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match tls {
            Some(rustls::Error::PeerIncompatible(_))
            | Some(rustls::Error::NoApplicationProtocol) => Failure::Incompatible,
            Some(rustls::Error::AlertReceived(_)) => Failure::Alert,
            Some(_) => Failure::Invalid,
            None => match e.kind() {
                io::ErrorKind::InvalidData => Failure::Invalid,
                _ => Failure::Closed,
            },
        }
    }
}

/// What the TLS step counted since start.
#[derive(Debug, Default)]
pub struct Counters {
    pub handshakes: AtomicU64,
    failures: [AtomicU64; Failure::ALL.len()],
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}

impl Counters {
    pub fn failed(&self, failure: Failure) -> u64 {
        self.failures[failure as usize].load(Relaxed)
    }

    fn fail(&self, failure: Failure) {
        self.failures[failure as usize].fetch_add(1, Relaxed);
    }
}

/// The certificate every TLS listener serves, and the files it is reloaded from.
///
/// The lock guards one `Arc` swap: a handshake clones the `Arc` and lets go at once, and a
/// reload builds the new configuration before taking it, so neither waits on the other for
/// longer than a pointer copy. A connection keeps the configuration it started with.
pub struct Certs {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<Identity>>,
    pub counters: Counters,
}

impl fmt::Debug for Certs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certs")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Certs {
    /// Loads the certificate and key, and logs what is served.
    pub fn load(cert: &Path, key: &Path) -> Result<Certs, LoadError> {
        let identity = Identity::load(cert, key)?;
        identity.log("loaded");
        Ok(Certs {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(identity)),
            counters: Counters::default(),
        })
    }

    /// Reads the files again (SIGHUP). New connections get the new certificate; open ones keep
    /// theirs. A file that cannot be used is logged and the old certificate stays.
    pub fn reload(&self) -> Result<(), LoadError> {
        match Identity::load(&self.cert, &self.key) {
            Ok(identity) => {
                identity.log("reloaded");
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(identity);
                self.counters.reloads.fetch_add(1, Relaxed);
                Ok(())
            }
            Err(e) => {
                self.counters.reload_failures.fetch_add(1, Relaxed);
                let kept = self.current();
                tracing::error!(
                    error = %e,
                    subject = %kept.subject,
                    expires = %kept.expires(),
                    "cannot reload the TLS certificate; still serving the previous one"
                );
                Err(e)
            }
        }
    }

    pub fn current(&self) -> Arc<Identity> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The handshake, in the connection's own task. A client whose first byte is not a TLS
    /// handshake record, or that sends nothing at all before `deadline` (a plaintext client
    /// waiting for a prompt), gets `plaintext_answer` in plain text and is closed.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        deadline: Duration,
        plaintext_answer: impl FnOnce(SocketAddr) -> String,
    ) -> Option<Stream> {
        let config = self.current().config.clone();
        let until = tokio::time::Instant::now() + deadline;
        let first = tokio::time::timeout_at(until, async {
            let mut byte = [0u8; 1];
            tcp.peek(&mut byte)
                .await
                .map(|n| (n > 0).then_some(byte[0]))
        })
        .await;
        // Counted before any answer is sent: whoever reads the answer may read the metrics next.
        let (failure, answer) = match first {
            Ok(Ok(Some(byte))) if byte == CLIENT_HELLO_START[0] => {
                match tokio::time::timeout_at(until, TlsAcceptor::from(config).accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        self.counters.handshakes.fetch_add(1, Relaxed);
                        let stream = Stream::Layered(Box::new(tls));
                        if let Some(info) = stream.tls() {
                            tracing::debug!(version = info.version, suite = info.suite, "TLS");
                        }
                        return Some(stream);
                    }
                    Ok(Err(e)) => {
                        let failure = Failure::of(&e);
                        tracing::info!(error = %e, reason = failure.label(), "TLS handshake failed");
                        (failure, None)
                    }
                    Err(_) => {
                        tracing::info!("TLS handshake not completed in time; closing");
                        (Failure::Timeout, None)
                    }
                }
            }
            Ok(Ok(Some(_))) => {
                tracing::info!("plaintext client on a TLS port; told so and closing");
                (Failure::Plaintext, Some(tcp))
            }
            Ok(Ok(None) | Err(_)) => (Failure::Closed, None),
            Err(_) => {
                tracing::info!("nothing received in time for a TLS handshake; told so and closing");
                (Failure::Timeout, Some(tcp))
            }
        };
        self.counters.fail(failure);
        if let Some(tcp) = answer {
            answer_plain(tcp, plaintext_answer).await;
        }
        None
    }
}

/// Tells a client in plain text what the port speaks, then closes without losing the line to
/// a reset.
async fn answer_plain(tcp: TcpStream, answer: impl FnOnce(SocketAddr) -> String) {
    let Ok(local) = tcp.local_addr() else { return };
    let transport = Transport::from(Stream::Tcp(tcp));
    transport.try_send(answer(local).as_bytes());
    transport.close(LINGER).await;
}

/// `HOST:PORT` a client connects to for `addr` (the address it reached), for the answers that
/// say how to connect.
pub fn host_port(addr: SocketAddr) -> String {
    match addr.ip().to_canonical() {
        std::net::IpAddr::V6(ip) => format!("[{ip}]:{}", addr.port()),
        ip => format!("{ip}:{}", addr.port()),
    }
}

fn version_name(version: Option<ProtocolVersion>) -> &'static str {
    match version {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
        Some(other) => other.as_str().unwrap_or("unknown"),
        None => "unknown",
    }
}

impl Layered for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }

    fn tls(&self) -> Option<TlsInfo> {
        let session = self.get_ref().1;
        Some(TlsInfo {
            version: version_name(session.protocol_version()),
            suite: session
                .negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str())
                .unwrap_or("unknown"),
        })
    }
}
