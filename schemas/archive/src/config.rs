//! The archive's settings (`ARCHIVE_*`), read the same way by the archiver, by projectors
//! reading history past retention and by the operator's `factline replay`.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `ARCHIVE_S3_BUCKET` | the bucket | required |
//! | `ARCHIVE_S3_ENDPOINT` | an S3-compatible endpoint (`http://127.0.0.1:8333`) | AWS |
//! | `ARCHIVE_S3_REGION` | the region | `us-east-1` |
//! | `ARCHIVE_S3_PREFIX` | a key prefix, ending in `/` | none |
//! | `ARCHIVE_S3_ACCESS_KEY_ID`, `ARCHIVE_S3_SECRET_ACCESS_KEY` | credentials (both or neither; neither sends unsigned requests) | none |
//! | `ARCHIVE_OBJECT_MAX_RECORDS` | records per object at most | 10000 |
//! | `ARCHIVE_OBJECT_MAX_BYTES` | bytes of keys, values and headers per object at most | 16777216 |

use crate::segmenter::CutRules;
use crate::store::BucketConfig;
use factline_service::env::{Env, EnvError};

/// Where and how the archive is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveConfig {
    /// The bucket.
    pub bucket: BucketConfig,
    /// Where objects are cut.
    pub rules: CutRules,
}

impl ArchiveConfig {
    /// Reads the `ARCHIVE_*` variables of `env`; an unknown `ARCHIVE_*` variable is an error.
    pub fn from_env(env: &Env) -> Result<ArchiveConfig, EnvError> {
        let defaults = CutRules::default();
        let config = ArchiveConfig {
            bucket: BucketConfig {
                endpoint: env.get("ARCHIVE_S3_ENDPOINT").map(str::to_owned),
                bucket: env.required("ARCHIVE_S3_BUCKET")?,
                region: env
                    .get("ARCHIVE_S3_REGION")
                    .unwrap_or("us-east-1")
                    .to_owned(),
                prefix: env.get("ARCHIVE_S3_PREFIX").unwrap_or_default().to_owned(),
                access_key_id: env.get("ARCHIVE_S3_ACCESS_KEY_ID").map(str::to_owned),
                secret_access_key: env.get("ARCHIVE_S3_SECRET_ACCESS_KEY").map(str::to_owned),
            },
            rules: CutRules {
                max_records: env.parse_or("ARCHIVE_OBJECT_MAX_RECORDS", defaults.max_records)?,
                max_bytes: env.parse_or("ARCHIVE_OBJECT_MAX_BYTES", defaults.max_bytes)?,
            },
        };
        env.reject_unknown(&["ARCHIVE_"])?;
        if config.rules.max_records == 0 {
            return Err(EnvError::invalid(
                "ARCHIVE_OBJECT_MAX_RECORDS",
                "must be at least 1",
            ));
        }
        if config.rules.max_bytes == 0 {
            return Err(EnvError::invalid(
                "ARCHIVE_OBJECT_MAX_BYTES",
                "must be at least 1",
            ));
        }
        if !config.bucket.prefix.is_empty() && !config.bucket.prefix.ends_with('/') {
            return Err(EnvError::invalid("ARCHIVE_S3_PREFIX", "must end with '/'"));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_stack_needs_only_a_bucket_and_an_endpoint() {
        let env = Env::from_vars([
            ("ARCHIVE_S3_BUCKET", "factline-archive"),
            ("ARCHIVE_S3_ENDPOINT", "http://127.0.0.1:8333"),
        ]);
        let config = ArchiveConfig::from_env(&env).unwrap();
        assert_eq!(
            config.bucket,
            BucketConfig::local("http://127.0.0.1:8333", "factline-archive")
        );
        assert_eq!(config.rules, CutRules::default());
    }

    #[test]
    fn the_secret_is_not_in_debug_output() {
        let env = Env::from_vars([
            ("ARCHIVE_S3_BUCKET", "b"),
            ("ARCHIVE_S3_ACCESS_KEY_ID", "AKIAEXAMPLE"),
            ("ARCHIVE_S3_SECRET_ACCESS_KEY", "very-secret"),
        ]);
        let shown = format!("{:?}", ArchiveConfig::from_env(&env).unwrap());
        assert!(shown.contains("AKIAEXAMPLE") && shown.contains("<redacted>"));
        assert!(!shown.contains("very-secret"));
    }

    #[test]
    fn unknown_and_bad_settings_are_named() {
        let error = |vars: &[(&str, &str)]| {
            ArchiveConfig::from_env(&Env::from_vars(vars.iter().copied()))
                .unwrap_err()
                .to_string()
        };
        assert!(error(&[]).contains("ARCHIVE_S3_BUCKET"));
        let bucket = ("ARCHIVE_S3_BUCKET", "b");
        assert!(error(&[bucket, ("ARCHIVE_S3_BUKET", "x")]).contains("ARCHIVE_S3_BUKET"));
        assert!(error(&[bucket, ("ARCHIVE_OBJECT_MAX_RECORDS", "0")]).contains("at least 1"));
        assert!(error(&[bucket, ("ARCHIVE_OBJECT_MAX_BYTES", "lots")])
            .contains("ARCHIVE_OBJECT_MAX_BYTES"));
        assert!(error(&[bucket, ("ARCHIVE_S3_PREFIX", "no-slash")]).contains("'/'"));
    }
}
