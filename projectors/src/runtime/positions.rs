//! Checkpoints: the next offset to apply per topic and partition, stored in
//! `factline_projector_positions` in the same transaction as the read-model change.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, NoTls};

/// A topic and partition.
pub type TopicPartition = (String, i32);

/// Sent in every transaction that moves positions: PostgreSQL delivers it at commit, and the
/// read API, listening on the channel, reads the new positions at once.
pub const NOTIFY: &str = "NOTIFY factline_positions";

/// Locks the position rows of the given partitions for this transaction (creating them at 0
/// if absent), in one order for every caller, and returns the stored next offsets. Records
/// below them were applied already, by this instance or another one, and are skipped: this is
/// what fences a stale instance after a rebalance.
///
/// Both statements are prepared once per connection and sent together (pipelined): one round
/// trip per batch instead of four.
pub async fn lock(
    tx: &Transaction<'_>,
    projector: &str,
    version: u32,
    partitions: &[TopicPartition],
) -> Result<HashMap<TopicPartition, i64>, tokio_postgres::Error> {
    let version = version as i32;
    let mut sorted = partitions.to_vec();
    sorted.sort();
    sorted.dedup();
    let (topics, numbers): (Vec<String>, Vec<i32>) = sorted.into_iter().unzip();
    let (create, select) = tokio::try_join!(
        tx.prepare_cached(
            "INSERT INTO factline_projector_positions \
               (projector, version, topic, partition, next_offset) \
             SELECT $1, $2, t, p, 0 FROM unnest($3::text[], $4::int[]) AS x(t, p) \
             ON CONFLICT DO NOTHING",
        ),
        tx.prepare_cached(
            "SELECT topic, partition, next_offset FROM factline_projector_positions \
             WHERE projector = $1 AND version = $2 \
               AND (topic, partition) IN \
                 (SELECT t, p FROM unnest($3::text[], $4::int[]) AS x(t, p)) \
             ORDER BY topic, partition FOR UPDATE",
        ),
    )?;
    let params: [&(dyn ToSql + Sync); 4] = [&projector, &version, &topics, &numbers];
    // sent in this order (tokio-postgres writes requests in the order they are first polled)
    let (_, rows) = tokio::try_join!(tx.execute(&create, &params), tx.query(&select, &params))?;
    Ok(rows
        .into_iter()
        .map(|row| ((row.get(0), row.get(1)), row.get(2)))
        .collect())
}

/// What a committed batch moves a partition's checkpoint to.
#[derive(Debug, Clone, PartialEq)]
pub struct Advance {
    /// The offset after the last record of the batch in this partition.
    pub next_offset: i64,
    /// The partition's high watermark as last seen by the consumer, if known.
    pub high_watermark: Option<i64>,
    /// When the last record of the batch in this partition occurred.
    pub last_event_at: Option<DateTime<Utc>>,
}

/// Moves the checkpoints of locked partitions forward (never backwards), in one statement
/// (prepared once per connection), and sends [`NOTIFY`] with it: one round trip.
pub async fn advance(
    tx: &Transaction<'_>,
    projector: &str,
    version: u32,
    to: &[(TopicPartition, Advance)],
) -> Result<(), tokio_postgres::Error> {
    if to.is_empty() {
        return tx.batch_execute(NOTIFY).await;
    }
    let topics: Vec<&str> = to.iter().map(|((t, _), _)| t.as_str()).collect();
    let numbers: Vec<i32> = to.iter().map(|((_, p), _)| *p).collect();
    let next: Vec<i64> = to.iter().map(|(_, a)| a.next_offset).collect();
    let high: Vec<Option<i64>> = to.iter().map(|(_, a)| a.high_watermark).collect();
    let last: Vec<Option<DateTime<Utc>>> = to.iter().map(|(_, a)| a.last_event_at).collect();
    let update = tx
        .prepare_cached(
            "UPDATE factline_projector_positions AS pos SET \
               next_offset = GREATEST(pos.next_offset, x.next_offset), \
               high_watermark = GREATEST(COALESCE(pos.high_watermark, x.high), x.high), \
               last_event_at = COALESCE(x.last_event_at, pos.last_event_at), \
               updated_at = now() \
             FROM unnest($3::text[], $4::int[], $5::bigint[], $6::bigint[], $7::timestamptz[]) \
                  AS x(topic, partition, next_offset, high, last_event_at) \
             WHERE pos.projector = $1 AND pos.version = $2 \
               AND pos.topic = x.topic AND pos.partition = x.partition",
        )
        .await?;
    let params: [&(dyn ToSql + Sync); 7] = [
        &projector,
        &(version as i32),
        &topics,
        &numbers,
        &next,
        &high,
        &last,
    ];
    tokio::try_join!(tx.execute(&update, &params), tx.batch_execute(NOTIFY))?;
    Ok(())
}

