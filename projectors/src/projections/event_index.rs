//! `event_index`: every event of every topic as one Elasticsearch document (id = `event_id`):
//! type, key, topic, partition, offset, Kafka time, occurred time, headers, the decoded payload
//! as searchable fields and `text`, all of the payload's strings for full-text search. Alias
//! `event_index`, mapping `projectors/mappings/event_index.json`.
//!
//! An event is indexed once: a copy with the same `event_id` (at another offset) changes
//! nothing. Personal data of forgotten customers is removed: `CustomerForgotten` records the
//! customer in the side index `event_index_forgotten`, and the runtime's join redacts every
//! event document carrying that `customer_id` ([`redact`]: `name`, `email` and
//! `shipping_address` leave `payload` and `text`, `forgotten` becomes true) — events indexed
//! before the forgetting as well as any arriving later.

use chrono::SecondsFormat;
use serde_json::{json, Map, Value};

use crate::error::ProjectionError;
use crate::projection::Event;
use crate::search::{DocRef, IndexSpec, Join, SearchProjection, BOOKKEEPING};

/// The projector name (and base name of the alias).
pub const NAME: &str = "event_index";
/// The read model's version.
pub const VERSION: u32 = 1;
/// The side index of forgotten customers.
pub const FORGOTTEN: &str = "event_index_forgotten";
/// Payload fields holding personal data, removed for forgotten customers.
pub const PERSONAL: &[&str] = &["name", "email", "shipping_address"];

/// The mapping of the event documents.
pub const MAPPING: &str = include_str!("../../mappings/event_index.json");
/// The mapping of the forgotten customers.
pub const FORGOTTEN_MAPPING: &str = include_str!("../../mappings/event_index_forgotten.json");

/// Every event type of the catalog.
fn all_event_types() -> Vec<String> {
    factline_schemas::Catalog::builtin()
        .events()
        .iter()
        .map(|e| e.event_type.clone())
        .collect()
}

/// The `event_index` projection over every topic of the catalog.
#[derive(Debug, Clone)]
pub struct EventIndexProjection {
    topics: Vec<String>,
    indices: Vec<IndexSpec>,
}

impl EventIndexProjection {
    /// The projection with its mappings parsed: a mapping file that is not JSON is an error
    /// here, at start, never an index created without a mapping.
    pub fn new() -> Result<EventIndexProjection, ProjectionError> {
        Ok(EventIndexProjection {
            topics: factline_schemas::Catalog::builtin().topics(),
            indices: vec![
                IndexSpec::new(NAME, MAPPING)?,
                IndexSpec::new(FORGOTTEN, FORGOTTEN_MAPPING)?,
            ],
        })
    }
}

fn collect_strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

/// All string values of a payload, joined by spaces (the full-text field).
pub fn text_of(payload: &Value) -> String {
    let mut out = Vec::new();
    collect_strings(payload, &mut out);
    out.join(" ")
}

/// The document of an event.
pub fn document(event: &Event) -> Value {
    let at = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    let headers: Map<String, Value> = event
        .headers
        .iter()
        .map(|(k, v)| {
            let text = v.map(String::from_utf8_lossy).unwrap_or_default();
            (k.to_owned(), json!(text))
        })
        .collect();
    json!({
        "event_id": event.envelope.event_id.to_string(),
        "event_type": event.envelope.event_type,
        "key": event.key,
        "topic": &*event.origin.topic,
        "partition": event.origin.partition,
        "offset": event.origin.offset,
        "timestamp": event.timestamp.map(at),
        "occurred_at": at(event.envelope.occurred_at),
        "correlation_id": event.envelope.correlation_id,
        "headers": headers,
        "payload": event.data,
        "text": text_of(&event.data),
        "customer_id": event.data.get("customer_id").and_then(Value::as_str),
        "forgotten": false,
    })
}

/// An event document without personal data: [`PERSONAL`] fields leave the payload, `text` is
/// rebuilt, `forgotten` is true. Idempotent.
pub fn redact(mut doc: Value) -> Value {
    if let Some(payload) = doc.get_mut("payload").and_then(Value::as_object_mut) {
        for field in PERSONAL {
            payload.remove(*field);
        }
    }
    doc["text"] = json!(text_of(&doc["payload"]));
    doc["forgotten"] = json!(true);
    doc
}

impl SearchProjection for EventIndexProjection {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> u32 {
        VERSION
    }

    fn topics(&self) -> Vec<String> {
        self.topics.clone()
    }

    fn event_types(&self) -> Vec<String> {
        all_event_types()
    }

    fn indices(&self) -> Vec<IndexSpec> {
        self.indices.clone()
    }

    fn targets(&self, event: &Event) -> Result<Vec<DocRef>, ProjectionError> {
        let mut targets = vec![DocRef::new(NAME, event.envelope.event_id.to_string())];
        if event.event_type() == "CustomerForgotten" {
            let customer = event
                .data
                .get("customer_id")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ProjectionError::permanent("CustomerForgotten without customer_id")
                })?;
            targets.push(DocRef::new(FORGOTTEN, customer));
        }
        Ok(targets)
    }

    fn apply(
        &self,
        doc: &DocRef,
        current: Option<Value>,
        event: &Event,
    ) -> Result<Option<Value>, ProjectionError> {
        if doc.index == FORGOTTEN {
            let at = event
                .data
                .get("forgotten_at")
                .cloned()
                .unwrap_or(Value::Null);
            let earliest = match current.as_ref().and_then(|c| c.get("forgotten_at")) {
                Some(Value::String(old)) if at.as_str().is_none_or(|new| old.as_str() <= new) => {
                    json!(old)
                }
                _ => at,
            };
            let mut new = json!({"customer_id": doc.id, "forgotten_at": earliest});
            if let Some(b) = current.as_ref().and_then(|c| c.get(BOOKKEEPING)) {
                new[BOOKKEEPING] = b.clone();
            }
            return Ok(Some(new));
        }
        // indexed once: a copy of the same event keeps the first document
        Ok(Some(current.unwrap_or_else(|| document(event))))
    }

    /// Events are never deleted (forgetting erases fields).
    fn deletes(&self) -> bool {
        false
    }

    /// An event document is created by its event alone (a copy keeps the first document).
    fn written_once(&self, base: &str) -> bool {
        base == NAME
    }

    fn join(&self) -> Option<Join> {
        Some(Join {
            field: "customer_id".into(),
            id_field: "event_id".into(),
            side: FORGOTTEN.into(),
            side_topics: vec!["customers".into()],
        })
    }

    fn enrich(&self, doc: Value, side: Option<&Value>) -> Value {
        match side {
            Some(_) => redact(doc),
            None => doc,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_removes_personal_data_and_is_idempotent() {
        let payload = json!({"customer_id": "c-1", "name": "Ada Lovelace", "email": "ada@x",
                             "shipping_address": {"city": "London"}, "items": [{"name": "Tea"}]});
        let doc = json!({"event_id": "e", "customer_id": "c-1", "forgotten": false,
                         "text": text_of(&payload), "payload": payload});
        assert!(doc["text"].as_str().unwrap().contains("Ada Lovelace"));
        let redacted = redact(doc);
        assert_eq!(
            redacted["payload"],
            json!({"customer_id": "c-1", "items": [{"name": "Tea"}]})
        );
        assert_eq!(redacted["text"], "c-1 Tea");
        assert_eq!(redacted["forgotten"], true);
        assert_eq!(redact(redacted.clone()), redacted);
        let p = EventIndexProjection::new().unwrap();
        assert_eq!(p.enrich(redacted.clone(), None), redacted);
    }
}
