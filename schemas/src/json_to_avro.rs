//! JSON -> Avro conversion against a schema. Every problem is collected (not just the first),
//! each with its JSON path, what the schema expects and what the body has.
//!
//! Clients send plain JSON, not Avro's JSON encoding: a union `["null", T]` is `null`, absent,
//! or a bare `T`; timestamps are RFC 3339 strings; enums are symbol strings; unknown fields are
//! rejected. A number with a zero fraction (`2.0`, `-1e3`) is an integer: JSON does not tell
//! `2.0` from `2`.
//!
//! The body is taken by value: its strings move into the Avro value instead of being copied.

use crate::names::{describe_schema, Names};
use crate::problems::{describe_json, JsonPath, Problem, Problems};
use apache_avro::schema::{RecordSchema, UnionSchema};
use apache_avro::types::Value;
use apache_avro::Schema;
use chrono::{DateTime, NaiveDate};
use serde_json::Value as Json;
use std::collections::HashMap;

/// Converts `json` to an Avro value of `schema`, or returns every problem found.
pub fn json_to_avro(schema: &Schema, json: Json) -> Result<Value, Problems> {
    let (value, problems) = convert_with_derived(schema, json, &HashMap::new());
    match value {
        Some(value) if problems.is_empty() => Ok(value),
        _ => Err(Problems(problems)),
    }
}

/// The integer a JSON number stands for: an integer, or a number with a zero fraction that fits
/// an `i64` (`2.0`, `-1e3`). `None` for a fraction, or an integer beyond `i64`.
pub fn json_integer(n: &serde_json::Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    if n.is_u64() {
        return None;
    }
    // 2^63 as f64 is exactly representable; every integral f64 below it fits an i64.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f) => Some(f as i64),
        _ => None,
    }
}

/// Converts `json` to a value of the record `schema`, taking the top-level fields named in
/// `derived` from that map instead of from the body (a body that sends one is a problem).
/// Returns the value (when nothing was wrong) and the problems found.
pub(crate) fn convert_with_derived(
    schema: &Schema,
    json: Json,
    derived: &HashMap<String, Value>,
) -> (Option<Value>, Vec<Problem>) {
    let names = Names::of(schema);
    let mut converter = Converter {
        names: &names,
        problems: Vec::new(),
    };
    let root = JsonPath::root();
    let value = match names.resolve(schema) {
        Schema::Record(record) => converter.record(record, json, &root, derived),
        other => converter.convert(other, json, &root),
    };
    (value, converter.problems)
}

struct Converter<'n, 's> {
    names: &'n Names<'s>,
    problems: Vec<Problem>,
}

impl Converter<'_, '_> {
    fn mismatch(&mut self, schema: &Schema, json: &Json, path: &JsonPath) -> Option<Value> {
        let expected = describe_schema(self.names, schema);
        self.problems.push(
            Problem::new(path.to_string(), "wrong type")
                .expected(expected)
                .found(describe_json(json)),
        );
        None
    }

    fn invalid(
        &mut self,
        path: &JsonPath,
        message: &str,
        expected: String,
        json: &Json,
    ) -> Option<Value> {
        self.problems.push(
            Problem::new(path.to_string(), message)
                .expected(expected)
                .found(describe_json(json)),
        );
        None
    }

