//! [`SearchSink`]: a [`SearchProjection`]'s batches applied to Elasticsearch (positions are
//! stored by the runtime, in PostgreSQL, once `apply` returns).
//!
//! One batch, as the runtime hands it over (fenced, without ignored types, poison or in-batch
//! copies):
//! 1. the documents each event targets are collected; an event the projection rejects there is
//!    returned as rejected;
//! 2. **write** ([`super::write`]): read, fold in memory, conditional writes, tombstones before
//!    deletes, 409 re-read, refused documents retried one event at a time;
//! 3. **join** ([`super::join`]), if the projection has one: enrichment of main documents from
//!    side documents read after the write;
//! 4. the main index is refreshed (a stored position promises readers that the documents are
//!    searchable: read-your-writes); the runtime then dead-letters the rejected events and
//!    stores the positions and dead-letter rows in ONE PostgreSQL transaction.
//!
//! A crash anywhere re-applies the batch: harmless, since writes are idempotent (applied ids)
//! and order-safe (the projection's merge is commutative). Ordering never relies on Kafka
//! offsets, so it holds when a document is fed from several partitions or topics and when the
//! index is rebuilt.

use std::time::Duration;

use deadpool_postgres::Object;
use tokio_postgres::Transaction;

use super::client::{EsClient, EsError};
use super::index::Indices;
use super::write::Writer;
use super::SearchProjection;
use crate::bookkeeping::{self, BootstrapError, Liveness, Registration};
use crate::config::{Config, ConfigError};
use crate::error::ProjectionError;
use crate::runtime::sink::{Applied, Batch, Input, Sink, SinkSpec};

/// The events of a batch at most, by default. Every batch ends in a refresh of the main index,
/// whose cost grows with the index (measured on the local Elasticsearch: 25–250 ms for
/// 4k–16k documents, whether or not anything changed), so while catching up larger batches
/// mean fewer refreshes per event; a batch's requests stay bounded
/// ([`super::store::BULK_MAX_OPS`] per `_bulk`, [`super::store::MGET_MAX_DOCS`] per
/// `_mget`).
pub const BATCH_MAX: usize = 10_000;

/// A [`SearchProjection`] writing to Elasticsearch.
#[derive(Debug, Clone)]
pub struct SearchSink<P> {
    projection: P,
    spec: SinkSpec,
    client: EsClient,
    indices: Indices,
}

/// A batch of the search sink failed for a reason worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum SearchSinkError {
    /// Elasticsearch is unavailable or refused a request as a whole.
    #[error(transparent)]
    Elasticsearch(#[from] EsError),
    /// PostgreSQL failed (the swap).
    #[error("postgresql failed")]
    Postgres(#[from] tokio_postgres::Error),
    /// The projection failed transiently.
    #[error(transparent)]
    Projection(ProjectionError),
    /// Conflicting writers kept changing documents for [`MAX_ROUNDS`] rounds.
    #[error("{documents} documents kept changing under concurrent writers")]
    KeptChanging {
        /// How many were still pending.
        documents: usize,
    },
    /// One write of a `_bulk` request failed transiently (429, 5xx).
    #[error("{action} {index}/{id} failed: {message}")]
    Item {
        /// What was written: `writing`, `writing the tombstone of`, `enriching`.
        action: &'static str,
        /// The index's base name.
        index: String,
        /// The document id.
        id: String,
        /// What Elasticsearch said.
        message: String,
    },
    /// Elasticsearch answered fewer `_bulk` items than operations sent.
    #[error("_bulk answered too few items")]
    ShortBulk,
}

/// A document Elasticsearch refused for good: its event is dead-lettered.
#[derive(Debug, thiserror::Error)]
#[error("elasticsearch rejected document {index}/{id}: {message}")]
pub struct DocumentRejected {
    /// The index's base name.
    pub index: String,
    /// The document id.
    pub id: String,
    /// What Elasticsearch said.
    pub message: String,
}

impl<P: SearchProjection> SearchSink<P> {
    /// A sink for `projection` on the cluster at `ELASTICSEARCH_URL`, index names prefixed with
    /// `PROJECTOR_INDEX_PREFIX` (default: the topic prefix).
    pub fn new(projection: P, config: &Config) -> Result<SearchSink<P>, ConfigError> {
        let url = config
            .elasticsearch_url
            .as_deref()
            .ok_or(ConfigError::Missing("ELASTICSEARCH_URL"))?;
        let client = EsClient::new(url).map_err(|e| ConfigError::Invalid {
            name: "ELASTICSEARCH_URL",
            reason: e.to_string(),
        })?;
        let indices = Indices::new(
            config.index_prefix(),
            projection.version(),
            projection.indices(),
        );
        if indices.main_base().is_empty() {
            return Err(ConfigError::Invalid {
                name: "indices",
                reason: format!("search projection {} declares no index", projection.name()),
            });
        }
        let spec = SinkSpec {
            kind: "elasticsearch",
            name: projection.name().to_owned(),
            version: projection.version(),
            topics: projection.topics(),
            lead_topics: projection.join().map(|j| j.side_topics).unwrap_or_default(),
            event_types: projection.event_types(),
            read_models: vec![indices.alias()],
            // larger and longer: every batch ends in an index refresh
            default_batch_max: BATCH_MAX,
            default_batch_wait: Duration::from_millis(100),
            input: Input::Events,
            sequenced: false,
            opens_personal_data: true,
        };
        Ok(SearchSink {
            projection,
            spec,
            client,
            indices,
        })
    }

    /// The versioned indices.
    pub fn indices(&self) -> &Indices {
        &self.indices
    }

    /// The Elasticsearch client.
    pub fn client(&self) -> &EsClient {
        &self.client
    }

    fn writer(&self) -> Writer<'_, P, EsClient> {
        Writer {
            projection: &self.projection,
            indices: &self.indices,
            store: &self.client,
        }
    }
}

