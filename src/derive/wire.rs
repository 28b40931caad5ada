//! Zero-copy reader over OTLP protobuf bytes: walks an Export*ServiceRequest
//! and hands each span or log record to a callback, with only the fields the
//! rules need, borrowed from the request buffer.
//!
//! Written by hand on purpose: prost (and every generated decoder) builds the
//! whole object tree, allocating a String per attribute key and value, which
//! on this machine limits a core to ~350k spans/s. Rules read a handful of
//! attributes, so the walker skips everything else by length and allocates
//! nothing. Varints come from prost's own `decode_varint`.
//!
//! The walk is also the request's validation against the OTLP schema (issue
//! 24), in one pass: the walker checks what it reads (the wire type settled
//! by the tag byte it matches, lengths, UTF-8 of the strings it passes, an
//! ASCII test first) and hands every field it skips to the schema tables of
//! [`super::validate::field`], in wire order. A request that is not valid
//! OTLP is rejected as a whole before any metric is touched, because the
//! caller applies updates only after a successful walk.

use super::fields::*;
use super::validate::{self, scalar_any_value, utf8, Invalid, M};
use prost::encoding::decode_varint;

/// Tags of the canonical short encodings the fast paths match on.
const ANY_STRING_TAG: u8 = tag(ANY_VALUE_STRING, LEN);
const ANY_INT_TAG: u8 = tag(ANY_VALUE_INT, VARINT);
const KEY_TAG: u8 = tag(KEY_VALUE_KEY, LEN);
const VALUE_TAG: u8 = tag(KEY_VALUE_VALUE, LEN);

/// Why a request could not be walked. Shown to the sender as INVALID_ARGUMENT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub &'static str);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed OTLP protobuf: {}", self.0)
    }
}
impl std::error::Error for WireError {}

impl From<Invalid> for WireError {
    fn from(e: Invalid) -> WireError {
        WireError(e.what)
    }
}

/// Checks field `f` of message `m` (one the walker does not read itself)
/// against the OTLP schema, to its leaves (see [`validate::field`]).
#[inline(always)]
fn check(m: &'static M, f: u32, v: Wire<'_>, max_depth: u32) -> Result<(), WireError> {
    Ok(validate::field(m, f, v, 0, max_depth)?)
}

/// One protobuf field value, borrowed.
#[derive(Clone, Copy, Debug)]
pub enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

/// A cursor over one protobuf message.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// The next (field number, value), or None at the end of the message.
    #[inline(always)]
    pub fn next_field(&mut self) -> Result<Option<(u32, Wire<'a>)>, WireError> {
        // fast path: a one-byte key (fields 1-15) of a length-delimited
        // field with a one- or two-byte length, most fields of a request
        if let [k, rest @ ..] = self.buf {
            if *k < 0x80 && *k & 7 == LEN && *k >= 8 {
                if let Some((head, tail)) = short_len(rest) {
                    self.buf = tail;
                    return Ok(Some((u32::from(*k >> 3), Wire::Bytes(head))));
                }
            }
        }
        self.next_field_general()
    }

    /// [`Reader::next_field`] for any key, wire type and length.
    #[inline(always)]
    fn next_field_general(&mut self) -> Result<Option<(u32, Wire<'a>)>, WireError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = (key >> 3) as u32;
        if field == 0 || key > u64::from(u32::MAX) {
            return Err(WireError("invalid field number"));
        }
        let v = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                let (head, rest) = self
                    .buf
                    .split_first_chunk::<8>()
                    .ok_or(WireError("truncated fixed64"))?;
                self.buf = rest;
                Wire::Fixed64(u64::from_le_bytes(*head))
            }
            2 => {
                let len = self.varint()?;
                if len > self.buf.len() as u64 {
                    return Err(WireError("length-delimited field runs past its message"));
                }
                let (head, rest) = self.buf.split_at(len as usize);
                self.buf = rest;
                Wire::Bytes(head)
            }
            5 => {
                let (head, rest) = self
                    .buf
                    .split_first_chunk::<4>()
                    .ok_or(WireError("truncated fixed32"))?;
                self.buf = rest;
                Wire::Fixed32(u32::from_le_bytes(*head))
            }
            _ => return Err(WireError("unsupported wire type")),
        };
        Ok(Some((field, v)))
    }

    #[inline(always)]
    fn varint(&mut self) -> Result<u64, WireError> {
        // fast paths: one and two bytes (field keys, most lengths)
        match *self.buf {
            [b0, ..] if b0 < 0x80 => {
                self.buf = &self.buf[1..];
                Ok(u64::from(b0))
            }
            [b0, b1, ..] if b1 < 0x80 => {
                self.buf = &self.buf[2..];
                Ok(u64::from(b0 & 0x7f) | (u64::from(b1) << 7))
            }
            _ => decode_varint(&mut self.buf).map_err(|_| WireError("invalid varint")),
        }
    }
}

#[inline]
fn bytes<'a>(v: Wire<'a>) -> Result<&'a [u8], WireError> {
    match v {
        Wire::Bytes(b) => Ok(b),
        _ => Err(WireError("expected a length-delimited field")),
    }
}
#[inline]
fn varint(v: Wire<'_>) -> Result<u64, WireError> {
    match v {
        Wire::Varint(x) => Ok(x),
        _ => Err(WireError("expected a varint field")),
    }
}
#[inline]
fn fixed64(v: Wire<'_>) -> Result<u64, WireError> {
    match v {
        Wire::Fixed64(x) => Ok(x),
        _ => Err(WireError("expected a fixed64 field")),
    }
}

/// An attribute value as the rules see it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Val<'a> {
    #[default]
    Missing,
    /// UTF-8 is checked only when the bytes become a label (on series creation).
    Str(&'a [u8]),
    Int(i64),
    Double(f64),
    Bool(bool),
    /// array, kvlist or bytes: never a label value.
    Other,
}

/// Reads an `AnyValue` message.
#[inline(always)]
pub fn any_value(buf: &[u8]) -> Result<Val<'_>, WireError> {
    let mut v = Val::Missing;
    any_value_into(buf, &mut v)?;
    Ok(v)
}

/// [`any_value`] written straight into a slot (no `Result` of a `Val` to
/// move on the hot path).
#[inline(always)]
fn any_value_into<'a>(buf: &'a [u8], out: &mut Val<'a>) -> Result<(), WireError> {
    // fast paths: a short string, the usual case, and a short integer
    *out = match buf {
        [ANY_STRING_TAG, len, s @ ..] if (*len as usize) < 0x80 && s.len() == *len as usize => {
            Val::Str(s)
        }
        [ANY_INT_TAG, b0] if *b0 < 0x80 => Val::Int(i64::from(*b0)),
        [ANY_INT_TAG, b0, b1] if *b0 >= 0x80 && *b1 < 0x80 => {
            Val::Int(i64::from(b0 & 0x7f) | (i64::from(*b1) << 7))
        }
        _ => any_value_general(buf)?,
    };
    Ok(())
}

/// [`any_value`] for any encoding (several fields, long strings, other types).
#[inline(never)]
fn any_value_general(buf: &[u8]) -> Result<Val<'_>, WireError> {
    let mut r = Reader::new(buf);
    let mut out = Val::Missing;
    while let Some((f, v)) = r.next_field()? {
        out = match (f, v) {
            (ANY_VALUE_STRING, Wire::Bytes(b)) => Val::Str(b),
            (ANY_VALUE_BOOL, Wire::Varint(x)) => Val::Bool(x != 0),
            (ANY_VALUE_INT, Wire::Varint(x)) => Val::Int(x as i64),
            (ANY_VALUE_DOUBLE, Wire::Fixed64(x)) => Val::Double(f64::from_bits(x)),
            (ANY_VALUE_ARRAY | ANY_VALUE_KVLIST | ANY_VALUE_BYTES, Wire::Bytes(_)) => Val::Other,
            (ANY_VALUE_STRING..=ANY_VALUE_BYTES, _) => {
                return Err(WireError("AnyValue field has the wrong wire type"))
            }
            _ => out,
        };
    }
    Ok(out)
}

/// Which attribute keys the rules read, each mapped to a slot index.
/// Lookup is by length first, then a byte compare: with ~20 keys that beats
/// hashing every attribute key of every span.
#[derive(Debug, Default, Clone)]
pub struct KeyTable {
    /// per key length: the keys of that length
    by_len: Vec<Vec<KeyEntry>>,
    names: Vec<String>,
}

/// The last 8 bytes of a key as a number (0 for keys of 8 bytes or fewer,
/// which [`prefix`] covers whole).
#[inline(always)]
fn suffix(key: &[u8]) -> u64 {
    match key.last_chunk::<8>() {
        Some(tail) if key.len() > 8 => u64::from_le_bytes(*tail),
        _ => 0,
    }
}

/// The first 8 bytes of a key as a number; a shorter key whole, from two
/// overlapping loads (within one length, which the table compares first,
/// they cover every byte, so equal numbers mean equal keys).
#[inline(always)]
fn prefix(key: &[u8]) -> u64 {
    if let Some(head) = key.first_chunk::<8>() {
        return u64::from_le_bytes(*head);
    }
    if let (Some(a), Some(b)) = (key.first_chunk::<4>(), key.last_chunk::<4>()) {
        return u64::from(u32::from_le_bytes(*a)) | u64::from(u32::from_le_bytes(*b)) << 32;
    }
    if let (Some(a), Some(b)) = (key.first_chunk::<2>(), key.last_chunk::<2>()) {
        return u64::from(u16::from_le_bytes(*a)) | u64::from(u16::from_le_bytes(*b)) << 16;
    }
    key.first().map_or(0, |b| u64::from(*b))
}

/// The 8 bytes of `key` at `at` as a number (0 past its end).
#[inline(always)]
fn word_at(key: &[u8], at: usize) -> u64 {
    key.get(at..)
        .and_then(|t| t.first_chunk::<8>())
        .map_or(0, |w| u64::from_le_bytes(*w))
}

