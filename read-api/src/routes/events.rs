//! `GET /events`: the event viewer — every event of every topic (Elasticsearch alias
//! `event_index`), newest first, by text, type, key, topic and time range, paginated with
//! `search_after`.

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};

use crate::cursor;
use crate::error::ApiError;
use crate::routes::search::page;
use crate::routes::{parse, serve, time_range};
use crate::state::AppState;

/// The projector serving the event viewer.
pub const PROJECTOR: &str = "event_index";

/// The types of the sort key (timestamp, offset, event id) in a cursor.
const SORT_KEY: [cursor::Kind; 3] = [
    cursor::Kind::Integer,
    cursor::Kind::Integer,
    cursor::Kind::Keyword,
];

/// Lists events, newest first.
pub async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (params, wanted) = parse(
        &state,
        query.as_deref(),
        &headers,
        &[
            "q",
            "type",
            "key",
            "topic",
            "correlation_id",
            "from",
            "to",
            "limit",
            "cursor",
        ],
    )?;
    let text = params.text("q")?;
    let event_type = params.text("type")?;
    let key = params.text("key")?;
    let topic = params.text("topic")?;
    let correlation_id = params.text("correlation_id")?;
    let (from, to) = params.range("from", "to")?;
    let limit = params.limit(state.config.default_page_size, state.config.max_page_size)?;
    let after = params
        .text("cursor")?
        .map(|c| cursor::decode(&c, &SORT_KEY))
        .transpose()?;

    let mut filter = Vec::new();
    if let Some(event_type) = event_type {
        filter.push(json!({"term": {"event_type": event_type}}));
    }
    if let Some(key) = key {
        filter.push(json!({"term": {"key": key}}));
    }
    if let Some(topic) = topic {
        let topic = format!("{}{topic}", state.config.topic_prefix);
        filter.push(json!({"term": {"topic": topic}}));
    }
    if let Some(correlation_id) = correlation_id {
        filter.push(json!({"term": {"correlation_id": correlation_id}}));
    }
    if let Some(range) = time_range("timestamp", (from, to)) {
        filter.push(range);
    }
    let mut bool_query = json!({"filter": filter});
    if let Some(text) = text {
        bool_query["must"] = json!([{"match": {"text": {"query": text}}}]);
    }
    let mut body = json!({
        "query": {"bool": bool_query},
        "sort": [
            {"timestamp": {"order": "desc"}},
            {"offset": {"order": "desc"}},
            {"event_id": {"order": "asc"}}
        ],
        "size": limit + 1,
        "track_total_hits": true
    });
    if let Some(after) = after {
        body["search_after"] = Value::Array(after);
    }
    let (state, body) = (&state, &body);
    serve(state, PROJECTOR, wanted, |version| async move {
        let hits = state
            .search
            .search(&state.index(PROJECTOR, version), body)
            .await?;
        Ok(page(hits, limit))
    })
    .await
}
