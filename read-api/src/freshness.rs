//! Freshness on every answer, and read-your-writes on request.
//!
//! An answer served from a projection carries headers saying which version answered, where it
//! stands in the log and how far behind it is:
//! `Factline-Projection: order_summary/v1`, `Factline-Position: orders:0:42,orders:1:17`
//! (next offset per partition), `Factline-Lag-Events`, `Factline-Lag-Seconds`.
//! With a position token (`consistent_with` parameter or `Factline-Consistent-With` header)
//! the answer waits until the projection has applied that record, up to a bounded timeout,
//! and says so with a 503 and the current freshness when it has not.
//!
//! The version that reached the position is the version queried: routes read that version's
//! own table or index (not the view or alias, which a rebuild may swap to a newer version that
//! has not applied the write yet), so read-your-writes holds across a swap. Every answer carries
//! all four headers; a lag the read API cannot know yet (a topic whose Kafka watermarks it has
//! not fetched, e.g. Kafka unreachable) is `unknown`.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use factline_schemas::Position;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::params::Params;
use crate::state::AppState;
use crate::status::{Snapshot, VersionStatus};

/// The value of a lag header the read API cannot know yet.
pub const UNKNOWN: &str = "unknown";

/// The header carrying a position token.
pub const CONSISTENT_WITH: &str = "factline-consistent-with";

/// How fresh an answer is.
#[derive(Debug, Clone)]
pub struct Freshness {
    /// The projector that answered.
    pub projector: String,
    /// The version that answered, when known.
    pub version: Option<VersionStatus>,
    /// Records not applied yet, when known.
    pub lag_events: Option<i64>,
    /// Age of the oldest record not applied yet, when known.
    pub lag_seconds: Option<f64>,
}

impl Freshness {
    fn of(state: &AppState, snapshot: &Snapshot, projector: &str) -> Freshness {
        let version = snapshot.serving(projector).cloned();
        let lag = version
            .as_ref()
            .and_then(|v| state.watermarks.lag(v, chrono::Utc::now()));
        Freshness {
            projector: projector.to_owned(),
            lag_events: lag.as_ref().map(|l| l.events),
            lag_seconds: lag.map(|l| l.seconds),
            version,
        }
    }

    /// The version that answers, when known.
    pub fn version_number(&self) -> Option<i32> {
        self.version.as_ref().map(|v| v.version)
    }

    /// The freshness as JSON (in error bodies).
    pub fn to_json(&self) -> Value {
        json!({
            "projection": self.projector,
            "version": self.version.as_ref().map(|v| v.version),
            "position": self.position(),
            "lag_events": self.lag_events,
            "lag_seconds": self.lag_seconds,
        })
    }

    fn position(&self) -> String {
        self.version
            .as_ref()
            .map(|v| {
                v.positions
                    .iter()
                    .map(|((t, p), next)| format!("{t}:{p}:{next}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    }

    /// The freshness headers.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let mut put = |name: &'static str, value: String| {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        };
        match &self.version {
            Some(v) => put(
                "factline-projection",
                format!("{}/v{}", self.projector, v.version),
            ),
            None => put("factline-projection", self.projector.clone()),
        }
        put("factline-position", self.position());
        put(
            "factline-lag-events",
            self.lag_events
                .map_or_else(|| UNKNOWN.to_owned(), |events| events.to_string()),
        );
        put(
            "factline-lag-seconds",
            self.lag_seconds
                .map_or_else(|| UNKNOWN.to_owned(), |seconds| format!("{seconds:.3}")),
        );
        headers
    }
}

/// A read-your-writes request: the position to reach and how long to wait for it.
pub type Wanted = (Position, Duration);

/// Reads the position token and the wait from a request, if any.
pub fn requested(
    params: &Params,
    headers: &HeaderMap,
    max_wait: Duration,
) -> Result<Option<Wanted>, ApiError> {
    let wait = match params.int("wait_ms", 0, max_wait.as_millis() as i64)? {
        Some(ms) => Duration::from_millis(ms as u64),
        None => max_wait,
    };
    let from_param = params.text("consistent_with")?;
    let from_header = match headers.get(CONSISTENT_WITH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad("Factline-Consistent-With", "not ASCII"))?
                .trim()
                .to_owned(),
        ),
    };
    let (name, token) = match (from_param, from_header) {
        (Some(p), _) => ("consistent_with", p),
        (None, Some(h)) if !h.is_empty() => ("Factline-Consistent-With", h),
        _ => return Ok(None),
    };
    let position = Position::from_token(&token).map_err(|e| ApiError::bad(name, e.to_string()))?;
    Ok(Some((position, wait)))
}

/// The freshness of `projector`, after waiting for `position` when one is given.
pub async fn ensure(
    state: &AppState,
    projector: &str,
    wanted: Option<Wanted>,
) -> Result<Freshness, ApiError> {
    let Some((position, wait)) = wanted else {
        return Ok(Freshness::of(state, &state.board.current(), projector));
    };
    let reached = |snapshot: &Snapshot| {
        snapshot.serving(projector).is_some_and(|v| {
            v.positions
                .get(&(position.topic.clone(), position.partition))
                .is_some_and(|next| *next > position.offset)
        })
    };
    let snapshot = state.board.current();
    if let Some(version) = snapshot.serving(projector) {
        if !version.topics.is_empty() && !version.topics.contains(&position.topic) {
            return Err(ApiError::bad(
                "consistent_with",
                format!(
                    "the position is in topic {}, which {projector} does not read",
                    position.topic
                ),
            ));
        }
    }
    if reached(&snapshot) {
        return Ok(Freshness::of(state, &snapshot, projector));
    }
    let (mut updates, _fast) = state.board.watch();
    let waited = tokio::time::timeout(wait, async {
        // the snapshot that shows the position reached names the version to query
        updates.wait_for(|s| reached(s)).await.map(|s| s.clone())
    })
    .await;
    match waited {
        Ok(Ok(snapshot)) => Ok(Freshness::of(state, &snapshot, projector)),
        _ => {
            let freshness = Freshness::of(state, &state.board.current(), projector);
            metrics::counter!("factline_read_api_consistency_timeouts_total", "projection" => projector.to_owned())
                .increment(1);
            Err(ApiError::NotYetConsistent {
                message: format!(
                    "{projector} has not reached {}:{}:{} within {} ms",
                    position.topic,
                    position.partition,
                    position.offset,
                    wait.as_millis()
                ),
                detail: freshness.to_json(),
            })
        }
    }
}

/// A JSON answer with its freshness headers.
pub struct Answer {
    /// The body.
    pub body: Value,
    /// How fresh it is.
    pub freshness: Freshness,
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        (self.freshness.headers(), axum::Json(self.body)).into_response()
    }
}
