//! A small projection for the CLI's tests: `{name}_v{version}` counts how many times each
//! `OrderPlaced` was applied (so a second application shows); it rejects the orders listed in
//! `{name}_blocked` (a rule the operator can lift: a dead letter to redrive), and while
//! `{name}_hold` (created by the test) has rows it fails transiently (a rebuild held back).

use factline_projectors::{Event, Migration, Projection, ProjectionError};
use tokio_postgres::Transaction;

use super::{Running, World};

/// The projection.
pub struct Tally {
    /// Its name (tables, consumer group, checkpoint key).
    pub name: &'static str,
    /// Its version.
    pub version: u32,
    /// Whether it honours `{name}_hold`.
    pub hold: bool,
}

impl Projection for Tally {
    fn name(&self) -> &str {
        self.name
    }
    fn version(&self) -> u32 {
        self.version
    }
    fn topics(&self) -> Vec<String> {
        vec!["orders".into()]
    }
    fn event_types(&self) -> Vec<String> {
        vec!["OrderPlaced".into()]
    }
    fn migrations(&self) -> Vec<Migration> {
        vec![Migration::new(
            "001_create",
            format!(
                "CREATE TABLE {n}_v{v} (order_id text PRIMARY KEY, applied integer NOT NULL); \
                 CREATE TABLE IF NOT EXISTS {n}_blocked (order_id text PRIMARY KEY);",
                n = self.name,
                v = self.version
            ),
        )]
    }
    fn views(&self) -> Vec<String> {
        vec![self.name.to_owned()]
    }
    async fn apply(&self, tx: &Transaction<'_>, event: &Event) -> Result<(), ProjectionError> {
        let order = event.data["order_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let transient = |e: tokio_postgres::Error| ProjectionError::transient(e);
        if self.hold {
            let held: i64 = tx
                .query_one(&format!("SELECT count(*) FROM {}_hold", self.name), &[])
                .await
                .map_err(transient)?
                .get(0);
            if held > 0 {
                return Err(ProjectionError::transient("held by the test"));
            }
        }
        let blocked = tx
            .query_opt(
                &format!("SELECT 1 FROM {}_blocked WHERE order_id = $1", self.name),
                &[&order],
            )
            .await
            .map_err(transient)?;
        if blocked.is_some() {
            return Err(ProjectionError::permanent(format!(
                "order {order} is blocked"
            )));
        }
        tx.execute(
            &format!(
                "INSERT INTO {n}_v{v} (order_id, applied) VALUES ($1, 1) \
                 ON CONFLICT (order_id) DO UPDATE SET applied = {n}_v{v}.applied + 1",
                n = self.name,
                v = self.version
            ),
            &[&order],
        )
        .await
        .map_err(transient)?;
        Ok(())
    }
}

/// Starts `tally` in `world` (stopped with the world), under the key `key`.
pub fn start(world: &mut World, key: &'static str, tally: Tally) {
    let config = world.projector_config();
    let running = Running::spawn(|stop| async move {
        let _ = factline_projectors::run(config, tally, async move {
            let _ = stop.await;
        })
        .await;
    });
    world.projectors.insert(key, running);
}

/// Starts version 1 of a tally called `name`, without hold.
pub fn start_tally(world: &mut World, name: &'static str) {
    let tally = Tally {
        name,
        version: 1,
        hold: false,
    };
    start(world, name, tally);
}
