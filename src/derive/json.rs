//! Reads the fields rules need from a JSON-object log body, the shape
//! structlog's JSONRenderer sends (`{"event": "memory_operation", ...}`).
//! Only top-level keys the rules name, and the event name (the same keys as
//! a map body's, [`super::wire::BODY_EVENT_KEYS`]), are kept; everything
//! else is skipped by serde without building values.

use super::wire::{body_event_rank, BodyEvent, KeyTable, Val};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// A JSON scalar, borrowed from the body when it has no escapes.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonVal<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Double(f64),
    Bool(bool),
    Other,
}

impl<'a> JsonVal<'a> {
    pub fn as_val(&self) -> Val<'_> {
        match self {
            JsonVal::Str(s) => Val::Str(s.as_bytes()),
            JsonVal::Int(i) => Val::Int(*i),
            JsonVal::Double(d) => Val::Double(*d),
            JsonVal::Bool(b) => Val::Bool(*b),
            JsonVal::Other => Val::Other,
        }
    }
}

/// What was found in the body.
#[derive(Debug, Default)]
pub struct JsonFields<'a> {
    pub event: Option<Cow<'a, str>>,
    pub fields: Vec<(u16, JsonVal<'a>)>,
}

/// Parses `body` if it is a JSON object; None when it is not JSON at all.
pub fn parse<'a>(body: &'a [u8], keys: &KeyTable) -> Option<JsonFields<'a>> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    Seed { keys }.deserialize(&mut de).ok()
}

struct Seed<'k> {
    keys: &'k KeyTable,
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = JsonFields<'de>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = JsonFields<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = JsonFields::default();
        let mut event = BodyEvent::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let slot = self.keys.lookup(key.as_bytes());
            let rank = body_event_rank(key.as_bytes());
            if slot.is_none() && rank.is_none() {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let v: JsonScalar<'de> = map.next_value()?;
            if let Some(rank) = rank {
                let text = match &v.0 {
                    JsonVal::Str(s) if !s.is_empty() => Some(s.clone()),
                    _ => None,
                };
                event.offer(rank, text);
            }
            if let Some(slot) = slot {
                out.fields.push((slot, v.0));
            }
        }
        out.event = event.name();
        Ok(out)
    }
}

struct JsonScalar<'a>(JsonVal<'a>);

impl<'de> serde::Deserialize<'de> for JsonScalar<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonScalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(JsonScalar(JsonVal::Str(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonScalar(JsonVal::Str(Cow::Owned(v.to_string()))))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(JsonScalar(JsonVal::Int(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(JsonScalar(
                    i64::try_from(v)
                        .map(JsonVal::Int)
                        .unwrap_or(JsonVal::Double(v as f64)),
                ))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(JsonScalar(JsonVal::Double(v)))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(JsonScalar(JsonVal::Bool(v)))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(JsonScalar(JsonVal::Other))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Self::Value, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(JsonScalar(JsonVal::Other))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(JsonScalar(JsonVal::Other))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_structlog_body() {
        let mut keys = KeyTable::default();
        let op = keys.slot("operation");
        let user = keys.slot("user_id");
        let body = br#"{"user_id": "u-\u00e5", "operation": "store", "content": {"x": [1,2]}, "event": "memory_operation", "n": 3}"#;
        let f = parse(body, &keys).expect("json");
        assert_eq!(f.event.as_deref(), Some("memory_operation"));
        assert!(f
            .fields
            .contains(&(op, JsonVal::Str(Cow::Borrowed("store")))));
        assert!(f
            .fields
            .contains(&(user, JsonVal::Str(Cow::Owned("u-å".into())))));
        assert!(parse(b"memory_operation", &keys).is_none());
        assert!(parse(b"{not json", &keys).is_none());
    }

    #[test]
    fn event_keys_are_those_of_map_bodies() {
        let keys = KeyTable::default();
        let ev = |b: &str| parse(b.as_bytes(), &keys).and_then(|f| f.event.map(|e| e.into_owned()));
        let some = |s: &str| Some(s.to_string());
        assert_eq!(
            ev(r#"{"msg": "c", "message": "b", "event": "a"}"#),
            some("a")
        );
        assert_eq!(ev(r#"{"msg": "c", "message": "b"}"#), some("b"));
        assert_eq!(ev(r#"{"level": "info", "msg": "c"}"#), some("c"));
        assert_eq!(ev(r#"{"event": 7, "message": "b"}"#), some("b"));
        assert_eq!(ev(r#"{"event": "", "msg": "c"}"#), some("c"));
        assert_eq!(ev(r#"{"event": {"event": "x"}}"#), None);
        assert_eq!(ev(r#"{}"#), None);
        // duplicate keys: the first occurrence counts, as for map bodies
        assert_eq!(
            ev(r#"{"event": "first", "event": "second"}"#),
            some("first")
        );
        assert_eq!(ev(r#"{"event": null, "event": "later"}"#), None);
        assert_eq!(ev(r#"{"event": "esc\u0061ped"}"#), some("escaped"));
    }
}
