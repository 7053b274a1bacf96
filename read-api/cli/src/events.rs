//! `factline events search|tail|show`: the event viewer of the read API (`/events`,
//! `/events/{event_id}`) on the command line.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::error::CliError;
use crate::http::Service;
use crate::output::{self, Format, Table};

/// The filters of `search` and `tail`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Filters {
    /// Event type, e.g. OrderPlaced
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: Option<String>,
    /// Record key (the aggregate id), e.g. o-1
    #[arg(long)]
    pub key: Option<String>,
    /// Full text over the payload
    #[arg(long, value_name = "WORDS")]
    pub text: Option<String>,
    /// Topic (without any deployment prefix)
    #[arg(long)]
    pub topic: Option<String>,
    /// Every event of one request
    #[arg(long)]
    pub correlation_id: Option<String>,
    /// Record time at or after (RFC 3339)
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Record time before (RFC 3339)
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
}

impl Filters {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        for (name, value) in [
            ("type", &self.event_type),
            ("key", &self.key),
            ("q", &self.text),
            ("topic", &self.topic),
            ("correlation_id", &self.correlation_id),
            ("from", &self.from),
            ("to", &self.to),
        ] {
            if let Some(value) = value {
                query.push((name, value.clone()));
            }
        }
        query
    }
}

/// Newest first, at most `limit`, following the read API's cursor across pages.
pub async fn search(
    read_api: &Service,
    filters: &Filters,
    limit: usize,
    format: Format,
) -> Result<(), CliError> {
    let (items, total) = fetch(read_api, filters.query(), limit).await?;
    match format {
        Format::Json => output::print_json(&json!({"items": items, "total": total})),
        Format::Table => {
            println!("{}", table(&items).render());
            println!("{} of {} events", items.len(), output::cell(&total));
        }
    }
    Ok(())
}

/// At most `limit` events of `query`, newest first, and the total the read API counted.
async fn fetch(
    read_api: &Service,
    query: Vec<(&'static str, String)>,
    limit: usize,
) -> Result<(Vec<Value>, Value), CliError> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let mut total = Value::Null;
    while items.len() < limit {
        let mut page_query = query.clone();
        page_query.push(("limit", (limit - items.len()).min(100).to_string()));
        if let Some(cursor) = &cursor {
            page_query.push(("cursor", cursor.clone()));
        }
        let page = read_api.get("/events", &page_query).await?;
        total = page["total"].clone();
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    Ok((items, total))
}

fn table(items: &[Value]) -> Table {
    let mut table = Table::new(&[
        "TIME",
        "TOPIC",
        "PARTITION",
        "OFFSET",
        "TYPE",
        "KEY",
        "EVENT ID",
    ]);
    for e in items {
        table.row(vec![
            output::cell(&e["timestamp"]),
            output::cell(&e["topic"]),
            output::cell(&e["partition"]),
            output::cell(&e["offset"]),
            output::cell(&e["event_type"]),
            output::cell(&e["key"]),
            output::cell(&e["event_id"]),
        ]);
    }
    table
}

/// How far back each poll of `tail` looks again: events of other partitions can become
/// searchable after newer ones (each projector batch and index refresh), so every poll asks
/// for this window before the newest event printed and skips the ids already printed.
pub const TAIL_LOOKBACK: Duration = Duration::from_secs(60);

/// Prints the `last` newest events, then every new one as it is indexed, oldest first,
/// polling every `every`; stops after `max_events` printed events when given.
pub async fn tail(
    read_api: &Service,
    filters: &Filters,
    last: usize,
    every: Duration,
    max_events: Option<usize>,
    format: Format,
) -> Result<(), CliError> {
    let mut printed: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut newest: Option<DateTime<Utc>> = None;
    let mut count = 0usize;
    let (mut recent, _) = fetch(read_api, filters.query(), last.max(1)).await?;
    if last == 0 {
        // remember where "now" is without printing anything
        for e in &recent {
            remember(e, &mut printed, &mut newest);
        }
        recent.clear();
    }
    let mut batch = recent;
    loop {
        batch.reverse(); // oldest first
        for event in batch.drain(..) {
            let Some(id) = event["event_id"].as_str() else {
                continue;
            };
            if printed.contains_key(id) {
                continue;
            }
            remember(&event, &mut printed, &mut newest);
            print_line(&event, format);
            count += 1;
            if max_events.is_some_and(|max| count >= max) {
                return Ok(());
            }
        }
        if let Some(newest) = newest {
            let horizon = newest - TAIL_LOOKBACK;
            printed.retain(|_, at| *at >= horizon);
        }
        tokio::time::sleep(every).await;
        let mut query = filters.query();
        if let Some(newest) = newest {
            query.retain(|(name, _)| *name != "from");
            let from =
                (newest - TAIL_LOOKBACK).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            query.push(("from", from));
        }
        // every event in the window not printed yet, whatever the page count
        let mut fresh = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut page_query = query.clone();
            page_query.push(("limit", "100".into()));
            if let Some(cursor) = &cursor {
                page_query.push(("cursor", cursor.clone()));
            }
            let page = read_api.get("/events", &page_query).await?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            let all_known = items.iter().all(|e| {
                e["event_id"]
                    .as_str()
                    .is_some_and(|id| printed.contains_key(id))
            });
            fresh.extend(items);
            match page["next_cursor"].as_str() {
                Some(next) if !all_known => cursor = Some(next.to_owned()),
                _ => break,
            }
        }
        batch = fresh;
    }
}

