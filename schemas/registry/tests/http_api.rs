//! HTTP-level tests of the registry against real PostgreSQL: status codes and Confluent
//! error bodies for each endpoint, compatibility levels, deletes, durability across a
//! restart and concurrent registration. Each test uses its own PostgreSQL schema.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::StatusCode;
use serde_json::{json, Value};

fn database_url() -> String {
    factline_testkit::env(factline_testkit::stack::DATABASE_URL)
}

fn unique_schema() -> String {
    format!("registry_test_{}", factline_testkit::short_id(12))
}

struct Registry {
    base: String,
    task: tokio::task::JoinHandle<()>,
    http: reqwest::Client,
}

impl Registry {
    async fn start(db_schema: &str) -> Registry {
        let (addr, task) = factline_registry::spawn(&database_url(), db_schema)
            .await
            .unwrap();
        Registry {
            base: format!("http://{addr}"),
            task,
            http: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }
}

fn record(fields: Value) -> Value {
    json!({ "schema": json!({"type": "record", "name": "Order", "namespace": "t", "fields": fields}).to_string() })
}

fn v1() -> Value {
    record(json!([{"name": "id", "type": "string"}]))
}

fn v2_optional() -> Value {
    record(
        json!([{"name": "id", "type": "string"}, {"name": "note", "type": ["null", "string"], "default": null}]),
    )
}

fn v2_required() -> Value {
    record(json!([{"name": "id", "type": "string"}, {"name": "gift_note", "type": "string"}]))
}

fn assert_error(answer: &(StatusCode, Value), status: u16, code: u64) {
    assert_eq!(answer.0.as_u16(), status, "{answer:?}");
    assert_eq!(answer.1["error_code"], json!(code), "{answer:?}");
    assert!(
        answer.1["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{answer:?}"
    );
}

#[tokio::test]
async fn register_lookup_and_read_back() {
    let r = Registry::start(&unique_schema()).await;
    let (status, body) = r.post("/subjects/orders-t.Order/versions", v1()).await;
    assert_eq!(status, StatusCode::OK);
    let id = body["id"].as_i64().unwrap();

    // Same schema again (reformatted): same id, no new version.
    let reformatted = json!({ "schema": "{ \"namespace\":\"t\", \"fields\": [{\"type\":\"string\",\"name\":\"id\"}], \"name\":\"Order\", \"type\":\"record\" }" });
    assert_eq!(
        r.post("/subjects/orders-t.Order/versions", reformatted)
            .await
            .1["id"]
            .as_i64(),
        Some(id)
    );
    // Same schema under another subject: same global id, version 1 there.
    assert_eq!(
        r.post("/subjects/other-t.Order/versions", v1()).await.1["id"].as_i64(),
        Some(id)
    );
    assert_eq!(
        r.get("/subjects/orders-t.Order/versions").await.1,
        json!([1])
    );

    let (status, found) = r.post("/subjects/orders-t.Order", v1()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (found["id"].as_i64(), found["version"].as_i64()),
        (Some(id), Some(1))
    );
    assert_eq!(found["subject"], "orders-t.Order");

    let (status, by_id) = r.get(&format!("/schemas/ids/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(by_id["schema"].as_str().unwrap().contains("Order"));
    let (_, users) = r.get(&format!("/schemas/ids/{id}/versions")).await;
    assert_eq!(
        users,
        json!([{"subject": "orders-t.Order", "version": 1}, {"subject": "other-t.Order", "version": 1}])
    );

    let (_, latest) = r.get("/subjects/orders-t.Order/versions/latest").await;
    assert_eq!(latest["version"], 1);
    let (status, raw) = r.get("/subjects/orders-t.Order/versions/1/schema").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(raw["name"], "Order");
    let (_, subjects) = r.get("/subjects").await;
    assert_eq!(subjects, json!(["orders-t.Order", "other-t.Order"]));
    r.task.abort();
}

#[tokio::test]
async fn errors_have_confluent_codes_and_bodies() {
    let r = Registry::start(&unique_schema()).await;
    r.post("/subjects/s/versions", v1()).await;
    assert_error(&r.get("/subjects/missing/versions").await, 404, 40401);
    assert_error(
        &r.get("/subjects/missing/versions/latest").await,
        404,
        40401,
    );
    assert_error(&r.get("/subjects/s/versions/7").await, 404, 40402);
    assert_error(&r.get("/subjects/s/versions/zero").await, 422, 42202);
    assert_error(&r.get("/schemas/ids/424242").await, 404, 40403);
    assert_error(&r.post("/subjects/s", v2_optional()).await, 404, 40403);
    assert_error(&r.post("/subjects/missing", v1()).await, 404, 40401);
    assert_error(
        &r.post(
            "/subjects/s/versions",
            json!({"schema": "{\"type\": \"nonsense\"}"}),
        )
        .await,
        422,
        42201,
    );
    assert_error(
        &r.post("/subjects/s/versions", json!({"schema": "not json"}))
            .await,
        422,
        42201,
    );
    assert_error(
        &r.post(
            "/subjects/s/versions",
            json!({"schema": "\"string\"", "schemaType": "PROTOBUF"}),
        )
        .await,
        422,
        42201,
    );
    assert_error(
        &r.post("/subjects/s/versions", json!({"nothing": 1})).await,
        400,
        400,
    );
    assert_error(
        &r.put("/config", json!({"compatibility": "SIDEWAYS"})).await,
        422,
        42203,
    );
    assert_error(&r.get("/config/never-configured").await, 404, 40401);
    assert_error(&r.get("/no/such/route").await, 404, 404);
    r.task.abort();
}

#[tokio::test]
async fn backward_is_the_default_and_names_the_offending_field() {
    let r = Registry::start(&unique_schema()).await;
    assert_eq!(
        r.get("/config").await.1,
        json!({"compatibilityLevel": "BACKWARD"})
    );
    r.post("/subjects/s/versions", v1()).await;

    let (status, check) = r
        .post(
            "/compatibility/subjects/s/versions/latest?verbose=true",
            v2_required(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(check["is_compatible"], false);
    assert!(
        check["messages"][0].as_str().unwrap().contains("gift_note"),
        "{check}"
    );

    let rejected = r.post("/subjects/s/versions", v2_required()).await;
    assert_error(&rejected, 409, 409);
    assert!(rejected.1["message"]
        .as_str()
        .unwrap()
        .contains("gift_note"));
    assert_eq!(
        r.get("/subjects/s/versions").await.1,
        json!([1]),
        "a rejected schema adds no version"
    );

    let (_, check) = r
        .post("/compatibility/subjects/s/versions/1", v2_optional())
        .await;
    assert_eq!(check, json!({"is_compatible": true}));
    assert_eq!(
        r.post("/subjects/s/versions", v2_optional()).await.0,
        StatusCode::OK
    );
    assert_eq!(r.get("/subjects/s/versions").await.1, json!([1, 2]));
    r.task.abort();
}

#[tokio::test]
async fn every_level_accepts_what_it_should_and_rejects_what_it_should() {
    let r = Registry::start(&unique_schema()).await;
    let removed = record(json!([]));
    let with_default = record(
        json!([{"name": "id", "type": "string"}, {"name": "n", "type": "int", "default": 0}]),
    );
    // (level, candidate, accepted) against a subject holding only v1.
    let cases = [
        ("BACKWARD", v2_required(), false),
        ("BACKWARD", removed.clone(), true),
        ("FORWARD", v2_required(), true),
        ("FORWARD", removed.clone(), false),
        ("FULL", v2_required(), false),
        ("FULL", removed.clone(), false),
        ("FULL", with_default.clone(), true),
        ("NONE", v2_required(), true),
        ("BACKWARD_TRANSITIVE", v2_required(), false),
        ("FORWARD_TRANSITIVE", removed.clone(), false),
        ("FULL_TRANSITIVE", with_default, true),
    ];
    for (i, (level, candidate, accepted)) in cases.into_iter().enumerate() {
        let subject = format!("s{i}");
        r.post(&format!("/subjects/{subject}/versions"), v1()).await;
        let (status, set) = r
            .put(
                &format!("/config/{subject}"),
                json!({"compatibility": level}),
            )
            .await;
        assert_eq!(
            (status, set),
            (StatusCode::OK, json!({"compatibility": level}))
        );
        let (status, _) = r
            .post(&format!("/subjects/{subject}/versions"), candidate)
            .await;
        assert_eq!(status == StatusCode::OK, accepted, "{level} case {i}");
    }
    assert_eq!(
        r.get("/config/s0").await.1,
        json!({"compatibilityLevel": "BACKWARD"})
    );
    assert_eq!(r.delete("/config/s0").await.0, StatusCode::OK);
    assert_eq!(
        r.get("/config/s0?defaultToGlobal=true").await.1,
        json!({"compatibilityLevel": "BACKWARD"})
    );
    r.task.abort();
}

#[tokio::test]
async fn transitive_levels_check_all_live_versions() {
    let r = Registry::start(&unique_schema()).await;
    r.put("/config", json!({"compatibility": "BACKWARD_TRANSITIVE"}))
        .await;
    r.post("/subjects/s/versions", v1()).await;
    let with_default = record(
        json!([{"name": "id", "type": "string"}, {"name": "n", "type": "int", "default": 0}]),
    );
    assert_eq!(
        r.post("/subjects/s/versions", with_default).await.0,
        StatusCode::OK
    );
    // Readable against v2 (which has a default for n), not against v1.
    let n_required =
        record(json!([{"name": "id", "type": "string"}, {"name": "n", "type": "int"}]));
    assert_error(
        &r.post("/subjects/s/versions", n_required.clone()).await,
        409,
        409,
    );
    r.put("/config", json!({"compatibility": "BACKWARD"})).await;
    assert_eq!(
        r.post("/subjects/s/versions", n_required).await.0,
        StatusCode::OK
    );
    r.task.abort();
}

#[tokio::test]
async fn soft_delete_hides_and_hard_delete_needs_a_soft_delete_first() {
    let r = Registry::start(&unique_schema()).await;
    r.post("/subjects/s/versions", v1()).await;
    r.post("/subjects/s/versions", v2_optional()).await;
    assert_error(
        &r.delete("/subjects/s/versions/2?permanent=true").await,
        404,
        40405,
    );
    assert_eq!(
        r.delete("/subjects/s/versions/2").await,
        (StatusCode::OK, json!(2))
    );
    assert_eq!(r.get("/subjects/s/versions").await.1, json!([1]));
    assert_eq!(
        r.get("/subjects/s/versions?deleted=true").await.1,
        json!([1, 2])
    );
    assert_error(&r.get("/subjects/s/versions/2").await, 404, 40402);
    assert_eq!(
        r.delete("/subjects/s/versions/2?permanent=true").await,
        (StatusCode::OK, json!(2))
    );
    assert_eq!(
        r.get("/subjects/s/versions?deleted=true").await.1,
        json!([1])
    );

    assert_eq!(r.delete("/subjects/s").await, (StatusCode::OK, json!([1])));
    assert_error(&r.get("/subjects/s/versions").await, 404, 40401);
    assert_eq!(r.get("/subjects").await.1, json!([]));
    // Re-registering a soft-deleted schema works and gets the next version after the highest one kept
    // (version 2 was deleted permanently, version 1 only softly).
    let (status, _) = r.post("/subjects/s/versions", v1()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(r.get("/subjects/s/versions").await.1, json!([2]));
    assert_error(&r.delete("/subjects/missing").await, 404, 40401);
    r.task.abort();
}

#[tokio::test]
async fn state_survives_a_restart_and_ids_continue() {
    let db_schema = unique_schema();
    let first = Registry::start(&db_schema).await;
    let id1 = first.post("/subjects/a/versions", v1()).await.1["id"]
        .as_i64()
        .unwrap();
    first
        .put("/config/a", json!({"compatibility": "NONE"}))
        .await;
    first.task.abort();
    let _ = first.task.await;

    let second = Registry::start(&db_schema).await;
    assert_eq!(
        second.get(&format!("/schemas/ids/{id1}")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        second.get("/subjects/a/versions/latest").await.1["id"].as_i64(),
        Some(id1)
    );
    assert_eq!(
        second.get("/config/a").await.1,
        json!({"compatibilityLevel": "NONE"})
    );
    let id2 = second.post("/subjects/a/versions", v2_required()).await.1["id"]
        .as_i64()
        .unwrap();
    assert!(id2 > id1, "ids continue after a restart: {id1} then {id2}");
    second.task.abort();
}

#[tokio::test]
async fn concurrent_registrations_of_one_schema_get_one_id_and_one_version() {
    let r = std::sync::Arc::new(Registry::start(&unique_schema()).await);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            r.post("/subjects/race/versions", v1()).await
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        ids.insert(body["id"].as_i64().unwrap());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(r.get("/subjects/race/versions").await.1, json!([1]));
    r.task.abort();
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let r = Registry::start(&unique_schema()).await;
    assert_eq!(r.get("/subjects").await.0, StatusCode::OK);
    assert_eq!(r.get("/no/such/route").await.0, StatusCode::NOT_FOUND);
    let response = r
        .http
        .get(format!("{}/metrics", r.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    for line in [
        r#"factline_registry_requests_total{route="/subjects",status="200"}"#,
        r#"factline_registry_requests_total{route="unmatched",status="404"}"#,
        r#"factline_registry_request_duration_seconds_bucket{route="/subjects",le="0.005"}"#,
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    r.task.abort();
}
