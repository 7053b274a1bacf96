//! Encryption of an event's personal fields with its subject's data key, and decryption back
//! (or to the placeholder once the key is destroyed), over the marking the contract declares
//! ([`factline_schemas::personal`]). The value keeps its schema: only strings change.

use std::collections::HashMap;

use apache_avro::types::Value;
use factline_schemas::personal::top_level_string;
use factline_schemas::EventSchema;
use uuid::Uuid;

use crate::sealed::{key_id_of, seal, Sealed, SealedError, PLACEHOLDER};
use crate::store::{Erasure, KeyState, KeyStore, KeyStoreError};

/// Decrypting an event failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The key store could not answer (transient: retry).
    #[error(transparent)]
    KeyStore(#[from] KeyStoreError),
    /// A value is not a valid encrypted value (permanent: the record is dead-lettered).
    #[error("field {field}: {error}")]
    Sealed {
        /// The field's path.
        field: String,
        /// What is wrong.
        error: SealedError,
    },
}

impl OpenError {
    /// Whether retrying may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, OpenError::KeyStore(e) if e.is_transient())
    }
}

/// The counter of sealed events, taken from the recorder once (the write side seals every
/// command; a process installs its recorder before serving any).
fn encrypted_total() -> &'static metrics::Counter {
    static COUNTER: std::sync::OnceLock<metrics::Counter> = std::sync::OnceLock::new();
    COUNTER.get_or_init(|| metrics::counter!("factline_fields_encrypted_total"))
}

/// Field encryption over a [`KeyStore`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct FieldCrypto {
    store: KeyStore,
    subject_prefix: String,
}

impl FieldCrypto {
    /// Field encryption with the keys of `store`.
    pub fn new(store: KeyStore) -> FieldCrypto {
        FieldCrypto {
            store,
            subject_prefix: String::new(),
        }
    }

    /// The same, with every subject prefixed in the key store (`t-1-` + `c-1`): several
    /// deployments sharing one database (a topic prefix each) never share a subject's key.
    /// Decryption is unaffected: values name their key by id.
    pub fn with_subject_prefix(mut self, prefix: &str) -> FieldCrypto {
        self.subject_prefix = prefix.to_owned();
        self
    }

    fn subject(&self, subject: &str) -> String {
        format!("{}{subject}", self.subject_prefix)
    }

    /// The key store.
    pub fn store(&self) -> &KeyStore {
        &self.store
    }

    /// Encrypts every personal field of `value` (an event of `event`) with its subject's key,
    /// creating the key on the subject's first event. Events without personal data are left
    /// as they are.
    pub async fn seal(&self, event: &EventSchema, value: &mut Value) -> Result<(), KeyStoreError> {
        let Some(personal) = &event.personal else {
            return Ok(());
        };
        let Some(subject) = personal.subject(value) else {
            return Ok(()); // the schema guarantees a string subject; nothing to key by otherwise
        };
        let (key_id, cipher) = self.store.key_for_subject(&self.subject(subject)).await?;
        personal.try_for_each_mut(value, |_, s| {
            *s = seal(&cipher, key_id, s);
            Ok::<_, KeyStoreError>(())
        })?;
        encrypted_total().increment(1);
        Ok(())
    }

    /// Decrypts every personal field of `value` in place: plaintext while the key exists,
    /// [`PLACEHOLDER`] once it was destroyed. Plaintext values (records written before
    /// encryption) are left as they are.
    pub async fn open(&self, event: &EventSchema, value: &mut Value) -> Result<(), OpenError> {
        let Some(personal) = &event.personal else {
            return Ok(());
        };
        let mut keys: HashMap<Uuid, KeyState> = HashMap::new();
        for (path, text) in personal.fields.iter().zip(personal.strings_by_path(value)) {
            let Some(text) = text else { continue };
            // only the key id here: the body is decoded once, below
            let key_id = key_id_of(text).map_err(|error| OpenError::Sealed {
                field: path.join("."),
                error,
            })?;
            if let Some(key_id) = key_id {
                if let std::collections::hash_map::Entry::Vacant(slot) = keys.entry(key_id) {
                    slot.insert(self.store.key_by_id(key_id).await?);
                }
            }
        }
        if keys.is_empty() {
            return Ok(());
        }
        personal.try_for_each_mut(value, |path, s| {
            let failed = |error| OpenError::Sealed {
                field: path.join("."),
                error,
            };
            let opened = match Sealed::parse(s).map_err(failed)? {
                None => return Ok(()),
                Some(sealed) => match keys.get(&sealed.key_id) {
                    Some(KeyState::Live(cipher)) => sealed.open(cipher).map_err(failed)?,
                    Some(KeyState::Erased) | None => PLACEHOLDER.to_owned(),
                },
            };
            *s = opened;
            Ok(())
        })
    }

    /// When `event` erases a subject (`"factline.erases"`), destroys that subject's key and
    /// returns the erasure record; `None` for every other event.
    pub async fn erase(
        &self,
        event: &EventSchema,
        value: &Value,
    ) -> Result<Option<Erasure>, KeyStoreError> {
        let Some(field) = &event.erases else {
            return Ok(None);
        };
        let Some(subject) = top_level_string(value, field) else {
            return Ok(None);
        };
        let erasure = self.store.erase(&self.subject(subject)).await?;
        metrics::counter!("factline_subjects_erased_total").increment(1);
        tracing::info!(subject, key_id = ?erasure.key_id, "data key destroyed");
        Ok(Some(erasure))
    }
}
