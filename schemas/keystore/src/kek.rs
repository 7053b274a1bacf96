//! Key-encryption keys (KEKs): the keys from configuration that wrap every data key.
//!
//! A KEK ring is written `ID:BASE64KEY`, one entry per line (a file) or comma-separated (an
//! environment variable); `BASE64KEY` is 32 random bytes in standard base64
//! (`head -c 32 /dev/urandom | base64`), `ID` a short name of letters, digits, `-`, `_` or `.`.
//! The **first** entry is the current KEK: new data keys are wrapped with it. The others are
//! older KEKs still accepted to unwrap data keys wrapped before a rotation. Lines that are
//! empty or start with `#` are ignored.
//!
//! Rotation: put the new KEK first and keep the old one after it; restart the services; run
//! [`crate::KeyStore::rewrap`] (it rewraps every data key still under an older KEK with the
//! current one); once it reports none left, remove the old entry.
//!
//! Wrapping is AES-256-GCM with a fresh random nonce, the data key's id as associated data
//! (a wrapped key moved to another row does not unwrap): `nonce (12) || ciphertext || tag`.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use uuid::Uuid;

/// A KEK ring that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KekError {
    /// The configured text has no KEK.
    #[error("no key-encryption key is configured")]
    Empty,
    /// An entry is malformed.
    #[error("key-encryption key entry {entry}: {reason}")]
    Malformed {
        /// The 1-based entry number.
        entry: usize,
        /// What is wrong.
        reason: String,
    },
    /// Two entries share an id.
    #[error("key-encryption key id {0} is listed twice")]
    Duplicate(String),
}

/// A data key could not be unwrapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnwrapError {
    /// The KEK it was wrapped with is not configured (a rotation removed it too early, or the
    /// services are given another KEK than the one that wrapped the key).
    #[error(
        "data key {key_id} is wrapped by key-encryption key {kek_id}, which is not configured"
    )]
    UnknownKek {
        /// The data key.
        key_id: Uuid,
        /// The KEK id stored with it.
        kek_id: String,
    },
    /// The wrapped bytes do not authenticate under the KEK of that id (another key with the
    /// same id, or corrupted storage).
    #[error("data key {key_id} does not unwrap with key-encryption key {kek_id}")]
    Corrupt {
        /// The data key.
        key_id: Uuid,
        /// The KEK id stored with it.
        kek_id: String,
    },
}

/// One KEK.
#[derive(Clone)]
struct Kek {
    id: String,
    cipher: Aes256Gcm,
}

/// The configured KEKs: the current one first.
#[derive(Clone)]
pub struct KekRing {
    keks: Vec<Kek>,
}

impl std::fmt::Debug for KekRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the key material
        f.debug_struct("KekRing")
            .field("ids", &self.keks.iter().map(|k| &k.id).collect::<Vec<_>>())
            .finish()
    }
}

