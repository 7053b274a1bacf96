//! Avro -> JSON for read models and event viewers: records become objects, unions are unwrapped,
//! enums become their symbol, timestamps RFC 3339 strings in UTC, uuids strings, bytes base64.

use apache_avro::types::Value;
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, SecondsFormat, TimeDelta, Utc};
use serde_json::{Map, Number, Value as Json};

/// Converts an Avro value to plain JSON (the shape clients send, plus derived fields).
pub fn avro_to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Long(l) => Json::from(*l),
        Value::Float(f) => Number::from_f64(f64::from(*f)).map_or(Json::Null, Json::Number),
        Value::Double(d) => Number::from_f64(*d).map_or(Json::Null, Json::Number),
        Value::Bytes(b) | Value::Fixed(_, b) => {
            Json::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Value::String(s) | Value::Enum(_, s) => Json::String(s.clone()),
        Value::Union(_, inner) => avro_to_json(inner),
        Value::Array(items) => Json::Array(items.iter().map(avro_to_json).collect()),
        Value::Map(entries) => {
            let mut keys: Vec<&String> = entries.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for key in keys {
                out.insert(key.clone(), avro_to_json(&entries[key]));
            }
            Json::Object(out)
        }
        Value::Record(fields) => Json::Object(
            fields
                .iter()
                .map(|(name, v)| (name.clone(), avro_to_json(v)))
                .collect(),
        ),
        Value::Date(days) => NaiveDate::from_ymd_opt(1970, 1, 1)
            .and_then(|epoch| epoch.checked_add_signed(TimeDelta::days(i64::from(*days))))
            .map_or(Json::from(*days), |d| {
                Json::String(d.format("%Y-%m-%d").to_string())
            }),
        Value::TimestampMillis(ms) | Value::LocalTimestampMillis(ms) => {
            DateTime::<Utc>::from_timestamp_millis(*ms).map_or(Json::from(*ms), |t| {
                Json::String(t.to_rfc3339_opts(SecondsFormat::Millis, true))
            })
        }
        Value::TimestampMicros(us) | Value::LocalTimestampMicros(us) => {
            DateTime::<Utc>::from_timestamp_micros(*us).map_or(Json::from(*us), |t| {
                Json::String(t.to_rfc3339_opts(SecondsFormat::Micros, true))
            })
        }
        Value::TimestampNanos(ns) | Value::LocalTimestampNanos(ns) => Json::String(
            DateTime::<Utc>::from_timestamp_nanos(*ns).to_rfc3339_opts(SecondsFormat::Nanos, true),
        ),
        Value::TimeMillis(ms) => Json::from(*ms),
        Value::TimeMicros(us) => Json::from(*us),
        Value::Uuid(u) => Json::String(u.to_string()),
        Value::Decimal(d) => {
            let bytes: Vec<u8> = d.try_into().unwrap_or_default();
            Json::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        Value::BigDecimal(d) => Json::String(d.to_string()),
        Value::Duration(d) => {
            let months: u32 = d.months().into();
            let days: u32 = d.days().into();
            let millis: u32 = d.millis().into();
            serde_json::json!({"months": months, "days": days, "millis": millis})
        }
    }
}

/// [`avro_to_json`] of a value no longer needed: its strings, arrays and records move into the
/// JSON instead of being copied (a consumer decoding every event keeps only the JSON).
pub fn avro_into_json(value: Value) -> Json {
    match value {
        Value::String(s) | Value::Enum(_, s) => Json::String(s),
        Value::Union(_, inner) => avro_into_json(*inner),
        Value::Array(items) => Json::Array(items.into_iter().map(avro_into_json).collect()),
        Value::Map(entries) => {
            let mut entries: Vec<(String, Value)> = entries.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Json::Object(
                entries
                    .into_iter()
                    .map(|(key, v)| (key, avro_into_json(v)))
                    .collect(),
            )
        }
        Value::Record(fields) => Json::Object(
            fields
                .into_iter()
                .map(|(name, v)| (name, avro_into_json(v)))
                .collect(),
        ),
        other => avro_to_json(&other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps_are_rfc3339_with_millis() {
        assert_eq!(
            avro_to_json(&Value::TimestampMillis(1_795_341_600_123)),
            json!("2026-11-22T10:00:00.123Z")
        );
    }

    #[test]
    fn converting_a_value_it_owns_gives_the_same_json_as_converting_a_borrowed_one() {
        let v = Value::Record(vec![
            (
                "a".into(),
                Value::Union(1, Box::new(Value::String("x".into()))),
            ),
            ("b".into(), Value::Enum(0, "EUR".into())),
            (
                "c".into(),
                Value::Array(vec![Value::TimestampMillis(1), Value::Bytes(vec![1, 2])]),
            ),
            (
                "d".into(),
                Value::Map(
                    [("z", Value::Int(1)), ("a", Value::Double(0.5))]
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect(),
                ),
            ),
        ]);
        let borrowed = avro_to_json(&v);
        assert_eq!(avro_into_json(v), borrowed);
        assert_eq!(borrowed["a"], json!("x"));
    }

    #[test]
    fn unions_are_unwrapped_and_enums_are_symbols() {
        let v = Value::Record(vec![
            (
                "a".into(),
                Value::Union(1, Box::new(Value::String("x".into()))),
            ),
            ("b".into(), Value::Union(0, Box::new(Value::Null))),
            ("c".into(), Value::Enum(2, "GBP".into())),
            (
                "d".into(),
                Value::Array(vec![Value::Int(1), Value::Long(2)]),
            ),
            ("e".into(), Value::Date(1)),
        ]);
        assert_eq!(
            avro_to_json(&v),
            json!({"a": "x", "b": null, "c": "GBP", "d": [1, 2], "e": "1970-01-02"})
        );
    }
}
