//! The projection trait: what a read model wants from the log and how each event changes it.
//!
//! A projection is one file implementing [`Projection`]; the runtime ([`crate::run`]) owns the
//! consumer, decoding, transactions, checkpoints, retries, dead-lettering, metrics and shutdown.

use std::future::Future;
use std::sync::Arc;

use factline_schemas::Envelope;
use serde::de::DeserializeOwned;
use tokio_postgres::Transaction;

use crate::error::ProjectionError;
use crate::record::Headers;

/// Where a record came from in the log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The Kafka topic as consumed (including any configured topic prefix). Shared by the
    /// records of a topic, not a copy per record; `&*origin.topic` is the `&str` (for a SQL
    /// parameter, for example).
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The offset of the record in its partition.
    pub offset: i64,
}

/// One decoded event handed to [`Projection::apply`].
#[derive(Debug, Clone)]
pub struct Event {
    /// The envelope read from the Kafka headers (event id, type, correlation, time…).
    pub envelope: Envelope,
    /// The value as JSON, resolved to the embedded reader schema of its event type
    /// (timestamps as RFC 3339 strings, unions unwrapped).
    pub data: serde_json::Value,
    /// The Kafka key (the aggregate id), when present and UTF-8.
    pub key: Option<String>,
    /// Where the record sits in the log.
    pub origin: Origin,
    /// The record's Kafka timestamp (producer or broker time), when it has one.
    pub timestamp: Option<chrono::DateTime<chrono::Utc>>,
    /// The record's headers as read, in order.
    pub headers: Headers,
}

impl Event {
    /// The short event type, e.g. `OrderPlaced`.
    pub fn event_type(&self) -> &str {
        &self.envelope.event_type
    }

    /// Deserializes the event body into a typed struct (read from [`Event::data`] in place, not
    /// from a copy); a mismatch is a permanent error (the record goes to the dead-letter topic).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ProjectionError> {
        T::deserialize(&self.data).map_err(|source| {
            ProjectionError::permanent(ShapeError {
                event_type: self.event_type().to_owned(),
                source,
            })
        })
    }
}

/// An event body that does not deserialize into the projection's type.
#[derive(Debug, thiserror::Error)]
#[error("{event_type} does not match the projection's shape")]
pub struct ShapeError {
    /// The event type.
    pub event_type: String,
    /// What serde found.
    #[source]
    pub source: serde_json::Error,
}

/// One schema migration of a projection, run once per projector name and version by the runtime
/// (tracked in `factline_projector_migrations`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// A stable identifier, e.g. `001_create_order_summary`.
    pub id: String,
    /// The SQL, possibly several statements.
    pub sql: String,
}

impl Migration {
    /// Builds a migration from its id and SQL.
    pub fn new(id: impl Into<String>, sql: impl Into<String>) -> Migration {
        Migration {
            id: id.into(),
            sql: sql.into(),
        }
    }
}

/// The name of the versioned table behind a view: `versioned_table("order_summary", 1)` is
/// `order_summary_v1` (the naming the read API shares, from the contract crate).
pub use factline_schemas::read_model::versioned_table;

/// The table whose rows keep the ids of the events applied to them
/// ([`Projection::applied_ids_in_rows`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppliedIdsColumn {
    /// The read model: a view's base name (its table is the versioned one).
    pub view: &'static str,
    /// The row's key column, whose value is the Kafka key of the events applied to the row.
    pub key: &'static str,
}

