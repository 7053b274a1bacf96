//! `/openapi.json`, generated at start from the catalog: each command's request body is the JSON
//! Schema of its event's Avro schema minus the derived fields, with the catalog's rules as
//! constraints; every documented answer (202/400/401/403/404/413/415/422/503) is listed.

use apache_avro::schema::Schema;
use factline_schemas::{Catalog, Command, Format, Rule};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Collects the named types of `schema` (records, enums, fixed) by full name, for `Ref`s.
fn collect_names<'s>(schema: &'s Schema, names: &mut HashMap<String, &'s Schema>) {
    match schema {
        Schema::Record(record) => {
            names.insert(record.name.fullname(None), schema);
            for field in &record.fields {
                collect_names(&field.schema, names);
            }
        }
        Schema::Enum(e) => {
            names.insert(e.name.fullname(None), schema);
        }
        Schema::Fixed(f) => {
            names.insert(f.name.fullname(None), schema);
        }
        Schema::Array(a) => collect_names(&a.items, names),
        Schema::Map(m) => collect_names(&m.types, names),
        Schema::Union(u) => {
            for variant in u.variants() {
                collect_names(variant, names);
            }
        }
        _ => {}
    }
}

/// The JSON Schema of the plain JSON a client sends for an Avro `schema` (the form
/// `Command::build_event` reads: bare union values, RFC 3339 timestamps, enum symbols).
pub fn json_schema(schema: &Schema, names: &HashMap<String, &Schema>) -> Value {
    match schema {
        Schema::Null => json!({"type": "null"}),
        Schema::Boolean => json!({"type": "boolean"}),
        Schema::Int => json!({"type": "integer", "format": "int32",
            "minimum": i32::MIN, "maximum": i32::MAX}),
        Schema::Long => json!({"type": "integer", "format": "int64"}),
        Schema::Float => json!({"type": "number", "format": "float"}),
        Schema::Double => json!({"type": "number", "format": "double"}),
        Schema::Bytes | Schema::Fixed(_) => json!({"type": "string"}),
        Schema::String => json!({"type": "string"}),
        Schema::Uuid(_) => json!({"type": "string", "format": "uuid"}),
        Schema::Decimal(_) | Schema::BigDecimal => json!({"type": "string"}),
        Schema::Date => json!({"type": "string", "format": "date"}),
        Schema::TimeMillis | Schema::TimeMicros => json!({"type": "string", "format": "time"}),
        Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => json!({"type": "string", "format": "date-time"}),
        Schema::Duration(_) => json!({"type": "string"}),
        Schema::Array(a) => json!({"type": "array", "items": json_schema(&a.items, names)}),
        Schema::Map(m) => json!({"type": "object",
            "additionalProperties": json_schema(&m.types, names)}),
        Schema::Union(u) => {
            let variants: Vec<Value> = u.variants().iter().map(|v| json_schema(v, names)).collect();
            json!({"anyOf": variants})
        }
        Schema::Enum(e) => {
            let mut out = json!({"type": "string", "enum": e.symbols});
            if let Some(doc) = &e.doc {
                out["description"] = json!(doc);
            }
            out
        }
        Schema::Record(record) => {
            let mut properties = Map::new();
            let mut required = Vec::new();
            for field in &record.fields {
                let mut property = json_schema(&field.schema, names);
                if let (Some(doc), Some(obj)) = (&field.doc, property.as_object_mut()) {
                    obj.insert("description".into(), json!(doc));
                }
                let optional = field.default.is_some()
                    || matches!(&field.schema, Schema::Union(u)
                        if u.variants().iter().any(|v| matches!(v, Schema::Null)));
                if !optional {
                    required.push(json!(field.name));
                }
                properties.insert(field.name.clone(), property);
            }
            let mut out = json!({
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": false,
            });
            if let Some(doc) = &record.doc {
                out["description"] = json!(doc);
            }
            out
        }
        Schema::Ref { name } => names
            .get(&name.fullname(None))
            .map(|s| json_schema(s, names))
            .unwrap_or_else(|| json!({})),
    }
}

