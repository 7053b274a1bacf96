//! Rules a command body must pass beyond its Avro schema, declared in the catalog
//! (`{ path = "items[].quantity", min = 1 }`): checked against the schema when the catalog loads,
//! applied to a client body when a command is built.

use crate::names::Names;
use crate::problems::{describe_json, JsonPath, Problem};
use apache_avro::Schema;
use serde::Deserialize;
use serde_json::Value as Json;

/// A string format a rule can require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// `local@domain.tld`: one `@`, no whitespace, a dot in the domain, no empty label.
    Email,
}

/// One declared rule: a path into the event record and the constraints on the value there.
/// A rule applies only where the value is present and not null.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Path relative to the event record: `email`, `shipping_address.city`, `items[].quantity`.
    pub path: String,
    /// Strings: not empty and not only whitespace.
    #[serde(default)]
    pub non_empty: bool,
    /// Strings: at least this many characters.
    pub min_length: Option<usize>,
    /// Strings: at most this many characters.
    pub max_length: Option<usize>,
    /// Numbers: at least this value.
    pub min: Option<f64>,
    /// Numbers: at most this value.
    pub max: Option<f64>,
    /// Arrays: at least this many elements.
    pub min_items: Option<usize>,
    /// Arrays: at most this many elements.
    pub max_items: Option<usize>,
    /// Strings: this format.
    pub format: Option<Format>,
    /// Strings and enum symbols a client may not send.
    #[serde(default)]
    pub none_of: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step<'a> {
    Field(&'a str),
    Each,
}

fn parse_path(path: &str) -> Result<Vec<Step<'_>>, String> {
    let mut steps = Vec::new();
    for part in path.split('.') {
        let (name, each) = match part.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (part, false),
        };
        if name.is_empty() || name.contains(['[', ']']) {
            return Err(format!("invalid rule path {path:?}"));
        }
        steps.push(Step::Field(name));
        if each {
            steps.push(Step::Each);
        }
    }
    Ok(steps)
}

/// What kind of value a rule's constraints apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Number,
    List,
}

fn unwrap_optional<'a>(names: &'a Names<'_>, schema: &'a Schema) -> &'a Schema {
    match names.resolve(schema) {
        Schema::Union(u) => {
            let non_null: Vec<&Schema> = u
                .variants()
                .iter()
                .filter(|v| !matches!(v, Schema::Null))
                .collect();
            match non_null.as_slice() {
                [only] => names.resolve(only),
                _ => names.resolve(schema),
            }
        }
        other => other,
    }
}

/// The schema at a declared path (relative to the record `schema`), or why there is none.
pub(crate) fn schema_at<'a>(
    names: &'a Names<'_>,
    schema: &'a Schema,
    path: &str,
) -> Result<&'a Schema, String> {
    let mut current = unwrap_optional(names, schema);
    for step in parse_path(path)? {
        current = match (step, current) {
            (Step::Field(name), Schema::Record(r)) => match r.lookup.get(name) {
                Some(&i) => unwrap_optional(names, &r.fields[i].schema),
                None => {
                    return Err(format!(
                        "path {path:?}: {} has no field {name:?}",
                        r.name.fullname(None)
                    ))
                }
            },
            (Step::Each, Schema::Array(a)) => unwrap_optional(names, &a.items),
            (Step::Field(name), _) => {
                return Err(format!("path {path:?}: {name:?} is not inside a record"))
            }
            (Step::Each, _) => return Err(format!("path {path:?}: [] on something not an array")),
        };
    }
    Ok(current)
}

impl Rule {
    fn kinds(&self) -> Vec<(Kind, &'static str)> {
        let mut kinds = Vec::new();
        if self.non_empty {
            kinds.push((Kind::Text, "non_empty"));
        }
        if self.min_length.is_some() {
            kinds.push((Kind::Text, "min_length"));
        }
        if self.max_length.is_some() {
            kinds.push((Kind::Text, "max_length"));
        }
        if self.format.is_some() {
            kinds.push((Kind::Text, "format"));
        }
        if !self.none_of.is_empty() {
            kinds.push((Kind::Text, "none_of"));
        }
        if self.min.is_some() {
            kinds.push((Kind::Number, "min"));
        }
        if self.max.is_some() {
            kinds.push((Kind::Number, "max"));
        }
        if self.min_items.is_some() {
            kinds.push((Kind::List, "min_items"));
        }
        if self.max_items.is_some() {
            kinds.push((Kind::List, "max_items"));
        }
        kinds
    }

