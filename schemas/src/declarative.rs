//! The declarative read model: the TOML shape of a declarative projection, its validation, and
//! the same structure as JSON. It is a contract between the projector that builds the read
//! model (`factline-projectors` runs it) and the read API that serves it (`/views/...`): the
//! projector records the parsed configuration in PostgreSQL when it starts
//! (`factline_projector_rebuilds.declarative_config`), and the read API serves the views of each
//! projector's live version from there, so neither side reads the other's files.
//!
//! ```toml
//! name = "customer_directory"    # projector name (group, checkpoint key, metrics label)
//! version = 1                    # tables are created as {table}_v{version}, views without suffix
//! topics = ["customers"]
//!
//! [[tables]]
//! name = "customer_directory"
//! primary_key = ["customer_id"]
//! columns = { customer_id = "text", email = "text", updated_at = "timestamptz" }
//!
//! [[on]]
//! event_type = "CustomerEmailChanged"
//! table = "customer_directory"
//! action = "upsert"                       # insert | upsert | update | delete
//! set = { customer_id = "customer_id", email = "email", updated_at = "changed_at" }
//! key = { customer_id = "customer_id" }   # update/delete: which row (primary key columns)
//! newer = "updated_at"                    # only if the row's column is null or not newer
//! older = "cancelled_at"                  # only if null or not older (earliest wins; PostgreSQL)
//! row_equals = { forgotten = false }      # only if the row's columns hold these values
//! when = [{ field = "currency", equals = "EUR" }]   # only for events matching all
//! ```
//!
//! The same file can target Elasticsearch instead (`sink = "elasticsearch"`): `[[indices]]`
//! replace `[[tables]]` and mappings name an `index`; see
//! `projectors/config/customer_search.toml` in the repository:
//!
//! ```toml
//! sink = "elasticsearch"
//! [[indices]]
//! name = "customer_search"       # alias {prefix}customer_search -> {prefix}customer_search_v{version}
//! id = "customer_id"             # the field holding the document id
//! fields = { customer_id = "keyword", name = "text", email_at = "date" }
//! [[on]]
//! event_type = "CustomerRegistered"
//! index = "customer_search"
//! action = "upsert"
//! set = { customer_id = "customer_id", name = "name" }
//! ```
//!
//! A value in `set`, `key` and `when.field` is a dotted path into the event
//! (`shipping_address.city`), an envelope field (`@event_id`, `@event_type`, `@occurred_at`),
//! `@null`; a TOML number or boolean is a literal, as is `{ literal = "text" }`;
//! `{ sum = "items[].quantity" }` sums a numeric field over an array.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A whole declarative projection file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeclarativeConfig {
    /// Projector name.
    pub name: String,
    /// Read-model version.
    pub version: u32,
    /// Topics consumed (without test prefix).
    pub topics: Vec<String>,
    /// Where the read model lives (default `postgres`).
    #[serde(default)]
    pub sink: SinkKind,
    /// The tables (PostgreSQL).
    #[serde(default)]
    pub tables: Vec<TableSpec>,
    /// The indices (Elasticsearch); the first one is served through its alias.
    #[serde(default)]
    pub indices: Vec<IndexDecl>,
    /// The mappings, applied in file order for each event.
    pub on: Vec<Mapping>,
}

/// The store of a declarative projection.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// PostgreSQL tables behind views.
    #[default]
    Postgres,
    /// Elasticsearch indices behind aliases.
    Elasticsearch,
}

/// An Elasticsearch index of a declarative projection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IndexDecl {
    /// Base name (the alias); the index is `{name}_v{version}`.
    pub name: String,
    /// The field holding the document id.
    pub id: String,
    /// Field name -> type (the explicit mapping; unknown fields are rejected by the index).
    pub fields: BTreeMap<String, FieldType>,
}

/// The supported Elasticsearch field types.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// `keyword`: exact values, filters, sorting.
    Keyword,
    /// `text`: full text.
    Text,
    /// `long`.
    Long,
    /// `integer`.
    Integer,
    /// `double`.
    Double,
    /// `boolean`.
    Boolean,
    /// `date` (RFC 3339).
    Date,
    /// `object` (stored and indexed dynamically).
    Object,
}

impl FieldType {
    /// The Elasticsearch type name.
    pub fn es(self) -> &'static str {
        match self {
            FieldType::Keyword => "keyword",
            FieldType::Text => "text",
            FieldType::Long => "long",
            FieldType::Integer => "integer",
            FieldType::Double => "double",
            FieldType::Boolean => "boolean",
            FieldType::Date => "date",
            FieldType::Object => "object",
        }
    }
}

