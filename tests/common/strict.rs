//! A strict checker of both `/metrics` formats (Prometheus text 0.0.4 and
//! OpenMetrics 1.0), written from the two specifications, plus the
//! reference parsers: `promtool check metrics` (Prometheus' own Go parser)
//! for the text format and `prometheus_client`'s OpenMetrics and text
//! parsers (tests/common/strict_parse.py). `check_all` fails on the first
//! violation with the offending line.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::process::{Command, Stdio};

/// A label set, in the order written.
type Labels = Vec<(String, String)>;
/// Per histogram series: buckets (le, cumulative) and `_count`.
type HistSeries = (Vec<(f64, f64)>, Option<f64>);

fn valid_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

fn valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
        && !s.starts_with("__")
}

fn parse_value(s: &str, om: bool) -> Result<f64, String> {
    match s {
        "NaN" => return Ok(f64::NAN),
        "+Inf" => return Ok(f64::INFINITY),
        "-Inf" => return Ok(f64::NEG_INFINITY),
        _ => {}
    }
    let ok_chars = s
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
    if s.is_empty() || !ok_chars || (om && s.starts_with('+')) {
        return Err(format!("bad number {s:?}"));
    }
    s.parse::<f64>()
        .map_err(|e| format!("bad number {s:?}: {e}"))
}

/// A label set `{a="b",...}` at the start of `s`; returns the pairs and the rest.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut rest = s.strip_prefix('{').ok_or("expected {")?;
    let mut out = Vec::new();
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((out, r));
        }
        if !out.is_empty() {
            rest = rest.strip_prefix(',').ok_or("expected , between labels")?;
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !valid_label_name(name) {
            return Err(format!("invalid label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut val = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => val.push('\\'),
                    Some((_, '"')) => val.push('"'),
                    Some((_, 'n')) => val.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, '\n')) => return Err("raw newline in label value".into()),
                Some((_, c)) => val.push(c),
            }
        };
        rest = &rest[end + 1..];
        if out.iter().any(|(n, _): &(String, String)| n == name) {
            return Err(format!("duplicate label {name:?}"));
        }
        out.push((name.to_string(), val));
    }
}

#[derive(Default)]
struct Fam {
    typ: String,
    help: bool,
    unit: bool,
    samples: bool,
    /// histogram series (labels without le) -> buckets (le, cumulative), count
    hist: HashMap<Labels, HistSeries>,
    /// histogram series that have a `_sum`
    sums: HashSet<Vec<(String, String)>>,
}

/// The sample names a family of this type may use (for clash checks).
fn names_of(name: &str, typ: &str, om: bool) -> Vec<String> {
    let suffixes: &[&str] = match (typ, om) {
        ("counter", true) => &["", "_total", "_created"],
        ("histogram", true) => &["", "_bucket", "_count", "_sum", "_created"],
        ("histogram", false) | ("summary", _) => &["", "_bucket", "_count", "_sum"],
        ("info", true) => &["", "_info"],
        _ => &[""],
    };
    suffixes.iter().map(|s| format!("{name}{s}")).collect()
}

/// The family a sample name belongs to, given the declared families.
fn family_of(name: &str, fams: &HashMap<String, Fam>, om: bool) -> String {
    let suffixes: &[&str] = &["_bucket", "_count", "_sum", "_created", "_total", "_info"];
    for suf in suffixes {
        if let Some(base) = name.strip_suffix(suf) {
            if let Some(f) = fams.get(base) {
                let fits = match (f.typ.as_str(), *suf) {
                    ("histogram", "_bucket" | "_count" | "_sum") => true,
                    ("histogram", "_created") => om,
                    ("summary", "_count" | "_sum") => true,
                    ("counter", "_total" | "_created") => om,
                    ("info", "_info") => om,
                    _ => false,
                };
                if fits {
                    return base.to_string();
                }
            }
        }
    }
    name.to_string()
}

struct Checker {
    om: bool,
    fams: HashMap<String, Fam>,
    done: HashSet<String>,
    current: Option<String>,
    series: HashSet<(String, Vec<(String, String)>)>,
    /// every sample name a declared family may use
    taken: HashSet<String>,
}

impl Checker {
    fn enter(&mut self, fam: &str) -> Result<(), String> {
        if self.current.as_deref() != Some(fam) {
            if self.done.contains(fam) {
                return Err(format!("family {fam:?} is not contiguous or repeated"));
            }
            if let Some(c) = self.current.take() {
                self.done.insert(c);
            }
            self.current = Some(fam.to_string());
        }
        Ok(())
    }

