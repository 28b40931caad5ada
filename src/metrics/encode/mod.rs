//! Exposition encoders: each renders a [`Snapshot`] and nothing else, chosen
//! by the scraper's Accept header ([`negotiate`], client_golang's rules).
//! `text.rs` writes text 0.0.4 and OpenMetrics; `protobuf.rs` the Prometheus
//! protobuf exposition (length-delimited `MetricFamily` messages), the only
//! one that carries native histograms.

pub mod fields;
#[cfg(test)]
mod prost_reference;
mod protobuf;
#[cfg(test)]
mod random;
mod text;
#[cfg(test)]
mod text_reference;

use super::snapshot::Snapshot;

pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const OPENMETRICS_0_0_1_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=0.0.1; charset=utf-8";
pub const PROTOBUF_CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4 (the default).
    Text,
    /// OpenMetrics 1.0 text (exemplars, `_created`, `# UNIT`, `# EOF`).
    OpenMetrics,
    /// OpenMetrics asked for as version 0.0.1 or without a version: the
    /// same body (as client_golang writes), labelled 0.0.1.
    OpenMetrics001,
    /// Length-delimited `io.prometheus.client.MetricFamily` messages.
    Protobuf,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => TEXT_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::OpenMetrics001 => OPENMETRICS_0_0_1_CONTENT_TYPE,
            Format::Protobuf => PROTOBUF_CONTENT_TYPE,
        }
    }
}

/// One media range of an Accept header.
struct Range<'a> {
    mime: (&'a str, &'a str),
    q: f64,
    params: Vec<(&'a str, &'a str)>,
}

impl Range<'_> {
    fn param(&self, k: &str) -> &str {
        self.params
            .iter()
            .find(|(n, _)| *n == k)
            .map_or("", |(_, v)| v)
    }
}

/// An Accept header's media ranges, highest q first (ties keep their order,
/// a concrete type before `*`), as goautoneg parses them: a range without
/// a `/` (other than `*`) is skipped, a parameter without `=` ignored, an
/// unparsable q is 0.
fn parse_accept(h: &str) -> Vec<Range<'_>> {
    let mut out = Vec::new();
    for part in h.split(',') {
        let mut it = part.split(';');
        let media = it.next().unwrap_or("");
        let mime = match media.split_once('/') {
            Some((t, s)) if !s.contains('/') => (t.trim(), s.trim()),
            None if media.trim() == "*" => ("*", "*"),
            _ => continue,
        };
        let mut r = Range {
            mime,
            q: 1.0,
            params: Vec::new(),
        };
        for p in it {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            if k.trim() == "q" {
                r.q = v.trim().parse::<f32>().map_or(0.0, f64::from);
            } else {
                r.params.push((k.trim(), v.trim()));
            }
        }
        out.push(r);
    }
    let rank = |r: &Range| (r.mime.0 == "*") as u8 + (r.mime.1 == "*") as u8;
    out.sort_by(|a, b| b.q.total_cmp(&a.q).then(rank(a).cmp(&rank(b))));
    out
}

/// The format a scraper's Accept header asks for, by client_golang's
/// `expfmt.NegotiateIncludingOpenMetrics`: the first acceptable range by q
/// wins; protobuf needs `proto=io.prometheus.client.MetricFamily`; text
/// version 0.0.4 or none; OpenMetrics 1.0.0, 0.0.1 or none; anything else
/// falls back to text. Unlike client_golang, the protobuf text encodings
/// (`encoding=text`, `compact-text`), which no scraper asks for, are not
/// served: such a range is passed over.
pub fn negotiate(accept: &str) -> Format {
    for r in parse_accept(accept) {
        let ver = r.param("version");
        match r.mime {
            ("application", "vnd.google.protobuf")
                if r.param("proto") == "io.prometheus.client.MetricFamily"
                    && r.param("encoding") == "delimited" =>
            {
                return Format::Protobuf
            }
            ("text", "plain") if ver == "0.0.4" || ver.is_empty() => return Format::Text,
            ("application", "openmetrics-text") if ver == "1.0.0" => return Format::OpenMetrics,
            ("application", "openmetrics-text") if ver == "0.0.1" || ver.is_empty() => {
                return Format::OpenMetrics001
            }
            _ => {}
        }
    }
    Format::Text
}

/// Whether an Accept header's choice is OpenMetrics.
pub fn wants_openmetrics(accept: &str) -> bool {
    matches!(
        negotiate(accept),
        Format::OpenMetrics | Format::OpenMetrics001
    )
}

/// Renders a snapshot in a format: the response body.
pub fn encode(s: &Snapshot, f: Format) -> Vec<u8> {
    match f {
        Format::Text => text::encode(s, false).into_bytes(),
        Format::OpenMetrics | Format::OpenMetrics001 => text::encode(s, true).into_bytes(),
        Format::Protobuf => protobuf::encode(s),
    }
}

