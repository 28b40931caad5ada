//! Turns spans and log records into metric updates by the configured rules.
//!
//! The hot path: a request's bytes are walked once ([`wire`]), each span's
//! rule-relevant fields land in slots, every matching rule appends an update
//! (series key bytes + value) to a thread-local scratch, and only after the
//! whole request walked cleanly are the updates applied, one family lock per
//! family per request. A malformed request therefore changes nothing.

pub mod ai;
pub mod config;
pub mod cost;
pub mod fields;
pub mod json;
#[cfg(test)]
pub(crate) mod testgen;
pub mod validate;
pub mod wire;

use crate::metrics::config::StoreConfig;
use crate::metrics::store::{push_key_part, Exemplar, Family, Kind, LabelNames};
use crate::metrics::{Derived, Distinct, IdRef, Store};
use config::{DeriveConfig, Rule, RuleKind, Signal, Source, SpanKind, ValueSource};

/// [`CRule::sources`] bits.
const APP: u8 = 1;
const BROWSER: u8 = 2;

fn source_bit(s: Source) -> u8 {
    match s {
        Source::App => APP,
        Source::Browser => BROWSER,
    }
}
use std::cell::RefCell;
use std::hash::BuildHasher;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use wire::{KeyTable, LogInfo, SpanInfo, Val, WireError};

/// Why an item was skipped by a rule (counted per rule and reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum SkipReason {
    MissingLabel = 0,
    BadValue = 1,
    LabelTooLong = 2,
    InvalidUtf8 = 3,
}
pub const SKIP_REASONS: [&str; 4] = [
    "missing_label",
    "bad_value",
    "label_too_long",
    "invalid_utf8",
];

#[derive(PartialEq)]
enum LabelSrc {
    Const(Box<[u8]>),
    Dyn {
        from: Vec<u16>,
        outcome: bool,
        default: Option<Box<[u8]>>,
        /// `max_values`: later new values become the cap's overflow value
        cap: Option<Arc<cost::ValueCap>>,
    },
}

enum ValueSrc {
    One,
    Duration,
    Attr(Vec<u16>),
    Cost(Arc<cost::CostSrc>),
}

enum Target {
    Family(usize),
    Distinct(usize),
}

struct CRule {
    name: String,
    target: Target,
    /// bit per span kind; 0 = any
    kinds: u8,
    present: Vec<u16>,
    equals: Vec<(u16, Box<[u8]>)>,
    /// spans: index into the span event-name table; logs: the name itself
    span_event: Option<usize>,
    log_event: Option<Box<[u8]>>,
    labels: Vec<LabelSrc>,
    value: ValueSrc,
    /// a counter, or a histogram without negative buckets: a negative value
    /// from an attribute is refused (a counter never goes down)
    nonneg: bool,
    /// shared with the same rule of the previous rule set across a reload
    skipped: Arc<[AtomicU64; 4]>,
    /// [`APP`] and/or [`BROWSER`]: where the rule's data may come from
    sources: u8,
    /// (an earlier rule, n): that rule has the same match and its first n
    /// labels are this rule's first n labels, so when it queued a key for
    /// an item, this rule's key starts with that key's first n parts (see
    /// [`link_shared`])
    share: Option<(u8, u8)>,
    /// the index of the next rule with another match: when this rule's
    /// match fails, so does every rule up to there
    next_match: usize,
}

/// Whether two rules match the same items (so one's match result is the other's).
fn same_match(a: &CRule, b: &CRule) -> bool {
    a.kinds == b.kinds
        && a.present == b.present
        && a.equals == b.equals
        && a.span_event == b.span_event
        && a.log_event == b.log_event
}

/// How many leading labels two rules have in common.
fn common_labels(a: &[LabelSrc], b: &[LabelSrc]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The capped labels of a shared prefix take the earlier rule's sets of
/// admitted values: a copied value was admitted there, so a key this rule
/// builds itself (when that rule queued none) must be admitted there too,
/// or the metric could hold more than `max_values` values.
fn adopt_caps(labels: &mut [LabelSrc], from: &[LabelSrc]) {
    for (l, o) in labels.iter_mut().zip(from) {
        if let (LabelSrc::Dyn { cap: Some(c), .. }, LabelSrc::Dyn { cap: Some(oc), .. }) = (l, o) {
            *c = oc.clone();
        }
    }
}

/// Sets [`CRule::share`]: for each rule, the earlier rule (of the first 64,
/// a bit each in a per-item mask) with the same match whose labels start
/// with the most of this rule's leading labels (the first such on a tie):
/// `http_request_duration_seconds` reuses the method and endpoint of
/// `http_requests_total`'s key, `gen_ai_client_token_usage` the operation,
/// provider and models of `gen_ai_client_operation_duration_seconds`' key
/// (model caps and all) and adds its token type. Also sets
/// [`CRule::next_match`].
fn link_shared(rules: &mut [CRule]) {
    for i in 1..rules.len() {
        let (before, rest) = rules.split_at_mut(i);
        let r = &mut rest[0];
        r.share = None;
        if !matches!(r.target, Target::Family(_)) {
            continue;
        }
        let mut best = (0usize, 0usize);
        for (j, s) in before.iter().enumerate().take(64) {
            if !matches!(s.target, Target::Family(_)) || !same_match(s, r) {
                continue;
            }
            let n = common_labels(&s.labels, &r.labels).min(usize::from(u8::MAX));
            if n > best.1 {
                best = (j, n);
            }
        }
        if best.1 > 0 {
            r.share = Some((best.0 as u8, best.1 as u8));
            adopt_caps(&mut r.labels[..best.1], &before[best.0].labels);
        }
    }
    for i in 0..rules.len() {
        let next = (i + 1..rules.len())
            .find(|&k| !same_match(&rules[i], &rules[k]))
            .unwrap_or(rules.len());
        rules[i].next_match = next;
    }
}

/// The end of the first `parts` parts of the key starting at `start`.
#[inline]
fn prefix_end(keys: &[u8], start: usize, parts: u8) -> Option<usize> {
    let mut at = start;
    for _ in 0..parts {
        let len = keys.get(at..at + 2)?;
        at += 2 + usize::from(u16::from_le_bytes([len[0], len[1]]));
    }
    (at <= keys.len()).then_some(at)
}

/// The compiled rules and the store they write to.
pub struct Deriver {
    keys: KeyTable,
    span_events: Vec<Box<[u8]>>,
    /// the rules whose `sources` include `app` (the in-pod listeners)
    span_rules: Vec<CRule>,
    log_rules: Vec<CRule>,
    /// the rules whose `sources` include `browser` (copies sharing their
    /// skip counts with the app lists' where a rule has both)
    browser_span_rules: Vec<CRule>,
    browser_log_rules: Vec<CRule>,
    error_type: u16,
    store: Arc<Store>,
    /// the families and gauges these rules write to (also in force in the store)
    derived: Arc<Derived>,
    n_families: usize,
    n_distinct: usize,
    /// `store.max_label_value_bytes`
    max_label: usize,
}

/// Reusable per-thread buffers for one request's updates.
#[derive(Default)]
struct Scratch {
    keys: Vec<u8>,
    /// per family: (key start, key end, value, exemplar)
    ups: Vec<Vec<Up>>,
    /// per distinct-count: the ids seen (exact hash, bytes in `ids`)
    distinct: Vec<Vec<IdRef>>,
    /// the bytes of the ids seen (their fleet hash is computed under the
    /// gauge's lock, only for an id its exact set does not hold)
    ids: Vec<u8>,
    /// per rule (of the first 64): where its key for the current item starts
    starts: Vec<u32>,
    /// the request came from the browser listener: the browser rules apply
    browser: bool,
    /// capped label values admitted in this request
    admitted: cost::Admitted,
}

struct Up {
    start: u32,
    end: u32,
    value: f64,
    exemplar: Option<Exemplar>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Returns a scratch to this thread's pool (keeping its capacity).
fn give_back(sc: Scratch) {
    SCRATCH.with(|c| {
        let mut slot = c.borrow_mut();
        if slot.keys.capacity() < sc.keys.capacity() {
            *slot = sc;
        }
    });
}

/// A walked request whose updates wait to be applied (or dropped, if the
/// request is refused after all, e.g. because the forward queue is full).
pub struct Prepared {
    pub items: u64,
    scratch: Scratch,
}

/// Collects the families and gauges of a rule set, reusing the previous
/// set's where their shape is unchanged.
struct Registry<'a> {
    store: &'a Store,
    prev: Option<&'a Derived>,
    out: Derived,
}

impl Registry<'_> {
    /// The index of the family with this name (rules that make the same
    /// metric share one; validation checked they agree).
    fn family(&mut self, fam: Family) -> usize {
        if let Some(i) = self.out.families.iter().position(|f| f.name == fam.name) {
            return i;
        }
        let old = self
            .prev
            .and_then(|p| p.families.iter().find(|f| f.same_shape(&fam)));
        let f = match old {
            Some(f) => f.clone(),
            None => {
                self.store.passthrough.reserve_family(&fam.name, &fam.kind);
                self.store.passthrough.reserve([fam.name.clone()]);
                Arc::new(fam)
            }
        };
        self.out.families.push(f);
        self.out.families.len() - 1
    }

    fn distinct(&mut self, name: &str, help: &str) -> usize {
        if let Some(i) = self.out.distinct.iter().position(|d| d.name == name) {
            return i;
        }
        let old = self
            .prev
            .and_then(|p| p.distinct.iter().find(|d| d.name == name && d.help == help));
        let sk = self.store.sketch_config();
        let old = old.filter(|d| d.key == sk.key && d.precision == sk.precision);
        let d = match old {
            Some(d) => d.clone(),
            None => {
                self.store.passthrough.reserve_family(name, &Kind::Gauge);
                self.store.passthrough.reserve([name.to_string()]);
                for n in crate::metrics::sketch::family_names(name) {
                    self.store.passthrough.reserve_family(&n, &Kind::Gauge);
                    self.store.passthrough.reserve([n]);
                }
                Arc::new(self.store.new_distinct(name, help))
            }
        };
        self.out.distinct.push(d);
        self.out.distinct.len() - 1
    }
}

