//! Read endpoints for declarative projections, with no code: every table (PostgreSQL) or
//! index (Elasticsearch) a declarative projection declares is served by key
//! (`/views/{name}/{key}`, single-column keys) and as a list filtered on its declared
//! columns (`/views/{name}?column=value&limit=&cursor=`), keyset-paginated by key.
//!
//! The read API reads no configuration file: each declarative projector records its parsed
//! configuration with its version in PostgreSQL when it starts, and the status refresh
//! ([`crate::status`]) builds the [`Views`] from the configuration of each projector's serving
//! version. Column names come from those validated configurations only; values are always
//! bound parameters, checked against the declared type first (a word for a boolean, date or
//! number column is a `400` naming the column, never an error of the store).

use std::collections::BTreeMap;

use factline_schemas::declarative::{ColumnType, DeclarativeConfig, FieldType, SinkKind};
use serde_json::Value;

use crate::cursor;
use crate::error::ApiError;

/// The type of a declared column or field, as far as filtering goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Exact text (PostgreSQL `text`, Elasticsearch `keyword`).
    Text,
    /// Analysed text (Elasticsearch `text`): matched, not compared.
    FullText,
    /// A 32-bit integer.
    Integer,
    /// A 64-bit integer.
    BigInt,
    /// A floating-point number.
    Double,
    /// `true` or `false`.
    Boolean,
    /// A time (RFC 3339 or a date).
    Time,
    /// A JSON value (PostgreSQL `jsonb`).
    Json,
    /// An object (Elasticsearch `object`): not filterable.
    Object,
}

impl From<ColumnType> for Kind {
    fn from(t: ColumnType) -> Kind {
        match t {
            ColumnType::Text => Kind::Text,
            ColumnType::Bigint => Kind::BigInt,
            ColumnType::Integer => Kind::Integer,
            ColumnType::Boolean => Kind::Boolean,
            ColumnType::Timestamptz => Kind::Time,
            ColumnType::Jsonb => Kind::Json,
            ColumnType::Double => Kind::Double,
        }
    }
}

impl From<FieldType> for Kind {
    fn from(t: FieldType) -> Kind {
        match t {
            FieldType::Keyword => Kind::Text,
            FieldType::Text => Kind::FullText,
            FieldType::Long => Kind::BigInt,
            FieldType::Integer => Kind::Integer,
            FieldType::Double => Kind::Double,
            FieldType::Boolean => Kind::Boolean,
            FieldType::Date => Kind::Time,
            FieldType::Object => Kind::Object,
        }
    }
}

impl Kind {
    /// The PostgreSQL type a text parameter is cast to before comparing (`None`: compare as
    /// text).
    pub fn sql_cast(self) -> Option<&'static str> {
        match self {
            Kind::Text | Kind::FullText | Kind::Object => None,
            Kind::Integer => Some("integer"),
            Kind::BigInt => Some("bigint"),
            Kind::Double => Some("double precision"),
            Kind::Boolean => Some("boolean"),
            Kind::Time => Some("timestamptz"),
            Kind::Json => Some("jsonb"),
        }
    }

    /// The type of this field's values in an Elasticsearch sort (for cursors).
    pub fn sort_kind(self) -> cursor::Kind {
        match self {
            Kind::Integer | Kind::BigInt | Kind::Time => cursor::Kind::Integer,
            Kind::Double => cursor::Kind::Number,
            Kind::Boolean => cursor::Kind::Boolean,
            Kind::Text | Kind::FullText | Kind::Json | Kind::Object => cursor::Kind::Keyword,
        }
    }

    /// Checks a filter value given for `column` and returns it typed (JSON) for the store.
    pub fn check(self, column: &str, text: &str) -> Result<Value, ApiError> {
        match self {
            Kind::Text | Kind::FullText => Ok(Value::from(text)),
            Kind::Integer => text
                .parse::<i32>()
                .map(Value::from)
                .map_err(|_| ApiError::bad(column, "expected a 32-bit integer")),
            Kind::BigInt => text
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| ApiError::bad(column, "expected a 64-bit integer")),
            Kind::Double => text
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .map(Value::from)
                .ok_or_else(|| ApiError::bad(column, "expected a finite number")),
            Kind::Boolean => match text {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err(ApiError::bad(column, "expected true or false")),
            },
            Kind::Time => crate::params::time(column, text)
                .map(|t| Value::from(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))),
            Kind::Json => serde_json::from_str::<Value>(text)
                .map(|_| Value::from(text))
                .map_err(|_| ApiError::bad(column, "expected a JSON value")),
            Kind::Object => Err(ApiError::bad(
                column,
                "an object field cannot be filtered on",
            )),
        }
    }
}

