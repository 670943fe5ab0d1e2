//! Message payload: `~B<sender>,<seq>,<send_ns>,` padded with `x` to the payload size.

use bytes::{BufMut, BytesMut};

pub const MAGIC: &[u8] = b"~B";

pub fn put_u64(out: &mut BytesMut, mut v: u64) {
    let mut b = [0u8; 20];
    let mut i = b.len();
    loop {
        i -= 1;
        b[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.put_slice(&b[i..]);
}

pub fn put_payload(out: &mut BytesMut, sender: usize, seq: u64, ts: u64, size: usize) {
    let start = out.len();
    out.put_slice(MAGIC);
    put_u64(out, sender as u64);
    out.put_u8(b',');
    put_u64(out, seq);
    out.put_u8(b',');
    put_u64(out, ts);
    out.put_u8(b',');
    let len = out.len() - start;
    if len < size {
        out.put_bytes(b'x', size - len);
    }
}

/// Parses leading decimal digits: (value, digits used).
pub fn parse_u64(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    let mut n = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            break;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        n += 1;
    }
    (n > 0).then_some((v, n))
}

/// (sender, seq, send_ns) of a bench payload.
pub fn parse_payload(p: &[u8]) -> Option<(usize, u64, u64)> {
    let rest = p.strip_prefix(MAGIC)?;
    let (s, n) = parse_u64(rest)?;
    let rest = rest[n..].strip_prefix(b",")?;
    let (q, n) = parse_u64(rest)?;
    let rest = rest[n..].strip_prefix(b",")?;
    let (ts, n) = parse_u64(rest)?;
    rest[n..].strip_prefix(b",")?;
    Some((usize::try_from(s).ok()?, q, ts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip() {
        let mut b = BytesMut::new();
        put_payload(&mut b, 7, 123456, 9_876_543_210, 64);
        assert_eq!(b.len(), 64);
        assert_eq!(parse_payload(&b), Some((7, 123456, 9_876_543_210)));
        assert_eq!(parse_payload(b"~B1,2"), None);
        assert_eq!(parse_payload(b"hello"), None);
        let mut b = BytesMut::new();
        put_payload(&mut b, 0, 0, 0, 8);
        assert_eq!(&b[..], b"~B0,0,0,");
    }
}