/// The buckets a histogram rule keeps: its own `histograms`, else `store.histograms`.
fn hist_mode(r: &Rule, st: &StoreConfig) -> crate::metrics::store::HistMode {
    let f = r.histograms.unwrap_or(st.histograms);
    crate::metrics::store::HistMode {
        classic: f.classic(),
        native: f
            .native()
            .then_some((st.native_histogram_schema, st.native_histogram_max_buckets)),
    }
}

fn kind_bit(k: SpanKind) -> u8 {
    1 << (k as u8)
}

/// The family or distinct-count gauge a rule writes to, registered in `reg`.
fn rule_target(r: &Rule, st: &StoreConfig, store: &Store, reg: &mut Registry) -> Target {
    let kind = match r.kind {
        RuleKind::DistinctCount => return Target::Distinct(reg.distinct(&r.name, &r.help)),
        RuleKind::Counter => Kind::Counter,
        RuleKind::Histogram => Kind::Histogram(r.buckets.clone()),
    };
    let names = r.labels.iter().map(|l| l.name.clone()).collect();
    let unit = if r.kind == RuleKind::Histogram && r.name.ends_with("_seconds") {
        "seconds"
    } else {
        ""
    };
    let fam = Family::new(
        &r.name,
        &r.help,
        unit,
        kind,
        LabelNames::Fixed(names),
        store.cap(),
    )
    .with_hist_mode(hist_mode(r, st))
    .with_budget(store.budget.clone());
    Target::Family(reg.family(fam))
}

/// Where each of a rule's labels comes from (attribute keys get slots in `keys`).
fn rule_labels(r: &Rule, keys: &mut KeyTable) -> Vec<LabelSrc> {
    r.labels
        .iter()
        .map(|l| match (&l.value, l.from.is_empty(), l.outcome) {
            (Some(v), true, false) => LabelSrc::Const(v.as_bytes().into()),
            _ => LabelSrc::Dyn {
                from: l.from.iter().map(|k| keys.slot(k)).collect(),
                outcome: l.outcome,
                default: l
                    .default
                    .as_ref()
                    .or(l.value.as_ref())
                    .map(|d| d.as_bytes().into()),
                cap: l.max_values.map(|m| {
                    Arc::new(cost::ValueCap::new(
                        m,
                        l.overflow.as_deref().unwrap_or("_OTHER"),
                    ))
                }),
            },
        })
        .collect()
}

/// Where a rule's value comes from: 1, the duration, or an attribute.
fn rule_value(r: &Rule, keys: &mut KeyTable) -> ValueSrc {
    match (r.kind, r.value) {
        (_, Some(ValueSource::Attribute)) | (RuleKind::DistinctCount, _) => {
            ValueSrc::Attr(r.value_from.iter().map(|k| keys.slot(k)).collect())
        }
        (RuleKind::Histogram, _) => ValueSrc::Duration,
        _ => ValueSrc::One,
    }
}

/// A rule compiled without its event name (the caller sets the span or log
/// one) and without a shared prefix (see [`link_shared`]).
fn compile_rule(
    r: &Rule,
    target: Target,
    keys: &mut KeyTable,
    skipped: Arc<[AtomicU64; 4]>,
) -> CRule {
    let labels = rule_labels(r, keys);
    let value = rule_value(r, keys);
    let m = &r.matcher;
    CRule {
        name: r.name.clone(),
        target,
        kinds: m.span_kinds.iter().fold(0u8, |m, k| m | kind_bit(*k)),
        present: m.attributes_present.iter().map(|k| keys.slot(k)).collect(),
        equals: m
            .attributes_equal
            .iter()
            .map(|(k, v)| (keys.slot(k), v.as_bytes().into()))
            .collect(),
        span_event: None,
        log_event: None,
        labels,
        value,
        nonneg: r.kind == RuleKind::Counter
            || (r.kind == RuleKind::Histogram && r.buckets.first().is_some_and(|b| *b >= 0.0)),
        skipped,
        share: None,
        next_match: 0,
        sources: r.sources.iter().fold(0, |m, s| m | source_bit(*s)),
    }
}

/// The price table of `ai.prices_file` (empty if it cannot be read now:
/// it was validated moments ago, so the file changed since).
fn prices(cfg: &DeriveConfig) -> Arc<ai::PriceTable> {
    cfg.ai.prices().unwrap_or_else(|e| {
        tracing::error!(error = %e, "price table unreadable: every model counts as unpriced");
        Arc::default()
    })
}

/// One rule compiled, with its cost inputs and its label caps shared with
/// the earlier rules of its metric (`earlier`) or the previous set's.
fn rule_of<'a>(
    r: &Rule,
    cfg: &DeriveConfig,
    reg: &mut Registry,
    keys: &mut KeyTable,
    prices: &Arc<ai::PriceTable>,
    prev: Option<&'a Deriver>,
    earlier: impl Iterator<Item = &'a CRule>,
) -> CRule {
    let target = rule_target(r, cfg.store, reg.store, reg);
    let skipped = prev_skipped(prev, &r.name, matches!(r.signal, Signal::Logs));
    let mut rule = compile_rule(r, target, keys, skipped);
    if r.value == Some(ValueSource::Cost) {
        let src = cost_src(r, keys, prices, reg, prev);
        rule.value = ValueSrc::Cost(Arc::new(src));
    }
    share_caps(&mut rule, earlier.chain(all_rules(prev)));
    rule
}

