//! Personal data on the log: the write side encrypts the fields the schemas mark personal with
//! the subject's key, and `ForgetCustomer` destroys that key, against the real broker, registry
//! and PostgreSQL (the key store).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use factline_keystore::PLACEHOLDER;
use factline_schemas::Catalog;
use rdkafka::message::Message;
use serde_json::json;

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn personal_fields_are_ciphertext_on_the_log_and_unreadable_once_forgotten() {
    let app = TestApp::start(|_| {}).await;
    let codec = codec(&app.prefix);
    let crypto = crypto(&app.config);
    let id = factline_testkit::short_id(10);
    let customer = format!("c-{id}");
    let posts = [
        (
            "RegisterCustomer",
            json!({"customer_id": customer, "email": "grace@example.com", "name": "Grace Hopper"}),
        ),
        (
            "PlaceOrder",
            json!({"order_id": format!("o-{id}"), "customer_id": customer, "currency": "EUR",
                   "items": [{"sku": "tea", "name": "Earl Grey", "quantity": 1, "unit_price_cents": 450}],
                   "shipping_address": {"line1": "1 Navy Yard", "city": "Arlington",
                                        "postal_code": "22202", "country": "US"}}),
        ),
    ];
    let mut records = Vec::new();
    for (command, body) in &posts {
        let (status, _, answer) = app.post(command, body, &[]).await;
        assert_eq!(status, 202, "{answer}");
        let record = read_at(
            answer["topic"].as_str().unwrap(),
            answer["partition"].as_i64().unwrap() as i32,
            answer["offset"].as_i64().unwrap(),
        )
        .await;
        let bytes = record.payload().unwrap().to_vec();
        for secret in [
            "grace@example.com",
            "Grace Hopper",
            "Navy Yard",
            "Arlington",
        ] {
            assert!(!contains(&bytes, secret), "{command}: {secret} in clear");
        }
        // what any Avro reader sees: the same schema, ciphertext strings
        let decoded = codec.decode(&bytes).await.unwrap();
        let json = decoded.to_json();
        let schema = Catalog::builtin().command(command).unwrap().event();
        assert!(decoded.value.validate(&schema.schema));
        records.push((schema, decoded));
        assert_eq!(
            json["customer_id"],
            json!(customer),
            "the subject stays readable"
        );
    }
    let (_, registered) = &records[0];
    let mut opened = registered.value.clone();
    crypto.open(records[0].0, &mut opened).await.unwrap();
    assert_eq!(
        factline_schemas::avro_to_json(&opened)["name"],
        json!("Grace Hopper")
    );

    let (status, _, answer) = app
        .post("ForgetCustomer", &json!({"customer_id": customer}), &[])
        .await;
    assert_eq!(status, 202, "{answer}");
    // the erasure is recorded (subject, when, which key), and the values are gone for good
    let erasures = crypto
        .store()
        .erasures(&format!("{}{customer}", app.prefix))
        .await
        .unwrap();
    assert_eq!(erasures.len(), 1, "{erasures:?}");
    assert!(erasures[0].key_id.is_some());
    // this process cached the key when it opened a value: it honours the erasure within
    // FACTLINE_KEYS_CACHE_TTL_MS (its next erasure check)
    for (schema, decoded) in &records {
        let text = factline_testkit::eventually(
            "the placeholder instead of the values",
            std::time::Duration::from_secs(60),
            || {
                let mut value = decoded.value.clone();
                let crypto = crypto.clone();
                async move {
                    crypto.open(schema, &mut value).await.unwrap();
                    let text = factline_schemas::avro_to_json(&value).to_string();
                    text.contains(PLACEHOLDER).then_some(text)
                }
            },
        )
        .await;
        for secret in [
            "grace@example.com",
            "Grace Hopper",
            "Navy Yard",
            "Arlington",
        ] {
            assert!(!text.contains(secret), "{text}");
        }
    }
}

#[tokio::test]
async fn without_the_key_store_personal_commands_get_503_and_the_others_pass() {
    let app = TestApp::start(|config| {
        // nothing listens on port 9: the key store is unreachable
        config.database_url = "postgres://factline@127.0.0.1:9/factline?connect_timeout=2".into();
    })
    .await;
    let id = factline_testkit::short_id(10);
    let (status, headers, answer) = app
        .post(
            "RegisterCustomer",
            &json!({"customer_id": format!("c-{id}"), "email": "a@b.io", "name": "A"}),
            &[],
        )
        .await;
    assert_eq!(status, 503, "{answer}");
    assert!(headers.get("retry-after").is_some());
    assert!(
        answer.to_string().contains("key store unavailable"),
        "{answer}"
    );
    let (status, _, answer) = app
        .post(
            "ForgetCustomer",
            &json!({"customer_id": format!("c-{id}")}),
            &[],
        )
        .await;
    assert_eq!(status, 503, "{answer}");
    let (status, _, answer) = app
        .post("DeliverOrder", &json!({"order_id": format!("o-{id}")}), &[])
        .await;
    assert_eq!(status, 202, "{answer}");
}

#[tokio::test]
async fn with_encryption_turned_off_personal_fields_are_produced_in_clear() {
    let app = TestApp::start(|config| config.encrypt_personal_data = false).await;
    let id = factline_testkit::short_id(10);
    let (status, _, answer) = app
        .post(
            "RegisterCustomer",
            &json!({"customer_id": format!("c-{id}"), "email": "ada@example.com", "name": "Ada Lovelace"}),
            &[],
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let record = read_at(
        answer["topic"].as_str().unwrap(),
        answer["partition"].as_i64().unwrap() as i32,
        answer["offset"].as_i64().unwrap(),
    )
    .await;
    let bytes = record.payload().unwrap();
    assert!(contains(bytes, "ada@example.com"));
    assert!(contains(bytes, "Ada Lovelace"));
    assert!(!contains(bytes, "fl1:"));
}
