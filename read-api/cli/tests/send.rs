//! `factline send FILE` against a running write side: every valid line is accepted and
//! reaches the read model, a bad line is reported by its line number with the write side's
//! problems (exit 1), `--rate` paces the sends, and a missing file is exit 3.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Instant;

use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_reports_failures_by_line_and_paces_itself() {
    let world = World::start(&[Projector::OrderSummary], |_| {}).await;
    let c = unique("c");
    let orders: Vec<String> = (0..6).map(|_| unique("o")).collect();
    let mut lines = Vec::new();
    for (i, o) in orders.iter().enumerate() {
        let mut item = json!({"command": "PlaceOrder", "body": order(o, &c, "Assam", 1, 300)});
        if i % 2 == 0 {
            item["idempotency_key"] = json!(format!("send-{o}"));
        }
        lines.push(item.to_string());
        if i == 2 {
            lines.push(String::new()); // blank lines are skipped, line numbers kept
            lines.push(json!({"command": "PlaceOrder", "body": {"order_id": "x"}}).to_string());
        }
    }
    let dir = std::env::temp_dir().join(unique("factline-send"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("commands.ndjson");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let path = file.to_string_lossy().into_owned();

    let started = Instant::now();
    let run = factline(
        &world,
        &[
            "send",
            &path,
            "--rate",
            "10",
            "--batch-size",
            "2",
            "--output",
            "json",
        ],
    )
    .await;
    let took = started.elapsed();
    assert_eq!(run.code, 1, "{run:?}");
    let summary = run.json();
    assert_eq!(summary["commands"], 7);
    assert_eq!(summary["accepted"], 6);
    assert_eq!(summary["failed"], 1);
    let failure = &summary["failures"][0];
    assert_eq!(failure["line"], 5);
    assert_eq!(failure["status"], 400);
    assert!(
        failure["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["path"] == "$.customer_id"),
        "{failure}"
    );
    // 7 commands at 10 a second: the last batch (the 7th command) may not start before 0.6 s
    assert!(took.as_secs_f64() >= 0.6, "{took:?}");
    for o in &orders {
        world
            .eventually(&format!("/orders/{o}"), |status, _| status == 200)
            .await;
    }

    let table = factline(&world, &["send", &path]).await;
    assert_eq!(table.code, 1);
    assert!(
        table.stdout.contains(": 6 accepted, 1 failed"),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("  line 5: 400 "), "{}", table.stdout);

    let missing = factline(&world, &["send", "/nonexistent/commands.ndjson"]).await;
    assert_eq!(missing.code, 3, "{missing:?}");
    assert!(
        missing
            .stderr
            .starts_with("factline: cannot read /nonexistent/commands.ndjson: "),
        "{}",
        missing.stderr
    );
    std::fs::remove_dir_all(&dir).unwrap();
    world.stop().await;
}
