//! What every projector has done: a snapshot of the bookkeeping tables the projector runtime
//! keeps in PostgreSQL (versions, positions, rebuild progress, dead letters), refreshed by one
//! background task and published on a `watch` channel, so waiting requests never poll
//! PostgreSQL themselves. It reads every 250 ms by default (`READ_API_STATUS_REFRESH_MS`);
//! while a request waits for a position it reads at every projector commit
//! ([`crate::commits`]), and every 100 ms as a fallback (every 20 ms while commit
//! notifications are unavailable). Until the first read succeeds the board is empty and the
//! read API is not ready (`/readyz`).
//!
//! The same read gives the declarative views ([`Snapshot::views`]): the configuration each
//! declarative projector recorded with its version, taken from each projector's serving version
//! (the live one, else the newest). So a view appears once its projector has registered (before
//! it consumed anything), follows a rebuild's swap (the new version's tables, columns and
//! keys), and disappears only when the serving version no longer declares it; a stopped
//! projector's views stay served, their growing lag in the freshness headers.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use factline_schemas::declarative::DeclarativeConfig;
use factline_schemas::redrive::REDRIVES_TABLE;
use factline_service::postgres::PoolSettings;
use serde_json::Value;
use tokio::sync::{watch, Notify};

use crate::db::{self, Limits};
use crate::views::Views;

/// A topic and partition.
pub type TopicPartition = (String, i32);

/// One version of one projector.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionStatus {
    /// The projector name.
    pub projector: String,
    /// The read model version.
    pub version: i32,
    /// `building`, `live` or `retired`.
    pub state: String,
    /// `postgres` or `elasticsearch`, when recorded.
    pub sink: Option<String>,
    /// The Kafka topics consumed (real names).
    pub topics: Vec<String>,
    /// The views or aliases served.
    pub read_models: Vec<String>,
    /// Next offset to apply per partition.
    pub positions: BTreeMap<TopicPartition, i64>,
    /// When the newest position row was written.
    pub updated_at: Option<DateTime<Utc>>,
    /// Rebuild progress: events applied so far.
    pub events_done: Option<i64>,
    /// Rebuild progress: events to apply in total.
    pub events_total: Option<i64>,
    /// Rebuild progress: estimated seconds left.
    pub eta_seconds: Option<f64>,
    /// When the progress was measured.
    pub progress_at: Option<DateTime<Utc>>,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: i64,
    /// Those of them not redriven yet (no row in
    /// [`REDRIVES_TABLE`](factline_schemas::redrive::REDRIVES_TABLE)).
    pub dead_letters_pending: i64,
    /// Of those, parked behind an earlier dead letter of their key (sequenced dead letters).
    pub dead_letters_parked: i64,
    /// The configuration a declarative projector recorded for this version.
    pub declarative: Option<Arc<DeclarativeConfig>>,
}

#[cfg(test)]
impl VersionStatus {
    /// A version of `projector` in `state` that has recorded nothing yet (for unit tests).
    pub fn example(projector: &str, version: i32, state: &str) -> VersionStatus {
        VersionStatus {
            projector: projector.into(),
            version,
            state: state.into(),
            sink: None,
            topics: vec![],
            read_models: vec![],
            positions: BTreeMap::new(),
            updated_at: None,
            events_done: None,
            events_total: None,
            eta_seconds: None,
            progress_at: None,
            dead_lettered: 0,
            dead_letters_pending: 0,
            dead_letters_parked: 0,
            declarative: None,
        }
    }
}

/// Every projector's versions, by projector name (newest version last).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// By projector name.
    pub projectors: BTreeMap<String, Vec<VersionStatus>>,
    /// When it was read.
    pub read_at: Option<DateTime<Utc>>,
    /// The declarative views, from each projector's serving version.
    pub views: Arc<Views>,
}

impl Snapshot {
    /// The version serving queries: the live one, else the newest.
    pub fn serving(&self, projector: &str) -> Option<&VersionStatus> {
        let versions = self.projectors.get(projector)?;
        versions
            .iter()
            .rev()
            .find(|v| v.state == "live")
            .or_else(|| versions.last())
    }

