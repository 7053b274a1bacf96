//! The command catalog: the embedded (or on-disk) `catalog.toml` and `.avsc` files, parsed and
//! checked once. Each command names the event it records; each event its topic, key field and
//! schema. Loading fails with every mistake listed, so a bad catalog never reaches a service.

use crate::command::Command;
use crate::derived::Derived;
use crate::names::Names;
use crate::personal::PersonalData;
use crate::rules::Rule;
use apache_avro::Schema;
use serde::Deserialize;
use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::OnceLock;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_schemas.rs"));
}

/// The catalog text embedded in the crate.
pub const BUILTIN_CATALOG_TOML: &str = include_str!("../catalog.toml");

/// Why a catalog could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// `catalog.toml` is not valid TOML or does not have the catalog's shape.
    #[error("catalog.toml is malformed: {0}")]
    Malformed(String),
    /// A file could not be read.
    #[error("cannot read {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The catalog parsed but its entries do not agree with the schemas.
    #[error("the catalog is invalid:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

/// One event type: its schema, topic and key field.
#[derive(Debug, Clone)]
pub struct EventSchema {
    /// The short name, also the `event_type` header: `OrderPlaced`.
    pub event_type: String,
    /// The record's full name: `factline.orders.OrderPlaced`.
    pub full_name: String,
    /// The topic the event is written to: `orders`.
    pub topic: String,
    /// The top-level string field that is the Kafka key (the aggregate id): `order_id`.
    pub key_field: String,
    /// The parsed schema.
    pub schema: Schema,
    /// The `.avsc` text, as registered.
    pub schema_json: String,
    /// The fields holding personal data and the field naming their subject, when the schema
    /// marks any (see [`crate::personal`]).
    pub personal: Option<PersonalData>,
    /// When recording this event erases a data subject: the top-level field holding the
    /// subject (`"factline.erases"`, see [`crate::personal`]).
    pub erases: Option<String>,
}

impl EventSchema {
    /// The registry subject (topic-record-name strategy): `orders-factline.orders.OrderPlaced`.
    pub fn subject(&self) -> String {
        format!("{}-{}", self.topic, self.full_name)
    }
}

