//! The PostgreSQL sink: [`PostgresSink`] applies a [`Projection`] inside the runtime's batch
//! transaction, so the read-model change, the applied event ids, the dead-letter rows and the
//! positions commit together.

mod applied_ids;
mod apply;

pub use applied_ids::{AppliedIds, APPLIED_IDS_MAX};

use std::time::Duration;

use deadpool_postgres::Object;
use tokio_postgres::Transaction;

use crate::bookkeeping::{self, BootstrapError, Liveness, Registration};
use crate::config::Config;
use crate::error::ProjectionError;
use crate::projection::Projection;
use crate::runtime::sink::{Applied, Batch, Input, Sink, SinkSpec};

/// A batch of the PostgreSQL sink failed for a reason worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum PostgresSinkError {
    /// A statement of the sink's own (applied ids, savepoints, the swap) failed.
    #[error("postgresql failed")]
    Postgres(#[from] tokio_postgres::Error),
    /// The projection failed transiently.
    #[error(transparent)]
    Projection(ProjectionError),
}

/// A [`Projection`] writing to PostgreSQL: migrations and views at bootstrap, its changes and
/// the applied event ids in the runtime's batch transaction.
///
/// # The dedupe window
///
/// Unless the projection remembers applied ids in its own rows
/// ([`Projection::applied_ids_in_rows`]), an applied event id is remembered in
/// `factline_projector_applied` for
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
    spec: SinkSpec,
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
        let spec = SinkSpec {
            kind: "postgres",
            name: projection.name().to_owned(),
            version: projection.version(),
            topics: projection.topics(),
            lead_topics: Vec::new(),
            event_types: projection.event_types(),
            read_models: projection.views(),
            // short: a PostgreSQL commit is cheap, and the wait is most of a quiet stream's
            // latency
            default_batch_max: crate::runtime::sink::DEFAULT_BATCH_MAX,
            default_batch_wait: Duration::from_millis(10),
            input: Input::Events,
            sequenced: projection.sequenced_dead_letters(),
            opens_personal_data: projection.reads_personal_data(),
        };
        PostgresSink {
            projection,
            spec,
            dedupe_window: Duration::from_secs(config.dedupe_window_secs),
            prune: std::sync::Mutex::new(PruneState {
                next_at: std::time::Instant::now(),
                backlog: false,
            }),
        }
    }
}

impl<P: Projection> Sink for PostgresSink<P> {
    type Error = PostgresSinkError;

    fn spec(&self) -> &SinkSpec {
        &self.spec
    }

    async fn bootstrap(
        &self,
        client: &mut Object,
        registration: &Registration,
    ) -> Result<Liveness, BootstrapError> {
        let liveness = bookkeeping::bootstrap(
            client,
            registration,
            &self.projection.migrations(),
            &self.projection.views(),
            self.projection.declarative_config(),
        )
        .await?;
        bookkeeping::record_applied_ids_in_rows(
            &***client,
            registration,
            self.projection.applied_ids_in_rows(),
        )
        .await?;
        Ok(liveness)
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'_>,
        batch: &Batch<'_>,
    ) -> Result<Applied, PostgresSinkError> {
        apply::apply(&self.projection, tx, batch.events()).await
    }

    /// Prunes applied ids older than the window if a prune is due. A failure is logged only:
    /// the batch is committed already, and the next prune tries again.
    async fn committed(&self, client: &Object) {
        let now = std::time::Instant::now();
        let due = self
            .prune
            .lock()
            .map(|state| state.backlog || now >= state.next_at)
            .unwrap_or(true);
        if !due {
            return;
        }
        let projector = self.spec.name.as_str();
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

    async fn swap(&self, client: &mut Object, _previous: u32) -> Result<bool, PostgresSinkError> {
        bookkeeping::swap_live(
            client,
            &self.spec.name,
            self.spec.version,
            &self.projection.views(),
        )
        .await
    }
}
