//! Personal data declared in the contract: which fields of an event hold a data subject's
//! personal data, and which field names that subject.
//!
//! A schema marks a field with the custom attribute `"factline.personal": true` and names the
//! subject on its top-level record with `"factline.subject": "<field>"`:
//!
//! ```json
//! {"type": "record", "name": "CustomerRegistered", "factline.subject": "customer_id",
//!  "fields": [{"name": "customer_id", "type": "string"},
//!             {"name": "email", "type": "string", "factline.personal": true}]}
//! ```
//!
//! The attributes are part of the `.avsc` text, so they travel with the schema into the
//! registry, where other tools can read them. Rules, checked when the catalog loads (and so by
//! `factline-schemas check` and `register`): a marked field is a `string` or a
//! `["null", "string"]` union, either at the top level or in records nested in the event
//! (directly or as `["null", record]`), never inside an array or a map; a schema with a marked
//! field names its subject, and the subject is a top-level `string` field that is not itself
//! marked. The write side encrypts marked fields with the subject's data key; projectors
//! decrypt them (see `factline-keystore`).

use crate::names::Names;
use apache_avro::types::Value;
use apache_avro::Schema;
use serde_json::Value as Json;

/// The custom attribute marking a field as personal data.
pub const PERSONAL_ATTRIBUTE: &str = "factline.personal";
/// The custom attribute naming, on the event record, the field holding the data subject.
pub const SUBJECT_ATTRIBUTE: &str = "factline.subject";
/// The custom attribute marking an event that erases a data subject, naming the field that
/// holds the subject: `"factline.erases": "customer_id"` on `CustomerForgotten`. Recording
/// such an event destroys the subject's data key.
pub const ERASES_ATTRIBUTE: &str = "factline.erases";

/// The field named by [`ERASES_ATTRIBUTE`] on an event record, checked to be a top-level
/// string field.
pub fn erased_subject_field(schema: &Schema) -> Result<Option<String>, Vec<String>> {
    let Schema::Record(record) = schema else {
        return Ok(None);
    };
    let field = match record.attributes.get(ERASES_ATTRIBUTE) {
        None => return Ok(None),
        Some(Json::String(field)) => field,
        Some(other) => {
            return Err(vec![format!(
                "{ERASES_ATTRIBUTE} must name a field, not {other}"
            )])
        }
    };
    let names = Names::of(schema);
    match record.lookup.get(field) {
        Some(&i) if matches!(names.resolve(&record.fields[i].schema), Schema::String) => {
            Ok(Some(field.clone()))
        }
        Some(_) => Err(vec![format!("{ERASES_ATTRIBUTE} {field} must be a string")]),
        None => Err(vec![format!(
            "{ERASES_ATTRIBUTE} {field} is not a field of the record"
        )]),
    }
}

/// The string value of the top-level field `field` of an event record.
pub fn top_level_string<'v>(value: &'v Value, field: &str) -> Option<&'v str> {
    match value {
        Value::Record(fields) => fields.iter().find_map(|(name, v)| match v {
            Value::String(s) if name == field => Some(s.as_str()),
            _ => None,
        }),
        _ => None,
    }
}

/// Where an event holds personal data, and whose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonalData {
    /// The top-level string field naming the data subject: `customer_id`.
    pub subject_field: String,
    /// Every marked field, as the record field names leading to it:
    /// `["shipping_address", "line1"]`.
    pub fields: Vec<Vec<String>>,
}

