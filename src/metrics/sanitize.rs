//! The one validation step between what clients send and what the store
//! holds, so that whatever was accepted, both exposition formats (text 0.0.4
//! and OpenMetrics 1.0) parse: metric names and label keys sanitised per the
//! OpenTelemetry-to-Prometheus compatibility spec (invalid characters to
//! `_`, leading digits and underscores prefixed, reserved keys renamed),
//! the names each family writes in either format (for clash checks), and
//! values checked per metric type. It runs at ingest, when a pass-through
//! family or series is created or a point arrives, so scraping stays cheap.

/// Why a pass-through point was dropped (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Drop {
    UnsupportedType = 0,
    NameClash = 1,
    BadPoint = 2,
    InvalidName = 3,
    FamilyLimit = 4,
    BadValue = 5,
    InvalidHistogram = 6,
    LabelTooLong = 7,
    TooManyLabels = 8,
    NameTooLong = 9,
}

pub const DROP_REASONS: [&str; 10] = [
    "unsupported_type",
    "name_clash",
    "bad_point",
    "invalid_name",
    "family_limit",
    "bad_value",
    "invalid_histogram",
    "label_too_long",
    "too_many_labels",
    "name_too_long",
];

/// Most labels on one pass-through series (attributes, scope and resource
/// labels together); a point with more is dropped as `too_many_labels`.
pub const MAX_LABELS: usize = 64;
/// Most explicit bounds of a pass-through histogram point.
pub const MAX_BUCKETS: usize = 128;
/// HELP texts are cut to this many bytes (at a character boundary).
pub const MAX_HELP_BYTES: usize = 1024;

/// The families the sidecar writes itself (name, kind): app metrics may not
/// take their names. `otelcol_` and `geometra_sidecar_` are reserved whole.
pub const OWN_FAMILIES: [(&str, OwnKind); 4] = [
    ("process_cpu_seconds_total", OwnKind::Counter),
    ("process_resident_memory_bytes", OwnKind::Gauge),
    ("process_start_time_seconds", OwnKind::Gauge),
    ("target_info", OwnKind::Gauge),
];
pub const OWN_PREFIXES: [&str; 2] = ["otelcol_", "geometra_sidecar_"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnKind {
    Counter,
    Gauge,
}

/// Prometheus unit words for UCUM units (compatibility spec table).
fn unit_word(u: &str) -> Option<&'static str> {
    Some(match u {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        _ => return None,
    })
}

fn per_word(u: &str) -> Option<&'static str> {
    Some(match u {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        _ => return None,
    })
}

/// Invalid characters to `_`, runs of `_` collapsed (`colon`: keep `:`).
fn sanitize(s: &str, colon: bool, out: &mut String) {
    let mut last_us = false;
    for c in s.chars() {
        let ok = c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':');
        let c = if ok { c } else { '_' };
        if c == '_' && last_us {
            continue;
        }
        last_us = c == '_';
        out.push(c);
    }
}

/// The Prometheus unit suffix of an OTLP unit ("" for none).
pub fn unit_suffix(unit: &str, gauge: bool) -> String {
    // annotations in braces carry no unit
    let mut u = String::new();
    let mut depth = 0;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = (depth - 1).max(0),
            c if depth == 0 => u.push(c),
            _ => {}
        }
    }
    let u = u.trim();
    if u.is_empty() {
        return String::new();
    }
    if u == "1" {
        return if gauge { "ratio".into() } else { String::new() };
    }
    let word = match u.split_once('/') {
        Some((a, b)) => {
            let a = unit_word(a).unwrap_or(a);
            let b = per_word(b).or_else(|| unit_word(b)).unwrap_or(b);
            format!("{a}_per_{b}")
        }
        None => unit_word(u).unwrap_or(u).to_string(),
    };
    let mut out = String::new();
    sanitize(&word, false, &mut out);
    out.trim_matches('_').to_string()
}

/// The Prometheus name of an OTLP metric; None when nothing of the name
/// survives sanitising (`""`, `"!!!"`, `"___"`).
pub fn prom_name(name: &str, unit: &str, gauge: bool, counter: bool) -> Option<String> {
    let mut n = String::new();
    sanitize(name, true, &mut n);
    if !n.chars().any(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    if n.starts_with(|c: char| c.is_ascii_digit()) {
        n.insert(0, '_');
    }
    let mut base = n.trim_end_matches('_').to_string();
    if counter {
        if let Some(b) = base.strip_suffix("_total") {
            base = b.to_string();
        }
    }
    let suffix = unit_suffix(unit, gauge);
    if !suffix.is_empty() && !base.ends_with(&format!("_{suffix}")) && base != suffix {
        base.push('_');
        base.push_str(&suffix);
    }
    if counter {
        base.push_str("_total");
    }
    Some(base)
}

/// Whether a metric name needed more than the usual `.` to `_`.
pub fn name_was_mangled(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_digit())
        || name
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':')))
}

