//! The few `google.rpc` messages OTLP uses for errors: `Status` (error
//! bodies and `grpc-status-details-bin`) and `RetryInfo` (how long to wait).
//! Declared here with prost's derive rather than pulling in a crate of
//! googleapis types for four small messages; used by the receivers (encode)
//! and the exporters (decode).

use prost::Message;
use std::time::Duration;

#[derive(Clone, PartialEq, Message)]
struct PbDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

#[derive(Clone, PartialEq, Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<PbDuration>,
}

#[derive(Clone, PartialEq, Message)]
struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<Any>,
}

const RETRY_INFO_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// An encoded `google.rpc.Status` with no details (OTLP/HTTP error bodies).
pub fn status(code: i32, message: &str) -> Vec<u8> {
    RpcStatus {
        code,
        message: message.to_string(),
        details: Vec::new(),
    }
    .encode_to_vec()
}

/// An encoded `google.rpc.Status` carrying one `RetryInfo` with `delay`.
pub fn status_with_retry_info(code: i32, message: &str, delay: Duration) -> Vec<u8> {
    let ri = RetryInfo {
        retry_delay: Some(PbDuration {
            seconds: delay.as_secs() as i64,
            nanos: delay.subsec_nanos() as i32,
        }),
    };
    RpcStatus {
        code,
        message: message.to_string(),
        details: vec![Any {
            type_url: RETRY_INFO_URL.into(),
            value: ri.encode_to_vec(),
        }],
    }
    .encode_to_vec()
}

/// The `RetryInfo` delay in an encoded `google.rpc.Status`, if it has one.
pub fn retry_delay(details: &[u8]) -> Option<Duration> {
    let st = RpcStatus::decode(details).ok()?;
    st.details
        .iter()
        .find(|a| a.type_url.ends_with("google.rpc.RetryInfo"))
        .and_then(|a| RetryInfo::decode(a.value.as_slice()).ok())
        .and_then(|ri| ri.retry_delay)
        .map(|d| {
            Duration::from_secs(d.seconds.max(0) as u64)
                + Duration::from_nanos(d.nanos.max(0) as u64)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_info_round_trips() {
        let d = Duration::from_millis(1500);
        assert_eq!(retry_delay(&status_with_retry_info(14, "full", d)), Some(d));
        assert_eq!(retry_delay(&status(14, "no hint")), None);
        assert_eq!(retry_delay(b"\xff\xff"), None);
    }
}
