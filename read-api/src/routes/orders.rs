//! `GET /orders/{id}`: one order summary (PostgreSQL view `order_summary`).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;

use crate::error::ApiError;
use crate::freshness;
use crate::routes::{parse, respond, segment};
use crate::state::AppState;

/// The projector serving orders.
pub const PROJECTOR: &str = "order_summary";

/// One order.
pub async fn by_id(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = segment("id", path)?;
    let (_, wanted) = parse(&state, query.as_deref(), &headers, &[])?;
    let freshness = freshness::ensure(&state, PROJECTOR, wanted).await?;
    let body = async {
        let client = state.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT to_jsonb(t) FROM order_summary t WHERE order_id = $1",
                &[&id],
            )
            .await?;
        row.map(|r| r.get(0))
            .ok_or_else(|| ApiError::NotFound(format!("order {id}")))
    }
    .await;
    Ok(respond(freshness, body))
}
