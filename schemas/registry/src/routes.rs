//! The REST routes, mapped onto the store with Confluent's request and answer shapes.

use crate::compatibility::Level;
use crate::error::RegistryError;
use crate::store::{Store, Visibility};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

type Answer = Result<Response, RegistryError>;

/// The registry's routes, with `/metrics` (Prometheus: requests by route and status, and
/// their durations, as `factline_registry_*`).
pub fn router(store: Store) -> Router {
    // installed before the first request is counted
    let _ = factline_service::metrics::prometheus();
    Router::new()
        .route("/", get(|| async { ok(json!({})) }))
        .route("/metrics", get(metrics))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(get_version_schema),
        )
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_id))
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatibility),
        )
        .route("/config", get(get_global_config).put(put_global_config))
        .route(
            "/config/{subject}",
            get(get_subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .fallback(|| async { RegistryError::NoSuchRoute })
        .layer(axum::middleware::from_fn_with_state(
            store.timeout(),
            deadline,
        ))
        .layer(axum::middleware::from_fn_with_state(
            factline_service::metrics::REGISTRY_REQUESTS,
            factline_service::metrics::record_requests,
        ))
        .with_state(store)
}

/// `GET /metrics`: Prometheus text format.
async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        factline_service::metrics::prometheus().render(),
    )
        .into_response()
}

/// Bounds every request by the store's timeout: a database that does not answer gives a 503
/// with `Retry-After`, never a hung request.
async fn deadline(
    State(limit): State<std::time::Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => RegistryError::TimedOut.into_response(),
    }
}

/// A JSON answer with the registry's content type.
pub(crate) fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        body.to_string(),
    )
        .into_response()
}

fn ok(body: Value) -> Response {
    json_response(StatusCode::OK, body)
}

#[derive(Deserialize)]
struct SchemaBody {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

fn schema_body(body: &Bytes) -> Result<String, RegistryError> {
    let parsed: SchemaBody =
        serde_json::from_slice(body).map_err(|e| RegistryError::BadRequest(e.to_string()))?;
    match parsed.schema_type.as_deref() {
        None | Some("AVRO") => {}
        Some(other) => {
            return Err(RegistryError::InvalidSchema(format!(
                "schemaType {other} is not supported; only AVRO is"
            )))
        }
    }
    if !parsed.references.is_empty() {
        return Err(RegistryError::InvalidSchema(
            "schema references are not supported".into(),
        ));
    }
    Ok(parsed.schema)
}

/// "latest" and -1 mean the latest version (`None`).
fn parse_version(raw: &str) -> Result<Option<i32>, RegistryError> {
    if raw == "latest" || raw == "-1" {
        return Ok(None);
    }
    match raw.parse::<i32>() {
        Ok(v) if v >= 1 => Ok(Some(v)),
        _ => Err(RegistryError::InvalidVersion(raw.into())),
    }
}

fn parse_level(body: &Bytes) -> Result<Level, RegistryError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| RegistryError::BadRequest(e.to_string()))?;
    let raw = value
        .get("compatibility")
        .and_then(Value::as_str)
        .unwrap_or_default();
    raw.parse()
        .map_err(|_| RegistryError::InvalidCompatibilityLevel(raw.into()))
}

#[derive(Deserialize, Default)]
struct Flags {
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    permanent: bool,
    #[serde(default)]
    verbose: bool,
    #[serde(default, rename = "defaultToGlobal")]
    default_to_global: bool,
}

fn visibility(flags: &Flags) -> Visibility {
    if flags.deleted {
        Visibility::WithDeleted
    } else {
        Visibility::Live
    }
}

async fn list_subjects(State(store): State<Store>, Query(flags): Query<Flags>) -> Answer {
    Ok(ok(json!(store.subjects(visibility(&flags)).await?)))
}

async fn list_versions(
    State(store): State<Store>,
    Path(subject): Path<String>,
    Query(flags): Query<Flags>,
) -> Answer {
    Ok(ok(json!(
        store.versions(&subject, visibility(&flags)).await?
    )))
}

async fn register(State(store): State<Store>, Path(subject): Path<String>, body: Bytes) -> Answer {
    let schema = schema_body(&body)?;
    let id = store.register(&subject, &schema).await?;
    tracing::info!(%subject, id, "schema registered");
    Ok(ok(json!({ "id": id })))
}

async fn lookup(State(store): State<Store>, Path(subject): Path<String>, body: Bytes) -> Answer {
    let schema = schema_body(&body)?;
    Ok(ok(json!(store.lookup(&subject, &schema).await?)))
}

