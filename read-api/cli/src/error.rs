//! The CLI's one error type and its exit codes: every failure is one lowercase line on stderr
//! and a code a script can branch on.

/// Exit code: everything worked (and, for `status`, everything is healthy).
pub const EXIT_OK: u8 = 0;
/// Exit code: the command ran but found a problem: `status` saw something unhealthy, `send` or
/// `dlq redrive` had items that failed.
pub const EXIT_PROBLEM: u8 = 1;
/// Exit code: the command line is wrong (clap's own code).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: a setting is missing or invalid.
pub const EXIT_CONFIG: u8 = 3;
/// Exit code: a service (read API, write side, PostgreSQL, Kafka, registry) cannot be reached.
pub const EXIT_UNREACHABLE: u8 = 4;
/// Exit code: a service refused the request or answered something unexpected.
pub const EXIT_REFUSED: u8 = 5;
/// Exit code: what was asked for does not exist (event, dead letter, projector, rebuild).
pub const EXIT_NOT_FOUND: u8 = 6;
/// Exit code: a wait (`--timeout`) ended before what was awaited happened.
pub const EXIT_TIMEOUT: u8 = 7;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A setting is missing or invalid.
    #[error("{0}")]
    Config(String),
    /// A service cannot be reached.
    #[error("cannot reach {service}: {message}")]
    Unreachable {
        /// Which service, with its address.
        service: String,
        /// The client's message.
        message: String,
    },
    /// A service refused the request.
    #[error("{service} answered {status}: {message}")]
    Refused {
        /// Which service.
        service: String,
        /// The HTTP status, or the kind of failure.
        status: String,
        /// The service's message.
        message: String,
    },
    /// Something asked for does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A wait ended first.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A local file cannot be read.
    #[error("cannot read {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// The system's message.
        message: String,
    },
}

impl CliError {
    /// The process exit code of this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) => EXIT_CONFIG,
            CliError::File { .. } => EXIT_CONFIG,
            CliError::Unreachable { .. } => EXIT_UNREACHABLE,
            CliError::Refused { .. } => EXIT_REFUSED,
            CliError::NotFound(_) => EXIT_NOT_FOUND,
            CliError::Timeout(_) => EXIT_TIMEOUT,
        }
    }

    /// A PostgreSQL failure: unreachable when the connection failed, refused otherwise.
    pub fn postgres(error: tokio_postgres::Error) -> CliError {
        let message = match error.as_db_error() {
            Some(db) => db.message().to_owned(),
            None => error.to_string(),
        };
        if error.is_closed() || error.as_db_error().is_none() {
            CliError::Unreachable {
                service: "postgresql (DATABASE_URL)".into(),
                message,
            }
        } else {
            CliError::Refused {
                service: "postgresql".into(),
                status: "an error".into(),
                message,
            }
        }
    }

    /// A Kafka failure.
    pub fn kafka(what: &str, error: impl std::fmt::Display) -> CliError {
        CliError::Unreachable {
            service: format!("kafka (KAFKA_BROKERS) {what}"),
            message: error.to_string(),
        }
    }
}

/// The help text's table of exit codes.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (status: everything healthy)
  1  a problem was found: status saw something unhealthy; send or dlq redrive had failures
  2  the command line is wrong
  3  a setting is missing or invalid (or a file cannot be read)
  4  a service cannot be reached (read API, write side, PostgreSQL, Kafka, registry)
  5  a service refused the request or answered something unexpected
  6  not found (event, dead letter, projector, rebuild)
  7  a --timeout ended first";
