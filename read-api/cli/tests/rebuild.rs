//! `factline rebuild watch NAME` against a real rebuild: version 2 of a projection builds
//! beside the live version 1 (held back by the test until the watch runs), and the watch
//! follows its progress until the swap, then exits 0; without a rebuild it exits 6.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::tally::{start, start_tally, Tally};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_a_rebuild_until_the_swap() {
    let mut world = World::start(&[], |_| {}).await;
    start_tally(&mut world, "rb");
    for _ in 0..5 {
        world
            .command("PlaceOrder", order(&unique("o"), "c-1", "Assam", 1, 300))
            .await;
    }
    caught_up(&world).await;
    let none = factline(&world, &["rebuild", "watch", "rb"]).await;
    assert_eq!(none.code, 6, "{none:?}");
    assert!(
        none.stderr.contains("no version is building"),
        "{}",
        none.stderr
    );

    let db = factline_testkit::connect(&world.database_url).await;
    db.batch_execute("CREATE TABLE rb_hold (x int); INSERT INTO rb_hold VALUES (1);")
        .await
        .unwrap();
    let v2 = Tally {
        name: "rb",
        version: 2,
        hold: true,
    };
    start(&mut world, "rb-v2", v2);
    world
        .eventually("/projections/rb", |status, body| {
            status == 200
                && body["versions"]
                    .as_array()
                    .is_some_and(|v| v.iter().any(|v| v["state"] == "building"))
        })
        .await;

    let mut watch = Following::start(
        &world,
        &[
            "rebuild",
            "watch",
            "rb",
            "--every-ms",
            "100",
            "--timeout",
            "120",
        ],
    );
    let first = watch.next_line().await.unwrap();
    assert!(first.starts_with("rb v2: building, "), "{first}");

    db.batch_execute("DELETE FROM rb_hold").await.unwrap();
    let mut rest = Vec::new();
    while let Some(line) = watch.next_line().await {
        rest.push(line);
    }
    println!("$ factline rebuild watch rb\n{first}\n{}", rest.join("\n"));
    assert!(watch.success().await, "{first}\n{rest:?}");
    assert_eq!(
        rest.last().map(String::as_str),
        Some("rb v2 is live (swapped)"),
        "{rest:?}"
    );
    let applied =
        factline_testkit::postgres::count(&world.database_url, "SELECT count(*) FROM rb_v2").await;
    assert_eq!(applied, 5);
    world.stop().await;
}