/// Adds a catalog rule's constraints to the property it names.
fn apply_rule(root: &mut Value, rule: &Rule) {
    let mut node = root;
    for segment in rule.path.split('.') {
        let (name, each) = match segment.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (segment, false),
        };
        let Some(next) = node.get_mut("properties").and_then(|p| p.get_mut(name)) else {
            return;
        };
        node = next;
        if each {
            let Some(items) = node.get_mut("items") else {
                return;
            };
            node = items;
        }
    }
    let Some(obj) = node.as_object_mut() else {
        return;
    };
    if rule.non_empty {
        obj.insert("minLength".into(), json!(1));
    }
    if let Some(n) = rule.min_length {
        obj.insert("minLength".into(), json!(n));
    }
    if let Some(n) = rule.max_length {
        obj.insert("maxLength".into(), json!(n));
    }
    if let Some(n) = rule.min {
        obj.insert("minimum".into(), json!(n));
    }
    if let Some(n) = rule.max {
        obj.insert("maximum".into(), json!(n));
    }
    if let Some(n) = rule.min_items {
        obj.insert("minItems".into(), json!(n));
    }
    if let Some(n) = rule.max_items {
        obj.insert("maxItems".into(), json!(n));
    }
    if let Some(Format::Email) = rule.format {
        obj.insert("format".into(), json!("email"));
    }
    if !rule.none_of.is_empty() {
        if let Some(Value::Array(symbols)) = obj.get_mut("enum") {
            symbols.retain(|s| !rule.none_of.iter().any(|n| s == n));
        } else {
            obj.insert("not".into(), json!({"enum": rule.none_of}));
        }
    }
}

/// The request body schema of `command`: its event minus derived fields, plus its rules.
pub fn request_schema(command: &Command) -> Value {
    let schema = &command.event().schema;
    let mut names = HashMap::new();
    collect_names(schema, &mut names);
    let mut out = json_schema(schema, &names);
    for derived in command.derived() {
        let field = derived.field();
        if let Some(props) = out.get_mut("properties").and_then(Value::as_object_mut) {
            props.remove(field);
        }
        if let Some(Value::Array(required)) = out.get_mut("required") {
            required.retain(|r| r != field);
        }
    }
    for rule in command.rules() {
        apply_rule(&mut out, rule);
    }
    out
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema":
        {"$ref": "#/components/schemas/Error"}}}})
}

fn standard_errors() -> Map<String, Value> {
    let mut responses = Map::new();
    for (status, description) in [
        (
            "400",
            "invalid JSON or an invalid command: every problem with its JSON path",
        ),
        ("401", "missing or wrong bearer token"),
        ("403", "this API key may not send this command"),
        ("404", "unknown command"),
        ("413", "body (or batch) too large"),
        ("415", "unsupported content type"),
        ("422", "Idempotency-Key already used with a different body"),
        (
            "503",
            "nothing written (overloaded, broker or registry unavailable), or the outcome is \
                 unknown (then retrying with the same Idempotency-Key is safe); see Retry-After",
        ),
    ] {
        responses.insert(status.into(), error_response(description));
    }
    responses
}

