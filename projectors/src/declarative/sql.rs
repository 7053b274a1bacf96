//! Pure translation of a mapping and an event into one SQL statement with text parameters
//! (each cast to its column's type in SQL).

use serde_json::Value;

use super::config::{Action, ColumnType, Mapping, Source, TableSpec, When};
use crate::projection::versioned_table;

/// The envelope fields a mapping can read (`@event_id`, `@event_type`, `@occurred_at`).
#[derive(Debug, Clone)]
pub struct EnvelopeFields {
    /// `@event_id`.
    pub event_id: String,
    /// `@event_type`.
    pub event_type: String,
    /// `@occurred_at` (RFC 3339).
    pub occurred_at: String,
}

/// A statement ready to execute.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// The SQL.
    pub sql: String,
    /// The parameters as text (`None` is NULL).
    pub params: Vec<Option<String>>,
}

/// Reads a dotted path from JSON.
pub fn lookup<'a>(data: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(data, |v, part| match v {
        Value::Object(map) => map.get(part),
        Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

fn json_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

/// The text value of a source for this event.
pub fn resolve(source: &Source, data: &Value, envelope: &EnvelopeFields) -> Option<String> {
    match source {
        Source::Path(path) => match path.as_str() {
            "@null" => None,
            "@event_id" => Some(envelope.event_id.clone()),
            "@event_type" => Some(envelope.event_type.clone()),
            "@occurred_at" => Some(envelope.occurred_at.clone()),
            path => lookup(data, path).and_then(json_text),
        },
        Source::Literal { literal } => Some(literal.clone()),
        Source::Bool(b) => Some(b.to_string()),
        Source::Int(i) => Some(i.to_string()),
        Source::Float(f) => Some(f.to_string()),
        Source::Sum { sum } => sum_over(data, sum).map(|n| n.to_string()),
    }
}

/// The sum of `array[].field` over the event (`None` if the array is missing or a value is
/// not a number).
pub fn sum_over(data: &Value, spec: &str) -> Option<serde_json::Number> {
    let (array, field) = spec.split_once("[].")?;
    let items = lookup(data, array)?.as_array()?;
    let mut int: Option<i64> = Some(0);
    let mut float = 0.0;
    for item in items {
        let n = lookup(item, field)?;
        float += n.as_f64()?;
        int = match (int, n.as_i64()) {
            (Some(total), Some(v)) => total.checked_add(v),
            _ => None,
        };
    }
    match int {
        Some(total) => Some(total.into()),
        None => serde_json::Number::from_f64(float),
    }
}

/// Whether the event matches every `when` filter.
pub fn matches(when: &[When], data: &Value) -> bool {
    when.iter().all(|w| {
        let expected = serde_json::to_value(&w.equals).unwrap_or(Value::Null);
        lookup(data, &w.field) == Some(&expected)
    })
}

struct Params(Vec<Option<String>>);

impl Params {
    fn push(&mut self, value: Option<String>, ty: ColumnType) -> String {
        self.0.push(value);
        format!("CAST(${}::text AS {})", self.0.len(), ty.sql())
    }
}

fn column_type(table: &TableSpec, column: &str) -> ColumnType {
    table
        .columns
        .get(column)
        .copied()
        .unwrap_or(ColumnType::Text)
}

