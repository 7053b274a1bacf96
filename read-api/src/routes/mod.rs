//! The HTTP routes, one module per resource, and the shared way of answering: a JSON body with
//! the freshness headers of the projection that served it (also on a `404`, which may only
//! mean "not projected yet"), read from the very version those headers name (see [`serve`]).

pub mod customers;
pub mod event_trail;
pub mod events;
pub mod ops;
pub mod orders;
pub mod projections;
pub mod search;
pub mod views;

use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::auth;
use crate::error::ApiError;
use crate::freshness::{Freshness, Wanted};
use crate::state::AppState;

/// Every route of the read API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/orders/{id}", get(orders::by_id))
        .route("/customers/{id}", get(customers::by_id))
        .route("/customers/{id}/orders", get(customers::orders))
        .route("/search/orders", get(search::orders))
        .route("/events", get(events::list))
        .route("/events/{event_id}", get(event_trail::by_id))
        .route("/projections", get(projections::list))
        .route("/projections/{name}", get(projections::one))
        .route("/views/{name}", get(views::list))
        .route("/views/{name}/{key}", get(views::by_key))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .merge(crate::console::routes())
        .fallback(|| async { ApiError::NotFound("route".into()) })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ))
        .layer(middleware::from_fn_with_state(
            factline_service::metrics::READ_API_REQUESTS,
            factline_service::metrics::record_requests,
        ))
        .layer(middleware::from_fn(crate::telemetry::trace))
        .with_state(state)
}

/// The body, or the error, with the freshness headers.
pub fn respond<T: Serialize>(freshness: Freshness, body: Result<T, ApiError>) -> Response {
    match body {
        Ok(body) => (freshness.headers(), axum::Json(body)).into_response(),
        Err(error) => (freshness.headers(), error).into_response(),
    }
}

/// A single path segment, or a `400` naming it.
pub fn segment(name: &str, path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(value) = path.map_err(|e| ApiError::bad(name, e.body_text()))?;
    crate::params::id(name, &value)
}

/// A request's parameters (`allowed` plus `consistent_with` and `wait_ms`) and its
/// read-your-writes request, if any.
pub fn parse(
    state: &AppState,
    query: Option<&str>,
    headers: &axum::http::HeaderMap,
    allowed: &[&str],
) -> Result<(crate::params::Params, Option<crate::freshness::Wanted>), ApiError> {
    let mut names = allowed.to_vec();
    names.extend(["consistent_with", "wait_ms"]);
    let params = crate::params::Params::parse(query, &names)?;
    let wanted = crate::freshness::requested(&params, headers, state.config.consistency_timeout)?;
    Ok((params, wanted))
}

/// Answers from `projector`: waits for the wanted position (if any), then runs `query` on the
/// version that reached it — `query` gets that version number and must read that version's own
/// table or index ([`AppState::table`], [`AppState::index`]). When that read model has gone
/// meanwhile (a swap retired and dropped it), it reads the status again and answers from the
/// version serving now, within the same overall wait.
pub async fn serve<F, Fut, T>(
    state: &AppState,
    projector: &str,
    wanted: Option<Wanted>,
    query: F,
) -> Result<Response, ApiError>
where
    F: Fn(Option<i32>) -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
    T: Serialize,
{
    let deadline = wanted
        .as_ref()
        .map(|(_, wait)| std::time::Instant::now() + *wait);
    let mut retried = false;
    loop {
        let remaining = wanted
            .as_ref()
            .zip(deadline)
            .map(|((position, _), deadline)| {
                (
                    position.clone(),
                    deadline.saturating_duration_since(std::time::Instant::now()),
                )
            });
        let freshness = crate::freshness::ensure(state, projector, remaining).await?;
        let body = query(freshness.version_number()).await;
        if matches!(body, Err(ApiError::ReadModelMissing(_)))
            && freshness.version.is_some()
            && !retried
        {
            retried = true;
            state.board.refreshed(state.config.statement_timeout).await;
            continue;
        }
        return Ok(respond(freshness, body));
    }
}

/// One row of a PostgreSQL view by its key column, as JSON of the `columns` it serves (a
/// comma-separated list: a table may hold bookkeeping columns that are not served), with the
/// freshness of `projector` (after the read-your-writes wait, if asked). `view`, `key` and
/// `columns` are constants of the calling route, never user input.
pub async fn row_by_key(
    state: &AppState,
    query: Option<&str>,
    headers: &axum::http::HeaderMap,
    projector: &str,
    (view, key, columns): (&str, &str, &str),
    id: String,
) -> Result<Response, ApiError> {
    let (_, wanted) = parse(state, query, headers, &[])?;
    serve(state, projector, wanted, |version| {
        let id = id.clone();
        async move {
            let mut db = state.db().await?;
            let sql = format!(
                "SELECT row_to_json(t)::text FROM (SELECT {columns} FROM {} WHERE {key} = $1) t",
                state.table(view, version)
            );
            let statement = db.prepare_cached(&sql).await?;
            let row = db.query_opt(&statement, &[&id]).await?;
            match row {
                Some(row) => raw_json(row.get(0)),
                None => Err(ApiError::NotFound(format!("{key} {id}"))),
            }
        }
    })
    .await
}

/// A row PostgreSQL rendered as JSON text (`row_to_json(t)::text`), passed through to the
/// answer as it is: not parsed into a tree and written out again.
pub fn raw_json(text: String) -> Result<Box<RawValue>, ApiError> {
    RawValue::from_string(text)
        .map_err(|e| ApiError::Internal(format!("PostgreSQL returned invalid JSON: {e}")))
}

/// An Elasticsearch `range` filter on `field` for an optional `[from, to)` window.
pub fn time_range(field: &str, (from, to): crate::params::TimeRange) -> Option<serde_json::Value> {
    if from.is_none() && to.is_none() {
        return None;
    }
    let mut range = serde_json::Map::new();
    if let Some(from) = from {
        range.insert("gte".into(), serde_json::json!(from.to_rfc3339()));
    }
    if let Some(to) = to {
        range.insert("lt".into(), serde_json::json!(to.to_rfc3339()));
    }
    Some(serde_json::json!({"range": {field: range}}))
}
