//! The dead letters as the projector runtime records them in PostgreSQL
//! (`factline_projector_dead_letters`, one row per projector version and record) joined with
//! the redrives recorded by `factline dlq redrive`
//! ([`REDRIVES_TABLE`](factline_schemas::redrive::REDRIVES_TABLE)).

use chrono::{DateTime, Utc};
use factline_schemas::redrive::{REDRIVES_DDL, REDRIVES_TABLE};
use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::error::CliError;

/// A record in the log: topic, partition, offset. Written `topic:partition:offset`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId {
    /// The topic (its real name).
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
}

impl std::fmt::Display for RecordId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.topic, self.partition, self.offset)
    }
}

impl std::str::FromStr for RecordId {
    type Err = String;

    fn from_str(text: &str) -> Result<RecordId, String> {
        let bad = || format!("{text:?} is not TOPIC:PARTITION:OFFSET");
        let mut parts = text.rsplitn(3, ':');
        let offset = parts.next().and_then(|o| o.parse().ok()).ok_or_else(bad)?;
        let partition = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let topic = parts.next().filter(|t| !t.is_empty()).ok_or_else(bad)?;
        Ok(RecordId {
            topic: topic.to_owned(),
            partition,
            offset,
        })
    }
}

/// One dead letter: a record one projector version could not apply.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The projector.
    pub projector: String,
    /// Its version.
    pub version: i32,
    /// The record.
    pub record: RecordId,
    /// Why.
    pub error: String,
    /// When (the latest time, if dead-lettered again).
    pub dead_lettered_at: DateTime<Utc>,
    /// Where its redriven copy went (partition, offset), once redriven.
    pub redriven_to: Option<(i32, i64)>,
}

impl DeadLetter {
    /// As JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.record.to_string(),
            "projector": self.projector,
            "version": self.version,
            "topic": self.record.topic,
            "partition": self.record.partition,
            "offset": self.record.offset,
            "error": self.error,
            "dead_lettered_at": self.dead_lettered_at,
            "redriven_to": self.redriven_to.map(|(p, o)| format!("{}:{p}:{o}", self.record.topic)),
        })
    }
}

/// Which dead letters a command is about.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Selection {
    /// Only these records (TOPIC:PARTITION:OFFSET, as `dlq list` shows them); repeatable
    #[arg(long = "id", value_name = "TOPIC:PARTITION:OFFSET")]
    pub ids: Vec<RecordId>,
    /// Only the dead letters of this projector
    #[arg(long)]
    pub projector: Option<String>,
    /// Only records of this topic (its real name, as listed)
    #[arg(long)]
    pub topic: Option<String>,
    /// Only dead letters whose error contains this text
    #[arg(long, value_name = "TEXT")]
    pub error_contains: Option<String>,
}

impl Selection {
    /// Whether any filter is given.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
            && self.projector.is_none()
            && self.topic.is_none()
            && self.error_contains.is_none()
    }
}

/// Whether the runtime's dead-letter table exists (no projector ran yet, otherwise).
async fn has_table(client: &Client, table: &str) -> Result<bool, CliError> {
    Ok(client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await
        .map_err(CliError::postgres)?
        .get(0))
}