impl KekRing {
    /// Parses a ring (see the module doc): entries separated by newlines or commas.
    pub fn parse(text: &str) -> Result<KekRing, KekError> {
        let mut keks: Vec<Kek> = Vec::new();
        let entries = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.starts_with('#'))
            .flat_map(|line| line.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty());
        for (i, entry) in entries.enumerate() {
            let malformed = |reason: &str| KekError::Malformed {
                entry: i + 1,
                reason: reason.to_owned(),
            };
            let (id, key) = entry
                .split_once(':')
                .ok_or_else(|| malformed("expected ID:BASE64KEY"))?;
            if id.is_empty()
                || id.len() > 64
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(malformed(
                    "the id must be 1 to 64 letters, digits, '-', '_' or '.'",
                ));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(key.trim())
                .map_err(|_| malformed("the key is not standard base64"))?;
            if bytes.len() != 32 {
                return Err(malformed(&format!(
                    "the key must be 32 bytes (AES-256), it is {}",
                    bytes.len()
                )));
            }
            if keks.iter().any(|k| k.id == id) {
                return Err(KekError::Duplicate(id.to_owned()));
            }
            keks.push(Kek {
                id: id.to_owned(),
                cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
            });
        }
        if keks.is_empty() {
            return Err(KekError::Empty);
        }
        Ok(KekRing { keks })
    }

    /// A new random ring entry `ID:BASE64KEY`, e.g. for a development KEK file.
    pub fn generate_entry(id: &str) -> String {
        let key = Aes256Gcm::generate_key(OsRng);
        format!(
            "{id}:{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        )
    }

    /// The id of the current KEK.
    pub fn current_id(&self) -> &str {
        &self.keks[0].id
    }

    /// Whether a KEK with this id is configured.
    pub fn knows(&self, kek_id: &str) -> bool {
        self.keks.iter().any(|k| k.id == kek_id)
    }

    /// Wraps `data_key` (of `key_id`) with the current KEK: (KEK id, wrapped bytes).
    pub fn wrap_key(&self, key_id: Uuid, data_key: &[u8]) -> (String, Vec<u8>) {
        let kek = &self.keks[0];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let mut out = nonce.to_vec();
        // Encryption with a valid key and nonce cannot fail for inputs this small.
        let sealed = kek
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: data_key,
                    aad: key_id.as_bytes(),
                },
            )
            .unwrap_or_default();
        out.extend_from_slice(&sealed);
        (kek.id.clone(), out)
    }

    /// Unwraps a data key stored with `kek_id`.
    pub fn unwrap_key(
        &self,
        key_id: Uuid,
        kek_id: &str,
        wrapped: &[u8],
    ) -> Result<Vec<u8>, UnwrapError> {
        let kek =
            self.keks
                .iter()
                .find(|k| k.id == kek_id)
                .ok_or_else(|| UnwrapError::UnknownKek {
                    key_id,
                    kek_id: kek_id.to_owned(),
                })?;
        let corrupt = || UnwrapError::Corrupt {
            key_id,
            kek_id: kek_id.to_owned(),
        };
        if wrapped.len() < 12 {
            return Err(corrupt());
        }
        let (nonce, sealed) = wrapped.split_at(12);
        kek.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: key_id.as_bytes(),
                },
            )
            .map_err(|_| corrupt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "a:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn a_ring_parses_from_lines_or_commas_and_the_first_is_current() {
        let b = KekRing::generate_entry("b");
        let ring = KekRing::parse(&format!("# keys, current first\n{b}\n\n{A}\n")).unwrap();
        assert_eq!(ring.current_id(), "b");
        assert!(ring.knows("a") && ring.knows("b") && !ring.knows("c"));
        let ring = KekRing::parse(&format!("{A},{b}")).unwrap();
        assert_eq!(ring.current_id(), "a");
        assert!(!format!("{ring:?}").contains("AAEC"), "{ring:?}");
    }

    #[test]
    fn malformed_rings_are_refused() {
        assert_eq!(KekRing::parse(" \n# none\n").unwrap_err(), KekError::Empty);
        for (text, expected) in [
            ("nokey", "expected ID:BASE64KEY"),
            ("a:!!", "not standard base64"),
            ("a:AAAA", "must be 32 bytes"),
            ("a b:AAAA", "the id must be"),
        ] {
            let e = KekRing::parse(text).unwrap_err().to_string();
            assert!(e.contains(expected), "{text}: {e}");
        }
        assert_eq!(
            KekRing::parse(&format!("{A},{A}")).unwrap_err(),
            KekError::Duplicate("a".into())
        );
    }

    #[test]
    fn wrapping_round_trips_and_is_bound_to_the_key_id_and_kek() {
        let ring = KekRing::parse(A).unwrap();
        let id = Uuid::new_v4();
        let (kek_id, wrapped) = ring.wrap_key(id, &[7; 32]);
        assert_eq!(kek_id, "a");
        assert_eq!(ring.unwrap_key(id, "a", &wrapped).unwrap(), vec![7; 32]);
        // fresh nonce each time
        assert_ne!(ring.wrap_key(id, &[7; 32]).1, wrapped);
        let other = Uuid::new_v4();
        assert!(matches!(
            ring.unwrap_key(other, "a", &wrapped),
            Err(UnwrapError::Corrupt { .. })
        ));
        assert!(matches!(
            ring.unwrap_key(id, "zz", &wrapped),
            Err(UnwrapError::UnknownKek { .. })
        ));
        // the same id with other key material does not unwrap
        let impostor = KekRing::parse(&KekRing::generate_entry("a")).unwrap();
        assert!(matches!(
            impostor.unwrap_key(id, "a", &wrapped),
            Err(UnwrapError::Corrupt { .. })
        ));
    }

    #[test]
    fn after_rotation_old_keys_unwrap_and_new_ones_use_the_new_kek() {
        let old = KekRing::parse(A).unwrap();
        let id = Uuid::new_v4();
        let (_, wrapped) = old.wrap_key(id, &[1; 32]);
        let rotated = KekRing::parse(&format!("{},{A}", KekRing::generate_entry("b"))).unwrap();
        assert_eq!(rotated.unwrap_key(id, "a", &wrapped).unwrap(), vec![1; 32]);
        let (kek_id, rewrapped) = rotated.wrap_key(id, &[1; 32]);
        assert_eq!(kek_id, "b");
        assert_eq!(
            rotated.unwrap_key(id, "b", &rewrapped).unwrap(),
            vec![1; 32]
        );
    }
}
