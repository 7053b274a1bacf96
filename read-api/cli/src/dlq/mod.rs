//! `factline dlq list|show|redrive`: the dead letters recorded in PostgreSQL, the records
//! themselves read back from the log and decoded through the registry, and redrive
//! ([`redrive`]).

pub mod log;
pub mod redrive;
pub mod store;

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::config::Settings;
use crate::error::CliError;
use crate::output::{self, Format, Table};
use store::{DeadLetter, RecordId, Selection};

/// `dlq list`: the dead letters matching `selection`, by record, with projector and error.
pub async fn list(
    settings: &Settings,
    selection: &Selection,
    include_redriven: bool,
    format: Format,
) -> Result<(), CliError> {
    let client = crate::database::connect(&settings.database_url).await?;
    let letters = store::list(&client, selection, !include_redriven).await?;
    match format {
        Format::Json => output::print_json(&Value::Array(
            letters.iter().map(DeadLetter::to_json).collect(),
        )),
        Format::Table => {
            let mut table = Table::new(&[
                "ID",
                "PROJECTOR",
                "VERSION",
                "DEAD-LETTERED AT",
                "REDRIVEN TO",
                "ERROR",
            ]);
            let mut by_projector: BTreeMap<String, usize> = BTreeMap::new();
            for letter in &letters {
                *by_projector.entry(letter.projector.clone()).or_default() += 1;
                table.row(vec![
                    letter.record.to_string(),
                    letter.projector.clone(),
                    letter.version.to_string(),
                    letter
                        .dead_lettered_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    letter
                        .redriven_to
                        .map_or("-".into(), |(p, o)| format!("{p}:{o}")),
                    letter.error.clone(),
                ]);
            }
            println!("{}", table.render());
            let counts: Vec<String> = by_projector
                .iter()
                .map(|(p, n)| format!("{p}: {n}"))
                .collect();
            let what = if include_redriven {
                "dead letters"
            } else {
                "dead letters pending"
            };
            println!(
                "{} {what}{}",
                letters.len(),
                if counts.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", counts.join(", "))
                }
            );
        }
    }
    Ok(())
}

/// `dlq show ID`: one dead-lettered record: every projector's dead letter for it, and the
/// record read back from the log with its headers and decoded payload.
pub async fn show(settings: &Settings, id: &RecordId, format: Format) -> Result<(), CliError> {
    let client = crate::database::connect(&settings.database_url).await?;
    let selection = Selection {
        ids: vec![id.clone()],
        ..Selection::default()
    };
    let letters = store::list(&client, &selection, false).await?;
    if letters.is_empty() {
        return Err(CliError::NotFound(format!("dead letter {id}")));
    }
    let log = log::Log::new(&settings.kafka_brokers, &settings.kafka_properties);
    let record = log.fetch(id).await?;
    let codec = factline_schemas::EventCodec::new(&settings.schema_registry);
    let payload = match record.payload.as_deref() {
        None => json!({"error": "no value"}),
        Some(bytes) => match codec.decode(bytes).await {
            Ok(event) => json!({"event_type": event.event_type, "schema_id": event.schema_id,
                                "value": event.to_json()}),
            Err(error) => json!({"error": format!("cannot decode: {error}"),
                                 "bytes": bytes.len()}),
        },
    };
    let headers: serde_json::Map<String, Value> = record
        .headers
        .iter()
        .map(|(k, v)| {
            let text = v
                .as_deref()
                .map(|v| String::from_utf8_lossy(v).into_owned());
            (k.clone(), json!(text))
        })
        .collect();
    let key = record.key.as_deref().map(String::from_utf8_lossy);
    let value = json!({
        "id": id.to_string(),
        "key": key,
        "timestamp_ms": record.timestamp_ms,
        "headers": headers,
        "payload": payload,
        "dead_letters": letters.iter().map(DeadLetter::to_json).collect::<Vec<_>>(),
    });
    match format {
        Format::Json => output::print_json(&value),
        Format::Table => {
            println!("record {id}  key {}", output::cell(&value["key"]));
            println!("dead letters");
            for letter in &letters {
                let redriven = letter
                    .redriven_to
                    .map_or(String::new(), |(p, o)| format!(" (redriven to {p}:{o})"));
                println!(
                    "  {} v{}: {}{redriven}",
                    letter.projector, letter.version, letter.error
                );
            }
            println!("headers");
            for (name, v) in &headers {
                println!("  {name}: {}", output::cell(v));
            }
            println!("payload");
            let text = serde_json::to_string_pretty(&payload).unwrap_or_default();
            for line in text.lines() {
                println!("  {line}");
            }
        }
    }
    Ok(())
}
