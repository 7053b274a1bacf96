//! The key store: one AES-256 data key per data subject, stored in PostgreSQL wrapped by the
//! current KEK ([`crate::kek`]), with the erasure records that replace destroyed keys.
//!
//! Tables, in the schema `FACTLINE_KEYS_DB_SCHEMA` (default `factline_keys`), created on first
//! use under an advisory lock (so concurrent first uses never collide):
//! - `data_keys (subject PRIMARY KEY, key_id UNIQUE, kek_id, wrapped, created_at)`;
//!   subjects are stored as their UTF-8 bytes (`bytea`): any string a schema allows, NUL
//!   included, is a subject;
//! - `erasures (subject, key_id, erased_at)`: who was erased, when, and which key was
//!   destroyed — never any personal data.
//!
//! A subject's key is created on its first use: `INSERT … ON CONFLICT DO NOTHING`, then a read
//! in a new statement, so concurrent first uses (any number of processes) agree on one key.
//! Erasure deletes the key row and records the erasure in one transaction; a later event of
//! the same subject gets a new key (with a new id), and values under the destroyed id read as
//! the placeholder forever.
//!
//! Keys are cached in each process ([`crate::cache`]). `FACTLINE_KEYS_CACHE_TTL_MS` (default
//! 5000) bounds how long after an erasure another process may still encrypt with, or decrypt
//! with, the destroyed key: while keys are looked up, each process reads the erasures recorded
//! since its last look (at most every half of that time, one indexed query) and evicts the
//! destroyed keys, so the keys it keeps stay usable without being read again. The process that
//! erases forgets the key at once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aes_gcm::aead::{KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Key};
use deadpool_postgres::Pool;
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::cache::{CheckState, KeyCache, Seen, CHECK_OVERLAP};
use crate::kek::{KekRing, UnwrapError};

/// A key-store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyStoreError {
    /// PostgreSQL is unreachable or failed: retry later.
    #[error("key store unavailable: {0}")]
    Unavailable(String),
    /// A stored data key cannot be unwrapped with the configured KEKs.
    #[error(transparent)]
    Unwrap(#[from] UnwrapError),
    /// A value names a data key the store neither has nor has erased (another key store, or
    /// a key store restored from an older backup).
    #[error("data key {0} is neither in the key store nor recorded as erased")]
    UnknownKey(Uuid),
}

impl KeyStoreError {
    /// Whether the same call may succeed later. Every key-store error is: the database may
    /// come back, a configuration (KEK, key-store schema) may be fixed by an operator.
    pub fn is_transient(&self) -> bool {
        true
    }
}

/// A data key's state when looked up by id.
#[derive(Clone)]
pub enum KeyState {
    /// The key exists: values open.
    Live(Arc<Aes256Gcm>),
    /// The key was destroyed by an erasure: values read as the placeholder.
    Erased,
}

/// One erasure: a destroyed key. Holds no personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasure {
    /// The data subject (`customer_id`).
    pub subject: String,
    /// The destroyed data key; `None` when the subject had no key.
    pub key_id: Option<Uuid>,
    /// When the key was destroyed, RFC 3339 UTC.
    pub erased_at: String,
}

/// Tuning of the key store.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// The PostgreSQL schema of the tables.
    pub db_schema: String,
    /// How long a key (or an erasure) is cached.
    pub cache_ttl: Duration,
    /// How many keys each cache holds at most.
    pub cache_capacity: usize,
}

/// The key store. Cheap to clone; Send + Sync.
#[derive(Clone)]
pub struct KeyStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    schema: String,
    ring: KekRing,
    ready: OnceCell<()>,
    cache: KeyCache,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("schema", &self.inner.schema)
            .field("keks", &self.inner.ring)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> KeyStoreError {
    KeyStoreError::Unavailable(e.to_string())
}

fn cipher_of(data_key: &[u8]) -> Arc<Aes256Gcm> {
    Arc::new(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(data_key)))
}

impl KeyStore {
    /// A key store in `settings.db_schema` of the database behind `pool`, wrapping keys with
    /// `ring`. Nothing is touched until the first use.
    pub fn new(pool: Pool, ring: KekRing, settings: &StoreSettings) -> KeyStore {
        KeyStore {
            inner: Arc::new(Inner {
                pool,
                schema: settings.db_schema.clone(),
                ring,
                ready: OnceCell::new(),
                cache: KeyCache::new(settings.cache_ttl, settings.cache_capacity),
            }),
        }
    }