/// Every stored position of a projector version.
pub async fn load<C: GenericClient>(
    client: &C,
    projector: &str,
    version: u32,
) -> Result<HashMap<TopicPartition, i64>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT topic, partition, next_offset FROM factline_projector_positions \
             WHERE projector = $1 AND version = $2",
            &[&projector, &(version as i32)],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| ((row.get(0), row.get(1)), row.get(2)))
        .collect())
}

/// Records the high watermark seen for partitions without new records (so readers see lag 0 or
/// the true lag even when nothing was applied). One statement per partition, each locking
/// only its own row, all sent at once: one round trip.
pub async fn record_high_watermarks(
    client: &deadpool_postgres::ClientWrapper,
    projector: &str,
    version: u32,
    watermarks: &HashMap<TopicPartition, i64>,
) -> Result<(), tokio_postgres::Error> {
    if watermarks.is_empty() {
        return Ok(());
    }
    let version = version as i32;
    let update = client
        .prepare_cached(
            "UPDATE factline_projector_positions SET high_watermark = $5 \
             WHERE projector = $1 AND version = $2 AND topic = $3 AND partition = $4 \
               AND high_watermark IS DISTINCT FROM $5",
        )
        .await?;
    let params: Vec<[&(dyn ToSql + Sync); 5]> = watermarks
        .iter()
        .map(|((topic, partition), high)| {
            [
                &projector as &(dyn ToSql + Sync),
                &version,
                topic,
                partition,
                high,
            ]
        })
        .collect();
    futures::future::try_join_all(params.iter().map(|p| client.execute(&update, p))).await?;
    Ok(())
}

/// How often every held partition's high watermark is written again, moved or not: a row
/// rewritten meanwhile by hand (a position reset) shows the true lag again within this time.
const WATERMARKS_REFRESH_EVERY: Duration = Duration::from_secs(60);

/// The high watermarks this instance last recorded (see [`record_high_watermarks`]), so the
/// once-a-second housekeeping writes only those that moved or whose rows a commit wrote since:
/// none at rest, where a statement per held partition each second was most of PostgreSQL's
/// work (about 120 statements a second for the stack's seven projectors). Everything is
/// written again after an assignment change (another instance may have written the rows
/// meanwhile) and every [`WATERMARKS_REFRESH_EVERY`].
#[derive(Debug)]
pub struct RecordedWatermarks {
    recorded: HashMap<TopicPartition, i64>,
    assignment: u64,
    refresh_at: std::time::Instant,
}

impl RecordedWatermarks {
    /// Nothing recorded yet: the first housekeeping writes every held partition.
    pub fn new(now: std::time::Instant) -> RecordedWatermarks {
        RecordedWatermarks {
            recorded: HashMap::new(),
            assignment: 0,
            refresh_at: now,
        }
    }

    /// Of `current` (the held partitions' high watermarks), those to record now. `assignment`
    /// counts the rebalances seen ([`crate::runtime::consumer::RebalanceState::assignments`]).
    pub fn due(
        &mut self,
        current: HashMap<TopicPartition, i64>,
        assignment: u64,
        now: std::time::Instant,
    ) -> HashMap<TopicPartition, i64> {
        if assignment != self.assignment || now >= self.refresh_at {
            self.recorded.clear();
            self.assignment = assignment;
            self.refresh_at = now + WATERMARKS_REFRESH_EVERY;
        }
        current
            .into_iter()
            .filter(|(tp, high)| self.recorded.get(tp) != Some(high))
            .collect()
    }

