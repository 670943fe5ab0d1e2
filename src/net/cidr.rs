//! Address blocks for `--ip-exempt`: parsed, shown and matched. Below the configuration,
//! which holds them, and the admission gate, which applies them.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address block, `ADDR/LEN` (a bare address is a block of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix(u32::from(net).into(), self.len, 32)
                    == prefix(u32::from(ip).into(), self.len, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix(u128::from(net), self.len, 128) == prefix(u128::from(ip), self.len, 128)
            }
            _ => false,
        }
    }
}

/// The top `len` bits of a `bits`-wide address.
fn prefix(addr: u128, len: u8, bits: u8) -> u128 {
    match len {
        0 => 0,
        len => addr >> (bits - len.min(bits)),
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let (addr, len) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text}: expected ADDRESS or ADDRESS/LEN, e.g. 10.0.0.0/8"))?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(len) => len
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(|| format!("{text}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.len == max {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

/// `--ip-exempt`'s default: loopback, IPv4 and IPv6.
pub fn default_exempt() -> Vec<Cidr> {
    vec![
        "127.0.0.0/8".parse().expect("valid"),
        "::1".parse().expect("valid"),
    ]
}

/// Parses `--ip-exempt`: CIDRs separated by commas, or `none`.
pub fn parse_exempt(text: &str) -> Result<Vec<Cidr>, String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Cidr::from_str)
        .collect()
}
