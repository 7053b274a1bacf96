//! The HTTP surface: `POST /commands/{name}`, `POST /commands` (batch), `/healthz`, `/readyz`,
//! `/metrics`, `/openapi.json`; bearer authentication on the command routes.

use crate::auth::Caller;
use crate::batch::{parse_batch, BatchResponse, ItemResult};
use crate::error::ApiError;
use crate::extract::{body_kind, parse_json, read_body, BodyKind};
use crate::ingest::{record, submit, submit_all, Accepted, Submission};
use crate::request_meta::RequestMeta;
use crate::state::AppState;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::json;
use std::time::Instant;
use tower_http::trace::TraceLayer;

/// The router, with every route and layer.
pub fn app(state: AppState) -> Router {
    let commands = Router::new()
        .route(
            "/commands/{command}",
            post(single).layer(DefaultBodyLimit::max(state.config.max_body_bytes)),
        )
        .route(
            "/commands",
            post(batch).layer(DefaultBodyLimit::max(state.config.max_batch_body_bytes)),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .merge(commands)
        .fallback(|| async { ApiError::NotFound })
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Authenticates the bearer token and attaches the [`Caller`] to the request.
async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = state
        .api_keys
        .authenticate(header)
        .map_err(ApiError::Unauthorized)?;
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

/// `POST /commands/{name}`.
async fn single(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let started = Instant::now();
    let Ok(Path(command)) = path else {
        return Err(ApiError::NotFound);
    };
    let result = single_inner(&state, &caller, &command, request).await;
    let status = match &result {
        Ok(_) => 202,
        Err(error) => error.status().as_u16(),
    };
    record(&state, &command, status, started);
    result.map(|accepted| (StatusCode::ACCEPTED, Json(accepted)))
}

async fn single_inner(
    state: &AppState,
    caller: &Caller,
    command: &str,
    request: Request,
) -> Result<Accepted, ApiError> {
    if state.catalog.command(command).is_none() {
        return Err(ApiError::UnknownCommand(command.to_string()));
    }
    if !caller.allows(command) {
        return Err(ApiError::Forbidden(command.to_string()));
    }
    body_kind(request.headers(), &[BodyKind::Json])?;
    let meta = RequestMeta::from_headers(request.headers())?;
    let bytes = read_body(request, state.config.max_body_bytes).await?;
    let body = parse_json(&bytes)?;
    submit(
        state,
        caller,
        Submission {
            command: command.to_string(),
            body,
            meta,
        },
    )
    .await
}

/// `POST /commands`: every item produced concurrently, one result per item.
async fn batch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> Result<Json<BatchResponse>, ApiError> {
    let kind = body_kind(request.headers(), &[BodyKind::Json, BodyKind::Ndjson])?;
    if request.headers().contains_key("idempotency-key") {
        // Ignoring it would let a client believe retrying the whole batch is safe.
        return Err(ApiError::BadRequest(
            "the batch endpoint does not read the Idempotency-Key header: give each item its \
             own idempotency_key"
                .into(),
        ));
    }
    let meta = RequestMeta::from_headers(request.headers())?;
    let bytes = read_body(request, state.config.max_batch_body_bytes).await?;
    let items = parse_batch(&bytes, kind, state.config.max_batch_items)?;
    drop(bytes);
    let started = Instant::now();
    let submissions = items
        .into_iter()
        .map(|item| {
            let item = item?;
            let mut meta = meta.clone();
            meta.idempotency_key = item.idempotency_key;
            Ok(Submission {
                command: item.command,
                body: item.body,
                meta,
            })
        })
        .collect();
    let results: Vec<ItemResult> = submit_all(&state, &caller, submissions, started)
        .await
        .into_iter()
        .enumerate()
        .map(|(index, result)| ItemResult::new(index, result))
        .collect();
    let accepted = results.iter().filter(|r| r.is_accepted()).count();
    Ok(Json(BatchResponse {
        accepted,
        failed: results.len() - accepted,
        results,
    }))
}

/// `GET /healthz`: the process is alive.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: broker metadata and the registry answer within the readiness timeout.
async fn readyz(State(state): State<AppState>) -> Response {
    let timeout = state.config.ready_timeout();
    let kafka = async {
        match tokio::time::timeout(timeout, state.kafka.check(timeout)).await {
            Ok(Ok(n)) if n > 0 => Ok(format!("ok ({n} brokers)")),
            Ok(Ok(_)) => Err("no brokers in metadata".to_string()),
            Ok(Err(error)) => Err(error),
            Err(_) => Err("metadata request timed out".to_string()),
        }
    };
    let registry = async {
        let url = format!(
            "{}/subjects",
            state.config.schema_registry_url.trim_end_matches('/')
        );
        match state.http.get(url).send().await {
            Ok(response) if response.status().is_success() => Ok("ok".to_string()),
            Ok(response) => Err(format!("status {}", response.status())),
            Err(error) => Err(error.to_string()),
        }
    };
    let (kafka, registry) = tokio::join!(kafka, registry);
    let ready = kafka.is_ok() && registry.is_ok();
    let show = |r: Result<String, String>| match r {
        Ok(s) => json!({"ok": true, "detail": s}),
        Err(e) => json!({"ok": false, "detail": e}),
    };
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "kafka": show(kafka),
        "registry": show(registry),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(State(state): State<AppState>) -> Response {
    state.metrics.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// `GET /openapi.json`.
async fn openapi(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.openapi.clone())
}