/// The bytes of a key longer than 16 between its first and last 8, as two
/// words (at 8 and at len - 16, overlapping): for keys of up to 32 bytes
/// they cover those bytes whole.
#[inline(always)]
fn middle(key: &[u8]) -> [u64; 2] {
    [word_at(key, 8), word_at(key, key.len().saturating_sub(16))]
}

/// One key of the table: its first and last 8 bytes as numbers, the
/// middle words of a longer key, the key and its slot.
#[derive(Debug, Clone)]
struct KeyEntry {
    prefix: u64,
    suffix: u64,
    middle: [u64; 2],
    key: Box<[u8]>,
    slot: u16,
}

impl KeyEntry {
    /// Whether `key`, of this entry's length, with the given prefix and
    /// suffix, is this entry's key.
    #[inline(always)]
    fn is(&self, key: &[u8], p: u64, q: u64) -> bool {
        self.prefix == p
            && self.suffix == q
            && (key.len() <= 16
                || (self.middle == middle(key) && (key.len() <= 32 || self.key[16..] == key[16..])))
    }
}

impl KeyTable {
    /// The slot of `key`, adding it if new.
    pub fn slot(&mut self, key: &str) -> u16 {
        if let Some(s) = self.lookup(key.as_bytes()) {
            return s;
        }
        let s = self.names.len() as u16;
        self.names.push(key.to_string());
        let l = key.len();
        if self.by_len.len() <= l {
            self.by_len.resize_with(l + 1, Vec::new);
        }
        let k = key.as_bytes();
        self.by_len[l].push(KeyEntry {
            prefix: prefix(k),
            suffix: suffix(k),
            middle: middle(k),
            key: k.into(),
            slot: s,
        });
        s
    }

    #[inline(always)]
    pub fn lookup(&self, key: &[u8]) -> Option<u16> {
        let bucket = self.by_len.get(key.len())?;
        if bucket.is_empty() {
            return None;
        }
        let (p, q) = (prefix(key), suffix(key));
        for e in bucket {
            if e.is(key, p, q) {
                return Some(e.slot);
            }
        }
        None
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
    pub fn name(&self, slot: u16) -> &str {
        &self.names[slot as usize]
    }
}

/// A `KeyValue`'s key and encoded `AnyValue`, borrowed (None when absent).
type KvParts<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Splits one `KeyValue` into its key and its encoded `AnyValue`.
#[inline(always)]
fn split_kv(buf: &[u8]) -> Result<KvParts<'_>, WireError> {
    // Fast path for the shape every SDK writes: key (field 1) then value
    // (field 2), both shorter than 128 bytes, nothing else: the value's tag
    // and length sit right after the key, and the lengths add up to the
    // message's. Anything else takes the general loop.
    if let [KEY_TAG, klen, rest @ ..] = buf {
        let klen = usize::from(*klen);
        if let Some([VALUE_TAG, vlen]) = rest.get(klen..klen + 2) {
            if klen < 0x80 && *vlen < 0x80 && klen + 2 + usize::from(*vlen) == rest.len() {
                let (key, value) = rest.split_at(klen);
                return Ok((Some(key), value.get(2..)));
            }
        }
    }
    split_kv_general(buf)
}

/// [`split_kv`] for any encoding (fields in any order, repeated, long).
#[inline(never)]
fn split_kv_general(buf: &[u8]) -> Result<KvParts<'_>, WireError> {
    let mut r = Reader::new(buf);
    let mut key: Option<&[u8]> = None;
    let mut value: Option<&[u8]> = None;
    while let Some((f, v)) = r.next_field()? {
        match f {
            KEY_VALUE_KEY => key = Some(bytes(v)?),
            KEY_VALUE_VALUE => value = Some(bytes(v)?),
            _ => {}
        }
    }
    Ok((key, value))
}

/// Stores `value` in `slot` unless the slot is already filled (the first
/// occurrence of a key wins, as in most SDKs' de-duplication).
#[inline(always)]
fn fill_slot<'a, S: SlotsMut<'a> + ?Sized>(
    slot: u16,
    value: Option<&'a [u8]>,
    slots: &mut S,
) -> Result<(), WireError> {
    match (value, slots.missing(slot)) {
        (Some(v), Some(s)) => any_value_into(v, s),
        _ => Ok(()),
    }
}

/// Where the walk stores the values of the keys in the [`KeyTable`], one
/// slot a key: a slice, or [`Written`], which also remembers which slots
/// were written so that clearing them for the next item costs the writes,
/// not the table's length. Every write goes through [`SlotsMut::missing`].
pub trait SlotsMut<'a> {
    /// Slot `i` when it is still missing (the caller may fill it), noted
    /// as written; None when it is filled.
    fn missing(&mut self, i: u16) -> Option<&mut Val<'a>>;
}

impl<'a> SlotsMut<'a> for [Val<'a>] {
    #[inline(always)]
    fn missing(&mut self, i: u16) -> Option<&mut Val<'a>> {
        self.get_mut(usize::from(i))
            .filter(|v| matches!(v, Val::Missing))
    }
}

impl<'a> SlotsMut<'a> for Vec<Val<'a>> {
    #[inline(always)]
    fn missing(&mut self, i: u16) -> Option<&mut Val<'a>> {
        self.as_mut_slice().missing(i)
    }
}

/// The slots of one item and which of them it wrote: bit `i` of `written`
/// is set when slot `i` was handed out by [`SlotsMut::missing`]. With more
/// than 64 keys the bits are not used and every slot is cleared. Reads go
/// through `Deref` to the slice.
pub struct Written<'s, 'a> {
    vals: &'s mut [Val<'a>],
    written: u64,
}

impl<'s, 'a> Written<'s, 'a> {
    /// Slots that are all missing.
    fn new(vals: &'s mut [Val<'a>]) -> Self {
        debug_assert!(vals.iter().all(|v| matches!(v, Val::Missing)));
        Written { vals, written: 0 }
    }

    /// [`SlotsMut::missing`] by a `usize` index.
    #[inline(always)]
    fn missing_at(&mut self, i: usize) -> Option<&mut Val<'a>> {
        let v = self.vals.get_mut(i)?;
        if !matches!(v, Val::Missing) {
            return None;
        }
        self.written |= 1u64 << (i % 64);
        Some(v)
    }

    /// Makes every slot missing again, touching only those written (all
    /// of them beyond 64 keys).
    #[inline(always)]
    fn clear(&mut self) {
        let mut w = std::mem::take(&mut self.written);
        if self.vals.len() > 64 {
            self.vals.fill(Val::Missing);
            return;
        }
        while w != 0 {
            if let Some(v) = self.vals.get_mut(w.trailing_zeros() as usize) {
                *v = Val::Missing;
            }
            w &= w - 1;
        }
    }
}

impl<'a> SlotsMut<'a> for Written<'_, 'a> {
    #[inline(always)]
    fn missing(&mut self, i: u16) -> Option<&mut Val<'a>> {
        self.missing_at(usize::from(i))
    }
}

impl<'a> std::ops::Deref for Written<'_, 'a> {
    type Target = [Val<'a>];
    #[inline(always)]
    fn deref(&self) -> &[Val<'a>] {
        self.vals
    }
}

/// Reads one `KeyValue` and checks it (a UTF-8 key, a valid value within
/// the depth limit); when its key is in the table, stores the value in its
/// slot (the first occurrence wins).
#[inline(always)]
fn key_value<'a, S: SlotsMut<'a> + ?Sized>(
    buf: &'a [u8],
    ctx: &Ctx<'_>,
    slots: &mut S,
) -> Result<(), WireError> {
    // the shape every SDK writes (see [`split_kv`]) with a UTF-8 key and a
    // scalar value: checked in place; anything else is checked whole first
    if let [KEY_TAG, klen, rest @ ..] = buf {
        let klen = usize::from(*klen);
        // the usual attribute, a string: when the whole `KeyValue` is ASCII
        // (its tags and lengths then are one byte each), one test checks
        // the key, the value and their lengths
        if let Some(&[VALUE_TAG, vlen, ANY_STRING_TAG, slen]) = rest.get(klen..klen + 4) {
            let (vlen, slen) = (usize::from(vlen), usize::from(slen));
            if vlen == slen + 2
                && klen + 2 + vlen == rest.len()
                && ctx.max_depth > 0
                && validate::ascii(buf)
            {
                let (key, value) = rest.split_at(klen);
                if let Some(slot) = ctx.keys.lookup(key) {
                    fill_val(slot, Val::Str(value.get(4..).unwrap_or_default()), slots);
                }
                return Ok(());
            }
        }
        // the usual integer attribute: a varint of one or two bytes, the
        // value's tags and lengths matched in place, the key tested alone
        if let Some((key, value)) = rest.split_at_checked(klen) {
            let int = match *value {
                [VALUE_TAG, 2, ANY_INT_TAG, b0] if b0 < 0x80 => Some(i64::from(b0)),
                [VALUE_TAG, 3, ANY_INT_TAG, b0, b1] if b0 >= 0x80 && b1 < 0x80 => {
                    Some(i64::from(b0 & 0x7f) | i64::from(b1) << 7)
                }
                _ => None,
            };
            if let Some(i) = int {
                if klen < 0x80 && ctx.max_depth > 0 && utf8(key) {
                    if let Some(slot) = ctx.keys.lookup(key) {
                        fill_val(slot, Val::Int(i), slots);
                    }
                    return Ok(());
                }
            }
        }
        if let Some([VALUE_TAG, vlen]) = rest.get(klen..klen + 2) {
            if klen < 0x80 && *vlen < 0x80 && klen + 2 + usize::from(*vlen) == rest.len() {
                let (key, value) = rest.split_at(klen);
                let value = value.get(2..).unwrap_or_default();
                if ctx.max_depth > 0 && plain_key_value(buf, key, value) {
                    if let Some(slot) = ctx.keys.lookup(key) {
                        fill_slot(slot, Some(value), slots)?;
                    }
                    return Ok(());
                }
            }
        }
    }
    key_value_general(buf, ctx, slots)
}

