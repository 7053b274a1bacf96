//! The batch endpoint's body and answer: a JSON array (or NDJSON lines) of
//! `{"command": "...", "body": {...}, "idempotency_key"?: "..."}`, one result per item, in order.
//! A malformed item is that item's `400`; it never blocks the others.

use crate::error::{ApiError, ErrorBody};
use crate::extract::{parse_json, BodyKind};
use crate::idempotency::valid_key;
use crate::ingest::Accepted;
use factline_schemas::{Problem, Problems};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

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
            // an item takes any JSON value, so a data error is the body not being an array
            let items: Vec<RawItem> = match serde_json::from_slice(bytes) {
                Ok(items) => items,
                Err(error) if error.is_data() => {
                    return Err(ApiError::Invalid(Problems(vec![Problem::new(
                        "$",
                        "a batch is a JSON array of {\"command\", \"body\", \"idempotency_key\"?} objects",
                    )
                    .expected("array")])))
                }
                Err(error) => return Err(ApiError::InvalidJson(error.to_string())),
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
                .map(|line| parse_json::<RawItem>(line.as_bytes()).and_then(parse_item))
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
fn parse_item(raw: RawItem) -> Result<Item, ApiError> {
    let RawItem::Object {
        command,
        body,
        idempotency_key,
        mut unknown,
    } = raw
    else {
        return Err(ApiError::Invalid(Problems(vec![Problem::new(
            "$",
            "a batch item is an object {\"command\", \"body\", \"idempotency_key\"?}",
        )
        .expected("object")])));
    };
    let mut problems = Vec::new();
    let command = match command {
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
    if body.is_none() {
        problems.push(Problem::new("$.body", "missing field").expected("object"));
    }
    let idempotency_key = match idempotency_key {
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
    unknown.sort();
    unknown.dedup();
    for name in unknown {
        problems.push(Problem::new(format!("$.{name}"), "unknown field"));
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

/// One batch item as read: its three fields (when present, any JSON type) and the names of
/// any other keys; or not an object at all. A repeated key keeps its last value, as in a
/// JSON object.
enum RawItem {
    Object {
        command: Option<Value>,
        body: Option<Value>,
        idempotency_key: Option<Value>,
        unknown: Vec<String>,
    },
    NotAnObject,
}

impl<'de> Deserialize<'de> for RawItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawItem, D::Error> {
        struct ItemVisitor;
        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = RawItem;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a batch item")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawItem, A::Error> {
                let (mut command, mut body, mut idempotency_key) = (None, None, None);
                let mut unknown = Vec::new();
                while let Some(key) = map.next_key::<ItemKey>()? {
                    match key {
                        ItemKey::Command => command = Some(map.next_value()?),
                        ItemKey::Body => body = Some(map.next_value()?),
                        ItemKey::IdempotencyKey => idempotency_key = Some(map.next_value()?),
                        ItemKey::Other(name) => {
                            map.next_value::<IgnoredAny>()?;
                            unknown.push(name);
                        }
                    }
                }
                Ok(RawItem::Object {
                    command,
                    body,
                    idempotency_key,
                    unknown,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawItem, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(RawItem::NotAnObject)
            }
            fn visit_unit<E: de::Error>(self) -> Result<RawItem, E> {
                Ok(RawItem::NotAnObject)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawItem, E> {
                Ok(RawItem::NotAnObject)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawItem, E> {
                Ok(RawItem::NotAnObject)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawItem, E> {
                Ok(RawItem::NotAnObject)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawItem, E> {
                Ok(RawItem::NotAnObject)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<RawItem, E> {
                Ok(RawItem::NotAnObject)
            }
        }
        deserializer.deserialize_any(ItemVisitor)
    }
}

/// A key of a batch item, matched without allocating for the three known ones.
enum ItemKey {
    Command,
    Body,
    IdempotencyKey,
    Other(String),
}

impl<'de> Deserialize<'de> for ItemKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ItemKey, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = ItemKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<ItemKey, E> {
                Ok(match key {
                    "command" => ItemKey::Command,
                    "body" => ItemKey::Body,
                    "idempotency_key" => ItemKey::IdempotencyKey,
                    other => ItemKey::Other(other.to_owned()),
                })
            }
        }
        deserializer.deserialize_str(KeyVisitor)
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
    fn odd_items_and_bodies_are_each_told_apart() {
        let text = r#"[
            [1, [2, {"command": "A"}]],
            {"command": "A", "command": "B", "body": {"x": [1, {"y": null}]}, "zz": 1, "aa": {}, "zz": 2},
            {"command": "A", "body": {}, "idempotency_key": null},
            {"command": "A", "body": {}, "idempotency_key": " k"},
            null, 1.5, true
        ]"#;
        let items = parse_batch(text.as_bytes(), BodyKind::Json, 10).unwrap();
        assert_eq!(items.len(), 7);
        let problems = |i: usize| match items[i].as_ref().unwrap_err() {
            ApiError::Invalid(problems) => problems
                .iter()
                .map(|p| format!("{} {}", p.path, p.message))
                .collect::<Vec<_>>(),
            other => panic!("item {i}: {other:?}"),
        };
        assert_eq!(
            problems(0)[0],
            "$ a batch item is an object {\"command\", \"body\", \"idempotency_key\"?}"
        );
        // a repeated key keeps its last value; unknown keys once each, sorted
        assert_eq!(problems(1), ["$.aa unknown field", "$.zz unknown field"]);
        let item = items[2].as_ref().unwrap();
        assert_eq!(
            (item.command.as_str(), &item.body, &item.idempotency_key),
            ("A", &json!({}), &None)
        );
        assert_eq!(problems(3)[0].split(' ').next(), Some("$.idempotency_key"));
        for i in 4..7 {
            assert_eq!(problems(i).len(), 1, "item {i}");
        }
        let repeated = r#"[{"command": "A", "body": {"x": [1, {"y": null}]}, "command": "B"}]"#;
        let items = parse_batch(repeated.as_bytes(), BodyKind::Json, 10).unwrap();
        let item = items[0].as_ref().unwrap();
        assert_eq!(item.command, "B");
        assert_eq!(item.body, json!({"x": [1, {"y": null}]}));
        for not_a_batch in [r#"{"a": [1, {"b": 2}]}"#, "\"x\"", "null", "3"] {
            let error = parse_batch(not_a_batch.as_bytes(), BodyKind::Json, 10).unwrap_err();
            assert_eq!(error.status(), 400, "{not_a_batch}");
            assert!(matches!(error, ApiError::Invalid(_)), "{not_a_batch}");
        }
        let ndjson = "[1]\n\"x\"\n{\"command\":\"A\",\"body\":{}}";
        let items = parse_batch(ndjson.as_bytes(), BodyKind::Ndjson, 10).unwrap();
        assert!(matches!(items[0], Err(ApiError::Invalid(_))));
        assert!(matches!(items[1], Err(ApiError::Invalid(_))));
        assert!(items[2].is_ok());
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
