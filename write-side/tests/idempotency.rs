//! Idempotency keys cannot drop a write, against the real broker (`KAFKA_BROKERS`) and registry
//! (`SCHEMA_REGISTRY_URL`): a key reused with another body after a restart, on a second
//! instance, after eviction, or by another API key gets a new event id (so no read model drops
//! it as a duplicate), while a true retry keeps its event id; the batch endpoint's per-item keys
//! behave the same. Every case reads the topic to check what actually landed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use factline_write_side::auth::ApiKey;
use rdkafka::message::Message;
use serde_json::{json, Value};
use std::collections::BTreeSet;

fn unique() -> String {
    factline_testkit::short_id(10)
}

fn register(customer: &str, name: &str) -> Value {
    json!({"customer_id": customer, "email": format!("{name}@example.com"), "name": name})
}

/// Posts `body` as `RegisterCustomer` with `key` (and `extra` headers), expecting `202`;
/// returns the event id.
async fn accepted(app: &TestApp, body: &Value, key: &str, extra: &[(&str, &str)]) -> String {
    let mut headers = vec![("idempotency-key", key)];
    headers.extend_from_slice(extra);
    let (status, _, answer) = app.post("RegisterCustomer", body, &headers).await;
    assert_eq!(status, 202, "{answer}");
    answer["event_id"].as_str().unwrap().to_string()
}

/// The event ids and keys (customer ids) of every record on `topic` (expects exactly `count`).
async fn on_topic(topic: &str, count: usize) -> Vec<(String, String)> {
    let records = read_all(topic, count).await;
    assert_eq!(records.len(), count, "records on {topic}");
    records
        .iter()
        .map(|record| {
            let key = String::from_utf8(record.key().expect("key").to_vec()).expect("utf-8 key");
            (envelope(record).event_id.to_string(), key)
        })
        .collect()
}

#[tokio::test]
async fn a_key_reused_with_another_body_after_a_restart_is_a_new_event_and_a_retry_is_not() {
    let app = TestApp::start(|_| {}).await;
    let customers = app.topic("customers");
    let id = unique();
    let key = format!("k-{id}");
    let (a, b) = (
        register(&format!("a-{id}"), "ada"),
        register(&format!("b-{id}"), "bob"),
    );

    let first = accepted(&app, &a, &key, &[]).await;
    let prefix = app.prefix.clone();
    app.stop().await;

    // A new process: the key store is empty.
    let restarted = TestApp::start_with_prefix(&prefix, |_| {}).await;
    let second = accepted(&restarted, &b, &key, &[]).await;
    assert_ne!(
        first, second,
        "another body under the same key got the same event id"
    );
    // A true retry (same command, key and body, keys in another order) keeps its event id.
    let a_reordered =
        json!({"name": a["name"], "email": a["email"], "customer_id": a["customer_id"]});
    restarted.stop().await;
    let again = TestApp::start_with_prefix(&prefix, |_| {}).await;
    let retry = accepted(&again, &a_reordered, &key, &[]).await;
    assert_eq!(
        retry, first,
        "a true retry after a restart changed its event id"
    );
    again.stop().await;

    let records = on_topic(&customers, 3).await;
    let ids: BTreeSet<&str> = records.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(ids.len(), 2, "{records:?}");
    let b_record = records
        .iter()
        .find(|(_, customer)| *customer == format!("b-{id}"))
        .expect("customer b on the log");
    assert_eq!(b_record.0, second);
    assert!(records
        .iter()
        .filter(|(_, customer)| *customer == format!("a-{id}"))
        .all(|(event, _)| *event == first));
}

