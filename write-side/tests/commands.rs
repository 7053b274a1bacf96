//! Acceptance tests of the write side against the real broker (`KAFKA_BROKERS`) and registry
//! (`SCHEMA_REGISTRY_URL`): what lands on the log, validation, idempotency, batches, auth,
//! limits and backpressure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use factline_schemas::{Catalog, Position};
use factline_write_side::auth::ApiKey;
use factline_write_side::idempotency::{event_id_for, fingerprint, IdempotencyKey};
use rdkafka::message::Message;
use serde_json::{json, Value};
use uuid::Uuid;

fn unique() -> String {
    factline_testkit::short_id(10)
}

#[tokio::test]
async fn every_sample_command_lands_on_its_topic_with_key_headers_and_avro_body() {
    let app = TestApp::start(|_| {}).await;
    let codec = codec(&app.prefix);
    let crypto = crypto(&app.config);
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for (command, body) in factline_testkit::samples::every_command(&unique()) {
        let (status, _, answer) = app
            .post(
                command,
                &body,
                &[
                    ("x-correlation-id", "corr-42"),
                    ("x-causation-id", "cause-7"),
                    ("traceparent", traceparent),
                ],
            )
            .await;
        assert_eq!(status, 202, "{command}: {answer}");
        let spec = Catalog::builtin().command(command).unwrap();
        let topic = app.topic(&spec.topic);
        assert_eq!(answer["topic"], topic.as_str());
        let partition = answer["partition"].as_i64().unwrap() as i32;
        let offset = answer["offset"].as_i64().unwrap();
        let position = Position::from_token(answer["position"].as_str().unwrap()).unwrap();
        assert_eq!(
            position,
            Position {
                topic: topic.clone(),
                partition,
                offset
            }
        );

        let record = read_at(&topic, partition, offset).await;
        let key = body[&spec.key_field].as_str().unwrap();
        assert_eq!(record.key(), Some(key.as_bytes()), "{command} key");
        let envelope = envelope(&record);
        assert_eq!(
            envelope.event_id.to_string(),
            answer["event_id"].as_str().unwrap()
        );
        assert_eq!(envelope.event_type, spec.event_type);
        assert_eq!(envelope.correlation_id, "corr-42");
        assert_eq!(envelope.causation_id.as_deref(), Some("cause-7"));
        assert_eq!(envelope.traceparent.as_deref(), Some(traceparent));

        let mut decoded = codec.decode(record.payload().unwrap()).await.unwrap();
        assert_eq!(decoded.event_type, spec.event_type);
        // personal fields are on the log as ciphertext only, and open with the subject's key
        let schema = spec.event();
        if let Some(personal) = &schema.personal {
            for text in personal.strings(&decoded.value) {
                assert!(text.starts_with("fl1:"), "{command}: {text}");
            }
            assert!(!personal.strings(&decoded.value).is_empty(), "{command}");
        }
        crypto.open(schema, &mut decoded.value).await.unwrap();
        let event = decoded.to_json();
        for (field, value) in body.as_object().unwrap() {
            if field == "shipping_address" {
                assert_eq!(event[field]["line1"], value["line1"]);
                assert_eq!(event[field]["line2"], Value::Null);
            } else {
                assert_eq!(&event[field], value, "{command}.{field}");
            }
        }
        // Derived timestamps are the envelope's occurred_at.
        let derived_at = spec
            .derived()
            .iter()
            .map(|d| d.field())
            .find(|f| f.ends_with("_at"))
            .unwrap();
        let at = chrono::DateTime::parse_from_rfc3339(event[derived_at].as_str().unwrap()).unwrap();
        assert_eq!(at, envelope.occurred_at, "{command}.{derived_at}");
        if command == "PlaceOrder" {
            assert_eq!(event["total_cents"], 900);
            assert_eq!(event["currency"], "EUR");
        }
    }
    // Without incoming ids, new ones are made.
    let (status, _, answer) = app
        .post("DeliverOrder", &json!({"order_id": "o-x"}), &[])
        .await;
    assert_eq!(status, 202);
    let record = read_at(
        answer["topic"].as_str().unwrap(),
        answer["partition"].as_i64().unwrap() as i32,
        answer["offset"].as_i64().unwrap(),
    )
    .await;
    let envelope = envelope(&record);
    assert!(Uuid::parse_str(&envelope.correlation_id).is_ok());
    assert_eq!(envelope.causation_id, None);
    assert!(envelope.traceparent.unwrap().starts_with("00-"));
    app.stop().await;
}

