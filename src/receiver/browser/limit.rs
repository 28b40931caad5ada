//! Rate limits of the browser listener (`receivers.browser.rate_limit`,
//! `receivers.browser.trusted_proxies`): who the client is, and a token
//! bucket per client for requests and for items (spans, log records, data
//! points), under one global items bucket that protects the sidecar itself.
//!
//! **The client** ([`client_addr`]) is the peer address; only when the peer
//! is a trusted proxy, the rightmost address of `X-Forwarded-For` (or of
//! RFC 7239 `Forwarded: for=`) that is not itself trusted. A proxy appends
//! the address it saw, so everything left of the last trusted hop was
//! written by the client and proves nothing.
//!
//! **The buckets** ([`Limiter`]). A request costs one request token and
//! `items` item tokens, all or nothing. The items buckets may go into
//! debt: a request larger than a bucket is admitted once that bucket is
//! full, and the bucket then goes below zero by the difference, so the
//! client waits the excess off. Large requests are admissible, and the
//! long-run rate is still exactly the configured one (capping the cost at
//! the bucket size would let a client exceed it by sending bigger
//! requests).
//!
//! **The client table** is a fixed number of 32-byte slots, exactly
//! `max_clients` of them ([`Limiter::table_bytes`]: 2 MiB by default),
//! split in shards (a `Mutex` each). A client lives in one of 8 slots
//! chosen by a keyed hash of its address (foldhash, seeded per process, so
//! nobody outside can aim at a set); a new client takes an empty slot of
//! those 8, else the one idle longest. Evicting a client forgets its
//! buckets, which then start full: lenient, never harmful, and the global
//! bucket still caps the total. IPv6 clients are keyed by their
//! `ipv6_prefix` (a /64 by default: one subscriber's network), or else a
//! single host could rotate through 2^64 fresh buckets.
//!
//! Cost of [`Limiter::check`], once per browser request: one hash of 16
//! bytes, one uncontended shard lock, a scan of at most 8 slots (256 bytes)
//! and the global bucket's lock; no allocation after a shard's first
//! client.

use crate::base::values::err;
use crate::base::ConfigError;
use crate::telemetry::SelfMetrics;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const AT: &str = "receivers.browser.rate_limit";

/// `receivers.browser.rate_limit`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimit {
    /// Requests per second each client may send, on average.
    pub requests_per_second: f64,
    /// Requests a client may send at once after being quiet.
    pub burst: u32,
    /// Items (spans, log records, data points) per second each client may
    /// send; its bucket holds `burst / requests_per_second` seconds of them
    /// (at least one second's worth).
    pub items_per_second: f64,
    /// Items per second of all browser clients together: protects the
    /// sidecar itself, whatever the number of clients.
    pub global_items_per_second: f64,
    /// The most clients whose buckets are remembered (32 bytes each);
    /// beyond it the one idle longest is forgotten.
    pub max_clients: usize,
    /// IPv6 clients are counted per network of this prefix length (64: one
    /// subscriber's network; 128: per address).
    pub ipv6_prefix: u8,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            requests_per_second: 10.0,
            burst: 20,
            items_per_second: 500.0,
            global_items_per_second: 20_000.0,
            max_clients: 65_536,
            ipv6_prefix: 64,
        }
    }
}

/// The bounds of `max_clients`.
pub const MIN_CLIENTS: usize = 16;
pub const MAX_CLIENTS: usize = 1 << 24;

impl RateLimit {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("requests_per_second", self.requests_per_second),
            ("items_per_second", self.items_per_second),
            ("global_items_per_second", self.global_items_per_second),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return err(&format!("{AT}.{key}"), "must be a positive number");
            }
        }
        if self.burst < 1 {
            return err(&format!("{AT}.burst"), "must be at least 1");
        }
        if !(MIN_CLIENTS..=MAX_CLIENTS).contains(&self.max_clients) {
            let msg = format!("must be between {MIN_CLIENTS} and {MAX_CLIENTS}");
            return err(&format!("{AT}.max_clients"), &msg);
        }
        if !(1..=128).contains(&self.ipv6_prefix) {
            return err(&format!("{AT}.ipv6_prefix"), "must be between 1 and 128");
        }
        Ok(())
    }

    /// Seconds of their rate the items buckets hold: as many as the request
    /// bucket holds of requests, at least one.
    fn window_secs(&self) -> f64 {
        (f64::from(self.burst) / self.requests_per_second).max(1.0)
    }
}

/// A network in `trusted_proxies`: `10.0.0.0/8`, `::1/128`, or a bare
/// address (a /32 or /128). An IPv4-mapped IPv6 network
/// (`::ffff:10.0.0.0/104`) is read as the IPv4 network it maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    net: IpAddr,
    len: u8,
}

fn mask_v4(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}
fn mask_v6(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl Cidr {
    pub fn network(&self) -> IpAddr {
        self.net
    }
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address is
    /// matched as the IPv4 address it maps).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => (a.to_bits() ^ n.to_bits()) & mask_v4(self.len) == 0,
            (IpAddr::V6(n), IpAddr::V6(a)) => (a.to_bits() ^ n.to_bits()) & mask_v6(self.len) == 0,
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid network {s:?}: {why}");
        let (a, len) = match s.trim().split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| bad("write an address or address/prefix, e.g. 10.0.0.0/8 or ::1"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| bad(&format!("the prefix length must be 0-{max}")))?,
        };
        let cidr = match addr {
            IpAddr::V6(v6) if len >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => Cidr {
                    net: IpAddr::V4(v4),
                    len: len - 96,
                },
                None => Cidr { net: addr, len },
            },
            _ => Cidr { net: addr, len },
        };
        let masked = cidr.masked();
        if masked != cidr {
            return Err(bad(&format!(
                "bits are set past the prefix; write {masked}"
            )));
        }
        Ok(cidr)
    }
}

impl Cidr {
    fn masked(self) -> Cidr {
        let net = match self.net {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from_bits(a.to_bits() & mask_v4(self.len))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from_bits(a.to_bits() & mask_v6(self.len))),
        };
        Cidr { net, ..self }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
    }
}
impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

fn trusted_by(ip: IpAddr, trusted: &[Cidr]) -> bool {
    trusted.iter().any(|c| c.contains(ip))
}

