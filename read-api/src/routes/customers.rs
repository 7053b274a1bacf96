//! `GET /customers/{id}` (PostgreSQL view `customer_stats`) and `GET /customers/{id}/orders`
//! (view `order_summary`, newest first, keyset-paginated on `(placed_at, order_id)` so a page
//! never repeats or skips an order while new ones arrive).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::cursor;
use crate::error::ApiError;
use crate::routes::{parse, raw_json, row_by_key, segment, serve};
use crate::state::AppState;

/// The projector serving customers.
pub const PROJECTOR: &str = "customer_stats";

/// Order statuses accepted by the `status` filter.
pub const STATUSES: &[&str] = &["placed", "shipped", "delivered", "cancelled"];

/// A page of rows, each passed through as PostgreSQL rendered it.
#[derive(Serialize)]
struct Page {
    items: Vec<Box<RawValue>>,
    next_cursor: Option<String>,
}

/// One customer.
pub async fn by_id(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = segment("id", path)?;
    row_by_key(
        &state,
        query.as_deref(),
        &headers,
        PROJECTOR,
        ("customer_stats", "customer_id", "*"),
        id,
    )
    .await
}

/// A customer's orders, newest first.
pub async fn orders(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = segment("id", path)?;
    let (params, wanted) = parse(
        &state,
        query.as_deref(),
        &headers,
        &["status", "placed_from", "placed_to", "limit", "cursor"],
    )?;
    let status = params.choice("status", STATUSES)?;
    let (from, to) = params.range("placed_from", "placed_to")?;
    let limit = params.limit(state.config.default_page_size, state.config.max_page_size)?;
    let after: Option<(DateTime<Utc>, String)> = match params.text("cursor")? {
        None => None,
        Some(c) => {
            let values = cursor::decode(&c, &[cursor::Kind::Text, cursor::Kind::Text])?;
            let at = values[0]
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc));
            match (at, values[1].as_str()) {
                (Some(at), Some(order)) if crate::params::YEARS.contains(&at.year()) => {
                    Some((at, order.to_owned()))
                }
                _ => {
                    return Err(ApiError::bad(
                        "cursor",
                        "not a cursor returned by this API (value 0 is not a time)",
                    ))
                }
            }
        }
    };
    let state = &state;
    let (id, status, after) = (&id, &status, &after);
    serve(
        state,
        crate::routes::orders::PROJECTOR,
        wanted,
        |version| async move {
            let mut db = state.db().await?;
            let (after_at, after_id) = match after {
                Some((at, order)) => (Some(*at), Some(order.clone())),
                None => (None, None),
            };
            let fetch = limit as i64 + 1;
            let sql = format!(
                "SELECT row_to_json(t)::text, t.placed_at, t.order_id FROM ( \
                   SELECT {} FROM {} o \
                   WHERE o.customer_id = $1 AND o.placed_at IS NOT NULL \
                     AND ($2::text IS NULL OR o.status = $2) \
                     AND ($3::timestamptz IS NULL OR o.placed_at >= $3) \
                     AND ($4::timestamptz IS NULL OR o.placed_at < $4) \
                     AND ($5::timestamptz IS NULL OR (o.placed_at, o.order_id) < ($5, $6::text)) \
                   ORDER BY o.placed_at DESC, o.order_id DESC LIMIT $7) t \
                 ORDER BY t.placed_at DESC, t.order_id DESC",
                crate::routes::orders::COLUMNS,
                state.table("order_summary", version)
            );
            let statement = db.prepare_cached(&sql).await?;
            let rows = db
                .query(
                    &statement,
                    &[id, status, &from, &to, &after_at, &after_id, &fetch],
                )
                .await?;
            let more = rows.len() > limit;
            let page = &rows[..rows.len().min(limit)];
            let next = match page.last() {
                Some(last) if more => {
                    let at: DateTime<Utc> = last.get(1);
                    let order: String = last.get(2);
                    Some(cursor::encode(&json!([
                        at.to_rfc3339_opts(SecondsFormat::Micros, true),
                        order
                    ])))
                }
                _ => None,
            };
            let items = page
                .iter()
                .map(|r| raw_json(r.get(0)))
                .collect::<Result<_, _>>()?;
            Ok(Page {
                items,
                next_cursor: next,
            })
        },
    )
    .await
}
