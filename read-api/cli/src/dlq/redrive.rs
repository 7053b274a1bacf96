//! `factline dlq redrive`: puts dead-lettered records back in front of their projectors after
//! a fix.
//!
//! # The mechanism
//!
//! Each selected record is read back from its topic and produced again, byte for byte (key,
//! value, headers, so the same `event_id`, and timestamp), to the same topic and partition,
//! with the header `redriven_from: topic:partition:offset`. Every projector consuming the topic
//! sees the copy at a new offset:
//! - a projector that dead-lettered the record judges the copy again (a rejected or undecodable
//!   id is never recorded as applied), so after the fix it applies it, once;
//! - a PostgreSQL projector that applied the original skips the copy: its id is in
//!   `factline_projector_applied`, kept for `PROJECTOR_DEDUPE_WINDOW_SECS` (7 days by
//!   default) after it was applied — never earlier than the record's own timestamp;
//! - a search projector skips it if it is among the 64 newest events of each document it
//!   touches, and otherwise re-applies it, which its order-safe merge makes harmless.
//!
//! So a redrive is safe while the record is younger than the dedupe window. Records older than
//! the window (minus an hour of margin) are left out and counted, unless
//! `--past-dedupe-window` says the operator accepts that PostgreSQL projectors which applied
//! the original may apply the copy again (harmless for idempotent, order-safe projections; not
//! for a declarative `upsert` without a `newer` guard).
//!
//! Each redriven record gets a row in `factline_dead_letter_redrives` after the broker
//! acknowledged its copy; a dead letter with such a row is no longer pending, so a second
//! redrive of the same selection sends nothing. A crash between the acknowledgement and the row
//! leaves the dead letter pending: redriving it again produces one more copy, which every
//! projector skips by its event id. Two redrives never run at once (a PostgreSQL advisory lock;
//! a second one waits up to 5 s, then gives up with exit code 5).
//!
//! The plan is the same for a dry run and a real run: every selected record is read back from
//! the log first, so what the dry run counts is what `--yes` sends.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::config::Settings;
use crate::dlq::log::{Log, Stored};
use crate::dlq::store::{self, DeadLetter, RecordId, Selection};
use crate::error::{CliError, EXIT_OK, EXIT_PROBLEM};
use crate::output::{self, Format};

/// How long a redrive waits for another one to finish.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The margin kept before the dedupe window ends.
pub const WINDOW_MARGIN_SECS: u64 = 3600;

/// The options of `dlq redrive`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Options {
    /// Which dead letters
    #[command(flatten)]
    pub selection: Selection,
    /// Every pending dead letter (needed when no filter is given)
    #[arg(long)]
    pub all: bool,
    /// Stop after this many records
    #[arg(long, value_name = "RECORDS")]
    pub limit: Option<usize>,
    /// Send the copies (without it, a dry run: the plan and its counts, nothing sent)
    #[arg(long)]
    pub yes: bool,
    /// Also redrive records older than the projectors' dedupe window (see the help above)
    #[arg(long)]
    pub past_dedupe_window: bool,
}

/// What a redrive will do.
#[derive(Debug, Default)]
pub struct Plan {
    /// The records to send, in log order, with their dead letters.
    pub send: Vec<(Stored, Vec<DeadLetter>)>,
    /// Records left out: older than the dedupe window.
    pub too_old: Vec<RecordId>,
    /// Records left out: no longer readable from the log, with why.
    pub unavailable: Vec<(RecordId, String)>,
}

impl Plan {
    /// The plan's counts as JSON.
    pub fn counts(&self) -> Value {
        let mut by_projector: BTreeMap<String, usize> = BTreeMap::new();
        for (_, letters) in &self.send {
            for letter in letters {
                *by_projector
                    .entry(format!("{} v{}", letter.projector, letter.version))
                    .or_default() += 1;
            }
        }
        json!({
            "records": self.send.len(),
            "dead_letters": by_projector.values().sum::<usize>(),
            "by_projector": by_projector,
            "skipped_past_dedupe_window": self.too_old.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "skipped_unavailable": self.unavailable.iter()
                .map(|(id, why)| json!({"id": id.to_string(), "reason": why}))
                .collect::<Vec<_>>(),
        })
    }
}

/// Groups dead letters by record, in log order, keeping at most `limit` records.
pub fn group(letters: Vec<DeadLetter>, limit: Option<usize>) -> Vec<(RecordId, Vec<DeadLetter>)> {
    let mut by_record: BTreeMap<RecordId, Vec<DeadLetter>> = BTreeMap::new();
    for letter in letters {
        by_record
            .entry(letter.record.clone())
            .or_default()
            .push(letter);
    }
    by_record
        .into_iter()
        .take(limit.unwrap_or(usize::MAX))
        .collect()
}

/// Whether a record written at `timestamp_ms` may still be remembered by the projectors that
/// applied it, `now`, with a dedupe window of `window_secs`.
pub fn within_window(timestamp_ms: Option<i64>, now: DateTime<Utc>, window_secs: u64) -> bool {
    let Some(written) = timestamp_ms.and_then(DateTime::<Utc>::from_timestamp_millis) else {
        return false; // no time: cannot tell, so not safe
    };
    let safe = window_secs.saturating_sub(WINDOW_MARGIN_SECS) as i64;
    (now - written).num_seconds() < safe
}

