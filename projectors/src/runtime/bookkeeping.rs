//! The runtime's own tables in the sink (created in the connection's current schema) and the
//! per-projector migrations.
//!
//! - `factline_projector_positions`: the next offset to apply per projector, version, topic and
//!   partition, plus the high watermark seen so readers can compute lag;
//! - `factline_projector_applied`: event ids applied within the dedupe window, with when
//!   (duplicates are skipped; older rows and retired versions' rows are pruned by
//!   [`prune_applied`]);
//! - `factline_projector_migrations`: which migrations ran for which projector version;
//! - `factline_projector_rebuilds`: each version's state (`building`, `live`, `retired`), its sink,
//!   topics and read models, the configuration of a declarative projection (the parsed
//!   structure as JSON, `declarative_config`: the read API serves its views from it), and the
//!   progress of a rebuild, and where a projection keeps applied ids in its own rows
//!   (`applied_ids_in`: view and key column);
//! - `factline_projector_dead_letters`: one row per dead-lettered record.

use deadpool_postgres::Object;
use factline_schemas::declarative::DeclarativeConfig;

use crate::error::{is_transient_pg, Cause, PgError};
use crate::projection::Migration;

/// The DDL of the runtime tables, idempotent.
pub const RUNTIME_TABLES: &str = "
CREATE TABLE IF NOT EXISTS factline_projector_positions (
    projector      text        NOT NULL,
    version        integer     NOT NULL,
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    next_offset    bigint      NOT NULL,
    high_watermark bigint,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    last_event_at  timestamptz,
    PRIMARY KEY (projector, version, topic, partition)
);
CREATE TABLE IF NOT EXISTS factline_projector_applied (
    projector text    NOT NULL,
    version   integer NOT NULL,
    event_id  uuid    NOT NULL,
    PRIMARY KEY (projector, version, event_id)
);
ALTER TABLE factline_projector_applied
    ADD COLUMN IF NOT EXISTS applied_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX IF NOT EXISTS factline_projector_applied_age
    ON factline_projector_applied (projector, applied_at);
CREATE TABLE IF NOT EXISTS factline_projector_migrations (
    projector  text        NOT NULL,
    version    integer     NOT NULL,
    migration  text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projector, version, migration)
);
CREATE TABLE IF NOT EXISTS factline_projector_rebuilds (
    projector    text        NOT NULL,
    version      integer     NOT NULL,
    state        text        NOT NULL CHECK (state IN ('building', 'live', 'retired')),
    started_at   timestamptz NOT NULL DEFAULT now(),
    caught_up_at timestamptz,
    swapped_at   timestamptz,
    PRIMARY KEY (projector, version)
);
ALTER TABLE factline_projector_rebuilds
    ADD COLUMN IF NOT EXISTS sink         text,
    ADD COLUMN IF NOT EXISTS topics       text[],
    ADD COLUMN IF NOT EXISTS read_models  text[],
    ADD COLUMN IF NOT EXISTS events_done  bigint,
    ADD COLUMN IF NOT EXISTS events_total bigint,
    ADD COLUMN IF NOT EXISTS eta_seconds  double precision,
    ADD COLUMN IF NOT EXISTS progress_at  timestamptz,
    ADD COLUMN IF NOT EXISTS declarative_config jsonb,
    ADD COLUMN IF NOT EXISTS applied_ids_in text[];
CREATE TABLE IF NOT EXISTS factline_projector_dead_letters (
    projector        text        NOT NULL,
    version          integer     NOT NULL,
    topic            text        NOT NULL,
    partition        integer     NOT NULL,
    \"offset\"         bigint      NOT NULL,
    error            text        NOT NULL,
    dead_lettered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projector, version, topic, partition, \"offset\")
);
";

/// What a projector version is, recorded in `factline_projector_rebuilds` at every start so the
/// read API lists it before it consumed anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The projector name.
    pub projector: String,
    /// Its version.
    pub version: u32,
    /// `postgres` or `elasticsearch`.
    pub sink: &'static str,
    /// The real (prefixed) topic names consumed.
    pub topics: Vec<String>,
    /// The PostgreSQL views or Elasticsearch aliases served.
    pub read_models: Vec<String>,
}

/// A failure while preparing the sink.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The store is unreachable or busy: retry.
    #[error("the store is not ready")]
    Transient(#[source] Cause),
    /// A migration is broken: stop.
    #[error("migration {migration} failed")]
    Migration {
        /// The migration id.
        migration: String,
        /// The store's error.
        #[source]
        source: Cause,
    },
}

impl From<tokio_postgres::Error> for BootstrapError {
    fn from(e: tokio_postgres::Error) -> Self {
        BootstrapError::Transient(Box::new(PgError(e)))
    }
}