async fn get_version(
    State(store): State<Store>,
    Path((subject, version)): Path<(String, String)>,
) -> Answer {
    let version = parse_version(&version)?;
    Ok(ok(json!(store.version(&subject, version).await?)))
}

async fn get_version_schema(
    State(store): State<Store>,
    Path((subject, version)): Path<(String, String)>,
) -> Answer {
    let version = parse_version(&version)?;
    let found = store.version(&subject, version).await?;
    Ok(json_response(
        StatusCode::OK,
        serde_json::from_str(&found.schema).unwrap_or(Value::String(found.schema)),
    ))
}

async fn delete_subject(
    State(store): State<Store>,
    Path(subject): Path<String>,
    Query(flags): Query<Flags>,
) -> Answer {
    Ok(ok(json!(
        store.delete(&subject, None, flags.permanent).await?
    )))
}

async fn delete_version(
    State(store): State<Store>,
    Path((subject, version)): Path<(String, String)>,
    Query(flags): Query<Flags>,
) -> Answer {
    let version = match parse_version(&version)? {
        Some(v) => v,
        None => store.version(&subject, None).await?.version,
    };
    let deleted = store
        .delete(&subject, Some(version), flags.permanent)
        .await?;
    Ok(ok(json!(deleted.first().copied().unwrap_or(version))))
}

async fn schema_by_id(State(store): State<Store>, Path(id): Path<String>) -> Answer {
    let id: i32 = id.parse().map_err(|_| RegistryError::SchemaNotFound)?;
    Ok(ok(json!({ "schema": store.schema_by_id(id).await? })))
}

async fn versions_of_id(State(store): State<Store>, Path(id): Path<String>) -> Answer {
    let id: i32 = id.parse().map_err(|_| RegistryError::SchemaNotFound)?;
    let pairs = store.subjects_of_id(id).await?;
    let body: Vec<Value> = pairs
        .into_iter()
        .map(|(s, v)| json!({ "subject": s, "version": v }))
        .collect();
    Ok(ok(json!(body)))
}

async fn compatibility(
    State(store): State<Store>,
    Path((subject, version)): Path<(String, String)>,
    Query(flags): Query<Flags>,
    body: Bytes,
) -> Answer {
    let version = parse_version(&version)?;
    let schema = schema_body(&body)?;
    let problems = store
        .check_compatibility(&subject, version, &schema)
        .await?;
    let mut answer = json!({ "is_compatible": problems.is_empty() });
    if flags.verbose {
        answer["messages"] = json!(problems);
    }
    Ok(ok(answer))
}

async fn get_global_config(State(store): State<Store>) -> Answer {
    let level = store.config(None).await?.unwrap_or(Level::Backward);
    Ok(ok(json!({ "compatibilityLevel": level.as_str() })))
}

async fn put_global_config(State(store): State<Store>, body: Bytes) -> Answer {
    let level = parse_level(&body)?;
    store.set_config(None, level).await?;
    Ok(ok(json!({ "compatibility": level.as_str() })))
}

async fn get_subject_config(
    State(store): State<Store>,
    Path(subject): Path<String>,
    Query(flags): Query<Flags>,
) -> Answer {
    let level = match store.config(Some(&subject)).await? {
        Some(level) => level,
        None if flags.default_to_global => store.config(None).await?.unwrap_or(Level::Backward),
        None => return Err(RegistryError::SubjectNotFound(subject)),
    };
    Ok(ok(json!({ "compatibilityLevel": level.as_str() })))
}

async fn put_subject_config(
    State(store): State<Store>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Answer {
    let level = parse_level(&body)?;
    store.set_config(Some(&subject), level).await?;
    Ok(ok(json!({ "compatibility": level.as_str() })))
}

async fn delete_subject_config(State(store): State<Store>, Path(subject): Path<String>) -> Answer {
    let level = store.delete_config(&subject).await?;
    Ok(ok(json!({ "compatibilityLevel": level.as_str() })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_like_confluent() {
        assert_eq!(parse_version("latest").unwrap(), None);
        assert_eq!(parse_version("-1").unwrap(), None);
        assert_eq!(parse_version("3").unwrap(), Some(3));
        for bad in ["0", "-2", "x", "99999999999"] {
            assert!(
                matches!(parse_version(bad), Err(RegistryError::InvalidVersion(_))),
                "{bad}"
            );
        }
    }
}