    /// The views declared by the serving version of every declarative projector (in projector
    /// name order: a view name declared by two projectors is served from the first).
    pub fn declared_views(&self) -> Views {
        Views::of(
            self.projectors
                .keys()
                .filter_map(|projector| self.serving(projector)?.declarative.as_deref()),
        )
    }
}

/// The declarative configurations read so far, by projector and version, so each recorded
/// configuration is parsed (and a broken one reported) once, not at every refresh.
#[derive(Debug, Default)]
pub struct Declarations {
    parsed: HashMap<(String, i32), Parsed>,
}

/// A recorded configuration (JSON) and what it parsed to.
type Parsed = (Value, Option<Arc<DeclarativeConfig>>);

impl Declarations {
    /// The configuration recorded as `json` for `projector` `version`; `None` (and one warning)
    /// when it is not a valid declarative configuration, e.g. recorded by a newer projector
    /// runtime with a shape this read API does not know.
    pub fn get(
        &mut self,
        projector: &str,
        version: i32,
        json: Value,
    ) -> Option<Arc<DeclarativeConfig>> {
        let key = (projector.to_owned(), version);
        if let Some((known, config)) = self.parsed.get(&key) {
            if *known == json {
                return config.clone();
            }
        }
        let config = match DeclarativeConfig::from_json(json.clone()) {
            Ok(config) => Some(Arc::new(config)),
            Err(error) => {
                tracing::warn!(projector, version, %error, "declarative configuration not served");
                None
            }
        };
        self.parsed.insert(key, (json, config.clone()));
        config
    }
}

/// The shared, refreshed snapshot.
#[derive(Clone)]
pub struct StatusBoard {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    waiters: Arc<AtomicUsize>,
    wake: Arc<Notify>,
}

/// Keeps the board fast while held (see the module's documentation).
pub struct Waiting {
    waiters: Arc<AtomicUsize>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

impl StatusBoard {
    /// Starts the refresher task on `pool`, reading every `refresh`, and, with `commits` (the
    /// database URL and connection settings), the commit listener that wakes it; it ends when
    /// every board clone is dropped.
    pub fn start(
        pool: Pool,
        limits: Limits,
        refresh: Duration,
        commits: Option<(String, PoolSettings)>,
    ) -> StatusBoard {
        let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        let waiters = Arc::new(AtomicUsize::new(0));
        let wake = Arc::new(Notify::new());
        let listening = commits
            .map(|(url, settings)| crate::commits::start(url, settings, wake.clone()))
            .unwrap_or_default();
        let board = StatusBoard {
            snapshot: rx,
            waiters: waiters.clone(),
            wake: wake.clone(),
        };
        tokio::spawn(async move {
            let mut declarations = Declarations::default();
            loop {
                match load(&pool, limits, &mut declarations).await {
                    Ok(snapshot) => {
                        if tx.send(Arc::new(snapshot)).is_err() {
                            return; // no reader left
                        }
                    }
                    Err(error) => tracing::debug!(%error, "cannot read projector status"),
                }
                let pause = match (waiters.load(Ordering::SeqCst) > 0, listening.is_on()) {
                    (true, true) => Duration::from_millis(100).min(refresh),
                    (true, false) => Duration::from_millis(20),
                    (false, _) => refresh,
                };
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = wake.notified() => {}
                    _ = tx.closed() => return,
                }
            }
        });
        board
    }

    /// The latest snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// Whether a snapshot was read at least once.
    pub fn loaded(&self) -> bool {
        self.snapshot.borrow().read_at.is_some()
    }

