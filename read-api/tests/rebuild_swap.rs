//! Read-your-writes holds across a rebuild swap: the read API decides that a version has
//! reached the write's position from its status snapshot, and a swap to a newer version that
//! has not applied the write can land between that decision and the query. The status board
//! refreshes rarely here (`status_refresh` of an hour, after the first wait), so the snapshot
//! still names the old version when the query runs: the answer must still reflect the write.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// A PostgreSQL client on the world's schema.
async fn sql(world: &World) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&world.database_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Registers `version` of `projector` as a rebuild that has applied nothing (positions 0) and
/// makes it live in one transaction, as the runtime's swap does; `switch` runs inside it.
async fn swap_to_an_empty_version(client: &mut tokio_postgres::Client, projector: &str) {
    let tx = client.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO factline_projector_rebuilds (projector, version, state, sink, topics, read_models) \
         SELECT projector, 2, 'building', sink, topics, read_models \
         FROM factline_projector_rebuilds WHERE projector = $1 AND version = 1",
        &[&projector],
    )
    .await
    .unwrap();
    tx.execute(
        "INSERT INTO factline_projector_positions (projector, version, topic, partition, next_offset) \
         SELECT projector, 2, topic, partition, 0 \
         FROM factline_projector_positions WHERE projector = $1 AND version = 1",
        &[&projector],
    )
    .await
    .unwrap();
    tx.execute(
        "UPDATE factline_projector_rebuilds SET state = 'retired' WHERE projector = $1 AND version = 1",
        &[&projector],
    )
    .await
    .unwrap();
    tx.execute(
        "UPDATE factline_projector_rebuilds SET state = 'live', swapped_at = now() \
         WHERE projector = $1 AND version = 2",
        &[&projector],
    )
    .await
    .unwrap();
    if projector == "order_summary" {
        tx.batch_execute(
            "CREATE TABLE order_summary_v2 (LIKE order_summary_v1 INCLUDING ALL); \
             DROP VIEW order_summary; CREATE VIEW order_summary AS SELECT * FROM order_summary_v2;",
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_swap_between_the_write_and_the_read_never_loses_the_write() {
    let mut world = World::start(&[Projector::OrderSummary], |config| {
        config.status_refresh = Duration::from_secs(3600);
    })
    .await;
    let o = unique("o");
    let placed = world
        .command("PlaceOrder", order(&o, "c-1", "Assam", 1, 300))
        .await;
    let token = placed["position"].as_str().unwrap().to_owned();
    let path = format!("/orders/{o}?consistent_with={token}");
    let (status, _, body) = world.get(&path).await;
    assert_eq!(status, 200, "{body}");

    // a rebuild swaps the view to version 2, which has not applied the order yet
    world.stop_projector("order_summary").await;
    let mut client = sql(&world).await;
    swap_to_an_empty_version(&mut client, "order_summary").await;
    let view: i64 = client
        .query_one(
            "SELECT count(*) FROM order_summary WHERE order_id = $1",
            &[&o],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(view, 0, "the view now shows version 2, without the order");

    // the read API's snapshot still says version 1 reached the write: it must answer from it
    let (status, headers, body) = world.get(&path).await;
    assert_eq!(status, 200, "the write was lost across the swap: {body}");
    assert_eq!(body["order_id"], o.as_str());
    assert_eq!(header(&headers, "factline-projection"), "order_summary/v1");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_elasticsearch_swap_between_the_write_and_the_read_never_loses_the_write() {
    let mut world = World::start(&[Projector::OrderSearch], |config| {
        config.status_refresh = Duration::from_secs(3600);
    })
    .await;
    let o = unique("o");
    let placed = world
        .command("PlaceOrder", order(&o, "c-1", "Lapsang souchong", 1, 300))
        .await;
    let token = placed["position"].as_str().unwrap().to_owned();
    let path = format!("/search/orders?q=souchong&consistent_with={token}");
    let (status, _, body) = world.get(&path).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(order_ids(&body), vec![o.clone()]);

    // a rebuild points the alias at version 2, an index that has not applied the order yet
    world.stop_projector("order_search").await;
    let es = env("ELASTICSEARCH_URL");
    let http = reqwest::Client::new();
    let v1 = format!("{}order_search_v1", world.prefix);
    let v2 = format!("{}order_search_v2", world.prefix);
    let alias = format!("{}order_search", world.prefix);
    let mapping: Value = http
        .get(format!("{es}/{v1}/_mapping"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let created = http
        .put(format!("{es}/{v2}"))
        .json(&json!({"mappings": mapping[&v1]["mappings"]}))
        .send()
        .await
        .unwrap();
    assert!(
        created.status().is_success(),
        "{}",
        created.text().await.unwrap()
    );
    let swapped = http
        .post(format!("{es}/_aliases"))
        .json(&json!({"actions": [
            {"remove": {"index": v1, "alias": alias}},
            {"add": {"index": v2, "alias": alias}}
        ]}))
        .send()
        .await
        .unwrap();
    assert!(swapped.status().is_success());
    let mut client = sql(&world).await;
    swap_to_an_empty_version(&mut client, "order_search").await;

    // the read API's snapshot still says version 1 reached the write: it must answer from it
    let (status, headers, body) = world.get(&path).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        order_ids(&body),
        vec![o.clone()],
        "the write was lost across the swap"
    );
    assert_eq!(header(&headers, "factline-projection"), "order_search/v1");

    // once the retired version's index is deleted (as the runtime does after a swap), the read
    // API learns of version 2, which has not reached the write: it says so, never answers stale
    let deleted = http.delete(format!("{es}/{v1}")).send().await.unwrap();
    assert!(deleted.status().is_success());
    let (status, _, body) = world.get(&format!("{path}&wait_ms=500")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["freshness"]["version"], 2, "{body}");
    let _ = http.delete(format!("{es}/{v2}")).send().await;
    world.stop().await;
}