    /// Checks that the path exists in the record `schema` and every constraint fits the type
    /// found there. Returns every mistake.
    pub(crate) fn check_against(&self, names: &Names<'_>, schema: &Schema) -> Vec<String> {
        let target = match schema_at(names, schema, &self.path) {
            Ok(target) => target,
            Err(e) => return vec![e],
        };
        let kinds = self.kinds();
        if kinds.is_empty() {
            return vec![format!("rule on {:?} has no constraint", self.path)];
        }
        let found = match target {
            Schema::String | Schema::Uuid(_) | Schema::Enum(_) => Kind::Text,
            Schema::Int | Schema::Long | Schema::Float | Schema::Double => Kind::Number,
            Schema::Array(_) => Kind::List,
            other => {
                return vec![format!(
                    "rule on {:?}: no rule applies to a field of type {other:?}",
                    self.path
                )]
            }
        };
        let mut errors: Vec<String> = kinds
            .into_iter()
            .filter(|(kind, _)| *kind != found)
            .map(|(_, name)| {
                format!(
                    "rule on {:?}: {name} does not apply to a field of type {}",
                    self.path,
                    crate::names::describe_schema(names, target)
                )
            })
            .collect();
        if let Schema::Enum(e) = target {
            for symbol in &self.none_of {
                if !e.symbols.contains(symbol) {
                    errors.push(format!(
                        "rule on {:?}: none_of names {symbol:?}, not a symbol of {}",
                        self.path,
                        e.name.fullname(None)
                    ));
                }
            }
        }
        errors
    }

    /// Applies the rule to a client body, appending a problem for every value that breaks it.
    /// Values of the wrong type are skipped: the schema check reports those.
    pub(crate) fn apply(&self, body: &Json, problems: &mut Vec<Problem>) {
        let mut apply = |path: &JsonPath, value: &Json| self.apply_one(path, value, problems);
        visit_targets(body, &JsonPath::root(), steps(&self.path), &mut apply);
    }

    fn apply_one(&self, path: &JsonPath, value: &Json, problems: &mut Vec<Problem>) {
        let at = || path.to_string();
        match value {
            Json::String(s) => {
                let chars = s.chars().count();
                if self.non_empty && s.trim().is_empty() {
                    problems.push(
                        Problem::new(at(), "must not be empty")
                            .expected("a non-empty string")
                            .found(describe_json(value)),
                    );
                }
                if let Some(min) = self.min_length.filter(|min| chars < *min) {
                    problems.push(
                        Problem::new(at(), "too short")
                            .expected(format!("at least {min} characters"))
                            .found(format!("{chars} characters")),
                    );
                }
                if let Some(max) = self.max_length.filter(|max| chars > *max) {
                    problems.push(
                        Problem::new(at(), "too long")
                            .expected(format!("at most {max} characters"))
                            .found(format!("{chars} characters")),
                    );
                }
                if self.format == Some(Format::Email) && !is_email(s) {
                    problems.push(
                        Problem::new(at(), "not a valid email address")
                            .expected("an email address like name@example.com")
                            .found(describe_json(value)),
                    );
                }
                if self.none_of.contains(s) {
                    problems.push(
                        Problem::new(at(), "value not allowed")
                            .expected(format!("not {}", self.none_of.join(", ")))
                            .found(describe_json(value)),
                    );
                }
            }
            Json::Number(n) => {
                let Some(x) = n.as_f64() else { return };
                if let Some(min) = self.min.filter(|min| x < *min) {
                    problems.push(
                        Problem::new(at(), "too small")
                            .expected(format!("at least {min}"))
                            .found(describe_json(value)),
                    );
                }
                if let Some(max) = self.max.filter(|max| x > *max) {
                    problems.push(
                        Problem::new(at(), "too large")
                            .expected(format!("at most {max}"))
                            .found(describe_json(value)),
                    );
                }
            }
            Json::Array(items) => {
                let n = items.len();
                if let Some(min) = self.min_items.filter(|min| n < *min) {
                    problems.push(
                        Problem::new(at(), "too few items")
                            .expected(format!("at least {min} {}", plural(min, "item")))
                            .found(describe_json(value)),
                    );
                }
                if let Some(max) = self.max_items.filter(|max| n > *max) {
                    problems.push(
                        Problem::new(at(), "too many items")
                            .expected(format!("at most {max} {}", plural(max, "item")))
                            .found(describe_json(value)),
                    );
                }
            }
            _ => {}
        }
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}

/// The steps of a rule path, read as they are walked (a rule applies to every command, so its
/// path is not parsed into a list each time; `parse_path` checked it when the catalog loaded).
fn steps(path: &str) -> impl Iterator<Item = Step<'_>> + Clone {
    path.split('.')
        .flat_map(|part| match part.strip_suffix("[]") {
            Some(name) => [Some(Step::Field(name)), Some(Step::Each)],
            None => [Some(Step::Field(part)), None],
        })
        .flatten()
}

/// Calls `visit` with every non-null value at `steps` under `value`, and its path.
fn visit_targets<'p>(
    value: &Json,
    path: &JsonPath,
    mut steps: impl Iterator<Item = Step<'p>> + Clone,
    visit: &mut dyn FnMut(&JsonPath, &Json),
) {
    let Some(step) = steps.next() else {
        if !value.is_null() {
            visit(path, value);
        }
        return;
    };
    match (step, value) {
        (Step::Field(name), Json::Object(object)) => {
            if let Some(child) = object.get(name) {
                visit_targets(child, &path.key(name), steps, visit);
            }
        }
        (Step::Each, Json::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                visit_targets(item, &path.index(i), steps.clone(), visit);
            }
        }
        _ => {}
    }
}

