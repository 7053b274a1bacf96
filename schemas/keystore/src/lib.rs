//! Crypto-shredding of personal data: the fields a schema marks personal
//! ([`factline_schemas::personal`]) are encrypted with a data key per data subject, and
//! erasing the subject destroys the key, so every copy of the log (topics, dead letters,
//! archives, replays) keeps only ciphertext that nobody can read any more.
//!
//! - [`kek`]: the key-encryption keys from configuration, with rotation;
//! - [`store`]: the data keys in PostgreSQL (envelope encryption), created on first use,
//!   destroyed on erasure with an erasure record;
//! - `cache`: each process's cache of data keys, and how it learns of other processes'
//!   erasures within the bound `FACTLINE_KEYS_CACHE_TTL_MS`;
//! - [`sealed`]: the text form of one encrypted value (`fl1:<key id>:<base64url>`) and the
//!   [`PLACEHOLDER`] an erased value reads as;
//! - [`fields`]: encrypting and decrypting an event's personal fields;
//! - [`erasures`]: the erasure records without the KEK: listing them, declaring lost keys;
//! - [`config`]: the `FACTLINE_KEK*` / `FACTLINE_KEYS_*` settings every service reads the same
//!   way.

mod cache;
pub mod config;
pub mod erasures;
pub mod fields;
pub mod kek;
pub mod sealed;
pub mod store;

pub use config::{KeyConfig, KeyConfigError};
pub use fields::{FieldCrypto, OpenError};
pub use kek::KekRing;
pub use sealed::PLACEHOLDER;
pub use store::{Erasure, KeyState, KeyStore, KeyStoreError, StoreSettings};

/// A [`FieldCrypto`] from `config` over the database behind `pool`: loads the KEK ring (the
/// start-up check every service runs before serving).
pub fn field_crypto(
    config: &KeyConfig,
    pool: deadpool_postgres::Pool,
) -> Result<FieldCrypto, KeyConfigError> {
    let ring = config.ring()?;
    Ok(FieldCrypto::new(KeyStore::new(
        pool,
        ring,
        &config.settings(),
    )))
}
