//! A WebSocket connection as a byte stream ([`Layered`]), so the line and IRC sessions, with
//! all of the shared reader's and writer's limits, run over it unchanged.
//!
//! Reading: each text or binary message's payload, unmasked, followed by `\n`. The payload is
//! passed on as it arrives, never gathered whole first, so a message over the line limit
//! reaches the line decoder as an over-long line and is refused the way netcat's are, and an
//! idle connection holds no read buffer. A pong arrives as an empty line (which every session
//! ignores): the sign of life the idle timer waits for after [`Layered::ping`].
//!
//! Writing: the writer's coalesced output is cut at `\n` into one message per line, without
//! the line ending (`\r\n` for IRC, as the IRCv3 WebSocket specification asks), and the frames
//! of one batch go out in one write. Text left after the last `\n` (the nickname prompt) is a
//! message of its own.
//!
//! Reader and writer poll this stream from different tasks, and both may write (a pong is
//! sent from the reading side). The socket is therefore always polled with one waker of our
//! own that wakes both, so neither side's registration can replace the other's.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll, Wake, Waker};

use bytes::{Buf, BytesMut};
use memchr::memchr;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::frame::{self, FrameError, Header};
use crate::net::stream::{Layered, Stream};

/// Bytes asked of the socket per read. Browsers send one short line at a time; a larger
/// paste takes a few reads. Released whenever it empties.
const READ_CHUNK: usize = 4 * 1024;

/// The output buffer is kept between batches up to this size (enough for a few lines), so a
/// quiet connection does not keep the buffer of its largest burst.
const KEEP_OUT: usize = 1024;

/// How a session's lines travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carry {
    /// Text messages (the line protocol, and `text.ircv3.net`).
    Text,
    /// Binary messages (`binary.ircv3.net`).
    Binary,
}

#[derive(Debug)]
enum Reading {
    Header,
    /// Inside a data frame: `left` payload bytes to come, `offset` already passed on.
    Data {
        left: u64,
        mask: [u8; 4],
        offset: usize,
        fin: bool,
    },
}

/// The two tasks that may wait on the socket.
#[derive(Debug, Default)]
struct Wakers {
    read: Mutex<Option<Waker>>,
    write: Mutex<Option<Waker>>,
}

impl Wakers {
    fn register(slot: &Mutex<Option<Waker>>, cx: &Context<'_>) {
        let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *slot = Some(cx.waker().clone());
        }
    }
}

impl Wake for Wakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        for slot in [&self.read, &self.write] {
            let waker = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

/// A server-side WebSocket connection after the handshake.
#[derive(Debug)]
pub struct WsStream {
    inner: Stream,
    wakers: Arc<Wakers>,
    /// Wakes both sides; the only waker the socket ever sees.
    proxy: Waker,
    carry: Carry,
    /// Bytes from the socket not yet decoded.
    rbuf: BytesMut,
    reading: Reading,
    /// Between the first frame of a message and its last.
    in_message: bool,
    /// A message ended (or a pong came) and its `\n` is still to be passed on.
    newline_due: bool,
    /// The peer sent a close frame, or the socket ended: reading is over.
    ended: bool,
    /// Encoded frames not yet written, from `written` on; only ever whole frames are added,
    /// so control frames never land inside a data frame.
    out: Vec<u8>,
    written: usize,
    /// The payload of the latest ping, while earlier output is still unwritten: one pong is
    /// owed however many pings came meanwhile (RFC 6455 5.5.3 lets a pong answer only the
    /// most recent), so a client that pings and never reads cannot grow `out`.
    pong_owed: Option<Vec<u8>>,
    close_sent: bool,
}

impl WsStream {
    /// `early` holds what the client sent after its handshake, already read with it.
    pub fn new(inner: Stream, early: BytesMut, carry: Carry) -> WsStream {
        let wakers = Arc::new(Wakers::default());
        WsStream {
            inner,
            proxy: Waker::from(wakers.clone()),
            wakers,
            carry,
            rbuf: early,
            reading: Reading::Header,
            in_message: false,
            newline_due: false,
            ended: false,
            out: Vec::new(),
            written: 0,
            pong_owed: None,
            close_sent: false,
        }
    }