/// JSON does not tell `2.0` from `2`: an integer field takes a number with a zero fraction as
/// that integer (in the event, in a derived total, and in the idempotency fingerprint, so a retry
/// written either way replays), while a real fraction is a `400` that writes nothing.
#[tokio::test]
async fn an_integral_number_with_a_fraction_is_that_integer_everywhere() {
    let app = TestApp::start(|_| {}).await;
    let codec = codec(&app.prefix);
    let id = unique();
    let order = |quantity: Value, unit_price: Value| {
        let mut body = factline_testkit::samples::order(&format!("o-{id}"), "c-1", "tea", 0, 0);
        body["items"][0]["quantity"] = quantity;
        body["items"][0]["unit_price_cents"] = unit_price;
        body
    };
    let key = [("idempotency-key", "integral-1")];
    let (status, _, first) = app
        .post("PlaceOrder", &order(json!(2.0), json!(4.5e2)), &key)
        .await;
    assert_eq!(status, 202, "{first}");
    let (status, _, retry) = app
        .post("PlaceOrder", &order(json!(2), json!(450)), &key)
        .await;
    assert_eq!(status, 202, "{retry}");
    assert_eq!(retry["event_id"], first["event_id"]);
    assert_eq!(retry["offset"], first["offset"]);

    let (status, _, refused) = app
        .post("PlaceOrder", &order(json!(2.5), json!(450)), &[])
        .await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused.to_string().contains("not an integer"), "{refused}");

    let topic = app.topic("orders");
    assert_eq!(
        high_watermark(&topic).await,
        1,
        "only the first command is on the log"
    );
    let partition = first["partition"].as_i64().unwrap() as i32;
    let record = read_at(&topic, partition, first["offset"].as_i64().unwrap()).await;
    let event = codec
        .decode(record.payload().unwrap())
        .await
        .unwrap()
        .to_json();
    assert_eq!(event["items"][0]["quantity"], 2);
    assert_eq!(event["items"][0]["unit_price_cents"], 450);
    assert_eq!(event["total_cents"], 900);
}

#[tokio::test]
async fn invalid_bodies_get_every_problem_and_nothing_is_produced() {
    let app = TestApp::start(|_| {}).await;
    let orders = app.topic("orders");
    let before = high_watermark(&orders).await;

    let body = json!({
        "order_id": "",
        "currency": "XXX",
        "items": [{"sku": "a", "name": "b", "quantity": "two", "unit_price_cents": -1}],
        "shipping_address": {"line1": "x", "city": "y", "postal_code": "z", "country": "GBR", "planet": "earth"},
        "total_cents": 5
    });
    let (status, _, answer) = app.post("PlaceOrder", &body, &[]).await;
    assert_eq!(status, 400, "{answer}");
    let paths: Vec<&str> = answer["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    for expected in [
        "$.order_id",
        "$.customer_id",
        "$.currency",
        "$.items[0].quantity",
        "$.items[0].unit_price_cents",
        "$.shipping_address.country",
        "$.shipping_address.planet",
        "$.total_cents",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from {paths:?}"
        );
    }
    assert!(answer["error"].is_string());

    // Invalid JSON: same shape.
    let response = app
        .http
        .post(format!("{}/commands/PlaceOrder", app.base))
        .header("content-type", "application/json")
        .body("{\"order_id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["problems"][0]["path"], "$");

    // A body that is not an object.
    let (status, _, _) = app.post("ShipOrder", &json!([1, 2]), &[]).await;
    assert_eq!(status, 400);
    // Unknown command.
    let (status, _, answer) = app.post("LaunchRocket", &json!({}), &[]).await;
    assert_eq!(status, 404, "{answer}");

    assert_eq!(high_watermark(&orders).await, before);
    app.stop().await;
}