impl PersonalData {
    /// Reads the marking of an event schema. `Ok(None)`: no field is marked (and no subject
    /// is named). `Err`: every way the marking breaks the rules of the module doc.
    pub fn of(schema: &Schema) -> Result<Option<PersonalData>, Vec<String>> {
        let names = Names::of(schema);
        let Schema::Record(record) = schema else {
            return Ok(None);
        };
        let mut errors = Vec::new();
        let mut fields = Vec::new();
        collect(
            &names,
            schema,
            &mut Vec::new(),
            false,
            &mut fields,
            &mut errors,
        );
        let subject = match record.attributes.get(SUBJECT_ATTRIBUTE) {
            None => None,
            Some(Json::String(field)) => Some(field.clone()),
            Some(other) => {
                errors.push(format!(
                    "{SUBJECT_ATTRIBUTE} must name a field, not {other}"
                ));
                None
            }
        };
        match (&subject, fields.is_empty()) {
            (None, false) => errors.push(format!(
                "fields {} are marked {PERSONAL_ATTRIBUTE} but the record names no data subject \
                 (\"{SUBJECT_ATTRIBUTE}\": \"<field>\")",
                fields
                    .iter()
                    .map(|p| p.join("."))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            (Some(field), _) => match record.lookup.get(field) {
                None => errors.push(format!(
                    "{SUBJECT_ATTRIBUTE} {field} is not a field of the record"
                )),
                Some(&i) => {
                    if !matches!(names.resolve(&record.fields[i].schema), Schema::String) {
                        errors.push(format!("{SUBJECT_ATTRIBUTE} {field} must be a string"));
                    }
                    if fields.iter().any(|p| p.len() == 1 && &p[0] == field) {
                        errors.push(format!(
                            "the subject field {field} cannot be personal: it is what finds the key"
                        ));
                    }
                }
            },
            (None, true) => {}
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(subject.map(|subject_field| PersonalData {
            subject_field,
            fields,
        }))
    }

    /// The subject of `value` (the event record): the subject field's string.
    pub fn subject<'v>(&self, value: &'v Value) -> Option<&'v str> {
        top_level_string(value, &self.subject_field)
    }

    /// Calls `f` with the path and the string of every present personal string of `value`
    /// (null optional fields are skipped), stopping at the first error.
    pub fn try_for_each_mut<E>(
        &self,
        value: &mut Value,
        mut f: impl FnMut(&[String], &mut String) -> Result<(), E>,
    ) -> Result<(), E> {
        for path in &self.fields {
            if let Some(s) = string_at(value, path) {
                f(path, s)?;
            }
        }
        Ok(())
    }

    /// The personal string at each of [`PersonalData::fields`] (`None` where absent or null),
    /// in the same order.
    pub fn strings_by_path<'v>(&self, value: &'v Value) -> Vec<Option<&'v str>> {
        self.fields
            .iter()
            .map(|path| string_at_ref(value, path))
            .collect()
    }

    /// Every present personal string of `value`.
    pub fn strings<'v>(&self, value: &'v Value) -> Vec<&'v str> {
        self.fields
            .iter()
            .filter_map(|path| string_at_ref(value, path))
            .collect()
    }
}

/// The string at `path` in `value`, through records and `["null", T]` unions.
fn string_at<'v>(value: &'v mut Value, path: &[String]) -> Option<&'v mut String> {
    let value = match value {
        Value::Union(_, inner) => inner.as_mut(),
        other => other,
    };
    match (value, path) {
        (Value::String(s), []) => Some(s),
        (Value::Record(fields), [first, rest @ ..]) => fields
            .iter_mut()
            .find(|(name, _)| name == first)
            .and_then(|(_, v)| string_at(v, rest)),
        _ => None,
    }
}

fn string_at_ref<'v>(value: &'v Value, path: &[String]) -> Option<&'v str> {
    let value = match value {
        Value::Union(_, inner) => inner.as_ref(),
        other => other,
    };
    match (value, path) {
        (Value::String(s), []) => Some(s),
        (Value::Record(fields), [first, rest @ ..]) => fields
            .iter()
            .find(|(name, _)| name == first)
            .and_then(|(_, v)| string_at_ref(v, rest)),
        _ => None,
    }
}

