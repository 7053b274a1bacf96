//! `GET /projections` and `GET /projections/{name}`: every projector version with its state,
//! positions, live lag (events and seconds), rebuild progress and dead-lettered count (all, and
//! those not redriven yet).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::params::Params;
use crate::routes::segment;
use crate::state::AppState;
use crate::status::{Snapshot, VersionStatus};

/// Every projector.
pub async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    Params::parse(query.as_deref(), &[])?;
    let snapshot = state.board.current();
    let items: Vec<Value> = snapshot
        .projectors
        .keys()
        .map(|name| describe(&state, &snapshot, name))
        .collect();
    Ok(Json(
        json!({"projections": items, "read_at": snapshot.read_at}),
    ))
}

/// One projector.
pub async fn one(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let name = segment("name", path)?;
    Params::parse(query.as_deref(), &[])?;
    let snapshot = state.board.current();
    if !snapshot.projectors.contains_key(&name) {
        return Err(ApiError::NotFound(format!("projection {name}")));
    }
    Ok(Json(describe(&state, &snapshot, &name)))
}

fn describe(state: &AppState, snapshot: &Snapshot, name: &str) -> Value {
    let serving = snapshot.serving(name).map(|v| v.version);
    let versions: Vec<Value> = snapshot.projectors[name]
        .iter()
        .map(|v| version(state, v, serving == Some(v.version)))
        .collect();
    json!({"name": name, "serving_version": serving, "versions": versions})
}

fn version(state: &AppState, v: &VersionStatus, serving: bool) -> Value {
    let lag = state.watermarks.lag(v, chrono::Utc::now());
    let positions: Vec<Value> = match &lag {
        Some(lag) => lag
            .partitions
            .iter()
            .map(|((topic, partition), (next, high))| {
                json!({"topic": topic, "partition": partition, "next_offset": next,
                       "high_watermark": high, "lag": (high - next).max(0)})
            })
            .collect(),
        None => v
            .positions
            .iter()
            .map(|((topic, partition), next)| {
                json!({"topic": topic, "partition": partition, "next_offset": next})
            })
            .collect(),
    };
    let rebuild = (v.state == "building").then(|| {
        json!({
            "events_done": v.events_done,
            "events_total": v.events_total,
            "eta_seconds": v.eta_seconds,
            "progress_at": v.progress_at,
        })
    });
    json!({
        "version": v.version,
        "state": v.state,
        "serving": serving,
        "sink": v.sink,
        "topics": v.topics,
        "read_models": v.read_models,
        "lag_events": lag.as_ref().map(|l| l.events),
        "lag_seconds": lag.as_ref().map(|l| l.seconds),
        "positions": positions,
        "positions_updated_at": v.updated_at,
        "rebuild": rebuild,
        "events_done": v.events_done,
        "events_total": v.events_total,
        "dead_lettered": v.dead_lettered,
        "dead_letters_pending": v.dead_letters_pending,
        "dead_letters_parked": v.dead_letters_parked,
    })
}
