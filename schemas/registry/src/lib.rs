//! A small Confluent-compatible schema registry for local development and tests.
//!
//! It implements the REST subset that `schema_registry_converter` and the
//! `factline-schemas check` tool use: register, lookup, schema by id, subjects and
//! versions, soft and hard delete, compatibility checks and configuration — with a real
//! Avro compatibility check and durable storage in PostgreSQL. `docker-compose.yml` uses
//! Confluent's own registry instead; both answer the same requests the same way.

mod canonical;
mod compatibility;
mod config;
mod error;
mod routes;
mod store;

pub use canonical::canonical_json;
pub use compatibility::{check, Level};
pub use config::{Config, ConfigError};
pub use error::RegistryError;
pub use store::Store;

use std::future::Future;
use std::net::SocketAddr;

/// Builds the HTTP application over a store.
pub fn app(store: Store) -> axum::Router {
    routes::router(store)
}

/// Runs the registry until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = Store::connect_with(
        &config.database_url,
        &config.db_schema,
        std::time::Duration::from_millis(config.db_timeout_ms),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(config.listen_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "schema registry listening");
    axum::serve(listener, app(store))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Starts a registry on 127.0.0.1 with an ephemeral port (for tests), with the default
/// timeouts; returns its address and the task serving it. Aborting the task stops the server.
pub async fn spawn(
    database_url: &str,
    db_schema: &str,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let store = Store::connect(database_url, db_schema).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app(store)).await {
            tracing::error!(%error, "schema registry stopped");
        }
    });
    Ok((addr, task))
}
