//! The sink seam from outside: a sink written in a few lines against `Sink` (as the event
//! archive will be) is handed only what it must apply — no record of a type it does not
//! consume, no poison, no second copy of an event in one batch — and the events it rejects
//! are dead-lettered by the runtime, whose positions still move past every record.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::dataset::{placed, shipped};
use common::{dump, fresh_schema, wait_caught_up, Fixture};
use deadpool_postgres::Object;
use factline_projectors::bookkeeping::{self, BootstrapError, Liveness, Registration};
use factline_projectors::dead_letter::{HEADER_ERROR, HEADER_ORIGIN_OFFSET};
use factline_projectors::runtime::sink::{Applied, Batch, Input, Rejected, Sink, SinkSpec};
use rdkafka::consumer::Consumer;
use rdkafka::message::{Headers, Message};
use tokio_postgres::Transaction;
use uuid::Uuid;

/// A whole sink, in memory: its spec and what it does with a batch. It registers its version
/// and has no storage to prepare or swap.
struct MemorySink<F> {
    spec: SinkSpec,
    apply: F,
}

impl<F> Sink for MemorySink<F>
where
    F: Fn(&Batch<'_>) -> Applied + Send + Sync + 'static,
{
    type Error = Infallible;

    fn spec(&self) -> &SinkSpec {
        &self.spec
    }

    async fn bootstrap(
        &self,
        client: &mut Object,
        registration: &Registration,
    ) -> Result<Liveness, BootstrapError> {
        bookkeeping::bootstrap(client, registration, &[], &[], None).await
    }

    async fn apply(
        &self,
        _tx: &mut Transaction<'_>,
        batch: &Batch<'_>,
    ) -> Result<Applied, Infallible> {
        Ok((self.apply)(batch))
    }

    async fn swap(&self, _client: &mut Object, _previous: u32) -> Result<bool, Infallible> {
        Ok(true)
    }
}

/// Runs `apply` as the sink `name` of the fixture's `orders` until it stored the position
/// `end` of partition 0.
async fn run_until<F>(fixture: &Fixture, url: &str, name: &str, input: Input, end: i64, apply: F)
where
    F: Fn(&Batch<'_>) -> Applied + Send + Sync + 'static,
{
    let spec = spec(name, &["orders"], input);
    let ends = HashMap::from([((fixture.topic("orders"), 0), end)]);
    run_sink_until(fixture, url, spec, ends, apply).await;
}

/// The spec of a memory sink consuming `OrderPlaced` from `topics`.
fn spec(name: &str, topics: &[&str], input: Input) -> SinkSpec {
    SinkSpec {
        kind: "memory",
        name: name.into(),
        version: 1,
        topics: topics.iter().map(|t| t.to_string()).collect(),
        lead_topics: Vec::new(),
        event_types: vec!["OrderPlaced".into()],
        read_models: vec![],
        default_batch_max: factline_projectors::DEFAULT_BATCH_MAX,
        default_batch_wait: Duration::from_millis(10),
        input,
        sequenced: false,
        opens_personal_data: true,
    }
}

/// Runs `apply` as the sink `spec` until it stored the positions `ends`.
async fn run_sink_until<F>(
    fixture: &Fixture,
    url: &str,
    spec: SinkSpec,
    ends: HashMap<(String, i32), i64>,
    apply: F,
) where
    F: Fn(&Batch<'_>) -> Applied + Send + Sync + 'static,
{
    let name = spec.name.clone();
    let sink = MemorySink { spec, apply };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(factline_projectors::run_sink(
        fixture.config(url),
        sink,
        async move {
            let _ = stopped.await;
        },
    ));
    wait_caught_up(url, &name, 1, &ends).await;
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

/// What the sink was handed, batch by batch, and what it holds.
#[derive(Debug, Default)]
struct Seen {
    batches: Vec<Vec<(Uuid, String)>>,
    held: HashSet<Uuid>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_is_handed_only_what_it_must_apply_and_its_rejections_are_dead_lettered() {
    let mut fixture = Fixture::new(1).await;
    let first = placed("o-1", "c-1", 1, 100, 1);
    let refused = placed("o-2", "c-1", 1, 100, 2);
    let copied = placed("o-3", "c-1", 1, 100, 3);
    fixture.produce(&first).await;
    fixture.produce(&shipped("o-1", "T1", 4)).await; // a type the sink does not consume
    let headers = vec![
        ("event_id", Uuid::new_v4().to_string()),
        ("event_type", "OrderPlaced".to_owned()),
    ];
    let (_, poison) = fixture
        .produce_raw("orders", "k", b"not avro", &headers)
        .await;
    let (_, refused_at) = fixture.produce(&refused).await;
    fixture.produce(&copied).await;
    fixture.produce(&copied).await; // the same event again (a producer retry)
    let (_, refused_again_at) = fixture.produce(&refused).await;

    let (_, url) = fresh_schema().await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (memory, refuse) = (seen.clone(), refused.event_id);
    // keeps event ids, refuses one event, says which were duplicates
    let apply = move |batch: &Batch<'_>| {
        let mut seen = memory.lock().unwrap();
        let handed = batch
            .events()
            .iter()
            .map(|e| (e.envelope.event_id, e.event_type().to_owned()))
            .collect();
        seen.batches.push(handed);
        let mut applied = Applied::default();
        for (i, event) in batch.events().iter().enumerate() {
            let id = event.envelope.event_id;
            if id == refuse {
                applied.rejected.push(Rejected {
                    event: i,
                    error: "no room for this one".into(),
                });
            } else if !seen.held.insert(id) {
                applied.duplicates += 1;
            }
        }
        applied
    };
    let end = refused_again_at + 1;
    run_until(&fixture, &url, "memory_sink", Input::Events, end, apply).await;

    let (batches, held) = {
        let seen = seen.lock().unwrap();
        (seen.batches.clone(), seen.held.clone())
    };
    for batch in &batches {
        assert!(batch.iter().all(|(_, t)| t == "OrderPlaced"), "{batch:?}");
        let ids: HashSet<&Uuid> = batch.iter().map(|(id, _)| id).collect();
        assert_eq!(ids.len(), batch.len(), "a copy in one batch: {batch:?}");
    }
    let handed: HashSet<Uuid> = batches.iter().flatten().map(|(id, _)| *id).collect();
    let expected: HashSet<Uuid> = [first.event_id, refused.event_id, copied.event_id].into();
    assert_eq!(handed, expected);
    assert_eq!(held, HashSet::from([first.event_id, copied.event_id]));

    let rows = dump(
        &url,
        "SELECT \"offset\", error FROM factline_projector_dead_letters ORDER BY \"offset\"",
    )
    .await;
    let row = |offset: i64, error: &str| format!(r#"{{"offset":{offset},"error":"{error}"}}"#);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows[0].starts_with(&format!(r#"{{"offset":{poison},"error":"invalid envelope"#)));
    assert_eq!(rows[1], row(refused_at, "no room for this one"));
    assert_eq!(rows[2], row(refused_again_at, "no room for this one"));

    let consumer = fixture.dead_letter_reader("orders");
    let mut offsets = Vec::new();
    while offsets.len() < 3 {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("dead letters missing")
            .unwrap();
        let header = |name: &str| {
            message
                .headers()
                .unwrap()
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap()
        };
        offsets.push((header(HEADER_ORIGIN_OFFSET), header(HEADER_ERROR)));
    }
    consumer.unsubscribe();
    assert_eq!(offsets[0].0, poison.to_string());
    assert_eq!(
        offsets[1..],
        [
            (refused_at.to_string(), "no room for this one".to_owned()),
            (
                refused_again_at.to_string(),
                "no room for this one".to_owned()
            ),
        ]
    );
}

/// A record a sink of records kept: its offset and value.
type Kept = (i64, Vec<u8>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_of_records_gets_every_record_as_read_and_nothing_is_dead_lettered() {
    let mut fixture = Fixture::new(1).await;
    fixture.produce(&placed("o-1", "c-1", 1, 100, 1)).await;
    fixture.produce(&shipped("o-1", "T1", 2)).await;
    let headers = vec![("event_type", "OrderPlaced".to_owned())];
    fixture
        .produce_raw("orders", "k", b"not avro", &headers)
        .await;
    let (_, last) = fixture.produce(&placed("o-2", "c-1", 1, 100, 3)).await;

    let (_, url) = fresh_schema().await;
    let kept: Arc<Mutex<Vec<Kept>>> = Arc::default();
    let memory = kept.clone();
    // keeps every record as read, once per offset, as an archive does
    let apply = move |batch: &Batch<'_>| {
        assert!(
            batch.events().is_empty(),
            "a sink of records gets no events"
        );
        let mut kept = memory.lock().unwrap();
        for record in batch.records() {
            let offset = record.origin.offset;
            if kept.iter().all(|(o, _)| *o != offset) {
                kept.push((offset, record.payload.clone().unwrap_or_default()));
            }
        }
        Applied::default()
    };
    run_until(
        &fixture,
        &url,
        "keeping_sink",
        Input::Records,
        last + 1,
        apply,
    )
    .await;

    let mut kept = kept.lock().unwrap().clone();
    kept.sort();
    let offsets: Vec<i64> = kept.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, (0..=last).collect::<Vec<_>>());
    assert_eq!(kept[2].1, b"not avro".to_vec(), "kept byte for byte");
    let letters = dump(
        &url,
        "SELECT \"offset\" FROM factline_projector_dead_letters",
    )
    .await;
    assert!(letters.is_empty(), "{letters:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_topic_is_read_to_its_end_before_the_others() {
    let mut fixture = Fixture::new(1).await;
    let mut ends = HashMap::new();
    // the other topic's records are older: without a lead, reading starts with both
    for i in 0..200 {
        let (_, offset) = fixture
            .produce_raw("orders", &format!("o-{i}"), b"order", &[])
            .await;
        ends.insert((fixture.topic("orders"), 0), offset + 1);
    }
    for i in 0..50 {
        let (_, offset) = fixture
            .produce_raw("customers", &format!("c-{i}"), b"customer", &[])
            .await;
        ends.insert((fixture.topic("customers"), 0), offset + 1);
    }

    let (_, url) = fresh_schema().await;
    let read: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let memory = read.clone();
    let apply = move |batch: &Batch<'_>| {
        let mut read = memory.lock().unwrap();
        for record in batch.records() {
            read.push((record.origin.topic.to_string(), record.origin.offset));
        }
        Applied::default()
    };
    let mut spec = spec("leading_sink", &["orders", "customers"], Input::Records);
    spec.lead_topics = vec!["customers".into()];
    run_sink_until(&fixture, &url, spec, ends, apply).await;

    let read = read.lock().unwrap().clone();
    let customers = fixture.topic("customers");
    let first_order = read.iter().position(|(t, _)| *t != customers).unwrap();
    let last_customer = read.iter().rposition(|(t, _)| *t == customers).unwrap();
    assert!(
        last_customer < first_order,
        "customer records after the first order record: {read:?}"
    );
    let mut orders: Vec<i64> = read
        .iter()
        .filter(|(t, _)| *t != customers)
        .map(|(_, o)| *o)
        .collect();
    orders.dedup();
    assert_eq!(
        orders,
        (0..200).collect::<Vec<_>>(),
        "every order record, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committed_positions_reach_the_consumer_group_in_kafka_for_tools() {
    let mut fixture = Fixture::new(1).await;
    let mut last = 0;
    for i in 0..120 {
        (_, last) = fixture
            .produce_raw("orders", &format!("o-{i}"), b"order", &[])
            .await;
    }
    let (_, url) = fresh_schema().await;
    let name = "informational_sink";
    run_until(&fixture, &url, name, Input::Records, last + 1, |_| {
        Applied::default()
    })
    .await;

    // stopped: librdkafka's auto-commit sent the stored positions when the consumer closed
    let config = fixture.config(&url);
    let reader: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &fixture.brokers)
        .set("group.id", config.group_id(name, 1))
        .create()
        .unwrap();
    let mut asked = rdkafka::TopicPartitionList::new();
    asked.add_partition(&fixture.topic("orders"), 0);
    let committed = reader
        .committed_offsets(asked, Duration::from_secs(10))
        .unwrap();
    let offset = committed
        .find_partition(&fixture.topic("orders"), 0)
        .unwrap()
        .offset();
    assert_eq!(offset, rdkafka::Offset::Offset(last + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_batch_notifies_the_positions_channel_from_the_projectors_connection() {
    let mut fixture = Fixture::new(1).await;
    let (_, last) = fixture.produce(&placed("o-1", "c-1", 1, 100, 1)).await;
    let (_, schema_url) = fresh_schema().await;
    // the projector's connections carry a name of this test's own, so its notifications can
    // be told from those of the projectors of other tests sharing the database
    let application = format!("notify_{}", Uuid::new_v4().simple());
    let url = format!("{schema_url}&application_name={application}");

    let (listener, mut connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (notified, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = futures::StreamExt::next(&mut messages).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = notified.send((n.channel().to_owned(), n.process_id()));
            }
        }
    });
    listener
        .batch_execute("LISTEN factline_positions")
        .await
        .unwrap();

    let name = "notifying_sink";
    let sink = MemorySink {
        spec: spec(name, &["orders"], Input::Events),
        apply: |_: &Batch<'_>| Applied::default(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(factline_projectors::run_sink(
        fixture.config(&url),
        sink,
        async move {
            let _ = stopped.await;
        },
    ));
    let ends = HashMap::from([((fixture.topic("orders"), 0), last + 1)]);
    wait_caught_up(&url, name, 1, &ends).await;
    // the projector's backends, and the one this test reads with (also named so)
    let pids: HashSet<i32> = listener
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 \
               AND pid <> pg_backend_pid()",
            &[&application],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let _ = stop.send(());
    running.await.unwrap().unwrap();

    // notifications are delivered at commit: the one of the batch that stored the position
    // has arrived by now, whatever else the channel carried
    let mut received = Vec::new();
    while let Ok(notification) = notifications.try_recv() {
        received.push(notification);
    }
    assert!(
        received
            .iter()
            .any(|(channel, pid)| channel == "factline_positions" && pids.contains(pid)),
        "no notification from the projector's connections {pids:?}: {received:?}"
    );
}
