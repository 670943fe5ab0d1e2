//! Admission: which accepted connections are served. Applied in the accept loop, before a
//! connection reaches any protocol or the hub, the same for every chat listener:
//!
//! - **per source address** (docs/PROTOCOL.md, "Abuse from one address"): at most
//!   `--max-per-ip` connections open, and at most `--connect-rate` new ones a second with a
//!   burst of `--connect-burst` (a token bucket); addresses in `--ip-exempt` (loopback by
//!   default) skip both. IPv4-mapped IPv6 addresses count as the IPv4 address; other IPv6
//!   addresses are grouped by their /64, the block one subscriber is usually given;
//! - **the server**: at most `--max-clients` connections in all, and at most `--max-prompt` of
//!   them still at the nickname prompt (registration), so connections that never choose a
//!   name cannot take the slots of people who did.
//!
//! The per-address table holds an entry while the address has a connection open or its bucket
//! is refilling; an entry with neither is removed (when the last connection closes, or by the
//! sweep that runs at most once a second on admission and whenever the figures are read), and
//! the table never holds more than [`Gate::table_cap`] entries: at that size, entries without
//! connections are forgotten first.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use super::cidr::{default_exempt, parse_exempt, Cidr};
use crate::config::Config;
use crate::core::lock;

/// The key an address is counted under: IPv4 as itself (IPv4-mapped IPv6 included), IPv6 by
/// its /64.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
        v4 => v4,
    }
}

/// Why a connection was not served. Each is counted (`linechat_connections_refused_total`)
/// and told to the client in one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-clients` connections are open.
    Full,
    /// Its address has `--max-per-ip` connections open.
    PerAddress,
    /// Its address opened connections faster than `--connect-rate`.
    Rate,
    /// `--max-prompt` connections are still at the nickname prompt.
    Prompt,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [
        Refusal::Full,
        Refusal::PerAddress,
        Refusal::Rate,
        Refusal::Prompt,
    ];

    /// The Prometheus label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Full => "server_full",
            Refusal::PerAddress => "per_address",
            Refusal::Rate => "connect_rate",
            Refusal::Prompt => "prompt_full",
        }
    }
}

/// The per-address limits, as configured (kept with the table they govern, so a reload
/// changes both under one lock).
#[derive(Debug, Clone)]
struct Limits {
    /// 0 = no limit.
    max_per_ip: usize,
    /// New connections a second per address; `None` = no limit.
    rate: Option<f64>,
    burst: f64,
    exempt: Vec<Cidr>,
}