impl<P: SearchProjection> Sink for SearchSink<P> {
    type Error = SearchSinkError;

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
            &[],
            &[],
            self.projection.declarative_config(),
        )
        .await?;
        if matches!(liveness, Liveness::Superseded { .. }) {
            return Ok(liveness);
        }
        self.indices
            .create(&self.client)
            .await
            .map_err(|e| match e {
                EsError::Transient(_) => BootstrapError::Transient(Box::new(e)),
                EsError::Permanent(_) | EsError::BulkRejected { .. } => BootstrapError::Migration {
                    migration: "create indices".into(),
                    source: Box::new(e),
                },
            })?;
        if liveness == Liveness::Live {
            self.indices
                .point_alias(&self.client)
                .await
                .map_err(|e| BootstrapError::Transient(Box::new(e)))?;
        }
        Ok(liveness)
    }

    /// Steps 1 to 4 of the module docs; the runtime's transaction is not used (documents are
    /// written idempotently, then the runtime stores the positions).
    async fn apply(
        &self,
        _tx: &mut Transaction<'_>,
        batch: &Batch<'_>,
    ) -> Result<Applied, SearchSinkError> {
        let (applied, main_written) = self.writer().apply(batch.events()).await?;
        if main_written {
            // a stored position promises readers that the documents are searchable
            self.client
                .refresh(&self.indices.index(self.indices.main_base()))
                .await?;
        }
        Ok(applied)
    }

    async fn swap(&self, client: &mut Object, previous: u32) -> Result<bool, SearchSinkError> {
        let swapped = bookkeeping::swap_live_with(
            client,
            self.projection.name(),
            self.projection.version(),
            &[],
            || async {
                self.client
                    .refresh(&self.indices.index(self.indices.main_base()))
                    .await?;
                self.indices.point_alias(&self.client).await?;
                Ok::<(), SearchSinkError>(())
            },
        )
        .await?;
        if swapped && previous != self.projection.version() {
            if let Err(error) = self.indices.delete_version(&self.client, previous).await {
                tracing::warn!(%error, previous, "cannot delete the retired indices");
            }
        }
        Ok(swapped)
    }

    fn stops_when_retired(&self) -> bool {
        true
    }

    async fn retired(&self) {
        if let Err(error) = self
            .indices
            .delete_version(&self.client, self.projection.version())
            .await
        {
            tracing::warn!(%error, "cannot delete this retired version's indices");
        }
    }
}

/// Runs a search projection until `shutdown` resolves (see [`crate::run`]).
pub async fn run_search<P, S>(
    config: Config,
    projection: P,
    shutdown: S,
) -> Result<(), crate::RunError>
where
    P: SearchProjection,
    S: std::future::Future<Output = ()> + Send + 'static,
{
    let sink = SearchSink::new(projection, &config)?;
    crate::runtime::run::run_sink(config, sink, shutdown).await
}