/// Every compiled rule of a deriver (none without one).
fn all_rules(d: Option<&Deriver>) -> impl Iterator<Item = &CRule> {
    d.into_iter().flat_map(|p| {
        p.span_rules
            .iter()
            .chain(&p.log_rules)
            .chain(&p.browser_span_rules)
            .chain(&p.browser_log_rules)
    })
}

/// A cost rule's inputs: its `value_from` (the app's own cost), the token
/// and model attributes, the price table, and the unpriced-tokens family.
fn cost_src(
    r: &Rule,
    keys: &mut KeyTable,
    prices: &Arc<ai::PriceTable>,
    reg: &mut Registry,
    prev: Option<&Deriver>,
) -> cost::CostSrc {
    let store = reg.store;
    let fam = Family::new(
        cost::UNPRICED,
        "Tokens of GenAI spans whose model has no price in ai.prices_file",
        "",
        Kind::Counter,
        LabelNames::Fixed(vec!["model".to_string()]),
        store.cap(),
    )
    .with_budget(store.budget.clone());
    let prev_models = prev.and_then(|p| {
        p.span_rules.iter().find_map(|x| match &x.value {
            ValueSrc::Cost(c) => Some(c.unpriced_models.clone()),
            _ => None,
        })
    });
    cost::CostSrc {
        reported: r.value_from.iter().map(|k| keys.slot(k)).collect(),
        model: cost::slots(keys, cost::MODEL_KEYS),
        input: cost::slots(keys, cost::INPUT_KEYS),
        output: cost::slots(keys, cost::OUTPUT_KEYS),
        cache_read: cost::slots(keys, cost::CACHE_READ_KEYS),
        cache_write: cost::slots(keys, cost::CACHE_WRITE_KEYS),
        prices: prices.clone(),
        unpriced: reg.family(fam),
        unpriced_models: prev_models
            .unwrap_or_else(|| Arc::new(cost::ValueCap::new(cost::UNPRICED_MODELS, "_OTHER"))),
    }
}

/// A capped label shares the values seen with the first earlier rule of
/// the same metric (the rules of one metric admit the same values) and, on
/// a reload, with the previous rule set's (so a reload does not admit
/// `max_values` more): same name, same label position, same cap.
fn share_caps<'a>(rule: &mut CRule, earlier: impl Iterator<Item = &'a CRule>) {
    let mut earlier = earlier;
    let Some(old) = earlier.find(|x| x.name == rule.name && x.labels.len() == rule.labels.len())
    else {
        return;
    };
    for (l, o) in rule.labels.iter_mut().zip(&old.labels) {
        if let (LabelSrc::Dyn { cap: Some(c), .. }, LabelSrc::Dyn { cap: Some(oc), .. }) = (l, o) {
            if **c == **oc {
                *c = oc.clone();
            }
        }
    }
}

/// A copy of a compiled rule (for a rule on both signals) with its own skip counts.
fn twin_rule(rule: &CRule, skipped: Arc<[AtomicU64; 4]>) -> CRule {
    let (labels, value) = Deriver::clone_parts(&rule.labels, &rule.value);
    CRule {
        name: rule.name.clone(),
        target: match rule.target {
            Target::Family(i) => Target::Family(i),
            Target::Distinct(i) => Target::Distinct(i),
        },
        kinds: rule.kinds,
        present: rule.present.clone(),
        equals: rule.equals.clone(),
        span_event: rule.span_event,
        log_event: rule.log_event.clone(),
        labels,
        value,
        nonneg: rule.nonneg,
        skipped,
        share: rule.share,
        next_match: rule.next_match,
        sources: rule.sources,
    }
}

/// The skip counts of the previous rule set's rule of this name and signal
/// (so they carry over a reload), else new ones.
fn prev_skipped(prev: Option<&Deriver>, name: &str, logs: bool) -> Arc<[AtomicU64; 4]> {
    let rules = prev.map(|p| match logs {
        true => [&p.log_rules, &p.browser_log_rules],
        false => [&p.span_rules, &p.browser_span_rules],
    });
    rules
        .and_then(|[a, b]| a.iter().chain(b.iter()).find(|x| x.name == name))
        .map(|x| x.skipped.clone())
        .unwrap_or_default()
}

/// The app's rules and the browser's (a rule of both sources in each list,
/// sharing its skip counts), in rule order.
fn by_source(rules: Vec<CRule>) -> (Vec<CRule>, Vec<CRule>) {
    let browser = rules
        .iter()
        .filter(|r| r.sources & BROWSER != 0)
        .map(|r| twin_rule(r, r.skipped.clone()))
        .collect();
    let mut browser: Vec<CRule> = browser;
    let mut app: Vec<CRule> = rules.into_iter().filter(|r| r.sources & APP != 0).collect();
    link_shared(&mut app);
    link_shared(&mut browser);
    (app, browser)
}

/// The index of a span event name in the table, added if new.
fn span_event_index(span_events: &mut Vec<Box<[u8]>>, name: &str) -> usize {
    let b: Box<[u8]> = name.as_bytes().into();
    match span_events.iter().position(|x| *x == b) {
        Some(i) => i,
        None => {
            span_events.push(b);
            span_events.len() - 1
        }
    }
}

/// Result of one request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub items: u64,
}

impl Deriver {
    /// Compiles the rules and puts their families in force in `store`.
    pub fn new(cfg: &DeriveConfig, store: Arc<Store>) -> Deriver {
        Deriver::compile(cfg, store, None)
    }

    /// The config's rules compiled against this deriver's store, for a
    /// reload: a family of the same shape (name, help, kind, buckets,
    /// labels) keeps its series, a changed one starts empty, a removed one
    /// is no longer derived or shown. The new families are put in force in
    /// the store; the caller swaps the deriver in.
    pub fn reload(&self, cfg: &DeriveConfig) -> Deriver {
        Deriver::compile(cfg, self.store.clone(), Some(self))
    }

    fn compile(cfg: &DeriveConfig, store: Arc<Store>, prev: Option<&Deriver>) -> Deriver {
        let mut reg = Registry {
            store: &store,
            prev: prev.map(|p| &*p.derived),
            out: Derived::default(),
        };
        let mut keys = KeyTable::default();
        let error_type = keys.slot("error.type");
        let mut span_events: Vec<Box<[u8]>> = Vec::new();
        let mut span_rules = Vec::new();
        let mut log_rules = Vec::new();
        let prices = prices(cfg);
        for r in cfg.all_rules() {
            let earlier = span_rules.iter().chain(&log_rules);
            let mut rule = rule_of(r, cfg, &mut reg, &mut keys, &prices, prev, earlier);
            let event = r.matcher.event_name.as_deref();
            // (a log rule's event name lands in the span table too)
            let span_event = event.map(|e| span_event_index(&mut span_events, e));
            let log_event: Option<Box<[u8]>> = event.map(|e| e.as_bytes().into());
            match r.signal {
                Signal::Spans => {
                    rule.span_event = span_event;
                    span_rules.push(rule);
                }
                Signal::Logs => {
                    rule.log_event = log_event;
                    log_rules.push(rule);
                }
                Signal::Any => {
                    // the same rule on both signals: compile it twice
                    let mut twin = twin_rule(&rule, prev_skipped(prev, &r.name, true));
                    twin.log_event = log_event;
                    rule.span_event = span_event;
                    span_rules.push(rule);
                    log_rules.push(twin);
                }
            }
        }
        span_events.truncate(64);
        let (span_rules, browser_span_rules) = by_source(span_rules);
        let (log_rules, browser_log_rules) = by_source(log_rules);
        let derived = Arc::new(reg.out);
        let n_families = derived.families.len();
        let n_distinct = derived.distinct.len();
        store.set_derived(derived.clone());
        Deriver {
            keys,
            span_events,
            span_rules,
            log_rules,
            browser_span_rules,
            browser_log_rules,
            error_type,
            store,
            derived,
            n_families,
            n_distinct,
            max_label: cfg.store.max_label_value_bytes,
        }
    }

