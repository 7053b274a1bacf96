//! `kill -9` of the archiver, several times, changes nothing: the shipped
//! `factline-projector event_archive` binary, started with the environment `make up` gives it
//! (`scripts/stack.sh env`, as `scripts/services.sh` evaluates it, and the shipped defaults:
//! batch sizes, cut rules, static membership), archives a stream of records while it is killed
//! with SIGKILL and restarted, several times. Each kill aims at the middle of a batch's work:
//! once the running archiver has committed objects, the test watches the `customers` topic
//! and kills the moment the bucket holds an object the manifest does not (written,
//! not yet committed); if it does not see that moment within a while, it kills at a random
//! point. Kills that left such an object behind are counted (checked after the process died).
//! Afterwards the archive holds every record of every topic and dead-letter topic exactly
//! once, byte-identical to the log (compared record by record), and the bucket holds exactly
//! the manifest's objects. Only the isolation differs from `make up`: the topics' prefix, the
//! database schema and the bucket prefix are the test's own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::archive::{assert_archive_equals_log, ends, test_bucket, written};
use common::dataset::shop;
use common::{fresh_schema, wait_caught_up, Fixture};
use factline_archive::{Bucket, BucketConfig};
use factline_projectors::archive::{NAME, VERSION};
use factline_testkit::connect;
use factline_testkit::process::{free_port, wait_healthy, Service};

/// How many times the archiver is killed.
const KILLS: usize = 4;
/// Partitions of the event topics.
const PARTITIONS: i32 = 3;

/// The variables `scripts/stack.sh env` prints: what `scripts/services.sh` (and so `make up`)
/// starts every service with.
fn stack_env() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let output = Command::new("bash")
        .arg(root.join("scripts/stack.sh"))
        .arg("env")
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/stack.sh env");
    assert!(output.status.success(), "scripts/stack.sh env failed");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The archiver as `scripts/services.sh` starts it, isolated by topic prefix, schema and
/// bucket prefix; its log goes to `log`.
fn archiver(prefix: &str, url: &str, bucket: &BucketConfig, log: &Path) -> (Service, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_factline-projector"));
    command.arg(NAME);
    // nothing a developer's shell or the test runner set for projectors or the archive leaks in
    for (key, _) in std::env::vars() {
        if key.starts_with("PROJECTOR_") || key.starts_with("ARCHIVE_") {
            command.env_remove(key);
        }
    }
    command.envs(stack_env());
    let addr = format!("127.0.0.1:{}", free_port());
    command
        .env("PROJECTOR_ADDR", &addr)
        .env("DATABASE_URL", url)
        .env("PROJECTOR_TOPIC_PREFIX", prefix)
        .env("ARCHIVE_S3_PREFIX", &bucket.prefix)
        .env("RUST_LOG", "info,librdkafka=warn")
        .stdin(Stdio::null());
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    command.stdout(file.try_clone().unwrap()).stderr(file);
    (Service::spawn(&mut command), format!("http://{addr}"))
}

/// The objects the manifest records (0 before the archiver created its table).
async fn objects(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM factline_archive_objects", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(0)
}

/// A random pause of up to 400 ms: where in its work the archiver is killed when no object
/// was caught between its write and its commit.
fn random_pause() -> Duration {
    let bytes = uuid::Uuid::new_v4();
    let n = u16::from_le_bytes([bytes.as_bytes()[0], bytes.as_bytes()[1]]);
    Duration::from_millis(u64::from(n % 400))
}

/// Objects of `topic` in the bucket that the manifest does not record.
async fn uncommitted(client: &tokio_postgres::Client, bucket: &Bucket, topic: &str) -> usize {
    let mut listed = 0;
    for partition in 0..PARTITIONS {
        listed += bucket
            .list_partition(topic, partition)
            .await
            .map_or(0, |keys| keys.len());
    }
    let recorded: i64 = client
        .query_one(
            "SELECT count(*) FROM factline_archive_objects WHERE topic = $1",
            &[&topic],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(0);
    listed.saturating_sub(recorded as usize)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_archiver_several_times_changes_nothing() {
    let fixture = Fixture::new(PARTITIONS).await;
    let (_, url) = fresh_schema().await;
    let bucket_config = test_bucket();
    let bucket = Bucket::open(&bucket_config).unwrap();
    let log = std::env::temp_dir().join(format!(
        "archive-kill-{}.log",
        fixture.prefix.trim_end_matches('_')
    ));
    let prefix = fixture.prefix.clone();
    let (mut child, health) = archiver(&prefix, &url, &bucket_config, &log);
    wait_healthy(&health, &mut child, Duration::from_secs(60)).await;

    // records stream in (events, undecodable records, dead letters) until every kill is done
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let stop = stop.clone();
        let mut fixture = fixture;
        tokio::spawn(async move {
            let mut round = 0u32;
            while !stop.load(Ordering::Relaxed) {
                for event in shop(4, 12) {
                    fixture.produce(&event).await;
                }
                fixture
                    .produce_raw("orders", &format!("o-garbage-{round}"), b"not avro", &[])
                    .await;
                fixture
                    .produce_raw(
                        "customers.dlq",
                        "c-1",
                        format!("dead letter {round}").as_bytes(),
                        &[("factline-error", "test".into())],
                    )
                    .await;
                round += 1;
            }
            fixture
        })
    };

    let client = connect(&url).await;
    let first_topic = format!("{prefix}customers");
    let mut mid_object = 0;
    for kill in 1..=KILLS {
        // the running archiver has written objects since it started, then works on
        let before = objects(&client).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        while objects(&client).await <= before {
            assert!(
                child.running(),
                "the archiver exited before kill {kill}; its log: {}",
                log.display()
            );
            assert!(
                Instant::now() < deadline,
                "the archiver wrote no object within 120 s before kill {kill}; its log: {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // a batch writes its objects (records stream into every topic), then commits
        let aimed = Instant::now() + Duration::from_secs(20);
        let mut caught = false;
        while Instant::now() < aimed {
            if uncommitted(&client, &bucket, &first_topic).await > 0 {
                caught = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if !caught {
            tokio::time::sleep(random_pause()).await;
        }
        child.kill(); // SIGKILL
        if uncommitted(&client, &bucket, &first_topic).await > 0 {
            mid_object += 1;
        }
        let (restarted, health) = archiver(&prefix, &url, &bucket_config, &log);
        child = restarted;
        wait_healthy(&health, &mut child, Duration::from_secs(60)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let fixture = producer.await.unwrap();

    let ends = ends(&fixture, PARTITIONS);
    wait_caught_up(&url, NAME, VERSION, &written(&ends)).await;
    assert!(child.terminate().success(), "graceful stop failed");
    assert_archive_equals_log(&fixture, &url, &bucket, &ends).await;
    assert!(
        mid_object > 0,
        "no kill of {KILLS} landed between an object's write and its commit (each watched for \
         20 s): the test did not exercise what it is for"
    );
    let adopted = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("adopted")
        .count();
    eprintln!(
        "[archive] {KILLS} SIGKILLs, {mid_object} of them between an object's write and its \
         commit; {} records, {} objects, {adopted} objects written before a kill adopted after it",
        ends.values().sum::<i64>(),
        objects(&client).await
    );
    let _ = std::fs::remove_file(&log);
}
