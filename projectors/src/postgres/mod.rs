//! The seam between the shared consume loop and a read-model store: [`Sink`], implemented by
//! [`PostgresSink`] (a [`Projection`] applied in one PostgreSQL transaction per batch) and by
//! [`crate::search::SearchSink`] (Elasticsearch documents, positions in PostgreSQL).
//!
//! The runner owns everything else: consumer, rebalances, batching, decoding, retries with
//! backoff, dead-letter producer, metrics, health, progress and shutdown. Positions always live
//! in PostgreSQL (`factline_projector_positions`), whatever the sink, so the read API reads
//! every projector's position in one place.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use deadpool_postgres::Object;

use crate::batch::{self, Item, Outcome, TransientBatchError};
use crate::bookkeeping::{self, BootstrapError, Liveness, Registration};
use crate::config::Config;
use crate::dead_letter::DeadLetterWriter;
use crate::positions::TopicPartition;
use crate::projection::Projection;

/// A read-model store the runner commits decoded batches to.
pub trait Sink: Send + Sync + 'static {
    /// `postgres` or `elasticsearch` (recorded in `factline_projector_rebuilds.sink`).
    fn kind(&self) -> &'static str;

    /// The projector name (consumer group, checkpoint key, metrics label).
    fn name(&self) -> &str;

    /// The read model's version.
    fn version(&self) -> u32;

    /// The topics consumed, without prefix.
    fn topics(&self) -> Vec<String>;

    /// The event types applied.
    fn event_types(&self) -> Vec<String>;

    /// The names readers query: PostgreSQL views or Elasticsearch aliases (with prefix).
    fn read_models(&self) -> Vec<String>;

    /// How long a batch waits for more records unless `PROJECTOR_BATCH_MAX_WAIT_MS` says.
    fn default_batch_wait(&self) -> Duration;

    /// Prepares the store and registers this version (`factline_projector_rebuilds`); returns
    /// whether it serves the read models. Retried with backoff on a transient error.
    fn bootstrap(
        &self,
        client: &mut Object,
        registration: &Registration,
    ) -> impl Future<Output = Result<Liveness, BootstrapError>> + Send;

    /// Applies a batch and stores its positions (and dead-letter rows) only once the read
    /// model holds the batch. On error the runner retries the same batch with backoff, so a
    /// commit must be safe to repeat.
    fn commit(
        &self,
        client: &mut Object,
        dead_letters: &DeadLetterWriter,
        items: &[Item],
        high_watermarks: &HashMap<TopicPartition, i64>,
    ) -> impl Future<Output = Result<Outcome, TransientBatchError>> + Send;

    /// Makes this caught-up version the live one (atomically for readers) and retires
    /// `previous`. Returns whether it swapped (false: a newer version is live already).
    fn swap(
        &self,
        client: &mut Object,
        previous: u32,
    ) -> impl Future<Output = Result<bool, String>> + Send;

    /// Whether a version retired by a newer one stops consuming (its storage is dropped).
    /// PostgreSQL keeps retired tables up to date; Elasticsearch drops the retired indices.
    fn stops_when_retired(&self) -> bool {
        false
    }

    /// Called once when this version finds itself retired and stops: clean up its storage.
    fn retired(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// A [`Projection`] writing to PostgreSQL: migrations and views at bootstrap, one transaction
/// per batch holding the read-model change, the applied event ids, the dead-letter rows and the
/// positions.
///
/// # The dedupe window
///
/// An applied event id is remembered in `factline_projector_applied` for
/// `PROJECTOR_DEDUPE_WINDOW_SECS` (default 7 days). After a committed batch, when a prune is
/// due (once a minute, and after every batch while a backlog remains), up to
/// [`bookkeeping::PRUNE_CHUNK`] older rows of this projector are deleted (of every version),
/// and as many rows of its retired versions, whatever their age (a retired read model is never
/// served again). So the table holds about one window of the live version's events.
///
/// What a duplicate does:
/// - the same Kafka record delivered again (a rebalance, a restart, a crash before the commit)
///   is never applied twice, whatever its age: the stored positions fence it;
/// - the same event re-produced at another offset (a producer retry, a client retrying with
///   its `Idempotency-Key`, a replay) within the window is skipped;
/// - such a duplicate older than the window is applied again. The replay contract makes that
///   harmless for a projection whose `apply` is idempotent and order-safe (all the sample
///   ones); a declarative `upsert` without a `newer` guard writes its values again, and a row
///   deleted since is recreated by an older duplicate of its upsert.
#[derive(Debug)]
pub struct PostgresSink<P> {
    projection: P,
    dedupe_window: Duration,
    prune: std::sync::Mutex<PruneState>,
}

/// When the next prune of applied ids is due.
#[derive(Debug, Clone, Copy)]
struct PruneState {
    next_at: std::time::Instant,
    backlog: bool,
}

/// How often applied ids are pruned when there is no backlog.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

impl<P: Projection> PostgresSink<P> {
    /// Wraps a projection.
    pub fn new(projection: P, config: &Config) -> PostgresSink<P> {
        PostgresSink {
            projection,
            dedupe_window: Duration::from_secs(config.dedupe_window_secs),
            prune: std::sync::Mutex::new(PruneState {
                next_at: std::time::Instant::now(),
                backlog: false,
            }),
        }
    }

    /// Prunes applied ids older than the window if a prune is due. A failure is logged only:
    /// the batch is committed already, and the next prune tries again.
    async fn prune_if_due(&self, client: &Object) {
        let now = std::time::Instant::now();
        let due = self
            .prune
            .lock()
            .map(|state| state.backlog || now >= state.next_at)
            .unwrap_or(true);
        if !due {
            return;
        }
        let projector = self.projection.name();
        let result = bookkeeping::prune_applied(&***client, projector, self.dedupe_window).await;
        let backlog = match result {
            Ok(backlog) => backlog,
            Err(error) => {
                tracing::warn!(projector, error = %crate::error::pg_message(&error),
                    "cannot prune applied ids");
                false
            }
        };
        if let Ok(mut state) = self.prune.lock() {
            *state = PruneState {
                next_at: now + PRUNE_INTERVAL,
                backlog,
            };
        }
    }
}

impl<P: Projection> Sink for PostgresSink<P> {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    /// Short: a PostgreSQL commit is cheap, and the wait is most of a quiet stream's latency.
    fn default_batch_wait(&self) -> Duration {
        Duration::from_millis(10)
    }

    fn name(&self) -> &str {
        self.projection.name()
    }

    fn version(&self) -> u32 {
        self.projection.version()
    }

    fn topics(&self) -> Vec<String> {
        self.projection.topics()
    }

    fn event_types(&self) -> Vec<String> {
        self.projection.event_types()
    }

    fn read_models(&self) -> Vec<String> {
        self.projection.views()
    }

    async fn bootstrap(
        &self,
        client: &mut Object,
        registration: &Registration,
    ) -> Result<Liveness, BootstrapError> {
        bookkeeping::bootstrap(
            client,
            registration,
            &self.projection.migrations(),
            &self.projection.views(),
            self.projection.declarative_config(),
        )
        .await
    }

    async fn commit(
        &self,
        client: &mut Object,
        dead_letters: &DeadLetterWriter,
        items: &[Item],
        high_watermarks: &HashMap<TopicPartition, i64>,
    ) -> Result<Outcome, TransientBatchError> {
        let outcome = batch::commit(
            &self.projection,
            dead_letters,
            client,
            items,
            high_watermarks,
        )
        .await?;
        self.prune_if_due(client).await;
        Ok(outcome)
    }

    async fn swap(&self, client: &mut Object, _previous: u32) -> Result<bool, String> {
        bookkeeping::swap_live(
            client,
            self.projection.name(),
            self.projection.version(),
            &self.projection.views(),
        )
        .await
        .map_err(|e| e.to_string())
    }
}
