//! [`DeclarativeSearchProjection`]: a [`SearchProjection`] whose indices and document changes
//! come from a [`DeclarativeConfig`] with `sink = "elasticsearch"`.
//!
//! The actions mean what they mean for PostgreSQL: `insert` creates a document if absent;
//! `upsert` creates it, or overwrites the `set` fields of the existing one if the guards hold;
//! `update` does that to an existing document only; `delete` removes it if the guards hold (the
//! sink keeps a tombstone of what it had applied, so a re-delivered older event does not bring
//! it back).
//! Guards: `newer = "f"` (the document's `f` is absent, null or not newer than the new value)
//! and `row_equals` (the document's fields hold these values; an absent field is null).

use std::cmp::Ordering;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use super::config::{Action, DeclarativeConfig, IndexDecl, Mapping, Source};
use super::sql::{lookup, matches};
use crate::error::ProjectionError;
use crate::projection::Event;
use crate::search::{DocRef, IndexSpec, SearchProjection};

/// A search projection described by a TOML file.
#[derive(Debug, Clone)]
pub struct DeclarativeSearchProjection {
    config: DeclarativeConfig,
}

impl DeclarativeSearchProjection {
    /// Wraps a validated configuration with `sink = "elasticsearch"`.
    pub fn new(config: DeclarativeConfig) -> DeclarativeSearchProjection {
        DeclarativeSearchProjection { config }
    }

    fn mappings<'a>(&'a self, event: &'a Event) -> impl Iterator<Item = &'a Mapping> + 'a {
        self.config
            .on
            .iter()
            .filter(move |m| m.event_type == event.event_type() && matches(&m.when, &event.data))
    }

    fn index(&self, name: &str) -> Result<&IndexDecl, ProjectionError> {
        self.config
            .index(name)
            .ok_or_else(|| ProjectionError::permanent(format!("unknown index {name}")))
    }

    /// The document id a mapping addresses for this event.
    fn id_of(&self, mapping: &Mapping, event: &Event) -> Result<String, ProjectionError> {
        let index = self.index(&mapping.table)?;
        let source = mapping
            .set
            .get(&index.id)
            .or_else(|| mapping.key.get(&index.id))
            .ok_or_else(|| ProjectionError::permanent(format!("no id for {}", index.name)))?;
        match value(source, event) {
            Value::String(s) if !s.is_empty() => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(ProjectionError::permanent(format!(
                "{} has no usable document id ({} is {other})",
                event.event_type(),
                index.id
            ))),
        }
    }
}

/// The JSON value of a source for an event.
pub fn value(source: &Source, event: &Event) -> Value {
    match source {
        Source::Path(path) => match path.as_str() {
            "@null" => Value::Null,
            "@event_id" => json!(event.envelope.event_id.to_string()),
            "@event_type" => json!(event.envelope.event_type),
            "@occurred_at" => json!(event
                .envelope
                .occurred_at
                .to_rfc3339_opts(SecondsFormat::Millis, true)),
            path => lookup(&event.data, path).cloned().unwrap_or(Value::Null),
        },
        Source::Literal { literal } => json!(literal),
        Source::Bool(b) => json!(b),
        Source::Int(i) => json!(i),
        Source::Float(f) => json!(f),
        Source::Sum { sum } => crate::declarative::sql::sum_over(&event.data, sum)
            .map(Value::Number)
            .unwrap_or(Value::Null),
    }
}