/// Builds the statement of a mapping for one event (the mapping was validated against the
/// table).
pub fn build(
    mapping: &Mapping,
    table: &TableSpec,
    version: u32,
    data: &Value,
    envelope: &EnvelopeFields,
) -> Statement {
    let name = versioned_table(&table.name, version);
    let mut params = Params(Vec::new());
    let mut guards = Vec::new();
    let guard_values = |params: &mut Params,
                        new_value: Option<String>,
                        older_value: Option<String>| {
        let mut out = Vec::new();
        for (column, source) in &mapping.row_equals {
            let value = params.push(resolve(source, data, envelope), column_type(table, column));
            out.push(format!("cur.{column} IS NOT DISTINCT FROM {value}"));
        }
        if let (Some(column), Some(new_value)) = (&mapping.newer, &new_value) {
            out.push(format!(
                "(cur.{column} IS NULL OR cur.{column} <= {new_value})"
            ));
        }
        if let (Some(column), Some(new_value)) = (&mapping.older, &older_value) {
            out.push(format!(
                "(cur.{column} IS NULL OR cur.{column} >= {new_value})"
            ));
        }
        out
    };
    let sql = match mapping.action {
        Action::Insert | Action::Upsert => {
            let columns: Vec<&String> = mapping.set.keys().collect();
            let values: Vec<String> = mapping
                .set
                .iter()
                .map(|(c, s)| params.push(resolve(s, data, envelope), column_type(table, c)))
                .collect();
            let head = format!(
                "INSERT INTO {name} AS cur ({}) VALUES ({})",
                columns
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                values.join(", ")
            );
            let updates: Vec<String> = columns
                .iter()
                .filter(|c| !table.primary_key.contains(c))
                .map(|c| format!("{c} = EXCLUDED.{c}"))
                .collect();
            if mapping.action == Action::Insert || updates.is_empty() {
                format!("{head} ON CONFLICT DO NOTHING")
            } else {
                let newer = mapping.newer.as_ref().map(|c| format!("EXCLUDED.{c}"));
                let older = mapping.older.as_ref().map(|c| format!("EXCLUDED.{c}"));
                guards.extend(guard_values(&mut params, newer, older));
                let mut sql = format!(
                    "{head} ON CONFLICT ({}) DO UPDATE SET {}",
                    table.primary_key.join(", "),
                    updates.join(", ")
                );
                if !guards.is_empty() {
                    sql.push_str(&format!(" WHERE {}", guards.join(" AND ")));
                }
                sql
            }
        }
        Action::Update | Action::Delete => {
            let mut sets = Vec::new();
            let mut newer_value = None;
            let mut older_value = None;
            for (column, source) in &mapping.set {
                let value =
                    params.push(resolve(source, data, envelope), column_type(table, column));
                if mapping.newer.as_ref() == Some(column) {
                    newer_value = Some(value.clone());
                }
                if mapping.older.as_ref() == Some(column) {
                    older_value = Some(value.clone());
                }
                sets.push(format!("{column} = {value}"));
            }
            let mut conditions = Vec::new();
            for (column, source) in &mapping.key {
                let value =
                    params.push(resolve(source, data, envelope), column_type(table, column));
                if newer_value.is_none() && mapping.newer.as_ref() == Some(column) {
                    newer_value = Some(value.clone());
                }
                if older_value.is_none() && mapping.older.as_ref() == Some(column) {
                    older_value = Some(value.clone());
                }
                conditions.push(format!("cur.{column} = {value}"));
            }
            conditions.extend(guard_values(&mut params, newer_value, older_value));
            if mapping.action == Action::Update {
                format!(
                    "UPDATE {name} AS cur SET {} WHERE {}",
                    sets.join(", "),
                    conditions.join(" AND ")
                )
            } else {
                format!(
                    "DELETE FROM {name} AS cur WHERE {}",
                    conditions.join(" AND ")
                )
            }
        }
    };
    Statement {
        sql,
        params: params.0,
    }
}

