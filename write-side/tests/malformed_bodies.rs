//! Property test: random JSON values, random bytes and mutated valid bodies never get a 5xx, and
//! a body that is refused never produces a record (the topics' high watermarks only move by the
//! number of 202 answers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
        prop_oneof![
            Just("order_id"),
            Just("customer_id"),
            Just("items"),
            Just("EUR"),
            Just("")
        ]
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("order_id".to_string()),
                    Just("customer_id".to_string()),
                    Just("email".to_string()),
                    Just("name".to_string()),
                    Just("items".to_string()),
                    Just("quantity".to_string()),
                    Just("currency".to_string()),
                    Just("total_cents".to_string()),
                    "[a-z_]{1,10}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn valid_order() -> Value {
    json!({"order_id": "o-p", "customer_id": "c-p", "currency": "EUR",
        "items": [{"sku": "tea-01", "name": "Earl Grey tea", "quantity": 2, "unit_price_cents": 450}],
        "shipping_address": {"line1": "12 Baker St", "city": "London", "postal_code": "NW1", "country": "GB"}})
}

/// Replaces the value at a random path of `body` by `replacement`, or removes it.
fn mutate(body: &mut Value, choices: &[usize], replacement: Option<Value>) {
    let Some((&choice, rest)) = choices.split_first() else {
        if let Some(v) = replacement {
            *body = v;
        }
        return;
    };
    match body {
        Value::Object(map) if !map.is_empty() => {
            let key = map.keys().nth(choice % map.len()).unwrap().clone();
            if rest.is_empty() && replacement.is_none() {
                map.remove(&key);
            } else {
                mutate(map.get_mut(&key).unwrap(), rest, replacement);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let i = choice % items.len();
            if rest.is_empty() && replacement.is_none() {
                items.remove(i);
            } else {
                mutate(&mut items[i], rest, replacement);
            }
        }
        other => {
            if let Some(v) = replacement {
                *other = v;
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Input {
    Json(String, Value),
    Bytes(String, Vec<u8>),
    Mutated(Vec<usize>, Option<Value>),
}

fn arb_command() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("PlaceOrder".to_string()),
        Just("RegisterCustomer".to_string()),
        Just("ShipOrder".to_string()),
        Just("ForgetCustomer".to_string()),
    ]
}

fn arb_input() -> impl Strategy<Value = Input> {
    prop_oneof![
        (arb_command(), arb_json()).prop_map(|(c, v)| Input::Json(c, v)),
        (arb_command(), prop::collection::vec(any::<u8>(), 0..200))
            .prop_map(|(c, b)| Input::Bytes(c, b)),
        (
            prop::collection::vec(any::<usize>(), 1..4),
            prop::option::of(arb_json())
        )
            .prop_map(|(path, v)| Input::Mutated(path, v)),
    ]
}

#[test]
fn random_and_malformed_bodies_never_5xx_and_never_produce_when_refused() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = runtime.block_on(TestApp::start(|_| {}));
    let topics = [app.topic("orders"), app.topic("customers")];
    let watermarks = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            let mut total = 0;
            for topic in &topics {
                total += high_watermark(topic).await;
            }
            total
        })
    };
    let before = watermarks(&runtime);
    let accepted = Arc::new(AtomicUsize::new(0));
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&arb_input(), |input| {
        let (command, bytes) = match &input {
            Input::Json(command, value) => (command.clone(), value.to_string().into_bytes()),
            Input::Bytes(command, bytes) => (command.clone(), bytes.clone()),
            Input::Mutated(path, replacement) => {
                let mut body = valid_order();
                mutate(&mut body, path, replacement.clone());
                ("PlaceOrder".to_string(), body.to_string().into_bytes())
            }
        };
        let (status, answer) = runtime.block_on(async {
            let response = app
                .http
                .post(format!("{}/commands/{command}", app.base))
                .header("content-type", "application/json")
                .body(bytes)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        });
        prop_assert!(status < 500, "{status}: {answer}");
        prop_assert!(status == 202 || status == 400, "{status}: {answer}");
        if status == 202 {
            accepted.fetch_add(1, Ordering::Relaxed);
        } else {
            let body: Value = serde_json::from_str(&answer).unwrap();
            prop_assert!(!body["problems"].as_array().unwrap().is_empty(), "{answer}");
        }
        Ok(())
    });
    result.unwrap();
    let produced = watermarks(&runtime) - before;
    assert_eq!(
        produced,
        accepted.load(Ordering::Relaxed) as i64,
        "records produced for refused bodies"
    );
}
