//! Pass-through of the app's own OTLP metrics, named and shaped per the
//! OpenTelemetry-to-Prometheus compatibility spec: unit and `_total`
//! suffixes, delta sums and histograms accumulated to cumulative,
//! `target_info` from the resource. This is a cold path (apps push metrics
//! every few seconds), so it decodes with prost.

use super::encode::Encoder;
use super::store::{push_key_part, Family, FastMap, Kind, LabelNames};
use crate::config;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, AggregationTemporality};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const DROP_REASONS: [&str; 4] = [
    "unsupported_type",
    "name_clash",
    "bad_point",
    "invalid_name",
];

pub struct Passthrough {
    enabled: bool,
    scope_labels: bool,
    resource_labels: bool,
    cap: usize,
    families: Mutex<BTreeMap<String, Arc<Family>>>,
    /// target_info series: key -> last update
    targets: Mutex<FastMap<Box<[u8]>, u64>>,
    dropped: [AtomicU64; 4],
    /// names taken by derived metrics (a clash is dropped, counted)
    reserved: Mutex<Vec<String>>,
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

fn sanitize(s: &str, out: &mut String) {
    let mut last_us = false;
    for c in s.chars() {
        let ok = c.is_ascii_alphanumeric() || c == '_' || c == ':';
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
    if let Some((a, b)) = u.split_once('/') {
        let a = unit_word(a)
            .map(str::to_string)
            .unwrap_or_else(|| a.to_string());
        let b = per_word(b)
            .or_else(|| unit_word(b))
            .map(str::to_string)
            .unwrap_or_else(|| b.to_string());
        let mut out = String::new();
        sanitize(&format!("{a}_per_{b}"), &mut out);
        return out.trim_matches('_').to_string();
    }
    let mut out = String::new();
    sanitize(unit_word(u).unwrap_or(u), &mut out);
    out.trim_matches('_').to_string()
}

/// The Prometheus name of an OTLP metric.
pub fn prom_name(name: &str, unit: &str, gauge: bool, counter: bool) -> String {
    let mut n = String::new();
    sanitize(name, &mut n);
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
    base
}

fn label_name(k: &str) -> String {
    let mut out = String::new();
    for c in k.chars() {
        out.push(if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        });
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    }
    out
}

fn value_text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Some(any_value::Value::ArrayValue(a)) => {
            let parts: Vec<String> = a
                .values
                .iter()
                .map(|v| value_text(&Some(v.clone())))
                .collect();
            serde_json::to_string(&parts).unwrap_or_default()
        }
        Some(any_value::Value::KvlistValue(kv)) => {
            let m: BTreeMap<String, String> = kv
                .values
                .iter()
                .map(|k| (k.key.clone(), value_text(&k.value)))
                .collect();
            serde_json::to_string(&m).unwrap_or_default()
        }
        Some(any_value::Value::StringValueStrindex(i)) => i.to_string(),
        None => String::new(),
    }
}

/// Encodes sorted (name, value) pairs as a series key; names that sanitize
/// to the same label are joined with `;` as the spec says.
fn key_of(pairs: &mut Vec<(String, String)>) -> Vec<u8> {
    pairs.sort();
    let mut merged: Vec<(String, String)> = Vec::with_capacity(pairs.len());
    for (k, v) in pairs.drain(..) {
        match merged.last_mut() {
            Some((lk, lv)) if *lk == k => {
                lv.push(';');
                lv.push_str(&v);
            }
            _ => merged.push((k, v)),
        }
    }
    let mut key = Vec::new();
    for (k, v) in &merged {
        push_key_part(&mut key, k.as_bytes());
        push_key_part(&mut key, v.as_bytes());
    }
    key
}

fn attrs_into(attrs: &[KeyValue], out: &mut Vec<(String, String)>) {
    for kv in attrs {
        out.push((label_name(&kv.key), value_text(&kv.value)));
    }
}

/// Totals of one ingest.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    pub points: u64,
    pub dropped: u64,
}

impl Passthrough {
    pub fn new(cfg: &config::Passthrough, cap: usize) -> Self {
        Passthrough {
            enabled: cfg.enabled,
            scope_labels: cfg.scope_labels,
            resource_labels: cfg.resource_labels,
            cap,
            families: Mutex::new(BTreeMap::new()),
            targets: Mutex::new(FastMap::default()),
            dropped: Default::default(),
            reserved: Mutex::new(Vec::new()),
        }
    }

    pub fn reserve(&self, names: impl IntoIterator<Item = String>) {
        self.reserved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(names);
    }

    fn drop_point(&self, reason: usize, n: u64) {
        self.dropped[reason].fetch_add(n, Ordering::Relaxed);
    }

