//! `GET /orders/{id}`: one order summary (PostgreSQL view `order_summary`).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;

use crate::error::ApiError;
use crate::routes::{row_by_key, segment};
use crate::state::AppState;

/// The projector serving orders.
pub const PROJECTOR: &str = "order_summary";

/// The columns of `order_summary` an order is made of (the table's `applied_ids` is the
/// projector's bookkeeping, not served).
pub const COLUMNS: &str = "order_id, customer_id, status, currency, total_cents, item_count, \
    placed_at, shipped_at, delivered_at, cancelled_at, cancel_reason, carrier, tracking_id, \
    updated_at";

/// One order.
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
        ("order_summary", "order_id", COLUMNS),
        id,
    )
    .await
}
