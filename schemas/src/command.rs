//! A command of the catalog and how a client body becomes an event: schema conversion, declared
//! rules and derived fields, with every problem of the body reported at once.

use crate::catalog::EventSchema;
use crate::derived::Derived;
use crate::json_to_avro::convert_with_derived;
use crate::problems::{Problem, Problems};
use crate::rules::Rule;
use apache_avro::types::Value;
use apache_avro::Schema;
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};

/// A command clients can send (`POST /commands/{name}`).
#[derive(Debug, Clone)]
pub struct Command {
    /// The command's name: `PlaceOrder`.
    pub name: String,
    /// The short name of the event it records: `OrderPlaced`.
    pub event_type: String,
    /// The topic the event goes to: `orders`.
    pub topic: String,
    /// The field of the body that is the Kafka key: `order_id`.
    pub key_field: String,
    pub(crate) event: Box<EventSchema>,
    pub(crate) rules: Vec<Rule>,
    pub(crate) derived: Vec<Derived>,
}

/// An event built from a valid command body, ready to encode and produce.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltEvent {
    /// The short event name (`OrderPlaced`), also the `event_type` header.
    pub event_type: String,
    /// The topic to write to.
    pub topic: String,
    /// The Kafka key: the value of the command's key field.
    pub key: String,
    /// The event record, valid against the event's schema.
    pub value: Value,
}

impl Command {
    /// The schema and topic of the event this command records.
    pub fn event(&self) -> &EventSchema {
        &self.event
    }

    /// The rules declared for this command beyond the schema.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The fields the write side derives for this command (clients must not send them).
    pub fn derived(&self) -> &[Derived] {
        &self.derived
    }

    /// Validates a client body against the schema and the catalog rules (derived fields must be
    /// absent, unknown fields rejected), fills derived fields, returns every problem at once.
    /// The body is taken by value: its strings move into the event.
    pub fn build_event(
        &self,
        body: serde_json::Value,
        occurred_at: DateTime<Utc>,
    ) -> Result<BuiltEvent, Problems> {
        let mut late_problems = Vec::new();
        let mut derived_values = HashMap::new();
        let Schema::Record(record) = &self.event.schema else {
            return Err(Problems(vec![Problem::new(
                "$",
                "the event schema is not a record",
            )]));
        };
        for derived in &self.derived {
            let Some(&i) = record.lookup.get(derived.field()) else {
                continue;
            };
            match derived.compute(&record.fields[i].schema, &body, occurred_at) {
                Ok(value) => {
                    derived_values.insert(derived.field().to_string(), value);
                }
                Err(problem) => {
                    late_problems.push(problem);
                    // A placeholder keeps the conversion going so every other problem shows.
                    derived_values.insert(derived.field().to_string(), Value::Null);
                }
            }
        }
        // Rules read the body before the conversion takes it apart.
        let mut rule_problems = Vec::new();
        for rule in &self.rules {
            rule.apply(&body, &mut rule_problems);
        }
        let (value, mut problems) = convert_with_derived(&self.event.schema, body, &derived_values);
        // A value the schema already rejected (e.g. an int out of range) gets no rule problem
        // on top: one problem per path is clearer.
        if !problems.is_empty() {
            let schema_paths: HashSet<&str> = problems.iter().map(|p| p.path.as_str()).collect();
            rule_problems.retain(|p| !schema_paths.contains(p.path.as_str()));
        }
        problems.append(&mut rule_problems);
        problems.append(&mut late_problems);
        let value = match value {
            Some(value) if problems.is_empty() => value,
            _ => return Err(Problems(problems)),
        };
        let key = match &value {
            Value::Record(fields) => fields.iter().find_map(|(name, v)| match v {
                Value::String(s) if *name == self.key_field => Some(s.clone()),
                _ => None,
            }),
            _ => None,
        };
        let Some(key) = key else {
            return Err(Problems(vec![Problem::new(
                format!("$.{}", self.key_field),
                "the key field is missing",
            )]));
        };
        Ok(BuiltEvent {
            event_type: self.event_type.clone(),
            topic: self.topic.clone(),
            key,
            value,
        })
    }
}