/// Walks records (and `["null", record]` unions) collecting marked fields; `in_collection`
/// is true below an array or a map, where marking is refused.
fn collect(
    names: &Names<'_>,
    schema: &Schema,
    path: &mut Vec<String>,
    in_collection: bool,
    out: &mut Vec<Vec<String>>,
    errors: &mut Vec<String>,
) {
    match names.resolve(schema) {
        Schema::Record(record) => {
            for field in &record.fields {
                path.push(field.name.clone());
                let shown = path.join(".");
                match field.custom_attributes.get(PERSONAL_ATTRIBUTE) {
                    None | Some(Json::Bool(false)) => {
                        collect(names, &field.schema, path, in_collection, out, errors)
                    }
                    Some(Json::Bool(true)) if in_collection => errors.push(format!(
                        "{shown} is marked {PERSONAL_ATTRIBUTE} inside an array or a map, which \
                         is not supported: mark fields of records only"
                    )),
                    Some(Json::Bool(true))
                        if is_string_or_optional_string(names, &field.schema) =>
                    {
                        out.push(path.clone())
                    }
                    Some(Json::Bool(true)) => errors.push(format!(
                        "{shown} is marked {PERSONAL_ATTRIBUTE} but is not a string or \
                         [\"null\", \"string\"]: ciphertext is carried as a string"
                    )),
                    Some(other) => errors.push(format!(
                        "{shown}: {PERSONAL_ATTRIBUTE} must be true or false, not {other}"
                    )),
                }
                path.pop();
            }
        }
        Schema::Array(a) => collect(names, &a.items, path, true, out, errors),
        Schema::Map(m) => collect(names, &m.types, path, true, out, errors),
        Schema::Union(u) => {
            let variants = u.variants();
            let nullable_single = variants.len() == 2 && variants.contains(&Schema::Null);
            for variant in variants {
                collect(
                    names,
                    variant,
                    path,
                    in_collection || !nullable_single,
                    out,
                    errors,
                );
            }
        }
        _ => {}
    }
}

