//! `orders_per_day`: how many orders were placed per UTC day and currency, and their total.
//! View `orders_per_day` (`day` as `YYYY-MM-DD`, `currency`, `orders`, `total_cents`), served by
//! the read API at `/views/orders_per_day?day=2026-11-26` with no read-API code: the projection
//! records its table's declaration like a declarative projection does.
//!
//! Idempotent and order-safe: an order counts once, on the day its first `OrderPlaced` says.
//! The helper table `orders_per_day_orders_v{N}` remembers every counted order; a day's
//! counters are only incremented in the statement that inserts an order there for the first
//! time. Increments commute, so events of different orders may arrive in any order, and
//! several instances may count into one day at once (`ON CONFLICT DO UPDATE` adds to the
//! newest committed row).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use factline_schemas::declarative::{ColumnType, DeclarativeConfig, SinkKind, TableSpec};
use serde::Deserialize;
use tokio_postgres::Transaction;

use crate::error::ProjectionError;
use crate::projection::{versioned_table, Event, Migration, Projection};

/// The projector name (and the view's).
pub const NAME: &str = "orders_per_day";
/// The read model's version.
pub const VERSION: u32 = 1;

/// The `orders_per_day` projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrdersPerDayProjection;

#[derive(Deserialize)]
struct Placed {
    order_id: String,
    currency: String,
    total_cents: i64,
    placed_at: DateTime<Utc>,
}

/// The UTC day of a time, as the view shows it.
pub fn day(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

/// The table the read API serves, as recorded in PostgreSQL.
static SERVED: LazyLock<DeclarativeConfig> = LazyLock::new(|| DeclarativeConfig {
    name: NAME.into(),
    version: VERSION,
    topics: vec!["orders".into()],
    sink: SinkKind::Postgres,
    tables: vec![TableSpec {
        name: NAME.into(),
        primary_key: vec!["day".into(), "currency".into()],
        columns: BTreeMap::from([
            ("day".into(), ColumnType::Text),
            ("currency".into(), ColumnType::Text),
            ("orders".into(), ColumnType::Bigint),
            ("total_cents".into(), ColumnType::Bigint),
        ]),
    }],
    indices: Vec::new(),
    on: Vec::new(),
});

impl Projection for OrdersPerDayProjection {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> u32 {
        VERSION
    }

    fn topics(&self) -> Vec<String> {
        vec!["orders".into()]
    }

    fn event_types(&self) -> Vec<String> {
        vec!["OrderPlaced".into()]
    }

    fn migrations(&self) -> Vec<Migration> {
        let days = versioned_table(NAME, VERSION);
        let orders = versioned_table("orders_per_day_orders", VERSION);
        vec![Migration::new(
            "001_create",
            format!(
                "CREATE TABLE {days} (day text, currency text, orders bigint NOT NULL,
                     total_cents bigint NOT NULL, PRIMARY KEY (day, currency));
                 CREATE TABLE {orders} (order_id text PRIMARY KEY, day text NOT NULL,
                     currency text NOT NULL, total_cents bigint NOT NULL);"
            ),
        )]
    }

    fn views(&self) -> Vec<String> {
        vec![NAME.into()]
    }

    fn declarative_config(&self) -> Option<&DeclarativeConfig> {
        Some(&SERVED)
    }

    async fn apply(&self, tx: &Transaction<'_>, event: &Event) -> Result<(), ProjectionError> {
        let placed: Placed = event.parse()?;
        let days = versioned_table(NAME, VERSION);
        let orders = versioned_table("orders_per_day_orders", VERSION);
        tx.execute(
            &format!(
                "WITH counted AS (
                     INSERT INTO {orders} (order_id, day, currency, total_cents)
                     VALUES ($1, $2, $3, $4) ON CONFLICT (order_id) DO NOTHING
                     RETURNING day, currency, total_cents)
                 INSERT INTO {days} (day, currency, orders, total_cents)
                 SELECT day, currency, 1, total_cents FROM counted
                 ON CONFLICT (day, currency) DO UPDATE
                 SET orders = {days}.orders + 1,
                     total_cents = {days}.total_cents + excluded.total_cents"
            ),
            &[
                &placed.order_id,
                &day(placed.placed_at),
                &placed.currency,
                &placed.total_cents,
            ],
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_day_is_the_utc_date_of_placed_at() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(day(at("2026-11-26T23:59:59.999Z")), "2026-11-26");
        assert_eq!(day(at("2026-11-26T23:30:00-02:00")), "2026-11-27");
    }

    #[test]
    fn the_served_table_is_a_valid_declaration_of_the_view() {
        SERVED.validate().unwrap();
        assert_eq!(SERVED.tables[0].name, OrdersPerDayProjection.views()[0]);
        assert_eq!(SERVED.topics, OrdersPerDayProjection.topics());
    }
}
