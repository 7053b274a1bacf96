//! Integration tests against the schema registry at SCHEMA_REGISTRY_URL: the Confluent wire
//! format through schema_registry_converter, schema evolution, and the `check`/`register` tools.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use apache_avro::types::Value;
use chrono::{DateTime, Utc};
use factline_schemas::registry::{Compatibility, RegistryClient};
use factline_schemas::{avro_to_json, BuiltEvent, Catalog, CodecError, EventCodec};
use serde_json::{json, Value as Json};
use support::{add_field, env, unique_prefix, SchemaDir};

fn at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-22T10:00:00.123Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn place_order() -> Json {
    json!({"order_id": "o-1", "customer_id": "c-1", "currency": "GBP",
           "items": [{"sku": "tea-01", "name": "Earl Grey tea", "quantity": 2, "unit_price_cents": 450}],
           "shipping_address": {"line1": "12 Baker St", "city": "London", "postal_code": "NW1", "country": "GB"}})
}

fn samples() -> Vec<(&'static str, Json)> {
    vec![
        (
            "RegisterCustomer",
            json!({"customer_id": "c-1", "email": "ada@example.com", "name": "Ada Lovelace"}),
        ),
        (
            "ChangeCustomerEmail",
            json!({"customer_id": "c-1", "email": "ada@lovelace.org"}),
        ),
        ("ForgetCustomer", json!({"customer_id": "c-1"})),
        ("PlaceOrder", place_order()),
        (
            "ShipOrder",
            json!({"order_id": "o-1", "carrier": "DHL", "tracking_id": "JD0001"}),
        ),
        ("DeliverOrder", json!({"order_id": "o-1"})),
        (
            "CancelOrder",
            json!({"order_id": "o-1", "reason": "changed my mind"}),
        ),
    ]
}

fn build(catalog: &Catalog, command: &str, body: &Json, prefix: &str) -> BuiltEvent {
    let mut event = catalog
        .command(command)
        .unwrap()
        .build_event(body.clone(), at())
        .unwrap_or_else(|p| panic!("{command}: {p}"));
    event.topic = format!("{prefix}{}", event.topic);
    event
}

fn field<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    match value {
        Value::Record(fields) => fields.iter().find(|(n, _)| n == name).map(|(_, v)| v),
        _ => None,
    }
}

/// OrderPlaced v2: a new optional field with a default (a compatible change).
fn v2(schema: &mut Json) {
    add_field(
        schema,
        json!({"name": "gift_message", "type": ["null", "string"], "default": null,
               "doc": "An optional message printed on the packing slip."}),
    );
}

/// OrderPlaced v3: a new required field without a default (an incompatible change).
fn v3_required_field(schema: &mut Json) {
    add_field(
        schema,
        json!({"name": "priority_level", "type": "string", "doc": "How urgent the order is."}),
    );
}

#[tokio::test]
async fn encodes_and_decodes_every_sample_event() {
    let codec = EventCodec::new(&env("SCHEMA_REGISTRY_URL"));
    let prefix = unique_prefix("codec");
    for (command, body) in samples() {
        let event = build(Catalog::builtin(), command, &body, &prefix);
        let bytes = codec
            .encode(&event)
            .await
            .unwrap_or_else(|e| panic!("{command}: {e}"));
        assert_eq!(bytes[0], 0, "magic byte");
        let decoded = codec
            .decode(&bytes)
            .await
            .unwrap_or_else(|e| panic!("{command}: {e}"));
        assert_eq!(decoded.event_type, event.event_type);
        assert_eq!(
            decoded.schema_id,
            u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]])
        );
        assert_eq!(decoded.value, event.value, "{command}");
        assert_eq!(decoded.to_json(), avro_to_json(&event.value));
        // Encoding again uses the cached id and writes directly: the same bytes.
        assert_eq!(codec.encode(&event).await.unwrap(), bytes);
    }
    // The direct path validates too: a value its schema does not accept is refused.
    let error = codec
        .encode_value(
            &format!("{prefix}orders"),
            "OrderPlaced",
            &Value::Record(vec![]),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, CodecError::InvalidValue { .. }), "{error}");
    // The subjects follow the topic-record-name strategy.
    let registry = RegistryClient::new(&env("SCHEMA_REGISTRY_URL")).unwrap();
    let subject = format!("{prefix}orders-factline.orders.OrderPlaced");
    let schema = &Catalog::builtin().event("OrderPlaced").unwrap().schema_json;
    assert_eq!(
        registry
            .check_compatibility(&subject, schema)
            .await
            .unwrap(),
        Compatibility::Compatible
    );
}

