//! Settings from the environment, the same way in every binary: typed parsing with the
//! variable named in every error, empty values treated as unset, librdkafka properties passed
//! through from `KAFKA_PROPERTY_<NAME>`, and unknown variables under a binary's own prefix
//! rejected (a typo in `PROJECTOR_BATCH_MAX_EVENT` is an error, not a silent default).
//!
//! A binary's config struct reads every field it knows through one [`Env`], then calls
//! [`Env::reject_unknown`] with its prefixes: whatever was not read is unknown.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::str::FromStr;

/// The prefix of librdkafka pass-through properties.
pub const KAFKA_PROPERTY_PREFIX: &str = "KAFKA_PROPERTY_";

/// A setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// A required variable is unset or empty.
    #[error("{name} is required")]
    Missing {
        /// The variable.
        name: String,
    },
    /// A variable's value cannot be used.
    #[error("{name}: {reason}")]
    Invalid {
        /// The variable.
        name: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// A variable under one of the binary's prefixes that no setting reads (probably a typo).
    #[error("unknown setting {name} (no {prefix}* setting has that name)")]
    Unknown {
        /// The variable.
        name: String,
        /// The prefix it was found under.
        prefix: String,
    },
}

impl EnvError {
    /// An [`EnvError::Invalid`] for `name`.
    pub fn invalid(name: impl Into<String>, reason: impl Display) -> EnvError {
        EnvError::Invalid {
            name: name.into(),
            reason: reason.to_string(),
        }
    }
}

/// A snapshot of environment variables, remembering which ones were read.
#[derive(Debug, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
    read: RefCell<BTreeSet<String>>,
}

impl Env {
    /// The process environment (variables that are not valid UTF-8 are left out).
    pub fn from_process() -> Env {
        Env::from_vars(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// The given variables (name, value); a later duplicate name wins.
    pub fn from_vars<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Env {
        Env {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            read: RefCell::default(),
        }
    }

    /// The trimmed value of `name`, or `None` when it is unset or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.read.borrow_mut().insert(name.to_owned());
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// The value of `name`, which must be set and not empty.
    pub fn required(&self, name: &str) -> Result<String, EnvError> {
        self.get(name).map(str::to_owned).ok_or(EnvError::Missing {
            name: name.to_owned(),
        })
    }

    /// `name` parsed as `T`, or `None` when unset or empty.
    pub fn parse<T>(&self, name: &str) -> Result<Option<T>, EnvError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.get(name)
            .map(|value| {
                value
                    .parse()
                    .map_err(|e: T::Err| EnvError::invalid(name, format!("{value:?}: {e}")))
            })
            .transpose()
    }

    /// `name` parsed as `T`, or `default` when unset or empty.
    pub fn parse_or<T>(&self, name: &str, default: T) -> Result<T, EnvError>
    where
        T: FromStr,
        T::Err: Display,
    {
        Ok(self.parse(name)?.unwrap_or(default))
    }

    /// `name` as a boolean: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off` (any case).
    pub fn flag(&self, name: &str) -> Result<Option<bool>, EnvError> {
        self.get(name)
            .map(|value| match value.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(EnvError::invalid(
                    name,
                    format!("{value:?}: expected true or false"),
                )),
            })
            .transpose()
    }

    /// Every `KAFKA_PROPERTY_<NAME>` as a librdkafka property: the name lower-cased with
    /// underscores as dots (`KAFKA_PROPERTY_SECURITY_PROTOCOL=SSL` → `security.protocol=SSL`).
    /// Values are passed as given (not trimmed: a password may end in a space).
    pub fn kafka_properties(&self) -> Result<BTreeMap<String, String>, EnvError> {
        let mut properties = BTreeMap::new();
        for (name, value) in &self.vars {
            let Some(property) = name.strip_prefix(KAFKA_PROPERTY_PREFIX) else {
                continue;
            };
            if property.is_empty() {
                return Err(EnvError::invalid(name, "names no librdkafka property"));
            }
            properties.insert(
                property.to_ascii_lowercase().replace('_', "."),
                value.clone(),
            );
        }
        Ok(properties)
    }

    /// Fails on the first variable that starts with one of `prefixes` and was never read.
    /// Call it after every setting has been read.
    pub fn reject_unknown(&self, prefixes: &[&str]) -> Result<(), EnvError> {
        let read = self.read.borrow();
        for name in self.vars.keys() {
            if let Some(prefix) = prefixes.iter().find(|p| name.starts_with(**p)) {
                if !read.contains(name) {
                    return Err(EnvError::Unknown {
                        name: name.clone(),
                        prefix: (*prefix).to_owned(),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Env {
        Env::from_vars(vars.iter().copied())
    }

    #[test]
    fn values_are_trimmed_and_empty_means_unset() {
        let env = env(&[("A", "  x "), ("B", "   "), ("C", "")]);
        assert_eq!(env.get("A"), Some("x"));
        assert_eq!(env.get("B"), None);
        assert_eq!(env.get("C"), None);
        assert_eq!(env.get("D"), None);
    }

    #[test]
    fn required_names_the_missing_variable() {
        let env = env(&[("EMPTY", "")]);
        assert_eq!(
            env.required("EMPTY").unwrap_err().to_string(),
            "EMPTY is required"
        );
    }

    #[test]
    fn parse_errors_name_the_variable_and_the_value() {
        let env = env(&[("N", "12"), ("BAD", "twelve")]);
        assert_eq!(env.parse::<u32>("N").unwrap(), Some(12));
        assert_eq!(env.parse::<u32>("UNSET").unwrap(), None);
        assert_eq!(env.parse_or::<u32>("UNSET", 7).unwrap(), 7);
        let error = env.parse::<u32>("BAD").unwrap_err().to_string();
        assert!(error.starts_with("BAD: \"twelve\": "), "{error}");
    }

    #[test]
    fn flags_accept_the_usual_spellings_only() {
        let env = env(&[("A", "TRUE"), ("B", "off"), ("C", "maybe")]);
        assert_eq!(env.flag("A").unwrap(), Some(true));
        assert_eq!(env.flag("B").unwrap(), Some(false));
        assert!(env.flag("C").is_err());
    }

    #[test]
    fn kafka_properties_become_dotted_lowercase_names() {
        let env = env(&[
            ("KAFKA_PROPERTY_SECURITY_PROTOCOL", "SASL_SSL"),
            ("KAFKA_PROPERTY_SASL_PASSWORD", "secret "),
            ("KAFKA_BROKERS", "b:9092"),
        ]);
        let properties = env.kafka_properties().unwrap();
        assert_eq!(properties.len(), 2);
        assert_eq!(properties["security.protocol"], "SASL_SSL");
        assert_eq!(properties["sasl.password"], "secret ");
        assert!(env.reject_unknown(&["KAFKA_"]).is_err());
        assert!(super::Env::from_vars([("KAFKA_PROPERTY_", "x")])
            .kafka_properties()
            .is_err());
    }

    #[test]
    fn unread_variables_under_a_prefix_are_unknown() {
        let env = env(&[("APP_PORT", "1"), ("APP_PROT", "2"), ("OTHER_THING", "3")]);
        env.get("APP_PORT");
        let error = env.reject_unknown(&["APP_"]).unwrap_err();
        assert_eq!(
            error,
            EnvError::Unknown {
                name: "APP_PROT".into(),
                prefix: "APP_".into()
            }
        );
        env.get("APP_PROT");
        assert!(env.reject_unknown(&["APP_"]).is_ok());
    }
}