#[tokio::test]
async fn idempotency_key_replays_conflicts_and_dedupes_concurrent_duplicates() {
    let app = TestApp::start(|_| {}).await;
    let customers = app.topic("customers");
    let id = unique();
    let body = json!({"customer_id": format!("c-{id}"), "email": "ada@example.com", "name": "Ada"});
    let key = format!("key-{id}");

    let (status, _, first) = app
        .post("RegisterCustomer", &body, &[("idempotency-key", &key)])
        .await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(
        first["event_id"],
        event_id_for(
            &IdempotencyKey::new("RegisterCustomer", "", &key),
            &fingerprint(&fingerprint_key(&app.config), &body)
        )
        .to_string()
    );
    let after_first = high_watermark(&customers).await;

    // Same key, same body (keys in another order): the original answer, nothing produced.
    let reordered =
        json!({"name": "Ada", "email": "ada@example.com", "customer_id": format!("c-{id}")});
    let (status, _, again) = app
        .post("RegisterCustomer", &reordered, &[("idempotency-key", &key)])
        .await;
    assert_eq!(status, 202);
    assert_eq!(again, first);
    // Same key, different body: 422.
    let other =
        json!({"customer_id": format!("c-{id}"), "email": "bob@example.com", "name": "Bob"});
    let (status, _, conflict) = app
        .post("RegisterCustomer", &other, &[("idempotency-key", &key)])
        .await;
    assert_eq!(status, 422, "{conflict}");
    assert!(conflict["error"].is_string());
    assert_eq!(high_watermark(&customers).await, after_first);

    // Concurrent identical requests: produced once, everyone gets the same answer.
    let key2 = format!("key2-{id}");
    let headers = [("idempotency-key", key2.as_str())];
    let requests = (0..12).map(|_| app.post("RegisterCustomer", &body, &headers));
    let answers = futures::future::join_all(requests).await;
    for (status, _, answer) in &answers {
        assert_eq!(*status, 202, "{answer}");
        assert_eq!(answer, &answers[0].2);
    }
    assert_eq!(high_watermark(&customers).await, after_first + 1);

    // After a restart the store is empty: produced again, with the same event id.
    app.stop().await;
    let restarted = TestApp::start_with_prefix(&app_prefix(&customers), |_| {}).await;
    let (status, _, replayed) = restarted
        .post("RegisterCustomer", &body, &[("idempotency-key", &key)])
        .await;
    assert_eq!(status, 202);
    assert_eq!(replayed["event_id"], first["event_id"]);
    assert_eq!(high_watermark(&customers).await, after_first + 2);
    let record = read_at(
        &customers,
        replayed["partition"].as_i64().unwrap() as i32,
        replayed["offset"].as_i64().unwrap(),
    )
    .await;
    assert_eq!(
        envelope(&record).event_id.to_string(),
        first["event_id"].as_str().unwrap()
    );
    restarted.stop().await;
}

fn app_prefix(customers_topic: &str) -> String {
    customers_topic.trim_end_matches("customers").to_string()
}

/// The record an accepted answer (a single command's or a batch item's) points to, checked to
/// carry its event id.
async fn record_of(result: &Value) -> rdkafka::message::OwnedMessage {
    let record = read_at(
        result["topic"].as_str().unwrap(),
        result["partition"].as_i64().unwrap() as i32,
        result["offset"].as_i64().unwrap(),
    )
    .await;
    assert_eq!(
        envelope(&record).event_id.to_string(),
        result["event_id"].as_str().unwrap()
    );
    record
}