/// A table of the read model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// Base name (the view); the table is `{name}_v{version}`.
    pub name: String,
    /// Primary key columns.
    pub primary_key: Vec<String>,
    /// Column name -> SQL type.
    pub columns: BTreeMap<String, ColumnType>,
}

/// The supported column types.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// `text`.
    Text,
    /// `bigint`.
    Bigint,
    /// `integer`.
    Integer,
    /// `boolean`.
    Boolean,
    /// `timestamptz`.
    Timestamptz,
    /// `jsonb`.
    Jsonb,
    /// `double precision`.
    Double,
}

impl ColumnType {
    /// The SQL type name.
    pub fn sql(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Bigint => "bigint",
            ColumnType::Integer => "integer",
            ColumnType::Boolean => "boolean",
            ColumnType::Timestamptz => "timestamptz",
            ColumnType::Jsonb => "jsonb",
            ColumnType::Double => "double precision",
        }
    }
}

/// What an event does to a table.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Insert a row; an existing row is left alone.
    Insert,
    /// Insert, or update the `set` columns of the existing row (subject to the guards).
    Upsert,
    /// Update the row found by `key` (subject to the guards); no row: nothing.
    Update,
    /// Delete the row found by `key` (subject to the guards).
    Delete,
}

/// Where a value comes from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Source {
    /// A path (`a.b`), an envelope field (`@occurred_at`) or `@null`.
    Path(String),
    /// A literal string.
    Literal {
        /// The text.
        literal: String,
    },
    /// A literal boolean.
    Bool(bool),
    /// A literal integer.
    Int(i64),
    /// A literal float.
    Float(f64),
    /// The sum of a numeric field over an array: `{ sum = "items[].quantity" }`.
    Sum {
        /// `array[].field` (dotted paths on both sides).
        sum: String,
    },
}

/// An event filter: the field equals the value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// Path into the event.
    pub field: String,
    /// The expected value (compared as JSON).
    pub equals: toml::Value,
}

/// One mapping from an event type to a table change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// The event type, e.g. `CustomerRegistered`.
    pub event_type: String,
    /// The table's (or with `sink = "elasticsearch"`, the index's) base name.
    #[serde(alias = "index")]
    pub table: String,
    /// The change.
    pub action: Action,
    /// Column -> value, for insert, upsert and update.
    #[serde(default)]
    pub set: BTreeMap<String, Source>,
    /// Primary key column -> value, for update and delete.
    #[serde(default)]
    pub key: BTreeMap<String, Source>,
    /// Guard: the change applies only if this column of the row is null or not newer than the
    /// new value (which must be in `set`, or for delete in `key`/`set`).
    pub newer: Option<String>,
    /// Guard: the change applies only if this column of the row is null or not older than the
    /// new value (the earliest fact wins), like `newer`.
    pub older: Option<String>,
    /// Guard: the change applies only if the row's columns hold these values.
    #[serde(default)]
    pub row_equals: BTreeMap<String, Source>,
    /// Filter: the mapping applies only to events matching all of these.
    #[serde(default)]
    pub when: Vec<When>,
}

/// A problem with a declarative configuration file.
#[derive(Debug, thiserror::Error)]
pub enum DeclarativeError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML does not parse.
    #[error("invalid toml: {0}")]
    Toml(#[from] toml::de::Error),
    /// The JSON form (as recorded in PostgreSQL) does not have the expected shape.
    #[error("invalid declarative projection json: {0}")]
    Json(#[from] serde_json::Error),
    /// The content is inconsistent.
    #[error("invalid declarative projection: {0}")]
    Invalid(String),
}

fn identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 50
}

impl DeclarativeConfig {
    /// Parses and validates TOML text; a file maps at least one event (`on`).
    pub fn parse(text: &str) -> Result<DeclarativeConfig, DeclarativeError> {
        let config: DeclarativeConfig = toml::from_str(text)?;
        config.validate()?;
        if config.on.is_empty() {
            return Err(DeclarativeError::Invalid("on must not be empty".into()));
        }
        Ok(config)
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &str) -> Result<DeclarativeConfig, DeclarativeError> {
        let text = std::fs::read_to_string(path).map_err(|source| DeclarativeError::Read {
            path: path.to_owned(),
            source,
        })?;
        DeclarativeConfig::parse(&text)
    }