/// The commands and events of the system.
#[derive(Debug, Clone)]
pub struct Catalog {
    commands: Vec<Command>,
    events: Vec<EventSchema>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    event: Vec<EventEntry>,
    #[serde(default)]
    command: Vec<CommandEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventEntry {
    #[serde(rename = "type")]
    event_type: String,
    topic: String,
    key_field: String,
    schema: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandEntry {
    name: String,
    event: String,
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    derived: Vec<Derived>,
}

impl Catalog {
    /// The catalog and schemas embedded in this crate (checked by this crate's tests).
    pub fn builtin() -> &'static Catalog {
        static BUILTIN: OnceLock<Catalog> = OnceLock::new();
        BUILTIN.get_or_init(|| match Catalog::load_builtin() {
            Ok(catalog) => catalog,
            // Unreachable in a released build: `builtin_catalog_is_valid` loads it in CI.
            Err(e) => panic!("the built-in catalog is invalid: {e}"),
        })
    }

    /// Loads the embedded catalog, reporting any mistake instead of panicking.
    pub fn load_builtin() -> Result<Catalog, CatalogError> {
        let catalog = Catalog::from_sources(BUILTIN_CATALOG_TOML, |path| {
            embedded::EMBEDDED_SCHEMAS
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, text)| Ok((*text).to_string()))
        })?;
        let listed: HashSet<&str> = catalog
            .events
            .iter()
            .map(|e| e.full_name.as_str())
            .collect();
        let orphans: Vec<String> = embedded::EMBEDDED_SCHEMAS
            .iter()
            .filter(|(_, text)| {
                Schema::parse_str(text)
                    .ok()
                    .and_then(|s| s.name().map(|n| n.fullname(None)))
                    .is_none_or(|name| !listed.contains(name.as_str()))
            })
            .map(|(path, _)| format!("{path} is not listed as an [[event]] in catalog.toml"))
            .collect();
        if orphans.is_empty() {
            Ok(catalog)
        } else {
            Err(CatalogError::Invalid(orphans))
        }
    }

    /// Loads `DIR/catalog.toml` and the schema files it names (paths relative to `DIR`).
    pub fn from_dir(dir: &Path) -> Result<Catalog, CatalogError> {
        let catalog_path = dir.join("catalog.toml");
        let text = std::fs::read_to_string(&catalog_path).map_err(|e| CatalogError::Io {
            path: catalog_path.display().to_string(),
            message: e.to_string(),
        })?;
        Catalog::from_sources(&text, |path| {
            let full = dir.join(path);
            Some(
                std::fs::read_to_string(&full).map_err(|e| CatalogError::Io {
                    path: full.display().to_string(),
                    message: e.to_string(),
                }),
            )
        })
    }

    /// Parses a catalog from its TOML text, reading each schema through `read_schema` (given
    /// the path written in the catalog; `None` = no such file). Checks everything.
    pub fn from_sources(
        catalog_toml: &str,
        read_schema: impl Fn(&str) -> Option<Result<String, CatalogError>>,
    ) -> Result<Catalog, CatalogError> {
        let file: CatalogFile =
            toml::from_str(catalog_toml).map_err(|e| CatalogError::Malformed(e.to_string()))?;
        let mut errors = Vec::new();
        let mut events = Vec::new();
        let mut seen = HashSet::new();
        for entry in file.event {
            if !seen.insert(entry.event_type.clone()) {
                errors.push(format!("event {} is listed twice", entry.event_type));
                continue;
            }
            let text = match read_schema(&entry.schema) {
                Some(Ok(text)) => text,
                Some(Err(e)) => return Err(e),
                None => {
                    errors.push(format!(
                        "event {}: schema file {} does not exist",
                        entry.event_type, entry.schema
                    ));
                    continue;
                }
            };
            match load_event(entry, text) {
                Ok(event) => events.push(event),
                Err(mut e) => errors.append(&mut e),
            }
        }
        let mut commands = Vec::new();
        let mut seen = HashSet::new();
        for entry in file.command {
            if !seen.insert(entry.name.clone()) {
                errors.push(format!("command {} is listed twice", entry.name));
                continue;
            }
            let Some(event) = events.iter().find(|e| e.event_type == entry.event) else {
                errors.push(format!(
                    "command {}: event {} is not an [[event]] of the catalog",
                    entry.name, entry.event
                ));
                continue;
            };
            match load_command(entry, event) {
                Ok(command) => commands.push(command),
                Err(mut e) => errors.append(&mut e),
            }
        }
        if errors.is_empty() {
            Ok(Catalog { commands, events })
        } else {
            Err(CatalogError::Invalid(errors))
        }
    }

    /// The command called `name` (`PlaceOrder`).
    pub fn command(&self, name: &str) -> Option<&Command> {
        self.commands.iter().find(|c| c.name == name)
    }

    /// Every command, in catalog order.
    pub fn commands(&self) -> &[Command] {
        &self.commands
    }

    /// Every event type, in catalog order.
    pub fn events(&self) -> &[EventSchema] {
        &self.events
    }

    /// The event type with short name `event_type` (`OrderPlaced`).
    pub fn event(&self, event_type: &str) -> Option<&EventSchema> {
        self.events.iter().find(|e| e.event_type == event_type)
    }

    /// The event type whose record has full name `full_name` (`factline.orders.OrderPlaced`).
    pub fn event_by_full_name(&self, full_name: &str) -> Option<&EventSchema> {
        self.events.iter().find(|e| e.full_name == full_name)
    }

    /// The distinct event topics, in catalog order: `customers`, `orders`.
    pub fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = Vec::new();
        for event in &self.events {
            if !topics.contains(&event.topic) {
                topics.push(event.topic.clone());
            }
        }
        topics
    }

    /// The same catalog with every topic prefixed (`test-x-` + `orders`): lets tests and
    /// tools use their own topics and subjects on a shared cluster and registry.
    pub fn with_topic_prefix(&self, prefix: &str) -> Catalog {
        let mut catalog = self.clone();
        for event in &mut catalog.events {
            event.topic = format!("{prefix}{}", event.topic);
        }
        for command in &mut catalog.commands {
            command.topic = format!("{prefix}{}", command.topic);
            command.event.topic = format!("{prefix}{}", command.event.topic);
        }
        catalog
    }
}