    fn convert(&mut self, schema: &Schema, json: Json, path: &JsonPath) -> Option<Value> {
        let names = self.names;
        let schema = names.resolve(schema);
        match (schema, json) {
            (Schema::Null, Json::Null) => Some(Value::Null),
            (Schema::Boolean, Json::Bool(b)) => Some(Value::Boolean(b)),
            (Schema::Int, Json::Number(n)) => {
                match json_integer(&n).map(i32::try_from) {
                    Some(Ok(i)) => Some(Value::Int(i)),
                    // an integer, but beyond an int (`u64` beyond an `i64` too)
                    Some(Err(_)) => {
                        self.out_of_range(path, "int", i32::MIN.into(), i32::MAX.into(), n)
                    }
                    None if n.is_u64() => {
                        self.out_of_range(path, "int", i32::MIN.into(), i32::MAX.into(), n)
                    }
                    None => self.not_an_integer(path, "int (32-bit integer)", n),
                }
            }
            (Schema::Long, Json::Number(n)) => match json_integer(&n) {
                Some(i) => Some(Value::Long(i)),
                None if n.is_u64() => self.out_of_range(path, "long", i64::MIN, i64::MAX, n),
                None => self.not_an_integer(path, "long (64-bit integer)", n),
            },
            (Schema::Float, Json::Number(n)) => match n.as_f64() {
                Some(f) if f.is_finite() && (f as f32).is_finite() => Some(Value::Float(f as f32)),
                _ => self.invalid(
                    path,
                    "number out of range",
                    "float".into(),
                    &Json::Number(n),
                ),
            },
            (Schema::Double, Json::Number(n)) => match n.as_f64() {
                Some(f) if f.is_finite() => Some(Value::Double(f)),
                _ => self.invalid(
                    path,
                    "number out of range",
                    "double".into(),
                    &Json::Number(n),
                ),
            },
            (Schema::String, Json::String(s)) => Some(Value::String(s)),
            (Schema::Uuid(_), Json::String(s)) => match uuid::Uuid::parse_str(&s) {
                Ok(u) => Some(Value::Uuid(u)),
                Err(_) => self.invalid(
                    path,
                    "not a valid uuid",
                    "uuid string".into(),
                    &Json::String(s),
                ),
            },
            (Schema::TimestampMillis, Json::String(s)) => match DateTime::parse_from_rfc3339(&s) {
                Ok(t) => Some(Value::TimestampMillis(t.timestamp_millis())),
                Err(_) => self.not_a_timestamp(path, s),
            },
            (Schema::TimestampMicros, Json::String(s)) => match DateTime::parse_from_rfc3339(&s) {
                Ok(t) => Some(Value::TimestampMicros(t.timestamp_micros())),
                Err(_) => self.not_a_timestamp(path, s),
            },
            (Schema::Date, Json::String(s)) => {
                let epoch = NaiveDate::from_ymd_opt(1970, 1, 1);
                match (NaiveDate::parse_from_str(&s, "%Y-%m-%d"), epoch) {
                    (Ok(d), Some(epoch)) => match i32::try_from((d - epoch).num_days()) {
                        Ok(days) => Some(Value::Date(days)),
                        Err(_) => {
                            self.invalid(path, "date out of range", "date".into(), &Json::String(s))
                        }
                    },
                    _ => self.invalid(
                        path,
                        "not a valid date",
                        "date string (YYYY-MM-DD)".into(),
                        &Json::String(s),
                    ),
                }
            }
            (Schema::Enum(e), Json::String(s)) => match e.symbols.iter().position(|x| *x == s) {
                Some(i) => Some(Value::Enum(i as u32, s)),
                None => self.invalid(
                    path,
                    "unknown symbol",
                    format!("one of {}", e.symbols.join(", ")),
                    &Json::String(s),
                ),
            },
            (Schema::Array(a), Json::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for (i, item) in items.into_iter().enumerate() {
                    match self.convert(&a.items, item, &path.index(i)) {
                        Some(v) => out.push(v),
                        None => ok = false,
                    }
                }
                ok.then_some(Value::Array(out))
            }
            (Schema::Map(m), Json::Object(entries)) => {
                let mut out = HashMap::with_capacity(entries.len());
                let mut ok = true;
                for (key, item) in entries {
                    match self.convert(&m.types, item, &path.key(&key)) {
                        Some(v) => {
                            out.insert(key, v);
                        }
                        None => ok = false,
                    }
                }
                ok.then_some(Value::Map(out))
            }
            (Schema::Record(r), json @ Json::Object(_)) => {
                self.record(r, json, path, &HashMap::new())
            }
            (Schema::Union(u), json) => self.union(u, schema, json, path),
            (
                Schema::Bytes
                | Schema::Fixed(_)
                | Schema::Decimal(_)
                | Schema::BigDecimal
                | Schema::Duration(_),
                _,
            ) => {
                self.problems.push(
                    Problem::new(path.to_string(), "this field type cannot be sent as JSON")
                        .expected(describe_schema(names, schema)),
                );
                None
            }
            (_, json) => self.mismatch(schema, &json, path),
        }
    }