    fn t(&self, table: &str) -> String {
        format!("\"{}\".{table}", self.inner.schema)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, KeyStoreError> {
        let client = self.inner.pool.get().await.map_err(unavailable)?;
        self.inner
            .ready
            .get_or_try_init(|| self.create_tables(&client))
            .await?;
        Ok(client)
    }

    async fn create_tables(&self, client: &deadpool_postgres::Object) -> Result<(), KeyStoreError> {
        let schema = &self.inner.schema;
        let exists = client
            .query_one(
                // the newest object: older deployments get it (and nothing else changes)
                &format!(
                    "SELECT to_regclass('{}') IS NOT NULL",
                    self.t("erasures_by_time")
                ),
                &[],
            )
            .await
            .map_err(unavailable)?;
        if exists.get::<_, bool>(0) {
            return Ok(());
        }
        let sql = format!(
            "BEGIN;
             SELECT pg_advisory_xact_lock(hashtext('factline-keystore:' || '{schema}'));
             CREATE SCHEMA IF NOT EXISTS \"{schema}\";
             CREATE TABLE IF NOT EXISTS {keys} (
                 subject bytea PRIMARY KEY,
                 key_id uuid NOT NULL UNIQUE,
                 kek_id text NOT NULL,
                 wrapped bytea NOT NULL,
                 created_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE IF NOT EXISTS {erasures} (
                 id bigserial PRIMARY KEY,
                 subject bytea NOT NULL,
                 key_id uuid UNIQUE,
                 erased_at timestamptz NOT NULL DEFAULT now());
             CREATE INDEX IF NOT EXISTS erasures_by_subject ON {erasures} (subject);
             CREATE INDEX IF NOT EXISTS erasures_by_time ON {erasures} (erased_at);
             COMMIT;",
            keys = self.t("data_keys"),
            erasures = self.t("erasures"),
        );
        match client.batch_execute(&sql).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                Err(unavailable(e))
            }
        }
    }

    /// Evicts the keys other processes destroyed since the last check, when a check is due
    /// (see [`crate::cache`]). While the cached keys are still usable without it, the check
    /// runs in a task of its own and no look-up waits for it (a slow database would otherwise
    /// hold up every command behind one query); once they are not, the look-up waits for it,
    /// which is cheaper than reading each key again. A failed check is only logged: cached
    /// keys then expire with their own age, and the look-up that follows reports the
    /// database's state.
    async fn check_erasures(&self) {
        let cache = &self.inner.cache;
        if !cache.check_due() {
            return;
        }
        if cache.check_overdue() {
            if let Some(mut state) = cache.start_check().await {
                self.run_check(&mut state).await;
            }
            return;
        }
        if let Some(mut state) = cache.try_start_check() {
            let store = self.clone();
            tokio::spawn(async move { store.run_check(&mut state).await });
        }
    }

    /// One erasure check, its result applied to the cache.
    async fn run_check(&self, state: &mut CheckState) {
        let started = Instant::now();
        match self.erasures_since(state.since).await {
            Ok((now, erasures)) => self.inner.cache.checked(state, started, now, &erasures),
            Err(error) => tracing::warn!(%error, "checking for erasures failed"),
        }
    }