/// The client of a request: the peer (IPv4-mapped IPv6 read as IPv4);
/// when the peer is in `trusted`, the rightmost address of
/// `X-Forwarded-For` (every such header, in order) or of `Forwarded: for=`
/// that is not itself in `trusted`.
///
/// The walk from the right stops at an entry that is malformed, `unknown`
/// or an obfuscated identifier (`_hidden`): what lies left of it was not
/// vouched for by a trusted proxy, so the header gives nothing and the
/// peer is the client. So does a header whose entries are all trusted.
/// When both headers give an address and they differ, the peer: a proxy
/// that appends to one header leaves the other to the client, who must
/// not be able to pick an address (and a new bucket) by writing it.
pub fn client_addr(peer: IpAddr, headers: &http::HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted_by(peer, trusted) {
        return peer;
    }
    let xff = headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .flat_map(|v| v.as_bytes().rsplit(|b| *b == b','))
        .map(|e| std::str::from_utf8(e).ok().and_then(|e| node(e.trim())));
    let xff = rightmost_untrusted(xff, trusted);
    let mut elements = Vec::new();
    for v in headers.get_all(http::header::FORWARDED) {
        elements.extend(split_unquoted(v.as_bytes(), b','));
    }
    let fwd = rightmost_untrusted(elements.into_iter().rev().map(forwarded_for), trusted);
    match (xff, fwd) {
        (Some(a), Some(b)) if a != b => peer,
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => peer,
    }
}

/// The first hop from the right that is not trusted; `None` when an
/// unusable hop (`None`) comes first, or there is none.
fn rightmost_untrusted(
    hops: impl Iterator<Item = Option<IpAddr>>,
    trusted: &[Cidr],
) -> Option<IpAddr> {
    for hop in hops {
        let ip = hop?.to_canonical();
        if !trusted_by(ip, trusted) {
            return Some(ip);
        }
    }
    None
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `[::1]`,
/// `[::1]:80`, or a bare IPv6 address; a port may be obfuscated (`_x`).
fn node(s: &str) -> Option<IpAddr> {
    if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if !after.is_empty() && !port(after.strip_prefix(':')?) {
            return None;
        }
        return v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    let (v4, p) = s.rsplit_once(':')?;
    match port(p) {
        true => v4.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        false => None,
    }
}

fn port(p: &str) -> bool {
    let obfuscated = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    p.parse::<u16>().is_ok() || p.strip_prefix('_').is_some_and(obfuscated)
}

/// The `for=` node of one `Forwarded` element (`for=1.2.3.4;proto=https`),
/// `None` when it has none, two, or one that is not an address.
fn forwarded_for(element: &[u8]) -> Option<IpAddr> {
    let mut found = None;
    for pair in split_unquoted(element, b';') {
        let pair = std::str::from_utf8(pair).ok()?;
        let (k, v) = pair.split_once('=')?;
        if k.trim().eq_ignore_ascii_case("for") {
            if found.is_some() {
                return None;
            }
            let v = v.trim();
            let v = match v.strip_prefix('"') {
                Some(q) => q.strip_suffix('"').filter(|q| !q.contains(['"', '\\']))?,
                None => v,
            };
            found = Some(v);
        }
    }
    node(found?)
}

/// `s` split at `sep` outside double quotes (a backslash escapes the next
/// byte inside them).
fn split_unquoted(s: &[u8], sep: u8) -> Vec<&[u8]> {
    let (mut out, mut from, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, &b) in s.iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            _ if b == sep && !quoted => {
                out.push(&s[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[from..]);
    out
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// this client is past its own requests or items budget
    Client,
    /// all browser clients together are past `global_items_per_second`
    Global,
}

impl RefuseReason {
    /// The `reason` label of the refused-requests counter.
    pub fn label(self) -> &'static str {
        match self {
            RefuseReason::Client => "rate_limited",
            RefuseReason::Global => "global_rate_limited",
        }
    }
}

/// A refusal: answer 429 with `Retry-After: retry_after` (whole seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub reason: RefuseReason,
    /// When the tokens this request needs will be there, rounded up to
    /// whole seconds, at least one.
    pub retry_after: Duration,
}

impl Refused {
    fn after(reason: RefuseReason, wait_secs: f64) -> Refused {
        // `as` saturates (and a NaN would be 0), so no overflow
        let secs = (wait_secs.ceil() as u64).max(1);
        Refused {
            reason,
            retry_after: Duration::from_secs(secs),
        }
    }
}

/// The configured rates, as the buckets use them.
#[derive(Debug, Clone, Copy)]
struct Limits {
    rps: f64,
    burst: f64,
    ips: f64,
    item_cap: f64,
}

impl Limits {
    fn of(r: &RateLimit) -> Limits {
        Limits {
            rps: r.requests_per_second,
            burst: f64::from(r.burst),
            ips: r.items_per_second,
            item_cap: r.items_per_second * r.window_secs(),
        }
    }
}

/// A bucket's tokens `dt_ns` after it held `tokens`, at most `cap`.
fn refill(tokens: f64, dt_ns: u64, rate: f64, cap: f64) -> f64 {
    (tokens + dt_ns as f64 * rate / 1e9).min(cap)
}

/// Seconds until `tokens` reach `need` at `rate` (0: they are there). A
/// relative millionth of slack absorbs the rounding of f32 storage.
fn shortfall(tokens: f64, need: f64, rate: f64) -> f64 {
    match tokens + 1e-6 * need.max(1.0) >= need {
        true => 0.0,
        false => (need - tokens) / rate,
    }
}

/// One client's buckets: 32 bytes. `last == 0` marks an empty slot.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Slot {
    /// the client's address as IPv6 bits (IPv4 mapped), its prefix only
    key: u128,
    /// nanoseconds since the limiter's origin, plus one, of its last request
    last: u64,
    requests: f32,
    items: f32,
}

const EMPTY: Slot = Slot {
    key: 0,
    last: 0,
    requests: 0.0,
    items: 0.0,
};

/// The slots a client may live in: this many from where its hash points.
const WAYS: usize = 8;

struct Shard {
    limits: Limits,
    /// its share of `max_clients`; `slots` is allocated at its first client
    cap: usize,
    slots: Vec<Slot>,
}

impl Shard {
    fn new(limits: Limits, cap: usize) -> Shard {
        Shard {
            limits,
            cap,
            slots: Vec::new(),
        }
    }

    /// The slot of `key`, claimed if it has none: an empty one among its
    /// `WAYS`, else the one idle longest, reset to full buckets. `clients`
    /// counts the slots in use.
    fn slot(&mut self, key: u128, hash: u64, now: u64, clients: &AtomicUsize) -> usize {
        if self.slots.len() != self.cap {
            self.slots = vec![EMPTY; self.cap];
        }
        let n = self.slots.len();
        // the high bits of the hash (the shard took the low ones)
        let start = ((u128::from(hash) * n as u128) >> 64) as usize;
        let mut victim = start;
        for k in 0..WAYS.min(n) {
            let j = (start + k) % n;
            let s = &self.slots[j];
            if s.last != 0 && s.key == key {
                return j;
            }
            if s.last < self.slots[victim].last {
                victim = j;
            }
        }
        if self.slots[victim].last == 0 {
            clients.fetch_add(1, Ordering::Relaxed);
        }
        self.slots[victim] = Slot {
            key,
            last: now,
            requests: self.limits.burst as f32,
            items: self.limits.item_cap as f32,
        };
        victim
    }

