//! `factline status`: every projector version from the read API's `/projections`, judged
//! healthy or not (see [`Thresholds`] and [`problems`]), as a table or JSON.

use serde_json::{json, Value};

use crate::error::{CliError, EXIT_OK, EXIT_PROBLEM};
use crate::http::Service;
use crate::output::{self, Format, Table};

/// The dead-letter column: pending of all, and how many of the pending are parked.
fn dead_letters_cell(row: &Value) -> String {
    let parked = row["dead_letters_parked"].as_i64().unwrap_or(0);
    let mut cell = format!(
        "{} pending / {}",
        output::cell(&row["dead_letters_pending"]),
        output::cell(&row["dead_lettered"])
    );
    if parked > 0 {
        cell.push_str(&format!(" ({parked} parked)"));
    }
    cell
}

/// What counts as unhealthy (the help text of `status` says the same).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Thresholds {
    /// A live version whose oldest unapplied record is older than this is unhealthy
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    pub max_lag_seconds: f64,
    /// A live version with more unapplied records than this is unhealthy (no limit by default)
    #[arg(long, value_name = "EVENTS")]
    pub max_lag_events: Option<i64>,
    /// A live or building version with more dead letters not yet redriven is unhealthy
    #[arg(long, default_value_t = 0, value_name = "COUNT")]
    pub max_dead_letters: i64,
    /// List retired versions too (never unhealthy)
    #[arg(long)]
    pub all: bool,
}

/// The help text saying exactly what unhealthy means.
pub const UNHEALTHY_HELP: &str = "\
Unhealthy, and exit code 1, when:
  - no projector has registered in PostgreSQL yet;
  - a live or building version's lag is unknown (the read API cannot read Kafka's watermarks);
  - a live version lags more than --max-lag-seconds (default 60: the age of its oldest record
    not applied yet) or more than --max-lag-events (no limit by default);
  - a live or building version has more dead letters not yet redriven than
    --max-dead-letters (default 0).
A building version (a rebuild) may lag: its progress and ETA are shown, not judged.
Retired versions are never judged (listed with --all).";

/// The problems of one version (empty: healthy).
pub fn problems(version: &Value, limits: &Thresholds) -> Vec<String> {
    let state = version["state"].as_str().unwrap_or("");
    if state == "retired" {
        return Vec::new();
    }
    let mut found = Vec::new();
    match (
        version["lag_events"].as_i64(),
        version["lag_seconds"].as_f64(),
    ) {
        (Some(events), Some(seconds)) if state == "live" => {
            if seconds > limits.max_lag_seconds {
                found.push(format!(
                    "lags {} (more than {})",
                    output::duration(seconds),
                    output::duration(limits.max_lag_seconds)
                ));
            }
            if let Some(max) = limits.max_lag_events.filter(|max| events > *max) {
                found.push(format!("lags {events} events (more than {max})"));
            }
        }
        (Some(_), Some(_)) => {}
        _ => found.push("lag unknown (kafka watermarks not readable)".into()),
    }
    let pending = version["dead_letters_pending"]
        .as_i64()
        .or_else(|| version["dead_lettered"].as_i64())
        .unwrap_or(0);
    if pending > limits.max_dead_letters {
        found.push(format!("{pending} dead letters pending"));
    }
    found
}

/// Runs `status`; returns the exit code.
pub async fn run(read_api: &Service, limits: &Thresholds, format: Format) -> Result<u8, CliError> {
    let body = read_api.get("/projections", &[]).await?;
    let mut rows = Vec::new();
    let mut all_problems = Vec::new();
    for projection in body["projections"].as_array().into_iter().flatten() {
        let name = projection["name"].as_str().unwrap_or("?");
        for version in projection["versions"].as_array().into_iter().flatten() {
            if version["state"] == "retired" && !limits.all {
                continue;
            }
            let found = problems(version, limits);
            all_problems.extend(
                found
                    .iter()
                    .map(|p| format!("{name} v{}: {p}", version["version"])),
            );
            rows.push(json!({
                "projector": name,
                "version": version["version"],
                "state": version["state"],
                "serving": version["serving"],
                "sink": version["sink"],
                "lag_events": version["lag_events"],
                "lag_seconds": version["lag_seconds"],
                "rebuild": version["rebuild"],
                "dead_lettered": version["dead_lettered"],
                "dead_letters_pending": version["dead_letters_pending"],
                "dead_letters_parked": version["dead_letters_parked"],
                "healthy": found.is_empty(),
                "problems": found,
            }));
        }
    }
    if rows.is_empty() {
        all_problems.push("no projector has registered yet".into());
    }
    let healthy = all_problems.is_empty();
    match format {
        Format::Json => output::print_json(&json!({
            "healthy": healthy,
            "problems": all_problems,
            "projections": rows,
            "read_at": body["read_at"],
        })),
        Format::Table => {
            println!("{}", table(&rows).render());
            if healthy {
                println!("healthy");
            } else {
                println!("unhealthy:");
                for problem in &all_problems {
                    println!("  {problem}");
                }
            }
        }
    }
    Ok(if healthy { EXIT_OK } else { EXIT_PROBLEM })
}