    /// A receiver of every new snapshot (without speeding the refresher up).
    pub fn updates(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// Waits (at most `limit`) for a snapshot whose reading started after this call, and
    /// returns the latest.
    pub async fn refreshed(&self, limit: Duration) -> Arc<Snapshot> {
        let asked = Utc::now();
        let (mut updates, _fast) = self.watch();
        let _ = tokio::time::timeout(
            limit,
            updates.wait_for(|s| s.read_at.is_some_and(|at| at >= asked)),
        )
        .await;
        self.current()
    }

    /// A receiver of every new snapshot, with the refresher switched to fast polling while
    /// the returned guard lives.
    pub fn watch(&self) -> (watch::Receiver<Arc<Snapshot>>, Waiting) {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_one();
        (
            self.snapshot.clone(),
            Waiting {
                waiters: self.waiters.clone(),
            },
        )
    }
}

/// Reads the bookkeeping tables. Tables that do not exist yet (no projector ever ran) give an
/// empty snapshot.
pub async fn load(
    pool: &Pool,
    limits: Limits,
    declarations: &mut Declarations,
) -> Result<Snapshot, String> {
    let read_at = Utc::now(); // before any query: the snapshot is at least this fresh
    let mut client = db::connect(pool, limits).await.map_err(|e| e.to_string())?;
    // prepared once per connection: the board reads four times a second, at rest too
    let exists = client
        .prepare_cached(
            "SELECT to_regclass('factline_projector_rebuilds') IS NOT NULL \
             AND to_regclass('factline_projector_dead_letters') IS NOT NULL, \
             to_regclass($1) IS NOT NULL",
        )
        .await
        .map_err(|e| e.to_string())?;
    let row = client
        .query_one(&exists, &[&REDRIVES_TABLE])
        .await
        .map_err(|e| e.to_string())?;
    let (exists, redrives): (bool, bool) = (row.get(0), row.get(1));
    let mut snapshot = Snapshot {
        projectors: BTreeMap::new(),
        read_at: Some(read_at),
        views: Arc::default(),
    };
    if !exists {
        return Ok(snapshot);
    }
    // a dead letter is pending until a redrive recorded its record (the table exists once
    // something was redriven); a parked one (sequenced dead letters) waits for an earlier one
    let not_redriven = if redrives {
        format!(
            "NOT EXISTS (SELECT 1 FROM {REDRIVES_TABLE} x WHERE x.topic = d.topic \
               AND x.partition = d.partition AND x.\"offset\" = d.\"offset\")"
        )
    } else {
        "true".to_owned()
    };
    let pending_where = |extra: &str| {
        format!(
            "(SELECT count(*) FROM factline_projector_dead_letters d \
               WHERE d.projector = r.projector AND d.version = r.version \
               AND {not_redriven}{extra})"
        )
    };
    let pending = pending_where("");
    let parked = pending_where(" AND d.error LIKE 'parked:%'");
    let versions = client
        .prepare_cached(&format!(
            "SELECT r.projector, r.version, r.state, r.sink, coalesce(r.topics, '{{}}'), \
                    coalesce(r.read_models, '{{}}'), r.events_done, r.events_total, \
                    r.eta_seconds, r.progress_at, \
                    (SELECT count(*) FROM factline_projector_dead_letters d \
                      WHERE d.projector = r.projector AND d.version = r.version), \
                    to_jsonb(r) -> 'declarative_config', {pending}, {parked} \
                 FROM factline_projector_rebuilds r ORDER BY r.projector, r.version"
        ))
        .await
        .map_err(|e| e.to_string())?;
    let versions = client
        .query(&versions, &[])
        .await
        .map_err(|e| e.to_string())?;
    let positions = client
        .prepare_cached(
            "SELECT projector, version, topic, partition, next_offset, updated_at \
             FROM factline_projector_positions",
        )
        .await
        .map_err(|e| e.to_string())?;
    let positions = client
        .query(&positions, &[])
        .await
        .map_err(|e| e.to_string())?;
    // `to_jsonb(r) -> 'declarative_config'` rather than the column: a table made by an older
    // projector runtime, without the column, reads as no declarative projection (not an error)
    for row in versions {
        let projector: String = row.get(0);
        let version: i32 = row.get(1);
        let declarative = row
            .get::<_, Option<Value>>(11)
            .filter(|json| !json.is_null())
            .and_then(|json| declarations.get(&projector, version, json));
        snapshot
            .projectors
            .entry(projector.clone())
            .or_default()
            .push(VersionStatus {
                projector,
                version,
                state: row.get(2),
                sink: row.get(3),
                topics: row.get(4),
                read_models: row.get(5),
                positions: BTreeMap::new(),
                updated_at: None,
                events_done: row.get(6),
                events_total: row.get(7),
                eta_seconds: row.get(8),
                progress_at: row.get(9),
                dead_lettered: row.get(10),
                dead_letters_pending: row.get(12),
                dead_letters_parked: row.get(13),
                declarative,
            });
    }
    for row in positions {
        let projector: String = row.get(0);
        let version: i32 = row.get(1);
        let Some(status) = snapshot
            .projectors
            .get_mut(&projector)
            .and_then(|vs| vs.iter_mut().find(|v| v.version == version))
        else {
            continue;
        };
        status
            .positions
            .insert((row.get(2), row.get(3)), row.get(4));
        let updated: DateTime<Utc> = row.get(5);
        status.updated_at = status.updated_at.max(Some(updated));
    }
    snapshot.views = Arc::new(snapshot.declared_views());
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(v: i32, state: &str) -> VersionStatus {
        VersionStatus::example("p", v, state)
    }

    #[test]
    fn the_live_version_serves_even_while_a_newer_one_builds() {
        let mut snapshot = Snapshot::default();
        snapshot.projectors.insert(
            "p".into(),
            vec![
                version(1, "retired"),
                version(2, "live"),
                version(3, "building"),
            ],
        );
        assert_eq!(snapshot.serving("p").map(|v| v.version), Some(2));
        snapshot
            .projectors
            .insert("q".into(), vec![version(1, "building")]);
        assert_eq!(snapshot.serving("q").map(|v| v.version), Some(1));
        assert!(snapshot.serving("r").is_none());
    }

    fn declaring(v: i32, state: &str, table: &str) -> VersionStatus {
        let text = format!(
            "name = \"p\"\nversion = {v}\ntopics = [\"t\"]\n\
             [[tables]]\nname = \"{table}\"\nprimary_key = [\"id\"]\ncolumns = {{ id = \"text\" }}\n\
             [[on]]\nevent_type = \"E\"\ntable = \"{table}\"\naction = \"upsert\"\nset = {{ id = \"id\" }}\n"
        );
        VersionStatus {
            declarative: Some(Arc::new(DeclarativeConfig::parse(&text).unwrap())),
            ..version(v, state)
        }
    }

    #[test]
    fn views_come_from_the_serving_version_and_follow_a_swap() {
        let mut snapshot = Snapshot::default();
        snapshot.projectors.insert(
            "p".into(),
            vec![
                declaring(1, "live", "old_view"),
                declaring(2, "building", "new_view"),
            ],
        );
        snapshot
            .projectors
            .insert("code".into(), vec![version(1, "live")]);
        let names = |s: &Snapshot| s.declared_views().by_name.into_keys().collect::<Vec<_>>();
        assert_eq!(names(&snapshot), vec!["old_view"]);
        snapshot.projectors.insert(
            "p".into(),
            vec![
                declaring(1, "retired", "old_view"),
                declaring(2, "live", "new_view"),
            ],
        );
        assert_eq!(names(&snapshot), vec!["new_view"]);
    }

    #[test]
    fn a_recorded_configuration_is_parsed_once_and_a_broken_one_is_not_served() {
        let mut declarations = Declarations::default();
        let config = declaring(1, "live", "v").declarative.unwrap();
        let json = config.to_json();
        let first = declarations.get("p", 1, json.clone()).unwrap();
        let second = declarations.get("p", 1, json).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert!(declarations
            .get("p", 2, serde_json::json!({"name": "p", "unknown": true}))
            .is_none());
    }
}