    /// An integer beyond `kind`'s range, `min..=max`.
    fn out_of_range(
        &mut self,
        path: &JsonPath,
        kind: &str,
        min: i64,
        max: i64,
        n: serde_json::Number,
    ) -> Option<Value> {
        let expected = format!("{kind} between {min} and {max}");
        self.invalid(path, "number out of range", expected, &Json::Number(n))
    }

    fn not_an_integer(
        &mut self,
        path: &JsonPath,
        expected: &str,
        n: serde_json::Number,
    ) -> Option<Value> {
        self.invalid(path, "not an integer", expected.into(), &Json::Number(n))
    }

    fn not_a_timestamp(&mut self, path: &JsonPath, s: String) -> Option<Value> {
        self.invalid(
            path,
            "not a valid timestamp",
            "RFC 3339 timestamp string, e.g. 2026-11-22T10:00:00Z".into(),
            &Json::String(s),
        )
    }

    fn union(
        &mut self,
        union: &UnionSchema,
        schema: &Schema,
        json: Json,
        path: &JsonPath,
    ) -> Option<Value> {
        let variants = union.variants();
        if json.is_null() {
            return match variants.iter().position(|v| matches!(v, Schema::Null)) {
                Some(i) => Some(Value::Union(i as u32, Box::new(Value::Null))),
                None => self.mismatch(schema, &json, path),
            };
        }
        let mut non_null = variants
            .iter()
            .enumerate()
            .filter(|(_, v)| !matches!(v, Schema::Null));
        if let (Some((i, only)), None) = (non_null.next(), non_null.next()) {
            // ["null", T]: report T's own problems at this path.
            return self
                .convert(only, json, path)
                .map(|v| Value::Union(i as u32, Box::new(v)));
        }
        // More than one branch: the first that takes the value, tried on copies (rare).
        for (i, variant) in variants.iter().enumerate() {
            if matches!(variant, Schema::Null) {
                continue;
            }
            let mut trial = Converter {
                names: self.names,
                problems: Vec::new(),
            };
            if let Some(v) = trial.convert(variant, json.clone(), path) {
                if trial.problems.is_empty() {
                    return Some(Value::Union(i as u32, Box::new(v)));
                }
            }
        }
        self.mismatch(schema, &json, path)
    }

