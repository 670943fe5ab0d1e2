//! A user-space TCP relay on loopback that degrades the path between clients and the server:
//! latency with jitter per direction, a bandwidth cap, and two ways to fail (cut: both sides
//! reset; black hole: the relay stops moving and reading bytes, so the server's output piles up
//! unacknowledged at the application level).
//!
//! A relay terminates TCP: the server's kernel talks to the relay's kernel, which acknowledges
//! at once. So the delay is visible to the application (replies come late) but not to the
//! server's `TCP_INFO`, which measures the loopback hop; the netns tests give kernel-level loss.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How one direction of the path behaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path {
    pub delay: Duration,
    /// Each chunk's delay is `delay ± jitter`, uniformly; chunks never overtake each other
    /// (TCP delivers in order, so a relay must too).
    pub jitter: Duration,
    /// Bytes per second at most; `None` = unlimited.
    pub rate: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    pub to_server: Path,
    pub to_client: Path,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Flowing,
    BlackHole,
    Cut,
}

#[derive(Debug)]
pub struct Proxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    tasks: JoinSet<()>,
}

impl Proxy {
    /// Relays every connection made to `proxy.addr` to `upstream`.
    pub async fn start(upstream: SocketAddr, faults: Faults) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, _) = watch::channel(Mode::Flowing);
        let mut tasks = JoinSet::new();
        let modes = mode.clone();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let rx = modes.subscribe();
                let rx2 = modes.subscribe();
                conns.spawn(relay(cr, sw, faults.to_server, rx));
                conns.spawn(relay(sr, cw, faults.to_client, rx2));
            }
        });
        Proxy { addr, mode, tasks }
    }

    /// From now on nothing moves in either direction and nothing more is read: to the server,
    /// the client has stopped reading and gone silent, without FIN or RST.
    pub fn black_hole(&self) {
        self.mode.send_replace(Mode::BlackHole);
    }

    /// Drops every relayed connection at once (the sockets are closed with a reset).
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

/// One direction: a reader that stamps each chunk with its delivery time, and a writer that
/// delivers it then, paced to the rate.
async fn relay(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    path: Path,
    mut mode: watch::Receiver<Mode>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let mut read_mode = mode.clone();
    let read_from = &mut from;
    let reader = async move {
        let mut last = Instant::now();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if *read_mode.borrow_and_update() != Mode::Flowing {
                // Stop reading but keep the socket: a black hole sends no FIN.
                return std::future::pending::<()>().await;
            }
            let n = tokio::select! {
                n = read_from.read(&mut buf) => match n { Ok(0) | Err(_) => return, Ok(n) => n },
                _ = read_mode.changed() => continue,
            };
            let at = (Instant::now() + jittered(path)).max(last);
            last = at;
            if tx.send((at, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    };
    let write_mode = mode.clone();
    let write_to = &mut to;
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if *write_mode.borrow() != Mode::Flowing {
                return std::future::pending::<()>().await;
            }
            if write_to.write_all(&chunk).await.is_err() {
                return;
            }
            if let Some(rate) = path.rate {
                tokio::time::sleep(Duration::from_secs_f64(chunk.len() as f64 / rate as f64)).await;
            }
        }
        let _ = write_to.shutdown().await;
    };
    let cut = tokio::select! {
        _ = async { tokio::join!(reader, writer) } => false,
        _ = mode.wait_for(|m| *m == Mode::Cut) => true,
    };
    if cut {
        // Closing with SO_LINGER 0 sends RST instead of FIN.
        let _ = socket2::SockRef::from(from.as_ref()).set_linger(Some(Duration::ZERO));
        let _ = socket2::SockRef::from(to.as_ref()).set_linger(Some(Duration::ZERO));
    }
}

fn jittered(path: Path) -> Duration {
    if path.jitter.is_zero() {
        return path.delay;
    }
    let span = path.jitter.as_secs_f64() * 2.0;
    let offset = fastrand_f64() * span - path.jitter.as_secs_f64();
    Duration::from_secs_f64((path.delay.as_secs_f64() + offset).max(0.0))
}

/// A small xorshift, so the relay needs no RNG crate; quality hardly matters for jitter.
fn fastrand_f64() -> f64 {
    use std::cell::Cell;
    thread_local!(static STATE: Cell<u64> = const { Cell::new(0x9E37_79B9_7F4A_7C15) });
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}
