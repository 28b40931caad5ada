//! Redaction of log records before they are queued and forwarded: per
//! attribute key, drop the value, replace it by a keyed hash (HMAC-SHA256,
//! hex, truncated to 32 characters) or truncate it. Applies to log record
//! attributes, to the top-level keys of a key/value-list body, and to the
//! top-level keys of a string body that holds a JSON object.
//!
//! Only requests that may need it are decoded: a request in which none of
//! the configured keys occurs as a byte string cannot carry such an
//! attribute, and is forwarded as received.

use super::config::{RedactAction, Redaction};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use prost::Message;
use sha2::Sha256;

struct Rule {
    key: String,
    action: RedactAction,
    max_length: usize,
}

pub struct Redactor {
    rules: Vec<Rule>,
    finders: Vec<memchr::memmem::Finder<'static>>,
    key: Vec<u8>,
}

impl Redactor {
    /// None when no redaction is configured.
    pub fn new(cfg: &Redaction) -> Result<Option<Redactor>, String> {
        if cfg.attributes.is_empty() {
            return Ok(None);
        }
        let key = match &cfg.hash_key_file {
            Some(p) => {
                let mut k =
                    crate::fsread::read(p, crate::fsread::SECRET_MAX, "redaction.hash_key_file")?;
                while k.last().is_some_and(|b| b.is_ascii_whitespace()) {
                    k.pop();
                }
                if k.is_empty() {
                    return Err(format!("redaction.hash_key_file {} is empty", p.display()));
                }
                k
            }
            None => Vec::new(),
        };
        Ok(Some(Redactor {
            finders: cfg
                .attributes
                .iter()
                .map(|r| memchr::memmem::Finder::new(r.key.as_bytes()).into_owned())
                .collect(),
            rules: cfg
                .attributes
                .iter()
                .map(|r| Rule {
                    key: r.key.clone(),
                    action: r.action,
                    max_length: r.max_length.unwrap_or(0),
                })
                .collect(),
            key,
        }))
    }

    /// Whether any configured key occurs in the bytes at all.
    pub fn may_apply(&self, body: &[u8]) -> bool {
        self.finders.iter().any(|f| f.find(body).is_some())
    }

    /// The redacted request, or None when nothing had to change.
    pub fn apply_logs(&self, body: &Bytes) -> Result<Option<Bytes>, String> {
        if !self.may_apply(body) {
            return Ok(None);
        }
        let mut req = ExportLogsServiceRequest::decode(body.as_ref())
            .map_err(|e| format!("cannot decode logs for redaction: {e}"))?;
        let mut changed = false;
        for rl in &mut req.resource_logs {
            for sl in &mut rl.scope_logs {
                for lr in &mut sl.log_records {
                    changed |= self.kvs(&mut lr.attributes);
                    if let Some(b) = &mut lr.body {
                        changed |= self.body(b);
                    }
                }
            }
        }
        Ok(changed.then(|| Bytes::from(req.encode_to_vec())))
    }

    fn rule(&self, key: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.key == key)
    }

    fn kvs(&self, kvs: &mut Vec<KeyValue>) -> bool {
        let mut changed = false;
        kvs.retain_mut(|kv| match self.rule(&kv.key) {
            None => true,
            Some(r) => {
                changed = true;
                match r.action {
                    RedactAction::Drop => false,
                    _ => {
                        if let Some(v) = &mut kv.value {
                            changed |= self.value(r, v);
                        }
                        true
                    }
                }
            }
        });
        changed
    }

    fn value(&self, r: &Rule, v: &mut AnyValue) -> bool {
        match r.action {
            RedactAction::Drop => false,
            RedactAction::Hash => {
                let s = match &v.value {
                    Some(Value::StringValue(s)) => s.clone(),
                    Some(Value::BytesValue(b)) => String::from_utf8_lossy(b).into_owned(),
                    Some(Value::IntValue(i)) => i.to_string(),
                    Some(Value::BoolValue(b)) => b.to_string(),
                    Some(Value::DoubleValue(d)) => d.to_string(),
                    Some(other) => format!("{other:?}"),
                    None => String::new(),
                };
                v.value = Some(Value::StringValue(self.hash(&s)));
                true
            }
            RedactAction::Truncate => match &mut v.value {
                Some(Value::StringValue(s)) => truncate(s, r.max_length),
                _ => false,
            },
        }
    }

    fn body(&self, b: &mut AnyValue) -> bool {
        match &mut b.value {
            Some(Value::KvlistValue(l)) => self.kvs(&mut l.values),
            Some(Value::StringValue(s)) if s.trim_start().starts_with('{') => {
                let Ok(serde_json::Value::Object(mut m)) = serde_json::from_str(s) else {
                    return false;
                };
                let mut changed = false;
                for r in &self.rules {
                    if let Some(v) = m.get_mut(&r.key) {
                        changed = true;
                        match r.action {
                            RedactAction::Drop => {
                                m.remove(&r.key);
                            }
                            RedactAction::Hash => {
                                let s = match &*v {
                                    serde_json::Value::String(s) => s.clone(),
                                    other => other.to_string(),
                                };
                                *v = serde_json::Value::String(self.hash(&s));
                            }
                            RedactAction::Truncate => {
                                if let serde_json::Value::String(s) = v {
                                    truncate(s, r.max_length);
                                }
                            }
                        }
                    }
                }
                if changed {
                    if let Ok(out) = serde_json::to_string(&m) {
                        *s = out;
                    }
                }
                changed
            }
            _ => false,
        }
    }

    fn hash(&self, s: &str) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return "redacted".into();
        };
        mac.update(s.as_bytes());
        let out = mac.finalize().into_bytes();
        let mut hex = String::with_capacity(32);
        for b in &out[..16] {
            hex.push_str(&format!("{b:02x}"));
        }
        hex
    }
}