    fn record(
        &mut self,
        record: &RecordSchema,
        json: Json,
        path: &JsonPath,
        derived: &HashMap<String, Value>,
    ) -> Option<Value> {
        let Json::Object(mut object) = json else {
            return self.mismatch(&Schema::Record(record.clone()), &json, path);
        };
        let mut ok = true;
        for key in object.keys() {
            if !record.lookup.contains_key(key) {
                self.problems.push(
                    Problem::new(path.key(key).to_string(), "unknown field").expected(format!(
                        "one of the fields of {}: {}",
                        record.name.name(),
                        record
                            .fields
                            .iter()
                            .filter(|f| !derived.contains_key(&f.name))
                            .map(|f| f.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                );
                ok = false;
            }
        }
        let mut fields = Vec::with_capacity(record.fields.len());
        for field in &record.fields {
            let field_path = path.key(&field.name);
            if let Some(value) = derived.get(&field.name) {
                if let Some(sent) = object.get(&field.name) {
                    self.problems.push(
                        Problem::new(
                            field_path.to_string(),
                            "derived by the write side; do not send it",
                        )
                        .found(describe_json(sent)),
                    );
                    ok = false;
                }
                fields.push((field.name.clone(), value.clone()));
                continue;
            }
            let converted = match object.remove(&field.name) {
                Some(item) => self.convert(&field.schema, item, &field_path),
                None => match &field.default {
                    Some(default) => self.default_value(&field.schema, default, &field_path),
                    None => {
                        let expected = describe_schema(self.names, &field.schema);
                        self.problems.push(
                            Problem::new(field_path.to_string(), "required field is missing")
                                .expected(expected),
                        );
                        None
                    }
                },
            };
            match converted {
                Some(v) => fields.push((field.name.clone(), v)),
                None => ok = false,
            }
        }
        ok.then_some(Value::Record(fields))
    }

    /// A field's default (JSON, per the Avro spec: a union's default is of its first branch).
    fn default_value(&mut self, schema: &Schema, default: &Json, path: &JsonPath) -> Option<Value> {
        let names = self.names;
        match names.resolve(schema) {
            Schema::Union(u) => {
                let first = u.variants().first()?;
                let v = self.default_value(first, default, path)?;
                Some(Value::Union(0, Box::new(v)))
            }
            // Defaults of long/int logical types are numbers, not the strings clients send.
            Schema::TimestampMillis => default.as_i64().map(Value::TimestampMillis),
            Schema::TimestampMicros => default.as_i64().map(Value::TimestampMicros),
            other => self.convert(other, default.clone(), path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(text: &str) -> Schema {
        Schema::parse_str(text).unwrap()
    }

    fn all_types() -> Schema {
        schema(
            r#"{"type":"record","name":"T","namespace":"t","fields":[
                {"name":"i","type":"int"},
                {"name":"l","type":"long"},
                {"name":"f","type":"float"},
                {"name":"d","type":"double"},
                {"name":"b","type":"boolean"},
                {"name":"s","type":"string"},
                {"name":"u","type":{"type":"string","logicalType":"uuid"}},
                {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
                {"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}},
                {"name":"m","type":{"type":"map","values":"long"}},
                {"name":"opt","type":["null","string"],"default":null},
                {"name":"either","type":["null","long","string"],"default":null},
                {"name":"dflt","type":"int","default":7}
            ]}"#,
        )
    }

    fn good() -> Json {
        json!({"i": 1, "l": 2, "f": 1.5, "d": 2.5, "b": true, "s": "x",
               "u": "67e55044-10b1-426f-9247-bb680e5fe0c8", "ts": "2026-11-22T10:00:00.123Z",
               "e": "B", "m": {"a": 1}, "either": "text"})
    }

    #[test]
    fn converts_every_supported_type() {
        let v = json_to_avro(&all_types(), good()).unwrap();
        assert!(v.validate(&all_types()), "{v:?}");
        let Value::Record(fields) = v else { panic!() };
        let get = |n: &str| fields.iter().find(|(k, _)| k == n).unwrap().1.clone();
        assert_eq!(get("ts"), Value::TimestampMillis(1_795_341_600_123));
        assert_eq!(get("e"), Value::Enum(1, "B".into()));
        assert_eq!(get("opt"), Value::Union(0, Box::new(Value::Null)));
        assert_eq!(
            get("either"),
            Value::Union(2, Box::new(Value::String("text".into())))
        );
        assert_eq!(get("dflt"), Value::Int(7));
    }

    #[test]
    fn int_range_is_checked() {
        let mut body = good();
        body["i"] = json!(2_147_483_648_i64);
        let problems = json_to_avro(&all_types(), body.clone()).unwrap_err();
        let p = problems.at("$.i").unwrap();
        assert_eq!(p.message, "number out of range");
        assert_eq!(p.found.as_deref(), Some("number 2147483648"));
        body["i"] = json!(1.5);
        let problems = json_to_avro(&all_types(), body.clone()).unwrap_err();
        assert_eq!(problems.at("$.i").unwrap().message, "not an integer");
        body["i"] = json!(-2_147_483_648_i64);
        assert!(json_to_avro(&all_types(), body.clone()).is_ok());
    }

    #[test]
    fn integral_numbers_are_integers() {
        let mut body = good();
        body["i"] = json!(-1e3);
        body["l"] = json!(2.0);
        let Value::Record(fields) = json_to_avro(&all_types(), body.clone()).unwrap() else {
            panic!()
        };
        assert!(fields.contains(&("i".into(), Value::Int(-1000))));
        assert!(fields.contains(&("l".into(), Value::Long(2))));
        body["l"] = json!(1e19);
        let problems = json_to_avro(&all_types(), body).unwrap_err();
        assert_eq!(problems.at("$.l").unwrap().message, "not an integer");
        assert_eq!(json_integer(&serde_json::Number::from(u64::MAX)), None);
        assert_eq!(
            json_integer(&serde_json::Number::from_f64(-0.0).unwrap()),
            Some(0)
        );
    }

    #[test]
    fn long_range_is_checked() {
        let mut body = good();
        body["l"] = json!(u64::MAX);
        let problems = json_to_avro(&all_types(), body.clone()).unwrap_err();
        assert_eq!(problems.at("$.l").unwrap().message, "number out of range");
    }

    #[test]
    fn enum_symbol_must_be_known() {
        let mut body = good();
        body["e"] = json!("C");
        let problems = json_to_avro(&all_types(), body.clone()).unwrap_err();
        let p = problems.at("$.e").unwrap();
        assert_eq!(p.message, "unknown symbol");
        assert_eq!(p.expected.as_deref(), Some("one of A, B"));
        assert_eq!(p.found.as_deref(), Some("string \"C\""));
    }

    #[test]
    fn timestamps_must_be_rfc3339() {
        let mut body = good();
        body["ts"] = json!("yesterday");
        let problems = json_to_avro(&all_types(), body.clone()).unwrap_err();
        assert_eq!(
            problems.at("$.ts").unwrap().message,
            "not a valid timestamp"
        );
        body["ts"] = json!(12345);
        let problems = json_to_avro(&all_types(), body.clone()).unwrap_err();
        assert_eq!(problems.at("$.ts").unwrap().message, "wrong type");
        body["ts"] = json!("2026-11-22T11:00:00+01:00");
        let Value::Record(fields) = json_to_avro(&all_types(), body.clone()).unwrap() else {
            panic!()
        };
        assert!(fields.contains(&("ts".into(), Value::TimestampMillis(1_795_341_600_000))));
    }

    #[test]
    fn uuids_are_validated() {
        let mut body = good();
        body["u"] = json!("not-a-uuid");
        let problems = json_to_avro(&all_types(), body.clone()).unwrap_err();
        assert_eq!(problems.at("$.u").unwrap().message, "not a valid uuid");
    }

    #[test]
    fn unknown_and_missing_fields_are_reported_together() {
        let mut body = good();
        body.as_object_mut().unwrap().remove("s");
        body["extra"] = json!(1);
        let problems = json_to_avro(&all_types(), body.clone()).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems}");
        assert_eq!(problems.at("$.extra").unwrap().message, "unknown field");
        let missing = problems.at("$.s").unwrap();
        assert_eq!(missing.message, "required field is missing");
        assert_eq!(missing.expected.as_deref(), Some("string"));
    }

    #[test]
    fn optional_accepts_null_and_value_and_rejects_other_types() {
        let mut body = good();
        body["opt"] = Json::Null;
        assert!(json_to_avro(&all_types(), body.clone()).is_ok());
        body["opt"] = json!("x");
        assert!(json_to_avro(&all_types(), body.clone()).is_ok());
        body["opt"] = json!(3);
        let problems = json_to_avro(&all_types(), body.clone()).unwrap_err();
        assert_eq!(
            problems.at("$.opt").unwrap().expected.as_deref(),
            Some("string")
        );
        body["opt"] = Json::Null;
        body["either"] = json!(true);
        let problems = json_to_avro(&all_types(), body.clone()).unwrap_err();
        assert_eq!(
            problems.at("$.either").unwrap().expected.as_deref(),
            Some("null or long (64-bit integer) or string")
        );
    }

    #[test]
    fn map_values_get_their_key_in_the_path() {
        let mut body = good();
        body["m"] = json!({"ok": 1, "bad key": "x"});
        let problems = json_to_avro(&all_types(), body.clone()).unwrap_err();
        assert!(problems.at("$.m[\"bad key\"]").is_some(), "{problems}");
    }

    #[test]
    fn non_object_body_is_one_problem_at_root() {
        let problems = json_to_avro(&all_types(), json!([1])).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems.0[0].path, "$");
        assert_eq!(problems.0[0].found.as_deref(), Some("array of 1 elements"));
    }
}