/// A read model built from the log.
///
/// # Replay contract
///
/// `apply` must be **deterministic and idempotent**: given the same events it must produce the
/// same rows, whatever the order in which events of different aggregates (or a replay) arrive,
/// and applying an event twice must not change the result. It uses no clocks, no randomness and
/// calls no other service: everything it writes is derived from the event (its body and
/// envelope) and the rows already in the read model. The runtime additionally skips events whose
/// `event_id` was already applied (or the projection does, in its rows: see
/// [`applied_ids_in_rows`](Projection::applied_ids_in_rows)), but a projection must not rely
/// on that alone.
///
/// # Naming
///
/// [`name`](Projection::name) is also the consumer group prefix (`{name}-v{version}`), the
/// checkpoint key in `factline_projector_positions`, the tracing span and the `projector`
/// metrics label. Tables are named with the version (`order_summary_v1`, see
/// [`versioned_table`]); the runtime points a view without suffix at the live version, so a new
/// version can be rebuilt beside the old one.
///
/// # Errors
///
/// [`ProjectionError::Transient`] rolls the whole batch back and retries it with backoff;
/// [`ProjectionError::Permanent`] rolls back this event only (it runs in a savepoint), sends the
/// record to `<topic>.dlq` and carries on.
pub trait Projection: Send + Sync + 'static {
    /// The projector's name, e.g. `order_summary`.
    fn name(&self) -> &str;

    /// The version of the read model's shape; bump it to rebuild into new tables.
    fn version(&self) -> u32;

    /// The topics consumed, without the runtime's test prefix, e.g. `["orders"]`.
    fn topics(&self) -> Vec<String>;

    /// The event types applied; records of other types are counted and skipped.
    fn event_types(&self) -> Vec<String>;

    /// The migrations creating this version's tables (names carry the version suffix).
    fn migrations(&self) -> Vec<Migration>;

    /// The base names of the tables exposed through a view without version suffix
    /// (`order_summary` -> `order_summary_v{version}`).
    fn views(&self) -> Vec<String>;

    /// The configuration of a declarative projection, recorded with this version at bootstrap
    /// so the read API serves its views (`/views/...`). A projection in code may return a
    /// declaration of its tables with no mappings to be served the same way (see
    /// `orders_per_day`); `None` (the default): its routes are written in the read API.
    fn declarative_config(&self) -> Option<&factline_schemas::declarative::DeclarativeConfig> {
        None
    }

    /// Sequenced dead-lettering: once an event of a key is dead-lettered, park the later
    /// events of that key (dead-lettered with an error naming the one they wait for) until it
    /// is redriven and applied, so a read model never applies an `OrderShipped` whose
    /// `OrderPlaced` it rejected. Off by default: turn it on when an event of a key depends on
    /// the earlier ones having been applied; leave it off when the projection is order-safe
    /// (each event stands alone, or guards by timestamp). See `runtime::sequence`.
    fn sequenced_dead_letters(&self) -> bool {
        false
    }

    /// Where the projection remembers the event ids it applied in its own rows, if it does
    /// (with [`AppliedIds`](crate::postgres::AppliedIds) in an `applied_ids` column, as
    /// `order_summary` does), skipping an event whose id a row holds. Then the runtime keeps no
    /// row per event in `factline_projector_applied`, which is most of PostgreSQL's work per
    /// event, and `factline_projector_events_applied_total` also counts the duplicates the
    /// rows skipped. The place is recorded with the version, so the read API's trail of an
    /// event (`/events/{id}/trail`) finds the id in the row. `None` by default: the runtime
    /// dedupes.
    fn applied_ids_in_rows(&self) -> Option<AppliedIdsColumn> {
        None
    }

    /// Whether [`apply`](Projection::apply) reads the fields the catalog marks personal
    /// (`"factline.personal"`: names, e-mail addresses, postal addresses). `true` by default:
    /// the runtime decrypts them before the projection sees the event. A projection that
    /// returns `false` gets them as written, sealed, and its projector never fetches a data
    /// key: it holds no personal data, spends no time decrypting, and goes on while the key
    /// store cannot answer (`order_summary` does so: it reads none of the order's address).
    fn reads_personal_data(&self) -> bool {
        true
    }

    /// Applies one event inside the batch transaction. See the replay contract above.
    fn apply(
        &self,
        tx: &Transaction<'_>,
        event: &Event,
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send;

    /// Applies a whole batch (in log order, duplicates already removed) with the same result
    /// as calling [`apply`](Projection::apply) for each event in turn, which is what the default
    /// does. The runtime runs it in one savepoint; on a [`ProjectionError::Permanent`] it rolls
    /// back and applies the batch event by event, each in its own savepoint, so only the
    /// offending record is dead-lettered.
    ///
    /// Optional: a projection that writes every row a batch touches in one statement (see
    /// `order_summary`, which merges in SQL, reading first only the rows that need it) is many
    /// times faster than one `apply` per event.
    fn apply_batch(
        &self,
        tx: &Transaction<'_>,
        events: &[&Event],
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send {
        async move {
            for event in events {
                self.apply(tx, event).await?;
            }
            Ok(())
        }
    }
}
