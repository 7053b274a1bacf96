//! `factline rebuild watch NAME`: follows a projector's rebuild through the read API's
//! `/projections/{name}` until the new version is live (the swap), with a progress bar of
//! events done, total and ETA (the numbers the projector runtime records).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::CliError;
use crate::http::Service;
use crate::output::{self, Format};

/// Which version of `projector` to watch: `version`, else the newest building one.
fn watched(projector: &Value, version: Option<i64>) -> Option<Value> {
    let versions = projector["versions"].as_array()?;
    match version {
        Some(v) => versions.iter().find(|x| x["version"] == v).cloned(),
        None => versions
            .iter()
            .rev()
            .find(|x| x["state"] == "building")
            .cloned(),
    }
}

/// Watches until the version is live; prints one line per change when not on a terminal.
pub async fn watch(
    read_api: &Service,
    name: &str,
    version: Option<i64>,
    every: Duration,
    timeout: Option<Duration>,
    format: Format,
) -> Result<(), CliError> {
    let started = Instant::now();
    let path = format!("/projections/{name}");
    let not_found = |e| match e {
        CliError::NotFound(_) => CliError::NotFound(format!("projector {name}")),
        other => other,
    };
    let projector = read_api.get(&path, &[]).await.map_err(not_found)?;
    let Some(first) = watched(&projector, version) else {
        return Err(CliError::NotFound(match version {
            Some(v) => format!("version {v} of {name}"),
            None => format!("a rebuild of {name} (no version is building)"),
        }));
    };
    let number = first["version"].as_i64().unwrap_or_default();
    let bar = output::bar(0, &format!("{name} v{number}"));
    let mut last_line = String::new();
    let mut current = first;
    loop {
        let done = current["events_done"].as_i64().unwrap_or(0).max(0) as u64;
        let total = current["events_total"].as_i64().unwrap_or(0).max(0) as u64;
        bar.set_length(total.max(done));
        bar.set_position(done);
        let eta = current["rebuild"]["eta_seconds"]
            .as_f64()
            .map_or("-".into(), output::duration);
        let state = current["state"].as_str().unwrap_or("?").to_owned();
        let line = format!("{name} v{number}: {state}, {done}/{total} events, eta {eta}");
        if bar.is_hidden() && line != last_line && format == Format::Table {
            println!("{line}");
        }
        last_line = line;
        if state == "live" {
            bar.finish_and_clear();
            match format {
                Format::Json => output::print_json(&json!({
                    "projector": name, "version": number, "state": "live",
                    "events_done": current["events_done"], "events_total": current["events_total"],
                    "seconds_watched": started.elapsed().as_secs_f64(),
                })),
                Format::Table => println!("{name} v{number} is live (swapped)"),
            }
            return Ok(());
        }
        if state == "retired" {
            bar.finish_and_clear();
            return Err(CliError::Refused {
                service: "the rebuild".into(),
                status: "retired".into(),
                message: format!("{name} v{number} was retired before it went live"),
            });
        }
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            bar.finish_and_clear();
            return Err(CliError::Timeout(format!(
                "{name} v{number} is not live yet ({done}/{total} events)"
            )));
        }
        tokio::time::sleep(every).await;
        let projector = read_api.get(&path, &[]).await.map_err(not_found)?;
        current = watched(&projector, Some(number))
            .ok_or_else(|| CliError::NotFound(format!("version {number} of {name}")))?;
    }
}
