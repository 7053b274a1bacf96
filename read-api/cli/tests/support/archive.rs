//! The archive the replay tests read: the archiver (the archive sink on the runtime, in the
//! test process) run over the world's `orders` and `customers` until the manifest holds every
//! order, then stopped.

use std::time::Duration;

use factline_archive::{ArchiveConfig, BucketConfig, CutRules};
use factline_projectors::archive::ArchiveSink;
use factline_testkit::stack::{ARCHIVE_S3_BUCKET, ARCHIVE_S3_ENDPOINT};

use super::{env, World};

/// Archives the world's topics under a fresh bucket prefix, cut by `rules`, until the manifest
/// counts `orders` records of `orders`; returns the prefix.
pub async fn archive_orders(world: &World, rules: CutRules, orders: i64) -> String {
    let prefix = format!("test-{}/", factline_testkit::short_id(10));
    let mut bucket = BucketConfig::local(&env(ARCHIVE_S3_ENDPOINT), &env(ARCHIVE_S3_BUCKET));
    bucket.prefix = prefix.clone();
    let archive = ArchiveConfig { bucket, rules };
    let topics = vec!["orders".to_owned(), "customers".to_owned()];
    let sink = ArchiveSink::new(&topics, &archive).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let archiver = tokio::spawn(factline_projectors::run_sink(
        world.projector_config(),
        sink,
        async move {
            let _ = stopped.await;
        },
    ));
    let topic = format!("{}orders", world.prefix);
    let db = factline_testkit::connect(&world.database_url).await;
    factline_testkit::eventually(
        "the archive holds every order",
        Duration::from_secs(120),
        || {
            let (db, topic) = (&db, &topic);
            async move {
                let archived: i64 = db
                    .query_one(
                        "SELECT coalesce(sum(records), 0)::bigint FROM factline_archive_objects \
                         WHERE topic = $1",
                        &[topic],
                    )
                    .await
                    .ok()?
                    .get(0);
                (archived == orders).then_some(())
            }
        },
    )
    .await;
    let _ = stop.send(());
    archiver.await.unwrap().unwrap();
    prefix
}
