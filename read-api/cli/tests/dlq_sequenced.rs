//! Sequenced dead letters against a running system: a projection that opts in rejects one
//! order's `OrderPlaced`; that order's `OrderShipped` is parked (not applied) while other
//! orders flow on (within one batch as across batches), `/projections` and `factline status` count it as parked, and once the rule
//! is lifted a redrive applies both in order, giving the read model a projection without the
//! failure built (compared with one that never rejected anything).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use factline_projectors::{Event, Migration, Projection, ProjectionError};
use serde_json::{json, Value};
use support::*;
use tokio_postgres::Transaction;

/// Appends each applied event's type to its order's row; rejects the `OrderPlaced` of the
/// orders listed in `{name}_blocked`.
struct Ledger {
    name: &'static str,
    sequenced: bool,
}

impl Projection for Ledger {
    fn name(&self) -> &str {
        self.name
    }
    fn version(&self) -> u32 {
        1
    }
    fn topics(&self) -> Vec<String> {
        vec!["orders".into()]
    }
    fn event_types(&self) -> Vec<String> {
        vec!["OrderPlaced".into(), "OrderShipped".into()]
    }
    fn migrations(&self) -> Vec<Migration> {
        vec![Migration::new(
            "001_create",
            format!(
                "CREATE TABLE {n}_v1 (order_id text PRIMARY KEY, events text[] NOT NULL); \
                 CREATE TABLE IF NOT EXISTS {n}_blocked (order_id text PRIMARY KEY);",
                n = self.name
            ),
        )]
    }
    fn views(&self) -> Vec<String> {
        vec![self.name.to_owned()]
    }
    fn sequenced_dead_letters(&self) -> bool {
        self.sequenced
    }
    async fn apply(&self, tx: &Transaction<'_>, event: &Event) -> Result<(), ProjectionError> {
        let order = event.data["order_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let transient = |e: tokio_postgres::Error| ProjectionError::transient(e);
        let blocked = tx
            .query_opt(
                &format!("SELECT 1 FROM {}_blocked WHERE order_id = $1", self.name),
                &[&order],
            )
            .await
            .map_err(transient)?;
        if blocked.is_some() && event.event_type() == "OrderPlaced" {
            return Err(ProjectionError::permanent(format!(
                "order {order} is blocked"
            )));
        }
        tx.execute(
            &format!(
                "INSERT INTO {n}_v1 (order_id, events) VALUES ($1, ARRAY[$2]) \
                 ON CONFLICT (order_id) DO UPDATE SET events = {n}_v1.events || $2",
                n = self.name
            ),
            &[&order, &event.event_type()],
        )
        .await
        .map_err(transient)?;
        Ok(())
    }
}

fn start_ledger(world: &mut World, name: &'static str, sequenced: bool) {
    let config = world.projector_config();
    let running = Running::spawn(|stop| async move {
        let _ = factline_projectors::run(config, Ledger { name, sequenced }, async move {
            let _ = stop.await;
        })
        .await;
    });
    world.projectors.insert(name, running);
}

/// `{name}_v1` as order id → event types in the order applied (none while the table does not
/// exist yet).
async fn ledger(world: &World, name: &str) -> Vec<(String, Vec<String>)> {
    factline_testkit::connect(&world.database_url)
        .await
        .query(
            &format!("SELECT order_id, events FROM {name}_v1 ORDER BY order_id"),
            &[],
        )
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn version_of<'a>(projections: &'a Value, name: &str) -> &'a Value {
    projections["projections"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["versions"].get(0))
        .unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_event_holds_back_its_keys_later_events_until_redriven() {
    const WAIT: Duration = Duration::from_secs(120);
    let mut world = World::start(&[], |_| {}).await;
    start_ledger(&mut world, "plain", false);
    let db = factline_testkit::connect(&world.database_url).await;
    let (held, free) = (unique("o-held"), unique("o-free"));
    // the rule exists before `seqd` starts, which then reads the whole stream as one backlog:
    // the rejected OrderPlaced and the OrderShipped behind it share a batch
    db.batch_execute("CREATE TABLE seqd_blocked (order_id text PRIMARY KEY)")
        .await
        .unwrap();
    db.execute("INSERT INTO seqd_blocked VALUES ($1)", &[&held])
        .await
        .unwrap();
    for o in [&held, &free] {
        world
            .command("PlaceOrder", order(o, "c-1", "Assam", 1, 300))
            .await;
    }
    for o in [&held, &free] {
        world
            .command(
                "ShipOrder",
                json!({"order_id": o, "carrier": "DHL", "tracking_id": "T1"}),
            )
            .await;
    }
    let both = vec!["OrderPlaced".to_owned(), "OrderShipped".to_owned()];
    let mut expected = vec![(held.clone(), both.clone()), (free.clone(), both.clone())];
    expected.sort();

    // the order without a problem flows; the held one's OrderShipped is parked, not applied
    factline_testkit::eventually("the plain ledger has every event", WAIT, || async {
        (ledger(&world, "plain").await == expected).then_some(())
    })
    .await;
    start_ledger(&mut world, "seqd", true);
    let (_, _, status) = world
        .eventually_with("/projections", |_, _, body| {
            let v = version_of(body, "seqd");
            v["dead_letters_pending"] == 2 && v["dead_letters_parked"] == 1
        })
        .await;
    assert_eq!(version_of(&status, "seqd")["lag_events"], 0, "{status}");
    assert_eq!(
        ledger(&world, "seqd").await,
        vec![(free.clone(), both.clone())],
        "the held order's OrderShipped must not be applied before its OrderPlaced"
    );
    let shown = factline(&world, &["status", "--output", "json"]).await;
    assert!(
        shown.stdout.contains("\"dead_letters_parked\": 1"),
        "{shown:?}"
    );
    let table = factline(&world, &["status"]).await;
    assert!(
        table.stdout.contains("2 pending / 2 (1 parked)"),
        "{table:?}"
    );

    // the rule lifted, a redrive applies both, in order
    db.execute("DELETE FROM seqd_blocked", &[]).await.unwrap();
    let dry = factline(
        &world,
        &["dlq", "redrive", "--projector", "seqd", "--output", "json"],
    )
    .await;
    assert_eq!(dry.json()["records"], 2, "{dry:?}");
    let real = factline(
        &world,
        &[
            "dlq",
            "redrive",
            "--projector",
            "seqd",
            "--yes",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(real.code, 0, "{real:?}");
    factline_testkit::eventually("the redriven events applied", WAIT, || async {
        (ledger(&world, "seqd").await == expected).then_some(())
    })
    .await;
    world
        .eventually_with("/projections", |_, _, body| {
            let v = version_of(body, "seqd");
            v["dead_letters_pending"] == 0 && v["dead_letters_parked"] == 0
        })
        .await;
    let blocked: i64 = db
        .query_one(
            "SELECT count(*) FROM factline_projector_blocked_keys WHERE projector = 'seqd'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(blocked, 0);
    assert_eq!(ledger(&world, "seqd").await, ledger(&world, "plain").await);
    world.stop().await;
}
