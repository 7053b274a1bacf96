//! The key store's settings, read from the environment the same way by every service that
//! encrypts or decrypts (the write side, the projectors):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `FACTLINE_KEK` | unset | the KEK ring inline: `ID:BASE64KEY[,ID:BASE64KEY…]`, current first ([`crate::kek`]) |
//! | `FACTLINE_KEK_FILE` | `.dev/factline-kek` | a file holding the ring, one entry per line |
//! | `FACTLINE_KEYS_DB_SCHEMA` | `factline_keys` | the PostgreSQL schema of the key tables (`DATABASE_URL`'s database) |
//! | `FACTLINE_KEYS_CACHE_TTL_MS` | 5000 | the bound on how long after an erasure another process may still use the key: a cached key stays usable while the erasure checks (at most every half of it) succeed, and this long after its read when they fail |
//! | `FACTLINE_KEYS_CACHE_CAPACITY` | 100000 | keys cached per process at most |
//!
//! With neither `FACTLINE_KEK` nor `FACTLINE_KEK_FILE` set, the services use the development
//! KEK file `.dev/factline-kek` under their working directory and create it (a random KEK,
//! with a warning in the log) when it does not exist — what `make up` runs with. Production
//! sets one of the two variables: losing the KEK loses every personal field.

use std::path::{Path, PathBuf};
use std::time::Duration;

use factline_service::{Env, EnvError};

use crate::kek::{KekError, KekRing};
use crate::store::StoreSettings;

/// The development KEK file, relative to the working directory.
pub const DEV_KEK_FILE: &str = ".dev/factline-kek";

/// Where the KEK ring comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KekSource {
    /// `FACTLINE_KEK`: the ring itself.
    Inline(String),
    /// `FACTLINE_KEK_FILE`: a file that must exist.
    File(PathBuf),
    /// Nothing configured: a development file, created when absent.
    Development(PathBuf),
}

/// The key store's configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyConfig {
    /// Where the KEKs come from. `FACTLINE_KEK` or `FACTLINE_KEK_FILE`.
    pub kek: KekSource,
    /// The PostgreSQL schema of the key tables. `FACTLINE_KEYS_DB_SCHEMA`, default `factline_keys`.
    pub db_schema: String,
    /// Key cache lifetime. `FACTLINE_KEYS_CACHE_TTL_MS`, default 5000.
    pub cache_ttl_ms: u64,
    /// Keys cached per process. `FACTLINE_KEYS_CACHE_CAPACITY`, default 100000.
    pub cache_capacity: usize,
}

impl std::fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kek = match &self.kek {
            KekSource::Inline(_) => "FACTLINE_KEK (inline)".to_owned(),
            KekSource::File(p) => format!("file {}", p.display()),
            KekSource::Development(p) => format!("development file {}", p.display()),
        };
        f.debug_struct("KeyConfig")
            .field("kek", &kek)
            .field("db_schema", &self.db_schema)
            .field("cache_ttl_ms", &self.cache_ttl_ms)
            .field("cache_capacity", &self.cache_capacity)
            .finish()
    }
}

impl Default for KeyConfig {
    fn default() -> Self {
        KeyConfig {
            kek: KekSource::Development(PathBuf::from(DEV_KEK_FILE)),
            db_schema: "factline_keys".into(),
            cache_ttl_ms: 5_000,
            cache_capacity: 100_000,
        }
    }
}

/// The KEK ring cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyConfigError {
    /// The ring's text is invalid.
    #[error("{source_name}: {error}")]
    Kek {
        /// The variable or file.
        source_name: String,
        /// What is wrong.
        error: KekError,
    },
    /// The KEK file cannot be read or created.
    #[error("cannot read or create the KEK file {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// The variables' common prefix, for a binary's unknown-variable check.
pub const ENV_PREFIX: &str = "FACTLINE_KEYS_";

impl KeyConfig {
    /// Reads the settings from `env` (see the module doc).
    pub fn from_env(env: &Env) -> Result<KeyConfig, EnvError> {
        let mut c = KeyConfig::default();
        match (env.get("FACTLINE_KEK"), env.get("FACTLINE_KEK_FILE")) {
            (Some(_), Some(_)) => {
                return Err(EnvError::invalid(
                    "FACTLINE_KEK",
                    "set FACTLINE_KEK or FACTLINE_KEK_FILE, not both",
                ))
            }
            (Some(ring), None) => c.kek = KekSource::Inline(ring.to_owned()),
            (None, Some(file)) => c.kek = KekSource::File(PathBuf::from(file)),
            (None, None) => {}
        }
        c.db_schema = env.parse_or("FACTLINE_KEYS_DB_SCHEMA", c.db_schema)?;
        if c.db_schema.is_empty()
            || c.db_schema.len() > 63
            || !c
                .db_schema
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
        {
            return Err(EnvError::invalid(
                "FACTLINE_KEYS_DB_SCHEMA",
                "1 to 63 lowercase letters, digits or '_'",
            ));
        }
        c.cache_ttl_ms = env.parse_or("FACTLINE_KEYS_CACHE_TTL_MS", c.cache_ttl_ms)?;
        c.cache_capacity = env.parse_or("FACTLINE_KEYS_CACHE_CAPACITY", c.cache_capacity)?;
        if c.cache_capacity == 0 {
            return Err(EnvError::invalid(
                "FACTLINE_KEYS_CACHE_CAPACITY",
                "must be at least 1",
            ));
        }
        Ok(c)
    }