/// Renders a snapshot in a format and hands the body to `send` in pieces
/// of about `chunk` bytes, in order (text: a piece ends at a series' end
/// once it holds `chunk` bytes; protobuf: at a family's end, as a family's
/// length goes before it). Their concatenation is [`encode`]'s body. Stops
/// as soon as `send` returns false (the scraper went away), returning false.
pub fn encode_chunks(
    s: &Snapshot,
    f: Format,
    chunk: usize,
    send: &mut dyn FnMut(Vec<u8>) -> bool,
) -> bool {
    match f {
        Format::Text => text::chunks(s, false, chunk, &mut |t| send(t.into_bytes())),
        Format::OpenMetrics | Format::OpenMetrics001 => {
            text::chunks(s, true, chunk, &mut |t| send(t.into_bytes()))
        }
        Format::Protobuf => protobuf::chunks(s, chunk, send),
    }
}

/// A snapshot as text 0.0.4 (`om` false) or OpenMetrics.
pub fn encode_text(s: &Snapshot, om: bool) -> String {
    text::encode(s, om)
}

/// Collects a store's snapshot and renders it (text or OpenMetrics): a
/// shorthand for tests that hold a store rather than a deriver.
pub fn render(store: &super::Store, own: &[super::snapshot::Family], om: bool) -> String {
    text::encode(&store.snapshot(own.to_vec()), om)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pieces of any size add up to the whole body in every format, each
    /// piece but the last reaches the size asked for, and a `send` that
    /// says stop is not called again.
    #[test]
    fn chunks_add_up_to_the_body_and_stop_when_told() {
        use crate::metrics::snapshot::Snapshot;
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 0..100 {
            let families = (0..rng.usize(0..9))
                .map(|i| super::random::family(&mut rng, i))
                .collect();
            let s = Snapshot {
                families,
                timestamp_ms: 0,
            };
            for f in [Format::Text, Format::OpenMetrics, Format::Protobuf] {
                let whole = encode(&s, f);
                for chunk in [1, 100, 4096, usize::MAX] {
                    let mut pieces: Vec<Vec<u8>> = Vec::new();
                    assert!(encode_chunks(&s, f, chunk, &mut |p| {
                        pieces.push(p);
                        true
                    }));
                    let (last, full) = pieces.split_last().expect("a last piece");
                    assert!(full.iter().all(|p| p.len() >= chunk), "round {round}");
                    assert_eq!(
                        [&full.concat()[..], last].concat(),
                        whole,
                        "round {round} {f:?} {chunk}"
                    );
                    let (mut calls, stop_at) = (0, pieces.len() / 2);
                    let done = encode_chunks(&s, f, chunk, &mut |_| {
                        calls += 1;
                        calls <= stop_at
                    });
                    assert_eq!(
                        (done, calls),
                        (stop_at == pieces.len(), (stop_at + 1).min(pieces.len()))
                    );
                }
            }
        }
    }

    const PB: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily";

    /// The cases of client_golang's TestNegotiateOpenMetrics (escaping
    /// parameters are accepted and ignored here: names are always legacy).
    #[test]
    fn client_golang_negotiation_cases() {
        use Format::*;
        let cases = [
            ("application/openmetrics-text", OpenMetrics001),
            (
                "application/openmetrics-text;version=0.0.1; escaping=underscores",
                OpenMetrics001,
            ),
            ("application/openmetrics-text;version=1.0.0", OpenMetrics),
            (
                "application/openmetrics-text;version=1.0.0; escaping=values;",
                OpenMetrics,
            ),
            ("application/openmetrics-text;version=0.0.4", Text),
            ("text/plain;version=0.0.4", Text),
            ("text/plain;version=0.0.4; escaping=allow-utf-8", Text),
            (
                &format!("{PB};encoding=delimited; escaping=allow-utf-8;"),
                Protobuf,
            ),
            (
                &format!("{PB};encoding=delimited; escaping=underscores;"),
                Protobuf,
            ),
            // client_golang serves the protobuf text forms; we fall back
            (
                &format!("{PB};encoding=compact-text; escaping=underscores"),
                Text,
            ),
            (&format!("{PB};encoding=text"), Text),
        ];
        for (h, want) in cases {
            assert_eq!(negotiate(h), want, "{h}");
        }
    }

    /// What Prometheus sends: with native histograms enabled (protobuf
    /// first), and without (OpenMetrics first); q-values order the ranges.
    #[test]
    fn prometheus_accept_headers_and_q_values() {
        let with_pb = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
                       encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,\
                       application/openmetrics-text;version=0.0.1;q=0.75,\
                       text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(with_pb), Format::Protobuf);
        let plain = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                     version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(plain), Format::OpenMetrics);
        let q = format!("text/plain;q=0.5, {PB};encoding=delimited;q=0.9");
        assert_eq!(negotiate(&q), Format::Protobuf);
        let q = format!("text/plain;q=0.95, {PB};encoding=delimited;q=0.9");
        assert_eq!(negotiate(&q), Format::Text);
        assert_eq!(
            negotiate("application/openmetrics-text;q=x, text/plain;q=0.1"),
            Format::Text
        );
        // protobuf without proto= or encoding= is not the exposition
        let bare = "application/vnd.google.protobuf, application/openmetrics-text;q=0.2";
        assert_eq!(negotiate(bare), Format::OpenMetrics001);
        for h in ["", "*/*", "garbage", "application/json", "a/b/c;;;=,"] {
            assert_eq!(negotiate(h), Format::Text, "{h}");
        }
        assert!(wants_openmetrics(
            "application/openmetrics-text; version=1.0.0"
        ));
    }
}
