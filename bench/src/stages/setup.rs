//! Set-up and cleanup of a run: its own topics (one set per backlog), PostgreSQL schema and
//! Elasticsearch indices, created before the first stage and deleted after the last one unless
//! `--keep` is given.

use super::Bench;
use crate::error::BenchError;
use crate::{kafka, pg};

/// The schema of the projector reading the sealed backlog.
fn sealed_schema(b: &Bench) -> String {
    format!("{}_s", b.schema)
}

/// The schema of the stack at rest.
fn idle_schema(b: &Bench) -> String {
    format!("{}_i", b.schema)
}

/// Checks Elasticsearch answers, creates the run's three schemas and its five sets of topics.
pub async fn setup(b: &mut Bench) -> Result<(), BenchError> {
    if !b.es.ping().await {
        return Err(BenchError::EsUnreachable {
            url: b.args.elasticsearch_url.clone(),
        });
    }
    b.db_url = pg::fresh_schema(&b.args.database_url, &b.schema).await?;
    b.sealed_db_url = pg::fresh_schema(&b.args.database_url, &sealed_schema(b)).await?;
    b.idle_db_url = pg::fresh_schema(&b.args.database_url, &idle_schema(b)).await?;
    for what in ["p", "e", "w", "s", "i"] {
        let prefix = b.prefix(what);
        let topics =
            kafka::create_prefixed_topics(&b.args.kafka_brokers, &prefix, b.s.partitions).await?;
        b.topics.extend(topics);
    }
    Ok(())
}

/// Deletes what set-up and the stages created (topics, schema, indices), or says what was kept.
pub async fn cleanup(b: &Bench) {
    if b.args.keep {
        eprintln!(
            "[bench] kept: topics {}_*, schemas {}, {} and {}, indices {}_*",
            b.run,
            b.schema,
            sealed_schema(b),
            idle_schema(b),
            b.run
        );
        return;
    }
    kafka::delete_topics(&b.args.kafka_brokers, &b.topics).await;
    pg::drop_schema(&b.args.database_url, &b.schema).await;
    pg::drop_schema(&b.args.database_url, &sealed_schema(b)).await;
    pg::drop_schema(&b.args.database_url, &idle_schema(b)).await;
    b.es.delete_indices(&format!("{}_*", b.run)).await;
}
