//! Error types at the runtime's boundaries: what a projection reports and why a run stops.

use tokio_postgres::error::SqlState;

/// What went wrong while applying an event, and therefore what the runtime does next.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// Worth retrying (the database is unreachable, a serialization failure…): the batch is
    /// rolled back and retried with backoff; no record is skipped.
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying cannot help (the event is malformed for this projection, a constraint rejects
    /// it): the record goes to the dead-letter topic and processing goes on.
    #[error("rejected: {0}")]
    Permanent(String),
}

impl ProjectionError {
    /// Whether the error is worth retrying.
    pub fn is_transient(&self) -> bool {
        matches!(self, ProjectionError::Transient(_))
    }
}

impl From<tokio_postgres::Error> for ProjectionError {
    fn from(error: tokio_postgres::Error) -> Self {
        if is_transient_pg(&error) {
            ProjectionError::Transient(error.to_string())
        } else {
            ProjectionError::Permanent(pg_message(&error))
        }
    }
}

/// Whether a PostgreSQL error is worth retrying: connection problems, server shutdown,
/// serialization failures, deadlocks and resource exhaustion are; data and constraint errors
/// are not. Class 42 (syntax error, undefined table or column, untyped parameter…) is a bug
/// of the projection or a missing migration, not a bad event: it is retried too, so the
/// projector stalls visibly (health `retrying`, retry metrics) instead of dead-lettering the
/// whole log.
pub fn is_transient_pg(error: &tokio_postgres::Error) -> bool {
    match error.code() {
        None => true, // I/O, closed connection, timeouts: no SQLSTATE at all
        Some(code) => {
            let class = &code.code()[..2];
            matches!(class, "08" | "40" | "42" | "53" | "57" | "58" | "55")
                || *code == SqlState::LOCK_NOT_AVAILABLE
        }
    }
}

/// The server's message of a PostgreSQL error (with its SQLSTATE) or the client's description.
pub fn pg_message(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

/// Why [`crate::run`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// A migration of the projection failed permanently (bad SQL).
    #[error("migration {migration} of projector {projector} failed: {message}")]
    Migration {
        /// The projector name.
        projector: String,
        /// The migration id.
        migration: String,
        /// The database's message.
        message: String,
    },
    /// The Kafka client could not be created (bad properties).
    #[error("kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The PostgreSQL pool could not be created.
    #[error("postgresql pool: {0}")]
    Pool(String),
    /// The HTTP listener could not be bound.
    #[error("http listener on {addr}: {source}")]
    Http {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The instance can no longer be sure to be the only member with its `group.instance.id`
    /// (its slot lock was lost, or the broker fenced it), or no slot could be claimed: the
    /// process stops so that a restart joins cleanly.
    #[error("group membership: {0}")]
    Membership(String),
}