/// Label keys a series may not use as they are: `le` (histograms),
/// `quantile` (summaries) and the overflow series' marker.
const RESERVED_KEYS: [&str; 3] = ["le", "quantile", "otel_metric_overflow"];

/// The Prometheus label name of an attribute key, and whether it was
/// renamed beyond the usual `.` to `_`: invalid characters to `_`; a
/// leading digit, `_` (so `__name__` and every `__` key) or an empty key
/// get the `key` prefix, as do the reserved `le`, `quantile` and
/// `otel_metric_overflow`.
pub fn label_name(k: &str) -> (String, bool) {
    let mut out = String::with_capacity(k.len() + 4);
    let mut renamed = false;
    for c in k.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        } else {
            renamed |= c != '.';
            out.push('_');
        }
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
        renamed = true;
    } else if out.starts_with('_') {
        out.insert_str(0, "key");
        renamed = true;
    } else if RESERVED_KEYS.contains(&out.as_str()) {
        out.insert_str(0, "key_");
        renamed = true;
    }
    (out, renamed)
}

/// Every sample or family name a family writes in either format: the clash
/// check refuses a new family sharing one with another.
pub fn family_names(name: &str, counter: bool, histogram: bool) -> Vec<String> {
    let mut out = vec![name.to_string()];
    if counter {
        let base = name.strip_suffix("_total").unwrap_or(name);
        out.push(base.to_string());
        out.push(format!("{base}_total"));
        out.push(format!("{base}_created"));
    }
    if histogram {
        for s in ["_bucket", "_count", "_sum", "_created"] {
            out.push(format!("{name}{s}"));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// A counter's value: finite and not negative.
pub fn counter_value_ok(v: f64) -> bool {
    v.is_finite() && v >= 0.0
}

/// Checks a pass-through histogram point: finite, strictly ascending
/// bounds (at most `MAX_BUCKETS`), one count per bucket, `count` equal to
/// their sum (no wrap past 2^64), a finite sum, not negative unless a
/// bucket is (OpenMetrics treats `_sum` as a counter).
pub fn check_histogram(bounds: &[f64], counts: &[u64], count: u64, sum: f64) -> Result<(), Drop> {
    let sorted = bounds.windows(2).all(|w| w[0] < w[1]);
    if bounds.len() > MAX_BUCKETS
        || !sorted
        || bounds.iter().any(|b| !b.is_finite())
        || counts.len() != bounds.len() + 1
    {
        return Err(Drop::InvalidHistogram);
    }
    let total = counts.iter().try_fold(0u64, |a, b| a.checked_add(*b));
    if total != Some(count) || !sum.is_finite() {
        return Err(Drop::InvalidHistogram);
    }
    let negative_buckets = bounds.first().is_some_and(|b| *b < 0.0);
    if sum < 0.0 && !negative_buckets {
        return Err(Drop::InvalidHistogram);
    }
    Ok(())
}

/// Most buckets on one side of a pass-through exponential histogram point
/// (the SDKs' default is 160; a wider point is reduced to
/// `store.native_histogram_max_buckets` after this bound on what is copied).
pub const MAX_EXP_BUCKETS: usize = 16_384;

/// Checks an OTLP exponential histogram point: bounded sides, counts that
/// add up to `count` (zero bucket included), a finite sum.
pub fn check_exp_histogram(
    pos: &[u64],
    neg: &[u64],
    zero: u64,
    count: u64,
    sum: f64,
) -> Result<(), Drop> {
    if pos.len() > MAX_EXP_BUCKETS || neg.len() > MAX_EXP_BUCKETS || !sum.is_finite() {
        return Err(Drop::InvalidHistogram);
    }
    let total = pos
        .iter()
        .chain(neg)
        .try_fold(zero, |a, b| a.checked_add(*b));
    if total != Some(count) || (sum < 0.0 && neg.iter().all(|c| *c == 0)) {
        return Err(Drop::InvalidHistogram);
    }
    Ok(())
}

/// Checks an OTLP summary point and returns its quantiles ascending:
/// quantiles in [0, 1] and distinct, values not negative, finite or NaN
/// (an empty window, as Prometheus' own summaries report), a finite sum
/// that is not negative.
pub fn check_summary(q: &[(f64, f64)], sum: f64) -> Result<Vec<(f64, f64)>, Drop> {
    // OpenMetrics parsers refuse negative quantile values and sums
    if q.len() > MAX_BUCKETS || !sum.is_finite() || sum < 0.0 {
        return Err(Drop::BadValue);
    }
    if q.iter()
        .any(|(k, v)| !(0.0..=1.0).contains(k) || v.is_infinite() || *v < 0.0)
    {
        return Err(Drop::BadValue);
    }
    let mut out = q.to_vec();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    if out.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(Drop::BadValue);
    }
    Ok(out)
}

/// Cuts `s` to at most `max` bytes at a character boundary.
pub fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A valid Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn valid_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

/// A valid Prometheus label name, `[a-zA-Z_][a-zA-Z0-9_]*`, not `__`-prefixed
/// (reserved for Prometheus' own).
pub fn valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        && !s.starts_with("__")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_compatibility_spec() {
        let n = |a, u, g, c| prom_name(a, u, g, c).unwrap_or_default();
        assert_eq!(n("memory.size", "By", true, false), "memory_size_bytes");
        assert_eq!(
            n("http.server.request.duration", "s", false, false),
            "http_server_request_duration_seconds"
        );
        assert_eq!(n("requests", "{request}", false, true), "requests_total");
        assert_eq!(
            n("cpu.utilization", "1", true, false),
            "cpu_utilization_ratio"
        );
        assert_eq!(
            n("throughput", "By/s", true, false),
            "throughput_bytes_per_second"
        );
        assert_eq!(n("jobs_total", "", false, true), "jobs_total");
        assert_eq!(n("latency_seconds", "s", false, false), "latency_seconds");
        assert_eq!(n("0abc", "", true, false), "_0abc");
        assert_eq!(n("a b!c", "weird unit!", true, false), "a_b_c_weird_unit");
    }

    #[test]
    fn names_with_nothing_left_are_refused() {
        for bad in ["", "!!!", "___", "_", ":", "é", "\n"] {
            assert_eq!(prom_name(bad, "", true, false), None, "{bad:?}");
        }
    }

    #[test]
    fn label_keys_are_valid_and_reserved_ones_renamed() {
        assert_eq!(label_name("http.method"), ("http_method".into(), false));
        assert_eq!(label_name("0abc"), ("key_0abc".into(), true));
        assert_eq!(label_name(""), ("key_".into(), true));
        assert_eq!(label_name("__name__"), ("key__name__".into(), true));
        assert_eq!(label_name("_x"), ("key_x".into(), true));
        assert_eq!(label_name("le"), ("key_le".into(), true));
        assert_eq!(label_name("k\"e}y\n"), ("k_e_y_".into(), true));
        assert_eq!(label_name("ünï"), ("key_n_".into(), true));
    }

    /// Property: whatever the input, names and keys match the Prometheus
    /// grammar (a bounded, seeded sample of hostile strings).
    #[test]
    fn any_input_gives_a_valid_name_or_none() {
        const CH: &[char] = &['a', '0', '_', '.', ':', '"', '\n', '{', ' ', 'é', '\u{0}'];
        let mut rng = fastrand::Rng::with_seed(8);
        for _ in 0..5000 {
            let s: String = (0..rng.usize(..10))
                .map(|_| CH[rng.usize(..CH.len())])
                .collect();
            let (l, _) = label_name(&s);
            assert!(
                valid_label_name(&l) && !l.starts_with("__"),
                "{s:?} -> {l:?}"
            );
            if let Some(n) = prom_name(&s, "", rng.bool(), rng.bool()) {
                let mut c = n.chars();
                assert!(
                    c.next()
                        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
                        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':'),
                    "{s:?} -> {n:?}"
                );
            }
        }
    }

    #[test]
    fn histograms_are_checked() {
        assert_eq!(check_histogram(&[1.0], &[1, 1], 2, 1.0), Ok(()));
        assert_eq!(check_histogram(&[-1.0, 1.0], &[1, 1, 1], 3, -2.0), Ok(()));
        let bad = Err(Drop::InvalidHistogram);
        assert_eq!(check_histogram(&[1.0], &[1, 1], 3, 1.0), bad);
        assert_eq!(check_histogram(&[f64::NAN], &[1, 1], 2, 1.0), bad);
        assert_eq!(check_histogram(&[f64::INFINITY], &[1, 1], 2, 1.0), bad);
        assert_eq!(check_histogram(&[2.0, 1.0], &[1, 1, 1], 3, 1.0), bad);
        assert_eq!(check_histogram(&[1.0], &[u64::MAX, 1], 0, 1.0), bad);
        assert_eq!(check_histogram(&[1.0], &[1, 1], 2, -1.0), bad);
        assert_eq!(check_histogram(&[1.0], &[1, 1], 2, f64::NAN), bad);
        assert_eq!(check_histogram(&[1.0], &[1], 1, 1.0), bad);
    }

    #[test]
    fn cut_keeps_characters_whole() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
        assert_eq!(cut("abc", 10), "abc");
    }
}
