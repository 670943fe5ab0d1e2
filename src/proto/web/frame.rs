//! WebSocket framing (RFC 6455, section 5): the frame header, and the mask a client puts on
//! everything it sends. Shared by the server's adapter ([`super::ws`]) and the load
//! generator's WebSocket client.

use thiserror::Error;

pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// The longest header: 2 bytes, a 64-bit length and a mask.
pub const MAX_HEADER: usize = 14;

/// Control frames carry at most this much (section 5.5).
pub const MAX_CONTROL: u64 = 125;

/// Close status codes (section 7.4.1).
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_PROTOCOL: u16 = 1002;

/// A frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub len: u64,
}

impl Header {
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// A header that breaks the rules; the connection is closed with 1002 and this as the reason.
#[derive(Debug, Error, PartialEq, Eq, Clone, Copy)]
pub enum FrameError {
    #[error("reserved bits set")]
    Reserved,
    #[error("unknown opcode {0}")]
    Opcode(u8),
    #[error("control frame fragmented or over 125 bytes")]
    Control,
    #[error("client frames must be masked")]
    Unmasked,
    #[error("continuation without a message")]
    Continuation,
    #[error("new message before the last one ended")]
    Interleaved,
    #[error("close frame with a status code a peer may not send, or a reason that is not UTF-8")]
    Close,
    #[error("64-bit payload length with its most significant bit set")]
    Length,
}

/// Parses the header at the start of `buf`: `Ok(None)` until all of it has arrived, else the
/// header and its length in bytes.
pub fn parse_header(buf: &[u8]) -> Result<Option<(Header, usize)>, FrameError> {
    let [first, second, ..] = *buf else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return Err(FrameError::Reserved);
    }
    let fin = first & 0x80 != 0;
    let opcode = first & 0x0F;
    if !matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
        return Err(FrameError::Opcode(opcode));
    }
    let masked = second & 0x80 != 0;
    let (len, mut at) = match second & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            // Section 5.2: the most significant bit must be 0.
            Some(b) if b[0] & 0x80 != 0 => return Err(FrameError::Length),
            Some(b) => (u64::from_be_bytes(b.try_into().expect("8 bytes")), 10),
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    if opcode & 0x8 != 0 && (!fin || len > MAX_CONTROL) {
        return Err(FrameError::Control);
    }
    let mask = if masked {
        let Some(key) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some(key.try_into().expect("4 bytes"))
    } else {
        None
    };
    let header = Header {
        fin,
        opcode,
        mask,
        len,
    };
    Ok(Some((header, at)))
}

/// Appends a header for a final frame of `len` bytes; with `mask`, as a client sends it.
pub fn put_header(out: &mut Vec<u8>, opcode: u8, mask: Option<[u8; 4]>, len: usize) {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    out.push(0x80 | opcode);
    match len {
        0..=125 => out.push(mask_bit | len as u8),
        126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
}

/// Masks or unmasks (the same operation) `data`, which starts `offset` bytes into the payload.
pub fn apply_mask(key: [u8; 4], offset: usize, data: &mut [u8]) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte ^= key[(offset + i) % 4];
    }
}

/// Appends one whole final frame.
pub fn put_frame(out: &mut Vec<u8>, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) {
    put_header(out, opcode, mask, payload.len());
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(key, 0, &mut out[start..]);
    }
}

/// A close frame's payload: the status code, then a reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    // Control frames carry 125 bytes at most.
    payload.extend_from_slice(&reason.as_bytes()[..reason.len().min(123)]);
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6455 section 5.7's examples, byte for byte.
    #[test]
    fn the_rfc_examples() {
        let unmasked = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let (h, at) = parse_header(&unmasked).unwrap().unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.mask, h.len, at),
            (true, TEXT, None, 5, 2)
        );
        let mut out = Vec::new();
        put_frame(&mut out, TEXT, None, b"Hello");
        assert_eq!(out, unmasked);

        let masked = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, at) = parse_header(&masked).unwrap().unwrap();
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        let mut payload = masked[at..].to_vec();
        apply_mask(h.mask.unwrap(), 0, &mut payload);
        assert_eq!(payload, b"Hello");
        let mut out = Vec::new();
        put_frame(&mut out, TEXT, h.mask, b"Hello");
        assert_eq!(out, masked);

        // 256 bytes binary: a 16-bit length; 64 KiB: a 64-bit one.
        let mut out = Vec::new();
        put_header(&mut out, BINARY, None, 256);
        assert_eq!(out, [0x82, 0x7E, 0x01, 0x00]);
        let mut out = Vec::new();
        put_header(&mut out, BINARY, None, 65536);
        assert_eq!(out, [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(parse_header(&out).unwrap().unwrap().0.len, 65536);
    }

    #[test]
    fn a_header_arrives_in_pieces() {
        let mut out = Vec::new();
        put_header(&mut out, TEXT, Some([1, 2, 3, 4]), 70000);
        for cut in 0..out.len() {
            assert_eq!(parse_header(&out[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(parse_header(&out).unwrap().is_some());
    }

    #[test]
    fn broken_headers_are_named() {
        assert_eq!(parse_header(&[0xC1, 0x80]), Err(FrameError::Reserved));
        assert_eq!(parse_header(&[0x83, 0x80]), Err(FrameError::Opcode(3)));
        assert_eq!(parse_header(&[0x09, 0x80]), Err(FrameError::Control));
        assert_eq!(
            parse_header(&[0x89, 0xFE, 0, 126]),
            Err(FrameError::Control)
        );
    }

    #[test]
    fn a_mask_resumes_mid_payload() {
        let key = [9, 8, 7, 6];
        let mut whole = b"abcdefghij".to_vec();
        apply_mask(key, 0, &mut whole);
        let mut pieces = b"abcdefghij".to_vec();
        let (a, b) = pieces.split_at_mut(3);
        apply_mask(key, 0, a);
        apply_mask(key, 3, b);
        assert_eq!(whole, pieces);
    }
}
