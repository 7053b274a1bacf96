//! Personal fields as a projector's decode step hands them over (the registry and PostgreSQL of
//! the stack): decrypted for a projection that reads personal data, left sealed for one that
//! does not, which then decodes its events even while the key store cannot answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use factline_keystore::sealed::Sealed;
use factline_keystore::{FieldCrypto, KekRing, KeyConfig};
use factline_projectors::postgres::PostgresSink;
use factline_projectors::projections::OrderSummaryProjection;
use factline_projectors::runtime::decode::{decode, Decoded, RegistryRetry};
use factline_projectors::runtime::record::Record;
use factline_projectors::{Config, Origin, Projection, Sink};
use factline_schemas::{json_to_avro, Catalog, Envelope, EventCodec};
use factline_service::postgres::{pool, PoolSettings};
use factline_testkit::postgres::fresh_schema;
use factline_testkit::stack::{env, SCHEMA_REGISTRY_URL};
use serde_json::{json, Value};
use uuid::Uuid;

/// Field encryption whose keys live in the test's own `schema` (a key made by another run,
/// under another key-encryption key, is never found).
fn crypto(database_url: &str, schema: &str, ring: &str) -> FieldCrypto {
    let pool = pool(database_url, &PoolSettings::new("personal-data-test", 2)).unwrap();
    let config = KeyConfig {
        db_schema: schema.to_owned(),
        ..KeyConfig::default()
    };
    FieldCrypto::new(factline_keystore::store::KeyStore::new(
        pool,
        KekRing::parse(ring).unwrap(),
        &config.settings(),
    ))
}

/// An `OrderPlaced` record as the write side produces it: its address sealed.
async fn sealed_order_placed(codec: &EventCodec, crypto: &FieldCrypto) -> Record {
    let catalog = Catalog::builtin();
    let entry = catalog.event("OrderPlaced").unwrap();
    let body = json!({"order_id": "o-1", "customer_id": "c-1", "currency": "EUR",
        "items": [{"sku": "s", "name": "n", "quantity": 2, "unit_price_cents": 450}],
        "total_cents": 900, "placed_at": "2027-01-15T08:00:00Z",
        "shipping_address": {"line1": "1 Baker Street", "line2": null, "city": "London",
                             "postal_code": "NW1", "country": "GB"}});
    let mut value = json_to_avro(&entry.schema, body.clone()).unwrap();
    crypto.seal(entry, &mut value).await.unwrap();
    let topic = format!("t-{}-orders", &Uuid::new_v4().simple().to_string()[..12]);
    let payload = codec
        .encode_value(&topic, "OrderPlaced", &value)
        .await
        .unwrap();
    let envelope = Envelope {
        event_id: Uuid::new_v4(),
        event_type: "OrderPlaced".into(),
        command_id: Uuid::new_v4(),
        correlation_id: "c".into(),
        causation_id: None,
        occurred_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        traceparent: None,
    };
    let headers = envelope.to_headers();
    Record {
        origin: Origin {
            topic: topic.into(),
            partition: 0,
            offset: 0,
        },
        key: Some(b"o-1".to_vec()),
        payload: Some(payload),
        headers: headers
            .iter()
            .map(|(name, value)| (*name, Some(value.as_bytes())))
            .collect(),
        timestamp_ms: None,
    }
}

fn line1(decoded: &Decoded) -> &str {
    match decoded {
        Decoded::Event(event) => event.data["shipping_address"]["line1"].as_str().unwrap(),
        other => panic!("not an event: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_fields_are_opened_only_for_a_projection_that_reads_them() {
    let (schema, url) = fresh_schema().await;
    let ring = KekRing::generate_entry("k1");
    let keys = crypto(&url, &schema, &ring);
    let codec = EventCodec::new(&env(SCHEMA_REGISTRY_URL));
    let record = sealed_order_placed(&codec, &keys).await;
    let wanted: HashSet<String> = ["OrderPlaced".to_owned()].into_iter().collect();
    let retry = RegistryRetry::new(Duration::from_secs(3600));

    // a projection that reads personal data gets the plaintext
    let opened = decode(&codec, Some(&keys), &wanted, &record, &retry)
        .await
        .unwrap();
    assert_eq!(line1(&opened), "1 Baker Street");

    // one that does not gets the sealed text, and no key is looked up: a key store whose
    // database does not answer (nothing listens on port 9) changes nothing for it
    // (order_summary is such a projection: its sink tells the runtime not to open them)
    assert!(!OrderSummaryProjection.reads_personal_data());
    let config = Config::new("127.0.0.1:9", &env(SCHEMA_REGISTRY_URL), &url);
    let sink = PostgresSink::new(OrderSummaryProjection, &config);
    assert!(!sink.spec().opens_personal_data);
    let unreachable = crypto("postgres://nobody@127.0.0.1:9/none", &schema, &ring);
    let sealed = decode(&codec, None, &wanted, &record, &retry)
        .await
        .unwrap();
    let text = line1(&sealed);
    assert!(Sealed::parse(text).unwrap().is_some(), "not sealed: {text}");
    let Decoded::Event(event) = &sealed else {
        unreachable!()
    };
    assert_eq!(event.data["customer_id"], Value::from("c-1"));
    assert_eq!(event.data["total_cents"], Value::from(900));
    // opening with that key store fails (to be retried), which the projection is spared
    let failed = decode(&codec, Some(&unreachable), &wanted, &record, &retry).await;
    assert!(failed.is_err(), "{failed:?}");
}