/// Stores a value read in place in `slot` unless it is filled (like
/// [`fill_slot`]).
#[inline(always)]
fn fill_val<'a, S: SlotsMut<'a> + ?Sized>(slot: u16, val: Val<'a>, slots: &mut S) {
    if let Some(v) = slots.missing(slot) {
        *v = val;
    }
}

/// Whether a `KeyValue` of the usual shape (`kv`: its key, then its value,
/// both short) has a UTF-8 key and a scalar value. A string value takes
/// one ASCII test over the whole `KeyValue` (its tags and one-byte lengths
/// are ASCII too), the usual case; anything else is tested part by part.
#[inline(always)]
fn plain_key_value(kv: &[u8], key: &[u8], value: &[u8]) -> bool {
    match value {
        [ANY_STRING_TAG, l, s @ ..] if *l < 0x80 && usize::from(*l) == s.len() => {
            validate::ascii(kv) || (utf8(key) && utf8(s))
        }
        _ => utf8(key) && scalar_any_value(value),
    }
}

/// [`key_value`] for any encoding: the schema check of the whole
/// `KeyValue`, then its key and value.
#[inline(never)]
fn key_value_general<'a, S: SlotsMut<'a> + ?Sized>(
    buf: &'a [u8],
    ctx: &Ctx<'_>,
    slots: &mut S,
) -> Result<(), WireError> {
    validate::message(buf, &validate::KEY_VALUE, 0, ctx.max_depth)?;
    let (key, value) = split_kv_general(buf)?;
    if let Some(slot) = key.and_then(|k| ctx.keys.lookup(k)) {
        fill_slot(slot, value, slots)?;
    }
    Ok(())
}

/// What the rules may read of a span, besides its attributes.
#[derive(Debug, Default, Clone, Copy)]
pub struct SpanInfo<'a> {
    pub kind: i32,
    pub start: u64,
    pub end: u64,
    /// Status.code: 0 unset, 1 ok, 2 error.
    pub status: i32,
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    /// bit i set when the span has an event named `event_names[i]`.
    pub events: u64,
}

/// What the rules may read of a log record, besides its attributes.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogInfo<'a> {
    pub time: u64,
    pub observed_time: u64,
    pub severity: i32,
    pub event_name: &'a [u8],
    /// The body when it is a string (for event name and JSON bodies).
    pub body_str: Option<&'a [u8]>,
    /// The body when it is a key-value list (its encoded `KeyValueList`).
    pub body_kvlist: Option<&'a [u8]>,
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
}

/// Totals of one walk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WalkStats {
    pub items: u64,
}

/// Fills `slots` from the attributes of the resources of one resource-level
/// message, best effort: this pass only reads (a resource may follow the
/// items on the wire); the in-order pass checks every byte and refuses
/// what is wrong.
fn fill_resource<'a>(rs: &'a [u8], ctx: &Ctx<'_>, slots: &mut [Val<'a>]) {
    let mut r = Reader::new(rs);
    while let Ok(Some((f, v))) = r.next_field() {
        let Wire::Bytes(res) = v else { continue };
        if f != RESOURCE_ITEMS_RESOURCE {
            continue;
        }
        let mut a = Reader::new(res);
        while let Ok(Some((f, v))) = a.next_field() {
            if let (RESOURCE_ATTRIBUTES, Wire::Bytes(kv)) = (f, v) {
                if key_value(kv, ctx, slots).is_err() {
                    return;
                }
            }
        }
    }
}

/// The schema of one signal's envelope: its resource-level, scope-level
/// and item messages.
pub(crate) struct Envelope {
    resource: &'static M,
    scope: &'static M,
}

const SPANS_ENVELOPE: Envelope = Envelope {
    resource: &validate::RESOURCE_SPANS,
    scope: &validate::SCOPE_SPANS,
};
const LOGS_ENVELOPE: Envelope = Envelope {
    resource: &validate::RESOURCE_LOGS,
    scope: &validate::SCOPE_LOGS,
};

/// Walks the envelope every OTLP export request shares
/// (request → 1: resource-level → {1: resource, 2: scope-level → 2: item})
/// and calls `on_item` with each item's bytes, its slots (all missing) and
/// its resource's values of the keys, as (slot, value) pairs in `res`
/// (`slots` holds the item's slots and the resource's). Between items only
/// the slots written are cleared.
/// Every field the walk does not hand to `on_item` is checked against the
/// schema where it stands, in wire order, so the first error found is the
/// one a whole-request check finds.
#[inline(always)]
fn walk_envelope<'a, F>(
    buf: &'a [u8],
    ctx: &Ctx<'_>,
    env: &Envelope,
    slots: &mut Vec<Val<'a>>,
    mut on_item: F,
) -> Result<WalkStats, WireError>
where
    F: FnMut(&'a [u8], &mut Written<'_, 'a>, &[(usize, Val<'a>)]) -> Result<(), WireError>,
{
    let n = ctx.keys.len();
    slots.clear();
    slots.resize(2 * n, Val::Missing);
    let (item_slots, res_slots) = slots.split_at_mut(n);
    let mut item = Written::new(item_slots);
    let mut res = Vec::new();
    let mut stats = WalkStats::default();
    let mut req = Reader::new(buf);
    while let Some((f, v)) = req.next_field()? {
        // the request message has one field; others are unknown, skipped
        if f != REQUEST_RESOURCE_ITEMS {
            continue;
        }
        // The resource may come after the items on the wire, so read it first.
        let rs = bytes(v)?;
        res.clear();
        if n > 0 {
            res_slots.fill(Val::Missing);
            fill_resource(rs, ctx, res_slots);
            let found = res_slots.iter().enumerate();
            res.extend(
                found
                    .filter(|(_, v)| !matches!(v, Val::Missing))
                    .map(|(i, v)| (i, *v)),
            );
        }
        let mut r = Reader::new(rs);
        while let Some((f, v)) = r.next_field()? {
            if f != RESOURCE_ITEMS_SCOPE_ITEMS {
                check(env.resource, f, v, ctx.max_depth)?;
                continue;
            }
            let mut scope = Reader::new(bytes(v)?);
            while let Some((f, v)) = scope.next_field()? {
                if f != SCOPE_ITEMS_ITEMS {
                    check(env.scope, f, v, ctx.max_depth)?;
                    continue;
                }
                item.clear();
                stats.items += 1;
                on_item(bytes(v)?, &mut item, &res)?;
            }
        }
    }
    Ok(stats)
}

/// Fills the item's missing slots from its resource's values (`res`: the
/// resource's filled slots and their values, none when the resource has
/// none of the keys).
#[inline(always)]
fn resource_fallback<'a>(item: &mut Written<'_, 'a>, res: &[(usize, Val<'a>)]) {
    for &(i, v) in res {
        if let Some(s) = item.missing_at(i) {
            *s = v;
        }
    }
}

/// Walks an `ExportTraceServiceRequest`. For every span, `slots` holds the
/// span's attributes that are in `keys` (falling back to its resource's),
/// and `on_span` is called. `event_names` are span event names the rules
/// match on (at most 64).
pub fn walk_traces<'a, F>(
    buf: &'a [u8],
    keys: &KeyTable,
    event_names: &[Box<[u8]>],
    max_depth: u32,
    slots: &mut Vec<Val<'a>>,
    mut on_span: F,
) -> Result<WalkStats, WireError>
where
    F: FnMut(&SpanInfo<'a>, &[Val<'a>]),
{
    let ctx = Ctx {
        keys,
        event_names,
        max_depth: max_depth.min(validate::MAX_VALUE_DEPTH),
    };
    walk_envelope(buf, &ctx, &SPANS_ENVELOPE, slots, |item, s, res| {
        let info: SpanInfo = read_item(item, &ctx, s)?;
        resource_fallback(s, res);
        on_span(&info, s);
        Ok(())
    })
}

/// What the walker reads of one OTLP item (a span, a log record): the
/// item's tag byte for attributes and its three readers, so [`read_item`] is one
/// loop for both signals, monomorphised per signal (no dynamic dispatch).
trait Item<'a>: Default {
    /// The tag of the item's `attributes` field.
    const ATTRIBUTES_TAG: u8;
    /// Reads the fields SDKs write first, in field order; returns the rest.
    fn head(buf: &'a [u8], info: &mut Self, max_depth: u32) -> Result<&'a [u8], WireError>;
    /// Reads one usual-shaped field other than an attribute; None hands the
    /// field to the general reader (which checks it whole).
    fn fast_field(
        c: &'a [u8],
        info: &mut Self,
        max_depth: u32,
    ) -> Result<Option<&'a [u8]>, WireError>;
    /// One field as the general reader gives it.
    fn field<S: SlotsMut<'a> + ?Sized>(
        f: u32,
        v: Wire<'a>,
        info: &mut Self,
        ctx: &Ctx<'_>,
        slots: &mut S,
    ) -> Result<(), WireError>;
}

/// What the readers of an item match against.
struct Ctx<'k> {
    keys: &'k KeyTable,
    /// span event names the rules match on (none for log records)
    event_names: &'k [Box<[u8]>],
    /// `receivers.max_value_depth`, capped at [`validate::MAX_VALUE_DEPTH`]
    max_depth: u32,
}