    fn comment(&mut self, line: &str) -> Result<(), String> {
        let mut parts = line.splitn(4, ' ');
        let (_, kw, name, rest) = (parts.next(), parts.next(), parts.next(), parts.next());
        let kw = kw.unwrap_or("");
        if !matches!(kw, "HELP" | "TYPE" | "UNIT") {
            return if self.om {
                Err("unknown comment in OpenMetrics".into())
            } else {
                Ok(())
            };
        }
        let name = name.ok_or("comment without a name")?;
        if !valid_metric_name(name) {
            return Err(format!("invalid metric name {name:?} in # {kw}"));
        }
        self.enter(name)?;
        let om = self.om;
        let f = self.fams.entry(name.to_string()).or_default();
        if f.samples {
            return Err(format!("# {kw} after samples of {name}"));
        }
        let rest = rest.unwrap_or("");
        match kw {
            "HELP" => {
                if std::mem::replace(&mut f.help, true) {
                    return Err(format!("second # HELP for {name}"));
                }
                let mut it = rest.chars();
                while let Some(c) = it.next() {
                    if c == '\\' {
                        match it.next() {
                            Some('\\' | 'n') => {}
                            Some('"') if om => {}
                            other => return Err(format!("bad escape in HELP: {other:?}")),
                        }
                    } else if c == '"' && om {
                        return Err("unescaped \" in OpenMetrics HELP".into());
                    }
                }
            }
            "TYPE" => {
                if !f.typ.is_empty() {
                    return Err(format!("second # TYPE for {name}"));
                }
                let ok: &[&str] = if om {
                    &[
                        "counter",
                        "gauge",
                        "histogram",
                        "gaugehistogram",
                        "stateset",
                        "info",
                        "summary",
                        "unknown",
                    ]
                } else {
                    &["counter", "gauge", "histogram", "summary", "untyped"]
                };
                if !ok.contains(&rest) {
                    return Err(format!("bad type {rest:?}"));
                }
                if om && rest == "counter" && name.ends_with("_total") {
                    return Err("an OpenMetrics counter family name ends with _total".into());
                }
                f.typ = rest.to_string();
                for n in names_of(name, rest, om) {
                    if !self.taken.insert(n.clone()) {
                        return Err(format!("family {name} clashes on the name {n}"));
                    }
                }
            }
            _ => {
                if !om {
                    return Err("# UNIT in the text format".into());
                }
                if std::mem::replace(&mut f.unit, true) || !name.ends_with(&format!("_{rest}")) {
                    return Err(format!("bad # UNIT for {name}"));
                }
            }
        }
        Ok(())
    }

    fn sample(&mut self, line: &str) -> Result<(), String> {
        let name_end = line.find(['{', ' ']).ok_or("sample without value")?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(format!("invalid metric name {name:?}"));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..])?
        } else {
            (Vec::new(), &line[name_end..])
        };
        let rest = rest.strip_prefix(' ').ok_or("no space before value")?;
        let (main, exemplar) = match rest.split_once(" # ") {
            Some((m, e)) if self.om => (m, Some(e)),
            _ => (rest, None),
        };
        let mut toks = main.split(' ');
        let value = parse_value(toks.next().unwrap_or(""), self.om)?;
        if let Some(ts) = toks.next() {
            parse_value(ts, self.om)?;
        }
        if toks.next().is_some() {
            return Err("trailing tokens".into());
        }
        if let Some(e) = exemplar {
            let (el, er) = parse_labels(e)?;
            let chars: usize = el
                .iter()
                .map(|(k, v)| k.chars().count() + v.chars().count())
                .sum();
            if chars > 128 {
                return Err("exemplar labels longer than 128 characters".into());
            }
            let mut t = er.trim_start_matches(' ').split(' ');
            parse_value(t.next().unwrap_or(""), true)?;
        }
        let fam_name = family_of(name, &self.fams, self.om);
        self.enter(&fam_name)?;
        let om = self.om;
        let f = self.fams.entry(fam_name.clone()).or_default();
        f.samples = true;
        if om && f.typ.is_empty() {
            return Err(format!("OpenMetrics sample {name} without # TYPE"));
        }
        if om && f.typ == "counter" && name == fam_name {
            return Err("an OpenMetrics counter sample without _total".into());
        }
        if !self.series.insert((name.to_string(), labels.clone())) {
            return Err(format!("duplicate series {name}{labels:?}"));
        }
        let suffix = &name[fam_name.len()..];
        check_value(f, suffix, &labels, value, om)
    }
}