fn remember(
    event: &Value,
    printed: &mut HashMap<String, DateTime<Utc>>,
    newest: &mut Option<DateTime<Utc>>,
) {
    let at = event["timestamp"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(Utc::now);
    if let Some(id) = event["event_id"].as_str() {
        printed.insert(id.to_owned(), at);
    }
    *newest = (*newest).max(Some(at));
}

fn print_line(event: &Value, format: Format) {
    match format {
        Format::Json => println!("{event}"),
        Format::Table => println!(
            "{}  {}:{}:{}  {}  {}  {}",
            output::cell(&event["timestamp"]),
            output::cell(&event["topic"]),
            output::cell(&event["partition"]),
            output::cell(&event["offset"]),
            output::cell(&event["event_type"]),
            output::cell(&event["key"]),
            output::cell(&event["event_id"]),
        ),
    }
}

/// Shows one event (by id) or every event of a correlation id, with its payload, headers and
/// what each projector did with it.
pub async fn show(
    read_api: &Service,
    event_id: Option<&str>,
    correlation_id: Option<&str>,
    format: Format,
) -> Result<(), CliError> {
    let ids: Vec<String> = match (event_id, correlation_id) {
        (Some(id), _) => vec![id.to_owned()],
        (None, Some(correlation)) => {
            let query = vec![("correlation_id", correlation.to_owned())];
            let (mut items, _) = fetch(read_api, query, 1000).await?;
            if items.is_empty() {
                return Err(CliError::NotFound(format!(
                    "events with correlation id {correlation}"
                )));
            }
            items.reverse();
            items
                .iter()
                .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
                .collect()
        }
        (None, None) => {
            return Err(CliError::Config(
                "give an event id or --correlation-id".into(),
            ))
        }
    };
    let mut events = Vec::new();
    for id in &ids {
        let path = format!("/events/{id}");
        let event = read_api.get(&path, &[]).await.map_err(|e| match e {
            CliError::NotFound(_) => CliError::NotFound(format!("event {id}")),
            other => other,
        })?;
        events.push(event);
    }
    match format {
        Format::Json if event_id.is_some() => output::print_json(&events[0]),
        Format::Json => output::print_json(&Value::Array(events)),
        Format::Table => {
            let texts: Vec<String> = events.iter().map(describe).collect();
            println!("{}", texts.join("\n\n"));
        }
    }
    Ok(())
}

/// An event as text: where it is, its payload, headers and trail.
pub fn describe(e: &Value) -> String {
    let mut out = format!(
        "{} {}\n  topic {}  partition {}  offset {}  key {}\n  time {}  occurred {}\n  correlation {}\n",
        output::cell(&e["event_type"]),
        output::cell(&e["event_id"]),
        output::cell(&e["topic"]),
        output::cell(&e["partition"]),
        output::cell(&e["offset"]),
        output::cell(&e["key"]),
        output::cell(&e["timestamp"]),
        output::cell(&e["occurred_at"]),
        output::cell(&e["correlation_id"]),
    );
    if e["forgotten"] == true {
        out.push_str("  personal data erased (customer forgotten)\n");
    }
    out.push_str("headers\n");
    let mut seen = HashSet::new();
    for (name, value) in e["headers"].as_object().into_iter().flatten() {
        if seen.insert(name) {
            out.push_str(&format!("  {name}: {}\n", output::cell(value)));
        }
    }
    out.push_str("payload\n");
    let payload = serde_json::to_string_pretty(&e["payload"]).unwrap_or_default();
    for line in payload.lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out.push_str("reached\n");
    let mut table = Table::new(&[
        "PROJECTOR",
        "VERSION",
        "STATE",
        "READ MODELS",
        "OUTCOME",
        "DETAIL",
    ]);
    for r in e["reached"].as_array().into_iter().flatten() {
        let models: Vec<String> = r["read_models"]
            .as_array()
            .into_iter()
            .flatten()
            .map(output::cell)
            .collect();
        let detail = match &r["dead_letter"] {
            Value::Null => String::new(),
            letter => match letter["redriven_to"].as_str() {
                Some(to) => format!("{} (redriven to {to})", output::cell(&letter["error"])),
                None => output::cell(&letter["error"]),
            },
        };
        table.row(vec![
            output::cell(&r["projector"]),
            output::cell(&r["version"]),
            output::cell(&r["state"]),
            models.join(","),
            output::cell(&r["outcome"]),
            detail,
        ]);
    }
    for line in table.render().lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out.trim_end().to_owned()
}
