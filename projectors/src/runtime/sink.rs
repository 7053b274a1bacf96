//! The seam between the runtime and a read-model store: a [`Sink`] is handed only what it must
//! apply and answers which events it rejected.
//!
//! The runtime owns everything around it: consumer, rebalances, batching, decoding, retries
//! with backoff, and the **triage** of every batch ([`super::triage`]): records below the
//! stored position are fenced, event types the projection does not consume are counted,
//! poison records and the events a sink rejects are dead-lettered, a second copy of an event
//! already in the batch is a duplicate, and the positions advance over all of them. It opens
//! one PostgreSQL transaction per batch (positions always live in PostgreSQL, whatever the
//! sink, so the read API reads every projector's position in one place): it locks the batch's
//! position rows, calls [`Sink::apply`] inside it, then records dead-letter rows and the new
//! positions and commits. A sink whose read model lives in PostgreSQL writes into that
//! transaction (the change and its positions commit together); any other sink makes its
//! writes idempotent, since a failed commit re-applies the batch.
//!
//! Positions always move past every record of a committed batch: a sink that gathers records
//! across batches (an archive cutting objects at deterministic offsets) keeps what it has not
//! written out yet in that transaction too (a staging table), so a restart finds it again.
//!
//! A new sink is one type: its [`SinkSpec`], `bootstrap` (create its storage, register the
//! version), `apply`, and `swap` (make a rebuilt version live).

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use deadpool_postgres::Object;
use tokio_postgres::Transaction;

use crate::bookkeeping::{BootstrapError, Liveness, Registration};
use crate::error::Cause;
use crate::positions::TopicPartition;
use crate::projection::Event;
use crate::record::Record;

/// The records of a batch at most, for a sink that names no other default.
pub const DEFAULT_BATCH_MAX: usize = 2000;

/// What a sink is, said once: the runtime takes the consumer group, checkpoint key, metrics
/// label and registration from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkSpec {
    /// `postgres` or `elasticsearch` (recorded in `factline_projector_rebuilds.sink`).
    pub kind: &'static str,
    /// The projector name (consumer group, checkpoint key, metrics label).
    pub name: String,
    /// The read model's version.
    pub version: u32,
    /// The topics consumed, without prefix.
    pub topics: Vec<String>,
    /// Topics read before the others on every assignment, up to their end at that moment
    /// ([`super::lead`]): a search join's side topics. Empty for most sinks.
    pub lead_topics: Vec<String>,
    /// The event types applied; others are counted and skipped without decoding.
    pub event_types: Vec<String>,
    /// The names readers query: PostgreSQL views or Elasticsearch aliases (with prefix).
    pub read_models: Vec<String>,
    /// How many records a batch holds at most unless `PROJECTOR_BATCH_MAX_EVENTS` says.
    pub default_batch_max: usize,
    /// How long a batch waits for more records unless `PROJECTOR_BATCH_MAX_WAIT_MS` says.
    pub default_batch_wait: Duration,
    /// What the sink is handed.
    pub input: Input,
    /// Sequenced dead-lettering ([`super::sequence`]): a dead-lettered event parks the later
    /// events of its key. Only for a sink writing into the runtime's transaction.
    pub sequenced: bool,
    /// Whether the runtime decrypts the catalog's personal fields before the sink sees an
    /// event; `false`: they stay sealed and no data key is fetched (see
    /// [`Projection::reads_personal_data`](crate::Projection::reads_personal_data)).
    pub opens_personal_data: bool,
}

/// What a sink consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Decoded events of the types in [`SinkSpec::event_types`] ([`Batch::events`]); the
    /// runtime counts other types and dead-letters poison.
    Events,
    /// Every record as read, nothing decoded, counted or dead-lettered by the runtime
    /// ([`Batch::records`]): for a sink that keeps records, such as an archive.
    Records,
}

/// One batch as a sink sees it, after the runtime's triage.
#[derive(Debug)]
pub struct Batch<'a> {
    events: Vec<&'a Event>,
    records: Vec<&'a Record>,
    high_watermarks: &'a HashMap<TopicPartition, i64>,
}

