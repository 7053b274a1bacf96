//! Rebuild without downtime, from inside the loop once a second: a building version records
//! its progress and, once its positions reach the end of every partition, asks the sink to swap
//! it live; a version a newer one retired stops (for sinks that drop retired storage).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;

use super::consume::Runner;
use super::sink::Sink;
use crate::bookkeeping::{self, Liveness};
use crate::error::chain;
use crate::positions;
use crate::progress;

/// Why the rebuild progress could not be measured this time (tried again a second later).
#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    /// The broker did not give metadata or watermarks.
    #[error("kafka metadata")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The blocking metadata task failed.
    #[error("metadata task")]
    Task(#[from] tokio::task::JoinError),
    /// No PostgreSQL connection.
    #[error("no postgresql connection")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// Reading positions or recording progress failed.
    #[error("postgresql failed")]
    Postgres(#[from] tokio_postgres::Error),
}

impl<K: Sink> Runner<K> {
    /// Once a second: a building version checks whether it caught up (then swaps), a live one
    /// whether a newer version retired it.
    pub(super) async fn rebuild_turn(&mut self) {
        match self.liveness {
            Liveness::Building { live } => match self.caught_up().await {
                Ok(true) => self.swap(live).await,
                Ok(false) => {}
                Err(error) => {
                    tracing::debug!(error = %chain(&error), "cannot check rebuild progress")
                }
            },
            Liveness::Live => {
                self.check_retired().await;
            }
            Liveness::Superseded { .. } => {}
        }
    }

    /// For sinks that stop when retired: whether a newer version retired this one (then the
    /// loop stops).
    pub(super) async fn check_retired(&mut self) -> bool {
        if !self.sink.stops_when_retired() {
            return false;
        }
        let Ok(client) = self.pool.get().await else {
            return false;
        };
        if let Ok(Some(state)) = bookkeeping::state(&**client, &self.name, self.version).await {
            if state == "retired" {
                self.retired = true;
            }
        }
        self.retired
    }

    /// Records the rebuild progress and says whether this version's stored positions reached
    /// the end of every partition.
    async fn caught_up(&mut self) -> Result<bool, ProgressError> {
        let consumer = self.consumer.clone();
        let topics: Vec<String> = self
            .sink
            .spec()
            .topics
            .iter()
            .map(|t| self.config.topic(t))
            .collect();
        let ends = tokio::task::spawn_blocking(move || {
            let mut ends = HashMap::new();
            for topic in topics {
                let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(5))?;
                for t in metadata.topics() {
                    for p in t.partitions() {
                        let (low, high) =
                            consumer.fetch_watermarks(&topic, p.id(), Duration::from_secs(5))?;
                        ends.insert((topic.clone(), p.id()), (low, high));
                    }
                }
            }
            Ok::<_, rdkafka::error::KafkaError>(ends)
        })
        .await??;
        let client = self.pool.get().await?;
        let stored = positions::load(&**client, &self.name, self.version).await?;
        let (done, total) = progress::measure(&ends, &stored);
        let progress = self.estimator.sample(Instant::now(), done, total);
        self.metrics.rebuild_progress(&progress);
        progress::record(&**client, &self.name, self.version, &progress).await?;
        Ok(!ends.is_empty()
            && ends.iter().all(|(tp, (low, high))| {
                high <= low || stored.get(tp).is_some_and(|next| next >= high)
            }))
    }

    pub(super) async fn swap(&mut self, live: u32) {
        let Ok(mut client) = self.pool.get().await else {
            return;
        };
        match self.sink.swap(&mut client, live).await {
            Ok(swapped) => {
                if swapped {
                    tracing::info!(previous = live, "rebuild caught up, read models swapped");
                }
                self.liveness = Liveness::Live;
                self.metrics.rebuilding(false);
            }
            Err(error) => {
                tracing::warn!(error = %chain(&error), "read model swap failed, will retry")
            }
        }
    }
}
