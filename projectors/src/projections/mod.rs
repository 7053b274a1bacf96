//! The sample read models of the shop domain, one file each.

pub mod customer_stats;
pub mod order_summary;

pub use customer_stats::CustomerStatsProjection;
pub use order_summary::OrderSummaryProjection;
