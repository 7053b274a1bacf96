//! PostgreSQL for tests: a fresh schema per test, selected through the URL's `search_path`, so
//! every table (read models and the runtime's bookkeeping) is the test's own.

use tokio_postgres::{Client, NoTls};

use crate::stack::{env, DATABASE_URL};

/// A new schema in `DATABASE_URL`'s database; returns its name and a URL selecting it.
pub async fn fresh_schema() -> (String, String) {
    let base = env(DATABASE_URL);
    let schema = format!("s_{}", crate::short_id(16));
    connect(&base)
        .await
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create the test's schema");
    (schema.clone(), with_schema(&base, &schema))
}

/// `url` with `schema` as its search path.
pub fn with_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}

/// A connection to `url`, its connection task spawned.
pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to postgresql: {e}"));
    tokio::spawn(connection);
    client
}

/// Every row of `query` as JSON text, in the query's order.
pub async fn rows_as_json(url: &str, query: &str) -> Vec<String> {
    connect(url)
        .await
        .query(
            &format!("SELECT row_to_json(t)::text FROM ({query}) t"),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The single `bigint` a query returns.
pub async fn count(url: &str, query: &str) -> i64 {
    connect(url)
        .await
        .query_one(query, &[])
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .get(0)
}