/// Reads one item. Fields with a one-byte tag and a one- or two-byte length
/// (or a short varint, a fixed64) are matched on their tag byte, which
/// settles field number and wire type in one compare; anything else (long
/// lengths, other wire types, malformed bytes) takes one step of the general
/// reader, which reads the field the same way or reports the error.
#[inline(always)]
fn read_item<'a, I: Item<'a>>(
    buf: &'a [u8],
    ctx: &Ctx<'_>,
    slots: &mut (impl SlotsMut<'a> + ?Sized),
) -> Result<I, WireError> {
    let mut info = I::default();
    let mut c = I::head(buf, &mut info, ctx.max_depth)?;
    loop {
        // attributes first: most fields of most items
        if let [t, rest @ ..] = c {
            if *t == I::ATTRIBUTES_TAG {
                if let Some((kv, tail)) = short_len(rest) {
                    key_value(kv, ctx, slots)?;
                    c = tail;
                    continue;
                }
            }
        }
        if c.is_empty() {
            return Ok(info);
        }
        if let Some(tail) = I::fast_field(c, &mut info, ctx.max_depth)? {
            c = tail;
            continue;
        }
        let mut r = Reader::new(c);
        if let Some((f, v)) = r.next_field_general()? {
            I::field(f, v, &mut info, ctx, slots)?;
        }
        c = r.buf;
    }
}

impl<'a> Item<'a> for SpanInfo<'a> {
    const ATTRIBUTES_TAG: u8 = SPAN_ATTRIBUTES_TAG;
    #[inline(always)]
    fn head(buf: &'a [u8], info: &mut Self, _: u32) -> Result<&'a [u8], WireError> {
        Ok(span_head(buf, info))
    }
    #[inline(always)]
    fn fast_field(c: &'a [u8], info: &mut Self, _: u32) -> Result<Option<&'a [u8]>, WireError> {
        Ok(span_fast_field(c, info))
    }
    #[inline(always)]
    fn field<S: SlotsMut<'a> + ?Sized>(
        f: u32,
        v: Wire<'a>,
        info: &mut Self,
        ctx: &Ctx<'_>,
        slots: &mut S,
    ) -> Result<(), WireError> {
        span_field(f, v, info, ctx, slots)
    }
}

impl<'a> Item<'a> for LogInfo<'a> {
    const ATTRIBUTES_TAG: u8 = LOG_ATTRIBUTES_TAG;
    #[inline(always)]
    fn head(buf: &'a [u8], info: &mut Self, max_depth: u32) -> Result<&'a [u8], WireError> {
        log_head(buf, info, max_depth)
    }
    #[inline(always)]
    fn fast_field(
        c: &'a [u8],
        info: &mut Self,
        max_depth: u32,
    ) -> Result<Option<&'a [u8]>, WireError> {
        log_fast_field(c, info, max_depth)
    }
    #[inline(always)]
    fn field<S: SlotsMut<'a> + ?Sized>(
        f: u32,
        v: Wire<'a>,
        info: &mut Self,
        ctx: &Ctx<'_>,
        slots: &mut S,
    ) -> Result<(), WireError> {
        log_field(f, v, info, ctx, slots)
    }
}

/// Reads one span field other than an attribute when its tag and shape
/// are the usual ones; returns the rest of the span, or None for the
/// general reader.
#[inline(always)]
fn span_fast_field<'a>(c: &'a [u8], info: &mut SpanInfo<'a>) -> Option<&'a [u8]> {
    let tail = match c {
        [SPAN_TRACE_ID_TAG, rest @ ..] => {
            let (b, tail) = short_len(rest)?;
            info.trace_id = b;
            tail
        }
        [SPAN_SPAN_ID_TAG, rest @ ..] => {
            let (b, tail) = short_len(rest)?;
            info.span_id = b;
            tail
        }
        [SPAN_PARENT_TAG, rest @ ..] => short_len(rest)?.1,
        [SPAN_TRACE_STATE_TAG | SPAN_NAME_TAG, rest @ ..] => {
            let (s, tail) = short_len(rest)?;
            if !utf8(s) {
                return None;
            }
            tail
        }
        [SPAN_KIND_TAG, k, tail @ ..] if *k < 0x80 => {
            info.kind = i32::from(*k);
            tail
        }
        [SPAN_DROPPED_ATTRIBUTES_TAG | SPAN_DROPPED_EVENTS_TAG | SPAN_DROPPED_LINKS_TAG, n, tail @ ..]
            if *n < 0x80 =>
        {
            tail
        }
        [SPAN_FLAGS_TAG_0, SPAN_FLAGS_TAG_1, rest @ ..] => rest.split_first_chunk::<4>()?.1,
        [SPAN_START_TAG, rest @ ..] => {
            let (x, tail) = rest.split_first_chunk::<8>()?;
            info.start = u64::from_le_bytes(*x);
            tail
        }
        [SPAN_END_TAG, rest @ ..] => {
            let (x, tail) = rest.split_first_chunk::<8>()?;
            info.end = u64::from_le_bytes(*x);
            tail
        }
        _ => return None,
    };
    Some(tail)
}

/// Reads the fields every SDK writes first, in field order (ids, name,
/// kind, times), each with one compare instead of the tag dispatch; returns
/// the rest of the span, from the first field that does not fit.
#[inline(always)]
fn span_head<'a>(mut c: &'a [u8], info: &mut SpanInfo<'a>) -> &'a [u8] {
    if let [SPAN_TRACE_ID_TAG, rest @ ..] = c {
        let Some((b, tail)) = short_len(rest) else {
            return c;
        };
        (info.trace_id, c) = (b, tail);
    }
    if let [SPAN_SPAN_ID_TAG, rest @ ..] = c {
        let Some((b, tail)) = short_len(rest) else {
            return c;
        };
        (info.span_id, c) = (b, tail);
    }
    while let [t @ (SPAN_TRACE_STATE_TAG | SPAN_PARENT_TAG | SPAN_NAME_TAG), rest @ ..] = c {
        let Some((s, tail)) = short_len(rest) else {
            return c;
        };
        // trace_state and name are strings: the general reader says why not
        if *t != SPAN_PARENT_TAG && !utf8(s) {
            return c;
        }
        c = tail;
    }
    if let [SPAN_KIND_TAG, k, tail @ ..] = c {
        if *k >= 0x80 {
            return c;
        }
        (info.kind, c) = (i32::from(*k), tail);
    }
    if let [SPAN_START_TAG, rest @ ..] = c {
        let Some((x, tail)) = rest.split_first_chunk::<8>() else {
            return c;
        };
        (info.start, c) = (u64::from_le_bytes(*x), tail);
    }
    if let [SPAN_END_TAG, rest @ ..] = c {
        let Some((x, tail)) = rest.split_first_chunk::<8>() else {
            return c;
        };
        (info.end, c) = (u64::from_le_bytes(*x), tail);
    }
    c
}

/// Tags of the span fields [`read_item`] matches on.
const SPAN_TRACE_ID_TAG: u8 = tag(SPAN_TRACE_ID, LEN);
const SPAN_SPAN_ID_TAG: u8 = tag(SPAN_SPAN_ID, LEN);
const SPAN_KIND_TAG: u8 = tag(SPAN_KIND, VARINT);
const SPAN_START_TAG: u8 = tag(SPAN_START_TIME, FIXED64);
const SPAN_END_TAG: u8 = tag(SPAN_END_TIME, FIXED64);
const SPAN_ATTRIBUTES_TAG: u8 = tag(SPAN_ATTRIBUTES, LEN);
/// trace_state, parent_span_id and name: never read by the rules, only
/// checked (links take the general reader, which checks them whole).
const SPAN_TRACE_STATE_TAG: u8 = tag(SPAN_TRACE_STATE, LEN);
const SPAN_PARENT_TAG: u8 = tag(SPAN_PARENT_SPAN_ID, LEN);
const SPAN_NAME_TAG: u8 = tag(SPAN_NAME, LEN);
/// Dropped counts and flags: never read by the rules either.
const SPAN_DROPPED_ATTRIBUTES_TAG: u8 = tag(SPAN_DROPPED_ATTRIBUTES, VARINT);
const SPAN_DROPPED_EVENTS_TAG: u8 = tag(SPAN_DROPPED_EVENTS, VARINT);
const SPAN_DROPPED_LINKS_TAG: u8 = tag(SPAN_DROPPED_LINKS, VARINT);
const SPAN_FLAGS_TAG_0: u8 = tag2(SPAN_FLAGS, FIXED32)[0];
const SPAN_FLAGS_TAG_1: u8 = tag2(SPAN_FLAGS, FIXED32)[1];

/// A length-delimited payload whose length (one or two bytes, the usual
/// case) starts `rest`, and what follows it; None for any other shape,
/// which the general reader then takes (and reports if malformed).
#[inline(always)]
pub fn short_len(rest: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, body) = match rest {
        [l, body @ ..] if *l < 0x80 => (usize::from(*l), body),
        [l0, l1, body @ ..] if *l1 < 0x80 => {
            (usize::from(*l0 & 0x7f) | usize::from(*l1) << 7, body)
        }
        _ => return None,
    };
    if len <= body.len() {
        Some(body.split_at(len))
    } else {
        None
    }
}

