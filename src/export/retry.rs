//! Retrying, shared by every exporter: the classification of a send's
//! outcome into retryable or not (after the OTLP specification,
//! opentelemetry-rust's retry classification and Prometheus' remote-write
//! client), the server's hints (HTTP `Retry-After`, gRPC `RetryInfo`) and
//! exponential backoff with jitter.

use std::time::{Duration, SystemTime};
use tonic::{Code, Status};

/// The longest wait a server's hint may ask for; a longer one is capped.
pub const MAX_HINT: Duration = Duration::from_secs(300);

/// Why a send failed, and whether to try again.
#[derive(Debug, PartialEq)]
pub enum Failure {
    /// Try again, after the server's hint when it gave one.
    Retryable {
        after: Option<Duration>,
        msg: String,
    },
    /// Never retried: counted and dropped.
    Permanent(String),
    /// Never retried: the downstream refused the data itself (gRPC
    /// INVALID_ARGUMENT, HTTP 400 or 413). An exporter that batches several
    /// requests may split the batch to find the one refused.
    Rejected(String),
}

/// Which HTTP answers are worth another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpRetry {
    /// OTLP/HTTP: 429, 502, 503 and 504 (the OTLP specification).
    Otlp,
    /// Prometheus remote write: every 5xx and 429 (what Prometheus' own
    /// remote-write client retries); other 4xx never.
    RemoteWrite,
}

/// Classifies a non-2xx HTTP answer; `retry_after` is the header's value.
pub fn classify_http(
    status: u16,
    retry_after: Option<&str>,
    body: &str,
    rule: HttpRetry,
) -> Failure {
    let msg = format!(
        "HTTP {status}: {}",
        body.chars().take(200).collect::<String>()
    );
    let retryable = match rule {
        HttpRetry::Otlp => matches!(status, 429 | 502 | 503 | 504),
        HttpRetry::RemoteWrite => status == 429 || (500..600).contains(&status),
    };
    if retryable {
        let after = retry_after.and_then(parse_retry_after);
        return Failure::Retryable { after, msg };
    }
    match status {
        400 | 413 => Failure::Rejected(msg),
        _ => Failure::Permanent(msg),
    }
}

/// The OTLP/gRPC classification: UNAVAILABLE, CANCELLED, DEADLINE_EXCEEDED,
/// ABORTED, OUT_OF_RANGE and DATA_LOSS are retryable; RESOURCE_EXHAUSTED only
/// with RetryInfo (the server says it can recover); everything else is
/// permanent. A transport error (no connection) is retryable.
pub fn classify_grpc(status: &Status) -> Failure {
    let hint = crate::rpc_status::retry_delay(status.details());
    let msg = format!("gRPC {:?}: {}", status.code(), status.message());
    match status.code() {
        Code::Unavailable
        | Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::DataLoss => Failure::Retryable { after: hint, msg },
        Code::ResourceExhausted if hint.is_some() => Failure::Retryable { after: hint, msg },
        Code::InvalidArgument => Failure::Rejected(msg),
        // tonic reports its own transport failures as UNKNOWN with a source
        Code::Unknown if std::error::Error::source(status).is_some() => {
            Failure::Retryable { after: None, msg }
        }
        _ => Failure::Permanent(msg),
    }
}

/// `Retry-After`: delay-seconds or an HTTP date (a date in the past is 0).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let t = httpdate::parse_http_date(v).ok()?;
    Some(
        t.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Exponential backoff with jitter: each wait is the current interval times
/// a random factor in [0.5, 1.5), and the interval doubles up to `max`. A
/// server's hint replaces the jittered wait (capped at [`MAX_HINT`]).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    cur: Duration,
}

