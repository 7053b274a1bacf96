//! The projections `factline-projector <name>` runs, one line each in [`registry`]: the
//! sample read models of the shop domain (`order_summary`, `customer_stats` and
//! `orders_per_day` in PostgreSQL, `order_search` and `event_index` in Elasticsearch) and the
//! declarative `customer_directory`; and `event_archive`, the archiver of every topic. The
//! order of the list gives each projector's default port (`--list`): append new projections
//! at the end.

pub mod registry;

pub use registry::{Registered, StartError};

/// Declares the projection modules and [`registry`] from one line per projection:
/// `module: entry` for a projection in code (the module is `src/projections/{module}.rs`),
/// `name: declarative(FILE)` for a declarative configuration shipped in the binary.
macro_rules! projections {
    ($($module:ident: $how:ident($($build:tt)*),)*) => {
        $(projections!(@module $module $how);)*
        /// Every registered projection, in `--list` order.
        pub fn registry() -> Vec<Registered> {
            vec![$(projections!(@entry $module $how($($build)*))),*]
        }
    };
    (@module $module:ident declarative) => {};
    (@module $module:ident archive) => {};
    (@module $module:ident $how:ident) => { pub mod $module; };
    (@entry $module:ident archive()) => {
        Registered::archive(stringify!($module))
    };
    (@entry $module:ident declarative($file:literal)) => {
        Registered::declarative(stringify!($module), include_str!($file))
    };
    (@entry $module:ident $how:ident($build:expr)) => {
        Registered::$how($module::NAME, $build)
    };
}

projections! {
    order_summary: postgres(|| Ok(order_summary::OrderSummaryProjection)),
    customer_stats: postgres(|| Ok(customer_stats::CustomerStatsProjection)),
    order_search: search(order_search::OrderSearchProjection::new),
    event_index: search(event_index::EventIndexProjection::new),
    customer_directory: declarative("../../config/customer_directory.toml"),
    orders_per_day: postgres(|| Ok(orders_per_day::OrdersPerDayProjection)),
    event_archive: archive(),
}

pub use customer_stats::CustomerStatsProjection;
pub use event_index::EventIndexProjection;
pub use order_search::OrderSearchProjection;
pub use order_summary::OrderSummaryProjection;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_projection_builds_under_its_registered_name() {
        let all = registry();
        for registered in &all {
            registered
                .check()
                .unwrap_or_else(|e| panic!("{}: {e}", registered.name()));
        }
        let mut names: Vec<_> = all.iter().map(Registered::name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len(), "a name is registered twice");
    }

    #[test]
    fn the_list_gives_each_projector_a_port_in_registry_order() {
        let list = registry::list(&registry()).unwrap();
        let lines: Vec<&str> = list.lines().collect();
        assert_eq!(lines[0], "order_summary\t9101\tpostgres\tcode");
        assert_eq!(lines[2], "order_search\t9103\telasticsearch\tcode");
        assert!(lines.contains(&"customer_directory\t9105\tpostgres\tdeclarative"));
        assert!(lines.contains(&format!("{}\t9107\tarchive\tcode", crate::archive::NAME).as_str()));
        assert_eq!(lines.len(), registry().len());
    }

    #[test]
    fn an_unknown_name_lists_the_registered_ones() {
        let error = registry::find(&registry(), "order_sumary").unwrap_err();
        assert!(
            error.to_string().contains("order_summary, customer_stats"),
            "{error}"
        );
    }
}