#[tokio::test]
async fn a_second_instance_and_an_evicted_key_never_reuse_an_event_id() {
    let one = TestApp::start(|c| c.idempotency_capacity = 1).await;
    let customers = one.topic("customers");
    let two = TestApp::start_with_prefix(&one.prefix, |_| {}).await;
    let id = unique();
    let key = format!("k-{id}");

    let on_one = accepted(&one, &register(&format!("a-{id}"), "ada"), &key, &[]).await;
    let on_two = accepted(&two, &register(&format!("b-{id}"), "bob"), &key, &[]).await;
    assert_ne!(on_one, on_two);

    // Capacity 1: another key evicts `key`, which is then reused with a third body.
    accepted(&one, &register(&format!("x-{id}"), "xavier"), "other", &[]).await;
    let after_eviction = accepted(&one, &register(&format!("c-{id}"), "cyd"), &key, &[]).await;
    assert_ne!(after_eviction, on_one);
    assert_ne!(after_eviction, on_two);

    let records = on_topic(&customers, 4).await;
    let ids: BTreeSet<&str> = records.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(ids.len(), 4, "{records:?}");
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn two_api_keys_using_the_same_idempotency_key_get_distinct_events() {
    let app = TestApp::start(|c| {
        c.api_keys = vec![
            ApiKey::from_plain("alpha-secret", None),
            ApiKey::from_plain("beta-secret", None),
        ];
    })
    .await;
    let customers = app.topic("customers");
    let id = unique();
    let key = format!("k-{id}");
    let alpha = [("authorization", "Bearer alpha-secret")];
    let beta = [("authorization", "Bearer beta-secret")];
    let (a, b) = (
        register(&format!("a-{id}"), "ada"),
        register(&format!("b-{id}"), "bob"),
    );

    let from_alpha = accepted(&app, &a, &key, &alpha).await;
    // Another principal, same key, another body: not a conflict, a new event.
    let from_beta = accepted(&app, &b, &key, &beta).await;
    assert_ne!(from_alpha, from_beta);
    // Each principal's retry is its own replay.
    assert_eq!(accepted(&app, &a, &key, &alpha).await, from_alpha);
    assert_eq!(accepted(&app, &b, &key, &beta).await, from_beta);
    // The same principal with another body is still a conflict while remembered.
    let (status, _, answer) = app
        .post(
            "RegisterCustomer",
            &b,
            &[("idempotency-key", key.as_str()), alpha[0]],
        )
        .await;
    assert_eq!(status, 422, "{answer}");

    let records = on_topic(&customers, 2).await;
    let ids: BTreeSet<&str> = records.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        ids,
        BTreeSet::from([from_alpha.as_str(), from_beta.as_str()])
    );
    app.stop().await;
}

#[tokio::test]
async fn batch_item_keys_reused_with_another_body_after_a_restart_are_new_events() {
    let app = TestApp::start(|_| {}).await;
    let customers = app.topic("customers");
    let prefix = app.prefix.clone();
    let id = unique();
    let key = format!("k-{id}");
    async fn batch(app: &TestApp, key: &str, body: Value) -> String {
        let items = json!([{"command": "RegisterCustomer", "body": body, "idempotency_key": key}]);
        let (_, answer) = app
            .post_batch("application/json", items.to_string(), &[])
            .await;
        assert_eq!(answer["results"][0]["status"], 202, "{answer}");
        answer["results"][0]["event_id"]
            .as_str()
            .unwrap()
            .to_string()
    }
    let first = batch(&app, &key, register(&format!("a-{id}"), "ada")).await;
    app.stop().await;
    let restarted = TestApp::start_with_prefix(&prefix, |_| {}).await;
    let second = batch(&restarted, &key, register(&format!("b-{id}"), "bob")).await;
    assert_ne!(first, second);
    // A single command with the same key and body as a batch item is the same command.
    let single = accepted(&restarted, &register(&format!("b-{id}"), "bob"), &key, &[]).await;
    assert_eq!(single, second);
    restarted.stop().await;

    let records = on_topic(&customers, 2).await;
    let ids: BTreeSet<&str> = records.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(ids, BTreeSet::from([first.as_str(), second.as_str()]));
}

#[tokio::test]
async fn the_batch_endpoint_refuses_a_request_level_idempotency_key() {
    let app = TestApp::start(|_| {}).await;
    let customers = app.topic("customers");
    let id = unique();
    let items =
        json!([{"command": "RegisterCustomer", "body": register(&format!("a-{id}"), "ada")}]);
    let (status, answer) = app
        .post_batch(
            "application/json",
            items.to_string(),
            &[("idempotency-key", &format!("k-{id}"))],
        )
        .await;
    // Ignoring it would let a client believe its retries are safe; nothing is written.
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("idempotency_key"),
        "{answer}"
    );
    assert_eq!(high_watermark(&customers).await, 0);
    app.stop().await;
}