impl Backoff {
    /// Both bounds are clamped to [10ms, 1h] so no arithmetic overflows.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let hour = Duration::from_secs(3600);
        let initial = initial.clamp(Duration::from_millis(10), hour);
        let max = max.clamp(initial, hour);
        Backoff {
            initial,
            max,
            cur: initial,
        }
    }

    /// The wait before the next attempt.
    pub fn next(&mut self, hint: Option<Duration>) -> Duration {
        let wait = match hint {
            Some(h) => h.min(MAX_HINT),
            None => self.cur.mul_f64(0.5 + fastrand::f64()),
        };
        self.cur = (self.cur * 2).min(self.max);
        wait
    }

    /// Back to the initial interval (after a success).
    pub fn reset(&mut self) {
        self.cur = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn grpc_classification_follows_the_spec() {
        for c in [
            Code::Unavailable,
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::OutOfRange,
            Code::DataLoss,
        ] {
            assert!(matches!(
                classify_grpc(&Status::new(c, "x")),
                Failure::Retryable { .. }
            ));
        }
        assert!(matches!(
            classify_grpc(&Status::new(Code::InvalidArgument, "x")),
            Failure::Rejected(_)
        ));
        for c in [
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::NotFound,
            Code::Unimplemented,
            Code::Internal,
            Code::ResourceExhausted,
        ] {
            assert!(
                matches!(classify_grpc(&Status::new(c, "x")), Failure::Permanent(_)),
                "{c:?}"
            );
        }
    }

    #[test]
    fn resource_exhausted_with_retry_info_is_retried_after_its_delay() {
        // google.rpc.Status { details: [Any { RetryInfo { 3s } }] }, built by hand
        #[derive(Clone, PartialEq, Message)]
        struct D {
            #[prost(int64, tag = "1")]
            s: i64,
        }
        #[derive(Clone, PartialEq, Message)]
        struct Ri {
            #[prost(message, optional, tag = "1")]
            d: Option<D>,
        }
        #[derive(Clone, PartialEq, Message)]
        struct Any {
            #[prost(string, tag = "1")]
            t: String,
            #[prost(bytes = "vec", tag = "2")]
            v: Vec<u8>,
        }
        #[derive(Clone, PartialEq, Message)]
        struct St {
            #[prost(int32, tag = "1")]
            code: i32,
            #[prost(message, repeated, tag = "3")]
            details: Vec<Any>,
        }
        let details = St {
            code: 8,
            details: vec![Any {
                t: "type.googleapis.com/google.rpc.RetryInfo".into(),
                v: Ri {
                    d: Some(D { s: 3 }),
                }
                .encode_to_vec(),
            }],
        }
        .encode_to_vec();
        let s = Status::with_details(Code::ResourceExhausted, "slow down", details.into());
        assert_eq!(
            classify_grpc(&s),
            Failure::Retryable {
                after: Some(Duration::from_secs(3)),
                msg: "gRPC ResourceExhausted: slow down".into()
            }
        );
    }

    #[test]
    fn otlp_http_classification_and_retry_after() {
        let otlp = HttpRetry::Otlp;
        assert_eq!(
            classify_http(429, Some("7"), "", otlp),
            Failure::Retryable {
                after: Some(Duration::from_secs(7)),
                msg: "HTTP 429: ".into()
            }
        );
        for s in [502, 503, 504] {
            assert!(matches!(
                classify_http(s, None, "", otlp),
                Failure::Retryable { after: None, .. }
            ));
        }
        for s in [401, 403, 404, 500] {
            assert!(matches!(
                classify_http(s, None, "", otlp),
                Failure::Permanent(_)
            ));
        }
        for s in [400, 413] {
            assert!(matches!(
                classify_http(s, None, "", otlp),
                Failure::Rejected(_)
            ));
        }
        let past = classify_http(503, Some("Sun, 06 Nov 1994 08:49:37 GMT"), "", otlp);
        assert!(matches!(past, Failure::Retryable { after: Some(d), .. } if d.is_zero()));
    }

    #[test]
    fn remote_write_retries_every_5xx_and_429_only() {
        let rw = HttpRetry::RemoteWrite;
        for s in [500, 501, 502, 503, 504, 599, 429] {
            assert!(
                matches!(classify_http(s, None, "", rw), Failure::Retryable { .. }),
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 409, 413, 422] {
            assert!(
                !matches!(classify_http(s, None, "", rw), Failure::Retryable { .. }),
                "{s}"
            );
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        assert_eq!(parse_retry_after(" 12 "), Some(Duration::from_secs(12)));
        assert_eq!(parse_retry_after("soon"), None);
        let in_a_minute = SystemTime::now() + Duration::from_secs(61);
        let d = parse_retry_after(&httpdate::fmt_http_date(in_a_minute)).expect("a date");
        assert!(
            d > Duration::from_secs(55) && d <= Duration::from_secs(61),
            "{d:?}"
        );
        // the obsolete forms HTTP/1.1 still asks recipients to accept
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_max_and_honours_hints() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let mut waits = Vec::new();
        for _ in 0..4 {
            waits.push(b.next(None));
        }
        let bounds = [100, 200, 350, 350];
        for (w, c) in waits.iter().zip(bounds) {
            let c = Duration::from_millis(c);
            assert!(*w >= c / 2 && *w < c * 3 / 2, "{w:?} around {c:?}");
        }
        assert_eq!(b.next(Some(Duration::from_secs(2))), Duration::from_secs(2));
        assert_eq!(b.next(Some(Duration::from_secs(9999))), MAX_HINT);
        b.reset();
        assert!(b.next(None) < Duration::from_millis(150));
    }
}