    /// Whether the slot's buckets are full at `now`: it is then no
    /// different from a client never seen.
    fn is_full(&self, s: &Slot, now: u64) -> bool {
        let (l, dt) = (self.limits, now.saturating_sub(s.last));
        refill(f64::from(s.requests), dt, l.rps, l.burst) >= l.burst
            && refill(f64::from(s.items), dt, l.ips, l.item_cap) >= l.item_cap
    }

    fn used(&self) -> usize {
        self.slots.iter().filter(|s| s.last != 0).count()
    }
}

/// The global items bucket.
struct Bucket {
    tokens: f64,
    last: u64,
    rate: f64,
    cap: f64,
}

/// Per-client request and item buckets under one global items bucket;
/// shared by the browser listener's requests, updated in place by a config
/// reload ([`Limiter::set_limits`]).
pub struct Limiter {
    origin: Instant,
    hasher: foldhash::quality::RandomState,
    shards: Box<[Mutex<Shard>]>,
    global: Mutex<Bucket>,
    /// slots in use, all shards
    clients: AtomicUsize,
    ipv6_prefix: AtomicU8,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `max_clients` split over `n` shards, the first ones taking the rest; at
/// least one slot each (a validated `max_clients` is never below `n`).
fn shares(max_clients: usize, n: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (max_clients / n + usize::from(i < max_clients % n)).max(1))
}

impl Limiter {
    /// Shards: one per 1024 clients, 1 to 16 (16 serve 2-8 cores with
    /// little contention; a small table keeps whole sets of 8). The number
    /// is kept by [`Limiter::set_limits`].
    pub fn new(r: &RateLimit) -> Limiter {
        let n = (r.max_clients / 1024).clamp(1, 16);
        let limits = Limits::of(r);
        let global_cap = r.global_items_per_second * r.window_secs();
        Limiter {
            origin: Instant::now(),
            hasher: foldhash::quality::RandomState::default(),
            shards: shares(r.max_clients, n)
                .map(|cap| Mutex::new(Shard::new(limits, cap)))
                .collect(),
            global: Mutex::new(Bucket {
                tokens: global_cap,
                last: 0,
                rate: r.global_items_per_second,
                cap: global_cap,
            }),
            clients: AtomicUsize::new(0),
            ipv6_prefix: AtomicU8::new(r.ipv6_prefix),
        }
    }

    /// `now` as nanoseconds since the origin, plus one (0 marks an empty
    /// slot); a time before the limiter was made counts as its origin.
    fn tick(&self, now: Instant) -> u64 {
        let ns = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(ns).unwrap_or(u64::MAX - 1).saturating_add(1)
    }

    /// The table's key of a client: IPv6 bits (IPv4 mapped), IPv6
    /// addresses cut to `ipv6_prefix`.
    fn key(&self, client: IpAddr) -> u128 {
        match client.to_canonical() {
            IpAddr::V4(a) => a.to_ipv6_mapped().to_bits(),
            IpAddr::V6(a) => a.to_bits() & mask_v6(self.ipv6_prefix.load(Ordering::Relaxed)),
        }
    }

    /// Admits a request of `items` items from `client`, taking one request
    /// token and `items` item tokens from its buckets and `items` from the
    /// global one, or refuses it and takes nothing. An items bucket
    /// admits a request larger than itself once it is full, and goes into
    /// debt by the excess.
    pub fn check(&self, client: IpAddr, items: u64, now: Instant) -> Result<(), Refused> {
        let now = self.tick(now);
        let key = self.key(client);
        let hash = self.hasher.hash_one(key);
        let mut shard = lock(&self.shards[hash as usize % self.shards.len()]);
        let l = shard.limits;
        let i = shard.slot(key, hash, now, &self.clients);
        let s = &mut shard.slots[i];
        let dt = now.saturating_sub(s.last);
        let requests = refill(f64::from(s.requests), dt, l.rps, l.burst);
        let tokens = refill(f64::from(s.items), dt, l.ips, l.item_cap);
        // a refused client is active too: it keeps its slot, not a reset
        // (a request that read the clock a little earlier than the one
        // before it under this lock must not move the clock back)
        let now = now.max(s.last);
        (s.last, s.requests, s.items) = (now, requests as f32, tokens as f32);
        let cost = items as f64;
        let wait =
            shortfall(requests, 1.0, l.rps).max(shortfall(tokens, cost.min(l.item_cap), l.ips));
        if wait > 0.0 {
            return Err(Refused::after(RefuseReason::Client, wait));
        }
        self.take_global(cost, now)?;
        (s.requests, s.items) = ((requests - 1.0) as f32, (tokens - cost) as f32);
        Ok(())
    }

    /// Takes `cost` from the global bucket (into debt past a full one),
    /// or refuses and takes nothing.
    fn take_global(&self, cost: f64, now: u64) -> Result<(), Refused> {
        let mut g = lock(&self.global);
        g.tokens = refill(g.tokens, now.saturating_sub(g.last), g.rate, g.cap);
        g.last = now.max(g.last);
        let wait = shortfall(g.tokens, cost.min(g.cap), g.rate);
        if wait > 0.0 {
            return Err(Refused::after(RefuseReason::Global, wait));
        }
        g.tokens -= cost;
        Ok(())
    }

    /// A config reload: new rates apply to every client from its next
    /// request (tokens above a lowered bucket size are cut then). A new
    /// `max_clients` reallocates the table and forgets every client (their
    /// buckets start full again); the number of shards stays.
    pub fn set_limits(&self, r: &RateLimit) {
        let limits = Limits::of(r);
        self.ipv6_prefix.store(r.ipv6_prefix, Ordering::Relaxed);
        for (shard, cap) in self
            .shards
            .iter()
            .zip(shares(r.max_clients, self.shards.len()))
        {
            let mut s = lock(shard);
            s.limits = limits;
            if s.cap != cap {
                self.clients.fetch_sub(s.used(), Ordering::Relaxed);
                (s.cap, s.slots) = (cap, Vec::new());
            }
        }
        let mut g = lock(&self.global);
        g.rate = r.global_items_per_second;
        g.cap = r.global_items_per_second * r.window_secs();
    }

    /// Clients in the table (at most `max_clients`).
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// The slots the table may hold: `max_clients`.
    pub fn capacity(&self) -> usize {
        self.shards.iter().map(|s| lock(s).cap).sum()
    }

    /// Bytes the table's slots take now: `max_clients` × 32 once every
    /// shard has had a client, never more.
    pub fn table_bytes(&self) -> usize {
        let slots: usize = self.shards.iter().map(|s| lock(s).slots.capacity()).sum();
        slots * std::mem::size_of::<Slot>()
    }