    pub fn dropped(&self) -> Vec<(&'static str, u64)> {
        DROP_REASONS
            .iter()
            .zip(&self.dropped)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
            .collect()
    }

    fn family(&self, name: &str, kind: Kind, help: &str, unit: &str) -> Option<Arc<Family>> {
        if self
            .reserved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|r| r == name)
        {
            self.drop_point(1, 1);
            return None;
        }
        let mut fams = self.families.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = fams.get(name) {
            if std::mem::discriminant(&f.kind) != std::mem::discriminant(&kind) {
                self.drop_point(1, 1);
                return None;
            }
            return Some(f.clone());
        }
        if fams.len() >= 10_000 {
            self.drop_point(3, 1);
            return None;
        }
        let f = Arc::new(Family::new(
            name,
            help,
            unit,
            kind,
            LabelNames::InKey,
            self.cap,
        ));
        fams.insert(name.to_string(), f.clone());
        Some(f)
    }

    /// Takes one request in. Returns how many points it held and dropped.
    pub fn ingest(&self, req: &ExportMetricsServiceRequest, now_s: u64) -> Ingested {
        let mut st = Ingested::default();
        for rm in &req.resource_metrics {
            let res_attrs: &[KeyValue] = rm
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or(&[]);
            let get = |k: &str| {
                res_attrs
                    .iter()
                    .find(|kv| kv.key == k)
                    .map(|kv| value_text(&kv.value))
            };
            let job = match (get("service.namespace"), get("service.name")) {
                (Some(ns), Some(n)) => Some(format!("{ns}/{n}")),
                (None, Some(n)) => Some(n),
                _ => None,
            };
            let instance = get("service.instance.id");
            let mut base: Vec<(String, String)> = Vec::new();
            if self.resource_labels {
                if let Some(j) = &job {
                    base.push(("job".into(), j.clone()));
                }
                if let Some(i) = &instance {
                    base.push(("instance".into(), i.clone()));
                }
            }
            if self.enabled && !res_attrs.is_empty() {
                let mut t: Vec<(String, String)> = Vec::new();
                for kv in res_attrs {
                    if !matches!(
                        kv.key.as_str(),
                        "service.name" | "service.namespace" | "service.instance.id"
                    ) {
                        t.push((label_name(&kv.key), value_text(&kv.value)));
                    }
                }
                if let Some(j) = &job {
                    t.push(("job".into(), j.clone()));
                }
                if let Some(i) = &instance {
                    t.push(("instance".into(), i.clone()));
                }
                let key = key_of(&mut t);
                let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
                if targets.len() < 64 || targets.contains_key(&key[..]) {
                    targets.insert(key.into(), now_s);
                }
            }
            for sm in &rm.scope_metrics {
                let mut scope: Vec<(String, String)> = base.clone();
                if self.scope_labels {
                    if let Some(s) = &sm.scope {
                        scope.push(("otel_scope_name".into(), s.name.clone()));
                        scope.push(("otel_scope_version".into(), s.version.clone()));
                    }
                }
                for m in &sm.metrics {
                    st.points += self.metric(m, &scope, now_s, &mut st.dropped);
                }
            }
        }
        st
    }

    fn metric(
        &self,
        m: &opentelemetry_proto::tonic::metrics::v1::Metric,
        scope: &[(String, String)],
        now_s: u64,
        dropped: &mut u64,
    ) -> u64 {
        let Some(data) = &m.data else {
            return 0;
        };
        let mut points = 0u64;
        let num = |p: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint| match p.value {
            Some(number_data_point::Value::AsDouble(d)) => Some(d),
            Some(number_data_point::Value::AsInt(i)) => Some(i as f64),
            None => None,
        };
        let pairs_of = |attrs: &[KeyValue]| {
            let mut p = scope.to_vec();
            attrs_into(attrs, &mut p);
            key_of(&mut p)
        };
        match data {
            metric::Data::Gauge(g) => {
                points += g.data_points.len() as u64;
                let name = prom_name(&m.name, &m.unit, true, false);
                let Some(f) = self.family(
                    &name,
                    Kind::Gauge,
                    &m.description,
                    &unit_suffix(&m.unit, true),
                ) else {
                    *dropped += g.data_points.len() as u64;
                    return points;
                };
                let mut l = f.lock(now_s);
                for p in &g.data_points {
                    match num(p) {
                        Some(v) if l.set(&pairs_of(&p.attributes), v) => {}
                        _ => {
                            self.drop_point(2, 1);
                            *dropped += 1;
                        }
                    }
                }
            }
            metric::Data::Sum(s) => {
                points += s.data_points.len() as u64;
                let counter = s.is_monotonic;
                let delta = s.aggregation_temporality == AggregationTemporality::Delta as i32;
                let name = prom_name(&m.name, &m.unit, !counter, counter);
                let kind = if counter { Kind::Counter } else { Kind::Gauge };
                let Some(f) =
                    self.family(&name, kind, &m.description, &unit_suffix(&m.unit, !counter))
                else {
                    *dropped += s.data_points.len() as u64;
                    return points;
                };
                let mut l = f.lock(now_s);
                for p in &s.data_points {
                    let key = pairs_of(&p.attributes);
                    let ok = match num(p) {
                        Some(v) if delta => l.add(&key, v),
                        Some(v) => l.set(&key, v),
                        None => false,
                    };
                    if !ok {
                        self.drop_point(2, 1);
                        *dropped += 1;
                    }
                }
            }
            metric::Data::Histogram(h) => {
                points += h.data_points.len() as u64;
                let delta = h.aggregation_temporality == AggregationTemporality::Delta as i32;
                let name = prom_name(&m.name, &m.unit, false, false);
                let bounds = h
                    .data_points
                    .first()
                    .map(|p| p.explicit_bounds.clone())
                    .unwrap_or_default();
                let Some(f) = self.family(
                    &name,
                    Kind::Histogram(bounds),
                    &m.description,
                    &unit_suffix(&m.unit, false),
                ) else {
                    *dropped += h.data_points.len() as u64;
                    return points;
                };
                let mut l = f.lock(now_s);
                for p in &h.data_points {
                    let ok = p.explicit_bounds.windows(2).all(|w| w[0] < w[1])
                        && l.merge_hist(
                            &pairs_of(&p.attributes),
                            &p.explicit_bounds,
                            &p.bucket_counts,
                            p.sum.unwrap_or(0.0),
                            p.count,
                            delta,
                        );
                    if !ok {
                        self.drop_point(2, 1);
                        *dropped += 1;
                    }
                }
            }
            metric::Data::ExponentialHistogram(h) => {
                // Text exposition cannot carry native histograms.
                points += h.data_points.len() as u64;
                self.drop_point(0, h.data_points.len() as u64);
                *dropped += h.data_points.len() as u64;
            }
            metric::Data::Summary(s) => {
                points += s.data_points.len() as u64;
                self.drop_point(0, s.data_points.len() as u64);
                *dropped += s.data_points.len() as u64;
            }
        }
        points
    }

    /// A snapshot of the families (the map's lock is not held while they are used).
    fn all(&self) -> Vec<Arc<Family>> {
        self.families
            .lock()
            .map(|f| f.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn expire(&self, cutoff_s: u64) -> usize {
        let fams = self.all();
        let mut n = 0;
        for f in fams {
            n += f.expire(cutoff_s);
        }
        let mut t = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        t.retain(|_, up| *up >= cutoff_s);
        n
    }

    pub fn series_counts(&self) -> Vec<(String, usize)> {
        let fams = self.all();
        fams.iter()
            .map(|f| (f.name.clone(), f.series_count()))
            .collect()
    }

    pub fn overflow_counts(&self) -> Vec<(String, u64)> {
        let fams = self.all();
        fams.iter()
            .map(|f| (f.name.clone(), f.overflowed.load(Ordering::Relaxed)))
            .collect()
    }

    pub fn render(&self, e: &mut Encoder, _now: u64) {
        let fams = self.all();
        for f in fams {
            e.family(&f);
        }
        let t = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        if !t.is_empty() {
            e.header("target_info", "gauge", "Target metadata", "");
            let mut keys: Vec<&Box<[u8]>> = t.keys().collect();
            keys.sort();
            for k in keys {
                let mut it = super::store::key_parts(k);
                let mut pairs = Vec::new();
                while let (Some(n), Some(v)) = (it.next(), it.next()) {
                    pairs.push((n, v));
                }
                e.sample("target_info", "", &pairs, 1.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_compatibility_spec() {
        assert_eq!(
            prom_name("memory.size", "By", true, false),
            "memory_size_bytes"
        );
        assert_eq!(
            prom_name("http.server.request.duration", "s", false, false),
            "http_server_request_duration_seconds"
        );
        assert_eq!(
            prom_name("requests", "{request}", false, true),
            "requests_total"
        );
        assert_eq!(
            prom_name("cpu.utilization", "1", true, false),
            "cpu_utilization_ratio"
        );
        assert_eq!(
            prom_name("throughput", "By/s", true, false),
            "throughput_bytes_per_second"
        );
        assert_eq!(prom_name("jobs_total", "", false, true), "jobs_total");
        assert_eq!(
            prom_name("latency_seconds", "s", false, false),
            "latency_seconds"
        );
        assert_eq!(label_name("http.method"), "http_method");
        assert_eq!(label_name("0abc"), "key_0abc");
    }
}
