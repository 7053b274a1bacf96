//! The OpenAPI 3.1 description served at `/openapi.json`, generated from the running
//! configuration so that it says exactly what this process accepts: page and wait limits,
//! string lengths and characters, every status a route can answer, and bearer security only
//! when keys are configured, and the declarative views known when it is served (registered by
//! their projectors in PostgreSQL). `scripts/openapi-fuzz.sh` checks it against the behaviour.

use serde_json::{json, Value};

use crate::config::Config;
use crate::params::MAX_TEXT;
use crate::views::Views;

/// Text without control characters (`char::is_control`: U+0000–U+001F, U+007F–U+009F).
const NO_CONTROL: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";

fn param(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true,
           "schema": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT, "pattern": NO_CONTROL}})
}

fn uuid_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true,
           "schema": {"type": "string", "format": "uuid",
                      "pattern": "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"}})
}

fn text() -> Value {
    json!({"type": "string", "maxLength": MAX_TEXT, "pattern": NO_CONTROL})
}

fn opaque(description: &str) -> Value {
    json!({"type": "string", "maxLength": MAX_TEXT, "pattern": "^[A-Za-z0-9_-]*$",
           "description": description})
}

fn time() -> Value {
    json!({"type": "string",
           "description": "RFC 3339 time or YYYY-MM-DD (midnight UTC), four-digit year; times past 9999-12-31T23:59:59Z in UTC count as that instant",
           "anyOf": [{"format": "date"}, {"format": "date-time"}]})
}

fn integer(minimum: i64, maximum: Option<i64>) -> Value {
    let mut schema = json!({"type": "integer", "minimum": minimum});
    if let Some(maximum) = maximum {
        schema["maximum"] = json!(maximum);
    }
    schema
}

fn error_body(description: &str) -> Value {
    json!({"description": description,
           "content": {"application/json": {"schema": {
               "type": "object", "required": ["error"],
               "properties": {"error": {"type": "string"}}}}}})
}

struct Doc<'a> {
    config: &'a Config,
}

impl Doc<'_> {
    fn consistency(&self) -> Vec<Value> {
        vec![
            param("consistent_with", "position token returned by the write side: answer only once this write is visible (also header Factline-Consistent-With)", opaque("opaque position token")),
            param(
                "wait_ms",
                "longest wait for consistent_with",
                integer(0, Some(self.config.consistency_timeout.as_millis() as i64)),
            ),
        ]
    }

    fn page(&self) -> Vec<Value> {
        vec![
            param(
                "limit",
                &format!("page size (default {})", self.config.default_page_size),
                integer(1, Some(self.config.max_page_size as i64)),
            ),
            param(
                "cursor",
                "next_cursor of the previous page of the same query",
                opaque("opaque cursor"),
            ),
        ]
    }

    fn responses(&self, fresh: bool, not_found: bool) -> Value {
        let mut responses = serde_json::Map::new();
        let ok = if fresh {
            let headers = json!({
                "Factline-Projection": {"required": true, "schema": {"type": "string"}, "description": "projection/version that answered"},
                "Factline-Position": {"required": true, "schema": {"type": "string"}, "description": "topic:partition:next_offset of every partition applied, comma-separated (empty while unknown)"},
                "Factline-Lag-Events": {"required": true, "schema": {"type": "string", "pattern": "^([0-9]+|unknown)$"}, "description": "records not applied yet, or unknown while the read API has no Kafka watermarks for the projection's topics"},
                "Factline-Lag-Seconds": {"required": true, "schema": {"type": "string", "pattern": "^([0-9]+\\.[0-9]{3}|unknown)$"}, "description": "age of the oldest record not applied yet, or unknown"}
            });
            json!({"description": "the answer, with its freshness", "headers": headers,
                   "content": {"application/json": {"schema": {"type": "object"}}}})
        } else {
            json!({"description": "the answer",
                   "content": {"application/json": {"schema": {"type": "object"}}}})
        };
        responses.insert("200".into(), ok);
        responses.insert(
            "400".into(),
            error_body(
                "a parameter is invalid (`parameter` names it), or Elasticsearch rejected a value",
            ),
        );
        if !self.config.api_key_hashes.is_empty() {
            responses.insert("401".into(), error_body("bearer key missing or unknown"));
        }
        if not_found {
            responses.insert(
                "404".into(),
                error_body("no such entity (it may not be projected yet), view or projection"),
            );
        }
        if fresh {
            let mut unavailable = error_body("consistent_with not reached within wait_ms (body: freshness), a read model not created yet, a store down, or a time limit hit");
            unavailable["headers"] = json!({"Retry-After": {"required": true, "schema": {"type": "string", "pattern": "^[0-9]+$"}}});
            responses.insert("503".into(), unavailable);
        }
        Value::Object(responses)
    }

    fn get(
        &self,
        summary: &str,
        mut parameters: Vec<Value>,
        fresh: bool,
        not_found: bool,
    ) -> Value {
        if fresh {
            parameters.extend(self.consistency());
        }
        json!({"get": {
            "summary": summary,
            "parameters": parameters,
            "responses": self.responses(fresh, not_found)
        }})
    }
}