/// The whole OpenAPI 3.1 document.
pub fn document(catalog: &Catalog) -> Value {
    let mut paths = Map::new();
    let header_params = json!([
        {"name": "Idempotency-Key", "in": "header", "required": false,
         "schema": {"type": "string", "maxLength": 255},
         "description": "makes the event id deterministic; a retry with the same body gets the original answer"},
        {"name": "X-Correlation-Id", "in": "header", "required": false, "schema": {"type": "string"}},
        {"name": "X-Causation-Id", "in": "header", "required": false, "schema": {"type": "string"}},
        {"name": "traceparent", "in": "header", "required": false, "schema": {"type": "string"}},
    ]);
    for command in catalog.commands() {
        let mut responses = standard_errors();
        responses.insert(
            "202".into(),
            json!({"description": format!("{} is on topic {}", command.event_type, command.topic),
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}}),
        );
        paths.insert(
            format!("/commands/{}", command.name),
            json!({"post": {
                "operationId": command.name,
                "summary": format!("records {} on {} (key: {})", command.event_type, command.topic, command.key_field),
                "parameters": header_params,
                "requestBody": {"required": true, "content": {"application/json": {"schema": request_schema(command)}}},
                "responses": responses,
                "security": [{"bearer": []}],
            }}),
        );
    }
    let names: Vec<&str> = catalog.commands().iter().map(|c| c.name.as_str()).collect();
    let mut batch_responses = standard_errors();
    batch_responses.insert(
        "200".into(),
        json!({"description": "one result per item, in order",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchResponse"}}}}),
    );
    paths.insert(
        "/commands".into(),
        json!({"post": {
            "operationId": "batch",
            "summary": "many commands in one request, produced concurrently",
            "requestBody": {"required": true, "content": {
                "application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/BatchItem"}}},
                "application/x-ndjson": {"schema": {"$ref": "#/components/schemas/BatchItem"}},
            }},
            "responses": batch_responses,
            "security": [{"bearer": []}],
        }}),
    );
    for (path, summary) in [
        ("/healthz", "the process is alive"),
        ("/readyz", "the broker and the registry answer"),
        ("/metrics", "Prometheus metrics"),
    ] {
        paths.insert(
            path.into(),
            json!({"get": {"summary": summary, "responses": {"200": {"description": "ok"}}}}),
        );
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "factline write side", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Commands in, events on Kafka. 202 only after the broker acknowledged."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Accepted": {"type": "object", "required": ["event_id", "topic", "partition", "offset", "position"],
                    "properties": {"event_id": {"type": "string", "format": "uuid"}, "topic": {"type": "string"},
                        "partition": {"type": "integer"}, "offset": {"type": "integer"},
                        "position": {"type": "string", "description": "opaque token for read-your-writes"}}},
                "Problem": {"type": "object", "required": ["path", "message"],
                    "properties": {"path": {"type": "string"}, "message": {"type": "string"},
                        "expected": {"type": ["string", "null"]}, "found": {"type": ["string", "null"]}}},
                "Error": {"type": "object", "required": ["error", "problems", "retryable"],
                    "properties": {"error": {"type": "string"},
                        "problems": {"type": "array", "items": {"$ref": "#/components/schemas/Problem"}},
                        "detail": {"type": "string"}, "event_id": {"type": "string", "format": "uuid"},
                        "retryable": {"type": "boolean"}}},
                "BatchItem": {"type": "object", "required": ["command", "body"], "additionalProperties": false,
                    "properties": {"command": {"type": "string", "enum": names}, "body": {"type": "object"},
                        "idempotency_key": {"type": "string", "maxLength": 255}}},
                "BatchResponse": {"type": "object", "properties": {
                    "accepted": {"type": "integer"}, "failed": {"type": "integer"},
                    "results": {"type": "array", "items": {"type": "object",
                        "required": ["index", "status"],
                        "properties": {"index": {"type": "integer"}, "status": {"type": "integer"}}}}}},
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn place_order_body_has_no_derived_fields_and_carries_rules() {
        let catalog = Catalog::builtin();
        let schema = request_schema(catalog.command("PlaceOrder").unwrap());
        let props = schema["properties"].as_object().unwrap();
        assert!(!props.contains_key("total_cents"));
        assert!(!props.contains_key("placed_at"));
        let required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            required,
            [
                "order_id",
                "customer_id",
                "currency",
                "items",
                "shipping_address"
            ]
        );
        assert_eq!(props["items"]["minItems"], 1);
        assert_eq!(
            props["items"]["items"]["properties"]["quantity"]["minimum"],
            1.0
        );
        let currencies = props["currency"]["enum"].as_array().unwrap();
        assert!(!currencies.contains(&json!("UNKNOWN")));
        let address = &props["shipping_address"];
        assert_eq!(address["additionalProperties"], false);
        assert!(!address["required"]
            .as_array()
            .unwrap()
            .contains(&json!("line2")));
    }

    #[test]
    fn document_lists_every_command_and_answer() {
        let doc = document(Catalog::builtin());
        for command in Catalog::builtin().commands() {
            let op = &doc["paths"][format!("/commands/{}", command.name)]["post"];
            for status in [
                "202", "400", "401", "403", "404", "413", "415", "422", "503",
            ] {
                assert!(
                    op["responses"][status].is_object(),
                    "{} {status}",
                    command.name
                );
            }
        }
    }
}
