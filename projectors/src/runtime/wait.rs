//! Waiting without missing a stop: sleeps and backoffs that end early on shutdown.

use std::time::Duration;

use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::config::Config;

/// The batch and start-up backoff of this configuration.
pub fn backoff_for(config: &Config) -> Backoff {
    Backoff::new(
        Duration::from_millis(config.backoff_initial_ms),
        Duration::from_millis(config.backoff_max_ms),
    )
}

/// Sleeps, or returns true as soon as a stop is requested.
pub async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        _ = stopped(stop) => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

/// Resolves once a stop is requested (or the sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Sleeps until `deadline`, or forever without one.
pub async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
