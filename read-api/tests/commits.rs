//! Commit notifications against the real PostgreSQL: the listener wakes the status board
//! when a projector's transaction notifies `factline_positions`, and comes back after its
//! connection is killed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use factline_read_api::commits::{self, CHANNEL};
use factline_service::postgres::PoolSettings;
use factline_testkit::{connect, env, eventually};
use tokio::sync::Notify;

const DEADLINE: Duration = Duration::from_secs(60);

async fn notified_after(wake: &Notify, action: impl std::future::Future<Output = ()>) {
    action.await;
    tokio::time::timeout(DEADLINE, wake.notified())
        .await
        .expect("the board was woken by the commit");
}

#[tokio::test]
async fn a_commit_notification_wakes_the_board_and_the_listener_reconnects() {
    let url = env("DATABASE_URL");
    let wake = Arc::new(Notify::new());
    let name = format!("listener-{}", factline_testkit::short_id(8));
    let listening = commits::start(url.clone(), PoolSettings::new(&name, 1), wake.clone());
    eventually("the listener listens", DEADLINE, || async {
        listening.is_on().then_some(())
    })
    .await;
    // the wake-up it gives when it starts listening (commits made before are read once)
    tokio::time::timeout(DEADLINE, wake.notified())
        .await
        .unwrap();

    let other = connect(&url).await;
    notified_after(&wake, async {
        other
            .batch_execute(&format!("BEGIN; NOTIFY {CHANNEL}; COMMIT"))
            .await
            .unwrap();
    })
    .await;

    // the listener's connection dies: it reconnects, and notifications wake the board again
    let sessions = listening.sessions();
    other
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{name}'"
        ))
        .await
        .unwrap();
    eventually("the listener listens again", DEADLINE, || async {
        (listening.sessions() > sessions && listening.is_on()).then_some(())
    })
    .await;
    tokio::time::timeout(DEADLINE, wake.notified())
        .await
        .unwrap();
    notified_after(&wake, async {
        other
            .batch_execute(&format!("NOTIFY {CHANNEL}"))
            .await
            .unwrap();
    })
    .await;
}
