//! `factline`, the operator's command line: what every projector is doing (`status`), the
//! event viewer (`events search|tail|show`), dead letters (`dlq list|show|redrive`), a
//! rebuild's progress (`rebuild watch`), bulk sends (`send`), replays from the event
//! archive (`replay`) and the key store's erasures and lost keys (`keys`). It talks to the read API and
//! the write side over HTTP, and for dead letters to PostgreSQL and Kafka, with the same
//! environment variables as the services ([`config`]). Every failure is one line on stderr and
//! a documented exit code ([`error`]).

pub mod config;
pub mod database;
pub mod dlq;
pub mod error;
pub mod events;
pub mod http;
pub mod keys;
pub mod output;
pub mod progress;
pub mod rebuild;
pub mod rebuild_feed;
pub mod replay;
pub mod send;
pub mod status;

use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{Overrides, Settings};
use crate::error::{CliError, EXIT_OK};
use crate::output::Format;

const AFTER_HELP: &str = "\
Settings come from the services' environment variables (READ_API_ADDR, WRITE_SIDE_ADDR,
DATABASE_URL, KAFKA_BROKERS, KAFKA_PROPERTY_*, SCHEMA_REGISTRY_URL; full URLs in
FACTLINE_READ_API_URL and FACTLINE_WRITE_SIDE_URL; bearer keys in FACTLINE_READ_API_KEY and
FACTLINE_WRITE_SIDE_KEY), with the defaults `make up` uses; the flags override them.";

/// The operator's command line for factline.
#[derive(Debug, Parser)]
#[command(name = "factline", version, after_help = format!("{AFTER_HELP}\n\n{}", error::EXIT_CODES_HELP))]
pub struct Cli {
    /// Where the services are
    #[command(flatten)]
    pub overrides: Overrides,
    /// Output: an aligned table for people, or JSON for scripts
    #[arg(long, short, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// The command
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every projector and version: state, lag, rebuild progress, dead letters, health
    #[command(after_help = status::UNHEALTHY_HELP)]
    Status(status::Thresholds),
    /// Search, follow and inspect the events of the log (the read API's event viewer)
    #[command(subcommand)]
    Events(EventsCommand),
    /// Dead letters: list them, inspect one, redrive them after a fix
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Rebuilds of a projector
    #[command(subcommand)]
    Rebuild(RebuildCommand),
    /// Send commands from an NDJSON file through the write side's batch endpoint
    Send(send::Options),
    /// Re-send archived records of a topic, past Kafka's retention (dry run unless --yes)
    #[command(long_about = replay::HELP)]
    Replay(replay::Options),
    /// Recreate a topic's archived history in an empty topic, e.g. on a new cluster (dry run
    /// unless --yes)
    Restore(replay::RestoreOptions),
    /// The key store: erasure records, lost data keys
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// `keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Erasure records (subject, time, destroyed data key; no personal data), newest first
    Erasures {
        /// Only this data subject's (as the key store names it: the topic prefix, if any,
        /// then the customer id)
        #[arg(long)]
        subject: Option<String>,
        /// At most this many
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Declare data keys lost, so their values read as the placeholder (dry run unless --yes)
    #[command(long_about = keys::LOST_HELP)]
    Lost(keys::LostOptions),
}

/// `events …`.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Events matching the filters, newest first
    Search {
        /// The filters
        #[command(flatten)]
        filters: events::Filters,
        /// At most this many events
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Print the latest events, then every new one as it arrives (Ctrl-C stops)
    Tail {
        /// The filters
        #[command(flatten)]
        filters: events::Filters,
        /// How many of the latest events to print first
        #[arg(long, short = 'n', default_value_t = 10)]
        last: usize,
        /// Milliseconds between two polls
        #[arg(long, default_value_t = 1000, value_name = "MS")]
        every_ms: u64,
        /// Stop after printing this many events
        #[arg(long, value_name = "EVENTS")]
        max_events: Option<usize>,
    },
    /// One event with its payload, headers and what every projector did with it
    Show {
        /// The event id
        #[arg(required_unless_present = "correlation_id")]
        event_id: Option<String>,
        /// Instead: every event of this correlation id, oldest first
        #[arg(long, conflicts_with = "event_id")]
        correlation_id: Option<String>,
    },
}

/// `dlq …`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Dead letters by record, projector and error (pending ones unless --all)
    List {
        /// Which ones
        #[command(flatten)]
        selection: dlq::store::Selection,
        /// Include those already redriven
        #[arg(long)]
        all: bool,
    },
    /// One dead-lettered record: its dead letters, headers and decoded payload
    Show {
        /// TOPIC:PARTITION:OFFSET, as `dlq list` shows it
        id: dlq::store::RecordId,
    },
    /// Re-deliver dead-lettered records to their projectors after a fix (dry run unless --yes)
    #[command(long_about = REDRIVE_HELP)]
    Redrive(dlq::redrive::Options),
}

