//! The erasure records, read and written without the KEK: listing them (`factline keys
//! erasures`) and declaring data keys lost (`factline keys lost`).
//!
//! A key is *lost* when values name it but the key store has neither the key nor an erasure
//! of it (a key store lost and recreated, or restored from a backup older than the key).
//! Projectors wait on such a value rather than guess. Declaring the key lost records an
//! erasure of it with an empty subject; from then on its values read as the placeholder,
//! exactly like an erased key's: the personal fields are gone, every event is still applied.
//! A key the store still has is never declared lost.

use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::store::{Erasure, KeyStoreError};

/// The subject recorded for a key declared lost.
pub const LOST_SUBJECT: &str = "";

/// What the key store knows of one data key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStatus {
    /// The key exists: its values open.
    Present,
    /// The key was erased (or declared lost): its values read as the placeholder.
    Erased(Erasure),
    /// Neither: projectors wait on its values until it is declared lost.
    Unknown,
}

fn unavailable(e: impl std::fmt::Display) -> KeyStoreError {
    KeyStoreError::Unavailable(e.to_string())
}

fn table(schema: &str, name: &str) -> String {
    format!("\"{}\".{name}", schema.replace('"', "\"\""))
}

const ERASED_AT: &str =
    "to_char(erased_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')";

fn erasure(row: &tokio_postgres::Row) -> Erasure {
    Erasure {
        subject: String::from_utf8_lossy(row.get::<_, &[u8]>(0)).into_owned(),
        key_id: row.get(1),
        erased_at: row.get(2),
    }
}

/// Whether the key store's tables exist in `schema` (no service used it yet, otherwise).
async fn exists(client: &impl GenericClient, schema: &str) -> Result<bool, KeyStoreError> {
    Ok(client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&table(schema, "erasures")],
        )
        .await
        .map_err(unavailable)?
        .get(0))
}

/// The erasures of `subject` (every subject when `None`), newest first, at most `limit`.
pub async fn list(
    client: &impl GenericClient,
    schema: &str,
    subject: Option<&str>,
    limit: i64,
) -> Result<Vec<Erasure>, KeyStoreError> {
    if !exists(client, schema).await? {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            &format!(
                "SELECT subject, key_id, {ERASED_AT} FROM {} \
                 WHERE $1::bytea IS NULL OR subject = $1 ORDER BY id DESC LIMIT $2",
                table(schema, "erasures")
            ),
            &[&subject.map(str::as_bytes), &limit.max(0)],
        )
        .await
        .map_err(unavailable)?;
    Ok(rows.iter().map(erasure).collect())
}

/// What the key store in `schema` knows of `key_id`.
pub async fn status(
    client: &impl GenericClient,
    schema: &str,
    key_id: Uuid,
) -> Result<KeyStatus, KeyStoreError> {
    if !exists(client, schema).await? {
        return Ok(KeyStatus::Unknown);
    }
    let present = client
        .query_opt(
            &format!(
                "SELECT 1 FROM {} WHERE key_id = $1",
                table(schema, "data_keys")
            ),
            &[&key_id],
        )
        .await
        .map_err(unavailable)?;
    if present.is_some() {
        return Ok(KeyStatus::Present);
    }
    let erased = client
        .query_opt(
            &format!(
                "SELECT subject, key_id, {ERASED_AT} FROM {} WHERE key_id = $1",
                table(schema, "erasures")
            ),
            &[&key_id],
        )
        .await
        .map_err(unavailable)?;
    Ok(erased.map_or(KeyStatus::Unknown, |row| KeyStatus::Erased(erasure(&row))))
}

/// Declares `key_id` lost, if it is unknown; returns what the store knew of it before. A
/// present or already erased key is left as it is. Safe to run concurrently and again: the
/// check and the insert are one statement, and a key id has one erasure at most.
pub async fn declare_lost(
    client: &impl GenericClient,
    schema: &str,
    key_id: Uuid,
) -> Result<KeyStatus, KeyStoreError> {
    if !exists(client, schema).await? {
        return Err(KeyStoreError::Unavailable(format!(
            "no key store in the PostgreSQL schema {schema:?} (FACTLINE_KEYS_DB_SCHEMA)"
        )));
    }
    let before = status(client, schema, key_id).await?;
    if before != KeyStatus::Unknown {
        return Ok(before);
    }
    let inserted = client
        .execute(
            &format!(
                "INSERT INTO {erasures} (subject, key_id) SELECT $1, $2 \
                 WHERE NOT EXISTS (SELECT 1 FROM {keys} WHERE key_id = $2) \
                 ON CONFLICT (key_id) DO NOTHING",
                erasures = table(schema, "erasures"),
                keys = table(schema, "data_keys"),
            ),
            &[&LOST_SUBJECT.as_bytes(), &key_id],
        )
        .await
        .map_err(unavailable)?;
    if inserted == 1 {
        Ok(KeyStatus::Unknown)
    } else {
        // created or erased meanwhile: say what it is now
        status(client, schema, key_id).await
    }
}