fn is_string_or_optional_string(names: &Names<'_>, schema: &Schema) -> bool {
    match names.resolve(schema) {
        Schema::String => true,
        Schema::Union(u) => {
            let v = u.variants();
            v.len() == 2
                && v.contains(&Schema::Null)
                && v.iter().any(|s| matches!(names.resolve(s), Schema::String))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(schema: Json) -> Result<Option<PersonalData>, Vec<String>> {
        PersonalData::of(&Schema::parse(&schema).unwrap())
    }

    fn record(attrs: Json, fields: Json) -> Json {
        let mut schema = json!({"type": "record", "name": "E", "namespace": "t", "fields": fields});
        for (k, v) in attrs.as_object().unwrap() {
            schema[k] = v.clone();
        }
        schema
    }

    #[test]
    fn marked_fields_and_the_subject_are_read_through_nested_records() {
        let schema = record(
            json!({"factline.subject": "who"}),
            json!([
                {"name": "who", "type": "string"},
                {"name": "email", "type": "string", "factline.personal": true},
                {"name": "note", "type": ["null", "string"], "factline.personal": true},
                {"name": "plain", "type": "string", "factline.personal": false},
                {"name": "address", "type": {"type": "record", "name": "A", "fields": [
                    {"name": "line1", "type": "string", "factline.personal": true},
                    {"name": "country", "type": "string"}]}},
            ]),
        );
        let personal = parse(schema).unwrap().unwrap();
        assert_eq!(personal.subject_field, "who");
        assert_eq!(
            personal.fields,
            vec![
                vec!["email".to_string()],
                vec!["note".to_string()],
                vec!["address".to_string(), "line1".to_string()]
            ]
        );
    }

    #[test]
    fn a_schema_without_marks_has_no_personal_data() {
        let schema = record(json!({}), json!([{"name": "id", "type": "string"}]));
        assert_eq!(parse(schema).unwrap(), None);
    }

    #[test]
    fn personal_data_without_a_subject_is_refused() {
        let schema = record(
            json!({}),
            json!([{"name": "email", "type": "string", "factline.personal": true}]),
        );
        let errors = parse(schema).unwrap_err();
        assert!(errors[0].contains("names no data subject"), "{errors:?}");
        assert!(errors[0].contains("email"), "{errors:?}");
    }

    #[test]
    fn bad_markings_are_refused_with_the_field_named() {
        let cases = [
            (
                record(
                    json!({"factline.subject": "nope"}),
                    json!([{"name": "e", "type": "string", "factline.personal": true}]),
                ),
                "nope is not a field",
            ),
            (
                record(
                    json!({"factline.subject": "n"}),
                    json!([{"name": "n", "type": "long"},
                           {"name": "e", "type": "string", "factline.personal": true}]),
                ),
                "must be a string",
            ),
            (
                record(
                    json!({"factline.subject": "id"}),
                    json!([{"name": "id", "type": "string"},
                           {"name": "age", "type": "int", "factline.personal": true}]),
                ),
                "age is marked factline.personal but is not a string",
            ),
            (
                record(
                    json!({"factline.subject": "id"}),
                    json!([{"name": "id", "type": "string"},
                           {"name": "tags", "type": {"type": "array", "items": {"type": "record",
                            "name": "T", "fields": [{"name": "x", "type": "string",
                            "factline.personal": true}]}}}]),
                ),
                "inside an array",
            ),
            (
                record(
                    json!({"factline.subject": "id"}),
                    json!([{"name": "id", "type": "string", "factline.personal": true}]),
                ),
                "cannot be personal",
            ),
            (
                record(
                    json!({"factline.subject": "id"}),
                    json!([{"name": "id", "type": "string"},
                           {"name": "e", "type": "string", "factline.personal": "yes"}]),
                ),
                "must be true or false",
            ),
        ];
        for (schema, expected) in cases {
            let errors = parse(schema).unwrap_err();
            assert!(
                errors.iter().any(|e| e.contains(expected)),
                "{expected}: {errors:?}"
            );
        }
    }

    #[test]
    fn the_erasing_field_must_be_a_top_level_string() {
        let ok = record(
            json!({"factline.erases": "id"}),
            json!([{"name": "id", "type": "string"}]),
        );
        let schema = Schema::parse(&ok).unwrap();
        assert_eq!(
            erased_subject_field(&schema).unwrap().as_deref(),
            Some("id")
        );
        for (attr, expected) in [
            (json!("nope"), "not a field"),
            (json!("n"), "must be a string"),
            (json!(1), "must name a field"),
        ] {
            let bad = record(
                json!({"factline.erases": attr}),
                json!([{"name": "n", "type": "long"}]),
            );
            let errors = erased_subject_field(&Schema::parse(&bad).unwrap()).unwrap_err();
            assert!(errors[0].contains(expected), "{errors:?}");
        }
    }

    #[test]
    fn strings_are_visited_in_place_and_null_optionals_are_skipped() {
        let schema = record(
            json!({"factline.subject": "id"}),
            json!([
                {"name": "id", "type": "string"},
                {"name": "e", "type": "string", "factline.personal": true},
                {"name": "o", "type": ["null", "string"], "factline.personal": true},
                {"name": "p", "type": ["null", "string"], "factline.personal": true},
            ]),
        );
        let personal = parse(schema).unwrap().unwrap();
        let mut value = Value::Record(vec![
            ("id".into(), Value::String("c-1".into())),
            ("e".into(), Value::String("a@b".into())),
            ("o".into(), Value::Union(0, Box::new(Value::Null))),
            (
                "p".into(),
                Value::Union(1, Box::new(Value::String("x".into()))),
            ),
        ]);
        assert_eq!(personal.subject(&value), Some("c-1"));
        personal
            .try_for_each_mut(&mut value, |_, s| {
                s.insert(0, '!');
                Ok::<_, ()>(())
            })
            .unwrap();
        assert_eq!(personal.strings(&value), vec!["!a@b", "!x"]);
    }
}
