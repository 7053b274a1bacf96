//! The web console in a real browser: `console/browse.py` (Playwright driving Debian's
//! Chromium headless, installed by `scripts/console-test.sh`) against the read API with an
//! API key, the write side and the projectors, isolated like every world (own topic prefix,
//! PostgreSQL schema and indices), one undecodable record dead-lettered, `order_summary`
//! stopped once it has applied the order. Screenshots of each page go to
//! `target/console-screenshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The screenshots' folder: `console-screenshots` in the target directory.
fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("console-screenshots")
}

/// Polls `path` with the key until it answers 200 (at most 120 s).
async fn until_ok(world: &World, key: &str, path: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let response = world
            .http
            .get(format!("{}{path}", world.read))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status == 200 {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never answered 200; last: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_searches_events_shows_a_timeline_and_a_growing_lag() {
    let key = "console-reader-key";
    let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    let mut world = World::start(
        &[
            Projector::EventIndex,
            Projector::OrderSummary,
            Projector::CustomerDirectory,
        ],
        |config| config.api_key_hashes = vec![hash],
    )
    .await;
    let c = unique("c");
    let o = unique("o");
    let word = format!("tea{}", factline_testkit::names::short_id(10));
    // an item name that would run a script if the console rendered event data as markup
    let item = format!("{word} <img src=x onerror=\"window.pwned=1\">");
    let registered = world
        .command("RegisterCustomer", customer(&c, "Ada Lovelace"))
        .await;
    world
        .command("PlaceOrder", order(&o, &c, &item, 2, 450))
        .await;
    let shipped = world
        .command(
            "ShipOrder",
            json!({"order_id": o, "carrier": "DHL", "tracking_id": "JD0001"}),
        )
        .await;
    let shipped = shipped["position"].as_str().unwrap();
    let registered = registered["position"].as_str().unwrap();
    // every projector has the writes: then order_summary stops, and only new orders move its lag
    let summary = until_ok(
        &world,
        key,
        &format!("/orders/{o}?consistent_with={shipped}"),
    )
    .await;
    assert_eq!(summary["status"], "shipped", "{summary}");
    until_ok(
        &world,
        key,
        &format!("/events?key={o}&consistent_with={shipped}"),
    )
    .await;
    until_ok(
        &world,
        key,
        &format!("/views/customer_directory/{c}?consistent_with={registered}"),
    )
    .await;
    // a record no projector can decode: dead-lettered by the event index
    let producer: FutureProducer = factline_schemas::topics::client_config(&env("KAFKA_BROKERS"))
        .create()
        .unwrap();
    let poison_topic = format!("{}orders", world.prefix);
    producer
        .send(
            FutureRecord::to(&poison_topic)
                .key(&format!("{o}-poison"))
                .payload("not avro"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while until_ok(&world, key, "/projections/event_index").await["versions"][0]
        ["dead_letters_pending"]
        != 1
    {
        assert!(
            Instant::now() < deadline,
            "the event index never dead-lettered the poison record"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    world.stop_projector("order_summary").await;

    let args = vec![
        root()
            .join("read-api/tests/console/browse.py")
            .to_string_lossy()
            .into_owned(),
        "--console".into(),
        format!("{}/console", world.read),
        "--key".into(),
        key.into(),
        "--write".into(),
        world.write.clone(),
        "--order".into(),
        o.clone(),
        "--customer".into(),
        c.clone(),
        "--word".into(),
        word.clone(),
        "--out".into(),
        screenshots().to_string_lossy().into_owned(),
    ];
    let _ = std::fs::remove_dir_all(screenshots());
    // the browser runs beside the services of this process: off the runtime's threads
    let output = tokio::task::spawn_blocking(move || {
        Command::new(root().join("scripts/console-test.sh"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the console's browser checks failed:\n{stdout}\n{stderr}"
    );
    for page in ["events", "timeline", "event", "projections", "models"] {
        let shot = screenshots().join(format!("{page}.png"));
        assert!(
            std::fs::metadata(&shot).is_ok_and(|m| m.len() > 0),
            "no screenshot {}",
            shot.display()
        );
    }
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_page_is_open_and_its_data_stays_behind_the_key() {
    let hash: [u8; 32] = Sha256::digest(b"reader-key").into();
    let world = World::start(&[], |config| config.api_key_hashes = vec![hash]).await;
    let (status, headers, body) = world.get("/console").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
    let policy = header(&headers, "content-security-policy");
    assert!(
        policy.contains("script-src 'self'") && policy.contains("default-src 'none'"),
        "{policy}"
    );
    assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
    assert!(body.as_str().unwrap().contains("console/assets/main.js"));
    let (status, headers, _) = world.get("/console/assets/main.js").await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        "text/javascript; charset=utf-8"
    );
    // what the page fetches needs the key
    for path in ["/events", "/projections", "/openapi.json"] {
        let (status, _, body) = world.get(path).await;
        assert_eq!(status, 401, "{path}: {body}");
    }
    let (status, _, body) = world.get("/console/assets/secrets.js").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "console asset secrets.js not found");
    let (status, _, body) = world.get("/console?colour=red").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["parameter"], "colour");
    let (status, _, _) = world.get("/consoles").await;
    assert_eq!(status, 401, "only the console's own paths are open");
    world.stop().await;
}
