//! How versioned read models are named, shared by the projector runtime that creates them and
//! the read API that queries a given version: a PostgreSQL table `{base}_v{version}` behind the
//! view `{base}`, an Elasticsearch index `{prefix}{base}_v{version}` behind the alias
//! `{prefix}{base}`.

/// The table behind a view: `versioned_table("order_summary", 1)` is `order_summary_v1`.
pub fn versioned_table(base: &str, version: u32) -> String {
    format!("{base}_v{version}")
}

/// The index behind an alias: `versioned_index("T-", "order_search", 2)` is
/// `t-order_search_v2` (index names are lowercase, so the prefix is lower-cased).
pub fn versioned_index(prefix: &str, base: &str, version: u32) -> String {
    format!("{}{base}_v{version}", prefix.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_version() {
        assert_eq!(versioned_table("order_summary", 1), "order_summary_v1");
        assert_eq!(
            versioned_index("T-", "order_search", 2),
            "t-order_search_v2"
        );
    }
}