    fn clone_parts(labels: &[LabelSrc], value: &ValueSrc) -> (Vec<LabelSrc>, ValueSrc) {
        let l = labels
            .iter()
            .map(|l| match l {
                LabelSrc::Const(c) => LabelSrc::Const(c.clone()),
                LabelSrc::Dyn {
                    from,
                    outcome,
                    default,
                    cap,
                } => LabelSrc::Dyn {
                    from: from.clone(),
                    outcome: *outcome,
                    default: default.clone(),
                    cap: cap.clone(),
                },
            })
            .collect();
        let v = match value {
            ValueSrc::One => ValueSrc::One,
            ValueSrc::Duration => ValueSrc::Duration,
            ValueSrc::Attr(a) => ValueSrc::Attr(a.clone()),
            ValueSrc::Cost(c) => ValueSrc::Cost(c.clone()),
        };
        (l, v)
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Per rule and reason, how many items were skipped (for /metrics);
    /// rules that share a metric (a span and a log rule) are summed.
    pub fn skipped(&self) -> Vec<(&str, &'static str, u64)> {
        let mut out: std::collections::BTreeMap<(&str, &'static str), u64> = Default::default();
        // a rule of both sources is in both lists with one set of counts
        let browser_only = self
            .browser_span_rules
            .iter()
            .chain(self.browser_log_rules.iter())
            .filter(|r| r.sources & APP == 0);
        for r in self
            .span_rules
            .iter()
            .chain(self.log_rules.iter())
            .chain(browser_only)
        {
            for (i, reason) in SKIP_REASONS.iter().enumerate() {
                let n = r.skipped[i].load(Ordering::Relaxed);
                if n > 0 {
                    *out.entry((r.name.as_str(), *reason)).or_default() += n;
                }
            }
        }
        out.into_iter().map(|((r, why), n)| (r, why, n)).collect()
    }

    /// `geometra_sidecar_derive_skipped_total`: the rules' skips and the
    /// families' UTF-8 refusals, one series per (rule, reason), read from
    /// the rule set in force at each collection.
    pub fn declare_skipped<F>(t: &crate::telemetry::SelfMetrics, current: F)
    where
        F: Fn() -> Arc<Deriver> + Send + Sync + 'static,
    {
        t.counter(
            "geometra_sidecar_derive_skipped_total",
            "Items a rule skipped (missing label, bad value, label too long, invalid UTF-8).",
            "",
            move |o| {
                let d = current();
                let mut skips: std::collections::BTreeMap<(&str, &str), u64> = Default::default();
                for (rule, reason, n) in d.skipped() {
                    *skips.entry((rule, reason)).or_default() += n;
                }
                let derived = d.store().derived();
                for f in &derived.families {
                    let n = f.invalid.load(Ordering::Relaxed);
                    if n > 0 {
                        *skips.entry((&f.name, "invalid_utf8")).or_default() += n;
                    }
                }
                for ((rule, reason), n) in skips {
                    let attrs = [
                        opentelemetry::KeyValue::new("rule", rule.to_string()),
                        opentelemetry::KeyValue::new("reason", reason.to_string()),
                    ];
                    o.observe(n, &attrs);
                }
            },
        );
    }

    /// Walks an encoded `ExportTraceServiceRequest` from the app, checking
    /// as it goes that it is valid OTLP (the walker checks what it reads,
    /// [`validate`] the fields it skips: one pass), and prepares its metric
    /// updates; nothing is applied until [`Deriver::commit`], so an invalid
    /// request moves no metric. AnyValues nest at most
    /// [`validate::DEFAULT_VALUE_DEPTH`] levels.
    pub fn prepare_traces(&self, buf: &[u8]) -> Result<Prepared, WireError> {
        self.prepare_traces_from(buf, Source::App, validate::DEFAULT_VALUE_DEPTH)
    }

    /// [`Deriver::prepare_traces`] with the rules of `source` only and
    /// AnyValues nested at most `max_depth` levels
    /// (`receivers.max_value_depth`).
    pub fn prepare_traces_from(
        &self,
        buf: &[u8],
        source: Source,
        max_depth: u32,
    ) -> Result<Prepared, WireError> {
        let mut sc = SCRATCH.with(|c| std::mem::take(&mut *c.borrow_mut()));
        self.reset(&mut sc);
        sc.browser = source == Source::Browser;
        let mut slots = Vec::new();
        let events = &self.span_events;
        let stats = wire::walk_traces(buf, &self.keys, events, max_depth, &mut slots, |info, s| {
            self.span(info, s, &mut sc);
        });
        match stats {
            Ok(stats) => Ok(Prepared {
                items: stats.items,
                scratch: sc,
            }),
            Err(e) => {
                give_back(sc);
                Err(e)
            }
        }
    }

    /// Walks an encoded `ExportLogsServiceRequest`, like [`Deriver::prepare_traces`].
    pub fn prepare_logs(&self, buf: &[u8]) -> Result<Prepared, WireError> {
        self.prepare_logs_from(buf, Source::App, validate::DEFAULT_VALUE_DEPTH)
    }

    /// [`Deriver::prepare_logs`] with the rules of `source` only, like
    /// [`Deriver::prepare_traces_from`].
    pub fn prepare_logs_from(
        &self,
        buf: &[u8],
        source: Source,
        max_depth: u32,
    ) -> Result<Prepared, WireError> {
        let mut sc = SCRATCH.with(|c| std::mem::take(&mut *c.borrow_mut()));
        self.reset(&mut sc);
        sc.browser = source == Source::Browser;
        let mut slots = Vec::new();
        let mut bad_body = false;
        let stats = wire::walk_logs(buf, &self.keys, max_depth, &mut slots, |info, s| {
            if self.log(info, s, &mut sc).is_err() {
                bad_body = true;
            }
        });
        match stats {
            Ok(_) if bad_body => {
                give_back(sc);
                Err(WireError("a log body key-value list is malformed"))
            }
            Ok(stats) => Ok(Prepared {
                items: stats.items,
                scratch: sc,
            }),
            Err(e) => {
                give_back(sc);
                Err(e)
            }
        }
    }

    /// Applies prepared updates to the store.
    pub fn commit(&self, p: Prepared) {
        let mut sc = p.scratch;
        self.apply(&mut sc);
        give_back(sc);
    }

    /// Prepares and commits at once.
    pub fn traces(&self, buf: &[u8]) -> Result<Outcome, WireError> {
        let p = self.prepare_traces(buf)?;
        let items = p.items;
        self.commit(p);
        Ok(Outcome { items })
    }

    /// Prepares and commits at once.
    pub fn logs(&self, buf: &[u8]) -> Result<Outcome, WireError> {
        let p = self.prepare_logs(buf)?;
        let items = p.items;
        self.commit(p);
        Ok(Outcome { items })
    }

    fn reset(&self, sc: &mut Scratch) {
        sc.keys.clear();
        sc.ups.resize_with(self.n_families, Vec::new);
        sc.ups.iter_mut().for_each(Vec::clear);
        sc.distinct.resize_with(self.n_distinct, Vec::new);
        sc.distinct.iter_mut().for_each(Vec::clear);
        sc.ids.clear();
        sc.admitted.clear();
        let rules = [
            &self.span_rules,
            &self.log_rules,
            &self.browser_span_rules,
            &self.browser_log_rules,
        ]
        .iter()
        .map(|r| r.len())
        .max()
        .unwrap_or(0)
        .min(64);
        sc.starts.resize(rules, 0);
    }

    fn apply(&self, sc: &mut Scratch) {
        let now = crate::base::now_secs();
        for (i, ups) in sc.ups.iter().enumerate() {
            if ups.is_empty() {
                continue;
            }
            let fam = &self.derived.families[i];
            let hist = matches!(fam.kind, Kind::Histogram(_));
            let mut g = fam.lock(now);
            for u in ups {
                let key = &sc.keys[u.start as usize..u.end as usize];
                if hist {
                    g.observe(key, u.value, u.exemplar);
                } else {
                    g.add(key, u.value);
                }
            }
        }
        for (i, hs) in sc.distinct.iter().enumerate() {
            if !hs.is_empty() {
                self.derived.distinct[i].insert(hs, &sc.ids, now);
            }
        }
    }

    #[inline]
    fn span(&self, info: &SpanInfo<'_>, slots: &[Val<'_>], sc: &mut Scratch) {
        let kind_bit = if (0..=5).contains(&info.kind) {
            1u8 << info.kind
        } else {
            0
        };
        let error = info.status == 2 || !matches!(slots[self.error_type as usize], Val::Missing);
        // rules (of the first 64) that queued a key for this span
        let mut queued = 0u64;
        let rules = match sc.browser {
            true => &self.browser_span_rules,
            false => &self.span_rules,
        };
        let mut ri = 0;
        while let Some(r) = rules.get(ri) {
            let shared = shared_with(r, queued);
            // a rule sharing a queued key has the same match: it matches;
            // the rules after it with its match fail as it does
            if shared.is_none() && !span_matches(r, info, kind_bit, slots) {
                ri = r.next_match.max(ri + 1);
                continue;
            }
            ri += 1;
            let Some(value) = self.span_value(r, info, slots, sc) else {
                continue;
            };
            let exemplar = if matches!(r.value, ValueSrc::Duration) {
                exemplar(info, value)
            } else {
                None
            };
            self.queue(
                ri - 1,
                r,
                shared,
                slots,
                error,
                value,
                exemplar,
                sc,
                &mut queued,
            );
        }
    }

    /// The value a span rule records, or None when it records nothing for
    /// this span (a distinct count queues its hash here).
    #[inline(always)]
    fn span_value(
        &self,
        r: &CRule,
        info: &SpanInfo<'_>,
        slots: &[Val<'_>],
        sc: &mut Scratch,
    ) -> Option<f64> {
        match &r.value {
            ValueSrc::One => Some(1.0),
            ValueSrc::Duration => {
                if info.end < info.start || info.start == 0 {
                    r.skipped[SkipReason::BadValue as usize].fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                Some((info.end - info.start) as f64 / 1e9)
            }
            ValueSrc::Attr(from) => self.attr_value(r, slots, from, sc),
            ValueSrc::Cost(c) => self.cost_value(r, c, slots, sc),
        }
    }

    /// A span's cost in USD; a model without a price queues its tokens to
    /// the unpriced-tokens family instead.
    #[inline(never)]
    fn cost_value(
        &self,
        r: &CRule,
        c: &cost::CostSrc,
        slots: &[Val<'_>],
        sc: &mut Scratch,
    ) -> Option<f64> {
        match c.of(slots) {
            cost::Cost::Usd(x) => Some(x),
            cost::Cost::None => None,
            cost::Cost::Bad => {
                r.skipped[SkipReason::BadValue as usize].fetch_add(1, Ordering::Relaxed);
                None
            }
            cost::Cost::Unpriced(model, tokens) => {
                let start = sc.keys.len();
                c.unpriced_key(model, self.max_label, &mut sc.keys, &mut sc.admitted);
                sc.ups[c.unpriced].push(Up {
                    start: start as u32,
                    end: sc.keys.len() as u32,
                    value: tokens,
                    exemplar: None,
                });
                None
            }
        }
    }

    /// The value of a rule that reads it from an attribute.
    #[inline(always)]
    fn attr_value(
        &self,
        r: &CRule,
        slots: &[Val<'_>],
        from: &[u16],
        sc: &mut Scratch,
    ) -> Option<f64> {
        match (&r.target, first(slots, from)) {
            (Target::Distinct(i), Some(v)) => {
                if let Some(id) = self.derived.distinct[*i].id(v, &mut sc.ids) {
                    sc.distinct[*i].push(id);
                }
                None
            }
            (_, None) => None,
            (_, Some(v)) => match number(v) {
                Some(x) if x >= 0.0 || !r.nonneg => Some(x),
                _ => {
                    r.skipped[SkipReason::BadValue as usize].fetch_add(1, Ordering::Relaxed);
                    None
                }
            },
        }
    }

    /// Queues rule `ri`'s update: its key starts with the shared prefix of
    /// an earlier rule's key when `shared` says so (the whole key, or the
    /// prefix copied and the rest of the labels pushed), else is built
    /// ([`Deriver::push`]).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn queue(
        &self,
        ri: usize,
        r: &CRule,
        shared: Option<(u8, u8)>,
        slots: &[Val<'_>],
        error: bool,
        value: f64,
        exemplar: Option<Exemplar>,
        sc: &mut Scratch,
        queued: &mut u64,
    ) {
        let Target::Family(fam) = r.target else {
            return;
        };
        let mut prefix = None;
        if let Some((j, parts)) = shared {
            let start = sc.starts[usize::from(j)];
            if let Some(end) = prefix_end(&sc.keys, start as usize, parts) {
                prefix = Some((start as usize, end, usize::from(parts)));
            }
        }
        let start = match prefix {
            Some((start, end, parts)) if parts == r.labels.len() => {
                sc.ups[fam].push(Up {
                    start: start as u32,
                    end: end as u32,
                    value,
                    exemplar,
                });
                start as u32
            }
            Some((start, end, parts)) => {
                let at = sc.keys.len();
                sc.keys.extend_from_within(start..end);
                match self.push(r, fam, at, parts, slots, error, value, exemplar, sc) {
                    Some(s) => s,
                    None => return,
                }
            }
            None => {
                let at = sc.keys.len();
                match self.push(r, fam, at, 0, slots, error, value, exemplar, sc) {
                    Some(s) => s,
                    None => return,
                }
            }
        };
        if let Some(s) = sc.starts.get_mut(ri) {
            *s = start;
            *queued |= 1 << ri;
        }
    }

    fn log<'a>(
        &self,
        info: &LogInfo<'a>,
        slots: &mut wire::Written<'_, 'a>,
        sc: &mut Scratch,
    ) -> Result<(), WireError> {
        let rules = match sc.browser {
            true => &self.browser_log_rules,
            false => &self.log_rules,
        };
        if rules.is_empty() {
            return Ok(());
        }
        // A map body (Python's logging handler given a dict, structlog's
        // ProcessorFormatter) gives fields and the event name ...
        let map_event = match info.body_kvlist {
            Some(kv) => wire::read_kvlist_body(kv, &self.keys, slots)?,
            None => None,
        };
        // ... and so does a JSON-object body (structlog's JSONRenderer).
        let json = info.body_str.and_then(|b| json::parse(b, &self.keys));
        let event_name: &[u8] = if !info.event_name.is_empty() {
            info.event_name
        } else if let Some(e) = map_event {
            e
        } else if let Some(j) = &json {
            j.event.as_deref().map(str::as_bytes).unwrap_or(b"")
        } else {
            info.body_str.unwrap_or(b"")
        };
        match &json {
            Some(j) if !j.fields.is_empty() => {
                let mut local: Vec<Val<'_>> = slots.to_vec();
                for (slot, v) in &j.fields {
                    let s = &mut local[*slot as usize];
                    if matches!(s, Val::Missing) {
                        *s = v.as_val();
                    }
                }
                self.log_rules_on(info, event_name, &local, sc);
            }
            _ => self.log_rules_on(info, event_name, slots, sc),
        }
        Ok(())
    }

    fn log_rules_on(
        &self,
        info: &LogInfo<'_>,
        event_name: &[u8],
        slots: &[Val<'_>],
        sc: &mut Scratch,
    ) {
        let error = info.severity >= 17 || !matches!(slots[self.error_type as usize], Val::Missing);
        let mut queued = 0u64;
        let rules = match sc.browser {
            true => &self.browser_log_rules,
            false => &self.log_rules,
        };
        for (ri, r) in rules.iter().enumerate() {
            let shared = shared_with(r, queued);
            if shared.is_none() {
                if let Some(e) = &r.log_event {
                    if **e != *event_name {
                        continue;
                    }
                }
                if !matches_attrs(r, slots) {
                    continue;
                }
            }
            let value = match &r.value {
                ValueSrc::One => 1.0,
                // a log record has no duration (nor a cost: spans only)
                ValueSrc::Duration | ValueSrc::Cost(_) => continue,
                ValueSrc::Attr(from) => match self.attr_value(r, slots, from, sc) {
                    Some(v) => v,
                    None => continue,
                },
            };
            self.queue(ri, r, shared, slots, error, value, None, sc, &mut queued);
        }
    }

    /// Finishes the series key of `r` for this item (begun at `start`, its
    /// first `done` labels already there) and queues the update; returns
    /// where the key starts in the scratch (None: nothing queued).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn push(
        &self,
        r: &CRule,
        fam: usize,
        start: usize,
        done: usize,
        slots: &[Val<'_>],
        error: bool,
        value: f64,
        exemplar: Option<Exemplar>,
        sc: &mut Scratch,
    ) -> Option<u32> {
        for l in &r.labels[done..] {
            if let Err(reason) = self.push_label(l, slots, error, &mut sc.keys, &mut sc.admitted) {
                sc.keys.truncate(start);
                r.skipped[reason as usize].fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
        sc.ups[fam].push(Up {
            start: start as u32,
            end: sc.keys.len() as u32,
            value,
            exemplar,
        });
        Some(start as u32)
    }

    /// Appends one label value of an item to a series key.
    #[inline(always)]
    fn push_label(
        &self,
        l: &LabelSrc,
        slots: &[Val<'_>],
        error: bool,
        key: &mut Vec<u8>,
        admitted: &mut cost::Admitted,
    ) -> Result<(), SkipReason> {
        match l {
            LabelSrc::Const(c) => push_key_part(key, c),
            LabelSrc::Dyn {
                from,
                outcome,
                default,
                cap,
            } => match first(slots, from) {
                Some(v) => {
                    let at = key.len();
                    push_val(key, v, self.max_label)?;
                    if let Some(cap) = cap {
                        if !admitted.admit(cap, &key[at + 2..]) {
                            key.truncate(at);
                            push_key_part(key, &cap.overflow);
                        }
                    }
                }
                None if *outcome => push_key_part(key, if error { b"error" } else { b"success" }),
                None => match default {
                    Some(d) => push_key_part(key, d),
                    None => return Err(SkipReason::MissingLabel),
                },
            },
        }
        Ok(())
    }
}

#[inline(always)]
fn matches_attrs(r: &CRule, slots: &[Val<'_>]) -> bool {
    for s in &r.present {
        if matches!(slots[*s as usize], Val::Missing | Val::Other) {
            return false;
        }
    }
    for (s, want) in &r.equals {
        if !val_eq(slots[*s as usize], want) {
            return false;
        }
    }
    true
}

/// Whether a span matches a rule's span kinds, events and attributes.
#[inline(always)]
fn span_matches(r: &CRule, info: &SpanInfo<'_>, kind_bit: u8, slots: &[Val<'_>]) -> bool {
    if r.kinds != 0 && r.kinds & kind_bit == 0 {
        return false;
    }
    if let Some(e) = r.span_event {
        if info.events & (1 << e) == 0 {
            return false;
        }
    }
    matches_attrs(r, slots)
}

/// `r.share`, when the rule it shares with queued a key for this item.
#[inline(always)]
fn shared_with(r: &CRule, queued: u64) -> Option<(u8, u8)> {
    r.share.filter(|(j, _)| queued & (1u64 << (j & 63)) != 0)
}

/// A histogram exemplar of a span (None without valid ids).
#[inline(always)]
fn exemplar(info: &SpanInfo<'_>, value: f64) -> Option<Exemplar> {
    let mut e = Exemplar {
        time: info.end,
        value,
        ..Default::default()
    };
    if info.trace_id.len() == 16 && info.span_id.len() == 8 {
        e.trace_id.copy_from_slice(info.trace_id);
        e.span_id.copy_from_slice(info.span_id);
        Some(e)
    } else {
        None
    }
}

#[inline]
fn first<'a>(slots: &[Val<'a>], from: &[u16]) -> Option<Val<'a>> {
    from.iter()
        .map(|s| slots[*s as usize])
        .find(|v| !matches!(v, Val::Missing | Val::Other))
}

fn val_eq(v: Val<'_>, want: &[u8]) -> bool {
    match v {
        Val::Str(s) => s == want,
        Val::Int(i) => itoa::Buffer::new().format(i).as_bytes() == want,
        Val::Bool(b) => (if b { &b"true"[..] } else { b"false" }) == want,
        Val::Double(d) => format!("{d}").as_bytes() == want,
        Val::Missing | Val::Other => false,
    }
}

fn number(v: Val<'_>) -> Option<f64> {
    match v {
        Val::Int(i) => Some(i as f64),
        Val::Double(d) if d.is_finite() => Some(d),
        Val::Str(s) => std::str::from_utf8(s)
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite()),
        _ => None,
    }
}

#[inline]
fn push_val(key: &mut Vec<u8>, v: Val<'_>, max_label: usize) -> Result<(), SkipReason> {
    match v {
        Val::Str(s) => {
            if s.len() > max_label {
                return Err(SkipReason::LabelTooLong);
            }
            push_key_part(key, s);
        }
        Val::Int(i) => push_key_part(key, itoa::Buffer::new().format(i).as_bytes()),
        Val::Bool(b) => push_key_part(key, if b { b"true" } else { b"false" }),
        Val::Double(d) => {
            let at = key.len();
            key.extend_from_slice(&[0, 0]);
            let _ = write!(key, "{d}");
            let len = (key.len() - at - 2) as u16;
            key[at..at + 2].copy_from_slice(&len.to_le_bytes());
        }
        Val::Missing | Val::Other => return Err(SkipReason::MissingLabel),
    }
    Ok(())
}

impl Distinct {
    /// An id for [`Distinct::insert`] (ids are never stored): its exact
    /// set's hash (per-process key) and its UTF-8 bytes (an integer as its
    /// decimal digits) appended to `ids`, from which the sketch's fleet hash
    /// is computed when needed.
    #[inline]
    pub fn id(&self, v: Val<'_>, ids: &mut Vec<u8>) -> Option<IdRef> {
        let mut b = itoa::Buffer::new();
        let bytes = match v {
            Val::Str(s) if !s.is_empty() => s,
            Val::Int(i) => b.format(i).as_bytes(),
            _ => return None,
        };
        let start = u32::try_from(ids.len()).ok()?;
        ids.extend_from_slice(bytes);
        let end = u32::try_from(ids.len()).ok()?;
        Some(IdRef {
            exact: self.hasher.hash_one(bytes),
            start,
            end,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::config::PassthroughConfig;
    use opentelemetry_proto::tonic::common::v1::{
        any_value::Value, AnyValue, KeyValue, KeyValueList,
    };
    use opentelemetry_proto::tonic::logs::v1::LogRecord;

    /// The sections a deriver and its store are built from, read as a
    /// config file holds them (the embedded rules unless `rules:` is given)
    /// and validated as the config loader validates them.
    #[derive(serde::Deserialize)]
    #[serde(default)]
    struct Config {
        rules: Vec<Rule>,
        extra_rules: Vec<Rule>,
        store: StoreConfig,
        passthrough: PassthroughConfig,
        ai: ai::AiConfig,
    }

    impl Default for Config {
        fn default() -> Self {
            Config {
                rules: config::default_rules(),
                extra_rules: Vec::new(),
                store: StoreConfig::default(),
                passthrough: PassthroughConfig::default(),
                ai: ai::AiConfig::default(),
            }
        }
    }

    impl Config {
        fn from_yaml(text: &str, origin: &str) -> Result<Config, String> {
            let c: Config = serde_yaml_ng::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
            c.store.validate().map_err(|e| e.0)?;
            config::validate_rules(&c.rules, &c.extra_rules, c.store.histograms)
                .map_err(|e| e.0)?;
            c.ai.validate().map_err(|e| e.0)?;
            Ok(c)
        }

        fn derive(&self) -> DeriveConfig<'_> {
            DeriveConfig {
                rules: &self.rules,
                extra_rules: &self.extra_rules,
                store: &self.store,
                ai: &self.ai,
            }
        }
    }

    /// The deriver the binary builds from those sections.
    fn new(cfg: &Config) -> Deriver {
        let store = Arc::new(Store::new(&cfg.store, &cfg.passthrough));
        Deriver::new(&cfg.derive(), store)
    }

    fn kv(k: &str, v: Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }
    fn st(v: &str) -> Value {
        Value::StringValue(v.into())
    }
    fn map(pairs: &[(&str, Value)]) -> Option<AnyValue> {
        let values = pairs.iter().map(|(k, v)| kv(k, v.clone())).collect();
        Some(AnyValue {
            value: Some(Value::KvlistValue(KeyValueList { values })),
        })
    }
    use super::testgen::log_request as request;
    /// The `memory_operations_total` lines of /metrics after `records`.
    fn memory_ops(records: Vec<LogRecord>) -> Vec<String> {
        let d = new(&Config::default());
        d.logs(&request(records)).expect("walk");
        let text = crate::metrics::encode::render(d.store(), &[], false);
        text.lines()
            .filter(|l| l.starts_with("memory_operations_total{"))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_distinct_count_exposes_its_sketch_registers() {
        let d = new(&Config::default());
        let rec = |id: Value| LogRecord {
            attributes: vec![kv("user_id", id)],
            ..Default::default()
        };
        let ids = [st("alice"), Value::IntValue(42), st("alice")];
        d.logs(&request(ids.into_iter().map(rec).collect()))
            .expect("walk");
        let text = crate::metrics::encode::render(d.store(), &[], false);
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("active_users"))
            .collect();
        let h = crate::metrics::sketch::FleetHash::new(&crate::metrics::sketch::DEFAULT_KEY);
        let mut want: Vec<String> = [&b"alice"[..], b"42"]
            .iter()
            .map(|id| crate::metrics::sketch::register_rank(h.hash(id), 10))
            .map(|(reg, rank)| format!("active_users_sketch{{register=\"{reg}\"}} {rank}"))
            .collect();
        want.sort();
        want.dedup();
        want.insert(0, "active_users 2".into());
        want.push("active_users_sketch_registers 1024".into());
        assert_eq!(lines, want, "{text}");
        let om = crate::metrics::encode::render(d.store(), &[], true);
        assert!(om.contains("# TYPE active_users_sketch gauge\n"), "{om}");
        assert!(om.contains(&want[1]), "{om}");
        let snap = d.store().snapshot(vec![]);
        let pb = crate::metrics::encode::encode(&snap, crate::metrics::encode::Format::Protobuf);
        let has = |n: &[u8]| pb.windows(n.len()).any(|w| w == n);
        assert!(has(b"active_users_sketch_registers") && has(b"register"));
    }

    #[test]
    fn a_reload_keeps_the_distinct_gauge_unless_key_or_precision_change() {
        let d = new(&Config::default());
        let gauge = |d: &Deriver| d.store().derived().distinct[0].clone();
        let first = gauge(&d);
        let same = Config::from_yaml("store:\n  max_active_users: 7\n", "t").unwrap();
        d.store().set_limits(&same.store);
        let d = d.reload(&same.derive());
        assert!(
            Arc::ptr_eq(&first, &gauge(&d)),
            "same key and precision: kept"
        );
        let p12 = Config::from_yaml("store:\n  distinct_sketch_precision: 12\n", "t").unwrap();
        d.store().set_limits(&p12.store);
        let d = d.reload(&p12.derive());
        let second = gauge(&d);
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!((second.precision, second.registers(0).len()), (12, 4096));
        let mut key = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut key, b"ffeeddccbbaa99887766554433221100\n").unwrap();
        let yaml = format!(
            "store:\n  distinct_sketch_precision: 12\n  distinct_key_file: {}\n",
            key.path().display()
        );
        let keyed = Config::from_yaml(&yaml, "t").unwrap();
        d.store().set_limits(&keyed.store);
        let d = d.reload(&keyed.derive());
        assert_eq!(gauge(&d).key[0], 0xff);
        assert!(!Arc::ptr_eq(&second, &gauge(&d)));
    }

    #[test]
    fn a_histogram_rule_keeps_classic_native_or_both_buckets() {
        let yaml = |store: &str, rule: &str| {
            format!(
                "store:\n  histograms: {store}\nextra_rules:\n- name: x_seconds\n  kind: histogram\n  \
                 signal: logs\n  match: {{event_name: e}}\n  value: attribute\n  value_from: [v]\n  \
                 buckets: [1, 2]\n{rule}"
            )
        };
        let rec = |v: f64| LogRecord {
            event_name: "e".into(),
            attributes: vec![kv("v", Value::DoubleValue(v))],
            ..Default::default()
        };
        let family = |text: String| {
            let cfg = Config::from_yaml(&text, "test").expect("config");
            let d = new(&cfg);
            d.logs(&request(vec![rec(0.5), rec(1.5), rec(3.0)]))
                .expect("walk");
            let snap = d.store().snapshot(Vec::new());
            let fam = snap.families.into_iter().find(|f| f.name == "x_seconds");
            fam.expect("x_seconds")
        };
        use crate::metrics::snapshot::{Family, Histogram, Point};
        fn point(fam: &Family) -> Histogram<'_> {
            match fam.series.first().map(|s| s.point) {
                Some(Point::Histogram(h)) => fam.histogram(h),
                other => panic!("no histogram: {other:?}"),
            }
        }
        let f = family(yaml("classic", ""));
        let classic = point(&f);
        assert!(classic.native.is_none());
        assert_eq!(classic.classic.map(|c| c.counts), Some(&[1, 1, 1][..]));
        let f = family(yaml("native", "  histograms: both\n"));
        let both = point(&f);
        assert_eq!((both.count, both.sum), (3, 5.0));
        assert_eq!(both.classic.map(|c| c.counts), Some(&[1, 1, 1][..]));
        let n = both.native.expect("native buckets");
        // schema 3: 0.5 is key -8, 1.5 key 5 (2^(4/8) < 1.5 <= 2^(5/8)), 3 key 13
        assert_eq!((n.schema, n.zero_count, n.positive.offset), (3, 0, -8));
        let at = |k: i32| n.positive.counts.get((k + 8) as usize).copied();
        assert_eq!((at(-8), at(5), at(13)), (Some(1), Some(1), Some(1)));
        assert_eq!(n.positive.counts.iter().sum::<u64>(), 3);
        let f = family(yaml("native", ""));
        let native = point(&f);
        assert!(native.classic.is_none() && native.native.is_some());
    }

    #[test]
    fn map_bodies_count_like_json_bodies() {
        let body = |b| LogRecord {
            body: b,
            severity_number: 9,
            ..Default::default()
        };
        let json = |s: &str| Some(AnyValue { value: Some(st(s)) });
        let records = |m: bool| {
            let b = |pairs: &[(&str, Value)], j: &str| body(if m { map(pairs) } else { json(j) });
            vec![
                b(
                    &[
                        ("event", st("memory_operation")),
                        ("operation", st("archive")),
                        ("user_id", st("u1")),
                    ],
                    r#"{"event": "memory_operation", "operation": "archive", "user_id": "u1"}"#,
                ),
                b(
                    &[
                        ("operation", st("store")),
                        ("status", st("failed")),
                        ("message", st("memory_operation")),
                    ],
                    r#"{"operation": "store", "status": "failed", "message": "memory_operation"}"#,
                ),
                b(
                    &[("msg", st("memory_operation"))],
                    r#"{"msg": "memory_operation"}"#,
                ),
                b(
                    &[
                        ("event", st("chat_interaction")),
                        ("operation", st("store")),
                    ],
                    r#"{"event": "chat_interaction", "operation": "store"}"#,
                ),
                b(
                    &[("event", Value::IntValue(1)), ("operation", st("store"))],
                    r#"{"event": 1, "operation": "store"}"#,
                ),
                b(&[], "{}"),
            ]
        };
        let want = [
            r#"memory_operations_total{operation="archive",status="success"} 1"#,
            r#"memory_operations_total{operation="store",status="failed"} 1"#,
            r#"memory_operations_total{operation="unknown",status="success"} 1"#,
        ];
        let mut got = memory_ops(records(true));
        got.sort();
        assert_eq!(got, want, "map bodies");
        let mut got = memory_ops(records(false));
        got.sort();
        assert_eq!(got, want, "JSON bodies");
    }

    #[test]
    fn rules_with_the_same_match_share_a_key_prefix() {
        let d = new(&Config::default());
        let share = |name: &str| {
            let r = d.span_rules.iter().find(|r| r.name == name);
            r.and_then(|r| r.share)
        };
        // http_requests_total and ai_requests_total are rules 0 and 2
        assert_eq!(share("http_request_duration_seconds"), Some((0, 2)));
        assert_eq!(share("ai_request_duration_seconds"), Some((2, 1)));
        // type copied, then its token type (a constant) pushed
        assert_eq!(share("ai_tokens_total"), Some((2, 1)));
        assert_eq!(share("http_requests_total"), None);
        // operation, provider and both capped models from the duration's key
        let at = |name: &str| d.span_rules.iter().position(|r| r.name == name);
        let duration = at("gen_ai_client_operation_duration_seconds").expect("rule");
        assert_eq!(
            share("gen_ai_client_token_usage"),
            Some((duration as u8, 4))
        );
        // ... and admits its own keys' models into the duration's caps
        let cap = |i: usize, l: usize| match &d.span_rules[i].labels[l] {
            LabelSrc::Dyn { cap: Some(c), .. } => c.clone(),
            _ => panic!("rule {i} label {l} is not capped"),
        };
        let tokens = at("gen_ai_client_token_usage").expect("rule");
        assert!(Arc::ptr_eq(&cap(tokens, 2), &cap(duration, 2)));
        assert!(Arc::ptr_eq(&cap(tokens, 3), &cap(duration, 3)));
        // the rules after a failed match with the same match are passed over
        let first = at("ai_requests_total").expect("rule");
        assert!(d.span_rules[first].next_match > duration);
        let mut keys = Vec::new();
        for v in [&b"GET"[..], b"", b"/x"] {
            push_key_part(&mut keys, v);
        }
        assert_eq!(prefix_end(&keys, 0, 2), Some(7));
        assert_eq!(prefix_end(&keys, 0, 3), Some(11));
        assert_eq!(prefix_end(&keys, 0, 4), None);
        assert_eq!(prefix_end(&keys, 5, 9), None);
    }

    #[test]
    fn a_sharing_rule_counts_when_the_longer_key_is_skipped() {
        // b's key is a prefix of a's; a's status is too long for a label
        let rule = |name: &str, labels: &str| {
            format!(
                "- name: {name}\n  kind: counter\n  signal: logs\n  match: {{event_name: e}}\n  \
                 labels:\n{labels}"
            )
        };
        let op = "  - {name: op, from: [op]}\n";
        let st = "  - {name: st, from: [st]}\n";
        let yaml = format!(
            "store:\n  max_label_value_bytes: 8\nextra_rules:\n{}{}",
            rule("a_total", &format!("{op}{st}")),
            rule("b_total", op)
        );
        let cfg = Config::from_yaml(&yaml, "test").expect("config");
        let d = new(&cfg);
        let rec = |st: &str| LogRecord {
            event_name: "e".into(),
            attributes: vec![
                kv("op", Value::StringValue("put".into())),
                kv("st", Value::StringValue(st.into())),
            ],
            ..Default::default()
        };
        d.logs(&request(vec![rec("ok"), rec("far-too-long"), rec("ok")]))
            .expect("walk");
        let text = crate::metrics::encode::render(d.store(), &[], false);
        let mut got: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("a_total{") || l.starts_with("b_total{"))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [r#"a_total{op="put",st="ok"} 2"#, r#"b_total{op="put"} 3"#]
        );
        let skipped = d.skipped();
        assert_eq!(skipped, [("a_total", "label_too_long", 1)]);
    }

    #[test]
    fn event_name_field_wins_over_a_map_body() {
        let r = |event_name: &str, sev: i32| LogRecord {
            event_name: event_name.into(),
            severity_number: sev,
            body: map(&[
                ("event", st("chat_interaction")),
                ("operation", st("archive")),
            ]),
            ..Default::default()
        };
        let got = memory_ops(vec![r("memory_operation", 17), r("", 9)]);
        assert_eq!(
            got,
            [r#"memory_operations_total{operation="archive",status="error"} 1"#]
        );
    }

    #[test]
    fn a_malformed_map_body_refuses_the_request() {
        let d = new(&Config::default());
        let good = request(vec![LogRecord {
            body: map(&[("event", st("memory_operation"))]),
            ..Default::default()
        }]);
        // the event string claims one byte more than its KeyValue holds:
        // every enclosing length is right, only the map body is malformed
        let mut bad = good.clone();
        let at = bad
            .windows(16)
            .position(|w| w == b"memory_operation")
            .expect("body");
        bad[at - 1] += 1;
        assert!(d.logs(&good).is_ok());
        assert!(d.logs(&bad).is_err());
        let text = crate::metrics::encode::render(d.store(), &[], false);
        let n = text
            .lines()
            .filter(|l| l.starts_with("memory_operations_total{"))
            .count();
        assert_eq!(n, 1, "the refused request counted nothing");
    }
}
