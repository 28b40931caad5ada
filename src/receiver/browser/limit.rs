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

/// `max_clients` split over `n` shards, the first ones taking the rest.
fn shares(max_clients: usize, n: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| max_clients / n + usize::from(i < max_clients % n))
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