/// One span field as the general reader gives it.
#[inline(always)]
fn span_field<'a, S: SlotsMut<'a> + ?Sized>(
    f: u32,
    v: Wire<'a>,
    info: &mut SpanInfo<'a>,
    ctx: &Ctx<'_>,
    slots: &mut S,
) -> Result<(), WireError> {
    if f == SPAN_ATTRIBUTES {
        return key_value(bytes(v)?, ctx, slots);
    }
    check(&validate::SPAN, f, v, ctx.max_depth)?;
    let event_names = ctx.event_names;
    match f {
        SPAN_TRACE_ID => info.trace_id = bytes(v)?,
        SPAN_SPAN_ID => info.span_id = bytes(v)?,
        SPAN_KIND => info.kind = varint(v)? as i32,
        SPAN_START_TIME => info.start = fixed64(v)?,
        SPAN_END_TIME => info.end = fixed64(v)?,
        SPAN_EVENTS => {
            let ev = bytes(v)?;
            if !event_names.is_empty() {
                let mut er = Reader::new(ev);
                while let Some((f, v)) = er.next_field()? {
                    if f == SPAN_EVENT_NAME {
                        let name = bytes(v)?;
                        if let Some(i) = event_names.iter().position(|e| **e == *name) {
                            info.events |= 1 << i;
                        }
                    }
                }
            }
        }
        SPAN_STATUS => {
            let mut sr = Reader::new(bytes(v)?);
            while let Some((f, v)) = sr.next_field()? {
                if f == STATUS_CODE {
                    info.status = varint(v)? as i32;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Walks an `ExportLogsServiceRequest`, like [`walk_traces`].
pub fn walk_logs<'a, F>(
    buf: &'a [u8],
    keys: &KeyTable,
    max_depth: u32,
    slots: &mut Vec<Val<'a>>,
    mut on_log: F,
) -> Result<WalkStats, WireError>
where
    F: FnMut(&LogInfo<'a>, &mut Written<'_, 'a>),
{
    let ctx = Ctx {
        keys,
        event_names: &[],
        max_depth: max_depth.min(validate::MAX_VALUE_DEPTH),
    };
    walk_envelope(buf, &ctx, &LOGS_ENVELOPE, slots, |item, s, res| {
        let info: LogInfo = read_item(item, &ctx, s)?;
        resource_fallback(s, res);
        on_log(&info, s);
        Ok(())
    })
}

/// A short length-delimited string that is UTF-8 (see [`short_len`]); None
/// for any other shape or bytes that are not UTF-8, which the general
/// reader then reports.
#[inline(always)]
fn short_text(rest: &[u8]) -> Option<(&[u8], &[u8])> {
    let (s, tail) = short_len(rest)?;
    utf8(s).then_some((s, tail))
}

/// Reads one log record field other than an attribute when its tag and
/// shape are the usual ones, like [`span_fast_field`] (a malformed body is
/// an error).
#[inline(always)]
fn log_fast_field<'a>(
    c: &'a [u8],
    info: &mut LogInfo<'a>,
    max_depth: u32,
) -> Result<Option<&'a [u8]>, WireError> {
    let fast = |c: &'a [u8], info: &mut LogInfo<'a>| -> Option<(&'a [u8], Option<&'a [u8]>)> {
        Some(match c {
            [LOG_EVENT_NAME_TAG, rest @ ..] => {
                let (b, tail) = short_text(rest)?;
                info.event_name = b;
                (tail, None)
            }
            [LOG_BODY_TAG, rest @ ..] => {
                let (b, tail) = short_len(rest)?;
                (tail, Some(b))
            }
            [LOG_TRACE_ID_TAG, rest @ ..] => {
                let (b, tail) = short_len(rest)?;
                info.trace_id = b;
                (tail, None)
            }
            [LOG_SPAN_ID_TAG, rest @ ..] => {
                let (b, tail) = short_len(rest)?;
                info.span_id = b;
                (tail, None)
            }
            [LOG_SEVERITY_TEXT_TAG, rest @ ..] => (short_text(rest)?.1, None),
            [LOG_SEVERITY_TAG, k, tail @ ..] if *k < 0x80 => {
                info.severity = i32::from(*k);
                (tail, None)
            }
            [LOG_DROPPED_ATTRIBUTES_TAG, n, tail @ ..] if *n < 0x80 => (tail, None),
            [LOG_FLAGS_TAG, rest @ ..] => (rest.split_first_chunk::<4>()?.1, None),
            [LOG_TIME_TAG, rest @ ..] => {
                let (x, tail) = rest.split_first_chunk::<8>()?;
                info.time = u64::from_le_bytes(*x);
                (tail, None)
            }
            [LOG_OBSERVED_TIME_TAG, rest @ ..] => {
                let (x, tail) = rest.split_first_chunk::<8>()?;
                info.observed_time = u64::from_le_bytes(*x);
                (tail, None)
            }
            _ => return None,
        })
    };
    match fast(c, info) {
        Some((tail, Some(body))) => {
            check_body(body, max_depth)?;
            log_body(body, info).map(|()| Some(tail))
        }
        Some((tail, None)) => Ok(Some(tail)),
        None => Ok(None),
    }
}

/// Reads the fields SDKs write before a record's attributes, in field
/// order (times, severity, body), like [`span_head`].
#[inline(always)]
fn log_head<'a>(
    mut c: &'a [u8],
    info: &mut LogInfo<'a>,
    max_depth: u32,
) -> Result<&'a [u8], WireError> {
    if let [LOG_TIME_TAG, rest @ ..] = c {
        let Some((x, tail)) = rest.split_first_chunk::<8>() else {
            return Ok(c);
        };
        (info.time, c) = (u64::from_le_bytes(*x), tail);
    }
    if let [LOG_SEVERITY_TAG, k, tail @ ..] = c {
        if *k >= 0x80 {
            return Ok(c);
        }
        (info.severity, c) = (i32::from(*k), tail);
    }
    if let [LOG_SEVERITY_TEXT_TAG, rest @ ..] = c {
        let Some((s, tail)) = short_len(rest) else {
            return Ok(c);
        };
        if !utf8(s) {
            return Ok(c);
        }
        c = tail;
    }
    if let [LOG_BODY_TAG, rest @ ..] = c {
        let Some((b, tail)) = short_len(rest) else {
            return Ok(c);
        };
        check_body(b, max_depth)?;
        log_body(b, info)?;
        c = tail;
    }
    Ok(c)
}

/// Tags of the log record fields [`read_item`] matches on.
const LOG_TIME_TAG: u8 = tag(LOG_TIME, FIXED64);
const LOG_SEVERITY_TAG: u8 = tag(LOG_SEVERITY_NUMBER, VARINT);
const LOG_SEVERITY_TEXT_TAG: u8 = tag(LOG_SEVERITY_TEXT, LEN);
const LOG_BODY_TAG: u8 = tag(LOG_BODY, LEN);
const LOG_ATTRIBUTES_TAG: u8 = tag(LOG_ATTRIBUTES, LEN);
const LOG_DROPPED_ATTRIBUTES_TAG: u8 = tag(LOG_DROPPED_ATTRIBUTES, VARINT);
const LOG_FLAGS_TAG: u8 = tag(LOG_FLAGS, FIXED32);
const LOG_TRACE_ID_TAG: u8 = tag(LOG_TRACE_ID, LEN);
const LOG_SPAN_ID_TAG: u8 = tag(LOG_SPAN_ID, LEN);
const LOG_OBSERVED_TIME_TAG: u8 = tag(LOG_OBSERVED_TIME, FIXED64);
const LOG_EVENT_NAME_TAG: u8 = tag(LOG_EVENT_NAME, LEN);
const ANY_KVLIST_TAG: u8 = tag(ANY_VALUE_KVLIST, LEN);

/// Checks a log body (an `AnyValue` at level 1): a scalar in place, else
/// whole, to the depth limit.
#[inline(always)]
fn check_body(b: &[u8], max_depth: u32) -> Result<(), WireError> {
    if max_depth > 0 && scalar_any_value(b) {
        return Ok(());
    }
    check(&validate::LOG_RECORD, LOG_BODY, Wire::Bytes(b), max_depth)
}

/// Reads a log body (an `AnyValue`): a string or a key-value list, kept
/// for the event name and body fields.
#[inline(always)]
fn log_body<'a>(b: &'a [u8], info: &mut LogInfo<'a>) -> Result<(), WireError> {
    // fast path: one string or key-value list field, nothing else
    match b {
        [ANY_STRING_TAG, rest @ ..] => {
            if let Some((s, [])) = short_len(rest) {
                info.body_str = Some(s);
                return Ok(());
            }
        }
        [ANY_KVLIST_TAG, rest @ ..] => {
            if let Some((s, [])) = short_len(rest) {
                info.body_kvlist = Some(s);
                return Ok(());
            }
        }
        _ => {}
    }
    let mut br = Reader::new(b);
    while let Some((f, v)) = br.next_field()? {
        match f {
            ANY_VALUE_STRING => info.body_str = Some(bytes(v)?),
            ANY_VALUE_KVLIST => info.body_kvlist = Some(bytes(v)?),
            _ => {}
        }
    }
    Ok(())
}

/// One log record field as the general reader gives it.
#[inline(always)]
fn log_field<'a, S: SlotsMut<'a> + ?Sized>(
    f: u32,
    v: Wire<'a>,
    info: &mut LogInfo<'a>,
    ctx: &Ctx<'_>,
    slots: &mut S,
) -> Result<(), WireError> {
    if f == LOG_ATTRIBUTES {
        return key_value(bytes(v)?, ctx, slots);
    }
    check(&validate::LOG_RECORD, f, v, ctx.max_depth)?;
    match f {
        LOG_TIME => info.time = fixed64(v)?,
        LOG_SEVERITY_NUMBER => info.severity = varint(v)? as i32,
        LOG_BODY => log_body(bytes(v)?, info)?,
        LOG_TRACE_ID => info.trace_id = bytes(v)?,
        LOG_SPAN_ID => info.span_id = bytes(v)?,
        LOG_OBSERVED_TIME => info.observed_time = fixed64(v)?,
        LOG_EVENT_NAME => info.event_name = bytes(v)?,
        _ => {}
    }
    Ok(())
}

/// The top-level keys of a structured log body that name its event, in
/// order of preference: structlog's `event`, then `message` (winston, and
/// structlog's `EventRenamer("message")`), then `msg` (pino, bunyan). The
/// JSON body reader ([`super::json`]) uses the same list.
pub const BODY_EVENT_KEYS: [&[u8]; 3] = [b"event", b"message", b"msg"];

/// The rank of `key` in [`BODY_EVENT_KEYS`].
#[inline(always)]
pub fn body_event_rank(key: &[u8]) -> Option<usize> {
    // lengths 5, 7 and 3 differ: one length check, then one compare
    BODY_EVENT_KEYS.iter().position(|k| *k == key)
}