    /// The database time and the erasures recorded since `since` less [`CHECK_OVERLAP`] (the
    /// last few minutes on the first check).
    async fn erasures_since(
        &self,
        since: Option<SystemTime>,
    ) -> Result<(SystemTime, Vec<Seen>), KeyStoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT now(), e.subject, e.key_id FROM (SELECT 1) AS one
                     LEFT JOIN {} e ON e.erased_at > coalesce($1, now()) - make_interval(secs => $2)",
                    self.t("erasures")
                ),
                &[&since, &(CHECK_OVERLAP.as_secs_f64())],
            )
            .await
            .map_err(unavailable)?;
        let now = rows
            .first()
            .map(|r| r.get::<_, SystemTime>(0))
            .ok_or_else(|| unavailable("the erasure check returned no row"))?;
        let erasures = rows
            .iter()
            .filter_map(|r| Some((r.get::<_, Option<Vec<u8>>>(1)?, r.get(2))))
            .collect();
        Ok((now, erasures))
    }

    /// The data key of `subject` for encryption, created on first use: (key id, cipher).
    pub async fn key_for_subject(
        &self,
        subject: &str,
    ) -> Result<(Uuid, Arc<Aes256Gcm>), KeyStoreError> {
        self.check_erasures().await;
        if let Some(hit) = self.inner.cache.by_subject(subject) {
            return Ok(hit);
        }
        let ticket = self.inner.cache.ticket();
        let client = self.client().await?;
        let select = format!(
            "SELECT key_id, kek_id, wrapped FROM {} WHERE subject = $1",
            self.t("data_keys")
        );
        let mut row = client
            .query_opt(&select, &[&subject.as_bytes()])
            .await
            .map_err(unavailable)?;
        if row.is_none() {
            let key_id = Uuid::new_v4();
            let data_key = Aes256Gcm::generate_key(OsRng);
            let (kek_id, wrapped) = self.inner.ring.wrap_key(key_id, &data_key);
            let insert = format!(
                "INSERT INTO {} (subject, key_id, kek_id, wrapped) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (subject) DO NOTHING RETURNING key_id, kek_id, wrapped",
                self.t("data_keys")
            );
            row = client
                .query_opt(&insert, &[&subject.as_bytes(), &key_id, &kek_id, &wrapped])
                .await
                .map_err(unavailable)?;
            if row.is_none() {
                // another process created it first: read theirs (a new statement sees it)
                row = client
                    .query_opt(&select, &[&subject.as_bytes()])
                    .await
                    .map_err(unavailable)?;
            }
        }
        let row = row.ok_or_else(|| unavailable("the subject's key vanished while created"))?;
        let key_id: Uuid = row.get(0);
        let kek_id: String = row.get(1);
        let wrapped: Vec<u8> = row.get(2);
        let cipher = cipher_of(&self.inner.ring.unwrap_key(key_id, &kek_id, &wrapped)?);
        self.inner.cache.put(
            ticket,
            Some(subject),
            key_id,
            KeyState::Live(cipher.clone()),
        );
        Ok((key_id, cipher))
    }

    /// The data key `key_id` for decryption: live, or erased.
    pub async fn key_by_id(&self, key_id: Uuid) -> Result<KeyState, KeyStoreError> {
        self.check_erasures().await;
        if let Some(hit) = self.inner.cache.by_id(&key_id) {
            return Ok(hit);
        }
        let ticket = self.inner.cache.ticket();
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT kek_id, wrapped FROM {} WHERE key_id = $1",
                    self.t("data_keys")
                ),
                &[&key_id],
            )
            .await
            .map_err(unavailable)?;
        let state = match row {
            Some(row) => {
                let kek_id: String = row.get(0);
                let wrapped: Vec<u8> = row.get(1);
                KeyState::Live(cipher_of(
                    &self.inner.ring.unwrap_key(key_id, &kek_id, &wrapped)?,
                ))
            }
            None => {
                let erased = client
                    .query_opt(
                        &format!("SELECT 1 FROM {} WHERE key_id = $1", self.t("erasures")),
                        &[&key_id],
                    )
                    .await
                    .map_err(unavailable)?;
                if erased.is_none() {
                    return Err(KeyStoreError::UnknownKey(key_id));
                }
                KeyState::Erased
            }
        };
        self.inner.cache.put(ticket, None, key_id, state.clone());
        Ok(state)
    }

    /// Loads the data keys of `key_ids` that are not cached, in two queries whatever their
    /// number (keys, then erasures of the rest), so a batch's first look-ups hit the cache.
    /// Ids the store does not know are left out (looked up, and refused, one by one later).
    pub async fn prefetch(&self, key_ids: &[Uuid]) -> Result<(), KeyStoreError> {
        self.check_erasures().await;
        let missing: Vec<Uuid> = {
            let cache = &self.inner.cache;
            let mut missing: Vec<Uuid> = key_ids
                .iter()
                .filter(|id| cache.by_id(id).is_none())
                .copied()
                .collect();
            missing.sort_unstable();
            missing.dedup();
            missing
        };
        if missing.is_empty() {
            return Ok(());
        }
        let ticket = self.inner.cache.ticket();
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT key_id, kek_id, wrapped FROM {} WHERE key_id = ANY($1)",
                    self.t("data_keys")
                ),
                &[&missing],
            )
            .await
            .map_err(unavailable)?;
        let mut found = Vec::with_capacity(rows.len());
        for row in &rows {
            let key_id: Uuid = row.get(0);
            let kek_id: String = row.get(1);
            let wrapped: Vec<u8> = row.get(2);
            let cipher = cipher_of(&self.inner.ring.unwrap_key(key_id, &kek_id, &wrapped)?);
            found.push((key_id, KeyState::Live(cipher)));
        }
        let live: HashSet<Uuid> = found.iter().map(|(id, _)| *id).collect();
        let rest: Vec<Uuid> = missing
            .iter()
            .filter(|id| !live.contains(id))
            .copied()
            .collect();
        if !rest.is_empty() {
            for row in client
                .query(
                    &format!(
                        "SELECT key_id FROM {} WHERE key_id = ANY($1)",
                        self.t("erasures")
                    ),
                    &[&rest],
                )
                .await
                .map_err(unavailable)?
            {
                found.push((row.get(0), KeyState::Erased));
            }
        }
        for (key_id, state) in found {
            self.inner.cache.put(ticket, None, key_id, state);
        }
        Ok(())
    }

    /// Destroys `subject`'s data key and records the erasure (idempotent: erasing again
    /// records nothing new unless a key was created since).
    pub async fn erase(&self, subject: &str) -> Result<Erasure, KeyStoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let deleted = tx
            .query_opt(
                &format!(
                    "DELETE FROM {} WHERE subject = $1 RETURNING key_id",
                    self.t("data_keys")
                ),
                &[&subject.as_bytes()],
            )
            .await
            .map_err(unavailable)?;
        let key_id: Option<Uuid> = deleted.map(|r| r.get(0));
        let recorded = match key_id {
            Some(id) => tx
                .query_opt(
                    &format!(
                        "INSERT INTO {} (subject, key_id) VALUES ($1, $2)
                         RETURNING to_char(erased_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
                        self.t("erasures")
                    ),
                    &[&subject.as_bytes(), &id],
                )
                .await
                .map_err(unavailable)?,
            None => tx
                .query_opt(
                    &format!(
                        "INSERT INTO {e} (subject) SELECT $1
                         WHERE NOT EXISTS (SELECT 1 FROM {e} WHERE subject = $1)
                         RETURNING to_char(erased_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
                        e = self.t("erasures")
                    ),
                    &[&subject.as_bytes()],
                )
                .await
                .map_err(unavailable)?,
        };
        tx.commit().await.map_err(unavailable)?;
        self.inner.cache.erased_here(subject, key_id);
        let erased_at = match recorded {
            Some(row) => row.get(0),
            None => self
                .erasures(subject)
                .await?
                .last()
                .map(|e| e.erased_at.clone())
                .unwrap_or_default(),
        };
        Ok(Erasure {
            subject: subject.to_owned(),
            key_id,
            erased_at,
        })
    }

    /// Every erasure recorded for `subject`, oldest first.
    pub async fn erasures(&self, subject: &str) -> Result<Vec<Erasure>, KeyStoreError> {
        let client = self.client().await?;
        let mut erasures =
            crate::erasures::list(&**client, &self.inner.schema, Some(subject), i64::MAX).await?;
        erasures.reverse();
        Ok(erasures)
    }

    /// KEK rotation: rewraps every data key still wrapped by another KEK than the current
    /// one; returns how many were rewrapped. Safe to run while the services run, and again.
    pub async fn rewrap(&self) -> Result<usize, KeyStoreError> {
        let client = self.client().await?;
        let current = self.inner.ring.current_id();
        let rows = client
            .query(
                &format!(
                    "SELECT key_id, kek_id, wrapped FROM {} WHERE kek_id <> $1",
                    self.t("data_keys")
                ),
                &[&current],
            )
            .await
            .map_err(unavailable)?;
        let mut done = 0;
        for row in rows {
            let key_id: Uuid = row.get(0);
            let kek_id: String = row.get(1);
            let wrapped: Vec<u8> = row.get(2);
            let data_key = self.inner.ring.unwrap_key(key_id, &kek_id, &wrapped)?;
            let (new_kek, rewrapped) = self.inner.ring.wrap_key(key_id, &data_key);
            done += client
                .execute(
                    &format!(
                        "UPDATE {} SET kek_id = $2, wrapped = $3 WHERE key_id = $1 AND kek_id = $4",
                        self.t("data_keys")
                    ),
                    &[&key_id, &new_kek, &rewrapped, &kek_id],
                )
                .await
                .map_err(unavailable)? as usize;
        }
        Ok(done)
    }

    /// How many data keys are wrapped by each KEK id (for rotation: when the old id has none
    /// left, it can be removed from the configuration).
    pub async fn keys_per_kek(&self) -> Result<Vec<(String, i64)>, KeyStoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT kek_id, count(*) FROM {} GROUP BY kek_id ORDER BY kek_id",
                    self.t("data_keys")
                ),
                &[],
            )
            .await
            .map_err(unavailable)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
