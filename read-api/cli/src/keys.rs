//! `factline keys erasures|lost`: the key store's erasure records (who was erased, when,
//! which data key; never any personal data), and declaring data keys lost so projectors stop
//! waiting for them (their values read as the placeholder). Neither needs the KEK.

use factline_keystore::erasures::{self, KeyStatus};
use factline_keystore::{Erasure, KeyStoreError};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::config::Settings;
use crate::error::{CliError, EXIT_OK};
use crate::output::{print_json, Format, Table};

/// `keys lost`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct LostOptions {
    /// The data key ids, as projectors name them ("data key … is neither in the key store nor
    /// recorded as erased")
    #[arg(required = true, value_name = "KEY_ID")]
    pub key_ids: Vec<Uuid>,
    /// Record them (otherwise only say what would be recorded)
    #[arg(long)]
    pub yes: bool,
}

pub(crate) const LOST_HELP: &str = "\
Declare data keys lost: values encrypted with them then read as the placeholder, like an
erased key's, so projectors waiting on them go on. Use it when the key store was lost or
restored from a backup older than the keys: the personal fields under those keys are gone
for good, every event is still applied. A key the store still has, or has erased, is left
alone. A dry run unless --yes.";

fn keystore_error(error: KeyStoreError) -> CliError {
    CliError::Unreachable {
        service: "the key store (DATABASE_URL, FACTLINE_KEYS_DB_SCHEMA)".into(),
        message: error.to_string(),
    }
}

fn subject_text(erasure: &Erasure) -> String {
    if erasure.subject == erasures::LOST_SUBJECT {
        "(key declared lost)".to_owned()
    } else {
        erasure.subject.clone()
    }
}

fn key_text(key_id: Option<Uuid>) -> String {
    key_id.map_or_else(|| "(none)".to_owned(), |id| id.to_string())
}

fn erasure_json(erasure: &Erasure) -> Value {
    json!({
        "subject": erasure.subject,
        "key_id": erasure.key_id,
        "erased_at": erasure.erased_at,
        "lost": erasure.subject == erasures::LOST_SUBJECT,
    })
}

/// `keys erasures`: the erasures of `subject` (every subject by default), newest first.
pub async fn list(
    settings: &Settings,
    subject: Option<&str>,
    limit: i64,
    format: Format,
) -> Result<(), CliError> {
    let client = crate::database::connect(&settings.database_url).await?;
    let found = erasures::list(&**client, &settings.keys_db_schema, subject, limit)
        .await
        .map_err(keystore_error)?;
    match format {
        Format::Json => print_json(&Value::Array(found.iter().map(erasure_json).collect())),
        Format::Table => {
            let mut table = Table::new(&["ERASED AT", "SUBJECT", "DATA KEY"]);
            for erasure in &found {
                table.row(vec![
                    erasure.erased_at.clone(),
                    subject_text(erasure),
                    key_text(erasure.key_id),
                ]);
            }
            println!("{}", table.render());
        }
    }
    Ok(())
}

/// `keys lost`: says (dry run) or records which keys are declared lost.
pub async fn lost(
    settings: &Settings,
    options: &LostOptions,
    format: Format,
) -> Result<u8, CliError> {
    let client = crate::database::connect(&settings.database_url).await?;
    let schema = &settings.keys_db_schema;
    let mut results = Vec::new();
    for key_id in &options.key_ids {
        let before = if options.yes {
            erasures::declare_lost(&**client, schema, *key_id).await
        } else {
            erasures::status(&**client, schema, *key_id).await
        }
        .map_err(keystore_error)?;
        let outcome = match (&before, options.yes) {
            (KeyStatus::Unknown, true) => "declared lost",
            (KeyStatus::Unknown, false) => "would be declared lost",
            (KeyStatus::Present, _) => "present: left alone",
            (KeyStatus::Erased(_), _) => "already erased: left alone",
        };
        results.push((*key_id, outcome));
    }
    match format {
        Format::Json => print_json(&json!({
            "dry_run": !options.yes,
            "keys": results.iter().map(|(id, outcome)| json!({"key_id": id, "outcome": outcome}))
                .collect::<Vec<_>>(),
        })),
        Format::Table => {
            let mut table = Table::new(&["DATA KEY", "OUTCOME"]);
            for (id, outcome) in &results {
                table.row(vec![id.to_string(), (*outcome).to_owned()]);
            }
            println!("{}", table.render());
            if !options.yes {
                println!("dry run: nothing recorded; --yes records it");
            }
        }
    }
    Ok(EXIT_OK)
}
