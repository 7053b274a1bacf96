//! `/openapi.json`, generated at start from the catalog and the configuration: each command's
//! request body is the JSON Schema of its event's Avro schema minus the derived fields, with the
//! catalog's rules as constraints; header and batch limits are the ones the request handling
//! enforces; the bearer security scheme is declared only when API keys are configured; every
//! answer a route can give is listed. `scripts/openapi-fuzz.sh` checks the document against the
//! behaviour with schemathesis.

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
        Schema::Long => json!({"type": "integer", "format": "int64",
            "minimum": i64::MIN, "maximum": i64::MAX}),
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

/// A pattern matched by any string with a character outside Unicode's White_Space set.
const NOT_ONLY_WHITESPACE: &str =
    "[^\\t\\n\\u000B\\f\\r \\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]";

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
        // Whitespace-only counts as empty: at least one character that is not Unicode
        // White_Space (what `str::trim` removes).
        obj.insert("minLength".into(), json!(1));
        obj.insert("pattern".into(), json!(NOT_ONLY_WHITESPACE));
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

/// What the document depends on besides the catalog: the limits and the authentication the
/// running process applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Whether API keys are configured (then the bearer scheme is declared and required).
    pub auth: bool,
    /// Most items in one batch.
    pub max_batch_items: usize,
}

/// The pattern of header-like tokens ([`crate::request_meta::valid_token`]): printable ASCII,
/// no leading or trailing space.
const TOKEN_PATTERN: &str = "^[!-~]([ -~]*[!-~])?$";

/// The schema of a token of at most `max` characters.
fn token_schema(max: usize) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": max, "pattern": TOKEN_PATTERN})
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema":
        {"$ref": "#/components/schemas/Error"}}}})
}

fn standard_errors(auth: bool) -> Map<String, Value> {
    let mut responses = Map::new();
    let mut statuses = vec![
        (
            "400",
            "invalid JSON, an invalid command (every problem with its JSON path) or a malformed \
             header",
        ),
        ("404", "unknown command"),
        ("413", "body (or batch) too large"),
        ("415", "unsupported content type"),
        (
            "422",
            "Idempotency-Key already used with a different body (while this process remembers \
             the key)",
        ),
        (
            "503",
            "nothing written (overloaded, broker or registry unavailable), or the outcome is \
             unknown (then retrying with the same Idempotency-Key is safe); see Retry-After",
        ),
    ];
    if auth {
        statuses.push(("401", "missing or wrong bearer token"));
        statuses.push(("403", "this API key may not send this command"));
    }
    for (status, description) in statuses {
        responses.insert(status.into(), error_response(description));
    }
    responses
}

