//! Error types at the runtime's boundaries: what a projection reports and why a run stops,
//! and [`chain`], the one way an error and its sources become a line of text.

use tokio_postgres::error::SqlState;

/// The cause of an error, kept whole for its source chain: any error type, or a message
/// (`String` and `&str` convert into it).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong while applying an event, and therefore what the runtime does next. The
/// cause is the error's [`source`](std::error::Error::source); [`chain`] renders both.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// Worth retrying (the database is unreachable, a serialization failure…): the batch is
    /// rolled back and retried with backoff; no record is skipped.
    #[error("transient failure")]
    Transient(#[source] Cause),
    /// Retrying cannot help (the event is malformed for this projection, a constraint rejects
    /// it): the record goes to the dead-letter topic and processing goes on.
    #[error("rejected by projection")]
    Permanent(#[source] Cause),
}

impl ProjectionError {
    /// A failure worth retrying, caused by `cause` (an error or a message).
    pub fn transient(cause: impl Into<Cause>) -> ProjectionError {
        ProjectionError::Transient(cause.into())
    }

    /// A rejection of the event, caused by `cause` (an error or a message).
    pub fn permanent(cause: impl Into<Cause>) -> ProjectionError {
        ProjectionError::Permanent(cause.into())
    }

    /// Whether the error is worth retrying.
    pub fn is_transient(&self) -> bool {
        matches!(self, ProjectionError::Transient(_))
    }
}

impl From<tokio_postgres::Error> for ProjectionError {
    fn from(error: tokio_postgres::Error) -> Self {
        if is_transient_pg(&error) {
            ProjectionError::Transient(Box::new(PgError(error)))
        } else {
            ProjectionError::Permanent(Box::new(PgError(error)))
        }
    }
}

/// A PostgreSQL error shown as the server's message and SQLSTATE ([`pg_message`]); the
/// client's error stays inside, reachable by downcasting.
#[derive(Debug, thiserror::Error)]
#[error("{}", pg_message(.0))]
pub struct PgError(pub tokio_postgres::Error);

/// An error and its sources as one line, `outer: inner: innermost`, for logs, health and
/// dead-letter headers. A source whose text the line already ends with (some errors print
/// their cause themselves) is not repeated.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
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
    #[error("migration {migration} of projector {projector} failed")]
    Migration {
        /// The projector name.
        projector: String,
        /// The migration id.
        migration: String,
        /// The store's error.
        #[source]
        source: Cause,
    },
    /// The Kafka client could not be created (bad properties).
    #[error("kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The PostgreSQL pool could not be created.
    #[error("postgresql pool")]
    Pool(#[source] Cause),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_names_every_cause_once() {
        let error = ProjectionError::permanent("total is not the sum of the lines");
        assert_eq!(
            chain(&error),
            "rejected by projection: total is not the sum of the lines"
        );
        assert!(!error.is_transient());
        let parse = serde_json::from_str::<u32>("x").unwrap_err();
        let error = ProjectionError::transient(parse);
        assert!(chain(&error).starts_with("transient failure: expected value"));
        assert!(error.is_transient());
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct SaysItsCause(#[source] std::io::Error);

    #[test]
    fn a_cause_already_printed_is_not_repeated() {
        let error = SaysItsCause(std::io::Error::other("disk full"));
        assert_eq!(chain(&error), "outer: disk full");
    }
}
