//! The transport seam: what a listener hands a protocol, and the few operations a connection
//! needs of it — read what has arrived, write a batch of queued entries, try one last write
//! that never waits, close cleanly, and sample `TCP_INFO`.
//!
//! A plain TCP connection is driven by readiness (`readable()`, `try_read`, `try_write`), with
//! small entries copied into one per-thread buffer and longer ones written with `writev`; that
//! is the path the benchmarks measure. Anything layered on TCP (TLS, WebSocket) is a [`Layered`]
//! stream: any `AsyncRead + AsyncWrite` that can name the TCP connection underneath. Its reader
//! and writer share it behind a mutex that is held only inside one `poll`, never across an
//! `.await`, so the two sides run on different threads as they do for TCP.

use std::fmt;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::core::member::{Probe, TlsInfo};
use crate::core::stats::TcpInfo;

/// Bytes requested per read. Large enough that a fast sender's many lines arrive in few reads;
/// the buffer is released whenever it empties, so idle connections do not keep it.
pub const READ_CHUNK: usize = 8 * 1024;

/// Queue entries written per vectored write (a quarter of `IOV_MAX`, 1024 on Linux): enough
/// that a backlog leaves in few syscalls, small enough for the slice array to sit on the stack.
const MAX_IOV: usize = 256;

/// Queue entries up to this long are copied into one buffer and sent with a plain `write`
/// rather than handed to the kernel one `iovec` each. For lines of 70 to 110 bytes the kernel's
/// cost of a `writev` is nearly all per segment, not per byte: on this machine's loopback 190
/// such lines cost 16–20 µs as one `writev` and 7–10 µs copied (in user space, in cache) and
/// written as one buffer. Longer entries (history, `/who` of a big room) are not worth copying.
/// A layered stream gets the same copies: one TLS record or WebSocket frame per buffer rather
/// than per line.
const COPY_MAX: usize = 2 * 1024;

/// The most bytes copied for one `write`. The buffer is one per thread, not one per connection,
/// so 10 000 idle clients hold none of it.
const COPY_BUF: usize = 64 * 1024;

thread_local! {
    /// Where small entries are gathered; it is only used within one synchronous call.
    static COPY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A stream layered on a TCP connection (TLS, WebSocket).
pub trait Layered: AsyncRead + AsyncWrite + Send + Unpin + fmt::Debug + 'static {
    /// The TCP connection underneath: for socket options and `TCP_INFO`.
    fn tcp(&self) -> &TcpStream;

    /// The TLS version and cipher suite when the layer is TLS (for `/metrics`).
    fn tls(&self) -> Option<TlsInfo> {
        None
    }

    /// Whether the connection came in over WebSocket (protocol `web` in `/metrics` and `/who`).
    fn web(&self) -> bool {
        false
    }

    /// Asks the peer for a sign of life without waiting (a WebSocket ping), which arrives as an
    /// empty line. `false` when the layer has no such thing and the session must use words.
    fn ping(&mut self) -> bool {
        false
    }
}

/// An accepted connection as a listener hands it to a protocol.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Layered(Box<dyn Layered>),
}

impl Stream {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Tcp(tcp) => tcp,
            Stream::Layered(layered) => layered.tcp(),
        }
    }

    pub fn tls(&self) -> Option<TlsInfo> {
        match self {
            Stream::Tcp(_) => None,
            Stream::Layered(layered) => layered.tls(),
        }
    }

    pub fn web(&self) -> bool {
        match self {
            Stream::Tcp(_) => false,
            Stream::Layered(layered) => layered.web(),
        }
    }
}

/// A stream is itself a byte stream, so a layer (WebSocket on TLS on TCP) can be put on
/// whatever a listener produced.
impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Layered(layered) => Pin::new(&mut **layered).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Layered(layered) => Pin::new(&mut **layered).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Layered(layered) => Pin::new(&mut **layered).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Layered(layered) => Pin::new(&mut **layered).poll_shutdown(cx),
        }
    }
}

/// A connection's transport, shared by its reader, its writer and its member's probe. One
/// pointer, as the `Arc<TcpStream>` it replaced was: it is held in every idle connection's
/// two tasks.
#[derive(Debug, Clone)]
pub struct Transport(Arc<Io>);

