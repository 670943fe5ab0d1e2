//! Load helpers: a seeded random generator and a bare-bones chat client that can connect and
//! leave in every way a real one does (quit, close, reset, abandon the prompt).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// xorshift64*: reproducible from its seed, so a failing run can be replayed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// The ways a storm connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Joins, says something, `/quit`.
    Quit,
    /// Joins, then closes (FIN).
    Close,
    /// Joins, then resets (RST).
    Reset,
    /// Reads the prompt and resets.
    ResetAtPrompt,
    /// Sends half a nickname (no newline) and closes.
    HalfNick,
    /// Connects and closes at once, before reading anything.
    Immediate,
}

pub const EXITS: [Exit; 6] = [
    Exit::Quit,
    Exit::Close,
    Exit::Reset,
    Exit::ResetAtPrompt,
    Exit::HalfNick,
    Exit::Immediate,
];

/// One storm connection. Errors are expected (the server may reset first); only a hang is not.
pub async fn storm_once(addr: SocketAddr, nick: &str, exit: Exit) -> std::io::Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    if exit == Exit::Immediate {
        return Ok(());
    }
    let mut prompt = [0u8; 28];
    s.read_exact(&mut prompt).await?;
    match exit {
        Exit::ResetAtPrompt => return reset(s),
        Exit::HalfNick => {
            s.write_all(&nick.as_bytes()[..nick.len() / 2]).await?;
            return Ok(());
        }
        _ => {}
    }
    s.write_all(format!("{nick}\n").as_bytes()).await?;
    read_until(&mut s, b"Type /help for the list of commands.\n").await?;
    match exit {
        Exit::Quit => {
            s.write_all(b"storm says hi\n/quit\n").await?;
            read_until(&mut s, b"Goodbye!\n").await?;
        }
        Exit::Reset => return reset(s),
        _ => {}
    }
    Ok(())
}

fn reset(s: TcpStream) -> std::io::Result<()> {
    socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO))?;
    Ok(())
}

/// Reads until the bytes read so far end with `end` (lines others send may come first).
async fn read_until(s: &mut TcpStream, end: &[u8]) -> std::io::Result<()> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        seen.extend_from_slice(&buf[..n]);
        if seen.windows(end.len()).any(|w| w == end) {
            return Ok(());
        }
        if seen.len() > 1 << 20 {
            seen.drain(..seen.len() - end.len());
        }
    }
}
