//! `factline events search|tail|show` against a running system: search by type and key, one
//! event shown with its payload, headers and what every projector did with it, every event of
//! one request by its correlation id, and `tail` printing new events as they are indexed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use support::*;

/// Sends a command with an `X-Correlation-Id`; returns the 202 body.
async fn command_correlated(world: &World, name: &str, body: Value, correlation: &str) -> Value {
    let response = world
        .http
        .post(format!("{}/commands/{name}", world.write))
        .header("X-Correlation-Id", correlation)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_show_and_correlation() {
    let world = World::start(&[Projector::EventIndex, Projector::OrderSummary], |_| {}).await;
    let (c, o) = (unique("c"), unique("o"));
    let correlation = factline_testkit::short_id(16);
    command_correlated(
        &world,
        "RegisterCustomer",
        customer(&c, "Ada Lovelace"),
        &correlation,
    )
    .await;
    let placed = command_correlated(
        &world,
        "PlaceOrder",
        order(&o, &c, "Earl Grey tea", 2, 450),
        &correlation,
    )
    .await;
    let event_id = placed["event_id"].as_str().unwrap().to_owned();
    caught_up(&world).await;

    let found = factline_until(
        &world,
        &[
            "events",
            "search",
            "--type",
            "OrderPlaced",
            "--key",
            &o,
            "--output",
            "json",
        ],
        |r| r.code == 0 && r.json()["items"].as_array().is_some_and(|a| a.len() == 1),
    )
    .await
    .json();
    assert_eq!(found["items"][0]["event_id"], event_id.as_str());
    let table = factline(
        &world,
        &["events", "search", "--text", "earl grey", "--key", &o],
    )
    .await;
    println!(
        "$ factline events search --text 'earl grey' --key {o}\n{}",
        table.stdout
    );
    assert_eq!(table.code, 0, "{table:?}");
    assert!(table.stdout.contains(&event_id), "{}", table.stdout);
    assert!(
        table.stdout.ends_with("1 of 1 events\n"),
        "{}",
        table.stdout
    );

    // one event: payload, headers, and its trail through the projectors
    let shown = factline_until(
        &world,
        &["events", "show", &event_id, "--output", "json"],
        |r| {
            // listed, and past `pending` (a lag of 0 in `caught_up` can be a stale one)
            r.code == 0
                && r.json()["reached"].as_array().is_some_and(|t| {
                    t.iter()
                        .any(|x| x["projector"] == "order_summary" && x["outcome"] != "pending")
                })
        },
    )
    .await
    .json();
    assert_eq!(shown["payload"]["items"][0]["name"], "Earl Grey tea");
    assert_eq!(shown["headers"]["correlation_id"], correlation.as_str());
    let trail: Vec<(String, String)> = shown["reached"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["projector"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        trail,
        [
            ("event_index".to_owned(), "passed".to_owned()),
            ("order_summary".to_owned(), "applied".to_owned())
        ]
    );
    let text = factline(&world, &["events", "show", &event_id]).await;
    println!("$ factline events show {event_id}\n{}", text.stdout);
    assert!(
        text.stdout
            .starts_with(&format!("OrderPlaced {event_id}\n")),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("\"name\": \"Earl Grey tea\""),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("order_summary"), "{}", text.stdout);

    // every event of the request, oldest first
    let both = factline(
        &world,
        &[
            "events",
            "show",
            "--correlation-id",
            &correlation,
            "--output",
            "json",
        ],
    )
    .await
    .json();
    let types: Vec<&str> = both
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["CustomerRegistered", "OrderPlaced"]);

    // an unknown event is exit code 6, a malformed id the read API's 400 (exit 5)
    let missing = factline(
        &world,
        &["events", "show", &uuid::Uuid::new_v4().to_string()],
    )
    .await;
    assert_eq!(missing.code, 6, "{missing:?}");
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);
    let malformed = factline(&world, &["events", "show", "not-a-uuid"]).await;
    assert_eq!(malformed.code, 5, "{malformed:?}");
    assert!(
        malformed.stderr.contains("event_id: expected a UUID"),
        "{}",
        malformed.stderr
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_new_events_as_they_arrive() {
    let world = World::start(&[Projector::EventIndex], |_| {}).await;
    let c = unique("c");
    world.command("RegisterCustomer", customer(&c, "Ada")).await;
    caught_up(&world).await;

    let mut tail = Following::start(
        &world,
        &[
            "events",
            "tail",
            "--last",
            "1",
            "--every-ms",
            "100",
            "--max-events",
            "3",
        ],
    );
    let first = tail.next_line().await.unwrap();
    assert!(first.contains("CustomerRegistered"), "{first}");

    let (o1, o2) = (unique("o"), unique("o"));
    world
        .command("PlaceOrder", order(&o1, &c, "Assam", 1, 300))
        .await;
    world
        .command("PlaceOrder", order(&o2, &c, "Assam", 1, 300))
        .await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(tail.next_line().await.expect("tail printed the new event"));
    }
    assert!(seen.iter().all(|l| l.contains("OrderPlaced")), "{seen:?}");
    assert!(
        seen.iter().any(|l| l.contains(&o1)) && seen.iter().any(|l| l.contains(&o2)),
        "{seen:?}"
    );
    assert!(tail.success().await, "tail stops after --max-events");
    world.stop().await;
}
