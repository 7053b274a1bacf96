//! Schema identity: two schema texts are the same schema when their JSON, with object keys
//! sorted and whitespace removed, is equal. Docs and defaults count; formatting does not.

use serde_json::Value;

/// The canonical JSON text of a schema, or `None` if it is not JSON.
pub fn canonical_json(schema: &str) -> Option<String> {
    let value: Value = serde_json::from_str(schema).ok()?;
    let mut out = String::new();
    write(&value, &mut out);
    Some(out)
}

fn write(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        let a = r#"{"type":"record","name":"A","fields":[{"name":"x","type":"int"}]}"#;
        let b = "{ \"fields\": [ {\"type\": \"int\", \"name\": \"x\"} ],\n \"name\": \"A\", \"type\": \"record\" }";
        assert_eq!(canonical_json(a), canonical_json(b));
    }

    #[test]
    fn defaults_and_field_order_do_matter() {
        let a = r#"{"type":"record","name":"A","fields":[{"name":"x","type":"int","default":1}]}"#;
        let b = r#"{"type":"record","name":"A","fields":[{"name":"x","type":"int","default":2}]}"#;
        assert_ne!(canonical_json(a), canonical_json(b));
        let c = r#"{"type":"record","name":"A","fields":[{"name":"x","type":"int"},{"name":"y","type":"int"}]}"#;
        let d = r#"{"type":"record","name":"A","fields":[{"name":"y","type":"int"},{"name":"x","type":"int"}]}"#;
        assert_ne!(canonical_json(c), canonical_json(d));
    }

    #[test]
    fn non_json_has_no_canonical_form() {
        assert_eq!(canonical_json("{not json"), None);
    }
}