/// The dead letters matching `selection`, oldest record first; with `pending_only`, only those
/// not redriven yet.
pub async fn list(
    client: &Client,
    selection: &Selection,
    pending_only: bool,
) -> Result<Vec<DeadLetter>, CliError> {
    if !has_table(client, "factline_projector_dead_letters").await? {
        return Ok(Vec::new());
    }
    let redrives = if has_table(client, REDRIVES_TABLE).await? {
        format!(
            "LEFT JOIN {REDRIVES_TABLE} x ON x.topic = d.topic AND x.partition = d.partition \
             AND x.\"offset\" = d.\"offset\""
        )
    } else {
        "LEFT JOIN (SELECT NULL::text topic, NULL::int partition, NULL::bigint \"offset\", \
         NULL::int to_partition, NULL::bigint to_offset) x ON false"
            .to_owned()
    };
    let topics: Vec<String> = selection.ids.iter().map(|r| r.topic.clone()).collect();
    let partitions: Vec<i32> = selection.ids.iter().map(|r| r.partition).collect();
    let offsets: Vec<i64> = selection.ids.iter().map(|r| r.offset).collect();
    let sql = format!(
        "SELECT d.projector, d.version, d.topic, d.partition, d.\"offset\", d.error, \
                d.dead_lettered_at, x.to_partition, x.to_offset \
         FROM factline_projector_dead_letters d {redrives} \
         WHERE ($1::text IS NULL OR d.projector = $1) \
           AND ($2::text IS NULL OR d.topic = $2) \
           AND ($3::text IS NULL OR strpos(d.error, $3) > 0) \
           AND (cardinality($4::text[]) = 0 OR (d.topic, d.partition, d.\"offset\") IN \
                (SELECT * FROM unnest($4::text[], $5::int[], $6::bigint[]))) \
           AND (NOT $7 OR x.to_offset IS NULL) \
         ORDER BY d.topic, d.partition, d.\"offset\", d.projector, d.version"
    );
    let rows = client
        .query(
            &sql,
            &[
                &selection.projector,
                &selection.topic,
                &selection.error_contains,
                &topics,
                &partitions,
                &offsets,
                &pending_only,
            ],
        )
        .await
        .map_err(CliError::postgres)?;
    Ok(rows
        .into_iter()
        .map(|row| DeadLetter {
            projector: row.get(0),
            version: row.get(1),
            record: RecordId {
                topic: row.get(2),
                partition: row.get(3),
                offset: row.get(4),
            },
            error: row.get(5),
            dead_lettered_at: row.get(6),
            redriven_to: row
                .get::<_, Option<i32>>(7)
                .zip(row.get::<_, Option<i64>>(8)),
        })
        .collect())
}

/// Creates the redrive table if needed.
pub async fn prepare_redrives(client: &Client) -> Result<(), CliError> {
    client
        .batch_execute(REDRIVES_DDL)
        .await
        .map_err(CliError::postgres)
}

/// Records that `record` (event `event_id`) was redriven to `to`; returns false when it was
/// recorded already (a concurrent redrive got there first).
pub async fn record_redrive(
    client: &Client,
    record: &RecordId,
    event_id: Option<uuid::Uuid>,
    (to_partition, to_offset): (i32, i64),
) -> Result<bool, CliError> {
    let sql = format!(
        "INSERT INTO {REDRIVES_TABLE} (topic, partition, \"offset\", event_id, to_partition, to_offset) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING"
    );
    let inserted = client
        .execute(
            &sql,
            &[
                &record.topic,
                &record.partition,
                &record.offset,
                &event_id,
                &to_partition,
                &to_offset,
            ],
        )
        .await
        .map_err(CliError::postgres)?;
    Ok(inserted == 1)
}

/// The advisory lock of redrives on this bookkeeping (this database and schema).
const LOCK: &str = "hashtext('factline_dead_letter_redrive:' || current_schema())";

/// Takes the session's redrive lock, so two redrives of the same bookkeeping never run at
/// once: waits up to `wait` for another redrive to finish (a session that just ended may hold
/// it until the server notices); false when it is still held then.
pub async fn lock(client: &Client, wait: std::time::Duration) -> Result<bool, CliError> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let locked: bool = client
            .query_one(&format!("SELECT pg_try_advisory_lock({LOCK})"), &[])
            .await
            .map_err(CliError::postgres)?
            .get(0);
        if locked || std::time::Instant::now() >= deadline {
            return Ok(locked);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Releases the lock taken by [`lock`].
pub async fn unlock(client: &Client) -> Result<(), CliError> {
    client
        .execute(&format!("SELECT pg_advisory_unlock({LOCK})"), &[])
        .await
        .map_err(CliError::postgres)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_read_back_what_they_print() {
        let id: RecordId = "t_x.orders:2:17".parse().unwrap();
        assert_eq!(id.topic, "t_x.orders");
        assert_eq!((id.partition, id.offset), (2, 17));
        assert_eq!(id.to_string(), "t_x.orders:2:17");
        assert!("orders:2".parse::<RecordId>().is_err());
        assert!(":1:2".parse::<RecordId>().is_err());
        assert!("orders:x:2".parse::<RecordId>().is_err());
    }
}