/// The whole OpenAPI 3.1 document.
pub fn document(catalog: &Catalog, options: &Options) -> Value {
    let mut paths = Map::new();
    let id_header = |name: &str, description: &str| {
        json!({"name": name, "in": "header", "required": false, "schema": token_schema(200),
               "description": description})
    };
    let header_params = json!([
        {"name": "Idempotency-Key", "in": "header", "required": false,
         "schema": token_schema(255),
         "description": "makes the event id deterministic (from the command, the caller, the key \
                         and the body); a retry with the same body gets the original answer"},
        id_header("X-Correlation-Id", "copied into the event's correlation_id header (a new UUID when absent)"),
        id_header("X-Causation-Id", "copied into the event's causation_id header"),
        {"name": "traceparent", "in": "header", "required": false, "schema": {"type": "string"},
         "description": "W3C trace context; kept when valid, otherwise a new trace is started"},
    ]);
    let security = if options.auth {
        json!([{"bearer": []}])
    } else {
        json!([])
    };
    for command in catalog.commands() {
        let mut responses = standard_errors(options.auth);
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
                "security": security,
            }}),
        );
    }
    let names: Vec<&str> = catalog.commands().iter().map(|c| c.name.as_str()).collect();
    let mut batch_responses = standard_errors(options.auth);
    batch_responses.insert(
        "200".into(),
        json!({"description": "one result per item, in order",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchResponse"}}}}),
    );
    batch_responses.insert(
        "413".into(),
        error_response(&format!(
            "body too large, or more than {} items",
            options.max_batch_items
        )),
    );
    paths.insert(
        "/commands".into(),
        json!({"post": {
            "operationId": "batch",
            "summary": "many commands in one request, produced concurrently",
            "description": "Each item should be a BatchItem. An item that is not (wrong shape, \
                unknown command, invalid body) gets its own 4xx in the results and does not fail \
                the batch, so the request accepts items of any shape. Each item carries its own \
                idempotency_key; an Idempotency-Key header is refused with 400.",
            "parameters": [id_header("X-Correlation-Id", "copied into every event's correlation_id header"),
                id_header("X-Causation-Id", "copied into every event's causation_id header"),
                {"name": "traceparent", "in": "header", "required": false, "schema": {"type": "string"}}],
            "requestBody": {"required": true, "content": {
                "application/json": {"schema": {"type": "array", "minItems": 1,
                    "maxItems": options.max_batch_items,
                    "items": {"description": "a BatchItem (any other value gets its own 400)"}}},
                "application/x-ndjson": {"schema": {"type": "string",
                    "description": "one BatchItem per line, blank lines ignored, at least one item"}},
            }},
            "responses": batch_responses,
            "security": security,
        }}),
    );
    paths.insert(
        "/healthz".into(),
        json!({"get": {"summary": "the process is alive", "security": [],
            "responses": {"200": {"description": "alive"}}}}),
    );
    paths.insert(
        "/readyz".into(),
        json!({"get": {"summary": "the broker and the registry answer", "security": [],
            "responses": {"200": {"description": "ready"},
                          "503": {"description": "the broker or the registry does not answer"}}}}),
    );
    paths.insert(
        "/metrics".into(),
        json!({"get": {"summary": "Prometheus metrics", "security": [],
            "responses": {"200": {"description": "the Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}}}}}}),
    );
    let mut components = json!({
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
                "properties": {"command": {"type": "string", "enum": names},
                    "body": {"type": "object", "description": "the command's body, as for POST /commands/{command}"},
                    "idempotency_key": {"anyOf": [token_schema(255), {"type": "null"}]}}},
            "BatchResponse": {"type": "object", "required": ["accepted", "failed", "results"], "properties": {
                "accepted": {"type": "integer"}, "failed": {"type": "integer"},
                "results": {"type": "array", "items": {"type": "object",
                    "required": ["index", "status"],
                    "properties": {"index": {"type": "integer"}, "status": {"type": "integer"}}}}}},
        },
    });
    if options.auth {
        components["securitySchemes"] = json!({"bearer": {"type": "http", "scheme": "bearer"}});
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "factline write side", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Commands in, events on Kafka. 202 only after the broker acknowledged."},
        "paths": paths,
        "components": components,
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

    fn options(auth: bool) -> Options {
        Options {
            auth,
            max_batch_items: 7,
        }
    }

    #[test]
    fn document_lists_every_command_and_answer() {
        let doc = document(Catalog::builtin(), &options(true));
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

    #[test]
    fn bearer_auth_is_declared_only_when_keys_are_configured() {
        let with = document(Catalog::builtin(), &options(true));
        assert_eq!(
            with["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert_eq!(
            with["paths"]["/commands"]["post"]["security"],
            json!([{"bearer": []}])
        );
        let without = document(Catalog::builtin(), &options(false));
        assert!(without["components"].get("securitySchemes").is_none());
        for (path, item) in without["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                assert_eq!(op["security"], json!([]), "{method} {path}");
                assert!(op["responses"].get("401").is_none(), "{method} {path}");
            }
        }
    }

    #[test]
    fn header_and_batch_limits_are_the_enforced_ones() {
        let doc = document(Catalog::builtin(), &options(false));
        let batch = &doc["paths"]["/commands"]["post"];
        let array = &batch["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(array["minItems"], 1);
        assert_eq!(array["maxItems"], 7);
        let key = &doc["components"]["schemas"]["BatchItem"]["properties"]["idempotency_key"];
        assert_eq!(key["anyOf"][0]["maxLength"], 255);
        assert_eq!(key["anyOf"][0]["pattern"], TOKEN_PATTERN);
        let params = doc["paths"]["/commands/ShipOrder"]["post"]["parameters"]
            .as_array()
            .unwrap();
        let limit = |name: &str| {
            params.iter().find(|p| p["name"] == name).unwrap()["schema"]["maxLength"].clone()
        };
        assert_eq!(limit("Idempotency-Key"), 255);
        assert_eq!(limit("X-Correlation-Id"), 200);
        assert_eq!(limit("X-Causation-Id"), 200);
        // Non-empty rules exclude whitespace-only strings, as the rule check does.
        let name = &request_schema(Catalog::builtin().command("RegisterCustomer").unwrap())
            ["properties"]["name"];
        assert_eq!(name["pattern"], NOT_ONLY_WHITESPACE);
        assert_eq!(name["maxLength"], 200);
    }
}