/// The live version of a projector when this one started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// This version serves the views.
    Live,
    /// An older version serves; this one builds its tables and takes over when caught up.
    Building {
        /// The version currently live.
        live: u32,
    },
    /// A newer version already took over; this one keeps its own tables up to date only.
    Superseded {
        /// The version currently live.
        live: u32,
    },
}

/// Creates the runtime tables, runs the projection's pending migrations and registers this
/// version, all in one transaction under an advisory lock (instances start concurrently).
/// A declarative projection's configuration (`declarative`) is recorded with the version, at
/// every start, so the read API serves exactly what the running version builds.
pub async fn bootstrap(
    client: &mut Object,
    registration: &Registration,
    migrations: &[Migration],
    views: &[String],
    declarative: Option<&DeclarativeConfig>,
) -> Result<Liveness, BootstrapError> {
    let projector = registration.projector.as_str();
    let version = registration.version;
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('factline_projectors'))",
        &[],
    )
    .await?;
    tx.batch_execute(RUNTIME_TABLES).await?;
    tx.batch_execute(super::sequence::BLOCKED_KEYS_DDL).await?;
    let version_i = version as i32;
    for migration in migrations {
        let done = tx
            .query_opt(
                "SELECT 1 FROM factline_projector_migrations \
                 WHERE projector = $1 AND version = $2 AND migration = $3",
                &[&projector, &version_i, &migration.id],
            )
            .await?;
        if done.is_some() {
            continue;
        }
        if let Err(e) = tx.batch_execute(&migration.sql).await {
            if is_transient_pg(&e) {
                return Err(e.into());
            }
            return Err(BootstrapError::Migration {
                migration: migration.id.clone(),
                source: Box::new(PgError(e)),
            });
        }
        tx.execute(
            "INSERT INTO factline_projector_migrations (projector, version, migration) \
             VALUES ($1, $2, $3)",
            &[&projector, &version_i, &migration.id],
        )
        .await?;
        tracing::info!(projector, version, migration = %migration.id, "migration applied");
    }
    let live: Option<i32> = tx
        .query_opt(
            "SELECT version FROM factline_projector_rebuilds \
             WHERE projector = $1 AND state = 'live'",
            &[&projector],
        )
        .await?
        .map(|row| row.get(0));
    let liveness = match live {
        None => {
            tx.execute(
                "INSERT INTO factline_projector_rebuilds (projector, version, state, caught_up_at, swapped_at) \
                 VALUES ($1, $2, 'live', now(), now()) \
                 ON CONFLICT (projector, version) DO UPDATE SET state = 'live', swapped_at = now()",
                &[&projector, &version_i],
            )
            .await?;
            create_views(&tx, version, views).await?;
            Liveness::Live
        }
        Some(live) if live == version_i => {
            create_views(&tx, version, views).await?;
            Liveness::Live
        }
        Some(live) => {
            tx.execute(
                "INSERT INTO factline_projector_rebuilds (projector, version, state) \
                 VALUES ($1, $2, 'building') ON CONFLICT (projector, version) DO NOTHING",
                &[&projector, &version_i],
            )
            .await?;
            if live < version_i {
                Liveness::Building { live: live as u32 }
            } else {
                Liveness::Superseded { live: live as u32 }
            }
        }
    };
    let declarative = declarative.map(DeclarativeConfig::to_json);
    tx.execute(
        "UPDATE factline_projector_rebuilds \
         SET sink = $3, topics = $4, read_models = $5, declarative_config = $6 \
         WHERE projector = $1 AND version = $2",
        &[
            &projector,
            &version_i,
            &registration.sink,
            &registration.topics,
            &registration.read_models,
            &declarative,
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(liveness)
}

/// The declarative configuration recorded for a projector version, if any.
pub async fn declarative_config<C: tokio_postgres::GenericClient>(
    client: &C,
    projector: &str,
    version: u32,
) -> Result<Option<serde_json::Value>, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT declarative_config FROM factline_projector_rebuilds \
             WHERE projector = $1 AND version = $2",
            &[&projector, &(version as i32)],
        )
        .await?
        .and_then(|row| row.get(0)))
}

/// The state (`building`, `live`, `retired`) of a projector version, if registered.
pub async fn state<C: tokio_postgres::GenericClient>(
    client: &C,
    projector: &str,
    version: u32,
) -> Result<Option<String>, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT state FROM factline_projector_rebuilds WHERE projector = $1 AND version = $2",
            &[&projector, &(version as i32)],
        )
        .await?
        .map(|row| row.get(0)))
}