#[tokio::test]
async fn batch_answers_each_item_in_order_and_invalid_items_do_not_block_valid_ones() {
    let app = TestApp::start(|c| c.max_batch_items = 6).await;
    let id = unique();
    let items = json!([
        {"command": "RegisterCustomer", "body": {"customer_id": format!("c-{id}"), "email": "a@b.io", "name": "A"}},
        {"command": "PlaceOrder", "body": {"order_id": format!("o-{id}")}},
        {"command": "LaunchRocket", "body": {}},
        {"command": "ShipOrder"},
        {"command": "ShipOrder", "body": {"order_id": format!("o-{id}"), "carrier": "DHL", "tracking_id": "T1"},
         "idempotency_key": format!("k-{id}")},
    ]);
    let (status, answer) = app
        .post_batch("application/json", items.to_string(), &[])
        .await;
    assert_eq!(status, 200);
    let results = answer["results"].as_array().unwrap();
    assert_eq!(statuses(&answer), [202, 400, 404, 400, 202], "{answer}");
    assert_eq!(answer["accepted"], 2);
    assert_eq!(answer["failed"], 3);
    assert!(results[1]["problems"].as_array().unwrap().len() >= 3);
    assert_eq!(
        results[4]["event_id"],
        event_id_for(
            &IdempotencyKey::new("ShipOrder", "", &format!("k-{id}")),
            &fingerprint(&fingerprint_key(&app.config), &items[4]["body"])
        )
        .to_string()
    );
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result["index"], i);
        if result["status"] == 202 {
            record_of(result).await;
        }
    }

    // NDJSON, with a broken line.
    let ndjson = format!(
        "{}\nnot json\n{}\n",
        json!({"command": "DeliverOrder", "body": {"order_id": format!("o-{id}")}}),
        json!({"command": "CancelOrder", "body": {"order_id": format!("o-{id}"), "reason": "r"}}),
    );
    let (status, answer) = app.post_batch("application/x-ndjson", ndjson, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(statuses(&answer), [202, 400, 202], "{answer}");

    // Too many items: the whole batch is refused with a clear message.
    let seven: Vec<Value> = (0..7)
        .map(|i| json!({"command": "DeliverOrder", "body": {"order_id": format!("o-{i}")}}))
        .collect();
    let (status, answer) = app
        .post_batch("application/json", json!(seven).to_string(), &[])
        .await;
    assert_eq!(status, 413);
    assert!(
        answer["error"].as_str().unwrap().contains("at most 6"),
        "{answer}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_batch_of_many_items_is_answered_in_order_with_each_item_on_the_log() {
    // more items than one ingest task takes, so the answer is put together from several
    let app = TestApp::start(|_| {}).await;
    let id = unique();
    let items: Vec<Value> = (0..150)
        .map(|i| {
            if i % 10 == 3 {
                json!({"command": "DeliverOrder", "body": {"order_id": 7}})
            } else {
                json!({"command": "DeliverOrder", "body": {"order_id": format!("o-{id}-{i}")}})
            }
        })
        .collect();
    let (status, answer) = app
        .post_batch("application/json", json!(items).to_string(), &[])
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["accepted"], 135, "{answer}");
    assert_eq!(answer["failed"], 15);
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 150);
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result["index"], i);
        if i % 10 == 3 {
            assert_eq!(result["status"], 400, "{result}");
            continue;
        }
        assert_eq!(result["status"], 202, "{result}");
        if i % 10 != 0 && i != 149 {
            continue; // one in ten is read back
        }
        let record = record_of(result).await;
        let key = std::str::from_utf8(record.key().unwrap()).unwrap();
        assert_eq!(key, format!("o-{id}-{i}"));
    }
    app.stop().await;
}

