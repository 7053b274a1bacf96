//! The OpenAPI 3.1 description served at `/openapi.json`.

use serde_json::{json, Value};

fn param(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "maxLength": 512}})
}

fn text() -> Value {
    json!({"type": "string", "maxLength": 512})
}

fn time() -> Value {
    json!({"type": "string", "description": "RFC 3339 time or YYYY-MM-DD"})
}

fn consistency() -> Vec<Value> {
    vec![
        param("consistent_with", "position token from the write side: wait until this write is visible (also header Factline-Consistent-With)", text()),
        param("wait_ms", "longest wait for consistent_with, at most the server's limit", json!({"type": "integer", "minimum": 0})),
    ]
}

fn page() -> Vec<Value> {
    vec![
        param(
            "limit",
            "page size (default 20, at most 100)",
            json!({"type": "integer", "minimum": 1, "maximum": 100}),
        ),
        param("cursor", "next_cursor of the previous page", text()),
    ]
}

fn get(summary: &str, mut parameters: Vec<Value>, with_consistency: bool) -> Value {
    if with_consistency {
        parameters.extend(consistency());
    }
    let fresh = json!({
        "Factline-Projection": {"schema": {"type": "string"}, "description": "projection/version that answered"},
        "Factline-Position": {"schema": {"type": "string"}, "description": "topic:partition:next_offset of every partition applied"},
        "Factline-Lag-Events": {"schema": {"type": "integer"}, "description": "records not applied yet"},
        "Factline-Lag-Seconds": {"schema": {"type": "number"}, "description": "age of the oldest record not applied yet"}
    });
    json!({"get": {
        "summary": summary,
        "parameters": parameters,
        "responses": {
            "200": {"description": "the answer", "headers": fresh},
            "400": {"description": "a parameter is invalid; `parameter` names it"},
            "401": {"description": "bearer key missing or unknown (when keys are configured)"},
            "404": {"description": "no such entity"},
            "503": {"description": "consistent_with not reached in time (body: freshness), or a store is down"}
        }
    }})
}

/// The whole document.
pub fn document() -> Value {
    let statuses = json!({"type": "string", "enum": crate::routes::customers::STATUSES});
    let mut orders_list = vec![
        param("status", "order status", statuses.clone()),
        param("placed_from", "placed at or after", time()),
        param("placed_to", "placed before", time()),
    ];
    orders_list.extend(page());
    let mut search = vec![
        param("q", "full text over item names and customer name", text()),
        param("status", "order status", statuses),
        param("customer_id", "customer", text()),
        param("placed_from", "placed at or after", time()),
        param("placed_to", "placed before", time()),
        param(
            "total_min",
            "total in cents, at least",
            json!({"type": "integer", "minimum": 0}),
        ),
        param(
            "total_max",
            "total in cents, at most",
            json!({"type": "integer", "minimum": 0}),
        ),
        param(
            "sort",
            "sort order",
            json!({"type": "string", "enum": crate::routes::search::SORTS}),
        ),
    ];
    search.extend(page());
    let mut events = vec![
        param("q", "full text over the payload", text()),
        param("type", "event type, e.g. OrderPlaced", text()),
        param("key", "record key (aggregate id)", text()),
        param("topic", "topic", text()),
        param("from", "record time at or after", time()),
        param("to", "record time before", time()),
    ];
    events.extend(page());
    json!({
        "openapi": "3.1.0",
        "info": {"title": "factline read API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Queries over the read models. Every answer from a projection carries its freshness headers; pass consistent_with to read your own writes."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/orders/{id}": get("an order summary", vec![path_param("id")], true),
            "/customers/{id}": get("a customer's statistics", vec![path_param("id")], true),
            "/customers/{id}/orders": get("a customer's orders, newest first", [vec![path_param("id")], orders_list].concat(), true),
            "/search/orders": get("search orders", search, true),
            "/events": get("browse and search every event, newest first", events, true),
            "/projections": get("every projector: versions, positions, lag, rebuild progress, dead letters", vec![], false),
            "/projections/{name}": get("one projector", vec![path_param("name")], false),
            "/views/{name}": get("a declarative projection's rows, filtered on its declared columns (column=value)", [vec![path_param("name")], page()].concat(), true),
            "/views/{name}/{key}": get("a declarative projection's row by key", vec![path_param("name"), path_param("key")], true),
            "/healthz": {"get": {"summary": "liveness", "responses": {"200": {"description": "alive"}}}},
            "/readyz": {"get": {"summary": "readiness: PostgreSQL and Elasticsearch answer", "responses": {"200": {"description": "ready"}, "503": {"description": "a store is down"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "metrics"}}}}
        }
    })
}