const REDRIVE_HELP: &str = "\
Re-deliver dead-lettered records to their projectors after a fix. A dry run unless --yes: it
prints how many records would be sent and whose dead letters they clear.

Each record is read back from its topic and produced again to the same partition, unchanged
(same key, value, headers and event_id) plus a `redriven_from` header. Projectors that applied
it skip the copy by its event id; those that dead-lettered it apply it now. Redriven dead
letters are recorded, so a second redrive sends nothing. Records written longer ago than the
projectors' dedupe window (PROJECTOR_DEDUPE_WINDOW_SECS, 7 days by default, less an hour) are
left out unless --past-dedupe-window: projectors that applied them may no longer remember their
event ids.";

/// `rebuild …`.
#[derive(Debug, Subcommand)]
pub enum RebuildCommand {
    /// Follow a rebuild until the swap: events done, total, ETA
    Watch {
        /// The projector
        name: String,
        /// The version to watch (default: the one building)
        #[arg(long)]
        version: Option<i64>,
        /// Milliseconds between two polls
        #[arg(long, default_value_t = 1000, value_name = "MS")]
        every_ms: u64,
        /// Give up after this many seconds (exit code 7)
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
    },
}

/// Runs a parsed command line; returns the exit code.
pub async fn run(cli: Cli, settings: Settings) -> Result<u8, CliError> {
    let format = cli.output;
    let read_api = || {
        http::Service::new(
            "read API",
            &settings.read_api,
            settings.read_api_key.clone(),
        )
    };
    match cli.command {
        Command::Status(limits) => status::run(&read_api(), &limits, format).await,
        Command::Events(EventsCommand::Search { filters, limit }) => {
            events::search(&read_api(), &filters, limit, format).await?;
            Ok(EXIT_OK)
        }
        Command::Events(EventsCommand::Tail {
            filters,
            last,
            every_ms,
            max_events,
        }) => {
            let every = Duration::from_millis(every_ms.max(50));
            events::tail(&read_api(), &filters, last, every, max_events, format).await?;
            Ok(EXIT_OK)
        }
        Command::Events(EventsCommand::Show {
            event_id,
            correlation_id,
        }) => {
            events::show(
                &read_api(),
                event_id.as_deref(),
                correlation_id.as_deref(),
                format,
            )
            .await?;
            Ok(EXIT_OK)
        }
        Command::Dlq(DlqCommand::List { selection, all }) => {
            dlq::list(&settings, &selection, all, format).await?;
            Ok(EXIT_OK)
        }
        Command::Dlq(DlqCommand::Show { id }) => {
            dlq::show(&settings, &id, format).await?;
            Ok(EXIT_OK)
        }
        Command::Dlq(DlqCommand::Redrive(options)) => {
            dlq::redrive::run(&settings, &options, format).await
        }
        Command::Rebuild(RebuildCommand::Watch {
            name,
            version,
            every_ms,
            timeout,
        }) => {
            let every = Duration::from_millis(every_ms.max(50));
            let timeout = timeout.map(Duration::from_secs);
            rebuild::watch(&read_api(), &name, version, every, timeout, format).await?;
            Ok(EXIT_OK)
        }
        Command::Replay(options) => replay::run(&settings, &options, format).await,
        Command::Restore(options) => replay::run(&settings, &options.to_replay(), format).await,
        Command::Keys(KeysCommand::Erasures { subject, limit }) => {
            keys::list(&settings, subject.as_deref(), limit, format).await?;
            Ok(EXIT_OK)
        }
        Command::Keys(KeysCommand::Lost(options)) => keys::lost(&settings, &options, format).await,
        Command::Send(options) => {
            let write_side = http::Service::new(
                "write side",
                &settings.write_side,
                settings.write_side_key.clone(),
            );
            send::run(&write_side, &options, format).await
        }
    }
}