/// The `name` of `/views/{name}`: any name (an unknown one is a `404`), the views known now
/// listed with their keys and filterable columns.
fn view_name(views: &Views) -> Value {
    let mut name = path_param("name");
    let known: Vec<String> = views
        .by_name
        .values()
        .map(|v| {
            format!(
                "{} (projector {}, key {}; filters {})",
                v.name,
                v.projector,
                v.key.join(", "),
                v.columns.join(", ")
            )
        })
        .collect();
    name["description"] = json!(if known.is_empty() {
        "a declarative view; none is registered yet".to_owned()
    } else {
        format!("a declarative view: {}", known.join("; "))
    });
    let names: Vec<&String> = views.by_name.keys().collect();
    if !names.is_empty() {
        name["schema"]["examples"] = json!(names);
    }
    name
}

/// The whole document for `config`, listing the declarative `views` known now.
pub fn document(config: &Config, views: &Views) -> Value {
    let doc = Doc { config };
    let statuses = json!({"type": "string", "enum": crate::routes::customers::STATUSES});
    let mut orders_list = vec![
        param("status", "order status", statuses.clone()),
        param("placed_from", "placed at or after", time()),
        param(
            "placed_to",
            "placed before (a range ending before it starts matches nothing)",
            time(),
        ),
    ];
    orders_list.extend(doc.page());
    let mut search = vec![
        param("q", "full text over item names and customer name", text()),
        param("status", "order status", statuses),
        param("customer_id", "customer", text()),
        param("placed_from", "placed at or after", time()),
        param(
            "placed_to",
            "placed before (a range ending before it starts matches nothing)",
            time(),
        ),
        param(
            "total_min",
            "total in cents, at least",
            integer(0, Some(i64::MAX)),
        ),
        param(
            "total_max",
            "total in cents, at most (below total_min: matches nothing)",
            integer(0, Some(i64::MAX)),
        ),
        param(
            "sort",
            "sort order",
            json!({"type": "string", "enum": crate::routes::search::SORTS}),
        ),
    ];
    search.extend(doc.page());
    let mut events = vec![
        param("q", "full text over the payload", text()),
        param("type", "event type, e.g. OrderPlaced", text()),
        param("key", "record key (aggregate id)", text()),
        param("topic", "topic", text()),
        param(
            "correlation_id",
            "correlation id (every event of one request)",
            text(),
        ),
        param("from", "record time at or after", time()),
        param("to", "record time before", time()),
    ];
    events.extend(doc.page());
    let mut document = json!({
        "openapi": "3.1.0",
        "info": {"title": "factline read API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Queries over the read models. Every answer from a projection carries its freshness headers; pass consistent_with to read your own writes. Unknown or repeated query parameters are a 400."},
        "paths": {
            "/orders/{id}": doc.get("an order summary", vec![path_param("id")], true, true),
            "/customers/{id}": doc.get("a customer's statistics", vec![path_param("id")], true, true),
            "/customers/{id}/orders": doc.get("a customer's orders, newest first", [vec![path_param("id")], orders_list].concat(), true, false),
            "/search/orders": doc.get("search orders", search, true, false),
            "/events": doc.get("browse and search every event, newest first", events, true, false),
            "/events/{event_id}": doc.get("one event with the outcome at every projector consuming its topic (applied, dead_lettered, passed, pending)", vec![uuid_param("event_id")], true, true),
            "/projections": doc.get("every projector: versions, positions, lag, rebuild progress, dead letters", vec![], false, false),
            "/projections/{name}": doc.get("one projector", vec![path_param("name")], false, true),
            "/views/{name}": doc.get("a declarative projection's rows, filtered on its declared columns (column=value, checked against the column's type)", [vec![view_name(views)], doc.page()].concat(), true, true),
            "/views/{name}/{key}": doc.get("a declarative projection's row by key", vec![view_name(views), path_param("key")], true, true),
            "/healthz": {"get": {"summary": "liveness", "responses": {"200": {"description": "alive", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/readyz": {"get": {"summary": "readiness: PostgreSQL and Elasticsearch answer, projector status and Kafka watermarks read once", "responses": {
                "200": {"description": "ready", "content": {"application/json": {"schema": {"type": "object"}}}},
                "503": {"description": "not ready (the body says what is missing)", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}}}}
        }
    });
    if !config.api_key_hashes.is_empty() {
        document["components"] =
            json!({"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}});
        document["security"] = json!([{"bearer": []}]);
        for open in ["/healthz", "/readyz"] {
            document["paths"][open]["get"]["security"] = json!([]);
        }
        document["paths"]["/metrics"]["get"]["responses"]["401"] =
            error_body("bearer key missing or unknown");
    }
    document
}