    /// The JSON form recorded in PostgreSQL: the parsed structure, name and version included.
    pub fn to_json(&self) -> serde_json::Value {
        // a struct of strings, numbers, maps and TOML values always serializes
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Reads and validates the JSON form written by [`DeclarativeConfig::to_json`].
    pub fn from_json(value: serde_json::Value) -> Result<DeclarativeConfig, DeclarativeError> {
        let config: DeclarativeConfig = serde_json::from_value(value)?;
        config.validate()?;
        Ok(config)
    }

    /// The index declaration of a base name.
    pub fn index(&self, name: &str) -> Option<&IndexDecl> {
        self.indices.iter().find(|t| t.name == name)
    }

    /// The table spec of a base name.
    pub fn table(&self, name: &str) -> Option<&TableSpec> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// Checks names, columns, keys and guards. `on` may be empty: a projection in code records
    /// its served tables (or indices) this way, so the read API serves them like a declarative
    /// projection's, while its changes are code ([`DeclarativeConfig::parse`] requires `on`).
    pub fn validate(&self) -> Result<(), DeclarativeError> {
        let bad = |m: String| Err(DeclarativeError::Invalid(m));
        if !identifier(&self.name) {
            return bad(format!(
                "name {:?} must be a lowercase identifier",
                self.name
            ));
        }
        if self.version == 0 {
            return bad("version must be at least 1".into());
        }
        if self.sink == SinkKind::Elasticsearch {
            return self.validate_search();
        }
        if self.topics.is_empty() || self.tables.is_empty() {
            return bad("topics and tables must not be empty".into());
        }
        if !self.indices.is_empty() {
            return bad("indices need sink = \"elasticsearch\"".into());
        }
        let mut names = BTreeSet::new();
        for table in &self.tables {
            if !identifier(&table.name) || !names.insert(&table.name) {
                return bad(format!(
                    "table name {:?} is invalid or repeated",
                    table.name
                ));
            }
            if let Some(c) = table.columns.keys().find(|c| !identifier(c)) {
                return bad(format!(
                    "column {c:?} of {} is not an identifier",
                    table.name
                ));
            }
            if table.primary_key.is_empty()
                || table
                    .primary_key
                    .iter()
                    .any(|k| !table.columns.contains_key(k))
            {
                return bad(format!(
                    "primary key of {} must name declared columns",
                    table.name
                ));
            }
        }
        for (i, m) in self.on.iter().enumerate() {
            let at = format!("on[{i}] ({})", m.event_type);
            let Some(table) = self.table(&m.table) else {
                return bad(format!("{at}: unknown table {}", m.table));
            };
            let known = |c: &String| table.columns.contains_key(c);
            if let Some(c) = m
                .set
                .keys()
                .chain(m.key.keys())
                .chain(m.row_equals.keys())
                .chain(m.newer.iter())
                .chain(m.older.iter())
                .find(|c| !known(c))
            {
                return bad(format!("{at}: unknown column {c} in {}", m.table));
            }
            let pk: BTreeSet<&String> = table.primary_key.iter().collect();
            match m.action {
                Action::Insert | Action::Upsert => {
                    if !pk.iter().all(|k| m.set.contains_key(*k)) {
                        return bad(format!("{at}: set must include the primary key"));
                    }
                    if !m.key.is_empty() {
                        return bad(format!("{at}: key is for update and delete"));
                    }
                }
                Action::Update | Action::Delete => {
                    if m.key.keys().collect::<BTreeSet<_>>() != pk {
                        return bad(format!("{at}: key must name exactly the primary key"));
                    }
                    if m.action == Action::Update && m.set.is_empty() {
                        return bad(format!("{at}: update needs set"));
                    }
                    if m.action == Action::Delete && !m.set.is_empty() {
                        return bad(format!("{at}: delete takes no set"));
                    }
                }
            }
            if m.action == Action::Insert
                && (m.newer.is_some() || m.older.is_some() || !m.row_equals.is_empty())
            {
                return bad(format!("{at}: insert takes no guards"));
            }
            for (guard, column) in [("newer", &m.newer), ("older", &m.older)] {
                if let Some(c) = column {
                    if !m.set.contains_key(c) && !m.key.contains_key(c) {
                        return bad(format!("{at}: {guard} column {c} needs a value in set"));
                    }
                }
            }
        }
        Ok(())
    }

    fn validate_search(&self) -> Result<(), DeclarativeError> {
        let bad = |m: String| Err(DeclarativeError::Invalid(m));
        if self.topics.is_empty() || self.indices.is_empty() {
            return bad("topics and indices must not be empty".into());
        }
        if !self.tables.is_empty() {
            return bad("tables need sink = \"postgres\"".into());
        }
        let mut names = BTreeSet::new();
        for index in &self.indices {
            if !identifier(&index.name) || !names.insert(&index.name) {
                return bad(format!(
                    "index name {:?} is invalid or repeated",
                    index.name
                ));
            }
            if let Some(f) = index
                .fields
                .keys()
                .find(|f| !identifier(f) || *f == "factline")
            {
                return bad(format!(
                    "field {f:?} of {} is not a usable name",
                    index.name
                ));
            }
            if index.fields.get(&index.id) != Some(&FieldType::Keyword) {
                return bad(format!(
                    "id {} of {} must be a keyword field",
                    index.id, index.name
                ));
            }
        }
        for (i, m) in self.on.iter().enumerate() {
            let at = format!("on[{i}] ({})", m.event_type);
            let Some(index) = self.index(&m.table) else {
                return bad(format!("{at}: unknown index {}", m.table));
            };
            if let Some(f) = m
                .set
                .keys()
                .chain(m.key.keys())
                .chain(m.row_equals.keys())
                .chain(m.newer.iter())
                .find(|f| !index.fields.contains_key(*f))
            {
                return bad(format!("{at}: unknown field {f} in {}", m.table));
            }
            match m.action {
                Action::Insert | Action::Upsert => {
                    if !m.set.contains_key(&index.id) || !m.key.is_empty() {
                        return bad(format!(
                            "{at}: set must include the id {}; key is for update and delete",
                            index.id
                        ));
                    }
                }
                Action::Update | Action::Delete => {
                    if m.key.len() != 1 || !m.key.contains_key(&index.id) {
                        return bad(format!("{at}: key must name exactly the id {}", index.id));
                    }
                    if (m.action == Action::Update) == m.set.is_empty() {
                        return bad(format!("{at}: update needs set, delete takes none"));
                    }
                }
            }
            if m.action == Action::Insert
                && (m.newer.is_some() || m.older.is_some() || !m.row_equals.is_empty())
            {
                return bad(format!("{at}: insert takes no guards"));
            }
            if m.older.is_some() {
                return bad(format!(
                    "{at}: older is not supported for elasticsearch yet"
                ));
            }
            if let Some(newer) = &m.newer {
                if !m.set.contains_key(newer) && !m.key.contains_key(newer) {
                    return bad(format!("{at}: newer field {newer} needs a value in set"));
                }
            }
        }
        Ok(())
    }

    /// The distinct event types mapped.
    pub fn event_types(&self) -> Vec<String> {
        self.on
            .iter()
            .map(|m| m.event_type.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERYTHING: &str = include_str!("../testdata/declarative-everything.toml");

    #[test]
    fn the_json_form_round_trips_unchanged() {
        let config = DeclarativeConfig::parse(EVERYTHING).unwrap();
        let json = config.to_json();
        assert_eq!(json["name"], "everything");
        assert_eq!(json["version"], 3);
        assert_eq!(json["sink"], "postgres");
        let back = DeclarativeConfig::from_json(json.clone()).unwrap();
        assert_eq!(back, config);
        // and again through text, as PostgreSQL hands jsonb back
        let text = serde_json::to_string(&json).unwrap();
        let again = DeclarativeConfig::from_json(serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(again, config);
    }

    #[test]
    fn a_search_config_round_trips_unchanged() {
        let text = r#"
name = "people"
version = 1
topics = ["customers"]
sink = "elasticsearch"
[[indices]]
name = "people"
id = "customer_id"
fields = { customer_id = "keyword", name = "text", n = "long", i = "integer", d = "double", b = "boolean", at = "date", o = "object" }
[[on]]
event_type = "CustomerRegistered"
index = "people"
action = "upsert"
set = { customer_id = "customer_id", name = "name" }
"#;
        let config = DeclarativeConfig::parse(text).unwrap();
        assert_eq!(config.sink, SinkKind::Elasticsearch);
        assert_eq!(
            DeclarativeConfig::from_json(config.to_json()).unwrap(),
            config
        );
    }

    #[test]
    fn served_tables_need_no_mappings_but_a_file_does() {
        // what a projection in code records so the read API serves its table: no `on`
        let mut config = DeclarativeConfig::parse(EVERYTHING).unwrap();
        config.on.clear();
        assert_eq!(
            DeclarativeConfig::from_json(config.to_json()).unwrap(),
            config
        );
        let file = "name = \"x\"\nversion = 1\ntopics = [\"orders\"]\non = []\n\
                    [[tables]]\nname = \"x\"\nprimary_key = [\"id\"]\ncolumns = { id = \"text\" }\n";
        assert!(matches!(
            DeclarativeConfig::parse(file),
            Err(DeclarativeError::Invalid(m)) if m.contains("on")
        ));
    }

    #[test]
    fn json_that_is_not_a_valid_config_is_refused() {
        let mut json = DeclarativeConfig::parse(EVERYTHING).unwrap().to_json();
        json["tables"][0]["primary_key"] = serde_json::json!(["missing"]);
        assert!(matches!(
            DeclarativeConfig::from_json(json),
            Err(DeclarativeError::Invalid(_))
        ));
        assert!(matches!(
            DeclarativeConfig::from_json(serde_json::json!({"name": "x", "surprise": 1})),
            Err(DeclarativeError::Json(_))
        ));
    }
}
