//! The key store against the real PostgreSQL at DATABASE_URL, each test in its own key-store
//! schema: concurrent first use, erasure and the caches' bound (and the erasure checks that
//! keep cached keys without reading them again), KEK rotation, and the field
//! encryption of the sample events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use apache_avro::types::Value;
use factline_keystore::{
    Erasure, FieldCrypto, KekRing, KeyState, KeyStore, KeyStoreError, StoreSettings, PLACEHOLDER,
};
use factline_schemas::{avro_to_json, Catalog};
use factline_service::postgres::{pool, PoolSettings};
use factline_testkit::{env, short_id, wait::eventually};
use serde_json::json;

fn settings(schema: &str, ttl_ms: u64) -> StoreSettings {
    StoreSettings {
        db_schema: schema.to_owned(),
        cache_ttl: Duration::from_millis(ttl_ms),
        cache_capacity: 1000,
    }
}

fn store(schema: &str, ring: &KekRing, ttl_ms: u64) -> KeyStore {
    let pool = pool(&env("DATABASE_URL"), &PoolSettings::new("keystore-test", 4)).unwrap();
    KeyStore::new(pool, ring.clone(), &settings(schema, ttl_ms))
}

fn new_schema() -> String {
    format!("keys_{}", short_id(12).to_lowercase())
}

fn ring(text: &str) -> KekRing {
    KekRing::parse(text).unwrap()
}