fn load_event(entry: EventEntry, text: String) -> Result<EventSchema, Vec<String>> {
    let context = format!("event {} ({})", entry.event_type, entry.schema);
    let schema = Schema::parse_str(&text).map_err(|e| vec![format!("{context}: {e}")])?;
    let names = Names::of(&schema);
    let Schema::Record(record) = &schema else {
        return Err(vec![format!("{context}: the schema is not a record")]);
    };
    let mut errors = Vec::new();
    if record.name.name() != entry.event_type {
        errors.push(format!(
            "{context}: the record is named {}, not {}",
            record.name.name(),
            entry.event_type
        ));
    }
    if entry.topic.is_empty() || entry.topic.ends_with(".dlq") {
        errors.push(format!("{context}: invalid topic {:?}", entry.topic));
    }
    match record.lookup.get(&entry.key_field) {
        None => errors.push(format!(
            "{context}: key field {} is not a field of the record",
            entry.key_field
        )),
        Some(&i) => {
            if !matches!(names.resolve(&record.fields[i].schema), Schema::String) {
                errors.push(format!(
                    "{context}: key field {} must be a string",
                    entry.key_field
                ));
            }
        }
    }
    let mut undocumented = BTreeSet::new();
    check_docs(&names, &schema, &mut undocumented);
    for what in undocumented {
        errors.push(format!("{context}: {what} has no doc"));
    }
    let personal = match PersonalData::of(&schema) {
        Ok(personal) => personal,
        Err(problems) => {
            errors.extend(problems.into_iter().map(|p| format!("{context}: {p}")));
            None
        }
    };
    let erases = match crate::personal::erased_subject_field(&schema) {
        Ok(field) => field,
        Err(problems) => {
            errors.extend(problems.into_iter().map(|p| format!("{context}: {p}")));
            None
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(EventSchema {
        full_name: record.name.fullname(None),
        event_type: entry.event_type,
        topic: entry.topic,
        key_field: entry.key_field,
        schema,
        schema_json: text,
        personal,
        erases,
    })
}

/// Every record and every field carries a `doc`.
fn check_docs(names: &Names<'_>, schema: &Schema, missing: &mut BTreeSet<String>) {
    match names.resolve(schema) {
        Schema::Record(record) => {
            let record_name = record.name.fullname(None);
            if record.doc.as_deref().is_none_or(str::is_empty) {
                missing.insert(format!("record {record_name}"));
            }
            for field in &record.fields {
                if field.doc.as_deref().is_none_or(str::is_empty) {
                    missing.insert(format!("field {record_name}.{}", field.name));
                }
                check_docs(names, &field.schema, missing);
            }
        }
        Schema::Enum(e) if e.doc.as_deref().is_none_or(str::is_empty) => {
            missing.insert(format!("enum {}", e.name.fullname(None)));
        }
        Schema::Array(a) => check_docs(names, &a.items, missing),
        Schema::Map(m) => check_docs(names, &m.types, missing),
        Schema::Union(u) => {
            for variant in u.variants() {
                check_docs(names, variant, missing);
            }
        }
        _ => {}
    }
}

fn load_command(entry: CommandEntry, event: &EventSchema) -> Result<Command, Vec<String>> {
    let context = format!("command {}", entry.name);
    let names = Names::of(&event.schema);
    let mut errors = Vec::new();
    let mut derived_fields = HashSet::new();
    for derived in &entry.derived {
        for e in derived.check_against(&names, &event.schema) {
            errors.push(format!("{context}: {e}"));
        }
        if !derived_fields.insert(derived.field().to_string()) {
            errors.push(format!("{context}: {} is derived twice", derived.field()));
        }
        if derived.field() == event.key_field {
            errors.push(format!("{context}: the key field cannot be derived"));
        }
    }
    for rule in &entry.rules {
        for e in rule.check_against(&names, &event.schema) {
            errors.push(format!("{context}: {e}"));
        }
        let top = rule.path.split(['.', '[']).next().unwrap_or_default();
        if derived_fields.contains(top) {
            errors.push(format!(
                "{context}: rule on {:?} targets a derived field",
                rule.path
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Command {
        name: entry.name,
        event_type: event.event_type.clone(),
        topic: event.topic.clone(),
        key_field: event.key_field.clone(),
        event: Box::new(event.clone()),
        rules: entry.rules,
        derived: entry.derived,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_is_valid() {
        let catalog = Catalog::load_builtin().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(catalog.commands().len(), 7);
        assert_eq!(catalog.events().len(), 7);
        assert_eq!(catalog.topics(), vec!["customers", "orders"]);
    }

    #[test]
    fn builtin_matches_the_sample_domain() {
        let catalog = Catalog::builtin();
        let expected = [
            (
                "RegisterCustomer",
                "CustomerRegistered",
                "customers",
                "customer_id",
            ),
            (
                "ChangeCustomerEmail",
                "CustomerEmailChanged",
                "customers",
                "customer_id",
            ),
            (
                "ForgetCustomer",
                "CustomerForgotten",
                "customers",
                "customer_id",
            ),
            ("PlaceOrder", "OrderPlaced", "orders", "order_id"),
            ("ShipOrder", "OrderShipped", "orders", "order_id"),
            ("DeliverOrder", "OrderDelivered", "orders", "order_id"),
            ("CancelOrder", "OrderCancelled", "orders", "order_id"),
        ];
        for (name, event, topic, key) in expected {
            let command = catalog.command(name).unwrap();
            assert_eq!(command.event_type, event);
            assert_eq!(command.topic, topic);
            assert_eq!(command.key_field, key);
            assert_eq!(command.event().event_type, event);
        }
        let placed = catalog.event("OrderPlaced").unwrap();
        assert_eq!(placed.full_name, "factline.orders.OrderPlaced");
        assert_eq!(placed.subject(), "orders-factline.orders.OrderPlaced");
        assert!(catalog.event("Nope").is_none());
        assert!(catalog.command("Nope").is_none());
    }

    fn catalog_with(command: &str) -> Result<Catalog, CatalogError> {
        let text = format!(
            "[[event]]\ntype = \"OrderPlaced\"\ntopic = \"orders\"\nkey_field = \"order_id\"\nschema = \"avro/orders/OrderPlaced.avsc\"\n\n{command}"
        );
        Catalog::from_sources(&text, |path| {
            embedded::EMBEDDED_SCHEMAS
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, t)| Ok((*t).to_string()))
        })
    }

    fn invalid(result: Result<Catalog, CatalogError>) -> Vec<String> {
        match result {
            Err(CatalogError::Invalid(errors)) => errors,
            other => panic!("expected an invalid catalog, got {other:?}"),
        }
    }

    #[test]
    fn rule_paths_must_exist_and_fit() {
        let errors = invalid(catalog_with(
            "[[command]]\nname = \"P\"\nevent = \"OrderPlaced\"\nrules = [{ path = \"items[].nope\", min = 1 }, { path = \"currency\", min = 1 }, { path = \"currency\", none_of = [\"XXX\"] }]",
        ));
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("no field \"nope\""), "{errors:?}");
    }

    #[test]
    fn derived_fields_must_exist_and_have_the_right_type() {
        let errors = invalid(catalog_with(
            "[[command]]\nname = \"P\"\nevent = \"OrderPlaced\"\nderived = [{ field = \"nope\", kind = \"occurred_at\" }, { field = \"order_id\", kind = \"occurred_at\" }, { field = \"total_cents\", kind = \"sum_of_products\", over = \"items\", product_of = [\"sku\"] }]",
        ));
        assert_eq!(errors.len(), 4, "{errors:?}");
    }

    #[test]
    fn key_field_must_be_a_string_field() {
        let text = "[[event]]\ntype = \"OrderPlaced\"\ntopic = \"orders\"\nkey_field = \"total_cents\"\nschema = \"x.avsc\"\n";
        let schema = embedded::EMBEDDED_SCHEMAS
            .iter()
            .find(|(p, _)| p.ends_with("OrderPlaced.avsc"))
            .unwrap()
            .1;
        let errors = invalid(Catalog::from_sources(text, |_| {
            Some(Ok(schema.to_string()))
        }));
        assert!(errors[0].contains("must be a string"), "{errors:?}");
    }

    #[test]
    fn unknown_event_and_missing_file_are_reported() {
        let errors = invalid(catalog_with("[[command]]\nname = \"P\"\nevent = \"Nope\""));
        assert!(errors[0].contains("Nope"));
        let errors = invalid(Catalog::from_sources(
            "[[event]]\ntype = \"X\"\ntopic = \"t\"\nkey_field = \"id\"\nschema = \"missing.avsc\"",
            |_| None,
        ));
        assert!(errors[0].contains("does not exist"));
    }

    #[test]
    fn undocumented_fields_are_rejected() {
        let schema =
            r#"{"type":"record","name":"X","doc":"x","fields":[{"name":"id","type":"string"}]}"#;
        let errors = invalid(Catalog::from_sources(
            "[[event]]\ntype = \"X\"\ntopic = \"t\"\nkey_field = \"id\"\nschema = \"x.avsc\"",
            |_| Some(Ok(schema.to_string())),
        ));
        assert_eq!(errors, vec!["event X (x.avsc): field X.id has no doc"]);
    }

    #[test]
    fn topic_prefix_changes_topics_and_subjects() {
        let catalog = Catalog::builtin().with_topic_prefix("t1-");
        assert_eq!(catalog.topics(), vec!["t1-customers", "t1-orders"]);
        let command = catalog.command("PlaceOrder").unwrap();
        assert_eq!(command.topic, "t1-orders");
        assert_eq!(
            command.event().subject(),
            "t1-orders-factline.orders.OrderPlaced"
        );
    }

    #[test]
    fn the_sample_domain_declares_its_personal_data() {
        let catalog = Catalog::builtin();
        let fields = |event: &str| {
            let personal = catalog.event(event).unwrap().personal.clone();
            personal.map(|p| {
                assert_eq!(p.subject_field, "customer_id");
                p.fields.iter().map(|f| f.join(".")).collect::<Vec<_>>()
            })
        };
        assert_eq!(fields("CustomerRegistered").unwrap(), ["email", "name"]);
        assert_eq!(fields("CustomerEmailChanged").unwrap(), ["email"]);
        assert_eq!(
            fields("OrderPlaced").unwrap(),
            [
                "shipping_address.line1",
                "shipping_address.line2",
                "shipping_address.city",
                "shipping_address.postal_code"
            ]
        );
        for event in ["CustomerForgotten", "OrderShipped", "OrderCancelled"] {
            assert_eq!(fields(event), None, "{event}");
        }
        let erasing: Vec<_> = catalog
            .events()
            .iter()
            .filter_map(|e| Some((e.event_type.as_str(), e.erases.as_deref()?)))
            .collect();
        assert_eq!(erasing, [("CustomerForgotten", "customer_id")]);
        // the marking is part of the text the registry is given
        let text = &catalog.event("CustomerRegistered").unwrap().schema_json;
        assert!(text.contains("\"factline.subject\": \"customer_id\""));
    }

    #[test]
    fn personal_data_without_a_subject_makes_the_catalog_invalid() {
        let schema = r#"{"type":"record","name":"X","doc":"x","fields":[
            {"name":"id","type":"string","doc":"i"},
            {"name":"email","type":"string","doc":"e","factline.personal":true}]}"#;
        let errors = invalid(Catalog::from_sources(
            "[[event]]\ntype = \"X\"\ntopic = \"t\"\nkey_field = \"id\"\nschema = \"x.avsc\"",
            |_| Some(Ok(schema.to_string())),
        ));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("event X (x.avsc): fields email are marked"),
            "{errors:?}"
        );
    }
}