/// Runs `dlq redrive`; returns the exit code.
pub async fn run(settings: &Settings, options: &Options, format: Format) -> Result<u8, CliError> {
    if options.selection.is_empty() && !options.all {
        return Err(CliError::Config(
            "choose dead letters with --id, --projector, --topic or --error-contains, or say --all"
                .into(),
        ));
    }
    let client = crate::database::connect(&settings.database_url).await?;
    if options.yes {
        store::prepare_redrives(&client).await?;
        if !store::lock(&client, LOCK_WAIT).await? {
            return Err(CliError::Refused {
                service: "postgresql".into(),
                status: "busy".into(),
                message: "another redrive is running".into(),
            });
        }
    }
    let letters = store::list(&client, &options.selection, true).await?;
    let mut log = Log::new(&settings.kafka_brokers, &settings.kafka_properties);
    let mut plan = Plan::default();
    let now = Utc::now();
    let bar = output::bar(0, "reading records");
    let grouped = group(letters, options.limit);
    bar.set_length(grouped.len() as u64);
    for (id, letters) in grouped {
        bar.inc(1);
        match log.fetch(&id).await {
            Ok(stored)
                if options.past_dedupe_window
                    || within_window(stored.timestamp_ms, now, settings.dedupe_window_secs) =>
            {
                plan.send.push((stored, letters));
            }
            Ok(_) => plan.too_old.push(id),
            Err(e @ (CliError::NotFound(_) | CliError::Timeout(_))) => {
                plan.unavailable.push((id, e.to_string()));
            }
            Err(other) => return Err(other),
        }
    }
    bar.finish_and_clear();
    let counts = plan.counts();
    if !options.yes {
        match format {
            Format::Json => {
                let mut out = counts;
                out["dry_run"] = json!(true);
                out["ids"] = json!(plan
                    .send
                    .iter()
                    .map(|(s, _)| s.id.to_string())
                    .collect::<Vec<_>>());
                output::print_json(&out);
            }
            Format::Table => {
                print_plan(&plan, &counts);
                println!("dry run: nothing sent; add --yes to redrive");
            }
        }
        return Ok(EXIT_OK);
    }

    let bar = output::bar(plan.send.len() as u64, "redriving");
    let mut sent = Vec::new();
    let mut failed = Vec::new();
    for (record, _) in &plan.send {
        let result = async {
            let to = log.redrive(record).await?;
            let event_id = record
                .header("event_id")
                .and_then(|id| uuid::Uuid::parse_str(&id).ok());
            store::record_redrive(&client, &record.id, event_id, to).await?;
            Ok::<_, CliError>(to)
        }
        .await;
        match result {
            Ok((partition, offset)) => sent.push(json!({
                "id": record.id.to_string(),
                "to": format!("{}:{partition}:{offset}", record.id.topic),
            })),
            Err(error) => {
                failed.push(json!({"id": record.id.to_string(), "error": error.to_string()}))
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    store::unlock(&client).await?;
    let ok = failed.is_empty();
    match format {
        Format::Json => {
            let mut out = counts;
            out["dry_run"] = json!(false);
            out["sent"] = json!(sent.len());
            out["redriven"] = json!(sent);
            out["failed"] = json!(failed);
            output::print_json(&out);
        }
        Format::Table => {
            print_plan(&plan, &counts);
            for s in &sent {
                println!("  {} -> {}", output::cell(&s["id"]), output::cell(&s["to"]));
            }
            println!("redriven {} of {} records", sent.len(), plan.send.len());
            for f in &failed {
                println!(
                    "  failed {}: {}",
                    output::cell(&f["id"]),
                    output::cell(&f["error"])
                );
            }
        }
    }
    Ok(if ok { EXIT_OK } else { EXIT_PROBLEM })
}

fn print_plan(plan: &Plan, counts: &Value) {
    println!(
        "{} records to redrive ({} dead letters)",
        counts["records"], counts["dead_letters"]
    );
    for (projector, n) in counts["by_projector"].as_object().into_iter().flatten() {
        println!("  {projector}: {n}");
    }
    if !plan.too_old.is_empty() {
        println!(
            "{} records left out: older than the dedupe window (PROJECTOR_DEDUPE_WINDOW_SECS); \
             --past-dedupe-window to include them",
            plan.too_old.len()
        );
    }
    for (id, why) in &plan.unavailable {
        println!("left out {id}: {why}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(projector: &str, offset: i64) -> DeadLetter {
        DeadLetter {
            projector: projector.into(),
            version: 1,
            record: RecordId {
                topic: "orders".into(),
                partition: 0,
                offset,
            },
            error: "rejected".into(),
            dead_lettered_at: Utc::now(),
            redriven_to: None,
        }
    }

    #[test]
    fn one_send_per_record_whatever_the_number_of_projectors_in_log_order() {
        let grouped = group(
            vec![
                letter("b", 9),
                letter("a", 3),
                letter("b", 3),
                letter("a", 5),
            ],
            None,
        );
        let offsets: Vec<(i64, usize)> = grouped
            .iter()
            .map(|(id, letters)| (id.offset, letters.len()))
            .collect();
        assert_eq!(offsets, [(3, 2), (5, 1), (9, 1)]);
        assert_eq!(
            group(vec![letter("a", 3), letter("a", 5)], Some(1)).len(),
            1
        );
    }

    #[test]
    fn the_window_counts_from_the_record_with_a_margin() {
        let now = Utc::now();
        let ms = |seconds_ago: i64| {
            Some((now - chrono::TimeDelta::seconds(seconds_ago)).timestamp_millis())
        };
        let week = 7 * 24 * 3600;
        assert!(within_window(ms(60), now, week));
        assert!(!within_window(ms(week as i64 - 1800), now, week));
        assert!(!within_window(None, now, week));
        assert!(!within_window(ms(0), now, 10)); // a window shorter than the margin
    }
}
