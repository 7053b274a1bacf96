//! Unique names, so every test has its own topics, groups, schemas and indices and tests can
//! run in parallel (and against a shared cluster).

use uuid::Uuid;

/// `len` random lowercase hex characters (at most 32).
pub fn short_id(len: usize) -> String {
    Uuid::new_v4().simple().to_string()[..len.min(32)].to_owned()
}

/// `{prefix}-{10 random hex characters}`, e.g. an id or a name unique to one test.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", short_id(10))
}

/// A fresh topic prefix `t-{12 hex}-`.
pub fn topic_prefix() -> String {
    format!("t-{}-", short_id(12))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_shaped() {
        assert_ne!(unique("o"), unique("o"));
        assert_eq!(unique("o").len(), 12);
        let prefix = topic_prefix();
        assert!(prefix.starts_with("t-") && prefix.ends_with('-') && prefix.len() == 15);
        assert_eq!(short_id(40).len(), 32);
    }
}
