//! `GET /events/{event_id}`: one event from the event viewer (`event_index`) with its trail,
//! every projector version consuming its topic and what became of the event there:
//! `applied` (its id is among the version's applied ids, kept for the dedupe window, or in the
//! row it changed, for a projection that keeps applied ids in its rows: `applied_ids_in`),
//! `dead_lettered` (with the error, and where a redrive sent its copy), `passed` (the
//! version's position is past the record: applied longer ago than the dedupe window, applied by
//! a search sink, whose applied ids live in its documents, or a type it does not consume) or
//! `pending` (not reached yet).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::routes::events::PROJECTOR;
use crate::routes::{parse, segment, serve};
use crate::state::AppState;
use crate::status::Snapshot;

/// One event and its trail.
pub async fn by_id(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = segment("event_id", path)?;
    let id = uuid_of(&id)?;
    let (_, wanted) = parse(&state, query.as_deref(), &headers, &[])?;
    let (state, body) = (
        &state,
        &json!({"query": {"term": {"event_id": id.to_string()}}, "size": 1}),
    );
    serve(state, PROJECTOR, wanted, |version| async move {
        let hits = state
            .search
            .search(&state.index(PROJECTOR, version), body)
            .await?;
        let Some((mut event, _)) = hits.hits.into_iter().next() else {
            return Err(ApiError::NotFound(format!("event {id}")));
        };
        event["reached"] = Value::Array(trail(state, &event, id).await?);
        Ok(event)
    })
    .await
}

/// The event id, or a `400` naming the path segment.
fn uuid_of(text: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(text).map_err(|_| ApiError::bad("event_id", "expected a UUID"))
}

/// What each projector version consuming the event's topic did with it.
async fn trail(state: &AppState, event: &Value, id: uuid::Uuid) -> Result<Vec<Value>, ApiError> {
    let snapshot = state.board.current();
    let (Some(topic), Some(partition), Some(offset)) = (
        event["topic"].as_str(),
        event["partition"]
            .as_i64()
            .and_then(|p| i32::try_from(p).ok()),
        event["offset"].as_i64(),
    ) else {
        return Ok(Vec::new());
    };
    if snapshot.projectors.is_empty() {
        return Ok(Vec::new());
    }
    let mut db = state.db().await?;
    let mut applied: Vec<(String, i32)> = db
        .query(
            "SELECT projector, version FROM factline_projector_applied WHERE event_id = $1",
            &[&id],
        )
        .await?
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    if let Some(key) = event["key"].as_str() {
        applied.extend(applied_in_rows(&mut db, topic, key, id).await?);
    }
    let redrives: bool = db
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&factline_schemas::redrive::REDRIVES_TABLE],
        )
        .await?
        .get(0);
    let redriven_to = if redrives {
        format!(
            "(SELECT x.topic || ':' || x.to_partition || ':' || x.to_offset FROM {} x \
              WHERE x.topic = d.topic \
              AND x.partition = d.partition AND x.\"offset\" = d.\"offset\")",
            factline_schemas::redrive::REDRIVES_TABLE
        )
    } else {
        "NULL::text".to_owned()
    };
    let dead: Vec<(String, i32, Value)> = db
        .query(
            &format!(
                "SELECT projector, version, json_build_object('error', error, \
                   'dead_lettered_at', dead_lettered_at, 'redriven_to', {redriven_to}) \
                 FROM factline_projector_dead_letters d \
                 WHERE topic = $1 AND partition = $2 AND \"offset\" = $3"
            ),
            &[&topic, &partition, &offset],
        )
        .await?
        .into_iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    Ok(outcomes(
        &snapshot,
        (topic, partition, offset),
        &applied,
        &dead,
    ))
}