/// Points each view without suffix at this version's table, in the caller's transaction (so a
/// swap of several views is atomic).
pub async fn create_views(
    tx: &tokio_postgres::Transaction<'_>,
    version: u32,
    views: &[String],
) -> Result<(), tokio_postgres::Error> {
    for base in views {
        let table = crate::projection::versioned_table(base, version);
        tx.batch_execute(&format!(
            "DROP VIEW IF EXISTS {base}; CREATE VIEW {base} AS SELECT * FROM {table};"
        ))
        .await?;
    }
    Ok(())
}

/// Makes `version` the live one if it is newer than the live version: marks the old one
/// retired and swaps the views, in one transaction. Returns whether it swapped.
pub async fn swap_live<E: From<tokio_postgres::Error>>(
    client: &mut Object,
    projector: &str,
    version: u32,
    views: &[String],
) -> Result<bool, E> {
    swap_live_with(client, projector, version, views, || async { Ok(()) }).await
}

/// [`swap_live`], running `switch` (e.g. an Elasticsearch alias swap) inside the transaction
/// just before it commits: if `switch` fails nothing is swapped; if the process dies after
/// `switch` but before the commit, the next attempt runs `switch` again (it must be idempotent).
pub async fn swap_live_with<F, Fut, E>(
    client: &mut Object,
    projector: &str,
    version: u32,
    views: &[String],
    switch: F,
) -> Result<bool, E>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: From<tokio_postgres::Error>,
{
    let version_i = version as i32;
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('factline_projectors'))",
        &[],
    )
    .await?;
    let live: Option<i32> = tx
        .query_opt(
            "SELECT version FROM factline_projector_rebuilds WHERE projector = $1 AND state = 'live'",
            &[&projector],
        )
        .await?
        .map(|row| row.get(0));
    if live.is_some_and(|live| live >= version_i) {
        return Ok(false);
    }
    tx.execute(
        "UPDATE factline_projector_rebuilds SET state = 'retired' \
         WHERE projector = $1 AND state = 'live'",
        &[&projector],
    )
    .await?;
    tx.execute(
        "UPDATE factline_projector_rebuilds \
         SET state = 'live', caught_up_at = COALESCE(caught_up_at, now()), swapped_at = now() \
         WHERE projector = $1 AND version = $2",
        &[&projector, &version_i],
    )
    .await?;
    create_views(&tx, version, views).await?;
    switch().await?;
    tx.commit().await?;
    Ok(true)
}

/// Records with the registered version where its projection keeps applied ids in its own rows
/// (`applied_ids_in`: `{view, key column}`, or NULL), at every start, for the read API's trail
/// of an event.
pub async fn record_applied_ids_in_rows<C: tokio_postgres::GenericClient>(
    client: &C,
    registration: &Registration,
    column: Option<crate::projection::AppliedIdsColumn>,
) -> Result<(), BootstrapError> {
    let place: Option<Vec<&str>> = column.map(|c| vec![c.view, c.key]);
    client
        .execute(
            "UPDATE factline_projector_rebuilds SET applied_ids_in = $3 \
             WHERE projector = $1 AND version = $2",
            &[
                &registration.projector,
                &(registration.version as i32),
                &place,
            ],
        )
        .await?;
    Ok(())
}

/// Rows of `factline_projector_applied` deleted by one statement of [`prune_applied`] at most.
pub const PRUNE_CHUNK: i64 = 5000;

/// Deletes, in chunks of at most [`PRUNE_CHUNK`] rows per statement, the applied ids of
/// `projector` that no live or building version needs: those of retired versions (their read
/// models are never served again) and those of any version recorded longer than `window` ago.
/// Returns whether a chunk came back full (more may be left: call again soon).
pub async fn prune_applied<C: tokio_postgres::GenericClient>(
    client: &C,
    projector: &str,
    window: std::time::Duration,
) -> Result<bool, tokio_postgres::Error> {
    let retired = client
        .execute(
            "DELETE FROM factline_projector_applied WHERE ctid = ANY(ARRAY( \
               SELECT a.ctid FROM factline_projector_applied a \
               JOIN factline_projector_rebuilds r \
                 ON r.projector = a.projector AND r.version = a.version AND r.state = 'retired' \
               WHERE a.projector = $1 LIMIT $2))",
            &[&projector, &PRUNE_CHUNK],
        )
        .await?;
    let seconds = window.as_secs_f64();
    let aged = client
        .execute(
            "DELETE FROM factline_projector_applied WHERE ctid = ANY(ARRAY( \
               SELECT ctid FROM factline_projector_applied \
               WHERE projector = $1 AND applied_at < now() - make_interval(secs => $2) \
               LIMIT $3))",
            &[&projector, &seconds, &PRUNE_CHUNK],
        )
        .await?;
    if retired + aged > 0 {
        tracing::debug!(projector, retired, aged, "applied ids pruned");
    }
    Ok(retired.max(aged) >= PRUNE_CHUNK as u64)
}
