//! Static group membership: a stable, unique `group.instance.id` for each running instance.
//!
//! An instance claims the lowest free slot N of its consumer group by taking the PostgreSQL
//! session advisory lock `(hashtext(group), N)` on a connection of its own, held for the
//! process's lifetime, and joins the group as `{group}-{N}`. A crashed process's connection
//! closes, the lock goes with it, and the restarted process claims the same N: the broker sees
//! the same static member come back and hands its partitions over at once, without waiting for
//! a session timeout (and on noida-db, which never expires a dead dynamic member, at all). A
//! second instance running beside the first finds N taken and claims N+1, so two instances never
//! share an id (the broker would fence one).
//!
//! The lock connection is checked every second. If it fails, the lock may be gone and another
//! process may claim the same slot: [`Claim::lost`] resolves and the runner stops consuming and
//! exits with an error, so two live members never carry one id.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

/// How many slots an instance tries before giving up (instances of one group beyond this are
/// refused: a projector runs at most as many useful instances as its topics have partitions).
pub const MAX_SLOTS: i32 = 1024;

/// How often the lock connection is checked, and how long one check may take.
const CHECK_EVERY: Duration = Duration::from_secs(1);
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Why no slot could be claimed.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// PostgreSQL could not be reached or failed: retry.
    #[error("cannot claim an instance slot: {0}")]
    Database(String),
    /// Every slot of the group is taken.
    #[error("all {MAX_SLOTS} instance slots of group {0} are taken")]
    Full(String),
}

/// A claimed slot: the instance id, and the connection holding its lock.
#[derive(Debug)]
pub struct Claim {
    /// `{group}-{slot}`.
    pub instance_id: String,
    /// The slot number.
    pub slot: i32,
    lost: watch::Receiver<Option<String>>,
    monitor: JoinHandle<()>,
}

impl Claim {
    /// The reason, if the lock may have been lost already.
    pub fn lost_reason(&self) -> Option<String> {
        self.lost.borrow().clone()
    }

    /// A receiver of the loss, for [`wait_lost`] (it does not keep the lock alive).
    pub fn lost_signal(&self) -> watch::Receiver<Option<String>> {
        self.lost.clone()
    }
}

/// Resolves with the reason once a claim's lock may have been lost; never without a claim, or
/// once the claim was released normally.
pub async fn wait_lost(signal: Option<watch::Receiver<Option<String>>>) -> String {
    let Some(mut signal) = signal else {
        return std::future::pending().await;
    };
    let reason = match signal.wait_for(Option::is_some).await {
        Ok(reason) => reason.clone(),
        Err(_) => None,
    };
    match reason {
        Some(reason) => reason,
        None => std::future::pending().await,
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Ends the connection, which releases the lock.
        self.monitor.abort();
    }
}

/// Claims the lowest free slot of `group` on a dedicated connection to `pg`.
pub async fn claim(pg: &tokio_postgres::Config, group: &str) -> Result<Claim, MembershipError> {
    let mut pg = pg.clone();
    pg.connect_timeout(Duration::from_secs(5));
    let db = |e: tokio_postgres::Error| MembershipError::Database(e.to_string());
    let (client, connection) = pg.connect(NoTls).await.map_err(db)?;
    let (lost_tx, lost) = watch::channel(None);
    let connection = tokio::spawn(connection);
    let try_lock = client
        .prepare("SELECT pg_try_advisory_lock(hashtext($1), $2)")
        .await
        .map_err(db)?;
    let mut slot = None;
    for n in 0..MAX_SLOTS {
        let locked: bool = client
            .query_one(&try_lock, &[&group, &n])
            .await
            .map_err(db)?
            .get(0);
        if locked {
            slot = Some(n);
            break;
        }
    }
    let Some(slot) = slot else {
        connection.abort();
        return Err(MembershipError::Full(group.to_owned()));
    };
    let monitor = tokio::spawn(async move {
        let mut connection = connection;
        let reason = loop {
            tokio::select! {
                ended = &mut connection => {
                    break match ended {
                        Ok(Ok(())) => "the lock connection closed".to_owned(),
                        Ok(Err(e)) => format!("the lock connection failed: {e}"),
                        Err(e) => format!("the lock connection task failed: {e}"),
                    };
                }
                _ = tokio::time::sleep(CHECK_EVERY) => {
                    match tokio::time::timeout(CHECK_TIMEOUT, client.simple_query("")).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => break format!("the lock connection failed: {e}"),
                        Err(_) => break format!(
                            "the lock connection did not answer within {} s",
                            CHECK_TIMEOUT.as_secs()
                        ),
                    }
                }
            }
        };
        tracing::error!(%reason, "instance slot lock lost");
        let _ = lost_tx.send(Some(reason));
        connection.abort();
        drop(client);
    });
    Ok(Claim {
        instance_id: format!("{group}-{slot}"),
        slot,
        lost,
        monitor,
    })
}