#[derive(Debug)]
enum Io {
    Tcp(TcpStream),
    Layered(Mutex<Box<dyn Layered>>),
}

impl From<Stream> for Transport {
    fn from(stream: Stream) -> Transport {
        Transport(Arc::new(match stream {
            Stream::Tcp(tcp) => Io::Tcp(tcp),
            Stream::Layered(layered) => Io::Layered(Mutex::new(layered)),
        }))
    }
}

/// The lock is held only within one poll; a panic while holding it cannot leave the stream in
/// a state worse than a failed write, so a poisoned lock is used as it is.
fn locked(layered: &Mutex<Box<dyn Layered>>) -> MutexGuard<'_, Box<dyn Layered>> {
    layered.lock().unwrap_or_else(|e| e.into_inner())
}

impl Transport {
    /// One read of whatever has arrived, appended to `buf`; `Ok(0)` at end of stream. While it
    /// waits, `buf` holds no allocation unless it already held data.
    ///
    /// The TCP paths of this and [`Transport::write_batch`] are written out here rather than
    /// called, and the layered ones kept small (a `poll_fn`) or boxed: a task is allocated for
    /// its largest state in steps of 128 bytes (tokio aligns them to cache lines), every idle
    /// connection has two (its session waits in this read, its writer in the write), and a
    /// nested future would hold its own copy of the arguments.
    pub async fn read_some(&self, buf: &mut BytesMut) -> io::Result<usize> {
        let socket = match &*self.0 {
            Io::Tcp(socket) => socket,
            Io::Layered(layered) => {
                return poll_fn(|cx| {
                    buf.reserve(READ_CHUNK);
                    let mut stream = locked(layered);
                    let read = tokio_util::io::poll_read_buf(Pin::new(&mut **stream), cx, buf);
                    if read.is_pending() && buf.is_empty() {
                        // As for TCP: an idle connection must not keep a read buffer.
                        *buf = BytesMut::new();
                    }
                    read
                })
                .await;
            }
        };
        loop {
            socket.readable().await?;
            buf.reserve(READ_CHUNK);
            match socket.try_read_buf(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Readiness was stale (it is cleared only by a read that would block):
                    // give the empty buffer back before waiting, or every idle connection
                    // would hold one.
                    if buf.is_empty() {
                        *buf = BytesMut::new();
                    }
                    continue;
                }
                result => return result,
            }
        }
    }

    /// Writes every byte of `batch`, in as few syscalls as the kernel allows. Fails with
    /// `TimedOut` when the transport accepts nothing for `deadline`: a peer that vanished
    /// without a FIN leaves a full send buffer that never drains, and this bounds how long its
    /// queue is kept. (The kernel's `TCP_USER_TIMEOUT` usually fires first; this also covers a
    /// peer whose kernel is alive but whose window stays shut.)
    pub async fn write_batch(&self, batch: &[Bytes], deadline: Option<Duration>) -> io::Result<()> {
        let socket = match &*self.0 {
            Io::Tcp(socket) => socket,
            Io::Layered(layered) => return Box::pin(write_layered(layered, batch, deadline)).await,
        };
        let mut progress = Progress::new(batch);
        while !progress.done(batch) {
            let written = match write_some(&mut Try(socket), batch, &progress) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                // Writing is tried first and waited for only when the socket is full: a
                // deadline per write would cost a clock read and a timer for the rare case.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match deadline {
                        Some(deadline) => tokio::time::timeout(deadline, socket.writable())
                            .await
                            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??,
                        None => socket.writable().await?,
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            progress.advance(batch, written);
        }
        Ok(())
    }

    /// Asks the peer for a sign of life, when the transport can (see [`Layered::ping`]).
    pub fn ping(&self) -> bool {
        match &*self.0 {
            Io::Tcp(_) => false,
            Io::Layered(layered) => locked(layered).ping(),
        }
    }

    /// One write of `bytes` that never waits: for the farewell to a connection whose queue was
    /// dropped. What does not fit is lost, which is the point.
    pub fn try_send(&self, bytes: &[u8]) {
        match &*self.0 {
            Io::Tcp(socket) => {
                let _ = socket.try_write(bytes);
            }
            Io::Layered(layered) => {
                let mut cx = Context::from_waker(Waker::noop());
                let mut stream = locked(layered);
                let mut stream = Pin::new(&mut **stream);
                if let Poll::Ready(Ok(_)) = stream.as_mut().poll_write(&mut cx, bytes) {
                    let _ = stream.poll_flush(&mut cx);
                }
            }
        }
    }

    /// Closes our side (for a layer, its own close first: TLS's `close_notify`), then reads and
    /// discards until the peer closes too or `linger` passes, so the kernel does not answer
    /// leftover input with a reset that would destroy our last lines in the peer's receive
    /// buffer.
    pub async fn close(&self, linger: Duration) {
        match &*self.0 {
            Io::Tcp(socket) => {
                // SAFETY: shutdown on a descriptor we own (through the Arc) has no memory
                // effects.
                unsafe { libc::shutdown(socket.as_raw_fd(), libc::SHUT_WR) };
            }
            Io::Layered(layered) => {
                let shutdown = poll_fn(|cx| Pin::new(&mut **locked(layered)).poll_shutdown(cx));
                if tokio::time::timeout(linger, shutdown).await.is_err() {
                    return;
                }
            }
        }
        let drain = async {
            let mut scratch = BytesMut::new();
            loop {
                scratch.clear();
                match self.read_some(&mut scratch).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(linger, drain).await;
    }
}

/// A transport as a member's [`Probe`]: its `TCP_INFO`. The `Arc` keeps the descriptor from
/// being closed and reused while a sample is taken.
impl Probe for Transport {
    fn tcp_info(&self) -> Option<TcpInfo> {
        match &*self.0 {
            Io::Tcp(socket) => super::sockopt::tcp_info(socket),
            Io::Layered(layered) => super::sockopt::tcp_info(locked(layered).tcp()),
        }
    }
}

async fn write_layered(
    layered: &Mutex<Box<dyn Layered>>,
    batch: &[Bytes],
    deadline: Option<Duration>,
) -> io::Result<()> {
    let mut progress = Progress::new(batch);
    loop {
        // One step: what the stream takes now, or a wait until it takes something. The
        // deadline is for a stall, as on the TCP path, not for the whole batch: a client on a
        // slow link that keeps reading must not be cut off because the batch is large.
        let step = poll_fn(|cx| {
            let mut stream = locked(layered);
            let mut moved = false;
            while !progress.done(batch) {
                match write_some(&mut Polled(cx, &mut **stream), batch, &progress) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(written)) => {
                        progress.advance(batch, written);
                        moved = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending if moved => return Poll::Ready(Ok(false)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            match Pin::new(&mut **stream).poll_flush(cx) {
                Poll::Ready(done) => Poll::Ready(done.map(|()| true)),
                Poll::Pending if moved => Poll::Ready(Ok(false)),
                Poll::Pending => Poll::Pending,
            }
        });
        let finished = match deadline {
            Some(deadline) => tokio::time::timeout(deadline, step)
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??,
            None => step.await?,
        };
        if finished {
            return Ok(());
        }
    }
}

/// How much of a batch has been written: whole entries, then bytes of the next one.
#[derive(Debug)]
struct Progress {
    first: usize,
    offset: usize,
}

impl Progress {
    /// At the start of `batch`, past any empty entries: a batch of nothing but empty ones
    /// is done before it starts, where writing it would write 0 bytes and read as a
    /// connection that cannot take any (`WriteZero`).
    fn new(batch: &[Bytes]) -> Progress {
        let mut progress = Progress {
            first: 0,
            offset: 0,
        };
        progress.advance(batch, 0);
        progress
    }

    fn done(&self, batch: &[Bytes]) -> bool {
        self.first >= batch.len()
    }

    fn advance(&mut self, batch: &[Bytes], mut written: usize) {
        while written > 0 {
            let left = batch[self.first].len() - self.offset;
            if written >= left {
                written -= left;
                self.first += 1;
                self.offset = 0;
            } else {
                self.offset += written;
                written = 0;
            }
        }
        // Skip empty entries so the loop ends even when the last ones carry no bytes.
        while self.first < batch.len() && batch[self.first].len() == self.offset {
            self.first += 1;
            self.offset = 0;
        }
    }
}

/// The two writes [`write_some`] makes, for a socket tried without waiting and for a layered
/// stream polled (where `Pending` has registered the waker).
trait Sink {
    type Out;
    fn write(&mut self, buf: &[u8]) -> Self::Out;
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> Self::Out;
}

struct Try<'a>(&'a TcpStream);

impl Sink for Try<'_> {
    type Out = io::Result<usize>;

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Still `writev` (of one slice), so `/proc/PID/io` counts these writes as it counts the
        // others (`send`, what `try_write` makes, is not counted there).
        self.0.try_write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }
}

