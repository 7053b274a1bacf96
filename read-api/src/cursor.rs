//! Opaque page cursors: the sort key of the last item of a page, as base64url JSON. Clients
//! pass them back unchanged; anything else is a `400` for `cursor`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

use crate::error::ApiError;

/// Encodes the sort values of the last item.
pub fn encode(values: &Value) -> String {
    URL_SAFE_NO_PAD.encode(values.to_string())
}

/// Decodes a cursor into its sort values, which must be an array of `len` scalars.
pub fn decode(cursor: &str, len: usize) -> Result<Vec<Value>, ApiError> {
    let bad = || ApiError::bad("cursor", "not a cursor returned by this API");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    match value {
        Value::Array(items)
            if items.len() == len
                && items
                    .iter()
                    .all(|v| v.is_string() || v.is_number() || v.is_null()) =>
        {
            Ok(items)
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_and_garbage() {
        let c = encode(&json!(["2026-11-23T10:00:00Z", "o-1"]));
        assert_eq!(decode(&c, 2).unwrap()[1], json!("o-1"));
        assert!(decode(&c, 3).is_err());
        assert!(decode("not base64!", 2).is_err());
        assert!(decode(&encode(&json!({"a": 1})), 1).is_err());
    }
}