async fn rows(schema: &str, table: &str) -> i64 {
    factline_testkit::postgres::count(
        &env("DATABASE_URL"),
        &format!("SELECT count(*) FROM {schema}.{table}"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_uses_in_many_processes_agree_on_one_key() {
    let schema = new_schema();
    let kek = ring(&KekRing::generate_entry("k1"));
    // separate stores: separate pools and caches, as separate processes would have
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let store = store(&schema, &kek, 60_000);
            tokio::spawn(async move { store.key_for_subject("c-1").await.unwrap().0 })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(rows(&schema, "data_keys").await, 1);
}

#[tokio::test]
async fn erasure_destroys_the_key_records_it_and_other_caches_follow_within_their_ttl() {
    let schema = new_schema();
    let kek = ring(&KekRing::generate_entry("k1"));
    let writer = store(&schema, &kek, 60_000);
    let reader = store(&schema, &kek, 300);
    let (key_id, _) = writer.key_for_subject("c-9").await.unwrap();
    assert!(matches!(
        reader.key_by_id(key_id).await.unwrap(),
        KeyState::Live(_)
    ));

    let erasure = writer.erase("c-9").await.unwrap();
    assert_eq!(erasure.subject, "c-9");
    assert_eq!(erasure.key_id, Some(key_id));
    assert!(erasure.erased_at.ends_with('Z'), "{erasure:?}");
    // the erasing process forgets at once; another within its cache lifetime
    assert!(matches!(
        writer.key_by_id(key_id).await.unwrap(),
        KeyState::Erased
    ));
    eventually(
        "the reader sees the erasure",
        Duration::from_secs(30),
        || {
            let reader = reader.clone();
            async move {
                matches!(reader.key_by_id(key_id).await.unwrap(), KeyState::Erased).then_some(())
            }
        },
    )
    .await;
    assert_eq!(rows(&schema, "data_keys").await, 0);
    // erasing again records nothing new; a new event of the subject gets a new key
    writer.erase("c-9").await.unwrap();
    assert_eq!(
        writer.erasures("c-9").await.unwrap(),
        vec![Erasure {
            subject: "c-9".into(),
            key_id: Some(key_id),
            erased_at: erasure.erased_at.clone()
        }]
    );
    let (again, _) = writer.key_for_subject("c-9").await.unwrap();
    assert_ne!(again, key_id);
    // the erasure table holds ids and times only
    let columns = factline_testkit::postgres::rows_as_json(
        &env("DATABASE_URL"),
        &format!("SELECT column_name FROM information_schema.columns WHERE table_schema = '{schema}' AND table_name = 'erasures' ORDER BY column_name"),
    )
    .await;
    assert_eq!(
        columns,
        [
            r#"{"column_name":"erased_at"}"#,
            r#"{"column_name":"id"}"#,
            r#"{"column_name":"key_id"}"#,
            r#"{"column_name":"subject"}"#
        ]
    );
}

#[tokio::test]
async fn a_cached_key_outlives_its_ttl_while_checks_find_no_erasure_of_it_and_an_erasure_elsewhere_is_honoured_within_it(
) {
    let schema = new_schema();
    let kek = ring(&KekRing::generate_entry("k1"));
    let writer = store(&schema, &kek, 60_000);
    // long enough that one erasure check (a single indexed query) always answers within it,
    // even on a loaded machine
    let ttl = Duration::from_millis(5000);
    let reader = store(&schema, &kek, ttl.as_millis() as u64);
    let (kept, _) = writer.key_for_subject("c-kept").await.unwrap();
    let (erased, _) = writer.key_for_subject("c-erased").await.unwrap();
    for id in [kept, erased] {
        assert!(matches!(
            reader.key_by_id(id).await.unwrap(),
            KeyState::Live(_)
        ));
    }
    // the stored copy of the kept key becomes unreadable: a reader that read it again would
    // fail to unwrap it, so every later answer for it comes from the reader's cache
    factline_testkit::connect(&env("DATABASE_URL"))
        .await
        .execute(
            &format!("UPDATE {schema}.data_keys SET wrapped = '\\x00' WHERE key_id = $1"),
            &[&kept],
        )
        .await
        .unwrap();
    writer.erase("c-erased").await.unwrap();
    for round in 0..2 {
        // a look-up that starts one bound after the erasure never gets the destroyed key
        tokio::time::sleep(ttl).await;
        assert!(
            matches!(reader.key_by_id(erased).await.unwrap(), KeyState::Erased),
            "round {round}"
        );
        assert!(
            matches!(reader.key_by_id(kept).await.unwrap(), KeyState::Live(_)),
            "round {round}: the kept key was read again"
        );
    }
    // without the cache, the damaged copy is what the database has
    let fresh = store(&schema, &kek, ttl.as_millis() as u64);
    assert!(matches!(
        fresh.key_by_id(kept).await,
        Err(KeyStoreError::Unwrap(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_look_up_of_a_cached_key_does_not_wait_for_a_slow_erasure_check() {
    let schema = new_schema();
    let kek = ring(&KekRing::generate_entry("k1"));
    let ttl = Duration::from_secs(20);
    let reader = store(&schema, &kek, ttl.as_millis() as u64);
    // the first look-up runs the first check itself and caches the key
    let (key_id, _) = reader.key_for_subject("c-slow").await.unwrap();
    // The cache's states are defined in wall-clock time, so this waits for one: from half the
    // lifetime after that check a new one is due, yet the cached key stays usable without it
    // until the whole lifetime has passed (here about 10 s of margin for what follows).
    tokio::time::sleep(ttl / 2 + Duration::from_millis(200)).await;
    let mut blocker = factline_testkit::connect(&env("DATABASE_URL")).await;
    let lock = blocker.transaction().await.unwrap();
    lock.batch_execute(&format!(
        "LOCK TABLE {schema}.erasures IN ACCESS EXCLUSIVE MODE"
    ))
    .await
    .unwrap();
    // the check now blocks on the lock until the end of the test; look-ups of the cached key
    // answer all the same (before, every look-up waited for the check, so one slow query held
    // up every command). The timeouts only turn such a wait, which would last until the lock
    // is released, into a failure.
    let answer = tokio::time::timeout(ttl / 4, reader.key_for_subject("c-slow")).await;
    assert_eq!(
        answer.expect("the look-up waited for the check").unwrap().0,
        key_id
    );
    let answer = tokio::time::timeout(ttl / 4, reader.key_by_id(key_id)).await;
    assert!(matches!(
        answer.expect("the look-up waited for the check").unwrap(),
        KeyState::Live(_)
    ));
    lock.rollback().await.unwrap();
}

#[tokio::test]
async fn a_key_id_the_store_never_had_is_an_error_not_a_placeholder() {
    let store = store(&new_schema(), &ring(&KekRing::generate_entry("k")), 1000);
    let id = uuid::Uuid::new_v4();
    assert_eq!(
        store.key_by_id(id).await.err(),
        Some(KeyStoreError::UnknownKey(id))
    );
}

#[tokio::test]
async fn kek_rotation_rewraps_every_key_and_the_old_kek_can_then_go() {
    let schema = new_schema();
    let old = KekRing::generate_entry("old");
    let new = KekRing::generate_entry("new");
    let before = store(&schema, &ring(&old), 0);
    let crypto = FieldCrypto::new(before.clone());
    let event = Catalog::builtin().event("CustomerRegistered").unwrap();
    let mut value = registered("c-r");
    crypto.seal(event, &mut value).await.unwrap();
    let (id_1, _) = before.key_for_subject("c-r").await.unwrap();
    before.key_for_subject("c-s").await.unwrap();

    // step 1: the new KEK first, the old one kept
    let during = store(&schema, &ring(&format!("{new},{old}")), 0);
    assert!(matches!(
        during.key_by_id(id_1).await.unwrap(),
        KeyState::Live(_)
    ));
    let (id_3, _) = during.key_for_subject("c-t").await.unwrap();
    assert_eq!(
        during.keys_per_kek().await.unwrap(),
        [("new".to_string(), 1), ("old".to_string(), 2)]
    );
    // step 2: rewrap
    assert_eq!(during.rewrap().await.unwrap(), 2);
    assert_eq!(during.rewrap().await.unwrap(), 0);
    assert_eq!(
        during.keys_per_kek().await.unwrap(),
        [("new".to_string(), 3)]
    );
    // step 3: the old KEK removed; everything still opens
    let after = store(&schema, &ring(&new), 0);
    let mut opened = value.clone();
    FieldCrypto::new(after.clone())
        .open(event, &mut opened)
        .await
        .unwrap();
    assert_eq!(opened, registered("c-r"));
    assert!(matches!(
        after.key_by_id(id_3).await.unwrap(),
        KeyState::Live(_)
    ));
    // a store given only the old KEK cannot unwrap any more, and says why
    let stale = store(&schema, &ring(&old), 0);
    let error = stale.key_by_id(id_1).await.err().unwrap().to_string();
    assert!(
        error.contains("key-encryption key new, which is not configured"),
        "{error}"
    );
}

fn registered(id: &str) -> Value {
    Catalog::builtin()
        .command("RegisterCustomer")
        .unwrap()
        .build_event(
            json!({"customer_id": id, "email": "ada@example.com", "name": "Ada Lovelace"}),
            chrono_now(),
        )
        .unwrap()
        .value
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(1_764_000_000_000).unwrap()
}

#[tokio::test]
async fn personal_fields_are_sealed_opened_and_read_as_the_placeholder_after_erasure() {
    let schema = new_schema();
    let crypto = FieldCrypto::new(store(&schema, &ring(&KekRing::generate_entry("k")), 60_000));
    let catalog = Catalog::builtin();
    let placed = catalog.event("OrderPlaced").unwrap();
    let body = json!({"order_id": "o-1", "customer_id": "c-p", "currency": "EUR",
        "items": [{"sku": "tea", "name": "Earl Grey", "quantity": 1, "unit_price_cents": 450}],
        "shipping_address": {"line1": "12 Baker St", "city": "London", "postal_code": "NW1", "country": "GB"}});
    let plain = catalog
        .command("PlaceOrder")
        .unwrap()
        .build_event(body.clone(), chrono_now())
        .unwrap()
        .value;
    let mut value = plain.clone();
    crypto.seal(placed, &mut value).await.unwrap();
    assert!(
        value.validate(&placed.schema),
        "still valid Avro of the schema"
    );
    let sealed = avro_to_json(&value);
    let address = &sealed["shipping_address"];
    for field in ["line1", "city", "postal_code"] {
        assert!(
            address[field].as_str().unwrap().starts_with("fl1:"),
            "{sealed}"
        );
    }
    assert_eq!(address["line2"], json!(null));
    assert_eq!(address["country"], json!("GB"));
    assert_eq!(sealed["customer_id"], json!("c-p"));
    assert!(!sealed.to_string().contains("Baker"), "{sealed}");

    let mut opened = value.clone();
    crypto.open(placed, &mut opened).await.unwrap();
    assert_eq!(opened, plain);
    // plaintext (a record from before encryption) reads as it is
    let mut old = plain.clone();
    crypto.open(placed, &mut old).await.unwrap();
    assert_eq!(old, plain);

    let forgotten = catalog.event("CustomerForgotten").unwrap();
    let forget = catalog
        .command("ForgetCustomer")
        .unwrap()
        .build_event(json!({"customer_id": "c-p"}), chrono_now())
        .unwrap()
        .value;
    assert!(crypto.erase(placed, &plain).await.unwrap().is_none());
    let erasure = crypto.erase(forgotten, &forget).await.unwrap().unwrap();
    assert_eq!(erasure.subject, "c-p");
    let mut erased = value.clone();
    crypto.open(placed, &mut erased).await.unwrap();
    let erased = avro_to_json(&erased);
    assert_eq!(erased["shipping_address"]["line1"], json!(PLACEHOLDER));
    assert_eq!(erased["shipping_address"]["city"], json!(PLACEHOLDER));
    assert_eq!(erased["shipping_address"]["country"], json!("GB"));
    assert_eq!(erased["items"][0]["name"], json!("Earl Grey"));
}

#[tokio::test]
async fn a_tampered_value_is_a_permanent_error() {
    let crypto = FieldCrypto::new(store(
        &new_schema(),
        &ring(&KekRing::generate_entry("k")),
        1000,
    ));
    let event = Catalog::builtin().event("CustomerRegistered").unwrap();
    let mut value = registered("c-x");
    crypto.seal(event, &mut value).await.unwrap();
    if let Value::Record(fields) = &mut value {
        if let Value::String(s) = &mut fields[1].1 {
            s.truncate(s.len() - 2);
        }
    }
    let error = crypto.open(event, &mut value).await.unwrap_err();
    assert!(!error.is_transient(), "{error}");
    assert!(error.to_string().starts_with("field email:"), "{error}");
}

#[tokio::test]
async fn any_string_is_a_subject_nul_and_non_ascii_included() {
    let store = store(&new_schema(), &ring(&KekRing::generate_entry("k")), 0);
    let odd = "a\u{0}b\u{1F600}";
    let (key, _) = store.key_for_subject(odd).await.unwrap();
    let (other, _) = store.key_for_subject("a").await.unwrap();
    assert_ne!(key, other);
    let erasure = store.erase(odd).await.unwrap();
    assert_eq!(erasure.key_id, Some(key));
    assert_eq!(store.erasures(odd).await.unwrap()[0].subject, odd);
    assert!(matches!(
        store.key_by_id(other).await.unwrap(),
        KeyState::Live(_)
    ));
}

#[tokio::test]
async fn a_lost_key_declared_lost_reads_as_the_placeholder_and_a_present_key_is_never_declared_lost(
) {
    let schema = new_schema();
    let kek = ring(&KekRing::generate_entry("k1"));
    let store = store(&schema, &kek, 0);
    let client = factline_testkit::connect(&env("DATABASE_URL")).await;
    use factline_keystore::erasures::{self, KeyStatus};

    // no key store yet: nothing listed, nothing to declare lost in
    assert_eq!(
        erasures::list(&client, &schema, None, 10).await.unwrap(),
        Vec::<Erasure>::new()
    );
    assert!(
        erasures::declare_lost(&client, &schema, uuid::Uuid::new_v4())
            .await
            .is_err()
    );

    let (kept, _) = store.key_for_subject("c-kept").await.unwrap();
    let (erased, _) = store.key_for_subject("c-erased").await.unwrap();
    store.erase("c-erased").await.unwrap();
    let lost = uuid::Uuid::new_v4();

    assert_eq!(
        erasures::status(&client, &schema, kept).await.unwrap(),
        KeyStatus::Present
    );
    assert!(matches!(
        erasures::status(&client, &schema, erased).await.unwrap(),
        KeyStatus::Erased(Erasure { ref subject, key_id: Some(id), .. }) if subject == "c-erased" && id == erased
    ));
    assert_eq!(
        erasures::status(&client, &schema, lost).await.unwrap(),
        KeyStatus::Unknown
    );
    assert!(matches!(
        store.key_by_id(lost).await,
        Err(KeyStoreError::UnknownKey(id)) if id == lost
    ));

    // a present or erased key is left alone
    assert_eq!(
        erasures::declare_lost(&client, &schema, kept)
            .await
            .unwrap(),
        KeyStatus::Present
    );
    assert!(matches!(
        store.key_by_id(kept).await.unwrap(),
        KeyState::Live(_)
    ));
    assert!(matches!(
        erasures::declare_lost(&client, &schema, erased)
            .await
            .unwrap(),
        KeyStatus::Erased(_)
    ));

    // the unknown one is recorded once, with no subject, and reads as erased from then on
    assert_eq!(
        erasures::declare_lost(&client, &schema, lost)
            .await
            .unwrap(),
        KeyStatus::Unknown
    );
    assert!(matches!(
        erasures::declare_lost(&client, &schema, lost)
            .await
            .unwrap(),
        KeyStatus::Erased(_)
    ));
    assert!(matches!(
        store.key_by_id(lost).await.unwrap(),
        KeyState::Erased
    ));

    let all = erasures::list(&client, &schema, None, 10).await.unwrap();
    let listed: Vec<(String, Option<uuid::Uuid>)> =
        all.iter().map(|e| (e.subject.clone(), e.key_id)).collect();
    assert_eq!(
        listed,
        vec![
            (erasures::LOST_SUBJECT.to_owned(), Some(lost)),
            ("c-erased".to_owned(), Some(erased)),
        ]
    );
    assert_eq!(
        erasures::list(&client, &schema, Some("c-erased"), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        erasures::list(&client, &schema, None, 1)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn prefetch_loads_a_batchs_keys_and_erasures_in_one_go() {
    let schema = new_schema();
    let kek = ring(&KekRing::generate_entry("k1"));
    let writer = store(&schema, &kek, 60_000);
    let (live, cipher) = writer.key_for_subject("c-live").await.unwrap();
    let (erased, _) = writer.key_for_subject("c-erased").await.unwrap();
    writer.erase("c-erased").await.unwrap();
    let unknown = uuid::Uuid::new_v4();
    let sealed = factline_keystore::sealed::seal(&cipher, live, "Grace");
    let payload = format!(
        "\u{2}\u{14}{sealed}\u{0}fl1:{}:x fl1:not-a-uuid fl1:{}:",
        erased.simple(),
        unknown.simple()
    );
    let ids = factline_keystore::sealed::key_ids_in(payload.as_bytes());
    assert_eq!(ids, vec![live, erased, unknown]);

    let reader = store(&schema, &kek, 60_000);
    reader.prefetch(&ids).await.unwrap();
    // the rows gone from the database: what the reader answers now comes from its cache
    let client = factline_testkit::connect(&env("DATABASE_URL")).await;
    client
        .batch_execute(&format!(
            "DELETE FROM {schema}.data_keys; DELETE FROM {schema}.erasures"
        ))
        .await
        .unwrap();
    assert!(matches!(
        reader.key_by_id(live).await.unwrap(),
        KeyState::Live(_)
    ));
    assert!(matches!(
        reader.key_by_id(erased).await.unwrap(),
        KeyState::Erased
    ));
    assert_eq!(
        reader.key_by_id(unknown).await.err(),
        Some(KeyStoreError::UnknownKey(unknown))
    );
}
