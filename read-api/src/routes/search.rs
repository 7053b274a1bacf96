//! `GET /search/orders`: full text over line item names and customer names, filters on status,
//! customer, placement time and total, sorting and `search_after` pagination (Elasticsearch
//! alias `order_search`). User text goes into `match` queries as a value, never as query syntax.

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};

use crate::cursor;
use crate::error::ApiError;
use crate::routes::customers::STATUSES;
use crate::routes::{parse, serve, time_range};
use crate::state::AppState;

/// The projector serving order search.
pub const PROJECTOR: &str = "order_search";

/// Accepted `sort` values (`-` = descending).
pub const SORTS: &[&str] = &["placed_at", "-placed_at", "total_cents", "-total_cents"];

/// Searches orders.
pub async fn orders(
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
            "status",
            "customer_id",
            "placed_from",
            "placed_to",
            "total_min",
            "total_max",
            "sort",
            "limit",
            "cursor",
        ],
    )?;
    let text = params.text("q")?;
    let status = params.choice("status", STATUSES)?;
    let customer = params.text("customer_id")?;
    let (from, to) = params.range("placed_from", "placed_to")?;
    let total_min = params.int("total_min", 0, i64::MAX)?;
    let total_max = params.int("total_max", 0, i64::MAX)?;
    let sort = params
        .choice("sort", SORTS)?
        .unwrap_or_else(|| "-placed_at".into());
    let limit = params.limit(state.config.default_page_size, state.config.max_page_size)?;
    let after = params
        .text("cursor")?
        // placed_at (a date) and total_cents both sort as integers, then the order id
        .map(|c| cursor::decode(&c, &[cursor::Kind::Integer, cursor::Kind::Keyword]))
        .transpose()?;

    let mut filter = vec![json!({"exists": {"field": "placed_at"}})];
    if let Some(status) = status {
        filter.push(json!({"term": {"status": status}}));
    }
    if let Some(customer) = customer {
        filter.push(json!({"term": {"customer_id": customer}}));
    }
    if let Some(range) = time_range("placed_at", (from, to)) {
        filter.push(range);
    }
    if total_min.is_some() || total_max.is_some() {
        let mut range = serde_json::Map::new();
        if let Some(min) = total_min {
            range.insert("gte".into(), json!(min));
        }
        if let Some(max) = total_max {
            range.insert("lte".into(), json!(max));
        }
        filter.push(json!({"range": {"total_cents": range}}));
    }
    let mut bool_query = json!({"filter": filter});
    if let Some(text) = text {
        bool_query["must"] = json!([{"bool": {
            "should": [
                {"match": {"item_names": {"query": text}}},
                {"match": {"customer_name": {"query": text}}}
            ],
            "minimum_should_match": 1
        }}]);
    }
    let (field, order) = match sort.strip_prefix('-') {
        Some(field) => (field, "desc"),
        None => (sort.as_str(), "asc"),
    };
    let mut body = json!({
        "query": {"bool": bool_query},
        "sort": [{field: {"order": order}}, {"order_id": {"order": "asc"}}],
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

/// A page of `limit` items with the cursor of the next one (hits hold `limit + 1` at most).
pub fn page(hits: crate::es::Hits, limit: usize) -> Value {
    let more = hits.hits.len() > limit;
    let page: Vec<(Value, Value)> = hits.hits.into_iter().take(limit).collect();
    let next = match page.last() {
        Some((_, sort)) if more => Some(cursor::encode(sort)),
        _ => None,
    };
    let items: Vec<Value> = page.into_iter().map(|(doc, _)| doc).collect();
    json!({"items": items, "total": hits.total, "next_cursor": next})
}
