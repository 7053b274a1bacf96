//! The in-flight budget: how many records and bytes may be produced but not yet acknowledged.
//! A request takes a permit for one record and its size before producing and gives it back when
//! the broker answers; when none is free within a short timeout it gets `503`, never a hung
//! request. librdkafka's queue is sized to the same budget, so memory stays bounded.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The shared budget of records and bytes in flight.
#[derive(Debug, Clone)]
pub struct Budget {
    gauges: Arc<InFlightGauges>,
    records: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    max_records: usize,
    max_bytes: usize,
    timeout: Duration,
}

/// One record's share of the budget; released when dropped.
#[derive(Debug)]
pub struct Permit {
    gauges: Arc<InFlightGauges>,
    _record: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
    bytes: usize,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gauges.records.decrement(1.0);
        self.gauges.bytes.decrement(self.bytes as f64);
    }
}

/// The in-flight gauges' handles, taken once (every command moves them twice).
#[derive(Debug)]
struct InFlightGauges {
    records: metrics::Gauge,
    bytes: metrics::Gauge,
}

/// Why no permit was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The budget stayed used up for the whole timeout.
    #[error("in-flight budget exhausted")]
    Exhausted,
}

impl Budget {
    /// A budget of `max_records` records and `max_bytes` bytes; a request waits at most `timeout`.
    /// Its gauges are those of the metrics recorder installed when it is made.
    pub fn new(max_records: usize, max_bytes: usize, timeout: Duration) -> Budget {
        Budget {
            gauges: Arc::new(InFlightGauges {
                records: metrics::gauge!("factline_write_side_in_flight_records"),
                bytes: metrics::gauge!("factline_write_side_in_flight_bytes"),
            }),
            records: Arc::new(Semaphore::new(max_records)),
            bytes: Arc::new(Semaphore::new(max_bytes)),
            max_records,
            max_bytes,
            timeout,
        }
    }

    /// Takes room for one record of `bytes` bytes (a record larger than the whole byte budget
    /// takes all of it), waiting at most the budget's timeout.
    pub async fn acquire(&self, bytes: usize) -> Result<Permit, BudgetError> {
        let bytes = bytes.clamp(1, self.max_bytes);
        let wanted = u32::try_from(bytes).unwrap_or(u32::MAX);
        let take = async {
            let record = self.records.clone().acquire_owned().await.ok()?;
            let bytes = self.bytes.clone().acquire_many_owned(wanted).await.ok()?;
            Some((record, bytes))
        };
        match tokio::time::timeout(self.timeout, take).await {
            Ok(Some((record, byte_permit))) => {
                self.gauges.records.increment(1.0);
                self.gauges.bytes.increment(wanted as f64);
                Ok(Permit {
                    gauges: self.gauges.clone(),
                    _record: record,
                    _bytes: byte_permit,
                    bytes: wanted as usize,
                })
            }
            _ => {
                metrics::counter!("factline_write_side_budget_exhausted_total").increment(1);
                Err(BudgetError::Exhausted)
            }
        }
    }

    /// Records in flight now.
    pub fn records_in_flight(&self) -> usize {
        self.max_records - self.records.available_permits()
    }

    /// Bytes in flight now.
    pub fn bytes_in_flight(&self) -> usize {
        self.max_bytes - self.bytes.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn over_budget_fails_fast_and_frees_on_drop() {
        let budget = Budget::new(2, 100, Duration::from_millis(20));
        let a = budget.acquire(10).await.unwrap();
        let _b = budget.acquire(10).await.unwrap();
        assert_eq!(budget.records_in_flight(), 2);
        assert_eq!(budget.bytes_in_flight(), 20);
        assert_eq!(
            budget.acquire(10).await.unwrap_err(),
            BudgetError::Exhausted
        );
        drop(a);
        let _c = budget.acquire(10).await.unwrap();
    }

    #[tokio::test]
    async fn bytes_are_limited_too() {
        let budget = Budget::new(10, 100, Duration::from_millis(20));
        let _big = budget.acquire(1000).await.unwrap();
        assert_eq!(budget.bytes_in_flight(), 100);
        assert_eq!(budget.acquire(1).await.unwrap_err(), BudgetError::Exhausted);
        // The failed attempt gave back its record permit.
        assert_eq!(budget.records_in_flight(), 1);
    }
}
