//! Opaque page cursors: the sort key of the last item of a page, as base64url JSON. Clients
//! pass them back unchanged; anything else — not base64url JSON, another number of values, or
//! a value of another type than the route's sort key — is a `400` for `cursor`, so a forged
//! cursor never reaches PostgreSQL or Elasticsearch.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

use crate::error::ApiError;

/// The type of one sort key value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Text,
    /// A string, or `null` (Elasticsearch's sort value of a missing keyword).
    Keyword,
    /// A 64-bit integer (Elasticsearch sorts dates and longs by integers).
    Integer,
    /// A finite number.
    Number,
    /// `true` or `false`.
    Boolean,
}

impl Kind {
    fn accepts(self, value: &Value) -> bool {
        match self {
            Kind::Text => value.is_string(),
            Kind::Keyword => value.is_string() || value.is_null(),
            Kind::Integer => value.is_i64(),
            Kind::Number => value.as_f64().is_some_and(f64::is_finite),
            Kind::Boolean => value.is_boolean(),
        }
    }
}

/// Encodes the sort values of the last item.
pub fn encode(values: &Value) -> String {
    URL_SAFE_NO_PAD.encode(values.to_string())
}

/// Decodes a cursor into its sort values, which must match `kinds` one for one.
pub fn decode(cursor: &str, kinds: &[Kind]) -> Result<Vec<Value>, ApiError> {
    let bad = |why: &str| {
        ApiError::bad(
            "cursor",
            format!("not a cursor returned by this API ({why})"),
        )
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad("not base64url"))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad("not JSON"))?;
    let Value::Array(items) = value else {
        return Err(bad("not an array"));
    };
    if items.len() != kinds.len() {
        return Err(bad(&format!(
            "{} values where this route sorts on {}",
            items.len(),
            kinds.len()
        )));
    }
    for (index, (item, kind)) in items.iter().zip(kinds).enumerate() {
        if !kind.accepts(item) {
            return Err(bad(&format!("value {index} is not {}", describe(*kind))));
        }
    }
    Ok(items)
}

fn describe(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "a string",
        Kind::Keyword => "a string or null",
        Kind::Integer => "an integer",
        Kind::Number => "a number",
        Kind::Boolean => "a boolean",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_and_garbage() {
        let c = encode(&json!(["2026-11-23T10:00:00Z", "o-1"]));
        assert_eq!(
            decode(&c, &[Kind::Text, Kind::Text]).unwrap()[1],
            json!("o-1")
        );
        assert!(decode(&c, &[Kind::Text, Kind::Text, Kind::Text]).is_err());
        assert!(decode("not base64!", &[Kind::Text]).is_err());
        assert!(decode(&encode(&json!({"a": 1})), &[Kind::Text]).is_err());
    }

    #[test]
    fn every_value_has_the_sort_keys_type() {
        let events = [Kind::Integer, Kind::Integer, Kind::Keyword];
        assert!(decode(&encode(&json!([1795428000000i64, 7, "e-1"])), &events).is_ok());
        assert!(decode(&encode(&json!([i64::MIN, 7, null])), &events).is_ok());
        assert!(decode(&encode(&json!(["a", "b", "c"])), &events).is_err());
        assert!(decode(&encode(&json!([1.5, 7, "e"])), &events).is_err());
        assert!(decode(&encode(&json!([u64::MAX, 7, "e"])), &events).is_err());
        assert!(decode(&encode(&json!([1, 7, [1]])), &events).is_err());
        assert!(decode(&encode(&json!([true])), &[Kind::Boolean]).is_ok());
        assert!(decode(&encode(&json!([1])), &[Kind::Boolean]).is_err());
        assert!(decode(&encode(&json!([0.25])), &[Kind::Number]).is_ok());
        assert!(decode(&encode(&json!([null])), &[Kind::Text]).is_err());
    }
}