/// Picks the event name of a structured body: per key the first occurrence
/// counts, and of [`BODY_EVENT_KEYS`] the first that holds a non-empty
/// string wins. `T` is the string (borrowed bytes, or JSON text).
#[derive(Debug, Clone)]
pub struct BodyEvent<T> {
    seen: [bool; 3],
    found: [Option<T>; 3],
}

impl<T> Default for BodyEvent<T> {
    fn default() -> Self {
        BodyEvent {
            seen: [false; 3],
            found: [None, None, None],
        }
    }
}

impl<T> BodyEvent<T> {
    /// Offers the value of a top-level key of rank `rank`; `text` is the
    /// value when it is a non-empty string.
    #[inline]
    pub fn offer(&mut self, rank: usize, text: Option<T>) {
        if let (Some(seen), Some(found)) = (self.seen.get_mut(rank), self.found.get_mut(rank)) {
            if !*seen {
                *seen = true;
                *found = text;
            }
        }
    }
    /// The event name, if any key gave one.
    #[inline]
    pub fn name(self) -> Option<T> {
        self.found.into_iter().flatten().next()
    }
}

/// Reads a `KeyValueList` log body (field 1: values): fills still-missing
/// slots from its top-level entries and returns its event name (see
/// [`BodyEvent`]). Nested values are skipped by length, never walked, so any
/// nesting depth costs only its bytes.
pub fn read_kvlist_body<'a, S: SlotsMut<'a> + ?Sized>(
    buf: &'a [u8],
    keys: &KeyTable,
    slots: &mut S,
) -> Result<Option<&'a [u8]>, WireError> {
    let mut event = BodyEvent::<&'a [u8]>::default();
    let mut r = Reader::new(buf);
    while let Some((f, v)) = r.next_field()? {
        if f != KEY_VALUE_LIST_VALUES {
            continue;
        }
        let (key, value) = split_kv(bytes(v)?)?;
        let Some(key) = key else { continue };
        if let Some(slot) = keys.lookup(key) {
            fill_slot(slot, value, slots)?;
        }
        if let Some(rank) = body_event_rank(key) {
            let text = match value.map(any_value).transpose()? {
                Some(Val::Str(t)) if !t.is_empty() => Some(t),
                _ => None,
            };
            event.offer(rank, text);
        }
    }
    Ok(event.name())
}

/// Counts the spans of an `ExportTraceServiceRequest` or the log records of
/// an `ExportLogsServiceRequest` (same nesting) without reading into them:
/// what a request refused before its walk is counted as.
pub fn count_items(buf: &[u8]) -> Result<u64, WireError> {
    let mut n = 0u64;
    let mut req = Reader::new(buf);
    while let Some((f, v)) = req.next_field()? {
        if f != REQUEST_RESOURCE_ITEMS {
            continue;
        }
        let mut rs = Reader::new(bytes(v)?);
        while let Some((f, v)) = rs.next_field()? {
            if f != RESOURCE_ITEMS_SCOPE_ITEMS {
                continue;
            }
            let mut ss = Reader::new(bytes(v)?);
            while let Some((f, _)) = ss.next_field()? {
                if f == SCOPE_ITEMS_ITEMS {
                    n += 1;
                }
            }
        }
    }
    Ok(n)
}