    /// `written` is in PostgreSQL (or its row does not exist yet): not written again until it
    /// moves or a commit writes the row.
    pub fn recorded(&mut self, written: HashMap<TopicPartition, i64>) {
        self.recorded.extend(written);
    }

    /// A commit wrote the rows of `partitions` (creating those that did not exist, with the
    /// watermark known to the batch): their watermarks are due again.
    pub fn forget<'a>(&mut self, partitions: impl IntoIterator<Item = &'a TopicPartition>) {
        for tp in partitions {
            self.recorded.remove(tp);
        }
    }
}

/// Loads positions from a synchronous context (the Kafka rebalance callback) on a helper thread
/// with its own connection and runtime, bounded by `timeout`.
pub fn load_blocking(
    pg: tokio_postgres::Config,
    projector: String,
    version: u32,
    timeout: Duration,
) -> Result<HashMap<TopicPartition, i64>, String> {
    let handle = std::thread::Builder::new()
        .name("factline-positions".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let work = async {
                    let (client, connection) =
                        pg.connect(NoTls).await.map_err(|e| e.to_string())?;
                    let driver = tokio::spawn(connection);
                    let result = load(&client, &projector, version)
                        .await
                        .map_err(|e| e.to_string());
                    drop(client);
                    let _ = driver.await;
                    result
                };
                tokio::time::timeout(timeout, work)
                    .await
                    .map_err(|_| "timed out reading positions".to_owned())?
            })
        })
        .map_err(|e| e.to_string())?;
    handle
        .join()
        .map_err(|_| "positions thread panicked".to_owned())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn marks(pairs: &[(i32, i64)]) -> HashMap<TopicPartition, i64> {
        pairs
            .iter()
            .map(|(partition, high)| (("orders".to_owned(), *partition), *high))
            .collect()
    }

    #[test]
    fn only_moved_watermarks_are_written_again() {
        let start = Instant::now();
        let mut watermarks = RecordedWatermarks::new(start);
        let first = watermarks.due(marks(&[(0, 10), (1, 20)]), 1, start);
        assert_eq!(first, marks(&[(0, 10), (1, 20)]));
        watermarks.recorded(first);
        let at_rest = watermarks.due(
            marks(&[(0, 10), (1, 20)]),
            1,
            start + Duration::from_secs(1),
        );
        assert!(at_rest.is_empty(), "{at_rest:?}");
        let moved = watermarks.due(
            marks(&[(0, 10), (1, 25)]),
            1,
            start + Duration::from_secs(2),
        );
        assert_eq!(moved, marks(&[(1, 25)]));
        watermarks.recorded(moved);
        // a commit wrote partition 0's row: its watermark is written again, unmoved
        watermarks.forget([&("orders".to_owned(), 0)]);
        let committed = watermarks.due(
            marks(&[(0, 10), (1, 25)]),
            1,
            start + Duration::from_secs(3),
        );
        assert_eq!(committed, marks(&[(0, 10)]));
    }

    #[test]
    fn a_watermark_not_written_is_due_again() {
        let start = Instant::now();
        let mut watermarks = RecordedWatermarks::new(start);
        assert_eq!(watermarks.due(marks(&[(0, 10)]), 1, start).len(), 1);
        // the write failed: nothing recorded
        assert_eq!(
            watermarks.due(marks(&[(0, 10)]), 1, start + Duration::from_secs(1)),
            marks(&[(0, 10)])
        );
    }

    #[test]
    fn everything_is_written_again_after_a_rebalance_and_once_a_refresh_is_due() {
        let start = Instant::now();
        let mut watermarks = RecordedWatermarks::new(start);
        let all = marks(&[(0, 10), (1, 20)]);
        let first = watermarks.due(all.clone(), 1, start);
        watermarks.recorded(first);
        let after_rebalance = watermarks.due(all.clone(), 2, start + Duration::from_secs(1));
        assert_eq!(after_rebalance, all);
        watermarks.recorded(after_rebalance);
        let quiet = start + WATERMARKS_REFRESH_EVERY;
        assert!(watermarks.due(all.clone(), 2, quiet).is_empty());
        let refresh = start + Duration::from_secs(1) + WATERMARKS_REFRESH_EVERY;
        assert_eq!(watermarks.due(all.clone(), 2, refresh), all);
    }
}
