//! The batch endpoint's body and answer: a JSON array (or NDJSON lines) of
//! `{"command": "...", "body": {...}, "idempotency_key"?: "..."}`, one result per item, in order.
//! A malformed item is that item's `400`; it never blocks the others.

use crate::error::{ApiError, ErrorBody};
use crate::extract::{parse_json, BodyKind};
use crate::idempotency::valid_key;
use crate::ingest::Accepted;
use factline_schemas::{Problem, Problems};
use serde::Serialize;
use serde_json::Value;

/// One well-formed batch item.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The command's name.
    pub command: String,
    /// The command's body.
    pub body: Value,
    /// The item's idempotency key, if any.
    pub idempotency_key: Option<String>,
}

/// Splits a batch body into items (each parsed, or the error that item gets). A body that is not
/// a batch at all, or has more than `max_items` items, is an error for the whole request.
pub fn parse_batch(
    bytes: &[u8],
    kind: BodyKind,
    max_items: usize,
) -> Result<Vec<Result<Item, ApiError>>, ApiError> {
    match kind {
        BodyKind::Json => {
            let value: Value = parse_json(bytes)?;
            let Value::Array(items) = value else {
                return Err(ApiError::Invalid(Problems(vec![Problem::new(
                    "$",
                    "a batch is a JSON array of {\"command\", \"body\", \"idempotency_key\"?} objects",
                )
                .expected("array")])));
            };
            check_len(items.len(), max_items)?;
            Ok(items.into_iter().map(parse_item).collect())
        }
        BodyKind::Ndjson => {
            let text = std::str::from_utf8(bytes)
                .map_err(|e| ApiError::InvalidJson(format!("the body is not UTF-8: {e}")))?;
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            check_len(lines.len(), max_items)?;
            Ok(lines
                .into_iter()
                .map(|line| parse_json::<Value>(line.as_bytes()).and_then(parse_item))
                .collect())
        }
    }
}

fn check_len(len: usize, max: usize) -> Result<(), ApiError> {
    if len > max {
        return Err(ApiError::BatchTooLarge { items: len, max });
    }
    if len == 0 {
        return Err(ApiError::BadRequest("the batch is empty".into()));
    }
    Ok(())
}

/// Reads one item, reporting every problem of its shape.
pub fn parse_item(value: Value) -> Result<Item, ApiError> {
    let Value::Object(mut map) = value else {
        return Err(ApiError::Invalid(Problems(vec![Problem::new(
            "$",
            "a batch item is an object {\"command\", \"body\", \"idempotency_key\"?}",
        )
        .expected("object")])));
    };
    let mut problems = Vec::new();
    let command = match map.remove("command") {
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            problems.push(Problem::new("$.command", "wrong type").expected("string"));
            None
        }
        None => {
            problems.push(Problem::new("$.command", "missing field").expected("string"));
            None
        }
    };
    let body = map.remove("body");
    if body.is_none() {
        problems.push(Problem::new("$.body", "missing field").expected("object"));
    }
    let idempotency_key = match map.remove("idempotency_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(key)) if valid_key(&key) => Some(key),
        Some(_) => {
            problems.push(
                Problem::new(
                    "$.idempotency_key",
                    "must be 1 to 255 printable ASCII characters, without leading or trailing \
                     spaces",
                )
                .expected("string"),
            );
            None
        }
    };
    for unknown in map.keys() {
        problems.push(Problem::new(format!("$.{unknown}"), "unknown field"));
    }
    match (command, body) {
        (Some(command), Some(body)) if problems.is_empty() => Ok(Item {
            command,
            body,
            idempotency_key,
        }),
        _ => Err(ApiError::Invalid(Problems(problems))),
    }
}

/// One item's result.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ItemResult {
    /// Written: the same fields as a single `202`.
    Accepted {
        /// The item's position in the batch (from 0).
        index: usize,
        /// Always 202.
        status: u16,
        /// Where the event is.
        #[serde(flatten)]
        accepted: Accepted,
    },
    /// Not written (or unknown): the same body as the single endpoint's error.
    Failed {
        /// The item's position in the batch (from 0).
        index: usize,
        /// The status the single endpoint would have answered.
        status: u16,
        /// The error.
        #[serde(flatten)]
        error: ErrorBody,
    },
}

impl ItemResult {
    /// The result of item `index`.
    pub fn new(index: usize, result: Result<Accepted, ApiError>) -> ItemResult {
        match result {
            Ok(accepted) => ItemResult::Accepted {
                index,
                status: 202,
                accepted,
            },
            Err(error) => ItemResult::Failed {
                index,
                status: error.status().as_u16(),
                error: error.body(),
            },
        }
    }

    /// Whether the item was written.
    pub fn is_accepted(&self) -> bool {
        matches!(self, ItemResult::Accepted { .. })
    }
}

/// The batch answer.
#[derive(Debug, Serialize)]
pub struct BatchResponse {
    /// How many items were written.
    pub accepted: usize,
    /// How many were not (or may not have been).
    pub failed: usize,
    /// One result per item, in order.
    pub results: Vec<ItemResult>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_array_items_are_parsed_independently() {
        let body = json!([
            {"command": "ShipOrder", "body": {"order_id": "o"}, "idempotency_key": "k"},
            {"command": 3, "extra": true},
            "nope"
        ]);
        let items = parse_batch(body.to_string().as_bytes(), BodyKind::Json, 10).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(
            items[0].as_ref().unwrap().idempotency_key.as_deref(),
            Some("k")
        );
        let ApiError::Invalid(problems) = items[1].as_ref().unwrap_err() else {
            panic!("expected problems");
        };
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["$.command", "$.body", "$.extra"]);
        assert_eq!(items[2].as_ref().unwrap_err().status(), 400);
    }

    #[test]
    fn ndjson_lines_and_limits() {
        let body = "{\"command\":\"A\",\"body\":{}}\n\nnot json\n";
        let items = parse_batch(body.as_bytes(), BodyKind::Ndjson, 10).unwrap();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok());
        assert!(matches!(items[1], Err(ApiError::InvalidJson(_))));
        let too_many = parse_batch(b"[1,2,3]", BodyKind::Json, 2).unwrap_err();
        assert_eq!(too_many.status(), 413);
        assert_eq!(
            parse_batch(b"{}", BodyKind::Json, 2).unwrap_err().status(),
            400
        );
        assert_eq!(
            parse_batch(b"[", BodyKind::Json, 2).unwrap_err().status(),
            400
        );
    }
}
