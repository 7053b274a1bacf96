//! `factline dlq list|show|redrive` against a running system: a projection rejects one order
//! (a rule it enforces), the record is dead-lettered, the rule is lifted, and the redrive puts
//! the record back: the projection that rejected it applies it exactly once, the projection
//! that had applied it skips the copy (same event id), the dry run counted exactly what the
//! redrive sent, and a second redrive sends nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::tally::start_tally;
use support::*;

async fn rows(world: &World, table: &str) -> Vec<String> {
    factline_testkit::postgres::rows_as_json(
        &world.database_url,
        &format!("SELECT order_id, applied FROM {table} ORDER BY order_id"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_dead_letter_is_redriven_and_applied_exactly_once() {
    let mut world = World::start(&[Projector::EventIndex], |_| {}).await;
    start_tally(&mut world, "picky");
    start_tally(&mut world, "steady");
    let db = factline_testkit::connect(&world.database_url).await;
    // both projectors registered (their tables exist): block one order for `picky` only
    factline_testkit::eventually("both projectors to register", std::time::Duration::from_secs(60), || async {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_tables WHERE tablename IN ('picky_blocked', 'steady_blocked') \
                 AND schemaname = current_schema()",
                &[],
            )
            .await
            .ok()?
            .get(0);
        (n == 2).then_some(())
    })
    .await;
    let (good, bad) = (unique("o-good"), unique("o-bad"));
    db.execute("INSERT INTO picky_blocked VALUES ($1)", &[&bad])
        .await
        .unwrap();
    for o in [&good, &bad] {
        world
            .command("PlaceOrder", order(o, "c-1", "Assam", 1, 300))
            .await;
    }
    caught_up(&world).await;

    // listed, by projector and record, with the error
    let list = factline_until(&world, &["dlq", "list", "--output", "json"], |r| {
        r.code == 0 && r.json().as_array().is_some_and(|a| a.len() == 1)
    })
    .await
    .json();
    let letter = &list[0];
    assert_eq!(letter["projector"], "picky");
    assert_eq!(
        letter["error"],
        format!("rejected by projection: order {bad} is blocked")
    );
    let id = letter["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with(&format!("{}orders:", world.prefix)), "{id}");
    let table = factline(&world, &["dlq", "list"]).await;
    println!("$ factline dlq list\n{}", table.stdout);
    assert!(table.stdout.contains(&id), "{}", table.stdout);
    assert!(
        table
            .stdout
            .ends_with("1 dead letters pending (picky: 1)\n"),
        "{}",
        table.stdout
    );

    // shown, with the record read back from the log and decoded
    let text = factline(&world, &["dlq", "show", &id]).await;
    println!("$ factline dlq show {id}\n{}", text.stdout);
    let shown = factline(&world, &["dlq", "show", &id, "--output", "json"]).await;
    assert_eq!(shown.code, 0, "{shown:?}");
    let shown = shown.json();
    let event_id = shown["headers"]["event_id"].as_str().unwrap().to_owned();
    let trail = |event: &serde_json::Value, projector: &str| {
        event["reached"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["projector"] == projector)
            .cloned()
            .unwrap_or_else(|| panic!("{projector} not in {event}"))
    };
    let before = factline_until(&world, &["events", "show", &event_id, "-o", "json"], |r| {
        r.code == 0
    })
    .await
    .json();
    assert_eq!(trail(&before, "picky")["outcome"], "dead_lettered");
    assert_eq!(
        trail(&before, "picky")["dead_letter"]["redriven_to"],
        serde_json::Value::Null
    );
    assert_eq!(trail(&before, "steady")["outcome"], "applied");
    assert_eq!(shown["key"], bad.as_str());
    assert_eq!(shown["payload"]["event_type"], "OrderPlaced");
    assert_eq!(shown["payload"]["value"]["order_id"], bad.as_str());
    assert_eq!(shown["headers"]["event_type"], "OrderPlaced");

    // status counts it as pending, and unhealthy
    let status = factline_until(&world, &["status", "--output", "json"], |r| r.code == 1).await;
    assert!(
        status.json()["problems"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("picky v1: 1 dead letters pending")),
        "{}",
        status.stdout
    );

    // without a selection, nothing is planned
    let refused = factline(&world, &["dlq", "redrive"]).await;
    assert_eq!(refused.code, 3, "{refused:?}");

    // the fix, then a dry run: the plan, nothing sent
    db.execute("DELETE FROM picky_blocked", &[]).await.unwrap();
    let topic = format!("{}orders", world.prefix);
    let end_before = end_offsets(&topic).await;
    let dry = factline(
        &world,
        &["dlq", "redrive", "--projector", "picky", "--output", "json"],
    )
    .await;
    assert_eq!(dry.code, 0, "{dry:?}");
    let dry = dry.json();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["records"], 1);
    assert_eq!(dry["ids"], serde_json::json!([id]));
    assert_eq!(
        end_offsets(&topic).await,
        end_before,
        "a dry run sends nothing"
    );
    let dry_table = factline(&world, &["dlq", "redrive", "--projector", "picky"]).await;
    println!(
        "$ factline dlq redrive --projector picky\n{}",
        dry_table.stdout
    );
    assert!(
        dry_table
            .stdout
            .contains("1 records to redrive (1 dead letters)\n  picky v1: 1\n"),
        "{}",
        dry_table.stdout
    );
    assert!(
        dry_table.stdout.contains("dry run: nothing sent"),
        "{}",
        dry_table.stdout
    );

    // the redrive sends exactly what the dry run counted
    let real = factline(
        &world,
        &[
            "dlq",
            "redrive",
            "--projector",
            "picky",
            "--yes",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(real.code, 0, "{real:?}");
    println!(
        "$ factline dlq redrive --projector picky --yes --output json\n{}",
        real.stdout
    );
    let real = real.json();
    assert_eq!(real["sent"], dry["records"]);
    assert_eq!(real["dead_letters"], dry["dead_letters"]);
    let end_after = end_offsets(&topic).await;
    assert_eq!(end_after - end_before, dry["records"].as_i64().unwrap());

    // applied once where it was rejected, skipped (same event id) where it was applied
    caught_up(&world).await;
    let want = {
        let mut want = vec![
            format!(r#"{{"order_id":"{good}","applied":1}}"#),
            format!(r#"{{"order_id":"{bad}","applied":1}}"#),
        ];
        want.sort();
        want
    };
    factline_testkit::eventually(
        "picky to apply the redriven order",
        std::time::Duration::from_secs(60),
        || async { (rows(&world, "picky_v1").await == want).then_some(()) },
    )
    .await;
    assert_eq!(rows(&world, "steady_v1").await, want);
    // the event's trail: applied by both, picky's dead letter redriven to the copy
    let after = factline(&world, &["events", "show", &event_id, "-o", "json"])
        .await
        .json();
    assert_eq!(trail(&after, "picky")["outcome"], "applied");
    let copy = real["redriven"][0]["to"].as_str().unwrap();
    assert_eq!(trail(&after, "picky")["dead_letter"]["redriven_to"], copy);
    assert_eq!(trail(&after, "steady")["outcome"], "applied");

    // nothing pending any more: healthy, and a second redrive sends nothing
    let status = factline_until(&world, &["status", "--output", "json"], |r| r.code == 0).await;
    assert_eq!(status.json()["healthy"], true);
    let again_text = factline(&world, &["dlq", "redrive", "--all", "--yes"]).await;
    println!("$ factline dlq redrive --all --yes\n{}", again_text.stdout);
    let again = factline(
        &world,
        &["dlq", "redrive", "--all", "--yes", "--output", "json"],
    )
    .await;
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.json()["sent"], 0);
    assert_eq!(end_offsets(&topic).await, end_after);
    let listed = factline(&world, &["dlq", "list", "--all", "--output", "json"])
        .await
        .json();
    assert_eq!(
        listed[0]["redriven_to"]
            .as_str()
            .unwrap()
            .split(':')
            .count(),
        3,
        "{listed}"
    );
    assert_eq!(rows(&world, "picky_v1").await, want);
    world.stop().await;
}

/// The sum of the end offsets of `topic`'s partitions.
async fn end_offsets(topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut config = factline_schemas::topics::client_config(&env("KAFKA_BROKERS"));
        config.set("group.id", "factline-cli-tests");
        let consumer: BaseConsumer = config.create().unwrap();
        let timeout = std::time::Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(&topic), timeout).unwrap();
        metadata.topics()[0]
            .partitions()
            .iter()
            .map(|p| {
                consumer
                    .fetch_watermarks(&topic, p.id(), timeout)
                    .unwrap()
                    .1
            })
            .sum()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_stops_at_its_limit_selects_by_id_and_error_and_runs_alone() {
    let mut world = World::start(&[], |_| {}).await;
    start_tally(&mut world, "picky");
    let db = factline_testkit::connect(&world.database_url).await;
    factline_testkit::eventually(
        "the projector to register",
        std::time::Duration::from_secs(60),
        || async {
            db.query_one("SELECT count(*) FROM picky_blocked", &[])
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
    let orders: Vec<String> = (0..3).map(|_| unique("o-bad")).collect();
    for o in &orders {
        db.execute("INSERT INTO picky_blocked VALUES ($1)", &[o])
            .await
            .unwrap();
        world
            .command("PlaceOrder", order(o, "c-1", "Assam", 1, 300))
            .await;
    }
    caught_up(&world).await;
    let letters = factline_until(&world, &["dlq", "list", "-o", "json"], |r| {
        r.code == 0 && r.json().as_array().is_some_and(|a| a.len() == 3)
    })
    .await
    .json();
    let ids: Vec<String> = letters
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    db.execute("DELETE FROM picky_blocked", &[]).await.unwrap();

    let none = factline(
        &world,
        &[
            "dlq",
            "redrive",
            "--error-contains",
            "no such error",
            "-o",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(none["records"], 0);
    let dry = factline(&world, &["dlq", "redrive", "--all", "-o", "json"])
        .await
        .json();
    assert_eq!(dry["records"], 3);
    assert_eq!(dry["ids"], serde_json::json!(ids));

    // two redrives of the same bookkeeping never run at once
    let lock = "hashtext('factline_dead_letter_redrive:' || current_schema())";
    db.execute(&format!("SELECT pg_advisory_lock({lock})"), &[])
        .await
        .unwrap();
    let busy = factline(&world, &["dlq", "redrive", "--all", "--yes"]).await;
    assert_eq!(busy.code, 5, "{busy:?}");
    assert!(
        busy.stderr.contains("another redrive is running"),
        "{}",
        busy.stderr
    );
    db.execute(&format!("SELECT pg_advisory_unlock({lock})"), &[])
        .await
        .unwrap();

    // --limit stops after that many records, in log order
    let first = factline(
        &world,
        &[
            "dlq", "redrive", "--all", "--limit", "2", "--yes", "-o", "json",
        ],
    )
    .await
    .json();
    assert_eq!(first["sent"], 2);
    let sent: Vec<&str> = first["redriven"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(sent, [ids[0].as_str(), ids[1].as_str()]);
    // the rest by id; what was sent adds up to the dry run's count
    let rest = factline(
        &world,
        &["dlq", "redrive", "--id", &ids[2], "--yes", "-o", "json"],
    )
    .await
    .json();
    assert_eq!(rest["sent"], 1);
    let again = factline(&world, &["dlq", "redrive", "--all", "--yes", "-o", "json"])
        .await
        .json();
    assert_eq!(again["sent"], 0);

    let mut want: Vec<String> = orders
        .iter()
        .map(|o| format!(r#"{{"order_id":"{o}","applied":1}}"#))
        .collect();
    want.sort();
    factline_testkit::eventually(
        "picky to apply every redriven order",
        std::time::Duration::from_secs(60),
        || async { (rows(&world, "picky_v1").await == want).then_some(()) },
    )
    .await;
    world.stop().await;
}
