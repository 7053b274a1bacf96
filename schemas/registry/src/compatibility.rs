//! Compatibility levels and the Avro compatibility check between a new schema and the
//! live versions of a subject.

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use std::str::FromStr;

/// A subject's compatibility level, as Confluent names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The new schema reads data written with the latest version.
    Backward,
    /// The new schema reads data written with every version.
    BackwardTransitive,
    /// The latest version reads data written with the new schema.
    Forward,
    /// Every version reads data written with the new schema.
    ForwardTransitive,
    /// Backward and forward against the latest version.
    Full,
    /// Backward and forward against every version.
    FullTransitive,
    /// No check.
    None,
}

impl Level {
    /// Confluent's name of the level.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
            Level::None => "NONE",
        }
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }

    fn backward(self) -> bool {
        matches!(
            self,
            Level::Backward | Level::BackwardTransitive | Level::Full | Level::FullTransitive
        )
    }

    fn forward(self) -> bool {
        matches!(
            self,
            Level::Forward | Level::ForwardTransitive | Level::Full | Level::FullTransitive
        )
    }
}

impl FromStr for Level {
    type Err = ();

    fn from_str(s: &str) -> Result<Level, ()> {
        Ok(match s {
            "BACKWARD" => Level::Backward,
            "BACKWARD_TRANSITIVE" => Level::BackwardTransitive,
            "FORWARD" => Level::Forward,
            "FORWARD_TRANSITIVE" => Level::ForwardTransitive,
            "FULL" => Level::Full,
            "FULL_TRANSITIVE" => Level::FullTransitive,
            "NONE" => Level::None,
            _ => return Err(()),
        })
    }
}

/// Checks `new` against the live versions of a subject (oldest first) at `level`.
/// Returns the problems found; empty means compatible.
pub fn check(level: Level, new: &Schema, existing: &[(i32, Schema)]) -> Vec<String> {
    if level == Level::None {
        return Vec::new();
    }
    let against: &[(i32, Schema)] = if level.transitive() {
        existing
    } else {
        existing.last().map(std::slice::from_ref).unwrap_or(&[])
    };
    let mut problems = Vec::new();
    for (version, old) in against {
        if level.backward() {
            if let Err(error) = SchemaCompatibility::can_read(old, new) {
                problems.push(format!(
                    "new schema cannot read data written with version {version}: {}",
                    describe(&error)
                ));
            }
        }
        if level.forward() {
            if let Err(error) = SchemaCompatibility::can_read(new, old) {
                problems.push(format!(
                    "version {version} cannot read data written with the new schema: {}",
                    describe(&error)
                ));
            }
        }
    }
    problems
}

fn describe(error: &apache_avro::error::CompatibilityError) -> String {
    use apache_avro::error::CompatibilityError as E;
    match error {
        E::MissingDefaultValue(field) => {
            format!("field '{field}' is missing in the writer's schema and has no default value")
        }
        E::FieldTypeMismatch(field, inner) => {
            format!("field '{field}' changed type: {}", describe(inner))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &str) -> Schema {
        Schema::parse_str(&format!(
            r#"{{"type":"record","name":"R","fields":[{fields}]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn optional_field_with_default_is_backward_and_forward_compatible() {
        let v1 = schema(r#"{"name":"a","type":"string"}"#);
        let v2 = schema(
            r#"{"name":"a","type":"string"},{"name":"b","type":["null","string"],"default":null}"#,
        );
        for level in [
            Level::Backward,
            Level::Forward,
            Level::Full,
            Level::FullTransitive,
        ] {
            assert!(
                check(level, &v2, &[(1, v1.clone())]).is_empty(),
                "{level:?}"
            );
        }
    }

    #[test]
    fn required_field_without_default_fails_backward_and_names_the_field() {
        let v1 = schema(r#"{"name":"a","type":"string"}"#);
        let v2 = schema(r#"{"name":"a","type":"string"},{"name":"gift_note","type":"string"}"#);
        let problems = check(Level::Backward, &v2, &[(1, v1.clone())]);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("gift_note"), "{problems:?}");
        assert!(check(Level::Forward, &v2, &[(1, v1.clone())]).is_empty());
        assert!(check(Level::None, &v2, &[(1, v1)]).is_empty());
    }

    #[test]
    fn removing_a_field_without_default_fails_forward() {
        let v1 = schema(r#"{"name":"a","type":"string"},{"name":"b","type":"string"}"#);
        let v2 = schema(r#"{"name":"a","type":"string"}"#);
        assert!(check(Level::Backward, &v2, &[(1, v1.clone())]).is_empty());
        let problems = check(Level::Forward, &v2, &[(1, v1)]);
        assert!(problems[0].contains("'b'"), "{problems:?}");
    }

    #[test]
    fn transitive_levels_check_every_version_and_plain_levels_only_the_latest() {
        let v1 = schema(r#"{"name":"a","type":"string"}"#);
        let v2 =
            schema(r#"{"name":"a","type":"string"},{"name":"b","type":"string","default":"x"}"#);
        let v3 = schema(r#"{"name":"a","type":"string"},{"name":"b","type":"string"}"#);
        let existing = [(1, v1), (2, v2)];
        assert!(check(Level::Backward, &v3, &existing).is_empty());
        assert_eq!(check(Level::BackwardTransitive, &v3, &existing).len(), 1);
    }

    #[test]
    fn levels_round_trip_through_their_names() {
        for name in [
            "BACKWARD",
            "BACKWARD_TRANSITIVE",
            "FORWARD",
            "FORWARD_TRANSITIVE",
            "FULL",
            "FULL_TRANSITIVE",
            "NONE",
        ] {
            assert_eq!(name.parse::<Level>().unwrap().as_str(), name);
        }
        assert!("SIDEWAYS".parse::<Level>().is_err());
    }
}