/// Cuts to `n` characters; true when it cut.
fn truncate(s: &mut String, n: usize) -> bool {
    match s.char_indices().nth(n) {
        Some((i, _)) => {
            s.truncate(i);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::otlp::config::RedactRule;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    fn s(v: &str) -> Option<AnyValue> {
        Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        })
    }
    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: s(v),
            ..Default::default()
        }
    }
    fn req(attrs: Vec<KeyValue>, body: Option<AnyValue>) -> Bytes {
        Bytes::from(
            ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    scope_logs: vec![ScopeLogs {
                        log_records: vec![LogRecord {
                            attributes: attrs,
                            body,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec(),
        )
    }
    fn redactor() -> (Redactor, tempfile::NamedTempFile) {
        let mut f = tempfile::NamedTempFile::new().expect("tmp");
        std::io::Write::write_all(&mut f, b"secret-key\n").expect("write");
        let cfg = Redaction {
            hash_key_file: Some(f.path().to_path_buf()),
            attributes: vec![
                RedactRule {
                    key: "message".into(),
                    action: RedactAction::Drop,
                    max_length: None,
                },
                RedactRule {
                    key: "user_id".into(),
                    action: RedactAction::Hash,
                    max_length: None,
                },
                RedactRule {
                    key: "content".into(),
                    action: RedactAction::Truncate,
                    max_length: Some(4),
                },
            ],
        };
        (Redactor::new(&cfg).expect("ok").expect("some"), f)
    }
    fn first(b: &Bytes) -> LogRecord {
        ExportLogsServiceRequest::decode(b.as_ref())
            .expect("decode")
            .resource_logs
            .remove(0)
            .scope_logs
            .remove(0)
            .log_records
            .remove(0)
    }

    #[test]
    fn untouched_requests_are_not_re_encoded() {
        let (r, _k) = redactor();
        let b = req(vec![kv("other", "x")], s("plain text"));
        assert_eq!(r.apply_logs(&b).expect("ok"), None);
    }

    #[test]
    fn attributes_are_dropped_hashed_and_truncated() {
        let (r, _k) = redactor();
        let b = req(
            vec![
                kv("message", "hello there"),
                kv("user_id", "u-42"),
                kv("content", "αβγδεζ"),
                kv("keep", "me"),
            ],
            None,
        );
        let out = r.apply_logs(&b).expect("ok").expect("changed");
        let lr = first(&out);
        let got: Vec<(String, String)> = lr
            .attributes
            .iter()
            .map(|kv| match &kv.value {
                Some(AnyValue {
                    value: Some(Value::StringValue(v)),
                }) => (kv.key.clone(), v.clone()),
                _ => (kv.key.clone(), String::new()),
            })
            .collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].0, "user_id");
        assert_eq!(got[0].1.len(), 32);
        assert_ne!(got[0].1, "u-42");
        assert_eq!(got[0].1, r.hash("u-42"), "keyed hash is stable");
        assert_eq!(got[1], ("content".into(), "αβγδ".into()));
        assert_eq!(got[2], ("keep".into(), "me".into()));
    }

    #[test]
    fn json_string_body_top_level_keys_are_redacted() {
        let (r, _k) = redactor();
        let b = req(
            vec![],
            s(r#"{"event":"chat","message":"my secret","content":"abcdefgh"}"#),
        );
        let lr = first(&r.apply_logs(&b).expect("ok").expect("changed"));
        let Some(AnyValue {
            value: Some(Value::StringValue(body)),
        }) = lr.body
        else {
            panic!("string body expected");
        };
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v, serde_json::json!({"event":"chat","content":"abcd"}));
    }
}
