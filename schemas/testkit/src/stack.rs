//! The environment of the local stack. Integration tests find the servers through
//! `KAFKA_BROKERS`, `SCHEMA_REGISTRY_URL`, `DATABASE_URL`, `ELASTICSEARCH_URL` and the archive's
//! object store (`ARCHIVE_S3_ENDPOINT`, `ARCHIVE_S3_BUCKET`), set by the project's scripts; when one is missing the test fails at once with one message naming every
//! missing variable and how to set them, instead of failing later on a connection error.
//! There is no silent skip: a test that needs the stack and does not have it fails.

/// The broker list.
pub const KAFKA_BROKERS: &str = "KAFKA_BROKERS";
/// The schema registry's base URL.
pub const SCHEMA_REGISTRY_URL: &str = "SCHEMA_REGISTRY_URL";
/// The PostgreSQL URL.
pub const DATABASE_URL: &str = "DATABASE_URL";
/// The Elasticsearch base URL.
pub const ELASTICSEARCH_URL: &str = "ELASTICSEARCH_URL";

/// The S3 endpoint of the event archive's object store.
pub const ARCHIVE_S3_ENDPOINT: &str = "ARCHIVE_S3_ENDPOINT";
/// The event archive's bucket.
pub const ARCHIVE_S3_BUCKET: &str = "ARCHIVE_S3_BUCKET";

/// Every variable of the stack.
pub const VARIABLES: [&str; 6] = [
    KAFKA_BROKERS,
    SCHEMA_REGISTRY_URL,
    DATABASE_URL,
    ELASTICSEARCH_URL,
    ARCHIVE_S3_ENDPOINT,
    ARCHIVE_S3_BUCKET,
];

/// The value of a required environment variable. When it is not set the test fails at once,
/// naming it and every other missing variable of the stack (see [`missing_message`]).
pub fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!("{}", missing_message(name, |v| std::env::var(v).ok())),
    }
}

/// Fails at once, with the message of [`env`], unless every variable of `names` is set.
pub fn require(names: &[&str]) {
    if let Some(name) = names
        .iter()
        .find(|n| std::env::var(n).map_or(true, |v| v.is_empty()))
    {
        env(name);
    }
}

/// The message of a missing variable: `name` and the other missing variables of the stack, and
/// the two ways to get them. `lookup` reads the environment (a parameter, for tests).
pub fn missing_message(name: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut missing = vec![name.to_owned()];
    missing.extend(
        VARIABLES
            .iter()
            .filter(|v| **v != name && lookup(v).is_none_or(|value| value.is_empty()))
            .map(|v| (*v).to_owned()),
    );
    let (list, verb) = match missing.as_slice() {
        [one] => (one.clone(), "is"),
        [rest @ .., last] => (format!("{} and {last}", rest.join(", ")), "are"),
        [] => unreachable!("the list holds at least the variable asked for"),
    };
    format!(
        "this test needs the local stack, but {list} {verb} not set. Run the tests with \
         `make test`, or start the stack and export its environment first:\n    \
         scripts/stack.sh start\n    eval \"$(scripts/stack.sh env)\"\n    cargo test"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_every_missing_variable_and_how_to_set_them() {
        let set = |v: &str| (v == DATABASE_URL).then(|| "postgres://x".to_owned());
        let message = missing_message(KAFKA_BROKERS, set);
        assert!(
            message
                .contains("KAFKA_BROKERS, SCHEMA_REGISTRY_URL, ELASTICSEARCH_URL, ARCHIVE_S3_ENDPOINT and ARCHIVE_S3_BUCKET are not set"),
            "{message}"
        );
        assert!(!message.contains("DATABASE_URL"), "{message}");
        assert!(message.contains("make test"), "{message}");
        assert!(message.contains("scripts/stack.sh start"), "{message}");
        assert!(
            message.contains("eval \"$(scripts/stack.sh env)\""),
            "{message}"
        );
    }

    #[test]
    fn one_missing_variable_is_named_alone() {
        let all_but_es = |v: &str| (v != ELASTICSEARCH_URL).then(|| "x".to_owned());
        let message = missing_message(ELASTICSEARCH_URL, all_but_es);
        assert!(
            message.contains("but ELASTICSEARCH_URL is not set"),
            "{message}"
        );
    }

    #[test]
    #[should_panic(expected = "needs the local stack, but FACTLINE_TESTKIT_SURELY_UNSET_VARIABLE")]
    fn a_missing_variable_fails_the_test_at_once() {
        env("FACTLINE_TESTKIT_SURELY_UNSET_VARIABLE");
    }
}
