//! The compiled parts of the GenAI rules the plain rule engine has no words
//! for: a label whose distinct values are capped (`max_values`, model names
//! a client chooses), and a span's cost in USD (`value: cost`) from the
//! price table, with the tokens of models it has no price for counted in
//! `geometra_sidecar_ai_unpriced_tokens_total`.

use super::ai::{PriceTable, Tokens};
use super::wire::{KeyTable, Val};
use crate::metrics::store::push_key_part;
use std::sync::{Arc, RwLock};

/// The first `max` distinct values of a label are kept; later new ones
/// become `overflow`. Shared across a reload by the rule of the same name.
pub struct ValueCap {
    pub max: usize,
    pub overflow: Box<[u8]>,
    seen: RwLock<hashbrown::HashSet<Box<[u8]>, foldhash::fast::RandomState>>,
}

impl PartialEq for ValueCap {
    /// Same cap (for rules sharing a key prefix): the values seen differ
    /// only by what arrived first.
    fn eq(&self, o: &Self) -> bool {
        self.max == o.max && self.overflow == o.overflow
    }
}

impl ValueCap {
    pub fn new(max: usize, overflow: &str) -> ValueCap {
        ValueCap {
            max,
            overflow: overflow.as_bytes().into(),
            seen: RwLock::default(),
        }
    }

    /// Whether `v` may be a label value: seen before, or a new one within the cap.
    #[inline]
    pub fn admit(&self, v: &[u8]) -> bool {
        if let Ok(s) = self.seen.read() {
            if s.contains(v) {
                return true;
            }
            if s.len() >= self.max {
                return false;
            }
        }
        let Ok(mut s) = self.seen.write() else {
            return false;
        };
        if s.contains(v) {
            return true;
        }
        if s.len() >= self.max {
            return false;
        }
        s.insert(v.into());
        true
    }
}

/// The values capped labels admitted during one request, so a model name
/// that many spans of a request carry takes the cap's lock and hash once
/// per request, not once per span. Only admissions are kept: a cap's set
/// only grows, so a value admitted stays admitted.
#[derive(Default)]
pub struct Admitted {
    /// (the cap's address, the value's range in `bytes`)
    entries: Vec<(usize, u32, u32)>,
    bytes: Vec<u8>,
}

impl Admitted {
    /// Values remembered per request at most (a linear search).
    const MAX: usize = 8;

    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes.clear();
    }

    /// [`ValueCap::admit`], answered from this request's admissions first.
    #[inline]
    pub fn admit(&mut self, cap: &ValueCap, v: &[u8]) -> bool {
        let id = std::ptr::from_ref(cap) as usize;
        for &(c, start, end) in &self.entries {
            if c == id && self.bytes.get(start as usize..end as usize) == Some(v) {
                return true;
            }
        }
        if !cap.admit(v) {
            return false;
        }
        if self.entries.len() < Self::MAX {
            let start = self.bytes.len() as u32;
            self.bytes.extend_from_slice(v);
            self.entries.push((id, start, self.bytes.len() as u32));
        }
        true
    }
}

/// Where a cost rule reads its inputs, and where unpriced tokens go.
pub struct CostSrc {
    /// the app's own cost in USD (the rule's `value_from`): wins
    pub reported: Vec<u16>,
    /// `gen_ai.response.model`, else `gen_ai.request.model`
    pub model: Vec<u16>,
    pub input: Vec<u16>,
    pub output: Vec<u16>,
    pub cache_read: Vec<u16>,
    pub cache_write: Vec<u16>,
    pub prices: Arc<PriceTable>,
    /// the family of `geometra_sidecar_ai_unpriced_tokens_total{model}`
    pub unpriced: usize,
    pub unpriced_models: Arc<ValueCap>,
}

/// Attribute keys of the token counts, current names first.
pub const INPUT_KEYS: &[&str] = &["gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"];
pub const OUTPUT_KEYS: &[&str] = &[
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
];
pub const CACHE_READ_KEYS: &[&str] = &[
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
];
pub const CACHE_WRITE_KEYS: &[&str] = &[
    "gen_ai.usage.cache_write.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
];
pub const MODEL_KEYS: &[&str] = &["gen_ai.response.model", "gen_ai.request.model"];
/// The name of the self-metric of tokens without a price.
pub const UNPRICED: &str = "geometra_sidecar_ai_unpriced_tokens_total";
/// Distinct model names `UNPRICED` keeps before `_OTHER`.
pub const UNPRICED_MODELS: usize = 100;

/// The slots of a list of keys.
pub fn slots(keys: &mut KeyTable, names: &[&str]) -> Vec<u16> {
    names.iter().map(|k| keys.slot(k)).collect()
}

/// What a span's cost is.
pub enum Cost<'a> {
    Usd(f64),
    /// no tokens, no cost: nothing to record
    None,
    /// a model without a price: its name and the tokens it used
    Unpriced(&'a [u8], f64),
    /// a value the app reported that is no cost (negative, not a number)
    Bad,
}

impl CostSrc {
    /// The cost of a span whose attributes are in `slots`.
    #[inline]
    pub fn of<'a>(&self, slots: &[Val<'a>]) -> Cost<'a> {
        if let Some(v) = super::first(slots, &self.reported) {
            return match super::number(v) {
                Some(x) if x >= 0.0 => Cost::Usd(x),
                _ => Cost::Bad,
            };
        }
        let n = |from: &[u16]| super::first(slots, from).and_then(super::number);
        let (input, output) = (n(&self.input), n(&self.output));
        if input.is_none() && output.is_none() {
            return Cost::None;
        }
        let t = Tokens {
            input: input.unwrap_or(0.0).max(0.0),
            output: output.unwrap_or(0.0).max(0.0),
            cache_read: n(&self.cache_read).unwrap_or(0.0).max(0.0),
            cache_write: n(&self.cache_write).unwrap_or(0.0).max(0.0),
        };
        let model = match super::first(slots, &self.model) {
            Some(Val::Str(m)) => m,
            _ => b"unknown",
        };
        match self.prices.find(model) {
            Some(p) => Cost::Usd(p.cost(t)),
            None => Cost::Unpriced(model, t.input + t.output),
        }
    }

    /// Appends the key of the unpriced-tokens series of `model` to `key`.
    /// `model` is UTF-8: the walk checked every string attribute of the
    /// span before the rules read it (and the store checks a new series'
    /// labels again).
    pub fn unpriced_key(
        &self,
        model: &[u8],
        max_label: usize,
        key: &mut Vec<u8>,
        admitted: &mut Admitted,
    ) {
        let ok = model.len() <= max_label && admitted.admit(&self.unpriced_models, model);
        match ok {
            true => push_key_part(key, model),
            false => push_key_part(key, &self.unpriced_models.overflow),
        }
    }
}