fn check_value(
    f: &mut Fam,
    suffix: &str,
    labels: &[(String, String)],
    value: f64,
    om: bool,
) -> Result<(), String> {
    let counterish = (f.typ == "counter" && suffix != "_created")
        || (f.typ == "histogram" && matches!(suffix, "_bucket" | "_count"));
    if counterish && (value.is_nan() || value < 0.0) {
        return Err(format!("counter-like sample is {value}"));
    }
    if f.typ != "histogram" {
        return Ok(());
    }
    let has_le = labels.iter().any(|(k, _)| k == "le");
    let key: Vec<(String, String)> = labels.iter().filter(|(k, _)| k != "le").cloned().collect();
    match suffix {
        "_bucket" => {
            let le = labels
                .iter()
                .find(|(k, _)| k == "le")
                .ok_or("bucket without le")?;
            let b = parse_value(&le.1, true).map_err(|e| format!("le: {e}"))?;
            if b.is_nan() {
                return Err("le is NaN".into());
            }
            if value.fract() != 0.0 || !value.is_finite() {
                return Err(format!("bucket count {value} is not an integer"));
            }
            let (buckets, _) = f.hist.entry(key).or_default();
            if let Some((pb, pc)) = buckets.last() {
                if b <= *pb || value < *pc {
                    return Err("buckets not sorted or not cumulative".into());
                }
            }
            buckets.push((b, value));
        }
        "_count" | "_sum" | "_created" if has_le => return Err(format!("le on {suffix}")),
        "_count" => {
            let (buckets, count) = f.hist.entry(key).or_default();
            match buckets.last() {
                Some((b, c)) if b.is_infinite() && *c == value => *count = Some(value),
                _ => return Err("histogram _count is not its +Inf bucket".into()),
            }
        }
        "_sum" => {
            if value.is_nan() || (om && value < 0.0) {
                return Err(format!("histogram _sum is {value}"));
            }
            f.sums.insert(key);
        }
        _ => {}
    }
    Ok(())
}

/// Checks one exposition strictly; `om` for OpenMetrics.
pub fn check(text: &str, om: bool) -> Result<(), String> {
    let mut c = Checker {
        om,
        fams: HashMap::new(),
        done: HashSet::new(),
        current: None,
        series: HashSet::new(),
        taken: HashSet::new(),
    };
    let body = if om {
        text.strip_suffix("# EOF\n")
            .ok_or("OpenMetrics output does not end with # EOF")?
    } else {
        text
    };
    // an empty text exposition (no family at all) is valid: nothing to end
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("no final newline".into());
    }
    for (i, line) in body.lines().enumerate() {
        let r = if line.is_empty() {
            if om {
                Err("empty line".to_string())
            } else {
                Ok(())
            }
        } else if line.starts_with('#') {
            c.comment(line)
        } else {
            c.sample(line)
        };
        if let Err(e) = r {
            let shown: String = line.chars().take(300).collect();
            return Err(format!("line {}: {e}: {shown}", i + 1));
        }
    }
    for (name, f) in &c.fams {
        if f.typ == "histogram" {
            for (k, (b, count)) in &f.hist {
                let negative = b.first().is_some_and(|(le, _)| *le < 0.0);
                // OpenMetrics: no _sum with negative buckets, and _count only with _sum
                // (a native histogram shown by its +Inf bucket alone, with
                // a negative sum, is the same case: negative observations)
                let inf_only = b.len() == 1;
                let count_optional = om && (negative || inf_only) && !f.sums.contains(k);
                if !b.last().is_some_and(|(le, _)| le.is_infinite())
                    || (count.is_none() && !count_optional)
                {
                    return Err(format!(
                        "histogram {name}{k:?} without +Inf bucket or _count"
                    ));
                }
                if om && negative && f.sums.contains(k) {
                    return Err(format!("histogram {name}{k:?}: _sum with negative buckets"));
                }
            }
        }
    }
    Ok(())
}

/// `promtool check metrics` on the text format: a parse error fails (lint
/// remarks, exit code 3, are style advice and do not).
pub fn promtool(text: &str) -> Result<(), String> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Err(format!("promtool (scripts/test.sh installs it): {e}")),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    match out.status.code() {
        Some(0) | Some(3) => Ok(()),
        _ => Err(format!(
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// prometheus_client's parser of the given format (`text` or `openmetrics`).
pub fn python_parser(text: &str, format: &str) -> Result<(), String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/strict_parse.py");
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    let py = if std::path::Path::new(venv).exists() {
        venv
    } else {
        "python3"
    };
    let mut child = Command::new(py)
        .args([script, format])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("python3 with prometheus_client: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "prometheus_client ({format}): {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Every check on both formats; the error names the format and the check.
pub fn check_all(text: &str, openmetrics: &str) -> Result<(), String> {
    check(text, false).map_err(|e| format!("text 0.0.4 (strict): {e}"))?;
    check(openmetrics, true).map_err(|e| format!("OpenMetrics (strict): {e}"))?;
    promtool(text)?;
    python_parser(text, "text")?;
    python_parser(openmetrics, "openmetrics")
}