/// Counts the data points of an `ExportMetricsServiceRequest` without
/// decoding it (for the receiver's accepted/refused counters).
pub fn count_metric_points(buf: &[u8]) -> Result<u64, WireError> {
    let mut n = 0u64;
    let mut req = Reader::new(buf);
    while let Some((f, v)) = req.next_field()? {
        if f != REQUEST_RESOURCE_ITEMS {
            continue;
        }
        let mut rm = Reader::new(bytes(v)?);
        while let Some((f, v)) = rm.next_field()? {
            if f != RESOURCE_ITEMS_SCOPE_ITEMS {
                continue;
            }
            let mut sm = Reader::new(bytes(v)?);
            while let Some((f, v)) = sm.next_field()? {
                if f != SCOPE_ITEMS_ITEMS {
                    continue;
                }
                let mut m = Reader::new(bytes(v)?);
                while let Some((f, v)) = m.next_field()? {
                    if matches!(
                        f,
                        METRIC_GAUGE
                            | METRIC_SUM
                            | METRIC_HISTOGRAM
                            | METRIC_EXPONENTIAL_HISTOGRAM
                            | METRIC_SUMMARY
                    ) {
                        let mut d = Reader::new(bytes(v)?);
                        while let Some((f, _)) = d.next_field()? {
                            if f == DATA_POINTS {
                                n += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{
        span, status, ResourceSpans, ScopeSpans, Span, Status,
    };
    use prost::Message;

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn request() -> Vec<u8> {
        let spans = (0..3)
            .map(|i| Span {
                trace_id: vec![i; 16],
                span_id: vec![i; 8],
                name: format!("span {i}"),
                kind: 2,
                start_time_unix_nano: 1_000,
                end_time_unix_nano: 1_000 + 1_000_000 * u64::from(i),
                attributes: vec![
                    kv(
                        "http.route",
                        any_value::Value::StringValue(format!("/r{i}")),
                    ),
                    kv(
                        "http.response.status_code",
                        any_value::Value::IntValue(200 + i64::from(i)),
                    ),
                    kv("ignored", any_value::Value::BoolValue(true)),
                ],
                events: vec![span::Event {
                    name: "exception".into(),
                    ..Default::default()
                }],
                status: Some(Status {
                    code: status::StatusCode::Error as i32,
                    message: "x".into(),
                }),
                ..Default::default()
            })
            .collect();
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv(
                        "service.name",
                        any_value::Value::StringValue("api".into()),
                    )],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn counts_items_without_walking_them() {
        assert_eq!(count_items(&request()).ok(), Some(3));
        assert_eq!(count_items(&[]).ok(), Some(0));
        let mut cut = request();
        cut.truncate(cut.len() - 1);
        assert!(
            count_items(&cut).is_err(),
            "a truncated request is an error"
        );
    }

    #[test]
    fn walks_spans_and_reads_only_known_keys() {
        let buf = request();
        let mut keys = KeyTable::default();
        let route = keys.slot("http.route");
        let code = keys.slot("http.response.status_code");
        let svc = keys.slot("service.name");
        let mut slots = Vec::new();
        let mut seen = Vec::new();
        let ev: Vec<Box<[u8]>> = vec![b"exception".as_slice().into()];
        let stats = walk_traces(&buf, &keys, &ev, 24, &mut slots, |info, s| {
            seen.push((
                info.kind,
                info.end - info.start,
                info.status,
                info.events,
                s[route as usize],
                s[code as usize],
                s[svc as usize],
            ));
        })
        .unwrap();
        assert_eq!(stats.items, 3);
        assert_eq!(seen[2].0, 2);
        assert_eq!(seen[2].1, 2_000_000);
        assert_eq!(seen[2].2, 2);
        assert_eq!(seen[2].3, 1);
        assert_eq!(seen[2].4, Val::Str(b"/r2"));
        assert_eq!(seen[2].5, Val::Int(202));
        assert_eq!(
            seen[2].6,
            Val::Str(b"api"),
            "resource attributes are the fallback"
        );
    }

    /// A span per attribute list, under resources with the given
    /// attributes (the spans split evenly between them).
    fn spans_under(resources: &[&[(&str, i64)]], spans: &[&[(&str, i64)]]) -> Vec<u8> {
        let attrs = |a: &[(&str, i64)]| -> Vec<KeyValue> {
            a.iter()
                .map(|(k, v)| kv(k, any_value::Value::IntValue(*v)))
                .collect()
        };
        let per = spans.len() / resources.len();
        ExportTraceServiceRequest {
            resource_spans: resources
                .iter()
                .zip(spans.chunks(per))
                .map(|(r, spans)| ResourceSpans {
                    resource: Some(Resource {
                        attributes: attrs(r),
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans: spans
                            .iter()
                            .map(|a| Span {
                                attributes: attrs(a),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        }
        .encode_to_vec()
    }

    #[test]
    fn each_span_sees_only_its_own_attributes_and_its_resource() {
        // few keys (the written slots are tracked) and more than 64 (all
        // slots cleared): slot 0, the last slot and one past 64 when there
        for n in [3usize, 70, 200] {
            let mut keys = KeyTable::default();
            let names: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
            for k in &names {
                keys.slot(k);
            }
            let (a, b, last) = (
                names[0].as_str(),
                names[n / 2].as_str(),
                names[n - 1].as_str(),
            );
            let buf = spans_under(
                &[&[(b, 7)], &[]],
                &[
                    &[(a, 1), (last, 2), ("unknown", 3)],
                    &[(b, 4), (a, 5), (a, 6)],
                    &[],
                    &[(last, 8)],
                    &[],
                    &[(b, 9)],
                ],
            );
            let mut slots = Vec::new();
            let mut seen = Vec::new();
            let idx = |k: &str| keys.lookup(k.as_bytes()).map(usize::from);
            let (ia, ib, il) = (idx(a).unwrap(), idx(b).unwrap(), idx(last).unwrap());
            walk_traces(&buf, &keys, &[], 24, &mut slots, |_, s| {
                assert_eq!(s.len(), n);
                let others = s
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| ![ia, ib, il].contains(i));
                assert!(
                    others.clone().all(|(_, v)| *v == Val::Missing),
                    "{others:?}"
                );
                seen.push([s[ia], s[ib], s[il]]);
            })
            .unwrap();
            let (m, i) = (Val::Missing, Val::Int);
            assert_eq!(
                seen,
                [
                    [i(1), i(7), i(2)],
                    [i(5), i(4), m],
                    [m, i(7), m],
                    [m, m, i(8)],
                    [m, m, m],
                    [m, i(9), m],
                ],
                "{n} keys"
            );
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let buf = request();
        let mut keys = KeyTable::default();
        keys.slot("http.route");
        let mut slots = Vec::new();
        let mut errors = 0;
        for cut in 1..buf.len() {
            let r = walk_traces(&buf[..cut], &keys, &[], 24, &mut slots, |_, _| {});
            if r.is_err() {
                errors += 1;
            }
        }
        assert!(
            errors > buf.len() / 2,
            "most truncations must be detected ({errors})"
        );
        // and garbage never panics
        let mut x = 0x9E37_79B9u32;
        for _ in 0..2000 {
            let junk: Vec<u8> = (0..64)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let mut s2 = Vec::new();
            let _ = walk_traces(&junk, &keys, &[], 24, &mut s2, |_, _| {});
            let _ = walk_logs(&junk, &keys, 24, &mut s2, |_, _| {});
            let _ = count_metric_points(&junk);
        }
    }

    #[test]
    fn fast_and_general_key_value_paths_agree() {
        let mut keys = KeyTable::default();
        let k = keys.slot("http.route");
        let long_key = "k".repeat(200);
        let lk = keys.slot(&long_key);
        fn read_kv<'a>(
            keys: &KeyTable,
            buf: &'a [u8],
            a: u16,
            b: u16,
        ) -> Result<(Val<'a>, Val<'a>), WireError> {
            let mut slots = vec![Val::Missing; keys.len()];
            let ctx = Ctx {
                keys,
                event_names: &[],
                max_depth: 24,
            };
            key_value(buf, &ctx, &mut slots).map(|_| (slots[a as usize], slots[b as usize]))
        }
        let read = |buf| read_kv(&keys, buf, k, lk);
        let any = |v: &str| [&[0x0a, v.len() as u8][..], v.as_bytes()].concat();
        // canonical: key then value
        let mut canon = vec![0x0a, 10];
        canon.extend_from_slice(b"http.route");
        canon.extend_from_slice(&[0x12, 5]);
        canon.extend_from_slice(&any("/ab"));
        assert_eq!(read(&canon), Ok((Val::Str(b"/ab"), Val::Missing)));
        // value first, then key: the general loop
        let mut swapped = vec![0x12, 5];
        swapped.extend_from_slice(&any("/ab"));
        swapped.extend_from_slice(&[0x0a, 10]);
        swapped.extend_from_slice(b"http.route");
        assert_eq!(read(&swapped), Ok((Val::Str(b"/ab"), Val::Missing)));
        // a key of 200 bytes has a two-byte length: the general loop
        let kv = KeyValue {
            key: long_key.clone(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(7)),
            }),
            ..Default::default()
        };
        let encoded = kv.encode_to_vec();
        assert_eq!(read(&encoded), Ok((Val::Missing, Val::Int(7))));
        // a truncated value is an error on both paths
        assert!(read(&canon[..canon.len() - 1]).is_err());
    }

    /// Every field sequence the general reader gives (or its error).
    fn fields(buf: &[u8], fast: bool) -> Result<Vec<(u32, String)>, WireError> {
        let mut r = Reader::new(buf);
        let mut out = Vec::new();
        loop {
            let f = if fast {
                r.next_field()?
            } else {
                r.next_field_general()?
            };
            match f {
                Some((n, w)) => out.push((n, format!("{w:?}"))),
                None => return Ok(out),
            }
        }
    }

    #[test]
    fn fast_and_general_field_and_value_readers_agree() {
        let mut rng = fastrand::Rng::with_seed(12);
        let mut inputs: Vec<Vec<u8>> = vec![request(), vec![0x0a, 0x80, 0x01]];
        for v in [0i64, 1, 127, 128, 16_383, 16_384, -1, i64::MAX] {
            let any = AnyValue {
                value: Some(any_value::Value::IntValue(v)),
            };
            inputs.push(any.encode_to_vec());
        }
        for _ in 0..20_000 {
            let len = rng.usize(0..12);
            let mut b: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            if let Some(first) = b.first_mut() {
                // mostly plausible tags: small fields, every wire type
                *first = if rng.bool() { *first & 0x7f } else { *first };
            }
            inputs.push(b);
        }
        for b in &inputs {
            assert_eq!(fields(b, true), fields(b, false), "{b:?}");
            let general = any_value_general(b).map(|v| format!("{v:?}"));
            assert_eq!(any_value(b).map(|v| format!("{v:?}")), general, "{b:?}");
        }
    }

    /// a span ([`read_item`]) read by the general field loop alone.
    fn span_general<'a>(
        buf: &'a [u8],
        keys: &KeyTable,
        ev: &[Box<[u8]>],
        slots: &mut [Val<'a>],
    ) -> Result<SpanInfo<'a>, WireError> {
        let mut info = SpanInfo::default();
        let mut r = Reader::new(buf);
        while let Some((f, v)) = r.next_field_general()? {
            span_field(
                f,
                v,
                &mut info,
                &Ctx {
                    keys,
                    event_names: ev,
                    max_depth: 24,
                },
                slots,
            )?;
        }
        Ok(info)
    }

    /// a log record ([`read_item`]) read by the general field loop alone.
    fn log_general<'a>(
        buf: &'a [u8],
        keys: &KeyTable,
        slots: &mut [Val<'a>],
    ) -> Result<LogInfo<'a>, WireError> {
        let mut info = LogInfo::default();
        let mut r = Reader::new(buf);
        while let Some((f, v)) = r.next_field_general()? {
            let ctx = Ctx {
                keys,
                event_names: &[],
                max_depth: 24,
            };
            log_field(f, v, &mut info, &ctx, slots)?;
        }
        Ok(info)
    }

    /// Real items and mutations of them (a byte changed, cut, a random
    /// tail), plus random bytes with plausible tags.
    fn item_inputs(seeds: &[Vec<u8>], rng: &mut fastrand::Rng) -> Vec<Vec<u8>> {
        let mut inputs: Vec<Vec<u8>> = seeds.to_vec();
        for _ in 0..20_000 {
            let mut b = match rng.u8(..4) {
                0 => (0..rng.usize(0..24)).map(|_| rng.u8(..)).collect(),
                _ => seeds[rng.usize(..seeds.len())].clone(),
            };
            for _ in 0..rng.usize(0..3) {
                if b.is_empty() {
                    break;
                }
                let at = rng.usize(..b.len());
                match rng.u8(..4) {
                    0 => b[at] = rng.u8(..),
                    1 => b[at] = rng.u8(..0x80) & !7 | rng.u8(..6),
                    2 => b.truncate(at),
                    _ => b
                        .splice(at..at, (0..rng.usize(1..4)).map(|_| rng.u8(..)))
                        .for_each(drop),
                }
            }
            inputs.push(b);
        }
        inputs
    }

    /// The span and log record messages inside an export request.
    fn items_of(buf: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut slots = Vec::new();
        let keys = KeyTable::default();
        let ctx = Ctx {
            keys: &keys,
            event_names: &[],
            max_depth: 24,
        };
        walk_envelope(buf, &ctx, &SPANS_ENVELOPE, &mut slots, |item, _, _| {
            out.push(item.to_vec());
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn two_byte_tags_are_what_protobuf_encoders_write() {
        for (field, wire, wt) in [
            (SPAN_FLAGS, FIXED32, prost::encoding::WireType::ThirtyTwoBit),
            (16, LEN, prost::encoding::WireType::LengthDelimited),
            (2047, VARINT, prost::encoding::WireType::Varint),
        ] {
            let mut b = Vec::new();
            prost::encoding::encode_key(field, wt, &mut b);
            assert_eq!(b, tag2(field, wire), "field {field}");
        }
    }

    #[test]
    fn fast_and_general_key_value_splits_agree() {
        let mut rng = fastrand::Rng::with_seed(9);
        let kvs: Vec<Vec<u8>> = vec![
            raw_kv("http.route", &str_any("/a")),
            raw_kv("k", &any_of(any_value::Value::IntValue(300))),
            raw_kv("", &[]),
            raw_kv(&"k".repeat(130), &str_any("v")),
            raw_kv("k", &str_any(&"v".repeat(130))),
            [&[0x0a, 1][..], b"k"].concat(),
        ];
        for b in item_inputs(&kvs, &mut rng) {
            assert_eq!(split_kv(&b), split_kv_general(&b), "{b:?}");
        }
    }

    fn test_keys() -> KeyTable {
        let mut keys = KeyTable::default();
        for k in [
            "http.route",
            "http.response.status_code",
            "ignored",
            "operation",
            "a",
        ] {
            keys.slot(k);
        }
        keys
    }

    #[test]
    fn fast_and_general_span_readers_agree() {
        let keys = test_keys();
        let ev: Vec<Box<[u8]>> = vec![b"exception".as_slice().into()];
        let mut rng = fastrand::Rng::with_seed(7);
        let mut spans = items_of(&request());
        spans.push(
            Span {
                trace_state: "k=v".into(),
                parent_span_id: vec![1; 8],
                name: "n".repeat(300),
                kind: 300,
                links: vec![Default::default()],
                flags: 0x301,
                dropped_attributes_count: 3,
                dropped_events_count: 300,
                dropped_links_count: 1,
                attributes: vec![kv("a", any_value::Value::StringValue("x".repeat(200)))],
                ..Default::default()
            }
            .encode_to_vec(),
        );
        for b in item_inputs(&spans, &mut rng) {
            let (mut s1, mut s2) = (
                vec![Val::Missing; keys.len()],
                vec![Val::Missing; keys.len()],
            );
            let fast = read_item::<SpanInfo>(
                &b,
                &Ctx {
                    keys: &keys,
                    event_names: &ev,
                    max_depth: 24,
                },
                &mut s1,
            )
            .map(|i| format!("{i:?} {s1:?}"));
            let general = span_general(&b, &keys, &ev, &mut s2).map(|i| format!("{i:?} {s2:?}"));
            assert_eq!(fast, general, "{b:?}");
        }
    }

    #[test]
    fn fast_and_general_log_readers_agree() {
        let keys = test_keys();
        let mut rng = fastrand::Rng::with_seed(8);
        let body = |v| Some(AnyValue { value: Some(v) });
        let records: Vec<Vec<u8>> = [
            LogRecord {
                time_unix_nano: 1,
                observed_time_unix_nano: 2,
                severity_number: 9,
                severity_text: "INFO".into(),
                event_name: "e".into(),
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                body: body(any_value::Value::StringValue("hello".into())),
                attributes: vec![kv("operation", any_value::Value::StringValue("x".into()))],
                ..Default::default()
            },
            LogRecord {
                severity_number: 300,
                flags: 1,
                dropped_attributes_count: 2,
                trace_id: vec![3; 16],
                body: body(any_value::Value::KvlistValue(Default::default())),
                ..Default::default()
            },
            LogRecord {
                body: body(any_value::Value::StringValue("y".repeat(20_000))),
                attributes: vec![kv("a", any_value::Value::IntValue(-1))],
                ..Default::default()
            },
        ]
        .iter()
        .map(Message::encode_to_vec)
        .collect();
        for b in item_inputs(&records, &mut rng) {
            let (mut s1, mut s2) = (
                vec![Val::Missing; keys.len()],
                vec![Val::Missing; keys.len()],
            );
            let fast = read_item::<LogInfo>(
                &b,
                &Ctx {
                    keys: &keys,
                    event_names: &[],
                    max_depth: 24,
                },
                &mut s1,
            )
            .map(|i| format!("{i:?} {s1:?}"));
            let general = log_general(&b, &keys, &mut s2).map(|i| format!("{i:?} {s2:?}"));
            assert_eq!(fast, general, "{b:?}");
        }
    }

    #[test]
    fn key_table_finds_exactly_its_keys_whatever_the_length() {
        let mut keys = KeyTable::default();
        let names: Vec<String> = (0..40)
            .map(|n| "abcdefghijklmnopqrstuvwxyz0123456789.-_ABCDEF"[..n].to_string())
            .collect();
        for n in &names {
            keys.slot(n);
        }
        for (i, n) in names.iter().enumerate() {
            assert_eq!(keys.lookup(n.as_bytes()), Some(i as u16), "{n}");
            // one byte changed anywhere: not found
            for at in 0..n.len() {
                let mut k = n.clone().into_bytes();
                k[at] ^= 0x20;
                assert_eq!(keys.lookup(&k), None, "{n} changed at {at}");
            }
        }
        assert_eq!(keys.lookup(&[b'a'; 300]), None);
    }

    #[test]
    fn walks_logs_with_body_and_event_name() {
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        event_name: "memory_operation".into(),
                        severity_number: 9,
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("{\"event\":\"x\"}".into())),
                        }),
                        attributes: vec![kv(
                            "operation",
                            any_value::Value::StringValue("store".into()),
                        )],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        let mut keys = KeyTable::default();
        let op = keys.slot("operation");
        let mut slots = Vec::new();
        let mut n = 0;
        walk_logs(&req, &keys, 24, &mut slots, |info, s| {
            n += 1;
            assert_eq!(info.event_name, b"memory_operation");
            assert_eq!(info.severity, 9);
            assert_eq!(info.body_str, Some(&b"{\"event\":\"x\"}"[..]));
            assert_eq!(s[op as usize], Val::Str(b"store"));
        })
        .unwrap();
        assert_eq!(n, 1);
    }

    /// A `KeyValue` whose value is an already-encoded `AnyValue`.
    fn raw_kv(key: &str, any: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(key.len() as u64, &mut out);
        out.extend_from_slice(key.as_bytes());
        prost::encoding::encode_key(2, prost::encoding::WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(any.len() as u64, &mut out);
        out.extend_from_slice(any);
        out
    }

    /// A `KeyValueList` of already-encoded `KeyValue`s.
    fn raw_list(kvs: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for kv in kvs {
            prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut out);
            prost::encoding::encode_varint(kv.len() as u64, &mut out);
            out.extend_from_slice(kv);
        }
        out
    }

    fn any_of(v: any_value::Value) -> Vec<u8> {
        AnyValue { value: Some(v) }.encode_to_vec()
    }

    fn str_any(s: &str) -> Vec<u8> {
        any_of(any_value::Value::StringValue(s.into()))
    }

    /// (event name, slot values) read from a map body.
    fn read_body<'a>(
        body: &'a [u8],
        keys: &KeyTable,
    ) -> Result<(Option<&'a [u8]>, Vec<Val<'a>>), WireError> {
        let mut slots = vec![Val::Missing; keys.len()];
        let ev = read_kvlist_body(body, keys, &mut slots)?;
        Ok((ev, slots))
    }

    #[test]
    fn map_body_gives_event_name_and_fields() {
        let mut keys = KeyTable::default();
        let op = keys.slot("operation");
        let user = keys.slot("user_id");
        let body = raw_list(&[
            raw_kv("event", &str_any("memory_operation")),
            raw_kv("operation", &str_any("archive")),
            raw_kv("user_id", &str_any("u1")),
            raw_kv("meta", &any_of(any_value::Value::IntValue(3))),
        ]);
        let (ev, s) = read_body(&body, &keys).unwrap();
        assert_eq!(ev, Some(&b"memory_operation"[..]));
        assert_eq!(s[op as usize], Val::Str(b"archive"));
        assert_eq!(s[user as usize], Val::Str(b"u1"));
    }

    #[test]
    fn map_body_event_key_preference_and_hostile_shapes() {
        let keys = KeyTable::default();
        let ev = |kvs: &[Vec<u8>]| {
            let body = raw_list(kvs);
            read_body(&body, &keys).map(|(e, _)| e.map(<[u8]>::to_vec))
        };
        let name = |s: &str| Ok(Some(s.as_bytes().to_vec()));
        // empty map, and a map without any event key
        assert_eq!(ev(&[]), Ok(None));
        assert_eq!(ev(&[raw_kv("operation", &str_any("x"))]), Ok(None));
        // `event` beats `message` beats `msg`, whatever their order
        let all = [
            raw_kv("msg", &str_any("c")),
            raw_kv("message", &str_any("b")),
            raw_kv("event", &str_any("a")),
        ];
        assert_eq!(ev(&all), name("a"));
        assert_eq!(ev(&all[..2]), name("b"));
        assert_eq!(ev(&all[..1]), name("c"));
        // a non-string or empty `event` names nothing: the next key does
        let int_event = raw_kv("event", &any_of(any_value::Value::IntValue(7)));
        assert_eq!(ev(std::slice::from_ref(&int_event)), Ok(None));
        assert_eq!(ev(&[int_event.clone(), all[1].clone()]), name("b"));
        assert_eq!(
            ev(&[raw_kv("event", &str_any("")), all[0].clone()]),
            name("c")
        );
        let map_event = raw_kv(
            "event",
            &any_of(any_value::Value::KvlistValue(Default::default())),
        );
        assert_eq!(ev(&[map_event]), Ok(None));
        // an entry with neither key nor value, and an `event` key without a value
        assert_eq!(ev(&[Vec::new()]), Ok(None));
        let key_only = [&[0x0a, 5][..], b"event"].concat();
        assert_eq!(ev(&[key_only]), Ok(None));
        // duplicate keys: the first occurrence counts, as for attributes
        let dup = [
            raw_kv("event", &str_any("first")),
            raw_kv("event", &str_any("second")),
        ];
        assert_eq!(ev(&dup), name("first"));
        assert_eq!(
            ev(&[int_event, raw_kv("event", &str_any("later"))]),
            Ok(None)
        );
        // a truncated body is an error, not a guess
        let body = raw_list(&all);
        let mut slots = Vec::new();
        assert!(read_kvlist_body(&body[..body.len() - 1], &keys, &mut slots).is_err());
    }

    #[test]
    fn map_body_reads_only_top_level_keys_whatever_the_nesting() {
        let mut keys = KeyTable::default();
        let op = keys.slot("operation");
        // 10 000 levels of {"event": "deep", "operation": "deep", "x": {...}}
        let mut inner = str_any("leaf");
        for _ in 0..10_000 {
            let list = raw_list(&[
                raw_kv("event", &str_any("deep")),
                raw_kv("operation", &str_any("deep")),
                raw_kv("x", &inner),
            ]);
            let mut any = Vec::new();
            prost::encoding::encode_key(6, prost::encoding::WireType::LengthDelimited, &mut any);
            prost::encoding::encode_varint(list.len() as u64, &mut any);
            any.extend_from_slice(&list);
            inner = any;
        }
        let body = raw_list(&[raw_kv("nested", &inner), raw_kv("event", &str_any("top"))]);
        let (ev, s) = read_body(&body, &keys).unwrap();
        assert_eq!(
            ev,
            Some(&b"top"[..]),
            "nested `event` keys are not the event"
        );
        assert_eq!(s[op as usize], Val::Missing, "nested keys fill no slot");
    }

    #[test]
    fn walks_logs_with_a_map_body() {
        let body =
            any_value::Value::KvlistValue(opentelemetry_proto::tonic::common::v1::KeyValueList {
                values: vec![
                    kv(
                        "event",
                        any_value::Value::StringValue("memory_operation".into()),
                    ),
                    kv("operation", any_value::Value::StringValue("archive".into())),
                ],
            });
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        body: Some(AnyValue { value: Some(body) }),
                        attributes: vec![kv(
                            "operation",
                            any_value::Value::StringValue("from-attribute".into()),
                        )],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        let mut keys = KeyTable::default();
        let op = keys.slot("operation");
        let mut slots = Vec::new();
        let mut seen = Vec::new();
        walk_logs(&req, &keys, 24, &mut slots, |info, s| {
            let kv = info.body_kvlist.expect("a kvlist body");
            let ev = read_kvlist_body(kv, &keys, s).map(|e| e.map(<[u8]>::to_vec));
            seen.push((ev, s[op as usize]));
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![(
                Ok(Some(b"memory_operation".to_vec())),
                Val::Str(b"from-attribute")
            )],
            "the record's attributes win over the body's fields, as with JSON bodies"
        );
    }
}
