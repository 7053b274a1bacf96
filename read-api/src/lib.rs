//! factline's read API: HTTP queries over the read models that the projectors keep in
//! PostgreSQL and Elasticsearch. Every answer says how fresh it is; a client that passes the
//! position token of its own write gets an answer that reflects it (see [`freshness`]).

pub mod auth;
pub mod commits;
pub mod config;
pub mod console;
pub mod cursor;
pub mod db;
pub mod error;
pub mod es;
pub mod freshness;
pub mod openapi;
pub mod params;
pub mod routes;
pub mod state;
pub mod status;
pub mod telemetry;
pub mod views;
pub mod watermarks;

use std::future::Future;
use std::net::SocketAddr;

pub use config::Config;
pub use state::{AppState, StartError};

/// A bound, not yet serving, read API.
pub struct Server {
    listener: tokio::net::TcpListener,
    state: AppState,
}

impl Server {
    /// Builds the state and binds `config.addr` (port 0 picks a free port).
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        let addr = config.addr;
        let state = AppState::start(config)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        Ok(Server { listener, state })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then finishes the requests in progress.
    pub async fn serve<S>(self, shutdown: S) -> std::io::Result<()>
    where
        S: Future<Output = ()> + Send + 'static,
    {
        let _ = telemetry::metrics_handle();
        tracing::info!(addr = %self.listener.local_addr()?, "read api listening");
        axum::serve(self.listener, routes::router(self.state))
            .with_graceful_shutdown(shutdown)
            .await
    }
}