fn table(rows: &[Value]) -> Table {
    let mut table = Table::new(&[
        "PROJECTOR",
        "VERSION",
        "STATE",
        "LAG EVENTS",
        "LAG",
        "REBUILD",
        "DEAD LETTERS",
        "HEALTH",
    ]);
    for row in rows {
        let state = match row["serving"].as_bool() {
            Some(true) => format!("{} (serving)", output::cell(&row["state"])),
            _ => output::cell(&row["state"]),
        };
        let lag = row["lag_seconds"]
            .as_f64()
            .map_or("-".into(), output::duration);
        table.row(vec![
            output::cell(&row["projector"]),
            output::cell(&row["version"]),
            state,
            output::cell(&row["lag_events"]),
            lag,
            rebuild_cell(&row["rebuild"]),
            dead_letters_cell(row),
            if row["healthy"] == true {
                "ok".into()
            } else {
                "UNHEALTHY".into()
            },
        ]);
    }
    table
}

/// `done/total (pct%), eta …` of a rebuild, or `-`.
pub fn rebuild_cell(rebuild: &Value) -> String {
    let (Some(done), Some(total)) = (
        rebuild["events_done"].as_i64(),
        rebuild["events_total"].as_i64(),
    ) else {
        return if rebuild.is_null() {
            "-".into()
        } else {
            "starting".into()
        };
    };
    let pct = if total > 0 {
        100.0 * done as f64 / total as f64
    } else {
        100.0
    };
    let eta = rebuild["eta_seconds"]
        .as_f64()
        .map_or("-".into(), output::duration);
    format!("{done}/{total} ({pct:.0}%), eta {eta}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Thresholds {
        Thresholds {
            max_lag_seconds: 60.0,
            max_lag_events: None,
            max_dead_letters: 0,
            all: false,
        }
    }

    #[test]
    fn a_caught_up_live_version_is_healthy() {
        let v = json!({"state": "live", "lag_events": 0, "lag_seconds": 0.0,
                       "dead_lettered": 2, "dead_letters_pending": 0});
        assert!(problems(&v, &limits()).is_empty());
    }

    #[test]
    fn lag_dead_letters_and_unknown_lag_are_problems() {
        let v = json!({"state": "live", "lag_events": 500, "lag_seconds": 75.0,
                       "dead_lettered": 1, "dead_letters_pending": 1});
        assert_eq!(
            problems(&v, &limits()),
            ["lags 1m15s (more than 1m00s)", "1 dead letters pending"]
        );
        let strict = Thresholds {
            max_lag_events: Some(100),
            ..limits()
        };
        assert_eq!(problems(&v, &strict).len(), 3);
        let unknown = json!({"state": "building", "lag_events": null, "lag_seconds": null});
        assert_eq!(
            problems(&unknown, &limits()),
            ["lag unknown (kafka watermarks not readable)"]
        );
    }

    #[test]
    fn a_rebuild_may_lag_and_a_retired_version_is_never_judged() {
        let building = json!({"state": "building", "lag_events": 9000, "lag_seconds": 900.0});
        assert!(problems(&building, &limits()).is_empty());
        let retired = json!({"state": "retired", "lag_events": null, "dead_letters_pending": 5});
        assert!(problems(&retired, &limits()).is_empty());
    }

    #[test]
    fn rebuild_progress_reads_as_done_total_and_eta() {
        let r = json!({"events_done": 250, "events_total": 1000, "eta_seconds": 30.0});
        assert_eq!(rebuild_cell(&r), "250/1000 (25%), eta 30.0s");
        assert_eq!(rebuild_cell(&Value::Null), "-");
    }
}