impl<'a> Batch<'a> {
    /// A batch of these events, the records they were fenced from, and the partitions' ends.
    pub fn new(
        events: Vec<&'a Event>,
        records: Vec<&'a Record>,
        high_watermarks: &'a HashMap<TopicPartition, i64>,
    ) -> Batch<'a> {
        Batch {
            events,
            records,
            high_watermarks,
        }
    }

    /// The events to apply, in log order: none below the stored positions, none of a type the
    /// projection does not consume, no poison, no second copy of an event (same `event_id`).
    /// Whether the read model applied one already in an earlier batch is the sink's to know.
    pub fn events(&self) -> &[&'a Event] {
        &self.events
    }

    /// Every record of the batch above the stored positions, in log order, as read (whatever
    /// it decoded to): for a sink that keeps records rather than events.
    pub fn records(&self) -> &[&'a Record] {
        &self.records
    }

    /// A partition's end (the offset after its last record) as last seen by the consumer's
    /// statistics (about once a second: it may be missing or behind), e.g. for a sink that
    /// gathers records across batches and writes what it gathered once it reached the end.
    pub fn high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        self.high_watermarks
            .get(&(topic.to_owned(), partition))
            .copied()
    }
}

/// What a sink did with a [`Batch`].
#[derive(Debug, Default)]
pub struct Applied {
    /// Events the read model had applied already (its own memory of event ids): counted as
    /// duplicates.
    pub duplicates: u64,
    /// Events refused for good: the runtime dead-letters their records and moves on.
    pub rejected: Vec<Rejected>,
}

/// An event a sink refused for good.
#[derive(Debug)]
pub struct Rejected {
    /// Its position in [`Batch::events`].
    pub event: usize,
    /// Why (the dead letter's `error` header is this error's [`chain`](crate::error::chain)).
    pub error: Cause,
}

/// A read-model store the runtime commits triaged batches to.
///
/// Errors are explicit about what happens next: an `Err` is **transient** (the runtime rolls
/// the batch back and retries it with backoff, nothing is skipped); what is permanent is one
/// event's, returned in [`Applied::rejected`].
pub trait Sink: Send + Sync + 'static {
    /// A failure worth retrying.
    type Error: std::error::Error + Send + Sync + 'static;

    /// What the sink is.
    fn spec(&self) -> &SinkSpec;

    /// Prepares the store and registers this version (`factline_projector_rebuilds`); returns
    /// whether it serves the read models. Retried with backoff on a transient error.
    fn bootstrap(
        &self,
        client: &mut Object,
        registration: &Registration,
    ) -> impl Future<Output = Result<Liveness, BootstrapError>> + Send;

    /// Applies a batch. `tx` is the runtime's transaction, which holds the batch's position
    /// rows and commits the new positions after this returns: a sink in PostgreSQL writes its
    /// change into it; any other sink must make its writes safe to repeat (the batch is
    /// applied again if the commit fails).
    fn apply(
        &self,
        tx: &mut Transaction<'_>,
        batch: &Batch<'_>,
    ) -> impl Future<Output = Result<Applied, Self::Error>> + Send;

    /// Called after a batch committed (housekeeping such as pruning; failures only logged).
    fn committed(&self, client: &Object) -> impl Future<Output = ()> + Send {
        let _ = client;
        async {}
    }

    /// Makes this caught-up version the live one (atomically for readers) and retires
    /// `previous`. Returns whether it swapped (false: a newer version is live already).
    fn swap(
        &self,
        client: &mut Object,
        previous: u32,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send;

    /// Whether a version retired by a newer one stops consuming (its storage is dropped).
    /// PostgreSQL keeps retired tables up to date; Elasticsearch drops the retired indices.
    fn stops_when_retired(&self) -> bool {
        false
    }

    /// Called once when this version finds itself retired and stops: clean up its storage.
    fn retired(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}