/// The versions consuming `topic` that keep applied ids in their rows and hold `id` in the row
/// of `key` (`applied_ids_in` recorded by the projector: the view and its key column).
async fn applied_in_rows(
    db: &mut crate::db::Db,
    topic: &str,
    key: &str,
    id: uuid::Uuid,
) -> Result<Vec<(String, i32)>, ApiError> {
    // `to_jsonb(r) -> …`: a table made by an older runtime, without the column, has none
    let places = db
        .query(
            "SELECT projector, version, to_jsonb(r) -> 'applied_ids_in' \
             FROM factline_projector_rebuilds r \
             WHERE $1 = ANY(topics) AND jsonb_typeof(to_jsonb(r) -> 'applied_ids_in') = 'array'",
            &[&topic],
        )
        .await?;
    let mut found = Vec::new();
    for row in places {
        let (projector, version, place): (String, i32, Value) =
            (row.get(0), row.get(1), row.get(2));
        let (Some(view), Some(column)) = (place[0].as_str(), place[1].as_str()) else {
            continue;
        };
        if ![view, column].iter().all(|name| is_identifier(name)) {
            continue;
        }
        let table = factline_schemas::read_model::versioned_table(
            view,
            u32::try_from(version).unwrap_or(0),
        );
        let sql = format!("SELECT applied_ids FROM {table} WHERE {column} = $1");
        // a version whose table is gone (dropped after its retirement) holds nothing
        let Ok(Some(row)) = db.query_opt(&sql, &[&key]).await else {
            continue;
        };
        let ids: Vec<u8> = row.try_get(0).unwrap_or_default();
        if ids.chunks_exact(16).any(|chunk| chunk == id.as_bytes()) {
            found.push((projector, version));
        }
    }
    Ok(found)
}

/// A plain lower-case SQL identifier (what projectors name their tables and columns).
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The trail entries, from what was read (pure, tested below).
fn outcomes(
    snapshot: &Snapshot,
    (topic, partition, offset): (&str, i32, i64),
    applied: &[(String, i32)],
    dead: &[(String, i32, Value)],
) -> Vec<Value> {
    let mut out = Vec::new();
    for versions in snapshot.projectors.values() {
        for v in versions
            .iter()
            .filter(|v| v.topics.iter().any(|t| t == topic))
        {
            let is = |p: &String, n: &i32| *p == v.projector && *n == v.version;
            let letter = dead.iter().find(|(p, n, _)| is(p, n)).map(|(_, _, d)| d);
            let next = v.positions.get(&(topic.to_owned(), partition));
            let outcome = if applied.iter().any(|(p, n)| is(p, n)) {
                "applied"
            } else if letter.is_some() {
                "dead_lettered"
            } else if next.is_some_and(|next| *next > offset) {
                "passed"
            } else {
                "pending"
            };
            out.push(json!({
                "projector": v.projector,
                "version": v.version,
                "state": v.state,
                "read_models": v.read_models,
                "outcome": outcome,
                "dead_letter": letter,
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::VersionStatus;

    fn version(projector: &str, topic: &str, next: Option<i64>) -> VersionStatus {
        VersionStatus {
            topics: vec![topic.into()],
            read_models: vec![projector.into()],
            positions: next
                .map(|n| ((topic.to_owned(), 0), n))
                .into_iter()
                .collect(),
            ..VersionStatus::example(projector, 1, "live")
        }
    }

    #[test]
    fn each_consumer_of_the_topic_gets_its_outcome() {
        let mut snapshot = Snapshot::default();
        for (name, topic, next) in [
            ("a", "orders", Some(10)),
            ("b", "orders", Some(10)),
            ("c", "orders", Some(10)),
            ("d", "orders", Some(5)),
            ("e", "customers", Some(99)),
        ] {
            snapshot
                .projectors
                .insert(name.into(), vec![version(name, topic, next)]);
        }
        let applied = vec![("a".to_owned(), 1)];
        let dead = vec![("b".to_owned(), 1, json!({"error": "rejected"}))];
        let trail = outcomes(&snapshot, ("orders", 0, 7), &applied, &dead);
        let got: Vec<(&str, &str)> = trail
            .iter()
            .map(|t| {
                (
                    t["projector"].as_str().unwrap(),
                    t["outcome"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a", "applied"),
                ("b", "dead_lettered"),
                ("c", "passed"),
                ("d", "pending")
            ]
        );
        assert_eq!(trail[1]["dead_letter"]["error"], "rejected");
    }
}