#[tokio::test]
async fn api_keys_authenticate_and_limit_commands() {
    let app = TestApp::start(|c| {
        c.api_keys = vec![
            ApiKey::from_plain("alpha-secret", None),
            ApiKey::from_plain("beta-secret", Some(&["RegisterCustomer"])),
        ];
    })
    .await;
    let id = unique();
    let register = json!({"customer_id": format!("c-{id}"), "email": "a@b.io", "name": "A"});
    let ship = json!({"order_id": format!("o-{id}"), "carrier": "DHL", "tracking_id": "T"});

    let (status, headers, answer) = app.post("RegisterCustomer", &register, &[]).await;
    assert_eq!(status, 401, "{answer}");
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    let (status, headers, _) = app
        .post(
            "RegisterCustomer",
            &register,
            &[("authorization", "Bearer wrong")],
        )
        .await;
    assert_eq!(status, 401);
    assert!(headers.contains_key("www-authenticate"));

    let beta = [("authorization", "Bearer beta-secret")];
    let (status, _, answer) = app.post("ShipOrder", &ship, &beta).await;
    assert_eq!(status, 403, "{answer}");
    let (status, _, answer) = app.post("RegisterCustomer", &register, &beta).await;
    assert_eq!(status, 202, "{answer}");
    let (status, _, answer) = app
        .post(
            "ShipOrder",
            &ship,
            &[("authorization", "Bearer alpha-secret")],
        )
        .await;
    assert_eq!(status, 202, "{answer}");

    // The batch endpoint: unauthenticated is 401, a forbidden item is that item's 403.
    let items = json!([{"command": "ShipOrder", "body": ship}, {"command": "RegisterCustomer", "body": register}]);
    let (status, _) = app
        .post_batch("application/json", items.to_string(), &[])
        .await;
    assert_eq!(status, 401);
    let (_, answer) = app
        .post_batch(
            "application/json",
            items.to_string(),
            &[("authorization", "Bearer beta-secret")],
        )
        .await;
    assert_eq!(answer["results"][0]["status"], 403);
    assert_eq!(answer["results"][1]["status"], 202);

    // Operational endpoints need no key.
    let health = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn body_size_and_content_type_limits() {
    let app = TestApp::start(|c| c.max_body_bytes = 2048).await;
    let orders = app.topic("orders");
    let before = high_watermark(&orders).await;
    let huge = json!({"order_id": "o-1", "carrier": "x".repeat(4096), "tracking_id": "t"});
    let (status, _, answer) = app.post("ShipOrder", &huge, &[]).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("2048"));

    let response = app
        .http
        .post(format!("{}/commands/ShipOrder", app.base))
        .header("content-type", "text/plain")
        .body(r#"{"order_id": "o-1", "carrier": "DHL", "tracking_id": "T"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let answer: Value = response.json().await.unwrap();
    assert!(answer["error"]
        .as_str()
        .unwrap()
        .contains("application/json"));

    // Chunked (no Content-Length) and still too large.
    let status_line = chunked_post(&app.base, "/commands/ShipOrder", 10, 500).await;
    assert!(status_line.contains(" 413 "), "{status_line}");
    assert_eq!(high_watermark(&orders).await, before);
    app.stop().await;
}

#[tokio::test]
async fn over_budget_requests_get_503_with_retry_after_and_accepted_ones_are_on_the_log() {
    let app = TestApp::start(|c| {
        c.max_in_flight_records = 1;
        c.budget_timeout_ms = 1;
        c.linger_ms = 100;
    })
    .await;
    let id = unique();
    let requests = (0..30).map(|i| {
        let body = json!({"order_id": format!("o-{id}-{i}")});
        let app = &app;
        async move { app.post("DeliverOrder", &body, &[]).await }
    });
    let answers = futures::future::join_all(requests).await;
    let mut busy = 0;
    for (status, headers, answer) in &answers {
        match status {
            202 => {
                record_of(answer).await;
            }
            503 => {
                busy += 1;
                assert!(headers.contains_key("retry-after"));
                assert_eq!(answer["retryable"], true);
            }
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    assert!(busy > 0, "a budget of one record never refused anything");
    app.stop().await;
}

#[tokio::test]
async fn operational_endpoints() {
    let app = TestApp::start(|_| {}).await;
    let (status, _, _) = app
        .post("DeliverOrder", &json!({"order_id": "o-1"}), &[])
        .await;
    assert_eq!(status, 202);
    let ready = app
        .http
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    let status = ready.status();
    let body: Value = ready.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("factline_write_side_requests_total"),
        "{metrics}"
    );
    assert!(metrics.contains("factline_write_side_request_duration_seconds_bucket"));
    assert!(metrics.contains("factline_write_side_in_flight_records"));
    let openapi: Value = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schema = &openapi["paths"]["/commands/PlaceOrder"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"];
    assert!(schema["properties"]["items"].is_object());
    assert!(schema["properties"].get("total_cents").is_none());
    let missing = app
        .http
        .get(format!("{}/nope", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    app.stop().await;
}

/// Sends a chunked JSON body of `chunks` chunks of `size` bytes over raw HTTP/1.1; returns the
/// status line.
async fn chunked_post(base: &str, path: &str, chunks: usize, size: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..chunks {
        let chunk = format!("{size:x}\r\n{}\r\n", "x".repeat(size));
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break; // the server may answer and close early
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}