    /// Empties the slots of clients whose buckets are full again (no
    /// different from clients never seen), so that [`Limiter::clients`]
    /// counts those that still hold state; returns how many. Optional
    /// (a full table evicts by itself); one shard locked at a time.
    pub fn sweep(&self, now: Instant) -> usize {
        let now = self.tick(now);
        let mut freed = 0;
        for shard in self.shards.iter() {
            let mut s = lock(shard);
            let full: Vec<usize> = (0..s.slots.len())
                .filter(|&i| s.slots[i].last != 0 && s.is_full(&s.slots[i], now))
                .collect();
            for i in &full {
                s.slots[*i] = EMPTY;
            }
            freed += full.len();
        }
        self.clients.fetch_sub(freed, Ordering::Relaxed);
        freed
    }
}

/// Requests the limiter refused, by reason; the listener counts each
/// [`Refused`] here and declares them in its refused-requests family.
#[derive(Debug, Default)]
pub struct LimitStats {
    pub refused_client: AtomicU64,
    pub refused_global: AtomicU64,
}

impl LimitStats {
    pub fn count(&self, r: &Refused) {
        let c = match r.reason {
            RefuseReason::Client => &self.refused_client,
            RefuseReason::Global => &self.refused_global,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// `geometra_sidecar_browser_clients`: the clients in the limiter's table.
pub fn declare_clients(t: &SelfMetrics, limiter: Arc<Limiter>) {
    t.gauge(
        "geometra_sidecar_browser_clients",
        "Browser clients whose rate-limit buckets the sidecar holds (at most receivers.browser.rate_limit.max_clients).",
        "",
        move |o| o.observe(limiter.clients() as f64, &[]),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderName, HeaderValue};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn nets(v: &[&str]) -> Vec<Cidr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }
    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            let name = HeaderName::from_bytes(k.as_bytes()).unwrap();
            h.append(name, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }
    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    // ---- configuration

    #[test]
    fn defaults_are_valid_and_a_partial_section_is_filled_in() {
        assert_eq!(RateLimit::default().validate(), Ok(()));
        let r: RateLimit = serde_yaml_ng::from_str("burst: 5\n").unwrap();
        assert_eq!(r.burst, 5);
        assert_eq!(r.requests_per_second, 10.0);
        assert_eq!(r.items_per_second, 500.0);
        assert_eq!(r.global_items_per_second, 20_000.0);
        assert_eq!(r.max_clients, 65_536);
        assert_eq!(r.ipv6_prefix, 64);
        let e = serde_yaml_ng::from_str::<RateLimit>("bursts: 5\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `bursts`"), "{e}");
        let back: RateLimit =
            serde_yaml_ng::from_str(&serde_yaml_ng::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn validation_names_the_key() {
        type Set = fn(&mut RateLimit);
        let cases: &[(&str, Set)] = &[
            ("requests_per_second: must be a positive number", |r| {
                r.requests_per_second = 0.0
            }),
            ("requests_per_second: must be a positive number", |r| {
                r.requests_per_second = -1.0
            }),
            ("items_per_second: must be a positive number", |r| {
                r.items_per_second = f64::NAN
            }),
            ("global_items_per_second: must be a positive number", |r| {
                r.global_items_per_second = f64::INFINITY
            }),
            ("burst: must be at least 1", |r| r.burst = 0),
            ("max_clients: must be between 16 and 16777216", |r| {
                r.max_clients = 15
            }),
            ("max_clients: must be between 16 and 16777216", |r| {
                r.max_clients = (1 << 24) + 1
            }),
            ("ipv6_prefix: must be between 1 and 128", |r| {
                r.ipv6_prefix = 0
            }),
            ("ipv6_prefix: must be between 1 and 128", |r| {
                r.ipv6_prefix = 129
            }),
        ];
        for (want, set) in cases {
            let mut r = RateLimit::default();
            set(&mut r);
            let e = r.validate().unwrap_err();
            assert_eq!(e.0, format!("receivers.browser.rate_limit.{want}"));
        }
        let mut r = RateLimit::default();
        (r.max_clients, r.ipv6_prefix, r.burst) = (16, 128, 1);
        assert_eq!(r.validate(), Ok(()));
        r.max_clients = 1 << 24;
        assert_eq!(r.validate(), Ok(()));
    }

    #[test]
    fn networks_parse_match_and_print() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.1.2.3")) && c.contains(ip("10.255.255.255")));
        assert!(!c.contains(ip("11.0.0.1")) && !c.contains(ip("::1")));
        assert!(
            c.contains(ip("::ffff:10.9.9.9")),
            "IPv4-mapped IPv6 matches"
        );
        let one: Cidr = "192.168.1.7".parse().unwrap();
        assert_eq!(one.to_string(), "192.168.1.7/32");
        assert!(one.contains(ip("192.168.1.7")) && !one.contains(ip("192.168.1.8")));
        let lo: Cidr = "::1".parse().unwrap();
        assert_eq!((lo.to_string().as_str(), lo.prefix_len()), ("::1/128", 128));
        assert!(lo.contains(ip("::1")) && !lo.contains(ip("::2")));
        let v6: Cidr = " 2001:db8::/32 ".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        let mapped: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(mapped, "10.0.0.0/8".parse().unwrap());
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("1.2.3.4")) && all.contains(ip("::ffff:1.2.3.4")));
        assert!(!all.contains(ip("2001:db8::1")));
        assert!("::/0".parse::<Cidr>().unwrap().contains(ip("2001:db8::1")));
        for (bad, why) in [
            (
                "10.0.0.1/8",
                "bits are set past the prefix; write 10.0.0.0/8",
            ),
            ("2001:db8::1/32", "write 2001:db8::/32"),
            ("10.0.0.0/33", "the prefix length must be 0-32"),
            ("::/129", "the prefix length must be 0-128"),
            ("10.0.0.0/x", "the prefix length must be 0-32"),
            ("10.0.0/8", "write an address or address/prefix"),
            ("localhost", "write an address or address/prefix"),
            ("", "write an address or address/prefix"),
        ] {
            let e = bad.parse::<Cidr>().unwrap_err();
            assert!(
                e.starts_with(&format!("invalid network {bad:?}")) && e.contains(why),
                "{e}"
            );
        }
    }

    #[test]
    fn networks_read_from_yaml_name_the_index_of_a_bad_one() {
        #[derive(Deserialize, Serialize)]
        struct Section {
            trusted_proxies: Vec<Cidr>,
        }
        let ok: Section =
            serde_yaml_ng::from_str("trusted_proxies: [10.0.0.0/8, \"::1\", 192.168.0.1]").unwrap();
        assert_eq!(
            ok.trusted_proxies,
            nets(&["10.0.0.0/8", "::1/128", "192.168.0.1/32"])
        );
        assert_eq!(
            serde_yaml_ng::to_string(&ok).unwrap(),
            "trusted_proxies:\n- 10.0.0.0/8\n- ::1/128\n- 192.168.0.1/32\n"
        );
        let yaml = "trusted_proxies:\n- 10.0.0.0/8\n- 10.0.0.0/99\n";
        let e = serde_path_to_error::deserialize::<_, Section>(
            serde_yaml_ng::Deserializer::from_str(yaml),
        )
        .err()
        .unwrap();
        assert_eq!(e.path().to_string(), "trusted_proxies[1]");
        assert!(
            e.inner()
                .to_string()
                .contains("the prefix length must be 0-32"),
            "{e}"
        );
    }