/// Orders two JSON values of one field: timestamps as instants, numbers as numbers, strings
/// as text; `None` if they are not comparable.
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    let instant = |v: &Value| {
        v.as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    if let (Some(x), Some(y)) = (instant(a), instant(b)) {
        return Some(x.cmp(&y));
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Applies one mapping to a document (pure).
pub fn apply_mapping(mapping: &Mapping, current: Option<Value>, event: &Event) -> Option<Value> {
    let set: Map<String, Value> = mapping
        .set
        .iter()
        .map(|(f, s)| (f.clone(), value(s, event)))
        .collect();
    let guards_hold = |doc: &Value| {
        let equal = mapping.row_equals.iter().all(|(f, s)| {
            let expected = value(s, event);
            doc.get(f).unwrap_or(&Value::Null) == &expected
        });
        let newer = match &mapping.newer {
            None => true,
            Some(f) => {
                let new = set
                    .get(f)
                    .cloned()
                    .or_else(|| mapping.key.get(f).map(|s| value(s, event)))
                    .unwrap_or(Value::Null);
                match doc.get(f).unwrap_or(&Value::Null) {
                    Value::Null => true,
                    old if new.is_null() => old.is_null(),
                    old => compare(old, &new).is_some_and(|o| o != Ordering::Greater),
                }
            }
        };
        equal && newer
    };
    let merged = |doc: Value| {
        let mut doc = match doc {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        for (f, v) in &set {
            doc.insert(f.clone(), v.clone());
        }
        Value::Object(doc)
    };
    match (mapping.action, current) {
        (Action::Insert, None) | (Action::Upsert, None) => Some(merged(json!({}))),
        (Action::Insert, Some(doc)) => Some(doc),
        (Action::Upsert | Action::Update, Some(doc)) => {
            if guards_hold(&doc) {
                Some(merged(doc))
            } else {
                Some(doc)
            }
        }
        (Action::Update | Action::Delete, None) => None,
        (Action::Delete, Some(doc)) => {
            if guards_hold(&doc) {
                None
            } else {
                Some(doc)
            }
        }
    }
}

impl SearchProjection for DeclarativeSearchProjection {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn version(&self) -> u32 {
        self.config.version
    }

    fn topics(&self) -> Vec<String> {
        self.config.topics.clone()
    }

    fn declarative_config(&self) -> Option<&DeclarativeConfig> {
        Some(&self.config)
    }

    fn event_types(&self) -> Vec<String> {
        self.config.event_types()
    }

    fn indices(&self) -> Vec<IndexSpec> {
        self.config
            .indices
            .iter()
            .map(|index| {
                let properties: Map<String, Value> = index
                    .fields
                    .iter()
                    .map(|(f, t)| (f.clone(), json!({"type": t.es()})))
                    .collect();
                IndexSpec {
                    base: index.name.clone(),
                    body: json!({"mappings": {"dynamic": "strict", "properties": properties}}),
                }
            })
            .collect()
    }

    /// `delete` removes a document, and `update` leaves a missing one absent.
    fn deletes(&self) -> bool {
        self.config
            .on
            .iter()
            .any(|m| matches!(m.action, Action::Delete | Action::Update))
    }

    fn targets(&self, event: &Event) -> Result<Vec<DocRef>, ProjectionError> {
        let mut targets = Vec::new();
        for mapping in self.mappings(event) {
            let doc = DocRef::new(&mapping.table, self.id_of(mapping, event)?);
            if !targets.contains(&doc) {
                targets.push(doc);
            }
        }
        Ok(targets)
    }

    fn apply(
        &self,
        doc: &DocRef,
        current: Option<Value>,
        event: &Event,
    ) -> Result<Option<Value>, ProjectionError> {
        let bookkeeping = current
            .as_ref()
            .and_then(|c| c.get(crate::search::BOOKKEEPING))
            .cloned();
        let mut state = current;
        for mapping in self.mappings(event) {
            if mapping.table == doc.index && self.id_of(mapping, event)? == doc.id {
                state = apply_mapping(mapping, state, event);
            }
        }
        Ok(state.map(|mut d| {
            if let (Some(b), Some(map)) = (&bookkeeping, d.as_object_mut()) {
                map.insert(crate::search::BOOKKEEPING.into(), b.clone());
            }
            d
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::Origin;
    use factline_schemas::Envelope;

    fn event(event_type: &str, data: Value) -> Event {
        Event {
            envelope: Envelope {
                event_id: uuid::Uuid::nil(),
                event_type: event_type.into(),
                command_id: uuid::Uuid::nil(),
                correlation_id: "c".into(),
                causation_id: None,
                occurred_at: DateTime::from_timestamp(0, 0).unwrap(),
                traceparent: None,
            },
            data,
            key: None,
            origin: Origin {
                topic: "t".into(),
                partition: 0,
                offset: 0,
            },
            timestamp: None,
            headers: Default::default(),
        }
    }

    fn fold(p: &DeclarativeSearchProjection, events: &[Event]) -> Option<Value> {
        let mut doc = None;
        for e in events {
            for target in p.targets(e).unwrap() {
                doc = p.apply(&target, doc, e).unwrap();
            }
        }
        doc
    }

    #[test]
    fn the_customer_search_config_is_order_safe_and_forgetting_sticks() {
        let config =
            DeclarativeConfig::parse(include_str!("../../config/customer_search.toml")).unwrap();
        let p = DeclarativeSearchProjection::new(config);
        let registered = event(
            "CustomerRegistered",
            json!({"customer_id": "c-1", "email": "a@x", "name": "Ada", "registered_at": "2026-01-01T00:00:01.000Z"}),
        );
        let changed = event(
            "CustomerEmailChanged",
            json!({"customer_id": "c-1", "email": "b@x", "changed_at": "2026-01-01T00:00:05.000Z"}),
        );
        let forgotten = event(
            "CustomerForgotten",
            json!({"customer_id": "c-1", "forgotten_at": "2026-01-01T00:00:09.000Z"}),
        );
        let doc = fold(&p, &[registered.clone(), changed.clone()]).unwrap();
        assert_eq!(doc["email"], "b@x");
        assert_eq!(doc["name"], "Ada");
        assert_eq!(fold(&p, &[changed.clone(), registered.clone()]), Some(doc));
        let gone = fold(
            &p,
            &[registered.clone(), forgotten.clone(), changed.clone()],
        )
        .unwrap();
        assert_eq!(gone["email"], Value::Null);
        assert_eq!(gone["forgotten"], true);
        assert_eq!(fold(&p, &[forgotten, changed, registered]), Some(gone));
        assert_eq!(
            p.indices()[0].body["mappings"]["properties"]["email_at"]["type"],
            "date"
        );
    }
}