struct Polled<'a, 'b>(&'a mut Context<'b>, &'a mut dyn Layered);

impl Sink for Polled<'_, '_> {
    type Out = Poll<io::Result<usize>>;

    fn write(&mut self, buf: &[u8]) -> Self::Out {
        Pin::new(&mut *self.1).poll_write(self.0, buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> Self::Out {
        Pin::new(&mut *self.1).poll_write_vectored(self.0, bufs)
    }
}

/// One write of what is left of `batch`: a run of small entries copied into one buffer and
/// written with one `write`, or else one vectored write over the entries as they are.
fn write_some<S: Sink>(sink: &mut S, batch: &[Bytes], progress: &Progress) -> S::Out {
    let batch = &batch[progress.first..];
    let head = &batch[0][progress.offset..];
    // Worth a copy when at least two small entries lead.
    let next_small = batch.get(1).is_some_and(|msg| msg.len() <= COPY_MAX);
    if head.len() <= COPY_MAX && next_small {
        return COPY.with(|copy| {
            let mut copy = copy.borrow_mut();
            copy.clear();
            copy.reserve(COPY_BUF);
            copy.extend_from_slice(head);
            for msg in &batch[1..] {
                if msg.len() > COPY_MAX || copy.len() + msg.len() > COPY_BUF {
                    break;
                }
                copy.extend_from_slice(msg);
            }
            sink.write(&copy)
        });
    }
    // The slice array (4 KiB) lives only in this function: held across the caller's `.await`
    // it would become part of every connection's writer future.
    let mut iov = [IoSlice::new(&[]); MAX_IOV];
    let count = batch.len().min(MAX_IOV);
    iov[0] = IoSlice::new(head);
    for (slot, msg) in iov[1..count].iter_mut().zip(&batch[1..]) {
        *slot = IoSlice::new(msg);
    }
    sink.write_vectored(&iov[..count])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer that adds nothing, so the tests exercise the layered path on its own.
    #[derive(Debug)]
    struct Plain(TcpStream);

    impl AsyncRead for Plain {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Plain {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    impl Layered for Plain {
        fn tcp(&self) -> &TcpStream {
            &self.0
        }
    }

    async fn pair(layered: bool) -> (Transport, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let stream = if layered {
            Stream::Layered(Box::new(Plain(server)))
        } else {
            Stream::Tcp(server)
        };
        (Transport::from(stream), client)
    }

    /// Small entries are copied together, long ones written as they are, partial writes are
    /// resumed: whatever the mix, the peer gets every byte in order, on both paths.
    #[tokio::test]
    async fn a_batch_arrives_whole_and_in_order() {
        for layered in [false, true] {
            let (server, mut client) = pair(layered).await;
            let batch: Vec<Bytes> = (0..2000u32)
                .map(|i| match i % 7 {
                    0 => Bytes::from(vec![b'a' + (i % 26) as u8; 5000]),
                    1 => Bytes::new(),
                    _ => Bytes::from(format!("line {i}\n")),
                })
                .collect();
            let expected: Vec<u8> = batch.iter().flat_map(|b| b.iter().copied()).collect();
            let reading = tokio::spawn(async move {
                let mut got = Vec::new();
                tokio::io::AsyncReadExt::read_to_end(&mut client, &mut got)
                    .await
                    .unwrap();
                got
            });
            server.write_batch(&batch, None).await.unwrap();
            server.close(Duration::from_secs(1)).await;
            assert!(reading.await.unwrap() == expected, "layered: {layered}");
        }
    }

    /// A peer that reads slowly but steadily keeps its connection, on both paths: the deadline
    /// is for a stall, not for the whole batch. On the layered path it was the whole batch,
    /// so a TLS or WebSocket client on a slow link was cut off in a busy room while reading.
    /// 32 MiB read 64 KiB every 10 ms take 5 s (of paused time) against a 1 s deadline (the
    /// kernel wakes a writer once about half its send buffer is free, so the reader must
    /// drain a few MiB within the deadline for TCP to make progress at all).
    #[tokio::test(start_paused = true)]
    async fn a_slow_but_steady_reader_is_not_timed_out() {
        const TOTAL: usize = 32 << 20;
        for layered in [false, true] {
            let (server, mut client) = pair(layered).await;
            let batch: Vec<Bytes> = (0..TOTAL / (64 << 10))
                .map(|_| Bytes::from(vec![b'x'; 64 << 10]))
                .collect();
            let reading = tokio::spawn(async move {
                let mut buf = vec![0; 64 << 10];
                let mut got = 0;
                while got < TOTAL {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    let n = tokio::io::AsyncReadExt::read(&mut client, &mut buf)
                        .await
                        .unwrap();
                    assert!(n > 0, "closed after {got} bytes");
                    got += n;
                }
                got
            });
            let written = server
                .write_batch(&batch, Some(Duration::from_secs(1)))
                .await;
            assert!(written.is_ok(), "layered: {layered}: {written:?}");
            assert_eq!(reading.await.unwrap(), TOTAL);
        }
    }

    /// A batch of nothing but empty entries is written as nothing, on both paths: once it was
    /// written as 0 bytes, which reads as a peer that takes none (`WriteZero`), and an IRC
    /// client flood-paused between CHATHISTORY replies was cut off with `connection error`.
    #[tokio::test]
    async fn a_batch_of_empty_entries_is_nothing_to_write() {
        for layered in [false, true] {
            let (server, mut client) = pair(layered).await;
            let empty = vec![Bytes::new(); 16];
            server.write_batch(&empty, None).await.unwrap();
            server
                .write_batch(&[Bytes::from_static(b"after\n")], None)
                .await
                .unwrap();
            server.close(Duration::from_secs(1)).await;
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut client, &mut got)
                .await
                .unwrap();
            assert_eq!(got, b"after\n", "layered: {layered}");
        }
    }

    /// Readiness stays set until a read would block, so the wait after a consumed line starts
    /// with a read that finds nothing; the buffer reserved for it must not be kept while idle.
    #[tokio::test]
    async fn an_idle_reader_holds_no_buffer() {
        for layered in [false, true] {
            let (server, mut client) = pair(layered).await;
            tokio::io::AsyncWriteExt::write_all(&mut client, b"alice\n")
                .await
                .unwrap();
            let mut buf = BytesMut::new();
            assert_eq!(server.read_some(&mut buf).await.unwrap(), 6);
            buf.clear(); // the session consumed the line
            let idle = tokio::time::timeout(Duration::from_millis(50), server.read_some(&mut buf));
            assert!(idle.await.is_err(), "nothing more to read");
            assert_eq!(
                buf.capacity(),
                0,
                "layered: {layered}: the idle wait kept a buffer"
            );
        }
    }

    /// A peer that stops reading fills every buffer between us; the write then gives up after
    /// the deadline instead of keeping the queue forever.
    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_reads_times_out() {
        for layered in [false, true] {
            let (server, _client) = pair(layered).await;
            let chunk = Bytes::from(vec![b'x'; 1 << 20]);
            let batch = vec![chunk; 64];
            let result = server
                .write_batch(&batch, Some(Duration::from_secs(30)))
                .await;
            assert_eq!(
                result.unwrap_err().kind(),
                io::ErrorKind::TimedOut,
                "layered: {layered}"
            );
        }
    }

    #[tokio::test]
    async fn tcp_info_comes_through_the_layer() {
        let (server, _client) = pair(true).await;
        assert!(server.tcp_info().is_some());
    }
}