impl Limits {
    fn new(config: &Config) -> Limits {
        Limits {
            max_per_ip: config.max_per_ip,
            rate: config.connect_rate.filter(|r| *r > 0.0),
            burst: f64::from(config.connect_burst.max(1)),
            exempt: config.ip_exempt.clone(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    /// Connections open from this address now.
    conns: u32,
    /// The rate bucket: connections it may open now, up to the burst.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    stamp: Instant,
}

impl Entry {
    fn refill(&mut self, limits: &Limits, now: Instant) {
        if let Some(rate) = limits.rate {
            let elapsed = now.saturating_duration_since(self.stamp).as_secs_f64();
            self.tokens = (self.tokens + elapsed * rate).min(limits.burst);
        }
        self.stamp = self.stamp.max(now);
    }

    /// Nothing to remember: no connection open and a full bucket.
    fn idle(&self, limits: &Limits) -> bool {
        self.conns == 0 && (limits.rate.is_none() || self.tokens >= limits.burst)
    }
}

#[derive(Debug)]
struct Table {
    limits: Limits,
    entries: HashMap<IpAddr, Entry>,
    last_sweep: Instant,
}

impl Table {
    /// Removes the entries with nothing to remember.
    fn sweep(&mut self, now: Instant) {
        let limits = &self.limits;
        self.entries.retain(|_, e| {
            e.refill(limits, now);
            !e.idle(limits)
        });
        self.last_sweep = now;
    }
}

/// A count of connections under a cap that a reload may move. Counters rather than semaphore
/// permits, because a lowered cap must not close anyone: the count simply stays above the cap
/// until enough connections have left, and admits nobody meanwhile.
#[derive(Debug)]
struct Capped {
    cap: AtomicUsize,
    held: AtomicUsize,
}

impl Capped {
    fn new(cap: usize) -> Capped {
        Capped {
            cap: AtomicUsize::new(cap),
            held: AtomicUsize::new(0),
        }
    }

    fn try_take(&self) -> bool {
        let cap = self.cap.load(Relaxed);
        self.held
            .fetch_update(Relaxed, Relaxed, |n| (n < cap).then_some(n + 1))
            .is_ok()
    }

    fn give_back(&self) {
        self.held.fetch_sub(1, Relaxed);
    }
}

#[derive(Debug)]
struct Inner {
    table: Mutex<Table>,
    /// `--max-clients`: connections open.
    slots: Capped,
    /// `--max-prompt`: connections at the nickname prompt.
    prompt: Capped,
}

/// Admission for every chat listener: per-address limits, the connection cap and the prompt
/// cap. One per server; [`Gate::update`] takes new limits while it runs.
#[derive(Debug)]
pub struct Gate {
    inner: Arc<Inner>,
}

/// An admitted connection's hold on its slots: its place under `--max-clients`, under
/// `--max-prompt` until [`Pass::registered`], and under its address's `--max-per-ip`. Dropping
/// it gives them all back.
#[derive(Debug)]
pub struct Pass {
    inner: Arc<Inner>,
    slot: bool,
    prompt: bool,
    address: Option<IpAddr>,
}

impl Pass {
    /// The connection has chosen a nickname: it no longer counts against `--max-prompt`.
    pub fn registered(&mut self) {
        if std::mem::take(&mut self.prompt) {
            self.inner.prompt.give_back();
        }
    }

    /// Gives back the slots now, before the connection is dropped (a closing socket that
    /// lingers no longer counts).
    pub fn release(&mut self) {
        self.registered();
        if std::mem::take(&mut self.slot) {
            self.inner.slots.give_back();
        }
        if let Some(key) = self.address.take() {
            self.inner.left(key, Instant::now());
        }
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.release();
    }
}

/// `--max-prompt`'s default: half of `--max-clients`, rounded up.
pub fn default_max_prompt(max_clients: usize) -> usize {
    max_clients.div_ceil(2)
}

fn max_prompt(config: &Config) -> usize {
    config
        .max_prompt
        .unwrap_or_else(|| default_max_prompt(config.max_clients))
        .clamp(1, config.max_clients.max(1))
}

impl Gate {
    pub fn new(config: &Config) -> Gate {
        Gate {
            inner: Arc::new(Inner {
                table: Mutex::new(Table {
                    limits: Limits::new(config),
                    entries: HashMap::new(),
                    last_sweep: Instant::now(),
                }),
                slots: Capped::new(config.max_clients),
                prompt: Capped::new(max_prompt(config)),
            }),
        }
    }

    /// Takes the limits of `config` (a reload): they apply from the next connection admitted.
    /// Connections already open stay, even over a lowered limit.
    pub fn update(&self, config: &Config) {
        let mut table = lock(&self.inner.table);
        table.limits = Limits::new(config);
        self.inner.slots.cap.store(config.max_clients, Relaxed);
        self.inner.prompt.cap.store(max_prompt(config), Relaxed);
    }

    /// Most entries the per-address table keeps: every connection's address, and as many
    /// again (at least 4 096) of addresses whose buckets are refilling. Some 100 bytes each.
    pub fn table_cap(max_clients: usize) -> usize {
        (2 * max_clients).max(4096)
    }

    /// Admits a connection from `peer`, or says why not.
    pub fn admit(&self, peer: IpAddr) -> Result<Pass, Refusal> {
        self.admit_at(peer, Instant::now())
    }

    fn admit_at(&self, peer: IpAddr, now: Instant) -> Result<Pass, Refusal> {
        let mut pass = Pass {
            inner: self.inner.clone(),
            slot: false,
            prompt: false,
            address: None,
        };
        let key = address_key(peer);
        if self.inner.arrive(peer, key, now)? {
            pass.address = Some(key);
        }
        if !self.inner.slots.try_take() {
            return Err(Refusal::Full);
        }
        pass.slot = true;
        if !self.inner.prompt.try_take() {
            return Err(Refusal::Prompt);
        }
        pass.prompt = true;
        Ok(pass)
    }

    /// Addresses in the per-address table now (after removing those with nothing to remember).
    pub fn tracked(&self) -> usize {
        let mut table = lock(&self.inner.table);
        table.sweep(Instant::now());
        table.entries.len()
    }

    pub fn max_clients(&self) -> usize {
        self.inner.slots.cap.load(Relaxed)
    }

    pub fn max_prompt(&self) -> usize {
        self.inner.prompt.cap.load(Relaxed)
    }

    /// Connections admitted and not yet registered (nor closed).
    pub fn at_prompt(&self) -> usize {
        self.inner.prompt.held.load(Relaxed)
    }

    pub fn max_per_ip(&self) -> usize {
        lock(&self.inner.table).limits.max_per_ip
    }

    /// `(rate, burst)`, when there is a rate limit.
    pub fn connect_rate(&self) -> Option<(f64, u32)> {
        let table = lock(&self.inner.table);
        let l = &table.limits;
        l.rate.map(|r| (r, l.burst as u32))
    }

    pub fn exempt(&self) -> Vec<Cidr> {
        lock(&self.inner.table).limits.exempt.clone()
    }
}

impl Inner {
    /// Counts a new connection from `peer` (under `key`), or refuses it; `false` when the
    /// per-address limits do not apply to it (none set, or an exempt address).
    fn arrive(&self, peer: IpAddr, key: IpAddr, now: Instant) -> Result<bool, Refusal> {
        let mut table = lock(&self.table);
        let limited = table.limits.max_per_ip > 0 || table.limits.rate.is_some();
        if !limited || table.limits.exempt.iter().any(|c| c.contains(peer)) {
            return Ok(false);
        }
        if now.saturating_duration_since(table.last_sweep) >= Duration::from_secs(1) {
            table.sweep(now);
        }
        let table_cap = Gate::table_cap(self.slots.cap.load(Relaxed));
        if table.entries.len() >= table_cap && !table.entries.contains_key(&key) {
            table.sweep(now);
            if table.entries.len() > table_cap / 4 * 3 {
                // Still crowded: forget the rate state of addresses without connections, so
                // each such pass frees at least a quarter of the table.
                table.entries.retain(|_, e| e.conns > 0);
            }
        }
        let Table {
            limits, entries, ..
        } = &mut *table;
        let entry = entries.entry(key).or_insert(Entry {
            conns: 0,
            tokens: limits.burst,
            stamp: now,
        });
        entry.refill(limits, now);
        if limits.rate.is_some() {
            if entry.tokens < 1.0 {
                return Err(Refusal::Rate);
            }
            entry.tokens -= 1.0;
        }
        if limits.max_per_ip > 0 && entry.conns as usize >= limits.max_per_ip {
            return Err(Refusal::PerAddress);
        }
        entry.conns += 1;
        Ok(true)
    }

    /// A connection from `key` has closed.
    fn left(&self, key: IpAddr, now: Instant) {
        let mut table = lock(&self.table);
        let Table {
            limits, entries, ..
        } = &mut *table;
        if let Some(entry) = entries.get_mut(&key) {
            entry.conns = entry.conns.saturating_sub(1);
            entry.refill(limits, now);
            if entry.idle(limits) {
                entries.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max_per_ip: usize, rate: Option<f64>, burst: u32, exempt: &str) -> Gate {
        Gate::new(&Config {
            max_per_ip,
            connect_rate: rate,
            connect_burst: burst,
            ip_exempt: parse_exempt(exempt).unwrap(),
            ..Config::default()
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_match_and_print() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(net.contains(ip("::ffff:10.1.0.1")), "IPv4-mapped IPv6");
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(!net.contains(ip("::1")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")));
        assert!(!v6.contains(ip("2001:db9::5")));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
        assert_eq!(
            "::ffff:1.2.3.4".parse::<Cidr>().unwrap().to_string(),
            "1.2.3.4"
        );
        assert_eq!(net.to_string(), "10.1.0.0/16");
        for bad in ["10.0.0.0/33", "::/129", "example.com", "1.2.3.4/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!(parse_exempt("none").unwrap(), []);
        assert_eq!(parse_exempt("127.0.0.0/8, ::1").unwrap(), default_exempt());
        assert!(parse_exempt("127.0.0.0/8,nonsense").is_err());
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa::1")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(address_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(address_key(ip("192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn per_address_cap_counts_open_connections_and_frees_on_close() {
        let g = gate(2, None, 1, "none");
        let a = g.admit(ip("192.0.2.1")).unwrap();
        let _b = g.admit(ip("::ffff:192.0.2.1")).unwrap();
        assert_eq!(g.admit(ip("192.0.2.1")).unwrap_err(), Refusal::PerAddress);
        // Another address is not affected.
        let _c = g.admit(ip("192.0.2.2")).unwrap();
        drop(a);
        let _d = g.admit(ip("192.0.2.1")).unwrap();
        // Two hosts of one /64 share its allowance; another /64 has its own.
        let _e = g.admit(ip("2001:db8:0:1::1")).unwrap();
        let _f = g.admit(ip("2001:db8:0:1::2")).unwrap();
        assert_eq!(
            g.admit(ip("2001:db8:0:1::3")).unwrap_err(),
            Refusal::PerAddress
        );
        g.admit(ip("2001:db8:0:2::1")).unwrap();
    }

    #[test]
    fn the_rate_allows_a_burst_then_one_per_interval() {
        let g = gate(0, Some(2.0), 3, "none");
        // Ahead of the real clock, which closing a connection reads: on a busy machine the
        // real time could otherwise pass t1 before the test gets there, and the bucket would
        // be stamped later than t1.
        let t0 = Instant::now() + Duration::from_secs(3600);
        let peer = ip("198.51.100.9");
        for _ in 0..3 {
            drop(g.admit_at(peer, t0).unwrap());
        }
        assert_eq!(g.admit_at(peer, t0).unwrap_err(), Refusal::Rate);
        // Half a second brings one token at 2/s.
        let t1 = t0 + Duration::from_millis(500);
        drop(g.admit_at(peer, t1).unwrap());
        assert_eq!(g.admit_at(peer, t1).unwrap_err(), Refusal::Rate);
    }

    #[test]
    fn exempt_addresses_skip_the_address_rules_not_the_server_caps() {
        let g = Gate::new(&Config {
            max_per_ip: 1,
            connect_rate: Some(1.0),
            connect_burst: 1,
            max_clients: 4,
            max_prompt: Some(3),
            ..Config::default()
        });
        let mut held: Vec<Pass> = (0..3).map(|_| g.admit(ip("127.0.0.1")).unwrap()).collect();
        assert_eq!(g.admit(ip("::1")).unwrap_err(), Refusal::Prompt);
        held[0].registered();
        held.push(g.admit(ip("::1")).unwrap());
        assert_eq!(g.admit(ip("127.0.0.5")).unwrap_err(), Refusal::Full);
        assert_eq!(g.tracked(), 0, "exempt addresses are not tracked");
    }

    #[test]
    fn the_table_forgets_addresses_with_nothing_to_remember() {
        let g = gate(4, Some(10.0), 2, "none");
        let t0 = Instant::now();
        let a = g.admit_at(ip("203.0.113.1"), t0).unwrap();
        drop(g.admit_at(ip("203.0.113.2"), t0).unwrap());
        assert_eq!(lock(&g.inner.table).entries.len(), 2);
        // .2's bucket is refilling; .1 has a connection open.
        let later = t0 + Duration::from_secs(2);
        lock(&g.inner.table).sweep(later);
        assert_eq!(lock(&g.inner.table).entries.len(), 1);
        drop(a);
        assert_eq!(g.tracked(), 0, "removed as its last connection closed");
    }

    #[test]
    fn the_table_stays_within_its_cap() {
        let g = gate(4, Some(0.001), 1, "none");
        let cap = Gate::table_cap(g.max_clients());
        let held: Vec<Pass> = (0..10u32)
            .map(|i| {
                g.admit(IpAddr::from((0x0a00_0000 + i).to_be_bytes()))
                    .unwrap()
            })
            .collect();
        for i in 0..3 * cap as u32 {
            let _ = g.admit(IpAddr::from((0x0b00_0000 + i).to_be_bytes()));
            assert!(lock(&g.inner.table).entries.len() <= cap);
        }
        // Addresses with connections open are never forgotten.
        assert_eq!(
            g.admit(IpAddr::from(0x0a00_0000u32.to_be_bytes()))
                .unwrap_err(),
            Refusal::Rate
        );
        drop(held);
    }

    #[test]
    fn new_limits_apply_to_the_next_connection_and_close_nobody() {
        let g = Gate::new(&Config {
            max_clients: 2,
            max_prompt: Some(1),
            max_per_ip: 0,
            ip_exempt: Vec::new(),
            ..Config::default()
        });
        let mut a = g.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(g.admit(ip("192.0.2.2")).unwrap_err(), Refusal::Prompt);
        a.registered();
        let b = g.admit(ip("192.0.2.2")).unwrap();
        assert_eq!(g.admit(ip("192.0.2.3")).unwrap_err(), Refusal::Full);
        g.update(&Config {
            max_clients: 4,
            max_prompt: Some(3),
            max_per_ip: 1,
            ip_exempt: Vec::new(),
            ..Config::default()
        });
        let _c = g.admit(ip("192.0.2.3")).unwrap();
        assert_eq!(g.admit(ip("192.0.2.3")).unwrap_err(), Refusal::PerAddress);
        // Lowered under what is open: all stay, nobody new comes in until enough have left.
        g.update(&Config {
            max_clients: 1,
            max_per_ip: 0,
            ip_exempt: Vec::new(),
            ..Config::default()
        });
        assert_eq!(g.max_prompt(), 1, "the default follows --max-clients");
        assert_eq!(g.admit(ip("192.0.2.4")).unwrap_err(), Refusal::Full);
        drop((a, b));
        assert_eq!(g.admit(ip("192.0.2.4")).unwrap_err(), Refusal::Full);
        drop(_c);
        let _d = g.admit(ip("192.0.2.4")).unwrap();
        assert_eq!(g.at_prompt(), 1);
    }
}
