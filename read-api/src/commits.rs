//! Commit notifications: the projector runtime sends `NOTIFY factline_positions` in every
//! transaction that moves a position (PostgreSQL delivers it when the transaction commits).
//! This module holds one connection of its own that `LISTEN`s on that channel and wakes the
//! status board at each notification, so a request waiting for its write (`consistent_with`)
//! sees the commit at once instead of at the next poll. Polling stays as the fallback: while
//! the listener is down (the database restarting, a projector of an older release that does
//! not notify) the board polls as before, and it reconnects with backoff.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use factline_service::postgres::{self, PoolSettings};
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;

/// The channel the projector runtime notifies on.
pub const CHANNEL: &str = "factline_positions";

/// Whether the listener is connected and listening (the board may then poll less often).
#[derive(Clone, Default)]
pub struct Listening(Arc<State>);

#[derive(Default)]
struct State {
    on: AtomicBool,
    sessions: AtomicU64,
}

impl Listening {
    /// Whether notifications are being received.
    pub fn is_on(&self) -> bool {
        self.0.on.load(Ordering::SeqCst)
    }

    /// How many times the listener has started listening (reconnections included).
    pub fn sessions(&self) -> u64 {
        self.0.sessions.load(Ordering::SeqCst)
    }
}

/// Starts the listener; it wakes `wake` at every commit notification until `wake`'s board
/// is gone (the task ends with the runtime).
pub fn start(database_url: String, settings: PoolSettings, wake: Arc<Notify>) -> Listening {
    let listening = Listening::default();
    let state = listening.0.clone();
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match listen(&database_url, &settings, &wake, &state).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(error) => {
                    tracing::debug!(%error, "commit notifications unavailable; polling meanwhile")
                }
            }
            state.on.store(false, Ordering::SeqCst);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    });
    listening
}

/// One session: connect, `LISTEN`, wake at each notification until the connection ends.
async fn listen(
    database_url: &str,
    settings: &PoolSettings,
    wake: &Notify,
    state: &State,
) -> Result<(), postgres::ConnectError> {
    let (client, mut connection) = postgres::connect(database_url, settings).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, "the commit notification connection ended");
                    return;
                }
            }
        }
    });
    let listened = client.batch_execute(&format!("LISTEN {CHANNEL}")).await;
    if let Err(error) = listened {
        driver.abort();
        return Err(error.into());
    }
    state.on.store(true, Ordering::SeqCst);
    state.sessions.fetch_add(1, Ordering::SeqCst);
    // commits made while nobody listened: read them once now
    wake.notify_one();
    while rx.recv().await.is_some() {
        wake.notify_one();
    }
    drop(client);
    Ok(())
}
