//! `factline send FILE`: sends commands from an NDJSON file through the write side's batch
//! endpoint (`POST /commands`), one line per command in the endpoint's own item shape
//! `{"command": "...", "body": {...}, "idempotency_key"?: "..."}`, in batches, at most
//! `--rate` commands a second, with a progress bar and a summary of the failures by line.
//!
//! A whole batch answered `503` (the write side's backpressure) is sent again after its
//! `Retry-After`: the write side wrote none of it. An item answered `503` inside a batch is
//! retried the same way when it carries an `idempotency_key` (a retry cannot write it twice);
//! without one it is reported as failed, since it may have been written.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::{CliError, EXIT_OK, EXIT_PROBLEM};
use crate::http::Service;
use crate::output::{self, Format};

/// How many times a batch or an item is sent again after a `503`.
const RETRIES: u32 = 10;

/// One line of the file.
#[derive(Debug, Clone)]
struct Line {
    number: usize,
    text: String,
    keyed: bool,
}

/// The options of `send`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The NDJSON file, one {"command", "body", "idempotency_key"?} per line (- for stdin)
    pub file: String,
    /// At most this many commands a second (no limit by default)
    #[arg(long, value_name = "COMMANDS_PER_SECOND")]
    pub rate: Option<f64>,
    /// Commands per request
    #[arg(long, default_value_t = 100, value_name = "COMMANDS")]
    pub batch_size: usize,
}

/// Runs `send`; returns the exit code.
pub async fn run(write_side: &Service, options: &Options, format: Format) -> Result<u8, CliError> {
    let text = if options.file == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(&options.file)
    }
    .map_err(|e| CliError::File {
        path: options.file.clone(),
        message: e.to_string(),
    })?;
    if options.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err(CliError::Config("--rate must be above 0".into()));
    }
    let lines: Vec<Line> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| Line {
            number: i + 1,
            text: l.to_owned(),
            keyed: serde_json::from_str::<Value>(l)
                .ok()
                .is_some_and(|v| v["idempotency_key"].is_string()),
        })
        .collect();
    let started = Instant::now();
    let bar = output::bar(lines.len() as u64, "sending");
    let mut accepted = 0usize;
    let mut failures: Vec<Value> = Vec::new();
    let mut sent = 0usize;
    for chunk in lines.chunks(options.batch_size.max(1)) {
        if let Some(rate) = options.rate {
            // pace: the commands sent so far may not be ahead of the rate
            let due = Duration::from_secs_f64(sent as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let mut pending: Vec<Line> = chunk.to_vec();
        let mut attempt = 0;
        while !pending.is_empty() {
            let body: String = pending.iter().map(|l| format!("{}\n", l.text)).collect();
            let answer = write_side
                .post("/commands", "application/x-ndjson", body.into_bytes())
                .await?;
            if answer.status == 503 && attempt < RETRIES {
                attempt += 1;
                tokio::time::sleep(answer.retry_after.unwrap_or(Duration::from_secs(1))).await;
                continue;
            }
            if !(200..300).contains(&answer.status) {
                // the whole request was refused: every line of it failed the same way
                let error = answer
                    .body
                    .get("error")
                    .cloned()
                    .unwrap_or(answer.body.clone());
                for line in &pending {
                    failures.push(
                        json!({"line": line.number, "status": answer.status, "error": error}),
                    );
                }
                bar.inc(pending.len() as u64);
                break;
            }
            let mut retry = Vec::new();
            let mut wait = Duration::ZERO;
            for result in answer.body["results"].as_array().into_iter().flatten() {
                let index = result["index"].as_u64().unwrap_or(0) as usize;
                let Some(line) = pending.get(index) else {
                    continue;
                };
                let status = result["status"].as_u64().unwrap_or(0);
                if status == 202 {
                    accepted += 1;
                    bar.inc(1);
                } else if status == 503 && line.keyed && attempt < RETRIES {
                    wait = Duration::from_secs(1);
                    retry.push(line.clone());
                } else {
                    let mut failure = result.clone();
                    if let Some(map) = failure.as_object_mut() {
                        map.remove("index");
                        map.insert("line".into(), json!(line.number));
                    }
                    failures.push(failure);
                    bar.inc(1);
                }
            }
            pending = retry;
            if !pending.is_empty() {
                attempt += 1;
                tokio::time::sleep(wait).await;
            }
        }
        sent += chunk.len();
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    match format {
        Format::Json => output::print_json(&json!({
            "commands": lines.len(),
            "accepted": accepted,
            "failed": failures.len(),
            "failures": failures,
            "seconds": seconds,
        })),
        Format::Table => {
            println!(
                "sent {} commands in {}: {accepted} accepted, {} failed",
                lines.len(),
                output::duration(seconds),
                failures.len()
            );
            for f in failures.iter().take(20) {
                println!(
                    "  line {}: {} {}",
                    f["line"],
                    output::cell(&f["status"]),
                    summary(f)
                );
            }
            if failures.len() > 20 {
                println!(
                    "  … and {} more (--output json lists every one)",
                    failures.len() - 20
                );
            }
        }
    }
    Ok(if failures.is_empty() {
        EXIT_OK
    } else {
        EXIT_PROBLEM
    })
}

/// A failure's error on one line: the message and the first problems.
fn summary(failure: &Value) -> String {
    let mut text = output::cell(&failure["error"]);
    let problems: Vec<String> = failure["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .take(3)
        .map(|p| {
            format!(
                "{} {}",
                output::cell(&p["path"]),
                output::cell(&p["message"])
            )
        })
        .collect();
    if !problems.is_empty() {
        text = format!("{text} ({})", problems.join("; "));
    }
    text
}