    /// Writes queued frames until none are left or the socket is full.
    fn flush_out(&mut self) -> Poll<io::Result<()>> {
        let mut cx = Context::from_waker(&self.proxy);
        loop {
            while self.written < self.out.len() {
                let n = ready!(
                    Pin::new(&mut self.inner).poll_write(&mut cx, &self.out[self.written..])
                )?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.written += n;
            }
            self.out.clear();
            self.written = 0;
            match self.pong_owed.take() {
                // Nothing may follow our close frame, which may have been among what was
                // just written.
                Some(payload) if !self.close_sent => {
                    frame::put_frame(&mut self.out, frame::PONG, None, &payload)
                }
                _ => break,
            }
        }
        if self.out.capacity() > KEEP_OUT {
            self.out = Vec::new();
        }
        Poll::Ready(Ok(()))
    }

    /// Queues a control frame and tries to send it at once; what does not fit now goes with
    /// the next write from either side.
    fn control(&mut self, opcode: u8, payload: &[u8]) {
        frame::put_frame(&mut self.out, opcode, None, payload);
        let _ = self.flush_out();
    }

    fn fail(&mut self, e: FrameError) -> io::Error {
        if !self.close_sent {
            self.close_sent = true;
            self.control(
                frame::CLOSE,
                &frame::close_payload(frame::CLOSE_PROTOCOL, &e.to_string()),
            );
        }
        self.ended = true;
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    /// Moves what `rbuf` holds into `buf` as far as it goes: `Ok(true)` when anything was
    /// passed on.
    fn decode(&mut self, buf: &mut ReadBuf<'_>) -> io::Result<bool> {
        let mut passed = false;
        while buf.remaining() > 0 {
            if self.newline_due {
                buf.put_slice(b"\n");
                self.newline_due = false;
                passed = true;
                continue;
            }
            match &mut self.reading {
                Reading::Data {
                    left,
                    mask,
                    offset,
                    fin,
                } => {
                    if *left == 0 {
                        if *fin {
                            self.in_message = false;
                            self.newline_due = true;
                        }
                        self.reading = Reading::Header;
                        continue;
                    }
                    let n = (*left)
                        .min(self.rbuf.len() as u64)
                        .min(buf.remaining() as u64) as usize;
                    if n == 0 {
                        break;
                    }
                    let start = buf.filled().len();
                    buf.put_slice(&self.rbuf[..n]);
                    frame::apply_mask(*mask, *offset, &mut buf.filled_mut()[start..]);
                    self.rbuf.advance(n);
                    *left -= n as u64;
                    *offset += n;
                    passed = true;
                }
                Reading::Header => {
                    if self.ended {
                        break;
                    }
                    let Some((header, at)) =
                        frame::parse_header(&self.rbuf).map_err(|e| self.fail(e))?
                    else {
                        break;
                    };
                    if header.is_control() {
                        let end = at + header.len as usize;
                        if self.rbuf.len() < end {
                            break;
                        }
                        let mut payload = self.rbuf.split_to(end).split_off(at);
                        let Some(mask) = header.mask else {
                            return Err(self.fail(FrameError::Unmasked));
                        };
                        frame::apply_mask(mask, 0, &mut payload);
                        self.on_control(header, &payload)?;
                    } else {
                        self.start_data(header)?;
                        self.rbuf.advance(at);
                    }
                }
            }
        }
        Ok(passed)
    }

    fn start_data(&mut self, header: Header) -> io::Result<()> {
        let Some(mask) = header.mask else {
            return Err(self.fail(FrameError::Unmasked));
        };
        match (header.opcode, self.in_message) {
            (frame::CONTINUATION, false) => return Err(self.fail(FrameError::Continuation)),
            (frame::TEXT | frame::BINARY, true) => return Err(self.fail(FrameError::Interleaved)),
            _ => {}
        }
        self.in_message = true;
        self.reading = Reading::Data {
            left: header.len,
            mask,
            offset: 0,
            fin: header.fin,
        };
        Ok(())
    }

    fn on_control(&mut self, header: Header, payload: &[u8]) -> io::Result<()> {
        match header.opcode {
            frame::PING if !self.close_sent => {
                if self.written < self.out.len() {
                    self.pong_owed = Some(payload.to_vec());
                } else {
                    self.control(frame::PONG, payload);
                }
            }
            // A sign of life; inside a message the message itself is one.
            frame::PONG if !self.in_message => self.newline_due = true,
            frame::CLOSE => {
                check_close(payload).map_err(|e| self.fail(e))?;
                if !self.close_sent {
                    self.close_sent = true;
                    // Echo the status code, as section 5.5.1 suggests.
                    let code = payload.get(..2).unwrap_or(&[]);
                    self.control(frame::CLOSE, code);
                }
                self.ended = true;
            }
            _ => {}
        }
        Ok(())
    }

    /// Encodes `buf` as one message per line.
    fn encode(&mut self, buf: &[u8]) {
        let opcode = match self.carry {
            Carry::Text => frame::TEXT,
            Carry::Binary => frame::BINARY,
        };
        self.out.reserve(buf.len() + buf.len() / 16 + 16);
        let mut rest = buf;
        while !rest.is_empty() {
            let (line, next) = match memchr(b'\n', rest) {
                Some(end) => (&rest[..end], &rest[end + 1..]),
                None => (rest, &[][..]),
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            frame::put_frame(&mut self.out, opcode, None, line);
            rest = next;
        }
    }
}

/// A close frame's payload (RFC 6455 5.5.1, 7.4): empty, or a status code a peer may send
/// followed by a UTF-8 reason.
fn check_close(payload: &[u8]) -> Result<(), FrameError> {
    let Some((code, reason)) = payload.split_first_chunk::<2>() else {
        return if payload.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Close)
        };
    };
    let code = u16::from_be_bytes(*code);
    let sendable = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
    if !sendable || std::str::from_utf8(reason).is_err() {
        return Err(FrameError::Close);
    }
    Ok(())
}

impl AsyncRead for WsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        Wakers::register(&this.wakers.read, cx);
        if this.written < this.out.len() {
            // A pong that did not fit earlier.
            if let Poll::Ready(Err(e)) = this.flush_out() {
                return Poll::Ready(Err(e));
            }
        }
        loop {
            if this.decode(buf)? {
                return Poll::Ready(Ok(()));
            }
            if this.ended {
                // A message cut short by a close frame or the socket's end is not passed on
                // as if whole: what arrived of it went to the session as it came, and an end
                // of stream now would have it taken as a last line without its end.
                if this.in_message {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection ended inside a message",
                    )));
                }
                return Poll::Ready(Ok(()));
            }
            this.rbuf.reserve(READ_CHUNK);
            let mut proxy = Context::from_waker(&this.proxy);
            match tokio_util::io::poll_read_buf(
                Pin::new(&mut this.inner),
                &mut proxy,
                &mut this.rbuf,
            ) {
                Poll::Pending => {
                    if this.rbuf.is_empty() {
                        this.rbuf = BytesMut::new();
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => {
                    // The socket ended without a close frame; a header cut short carried
                    // nothing yet, and a message cut short is refused above.
                    this.ended = true;
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for WsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        Wakers::register(&this.wakers.write, cx);
        // Backpressure: nothing new is taken while earlier frames wait for the socket, so
        // what waits stays in the member's bounded outbox.
        ready!(this.flush_out())?;
        if this.close_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        this.encode(buf);
        // The bytes are taken whatever the socket says now; poll_flush finishes the job.
        if let Poll::Ready(Err(e)) = this.flush_out() {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        Wakers::register(&this.wakers.write, cx);
        ready!(this.flush_out())?;
        let mut proxy = Context::from_waker(&this.proxy);
        Pin::new(&mut this.inner).poll_flush(&mut proxy)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        Wakers::register(&this.wakers.write, cx);
        if !this.close_sent {
            this.close_sent = true;
            frame::put_frame(
                &mut this.out,
                frame::CLOSE,
                None,
                &frame::CLOSE_NORMAL.to_be_bytes(),
            );
        }
        ready!(this.flush_out())?;
        let mut proxy = Context::from_waker(&this.proxy);
        Pin::new(&mut this.inner).poll_shutdown(&mut proxy)
    }
}

impl Layered for WsStream {
    fn tcp(&self) -> &TcpStream {
        self.inner.tcp()
    }

    fn tls(&self) -> Option<crate::core::member::TlsInfo> {
        self.inner.tls()
    }

    fn web(&self) -> bool {
        true
    }

    fn ping(&mut self) -> bool {
        if self.close_sent {
            return false;
        }
        self.control(frame::PING, b"linechat");
        true
    }
}