    // ---- the client's address

    const PROXY: &str = "10.0.0.2";
    fn trusted() -> Vec<Cidr> {
        nets(&["10.0.0.0/8", "::1", "fd00::/8"])
    }
    fn client(peer: &str, h: &[(&str, &[u8])]) -> IpAddr {
        client_addr(ip(peer), &headers(h), &trusted())
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let spoof: &[(&str, &[u8])] = &[
            ("x-forwarded-for", b"1.1.1.1"),
            ("forwarded", b"for=2.2.2.2"),
        ];
        assert_eq!(client("203.0.113.9", spoof), ip("203.0.113.9"));
        assert_eq!(
            client("203.0.113.9", &[("x-forwarded-for", b"1.1.1.1")]),
            ip("203.0.113.9")
        );
        assert_eq!(
            client("2001:db8::9", &[("forwarded", b"for=2.2.2.2")]),
            ip("2001:db8::9")
        );
        // nothing trusted: no header is ever read
        let h = headers(&[("x-forwarded-for", b"1.1.1.1")]);
        assert_eq!(client_addr(ip(PROXY), &h, &[]), ip(PROXY));
    }

    #[test]
    fn behind_a_trusted_proxy_the_rightmost_untrusted_forwarded_address() {
        assert_eq!(client(PROXY, &[]), ip(PROXY), "no header: the peer");
        assert_eq!(
            client(PROXY, &[("x-forwarded-for", b"203.0.113.7")]),
            ip("203.0.113.7")
        );
        // the client wrote the left part; the proxies appended the rest
        let chain: &[u8] = b"6.6.6.6, 203.0.113.7 ,10.1.1.1,  10.0.0.9";
        assert_eq!(
            client(PROXY, &[("x-forwarded-for", chain)]),
            ip("203.0.113.7")
        );
        // several header lines are one list, in order
        let lines: &[(&str, &[u8])] = &[
            ("x-forwarded-for", b"6.6.6.6"),
            ("X-Forwarded-For", b"203.0.113.7, 10.1.1.1"),
        ];
        assert_eq!(client(PROXY, lines), ip("203.0.113.7"));
        // ports and brackets as some proxies write them
        for v in [
            "203.0.113.7:4711",
            "[2001:db8::7]:443",
            "[2001:db8::7]",
            "2001:db8::7",
        ] {
            let want = if v.starts_with('2') && v.contains('.') {
                "203.0.113.7"
            } else {
                "2001:db8::7"
            };
            assert_eq!(
                client(PROXY, &[("x-forwarded-for", v.as_bytes())]),
                ip(want),
                "{v}"
            );
        }
        // every hop trusted (a request from inside): the peer
        assert_eq!(
            client(PROXY, &[("x-forwarded-for", b"10.3.3.3, ::1")]),
            ip(PROXY)
        );
    }

    #[test]
    fn a_malformed_or_unknown_hop_before_an_untrusted_one_falls_back_to_the_peer() {
        for v in [
            &b"203.0.113.7, garbage"[..],
            b"203.0.113.7, 10.1.1.1, 999.1.1.1",
            b"203.0.113.7,",
            b"203.0.113.7, unknown",
            b"203.0.113.7, 1.2.3.4:99999",
            b"203.0.113.7, [2001:db8::1",
            b"203.0.113.7, \xff\xfe",
        ] {
            let got = client(PROXY, &[("x-forwarded-for", v)]);
            assert_eq!(got, ip(PROXY), "{}", String::from_utf8_lossy(v));
        }
        // junk the client wrote left of the proxy's entry does not matter
        let v: &[u8] = b"\xff\xfe, not-an-ip,, 203.0.113.7";
        assert_eq!(client(PROXY, &[("x-forwarded-for", v)]), ip("203.0.113.7"));
    }

