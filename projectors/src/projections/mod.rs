//! The sample read models of the shop domain, one file each: `order_summary` and
//! `customer_stats` in PostgreSQL, `order_search` and `event_index` in Elasticsearch.

pub mod customer_stats;
pub mod event_index;
pub mod order_search;
pub mod order_summary;

pub use customer_stats::CustomerStatsProjection;
pub use event_index::EventIndexProjection;
pub use order_search::OrderSearchProjection;
pub use order_summary::OrderSummaryProjection;
