//! What makes the set-up or a stage fail. Each variant keeps its cause as `source()`, and its
//! message is the cause's message (plus context where the bench adds some), so a failed row's
//! reason in the table and in `results.json` reads as it always did.

use crate::es::EsBenchError;
use crate::kafka::KafkaBenchError;
use crate::load::LoadError;
use crate::pg::PgBenchError;
use crate::services::ServiceError;

/// A failure of the set-up or of one measurement.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Elasticsearch does not answer, so the run does not start.
    #[error("elasticsearch does not answer at {url}")]
    EsUnreachable {
        /// The URL pinged.
        url: String,
    },
    /// Kafka: the client, topic creation, encoding or delivery.
    #[error("{0}")]
    Kafka(#[from] KafkaBenchError),
    /// PostgreSQL: the database, or a projector that did not catch up.
    #[error("{0}")]
    Postgres(#[from] PgBenchError),
    /// Elasticsearch: a request failed or was refused.
    #[error("{0}")]
    Elasticsearch(#[from] EsBenchError),
    /// HTTP load against a service: connecting or exchanging requests.
    #[error("{0}")]
    Http(#[from] LoadError),
    /// A service process: no free port, not built, cannot be spawned, never healthy.
    #[error("{0}")]
    Service(#[from] ServiceError),
    /// An event could not be decoded through the registry codec.
    #[error("{0}")]
    Decode(#[from] factline_schemas::CodecError),
    /// A projector did not reach the end of its backlog; its log tail says why.
    #[error("{source}; log tail: {tail}")]
    CatchUp {
        /// Why waiting ended.
        #[source]
        source: PgBenchError,
        /// The projector's last log lines.
        tail: String,
    },
}