/// One served view.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// The view (PostgreSQL) or alias base (Elasticsearch) name.
    pub name: String,
    /// The projector keeping it.
    pub projector: String,
    /// Where it lives.
    pub sink: SinkKind,
    /// The key columns (PostgreSQL primary key, or the Elasticsearch id field).
    pub key: Vec<String>,
    /// Every declared column or field, filterable.
    pub columns: Vec<String>,
    /// The declared type of each column or field.
    pub types: BTreeMap<String, Kind>,
}

impl View {
    /// The type of a declared column (text when the declaration does not say).
    pub fn kind(&self, column: &str) -> Kind {
        self.types.get(column).copied().unwrap_or(Kind::Text)
    }

    /// The types of the key's values in a cursor.
    pub fn cursor_kinds(&self) -> Vec<cursor::Kind> {
        match self.sink {
            // keys are compared as text in PostgreSQL
            SinkKind::Postgres => vec![cursor::Kind::Text; self.key.len()],
            SinkKind::Elasticsearch => self.key.iter().map(|k| self.kind(k).sort_kind()).collect(),
        }
    }
}

/// Every declarative view, by name.
#[derive(Debug, Clone, Default)]
pub struct Views {
    /// By view name.
    pub by_name: BTreeMap<String, View>,
}

impl Views {
    /// The views of the given configurations; a name declared twice is served from the first
    /// configuration that declares it.
    pub fn of<'a>(configs: impl IntoIterator<Item = &'a DeclarativeConfig>) -> Views {
        let mut views = Views::default();
        for config in configs {
            views.add(config);
        }
        views
    }

    /// Adds the tables or indices of one config.
    pub fn add(&mut self, config: &DeclarativeConfig) {
        match config.sink {
            SinkKind::Postgres => {
                for table in &config.tables {
                    self.by_name
                        .entry(table.name.clone())
                        .or_insert_with(|| View {
                            name: table.name.clone(),
                            projector: config.name.clone(),
                            sink: SinkKind::Postgres,
                            key: table.primary_key.clone(),
                            columns: table.columns.keys().cloned().collect(),
                            types: table
                                .columns
                                .iter()
                                .map(|(c, t)| (c.clone(), Kind::from(*t)))
                                .collect(),
                        });
                }
            }
            SinkKind::Elasticsearch => {
                for index in &config.indices {
                    self.by_name
                        .entry(index.name.clone())
                        .or_insert_with(|| View {
                            name: index.name.clone(),
                            projector: config.name.clone(),
                            sink: SinkKind::Elasticsearch,
                            key: vec![index.id.clone()],
                            columns: index.fields.keys().cloned().collect(),
                            types: index
                                .fields
                                .iter()
                                .map(|(f, t)| (f.clone(), Kind::from(*t)))
                                .collect(),
                        });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_configs_become_views() {
        let configs = [
            include_str!("../../projectors/config/customer_directory.toml"),
            include_str!("../../projectors/config/customer_search.toml"),
        ]
        .map(|text| DeclarativeConfig::parse(text).unwrap());
        let views = Views::of(&configs);
        let directory = &views.by_name["customer_directory"];
        assert_eq!(directory.key, vec!["customer_id"]);
        assert_eq!(directory.sink, SinkKind::Postgres);
        assert!(directory.columns.contains(&"email".to_string()));
        assert_eq!(directory.kind("forgotten"), Kind::Boolean);
        assert!(directory
            .kind("forgotten")
            .check("forgotten", "word")
            .is_err());
        assert_eq!(
            directory
                .kind("registered_at")
                .check("registered_at", "2026-11-23")
                .unwrap(),
            Value::from("2026-11-23T00:00:00Z")
        );
        let search = &views.by_name["customer_search"];
        assert_eq!(search.cursor_kinds(), vec![cursor::Kind::Keyword]);
        assert!(Kind::Integer.check("n", "99999999999").is_err());
        assert!(Kind::Double.check("x", "NaN").is_err());
        // a name declared twice is served from the first declaration
        let mut other = configs[0].clone();
        other.name = "impostor".into();
        let twice = Views::of([&configs[0], &other]);
        assert_eq!(
            twice.by_name["customer_directory"].projector,
            "customer_directory"
        );
        assert!(Views::of([]).by_name.is_empty());
    }
}
