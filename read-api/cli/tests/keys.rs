//! `factline keys erasures|lost` against a running system. A customer's data key is lost (its
//! row deleted, as a key store restored from an older backup would be); a rebuild of
//! `customer_directory` then cannot read that customer's personal fields. `keys lost` says
//! (dry run) and then records that the key is lost: the rebuild applies every event, with the
//! placeholder in the personal fields of that customer only. `keys erasures` shows the lost
//! key and a `ForgetCustomer`'s erasure, with no personal data.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

/// The directory's rows (none while its table does not exist yet).
async fn directory(database_url: &str) -> Vec<serde_json::Value> {
    let rows = factline_testkit::connect(database_url)
        .await
        .query(
            "SELECT row_to_json(t)::text FROM (SELECT customer_id, name, email, \
             registered_at IS NOT NULL AS registered FROM customer_directory \
             ORDER BY customer_id) t",
            &[],
        )
        .await
        .unwrap_or_default();
    rows.iter()
        .map(|row| serde_json::from_str(row.get(0)).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_key_costs_only_its_personal_fields_and_erasures_are_listed() {
    let mut world = World::start(&[Projector::CustomerDirectory], |_| {}).await;
    let id = factline_testkit::short_id(8).to_lowercase();
    let (lost, kept) = (format!("c-{id}-lost"), format!("c-{id}-kept"));
    for customer in [&lost, &kept] {
        world
            .command(
                "RegisterCustomer",
                json!({"customer_id": customer, "email": format!("{customer}@example.com"),
                       "name": format!("Name of {customer}")}),
            )
            .await;
    }
    let live_url = world.database_url.clone();
    factline_testkit::eventually(
        "both customers in the directory",
        Duration::from_secs(120),
        || async { (directory(&live_url).await.len() == 2).then_some(()) },
    )
    .await;
    world.stop_projector("customer_directory").await;

    // the key store loses `lost`'s data key
    let keys = keys();
    let db = factline_testkit::connect(&world.database_url).await;
    let key_id: uuid::Uuid = db
        .query_one(
            &format!(
                "DELETE FROM \"{}\".data_keys WHERE subject = convert_to($1, 'UTF8') RETURNING key_id",
                keys.db_schema
            ),
            &[&format!("{}{lost}", world.prefix)],
        )
        .await
        .unwrap()
        .get(0);
    let key = key_id.to_string();

    // a rebuild from the log into a fresh schema
    let (_, rebuilt_url) = factline_testkit::fresh_schema().await;
    world.database_url = rebuilt_url.clone();
    world.start_projector(Projector::CustomerDirectory);

    let dry = factline(&world, &["--output", "json", "keys", "lost", &key]).await;
    assert_eq!(dry.code, 0, "{dry:?}");
    assert_eq!(dry.json()["dry_run"], true);
    assert_eq!(dry.json()["keys"][0]["outcome"], "would be declared lost");
    let run = factline(&world, &["keys", "lost", &key, "--yes"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("declared lost"), "{run:?}");

    let rebuilt = factline_testkit::eventually(
        "the rebuild applies every event",
        Duration::from_secs(120),
        || async {
            let rows = directory(&rebuilt_url).await;
            (rows.len() == 2).then_some(rows)
        },
    )
    .await;
    let expected = |customer: &str, name: &str, email: &str| json!({"customer_id": customer, "name": name, "email": email, "registered": true});
    assert_eq!(
        rebuilt,
        vec![
            expected(
                &kept,
                &format!("Name of {kept}"),
                &format!("{kept}@example.com")
            ),
            expected(
                &lost,
                factline_keystore::PLACEHOLDER,
                factline_keystore::PLACEHOLDER
            ),
        ]
    );

    // a key the store has is never declared lost
    let present: uuid::Uuid = db
        .query_one(
            &format!(
                "SELECT key_id FROM \"{}\".data_keys WHERE subject = convert_to($1, 'UTF8')",
                keys.db_schema
            ),
            &[&format!("{}{kept}", world.prefix)],
        )
        .await
        .unwrap()
        .get(0);
    let run = factline(&world, &["keys", "lost", &present.to_string(), "--yes"]).await;
    assert!(run.stdout.contains("present: left alone"), "{run:?}");

    // erasures: the lost key, and a forgotten customer's
    world
        .command("ForgetCustomer", json!({"customer_id": kept}))
        .await;
    let subject = format!("{}{kept}", world.prefix);
    let listed = factline(
        &world,
        &[
            "--output",
            "json",
            "keys",
            "erasures",
            "--subject",
            &subject,
        ],
    )
    .await;
    assert_eq!(listed.code, 0, "{listed:?}");
    assert_eq!(listed.json()[0]["subject"], subject.as_str());
    assert_eq!(listed.json()[0]["key_id"], present.to_string().as_str());
    assert_eq!(listed.json()[0]["lost"], false);
    let all = factline(&world, &["keys", "erasures", "--limit", "1000"]).await;
    assert!(all.stdout.contains(&subject), "{all:?}");
    let lost_line = all
        .stdout
        .lines()
        .find(|line| line.contains(&key))
        .unwrap_or_else(|| panic!("{all:?}"));
    assert!(lost_line.contains("(key declared lost)"), "{lost_line}");
    assert!(!all.stdout.contains("example.com"), "{all:?}");
    world.stop().await;
}
