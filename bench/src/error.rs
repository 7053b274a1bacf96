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
    /// The key store that encrypts the sealed backlog cannot be set up.
    #[error("key store: {0}")]
    KeyStore(String),
    /// The stack at rest could not be started.
    #[error("the stack at rest: {0}")]
    Idle(String),
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

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_wrapped_error_reads_as_its_cause_and_keeps_the_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "in use");
        let error = BenchError::from(ServiceError::Port(io));
        assert_eq!(error.to_string(), "no free port: in use");
        let service = error
            .source()
            .and_then(|s| s.downcast_ref::<ServiceError>());
        assert!(matches!(service, Some(ServiceError::Port(_))));
        let io = service.and_then(|s| s.source());
        assert_eq!(io.map(ToString::to_string).as_deref(), Some("in use"));
    }

    #[test]
    fn a_projector_that_did_not_catch_up_shows_its_log_tail() {
        let error = BenchError::CatchUp {
            source: PgBenchError::NotCaughtUp {
                projector: "order_summary".into(),
                seconds: 600,
                done: 10,
                total: 20,
            },
            tail: "last line".into(),
        };
        assert_eq!(
            error.to_string(),
            "order_summary did not catch up (10 of 20 events applied; stuck, exited or over 600 \
             s); log tail: last line"
        );
        assert!(error
            .source()
            .is_some_and(|s| s.downcast_ref::<PgBenchError>().is_some()));
    }
}