/// A deliberately simple email shape check: `local@domain.tld`.
pub(crate) fn is_email(s: &str) -> bool {
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(toml_text: &str) -> Rule {
        toml::from_str(toml_text).unwrap()
    }

    fn apply(rule: &Rule, body: Json) -> Vec<Problem> {
        let mut problems = Vec::new();
        rule.apply(&body, &mut problems);
        problems
    }

    #[test]
    fn email_shape() {
        for good in ["ada@example.com", "a.b+c@x.co.uk"] {
            assert!(is_email(good), "{good}");
        }
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@x.com",
            "a@b@c.com",
            "a@x..com",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }

    #[test]
    fn each_string_constraint() {
        let r = rule("path = 'name'\nnon_empty = true\nmin_length = 2\nmax_length = 4");
        assert_eq!(
            apply(&r, json!({"name": "  "}))[0].message,
            "must not be empty"
        );
        let too_short = apply(&r, json!({"name": "a"}));
        assert_eq!(too_short.len(), 1);
        assert_eq!(too_short[0].message, "too short");
        let too_long = &apply(&r, json!({"name": "abcde"}))[0];
        assert_eq!(too_long.message, "too long");
        assert_eq!(too_long.expected.as_deref(), Some("at most 4 characters"));
        assert_eq!(too_long.found.as_deref(), Some("5 characters"));
        assert!(apply(&r, json!({"name": "abc"})).is_empty());
        // Absent or null: nothing to check (the schema says whether it is required).
        assert!(apply(&r, json!({})).is_empty());
        assert!(apply(&r, json!({"name": null})).is_empty());
        // Lengths count characters, not bytes.
        assert!(apply(&r, json!({"name": "éééé"})).is_empty());
    }

    #[test]
    fn email_and_none_of() {
        let r = rule("path = 'email'\nformat = 'email'");
        assert_eq!(
            apply(&r, json!({"email": "nope"}))[0].message,
            "not a valid email address"
        );
        let r = rule("path = 'currency'\nnone_of = ['UNKNOWN']");
        assert_eq!(
            apply(&r, json!({"currency": "UNKNOWN"}))[0].message,
            "value not allowed"
        );
        assert!(apply(&r, json!({"currency": "EUR"})).is_empty());
    }

    #[test]
    fn numbers_and_arrays_with_paths_through_arrays() {
        let r = rule("path = 'items[].quantity'\nmin = 1\nmax = 10");
        let problems = apply(
            &r,
            json!({"items": [{"quantity": 1}, {"quantity": 0}, {"quantity": 11}]}),
        );
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].path, "$.items[1].quantity");
        assert_eq!(problems[0].message, "too small");
        assert_eq!(problems[0].expected.as_deref(), Some("at least 1"));
        assert_eq!(problems[1].path, "$.items[2].quantity");
        assert_eq!(problems[1].message, "too large");
        let r = rule("path = 'items'\nmin_items = 1\nmax_items = 2");
        let problems = apply(&r, json!({"items": []}));
        assert_eq!(problems[0].message, "too few items");
        assert_eq!(problems[0].expected.as_deref(), Some("at least 1 item"));
        assert_eq!(
            apply(&r, json!({"items": [1, 2, 3]}))[0].message,
            "too many items"
        );
    }

    #[test]
    fn wrong_types_are_left_to_the_schema_check() {
        let r = rule("path = 'items[].quantity'\nmin = 1");
        assert!(apply(&r, json!({"items": [{"quantity": "x"}]})).is_empty());
        assert!(apply(&r, json!({"items": "x"})).is_empty());
    }

    #[test]
    fn rules_are_checked_against_the_schema() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[
                {"name":"s","type":"string"},
                {"name":"n","type":["null","int"],"default":null},
                {"name":"xs","type":{"type":"array","items":{"type":"record","name":"X","fields":[{"name":"q","type":"int"}]}}}
            ]}"#,
        )
        .unwrap();
        let names = Names::of(&schema);
        assert!(rule("path = 's'\nmax_length = 3")
            .check_against(&names, &schema)
            .is_empty());
        assert!(rule("path = 'n'\nmin = 3")
            .check_against(&names, &schema)
            .is_empty());
        assert!(rule("path = 'xs[].q'\nmin = 1")
            .check_against(&names, &schema)
            .is_empty());
        assert!(rule("path = 'xs'\nmin_items = 1")
            .check_against(&names, &schema)
            .is_empty());
        assert_eq!(
            rule("path = 'missing'\nmin = 1")
                .check_against(&names, &schema)
                .len(),
            1
        );
        assert_eq!(
            rule("path = 's'\nmin = 1")
                .check_against(&names, &schema)
                .len(),
            1
        );
        assert_eq!(
            rule("path = 'xs.q'\nmin = 1")
                .check_against(&names, &schema)
                .len(),
            1
        );
        assert_eq!(rule("path = 's'").check_against(&names, &schema).len(), 1);
    }
}
