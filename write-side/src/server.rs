//! Serving: bind, serve until the shutdown signal, then drain (in-flight requests finish) and
//! flush the producer so every acknowledged or queued record is settled before exit.

use crate::config::Config;
use crate::routes::app;
use crate::state::{AppState, StartError};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

/// A bound, not yet serving, write side.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    state: AppState,
}

impl Server {
    /// Creates the state and binds `config.addr` (port 0 picks a free port).
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        let addr = config.addr;
        let state = AppState::new(config)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        Ok(Server { listener, state })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr, StartError> {
        let addr = self.state.config.addr;
        self.listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })
    }

    /// The shared state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes: stops accepting, lets in-flight requests finish, then
    /// flushes the producer.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let state = self.state;
        let addr = self.listener.local_addr().ok();
        tracing::info!(?addr, "write side listening");
        axum::serve(self.listener, app(state.clone()))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(StartError::Serve)?;
        tracing::info!("stopped accepting; flushing the producer");
        let flush = Duration::from_millis(state.config.shutdown_flush_ms);
        if let Err(error) = state.kafka.flush(flush).await {
            tracing::warn!(%error, "producer flush incomplete at shutdown");
        }
        tracing::info!("write side stopped");
        Ok(())
    }
}

/// Binds `config.addr` and serves until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    Server::bind(config).await?.serve(shutdown).await
}