/// The `CREATE TABLE` of a table spec.
pub fn create_table(table: &TableSpec, version: u32) -> String {
    let name = versioned_table(&table.name, version);
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|(c, t)| format!("{c} {}", t.sql()))
        .collect();
    format!(
        "CREATE TABLE {name} ({}, PRIMARY KEY ({}))",
        columns.join(", "),
        table.primary_key.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::declarative::config::DeclarativeConfig;
    use serde_json::json;

    const CONFIG: &str = r#"
        name = "dir"
        version = 2
        topics = ["customers"]
        [[tables]]
        name = "dir"
        primary_key = ["id"]
        columns = { id = "text", email = "text", at = "timestamptz", gone = "boolean", n = "bigint" }
        [[on]]
        event_type = "Changed"
        table = "dir"
        action = "upsert"
        set = { id = "customer_id", email = "email", at = "changed_at" }
        newer = "at"
        row_equals = { gone = false }
        [[on]]
        event_type = "Gone"
        table = "dir"
        action = "delete"
        key = { id = "customer_id" }
        [[on]]
        event_type = "Counted"
        table = "dir"
        action = "update"
        key = { id = "customer_id" }
        set = { n = "stats.count", email = "@null" }
        when = [{ field = "kind", equals = "x" }]
    "#;

    fn env() -> EnvelopeFields {
        EnvelopeFields {
            event_id: "e".into(),
            event_type: "t".into(),
            occurred_at: "2026-01-01T00:00:00.000Z".into(),
        }
    }

    #[test]
    fn builds_a_guarded_upsert() {
        let config = DeclarativeConfig::parse(CONFIG).unwrap();
        let data =
            json!({"customer_id": "c-1", "email": "a@x", "changed_at": "2026-01-01T00:00:00Z"});
        let s = build(&config.on[0], &config.tables[0], 2, &data, &env());
        assert_eq!(
            s.sql,
            "INSERT INTO dir_v2 AS cur (at, email, id) VALUES (CAST($1::text AS timestamptz), \
             CAST($2::text AS text), CAST($3::text AS text)) ON CONFLICT (id) DO UPDATE SET \
             at = EXCLUDED.at, email = EXCLUDED.email WHERE cur.gone IS NOT DISTINCT FROM \
             CAST($4::text AS boolean) AND (cur.at IS NULL OR cur.at <= EXCLUDED.at)"
        );
        assert_eq!(
            s.params,
            vec![
                Some("2026-01-01T00:00:00Z".into()),
                Some("a@x".into()),
                Some("c-1".into()),
                Some("false".into())
            ]
        );
    }

    #[test]
    fn builds_update_and_delete_and_filters() {
        let config = DeclarativeConfig::parse(CONFIG).unwrap();
        let data = json!({"customer_id": "c-1", "stats": {"count": 3}, "kind": "x"});
        let s = build(&config.on[2], &config.tables[0], 2, &data, &env());
        assert_eq!(
            s.sql,
            "UPDATE dir_v2 AS cur SET email = CAST($1::text AS text), n = CAST($2::text AS bigint) \
             WHERE cur.id = CAST($3::text AS text)"
        );
        assert_eq!(s.params, vec![None, Some("3".into()), Some("c-1".into())]);
        assert!(matches(&config.on[2].when, &data));
        assert!(!matches(&config.on[2].when, &json!({"kind": "y"})));
        let d = build(&config.on[1], &config.tables[0], 2, &data, &env());
        assert_eq!(
            d.sql,
            "DELETE FROM dir_v2 AS cur WHERE cur.id = CAST($1::text AS text)"
        );
        assert_eq!(
            create_table(&config.tables[0], 2),
            "CREATE TABLE dir_v2 (at timestamptz, email text, gone boolean, id text, n bigint, PRIMARY KEY (id))"
        );
    }

    #[test]
    fn rejects_inconsistent_configs() {
        for (from, to) in [
            (
                "table = \"dir\"\n        action = \"delete\"",
                "table = \"nope\"\n        action = \"delete\"",
            ),
            (
                "key = { id = \"customer_id\" }\n        set = { n",
                "key = { n = \"customer_id\" }\n        set = { n",
            ),
            ("primary_key = [\"id\"]", "primary_key = [\"missing\"]"),
            ("newer = \"at\"", "newer = \"gone\""),
            (
                "name = \"dir\"\n        version",
                "name = \"Dir; drop\"\n        version",
            ),
            ("version = 2", "version = 2\n        extra = 1"),
        ] {
            let text = CONFIG.replacen(from, to, 1);
            assert_ne!(text, CONFIG, "{from}");
            assert!(DeclarativeConfig::parse(&text).is_err(), "{to}");
        }
    }
}
