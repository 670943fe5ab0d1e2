//! The client side of WebSocket framing, as a browser does it: each line a masked text
//! message, and the server's frames taken apart again. Used while a connection is set up
//! ([`crate::proto::Handshake`]) and during the run ([`crate::ws`]).

use anyhow::Result;
use linechat::proto::web::frame;

/// Not secret: the server must unmask whatever key a client picks, and a fixed one keeps runs
/// comparable.
pub const MASK: [u8; 4] = [0x5a, 0x3c, 0x96, 0x0f];

/// The framing state of a connection being set up.
#[derive(Debug, Default)]
pub struct Framing {
    /// Bytes of a frame not complete yet.
    raw: Vec<u8>,
}

impl Framing {
    /// What arrived of a frame that is not complete yet.
    pub fn pending(&self) -> &[u8] {
        &self.raw
    }

    /// One masked text message per line of `bytes` (line ending dropped).
    pub fn frame_lines(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len() + 16);
        put_lines(&mut out, bytes);
        out
    }

    /// Appends each complete message's payload and a `\n` to `lines`; returns the pongs owed.
    pub fn unframe(&mut self, input: &[u8], lines: &mut Vec<u8>) -> Result<Vec<u8>> {
        self.raw.extend_from_slice(input);
        let mut pongs = Vec::new();
        let used = each_frame(&self.raw, |opcode, payload| match opcode {
            frame::TEXT | frame::BINARY => {
                lines.extend_from_slice(payload);
                lines.push(b'\n');
            }
            frame::PING => frame::put_frame(&mut pongs, frame::PONG, Some(MASK), payload),
            frame::CLOSE => {}
            _ => {}
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.raw.drain(..used);
        Ok(pongs)
    }
}

pub fn put_lines(out: &mut Vec<u8>, bytes: &[u8]) {
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        frame::put_frame(out, frame::TEXT, Some(MASK), line);
    }
}

/// Calls `each` for every complete server frame at the start of `buf`; the bytes consumed.
pub fn each_frame(buf: &[u8], mut each: impl FnMut(u8, &[u8])) -> Result<usize, String> {
    let mut pos = 0;
    loop {
        let Some((header, at)) = frame::parse_header(&buf[pos..])
            .map_err(|e| format!("bad frame from the server: {e}"))?
        else {
            return Ok(pos);
        };
        if header.mask.is_some() || !header.fin {
            return Err("the server sent a masked or fragmented frame".into());
        }
        let end = pos + at + header.len as usize;
        if buf.len() < end {
            return Ok(pos);
        }
        each(header.opcode, &buf[pos + at..end]);
        pos = end;
    }
}