#[tokio::test]
async fn a_v1_reader_reads_v2_records_and_a_v2_reader_reads_v1_records() {
    let url = env("SCHEMA_REGISTRY_URL");
    let prefix = unique_prefix("evolve");
    let dir = SchemaDir::with_order_placed(v2);
    let v2_catalog = Catalog::from_dir(&dir.0).unwrap();
    let v1 = EventCodec::new(&url);
    let v2 = EventCodec::with_catalog(&url, v2_catalog.clone());

    let v1_event = build(Catalog::builtin(), "PlaceOrder", &place_order(), &prefix);
    let v1_bytes = v1.encode(&v1_event).await.unwrap();

    let mut body = place_order();
    body["gift_message"] = json!("Happy birthday");
    let v2_event = build(&v2_catalog, "PlaceOrder", &body, &prefix);
    // The registry accepts v2 as a new version of the same subject.
    let v2_bytes = v2.encode(&v2_event).await.unwrap();
    assert_ne!(v1_bytes[1..5], v2_bytes[1..5], "v2 has its own schema id");

    // v1 reader, v2 record: the new field is dropped, everything else reads the same.
    let read = v1.decode(&v2_bytes).await.unwrap();
    assert_eq!(read.event_type, "OrderPlaced");
    assert_eq!(read.value, v1_event.value);
    assert!(field(&read.value, "gift_message").is_none());

    // v2 reader, v1 record: the new field takes its default.
    let read = v2.decode(&v1_bytes).await.unwrap();
    assert_eq!(
        field(&read.value, "gift_message"),
        Some(&Value::Union(0, Box::new(Value::Null)))
    );
    assert_eq!(read.to_json()["total_cents"], json!(900));

    // v2 reader, v2 record: the field is there.
    let read = v2.decode(&v2_bytes).await.unwrap();
    assert_eq!(read.to_json()["gift_message"], json!("Happy birthday"));
}

#[tokio::test]
async fn a_new_required_field_is_rejected_by_the_registry() {
    let url = env("SCHEMA_REGISTRY_URL");
    let prefix = unique_prefix("reject");
    let v1 = EventCodec::new(&url);
    v1.encode(&build(
        Catalog::builtin(),
        "PlaceOrder",
        &place_order(),
        &prefix,
    ))
    .await
    .unwrap();

    let dir = SchemaDir::with_order_placed(v3_required_field);
    let v3_catalog = Catalog::from_dir(&dir.0).unwrap();
    let v3 = EventCodec::with_catalog(&url, v3_catalog.clone());
    let mut body = place_order();
    body["priority_level"] = json!("high");
    let error = v3
        .encode(&build(&v3_catalog, "PlaceOrder", &body, &prefix))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            CodecError::RegistryRefused {
                status: Some(409),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!error.is_transient());
}

#[tokio::test]
async fn an_unknown_schema_id_may_heal_and_is_asked_again() {
    // a registry replica may not have seen a new id yet: transient, and never cached
    let codec = EventCodec::new(&env("SCHEMA_REGISTRY_URL"));
    for _ in 0..2 {
        let error = codec
            .decode(&[0, 0x7f, 0xff, 0xff, 0xf0, 2, 0])
            .await
            .unwrap_err();
        assert_eq!(error, CodecError::UnknownSchemaId(0x7fff_fff0));
        assert!(error.is_transient());
    }
}

#[tokio::test]
async fn a_record_type_outside_the_catalog_is_an_unknown_event_type() {
    let url = env("SCHEMA_REGISTRY_URL");
    let prefix = unique_prefix("foreign");
    let registry = RegistryClient::new(&url).unwrap();
    let schema = r#"{"type":"record","name":"Stranger","namespace":"elsewhere","fields":[{"name":"n","type":"long"}]}"#;
    let id = registry
        .register(&format!("{prefix}x-elsewhere.Stranger"), schema)
        .await
        .unwrap();
    let mut payload = vec![0];
    payload.extend_from_slice(&id.to_be_bytes());
    payload.push(6); // the long 3
    let error = EventCodec::new(&url).decode(&payload).await.unwrap_err();
    assert_eq!(
        error,
        CodecError::UnknownEventType("elsewhere.Stranger".into())
    );
    assert!(!error.is_transient());
}