    /// The same settings with the development KEK file at `path` when no KEK is configured
    /// (tests running in a crate's directory share the repository's file this way).
    pub fn with_development_file(mut self, path: PathBuf) -> KeyConfig {
        if let KekSource::Development(file) = &mut self.kek {
            *file = path;
        }
        self
    }

    /// The store settings.
    pub fn settings(&self) -> StoreSettings {
        StoreSettings {
            db_schema: self.db_schema.clone(),
            cache_ttl: Duration::from_millis(self.cache_ttl_ms),
            cache_capacity: self.cache_capacity,
        }
    }

    /// Loads the KEK ring (creating the development file when that is the source and it is
    /// absent).
    pub fn ring(&self) -> Result<KekRing, KeyConfigError> {
        match &self.kek {
            KekSource::Inline(text) => KekRing::parse(text).map_err(|error| KeyConfigError::Kek {
                source_name: "FACTLINE_KEK".into(),
                error,
            }),
            KekSource::File(path) => read_ring(path),
            KekSource::Development(path) => {
                if !path.exists() {
                    create_dev_file(path)?;
                }
                read_ring(path)
            }
        }
    }
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> KeyConfigError {
    KeyConfigError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn read_ring(path: &Path) -> Result<KekRing, KeyConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    KekRing::parse(&text).map_err(|error| KeyConfigError::Kek {
        source_name: path.display().to_string(),
        error,
    })
}

/// Writes a random KEK to a temporary file and links it into place (see
/// [`create_private_file`]).
fn create_dev_file(path: &Path) -> Result<(), KeyConfigError> {
    let id = format!("dev-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let text = format!(
        "# factline development KEK, generated because neither FACTLINE_KEK nor FACTLINE_KEK_FILE is set.\n\
         # Losing it loses every encrypted personal field. Never use it in production.\n{}\n",
        KekRing::generate_entry(&id)
    );
    if create_private_file(path, &text)? {
        tracing::warn!(path = %path.display(), kek_id = %id,
            "no FACTLINE_KEK or FACTLINE_KEK_FILE: created a development KEK");
    }
    Ok(())
}

/// Reads the development secret file at `path`, creating it with `generate()`'s text when it
/// does not exist (for secrets other than the KEK with the same development default, like
/// the write side's fingerprint secret).
pub fn read_or_create_private_file(
    path: &Path,
    generate: impl FnOnce() -> String,
) -> Result<String, KeyConfigError> {
    if !path.exists() && create_private_file(path, &generate())? {
        tracing::warn!(path = %path.display(), "created a development secret");
    }
    std::fs::read_to_string(path).map_err(|e| io_error(path, e))
}

/// Writes `text` to a temporary file (mode 0600) and hard-links it to `path`: whichever
/// concurrent process links first wins, and nobody ever reads a half-written file. `true`
/// when this call created it.
fn create_private_file(path: &Path, text: &str) -> Result<bool, KeyConfigError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    }
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    write_private(&tmp, text).map_err(|e| io_error(&tmp, e))?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_error(path, e)),
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Env {
        Env::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_and_overrides() {
        let c = KeyConfig::from_env(&env(&[])).unwrap();
        assert_eq!(c, KeyConfig::default());
        let c = KeyConfig::from_env(&env(&[
            ("FACTLINE_KEK_FILE", "/etc/factline/kek"),
            ("FACTLINE_KEYS_DB_SCHEMA", "keys_1"),
            ("FACTLINE_KEYS_CACHE_TTL_MS", "250"),
        ]))
        .unwrap();
        assert_eq!(c.kek, KekSource::File("/etc/factline/kek".into()));
        assert_eq!((c.db_schema.as_str(), c.cache_ttl_ms), ("keys_1", 250));
        for bad in [
            vec![("FACTLINE_KEK", "a:b"), ("FACTLINE_KEK_FILE", "f")],
            vec![("FACTLINE_KEYS_DB_SCHEMA", "Drop;Table")],
            vec![("FACTLINE_KEYS_CACHE_CAPACITY", "0")],
        ] {
            assert!(KeyConfig::from_env(&env(&bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_inline_ring_is_never_printed() {
        let entry = KekRing::generate_entry("k");
        let c = KeyConfig::from_env(&env(&[("FACTLINE_KEK", &entry)])).unwrap();
        assert_eq!(c.ring().unwrap().current_id(), "k");
        let secret = entry.split(':').nth(1).unwrap();
        assert!(!format!("{c:?}").contains(secret));
    }

    #[test]
    fn the_development_file_is_created_once_and_then_reused() {
        let dir = std::env::temp_dir().join(format!("kek-{}", uuid::Uuid::new_v4()));
        let path = dir.join("sub/factline-kek");
        let c = KeyConfig {
            kek: KekSource::Development(path.clone()),
            ..KeyConfig::default()
        };
        let first = c.ring().unwrap().current_id().to_owned();
        assert!(first.starts_with("dev-"));
        assert_eq!(c.ring().unwrap().current_id(), first);
        // a configured file must exist
        let missing = KeyConfig {
            kek: KekSource::File(dir.join("missing")),
            ..KeyConfig::default()
        };
        assert!(matches!(missing.ring(), Err(KeyConfigError::Io { .. })));
        let _ = std::fs::remove_dir_all(dir);
    }
}
