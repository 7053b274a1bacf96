//! The projector runtime: what every projector shares, whatever its store.
//!
//! - [`run`]: [`run::run`] / [`run::run_sink`], start to graceful stop;
//! - [`startup`]: HTTP server, PostgreSQL pool, the sink's bootstrap, Kafka configurations;
//! - [`group`]: the consumer group membership (instance slots, joining again, leaving);
//! - [`consume`]: the consume loop, batching and retries; [`idle`]: pausing while idle;
//!   [`lead`]: a join's side topics read before the others;
//! - [`triage`] and [`commit`]: each batch sorted once and committed through the sink;
//! - [`sequence`]: sequenced dead-lettering for projections that opt in;
//! - [`sink`]: the seam a store implements;
//! - [`rebuild`]: progress of a rebuilding version and the swap;
//! - [`history`]: history below the log start read from the event archive;
//! - the runtime's own pieces: [`consumer`] (rebalances, seeking to stored positions),
//!   [`membership`] (slot locks), [`decode`], [`record`], [`dead_letter`], [`positions`],
//!   [`partitions`] (a value per partition of a batch),
//!   [`bookkeeping`] (its tables), [`progress`], [`http`], [`backoff`], [`wait`].

pub mod backoff;
pub mod bookkeeping;
pub mod commit;
pub mod consume;
pub mod consumer;
pub mod dead_letter;
pub mod decode;
pub mod group;
pub mod history;
pub mod http;
pub mod idle;
pub mod lead;
pub mod membership;
pub mod partitions;
pub mod positions;
pub mod progress;
pub mod rebuild;
pub mod record;
pub mod run;
pub mod sequence;
pub mod sink;
pub mod startup;
pub mod triage;
pub mod wait;