    #[test]
    fn forwarded_per_rfc_7239() {
        let f = |v: &[u8]| client(PROXY, &[("forwarded", v)]);
        assert_eq!(f(b"for=203.0.113.7"), ip("203.0.113.7"));
        assert_eq!(
            f(b"For=\"203.0.113.7:4711\";proto=https;by=10.0.0.2"),
            ip("203.0.113.7")
        );
        assert_eq!(
            f(b"for=\"[2001:db8:cafe::17]:4711\""),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(f(b"for=\"[2001:db8:cafe::17]\""), ip("2001:db8:cafe::17"));
        assert_eq!(f(b"for=\"203.0.113.7:_port1\""), ip("203.0.113.7"));
        assert_eq!(
            f(b"for=6.6.6.6, for=203.0.113.7;proto=http, for=10.1.1.1"),
            ip("203.0.113.7")
        );
        // a quoted comma or semicolon in another parameter does not split
        assert_eq!(f(b"by=\"a,b;c\";for=203.0.113.7"), ip("203.0.113.7"));
        let lines: &[(&str, &[u8])] = &[
            ("forwarded", b"for=6.6.6.6"),
            ("forwarded", b"for=203.0.113.7"),
        ];
        assert_eq!(client(PROXY, lines), ip("203.0.113.7"));
        // `unknown`, obfuscated nodes, no or two `for`, bad quoting: nothing
        // left of them is vouched for, so the peer
        for v in [
            &b"for=203.0.113.7, for=unknown"[..],
            b"for=203.0.113.7, for=_hidden",
            b"for=203.0.113.7, for=\"_SEVKISEK\"",
            b"for=203.0.113.7, proto=https",
            b"for=203.0.113.7, for=1.1.1.1;for=2.2.2.2",
            b"for=203.0.113.7, for=\"1.1.1.1",
            b"for=203.0.113.7, for=\"1.1.\\\"1.1\"",
            b"for=203.0.113.7, for=[2001:db8::1",
            b"for=203.0.113.7, junk",
        ] {
            assert_eq!(f(v), ip(PROXY), "{}", String::from_utf8_lossy(v));
        }
    }

    #[test]
    fn both_headers_must_agree_when_both_name_a_client() {
        let both =
            |xff: &[u8], fwd: &[u8]| client(PROXY, &[("x-forwarded-for", xff), ("forwarded", fwd)]);
        assert_eq!(both(b"203.0.113.7", b"for=203.0.113.7"), ip("203.0.113.7"));
        // a proxy appending to X-Forwarded-For only: the client's own
        // `Forwarded` cannot pick its address...
        assert_eq!(both(b"203.0.113.7", b"for=6.6.6.6"), ip(PROXY));
        // ...and one that gives no address leaves the other's
        assert_eq!(both(b"203.0.113.7", b"for=unknown"), ip("203.0.113.7"));
        assert_eq!(both(b"203.0.113.7", b"for=10.9.9.9"), ip("203.0.113.7"));
        // the same the other way round
        assert_eq!(both(b"6.6.6.6", b"for=203.0.113.7"), ip(PROXY));
        assert_eq!(both(b"garbage", b"for=203.0.113.7"), ip("203.0.113.7"));
    }

    #[test]
    fn ipv4_mapped_ipv6_is_read_as_ipv4() {
        // a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
        assert_eq!(client("::ffff:203.0.113.9", &[]), ip("203.0.113.9"));
        let h: &[(&str, &[u8])] = &[("x-forwarded-for", b"::ffff:203.0.113.7, ::ffff:10.1.1.1")];
        assert_eq!(client("::ffff:10.0.0.2", h), ip("203.0.113.7"));
        let f: &[(&str, &[u8])] = &[("forwarded", b"for=\"[::ffff:203.0.113.7]:80\"")];
        assert_eq!(client("::1", f), ip("203.0.113.7"));
    }

    // ---- the buckets

    fn limiter(set: impl FnOnce(&mut RateLimit)) -> (Limiter, Instant) {
        let mut r = RateLimit::default();
        set(&mut r);
        r.validate().unwrap();
        let l = Limiter::new(&r);
        (l, Instant::now())
    }
    const A: &str = "203.0.113.1";
    const B: &str = "203.0.113.2";

    #[test]
    fn the_request_burst_is_honoured_then_it_refills_at_the_rate() {
        let (l, t0) = limiter(|_| {});
        for _ in 0..20 {
            assert_eq!(l.check(ip(A), 1, t0), Ok(()));
        }
        let r = l.check(ip(A), 1, t0).unwrap_err();
        assert_eq!(
            (r.reason, r.retry_after),
            (RefuseReason::Client, Duration::from_secs(1))
        );
        // 10 per second: one token every 100 ms
        assert!(l.check(ip(A), 1, t0 + ms(99)).is_err());
        assert_eq!(l.check(ip(A), 1, t0 + ms(100)), Ok(()));
        assert!(l.check(ip(A), 1, t0 + ms(100)).is_err());
        // a second later: 10 more, not 20
        let t1 = t0 + ms(1100);
        let admitted = (0..30).filter(|_| l.check(ip(A), 1, t1).is_ok()).count();
        assert_eq!(admitted, 10);
        // idle long enough: the whole burst again, never more
        let t2 = t1 + Duration::from_secs(60);
        let admitted = (0..30).filter(|_| l.check(ip(A), 1, t2).is_ok()).count();
        assert_eq!(admitted, 20);
    }

    #[test]
    fn a_steady_sender_gets_the_configured_rate() {
        let (l, t0) = limiter(|r| r.requests_per_second = 7.0);
        // 50 requests a second for 20 s: the burst, then 7 a second
        let admitted = (0..=1000)
            .filter(|i| l.check(ip(A), 1, t0 + ms(i * 20)).is_ok())
            .count();
        // (the last one falls exactly on the boundary, where the f32
        // rounding of the stored tokens may go either way)
        assert!(
            (20 + 7 * 20 - 1..=20 + 7 * 20 + 1).contains(&admitted),
            "{admitted}"
        );
    }

    #[test]
    fn items_have_their_own_bucket() {
        // 500 items/s, the bucket holds burst / rps = 2 s of them: 1000
        let (l, t0) = limiter(|_| {});
        assert_eq!(l.check(ip(A), 600, t0), Ok(()));
        assert_eq!(l.check(ip(A), 400, t0), Ok(()));
        let r = l.check(ip(A), 1, t0).unwrap_err();
        assert_eq!(
            (r.reason, r.retry_after),
            (RefuseReason::Client, Duration::from_secs(1))
        );
        assert!(l.check(ip(A), 250, t0 + ms(499)).is_err());
        assert_eq!(l.check(ip(A), 250, t0 + ms(500)), Ok(()));
        // 2.4 s of items missing: Retry-After rounds up to 3
        let r = l.check(ip(A), 1000, t0 + ms(600)).unwrap_err();
        assert_eq!(
            r.retry_after,
            Duration::from_secs(2),
            "950 missing at 500/s"
        );
        // a request of no items still takes a request token
        let (l, t0) = limiter(|r| r.burst = 2);
        assert_eq!(l.check(ip(A), 0, t0), Ok(()));
        assert_eq!(l.check(ip(A), 0, t0), Ok(()));
        assert_eq!(
            l.check(ip(A), 0, t0).unwrap_err().reason,
            RefuseReason::Client
        );
    }

    #[test]
    fn a_request_larger_than_the_bucket_passes_when_it_is_full_and_is_waited_off() {
        let (l, t0) = limiter(|_| {});
        // not full: wait until it is (10 items missing: 20 ms, 1 s)
        assert_eq!(l.check(ip(A), 10, t0), Ok(()));
        let r = l.check(ip(A), 5000, t0).unwrap_err();
        assert_eq!(
            (r.reason, r.retry_after),
            (RefuseReason::Client, Duration::from_secs(1))
        );
        // full: admitted, 4000 in debt
        let t1 = t0 + ms(20);
        assert_eq!(l.check(ip(A), 5000, t1), Ok(()));
        let r = l.check(ip(A), 1, t1).unwrap_err();
        assert_eq!(
            r.retry_after,
            Duration::from_secs(9),
            "4001 items at 500/s: 8.002 s"
        );
        assert!(l.check(ip(A), 1, t1 + ms(8001)).is_err());
        assert_eq!(l.check(ip(A), 1, t1 + ms(8002)), Ok(()));
        // over 100 s the client got its rate, not more
        let mut sent = 5010;
        for s in 9..100 {
            if l.check(ip(A), 5000, t1 + Duration::from_secs(s)).is_ok() {
                sent += 5000;
            }
        }
        assert!(sent <= 1000 + 500 * 100 + 5000, "{sent}");
    }

    #[test]
    fn one_client_past_its_budget_leaves_the_others_alone() {
        let (l, t0) = limiter(|_| {});
        while l.check(ip(A), 1, t0).is_ok() {}
        assert!(l.check(ip(A), 1, t0).is_err());
        for _ in 0..20 {
            assert_eq!(l.check(ip(B), 1, t0), Ok(()));
        }
        // one client: IPv4 and its IPv4-mapped form; an IPv6 /64
        assert!(l.check(ip("::ffff:203.0.113.1"), 1, t0).is_err());
        while l.check(ip("2001:db8:1:2::1"), 1, t0).is_ok() {}
        assert!(l.check(ip("2001:db8:1:2:ffff::9"), 1, t0).is_err());
        assert_eq!(l.check(ip("2001:db8:1:3::1"), 1, t0), Ok(()));
        // per address when configured so
        l.set_limits(&RateLimit {
            ipv6_prefix: 128,
            ..RateLimit::default()
        });
        assert_eq!(l.check(ip("2001:db8:1:2:ffff::9"), 1, t0), Ok(()));
    }

    #[test]
    fn the_global_cap_refuses_everyone_once_spent_and_takes_nothing_from_a_refused_client() {
        // global 2000/s (4000 in its bucket); each client 500/s (1000)
        let (l, t0) = limiter(|r| r.global_items_per_second = 2000.0);
        for i in 1..=4 {
            assert_eq!(l.check(ip(&format!("198.51.100.{i}")), 1000, t0), Ok(()));
        }
        for who in [A, B, "2001:db8::1"] {
            let r = l.check(ip(who), 1000, t0).unwrap_err();
            assert_eq!(
                (r.reason, r.retry_after),
                (RefuseReason::Global, Duration::from_secs(1))
            );
        }
        let r = l.check(ip(A), 3000, t0).unwrap_err();
        assert_eq!(
            r.retry_after,
            Duration::from_secs(2),
            "3000 at 2000/s: 1.5 s"
        );
        // half a second: 1000 global tokens; A's own bucket was not touched
        let t1 = t0 + ms(500);
        assert_eq!(l.check(ip(A), 1000, t1), Ok(()));
        assert_eq!(
            l.check(ip(B), 1, t1).unwrap_err().reason,
            RefuseReason::Global
        );
        // a client refused for itself does not spend global tokens: of
        // the 4000 refilled, A takes 1000, three others the rest
        let t2 = t1 + Duration::from_secs(2);
        assert_eq!(l.check(ip(A), 1000, t2), Ok(()));
        assert_eq!(
            l.check(ip(A), 1000, t2).unwrap_err().reason,
            RefuseReason::Client
        );
        for i in 1..=3 {
            assert_eq!(l.check(ip(&format!("198.51.100.{i}")), 1000, t2), Ok(()));
        }
        let r = l.check(ip("198.51.100.4"), 1000, t2).unwrap_err();
        assert_eq!(r.reason, RefuseReason::Global);
    }

    #[test]
    fn retry_after_is_when_the_request_would_pass() {
        let mut rng = fastrand::Rng::with_seed(7);
        let (l, t0) = limiter(|r| {
            (r.requests_per_second, r.burst, r.items_per_second) = (3.0, 4, 120.0);
        });
        let mut now = t0;
        let (mut refused, mut max_wait) = (0, Duration::ZERO);
        for _ in 0..2000 {
            let items = rng.u64(0..400);
            match l.check(ip(A), items, now) {
                Ok(()) => now += ms(rng.u64(0..300)),
                Err(r) => {
                    refused += 1;
                    assert!(r.retry_after >= Duration::from_secs(1));
                    max_wait = max_wait.max(r.retry_after);
                    now += r.retry_after;
                    assert_eq!(l.check(ip(A), items, now), Ok(()), "after {r:?}");
                }
            }
        }
        assert!(refused > 100, "{refused}");
        // the most that can be missing: a bucket in debt by a large
        // request, needing a large one again: 400 items at 120/s
        assert!(max_wait <= Duration::from_secs(4), "{max_wait:?}");
        for (wait, want) in [
            (0.0001, 1),
            (1.0, 1),
            (1.0001, 2),
            (59.5, 60),
            (f64::NAN, 1),
        ] {
            assert_eq!(
                Refused::after(RefuseReason::Client, wait)
                    .retry_after
                    .as_secs(),
                want
            );
        }
        let huge = Refused::after(RefuseReason::Global, f64::INFINITY);
        assert_eq!(huge.retry_after.as_secs(), u64::MAX);
    }

    #[test]
    fn a_million_addresses_stay_within_max_clients() {
        let (l, t0) = limiter(|_| {});
        assert_eq!(std::mem::size_of::<Slot>(), 32);
        assert_eq!((l.capacity(), l.table_bytes(), l.clients()), (65_536, 0, 0));
        for i in 0..1_000_000u32 {
            let who = IpAddr::V4(Ipv4Addr::from_bits(0x0a00_0000 + i * 7));
            let _ = l.check(who, 1, t0 + Duration::from_micros(u64::from(i)));
            if i == 200_000 {
                assert_eq!(l.table_bytes(), 65_536 * 32);
            }
        }
        for i in 0..100_000u128 {
            let who = IpAddr::V6(Ipv6Addr::from_bits((0x2001_0db8 << 96) | (i << 64) | 1));
            let _ = l.check(who, 1, t0 + Duration::from_secs(2));
        }
        assert!(l.clients() <= 65_536, "{}", l.clients());
        assert!(l.clients() > 65_000, "the table is used: {}", l.clients());
        assert_eq!(
            l.clients(),
            l.shards.iter().map(|s| lock(s).used()).sum::<usize>()
        );
        assert_eq!(l.table_bytes(), 65_536 * 32, "2 MiB, never more");
        // the smallest table, flooded
        let (l, t0) = limiter(|r| r.max_clients = 16);
        for i in 0..10_000u32 {
            let _ = l.check(IpAddr::V4(Ipv4Addr::from_bits(i)), 1, t0);
        }
        assert_eq!((l.clients(), l.table_bytes()), (16, 16 * 32));
    }

    fn full_shard(cap: usize) -> (Shard, AtomicUsize) {
        (
            Shard::new(Limits::of(&RateLimit::default()), cap),
            AtomicUsize::new(0),
        )
    }

    #[test]
    fn a_full_set_evicts_the_client_idle_longest() {
        // 8 slots: every client's set is the whole shard, whatever its hash
        let (mut s, n) = full_shard(8);
        let key = |k: u128| (k, (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut slot_of = std::collections::HashMap::new();
        for k in 1..=8 {
            let (k, h) = key(k);
            slot_of.insert(k, s.slot(k, h, 10 + k as u64, &n));
        }
        assert_eq!(
            n.load(Ordering::Relaxed),
            8,
            "empty slots first, no eviction"
        );
        let (k1, h1) = key(1);
        assert_eq!(
            s.slot(k1, h1, 100, &n),
            slot_of[&1],
            "found, not claimed again"
        );
        s.slots[slot_of[&1]].last = 100; // as `check` does
                                         // 9 takes the slot of 2 (idle since 12), 10 that of 3
        for (new, gone) in [(9, 2), (10, 3)] {
            let (k, h) = key(new);
            assert_eq!(s.slot(k, h, 200, &n), slot_of[&gone]);
        }
        let present: Vec<u128> = s.slots.iter().map(|s| s.key).collect();
        for k in [1, 4, 5, 6, 7, 8, 9, 10] {
            assert!(present.contains(&k), "{k}");
        }
        assert!(!present.contains(&2) && !present.contains(&3));
        assert_eq!(n.load(Ordering::Relaxed), 8);
        // a claimed slot starts full
        let got = s.slots[slot_of[&2]];
        assert_eq!(
            (got.key, got.last, got.requests, got.items),
            (9, 200, 20.0, 1000.0)
        );
    }

    #[test]
    fn out_of_order_clocks_and_unvalidated_limits_never_panic_or_add_tokens() {
        let (l, t0) = limiter(|_| {});
        while l.check(ip(A), 1, t0 + ms(1000)).is_ok() {}
        // a request that read the clock earlier, then the later one again
        assert!(l.check(ip(A), 1, t0 + ms(900)).is_err());
        assert!(
            l.check(ip(A), 1, t0 + ms(1099)).is_err(),
            "no token from going back"
        );
        assert_eq!(l.check(ip(A), 1, t0 + ms(1100)), Ok(()));
        let before = Instant::now() - Duration::from_secs(1);
        assert!(
            l.check(ip(B), 1, before).is_ok(),
            "before the origin: the origin"
        );
        // nothing here is validated: still no panic, still bounded
        let r = RateLimit {
            requests_per_second: 0.0,
            burst: 0,
            items_per_second: f64::NAN,
            global_items_per_second: -1.0,
            max_clients: 0,
            ipv6_prefix: 0,
        };
        let l = Limiter::new(&r);
        l.set_limits(&r);
        for i in 0..100u32 {
            let _ = l.check(IpAddr::V4(Ipv4Addr::from_bits(i)), u64::MAX, t0);
        }
        assert_eq!(l.clients(), 1);
        let l = Limiter::new(&RateLimit::default());
        l.set_limits(&r);
        for i in 0..100u32 {
            let _ = l.check(IpAddr::V4(Ipv4Addr::from_bits(i)), 1, t0);
        }
        assert_eq!((l.clients(), l.capacity()), (16, 16), "one slot a shard");
    }

    #[test]
    fn an_evicted_client_starts_again_with_full_buckets() {
        let (l, t0) = limiter(|r| r.max_clients = 16);
        while l.check(ip(A), 1, t0).is_ok() {}
        for i in 0..1000u32 {
            let _ = l.check(IpAddr::V4(Ipv4Addr::from_bits(i)), 1, t0 + ms(1));
        }
        assert_eq!(l.check(ip(A), 1, t0 + ms(2)), Ok(()), "forgotten: lenient");
    }

    #[test]
    fn sweep_forgets_only_clients_whose_buckets_are_full() {
        let (l, t0) = limiter(|_| {});
        for i in 0..100u32 {
            l.check(IpAddr::V4(Ipv4Addr::from_bits(i)), 1, t0).unwrap();
        }
        assert_eq!(l.check(ip(A), 1000, t0), Ok(()));
        assert_eq!(l.clients(), 101);
        assert_eq!(l.sweep(t0 + ms(99)), 0, "none refilled yet");
        // the 1-item clients are full after 100 ms (a request at 10/s,
        // an item at 500/s); A needs 2 s for its 1000 items
        assert_eq!(l.sweep(t0 + ms(1000)), 100);
        assert_eq!(l.clients(), 1);
        assert!(
            l.check(ip(A), 1000, t0 + ms(1000)).is_err(),
            "A keeps its state"
        );
        assert_eq!(l.sweep(t0 + ms(3000)), 1);
        assert_eq!(l.clients(), 0);
    }

    #[test]
    fn a_reload_changes_the_rates_in_place_and_a_new_table_size_starts_afresh() {
        let (l, t0) = limiter(|_| {});
        while l.check(ip(A), 1, t0).is_ok() {}
        l.check(ip(B), 1, t0).unwrap();
        let faster = RateLimit {
            requests_per_second: 100.0,
            ..RateLimit::default()
        };
        l.set_limits(&faster);
        assert_eq!(l.clients(), 2, "same size: clients kept");
        assert!(l.check(ip(A), 1, t0 + ms(9)).is_err(), "A is still spent");
        assert_eq!(l.check(ip(A), 1, t0 + ms(10)), Ok(()), "refills at 100/s");
        // a smaller burst cuts the tokens held at the next request
        l.set_limits(&RateLimit {
            burst: 2,
            ..faster.clone()
        });
        let t1 = t0 + Duration::from_secs(5);
        let admitted = (0..10).filter(|_| l.check(ip(B), 1, t1).is_ok()).count();
        assert_eq!(admitted, 2);
        // a new max_clients
        l.set_limits(&RateLimit {
            max_clients: 1000,
            ..faster
        });
        assert_eq!((l.clients(), l.capacity(), l.table_bytes()), (0, 1000, 0));
        assert_eq!(l.check(ip(A), 1, t1), Ok(()));
        assert_eq!(l.clients(), 1);
        assert!(l.table_bytes() <= 1000 * 32);
        // the global rate too
        // (20 in its bucket: a larger request passes once, in debt)
        l.set_limits(&RateLimit {
            global_items_per_second: 10.0,
            ..RateLimit::default()
        });
        assert_eq!(l.check(ip(B), 50, t1 + Duration::from_secs(10)), Ok(()));
        let r = l.check(ip(B), 1, t1 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(r.reason, RefuseReason::Global);
    }

    #[test]
    fn refusals_are_counted_by_reason_and_the_table_is_a_gauge() {
        let stats = LimitStats::default();
        let (l, t0) = limiter(|r| r.global_items_per_second = 1.0);
        l.check(ip(A), 10, t0).unwrap();
        let r = l.check(ip(B), 1, t0).unwrap_err();
        assert_eq!(
            (r.reason, r.retry_after.as_secs()),
            (RefuseReason::Global, 9)
        );
        stats.count(&r);
        let (l2, t0) = limiter(|r| r.burst = 1);
        l2.check(ip(A), 1, t0).unwrap();
        stats.count(&l2.check(ip(A), 1, t0).unwrap_err());
        stats.count(&l2.check(ip(A), 1, t0).unwrap_err());
        assert_eq!(stats.refused_global.load(Ordering::Relaxed), 1);
        assert_eq!(stats.refused_client.load(Ordering::Relaxed), 2);
        assert_eq!(RefuseReason::Client.label(), "rate_limited");
        assert_eq!(RefuseReason::Global.label(), "global_rate_limited");

        let t = SelfMetrics::default();
        let l2 = Arc::new(l2);
        declare_clients(&t, l2.clone());
        l2.check(ip(B), 1, t0).unwrap();
        let f = crate::metrics::own::families(&t);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].name, "geometra_sidecar_browser_clients");
        assert_eq!(f[0].kind, crate::metrics::snapshot::Kind::Gauge);
        match f[0].series[0].point {
            crate::metrics::snapshot::Point::Value(v) => assert_eq!(v, 2.0),
            ref p => panic!("{p:?}"),
        }
    }
}