#[tokio::test]
async fn bad_bytes_after_a_valid_header_are_a_permanent_resolution_error() {
    let url = env("SCHEMA_REGISTRY_URL");
    let prefix = unique_prefix("badbytes");
    let codec = EventCodec::new(&url);
    let event = build(
        Catalog::builtin(),
        "DeliverOrder",
        &json!({"order_id": "o-1"}),
        &prefix,
    );
    let mut bytes = codec.encode(&event).await.unwrap();
    bytes.truncate(6);
    let error = codec.decode(&bytes).await.unwrap_err();
    assert!(matches!(error, CodecError::Resolution { .. }), "{error:?}");
    assert!(!error.is_transient());
}

fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_factline-schemas"))
        .args(args)
        .env("SCHEMA_REGISTRY_URL", env("SCHEMA_REGISTRY_URL"))
        .output()
        .unwrap()
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn register_then_check_names_the_incompatible_subject_and_field() {
    let prefix = unique_prefix("cli");
    let subject = format!("{prefix}orders-factline.orders.OrderPlaced");

    // Nothing registered yet: every subject counts as compatible, and says so.
    let output = cli(&["check", "--topic-prefix", &prefix]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains(&format!("{subject}: not registered yet (compatible)")));

    let output = cli(&["register", "--topic-prefix", &prefix]);
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(stdout.lines().count(), 7, "{stdout}");
    assert!(stdout.contains(&format!("{subject} -> ")), "{stdout}");

    // The same schemas again: compatible.
    let output = cli(&["check", "--topic-prefix", &prefix]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains(&format!("{subject}: compatible")));

    // A compatible change from disk passes.
    let v2 = SchemaDir::with_order_placed(v2);
    let output = cli(&[
        "check",
        "--topic-prefix",
        &prefix,
        "--dir",
        v2.0.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output));

    // A new required field fails, naming the subject and the field.
    let v3 = SchemaDir::with_order_placed(v3_required_field);
    let output = cli(&[
        "check",
        "--topic-prefix",
        &prefix,
        "--dir",
        v3.0.to_str().unwrap(),
    ]);
    let all = text(&output);
    assert!(!output.status.success(), "{all}");
    assert!(all.contains(&format!("{subject}: INCOMPATIBLE")), "{all}");
    assert!(all.contains("priority_level"), "{all}");
    // Only that subject is incompatible.
    assert!(all.contains("1 schema(s) incompatible"), "{all}");
}

#[test]
fn check_reports_an_unreachable_registry() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_factline-schemas"))
        .args(["check"])
        .env("SCHEMA_REGISTRY_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(text(&output).contains("unreachable"), "{}", text(&output));
}

#[test]
fn the_personal_data_marking_travels_with_the_schema_into_the_registry() {
    let prefix = unique_prefix("personal");
    let output = cli(&["register", "--topic-prefix", &prefix]);
    assert!(output.status.success(), "{}", text(&output));
    let registry = RegistryClient::new(&env("SCHEMA_REGISTRY_URL")).unwrap();
    let latest = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(registry.latest_schema(&format!("{prefix}orders-factline.orders.OrderPlaced")))
        .unwrap()
        .unwrap();
    let schema: Json = serde_json::from_str(&latest).unwrap();
    assert_eq!(schema["factline.subject"], json!("customer_id"));
    let address = &schema["fields"][5]["type"]["fields"];
    assert_eq!(address[0]["name"], json!("line1"));
    assert_eq!(address[0]["factline.personal"], json!(true));
    assert_eq!(address[4]["name"], json!("country"));
    assert_eq!(address[4].get("factline.personal"), None);
}

#[test]
fn check_refuses_personal_data_without_a_subject() {
    let prefix = unique_prefix("nosubject");
    let dir = SchemaDir::with_order_placed(|schema| {
        schema.as_object_mut().unwrap().remove("factline.subject");
    });
    let output = cli(&[
        "check",
        "--topic-prefix",
        &prefix,
        "--dir",
        dir.0.to_str().unwrap(),
    ]);
    let all = text(&output);
    assert!(!output.status.success(), "{all}");
    assert!(all.contains("names no data subject"), "{all}");
    assert!(all.contains("shipping_address.line1"), "{all}");
}
