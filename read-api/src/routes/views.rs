//! `GET /views/{name}/{key}` and `GET /views/{name}?column=value`: the read endpoints every
//! declarative projection gets without code (see [`crate::views`]).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use factline_schemas::declarative::SinkKind;
use serde_json::{json, Value};

use crate::cursor;
use crate::error::ApiError;
use crate::routes::search::page;
use crate::routes::{parse, respond, serve};
use crate::state::AppState;
use crate::views::{Kind, View};

/// A filter on a declared column: the column, its type and the checked value.
type Filter = (String, Kind, Value);

/// The view called `name`, as the projectors registered it. Until the projector status has
/// been read once, which views exist is not known: PostgreSQL's own answer decides (a `503`
/// naming the limit it hit, like any read model while the database does not answer), else the
/// status is read again before answering `404`.
async fn find(state: &AppState, name: &str) -> Result<View, Response> {
    let known = |state: &AppState| state.board.current().views.by_name.get(name).cloned();
    if let Some(view) = known(state) {
        return Ok(view);
    }
    if !state.board.loaded() {
        if let Err(error) = state.db().await {
            // the projector is not known either: the headers name the view (declarative views
            // are usually named after their projector), with an unknown lag
            return Err(match crate::freshness::ensure(state, name, None).await {
                Ok(freshness) => respond::<()>(freshness, Err(error)),
                Err(_) => error.into_response(),
            });
        }
        state.board.refreshed(state.config.statement_timeout).await;
        if let Some(view) = known(state) {
            return Ok(view);
        }
    }
    Err(ApiError::NotFound(format!("view {name}")).into_response())
}

/// One row or document by key.
pub async fn by_key(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path((name, key)) = path.map_err(|e| ApiError::bad("key", e.body_text()))?;
    let view = match find(&state, &name).await {
        Ok(view) => view,
        Err(response) => return Ok(response),
    };
    let key = crate::params::id("key", &key)?;
    if view.key.len() != 1 {
        return Err(ApiError::bad(
            "key",
            format!(
                "{name} has a composite key ({}); filter the list instead",
                view.key.join(", ")
            ),
        ));
    }
    let (_, wanted) = parse(&state, query.as_deref(), &headers, &[])?;
    let kind = view.kind(&view.key[0]);
    let filters = vec![(view.key[0].clone(), kind, kind.check("key", &key)?)];
    let (state, view, filters, name, key) = (&state, &view, &filters, &name, &key);
    serve(state, &view.projector, wanted, |version| async move {
        let page = fetch(state, view, version, filters, 1, None).await?;
        page["items"]
            .as_array()
            .and_then(|items| items.first().cloned())
            .ok_or_else(|| ApiError::NotFound(format!("{name} {key}")))
    })
    .await
}

/// Rows or documents filtered on declared columns, in key order.
pub async fn list(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = crate::routes::segment("name", path)?;
    let view = match find(&state, &name).await {
        Ok(view) => view,
        Err(response) => return Ok(response),
    };
    let mut allowed: Vec<&str> = view.columns.iter().map(String::as_str).collect();
    allowed.extend(["limit", "cursor"]);
    let (params, wanted) = parse(&state, query.as_deref(), &headers, &allowed)?;
    let mut filters = Vec::new();
    for column in &view.columns {
        if let Some(value) = params.text(column)? {
            let kind = view.kind(column);
            filters.push((column.clone(), kind, kind.check(column, &value)?));
        }
    }
    let limit = params.limit(state.config.default_page_size, state.config.max_page_size)?;
    let after = params
        .text("cursor")?
        .map(|c| cursor::decode(&c, &view.cursor_kinds()))
        .transpose()?;
    let (state, view, filters, after) = (&state, &view, &filters, &after);
    serve(state, &view.projector, wanted, |version| async move {
        fetch(state, view, version, filters, limit, after.clone()).await
    })
    .await
}

async fn fetch(
    state: &AppState,
    view: &View,
    version: Option<i32>,
    filters: &[Filter],
    limit: usize,
    after: Option<Vec<Value>>,
) -> Result<Value, ApiError> {
    match view.sink {
        SinkKind::Postgres => fetch_postgres(state, view, version, filters, limit, after).await,
        SinkKind::Elasticsearch => {
            let filter: Vec<Value> = filters
                .iter()
                .map(|(column, kind, value)| match kind {
                    Kind::FullText => json!({"match": {column: {"query": value}}}),
                    _ => json!({"term": {column: value}}),
                })
                .collect();
            let sort: Vec<Value> = view
                .key
                .iter()
                .map(|k| json!({k: {"order": "asc"}}))
                .collect();
            let mut body = json!({"query": {"bool": {"filter": filter}}, "sort": sort,
                                  "size": limit + 1, "track_total_hits": true});
            if let Some(after) = after {
                body["search_after"] = Value::Array(after);
            }
            let hits = state
                .search
                .search(&state.index(&view.name, version), &body)
                .await?;
            Ok(page(hits, limit))
        }
    }
}

async fn fetch_postgres(
    state: &AppState,
    view: &View,
    version: Option<i32>,
    filters: &[Filter],
    limit: usize,
    after: Option<Vec<Value>>,
) -> Result<Value, ApiError> {
    // Identifiers come from the validated config files; every value is a bind parameter,
    // already checked against the column's type, so the cast cannot fail.
    let mut values: Vec<String> = Vec::new();
    let mut conditions = Vec::new();
    for (column, kind, value) in filters {
        values.push(match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        });
        let n = values.len();
        conditions.push(match kind.sql_cast() {
            None => format!("t.\"{column}\"::text = ${n}"),
            Some(cast) => format!("t.\"{column}\" = ${n}::text::{cast}"),
        });
    }
    let keys: Vec<String> = view
        .key
        .iter()
        .map(|k| format!("t.\"{k}\"::text"))
        .collect();
    if let Some(after) = after {
        let mut placeholders = Vec::new();
        for value in after {
            let Some(text) = value.as_str() else {
                return Err(ApiError::bad("cursor", "not a cursor returned by this API"));
            };
            values.push(text.to_owned());
            placeholders.push(format!("${}", values.len()));
        }
        conditions.push(format!(
            "({}) > ({})",
            keys.join(", "),
            placeholders.join(", ")
        ));
    }
    let sql = format!(
        "SELECT to_jsonb(t), ARRAY[{keys}] FROM \"{table}\" t {where_} ORDER BY {keys} LIMIT {fetch}",
        keys = keys.join(", "),
        table = state.table(&view.name, version),
        where_ = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        },
        fetch = limit + 1,
    );
    let mut db = state.db().await?;
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = values
        .iter()
        .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    let rows = db.query(sql.as_str(), &params).await?;
    let more = rows.len() > limit;
    let page = &rows[..rows.len().min(limit)];
    let next = match page.last() {
        Some(last) if more => {
            let key: Vec<Option<String>> = last.get(1);
            Some(cursor::encode(&json!(key)))
        }
        _ => None,
    };
    let items: Vec<Value> = page.iter().map(|r| r.get(0)).collect();
    Ok(json!({"items": items, "next_cursor": next}))
}
