//! The text form of one encrypted field value, carried in the field's own Avro `string`, so a
//! record stays valid Avro of the same schema and any Avro reader sees only ciphertext:
//!
//! ```text
//! fl1:<data key id, 32 lowercase hex digits>:<base64url without padding of nonce (12) || ciphertext || tag (16)>
//! ```
//!
//! `fl1` is the format version. The cipher is AES-256-GCM with a fresh random 96-bit nonce per
//! value (from a CSPRNG), and the associated data is the prefix `fl1:<key id>`, so a value
//! cannot be moved under another key id. A string without the `fl1:` prefix is plaintext (a
//! record written before encryption existed) and is read as it is.
//!
//! Once the data key is destroyed the value reads as [`PLACEHOLDER`].

use aes_gcm::aead::{Aead, AeadInPlace, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use uuid::Uuid;

/// The prefix of every encrypted value (format version 1).
pub const PREFIX: &str = "fl1:";

/// What a personal field reads as once its subject's key has been destroyed: stable, so a
/// rebuild after an erasure gives the same read model as the live one.
pub const PLACEHOLDER: &str = "[erased]";

/// A string that has the prefix of an encrypted value but is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealedError {
    /// Not `fl1:<32 hex>:<base64url>`.
    #[error("malformed encrypted value: {0}")]
    Malformed(&'static str),
    /// The value does not authenticate under the key its prefix names.
    #[error("encrypted value does not authenticate under data key {0}")]
    Forged(Uuid),
}

/// A parsed encrypted value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed<'a> {
    /// The data key it is encrypted with.
    pub key_id: Uuid,
    /// The prefix up to the key id: the associated data.
    aad: &'a str,
    /// nonce || ciphertext || tag.
    bytes: Vec<u8>,
}

/// The data key an encrypted value names, without decoding its body: `Ok(None)` for plaintext.
pub fn key_id_of(text: &str) -> Result<Option<Uuid>, SealedError> {
    Ok(split(text)?.map(|(key_id, _)| key_id))
}

/// The key id and the body of an encrypted value; `Ok(None)` for plaintext.
fn split(text: &str) -> Result<Option<(Uuid, &str)>, SealedError> {
    let Some(rest) = text.strip_prefix(PREFIX) else {
        return Ok(None);
    };
    let (id, body) = rest
        .split_once(':')
        .ok_or(SealedError::Malformed("no key id"))?;
    if id.len() != 32 {
        return Err(SealedError::Malformed("the key id is not 32 hex digits"));
    }
    let key_id = Uuid::try_parse(id)
        .map_err(|_| SealedError::Malformed("the key id is not 32 hex digits"))?;
    Ok(Some((key_id, body)))
}

impl<'a> Sealed<'a> {
    /// `Ok(None)` for plaintext (no prefix); the parsed value otherwise.
    pub fn parse(text: &'a str) -> Result<Option<Sealed<'a>>, SealedError> {
        let Some((key_id, body)) = split(text)? else {
            return Ok(None);
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| SealedError::Malformed("the body is not base64url"))?;
        if bytes.len() < 12 + 16 {
            return Err(SealedError::Malformed("too short"));
        }
        Ok(Some(Sealed {
            key_id,
            aad: &text[..PREFIX.len() + 32],
            bytes,
        }))
    }

    /// Decrypts with the data key `cipher` (the key of [`Sealed::key_id`]).
    pub fn open(&self, cipher: &Aes256Gcm) -> Result<String, SealedError> {
        let (nonce, sealed) = self.bytes.split_at(12);
        let plain = cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: self.aad.as_bytes(),
                },
            )
            .map_err(|_| SealedError::Forged(self.key_id))?;
        String::from_utf8(plain).map_err(|_| SealedError::Forged(self.key_id))
    }
}

/// Encrypts `plaintext` with the data key `cipher` of `key_id`, in the text form above.
pub fn seal(cipher: &Aes256Gcm, key_id: Uuid, plaintext: &str) -> String {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    // The nonce comes from the thread's CSPRNG (ChaCha, seeded and reseeded from the operating
    // system): one `getrandom` call per field cost the write side 2% of its CPU.
    let mut nonce = Nonce::default();
    rand::Rng::fill_bytes(&mut rand::rng(), &mut nonce);
    // `fl1:{key id}` is both the text's start and the associated data.
    let mut text = String::with_capacity(
        PREFIX.len()
            + 33
            + base64::encoded_len(nonce.len() + plaintext.len() + 16, false).unwrap_or(0),
    );
    text.push_str(PREFIX);
    text.push_str(key_id.simple().encode_lower(&mut Uuid::encode_buffer()));
    let mut bytes = Vec::with_capacity(nonce.len() + plaintext.len() + 16);
    bytes.extend_from_slice(&nonce);
    bytes.extend_from_slice(plaintext.as_bytes());
    // Encryption with a valid key and nonce only fails past 64 GiB of plaintext.
    match cipher.encrypt_in_place_detached(&nonce, text.as_bytes(), &mut bytes[nonce.len()..]) {
        Ok(tag) => bytes.extend_from_slice(&tag),
        Err(_) => bytes.truncate(nonce.len()),
    }
    text.push(':');
    engine.encode_string(&bytes, &mut text);
    text
}

/// The data key ids named by sealed values anywhere in `bytes` (a record's raw Avro value,
/// where strings are stored as they are): for fetching a batch's keys at once. A false
/// positive is harmless (an id the store does not know is skipped).
pub fn key_ids_in(bytes: &[u8]) -> Vec<Uuid> {
    const PREFIX: &[u8] = b"fl1:";
    let mut ids = Vec::new();
    let mut at = 0;
    while let Some(found) = bytes[at..].windows(PREFIX.len()).position(|w| w == PREFIX) {
        let start = at + found + PREFIX.len();
        if let Some(id) = bytes
            .get(start..start + 33)
            .filter(|b| b[32] == b':')
            .and_then(|b| std::str::from_utf8(&b[..32]).ok())
            .and_then(|s| Uuid::try_parse(s).ok())
        {
            ids.push(id);
        }
        at = start;
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::aead::OsRng;
    use aes_gcm::KeyInit;

    fn key() -> Aes256Gcm {
        Aes256Gcm::new(&Aes256Gcm::generate_key(OsRng))
    }

    #[test]
    fn a_value_round_trips_and_carries_its_key_id() {
        let (k, id) = (key(), Uuid::new_v4());
        let text = seal(&k, id, "Ada Lovelace");
        assert!(text.starts_with(&format!("fl1:{}:", id.simple())), "{text}");
        assert!(!text.contains("Ada"));
        let sealed = Sealed::parse(&text).unwrap().unwrap();
        assert_eq!(sealed.key_id, id);
        assert_eq!(sealed.open(&k).unwrap(), "Ada Lovelace");
    }

    #[test]
    fn every_encryption_uses_a_fresh_nonce() {
        let (k, id) = (key(), Uuid::new_v4());
        let a = seal(&k, id, "same");
        let b = seal(&k, id, "same");
        assert_ne!(a, b);
        assert_ne!(a[..PREFIX.len() + 33 + 16], b[..PREFIX.len() + 33 + 16]);
    }

    #[test]
    fn plaintext_is_plaintext() {
        assert_eq!(Sealed::parse("ada@example.com").unwrap(), None);
        assert_eq!(Sealed::parse("").unwrap(), None);
    }

    #[test]
    fn a_wrong_key_a_moved_value_or_a_tampered_one_does_not_open() {
        let (k, id) = (key(), Uuid::new_v4());
        let text = seal(&k, id, "secret");
        let sealed = Sealed::parse(&text).unwrap().unwrap();
        assert_eq!(sealed.open(&key()), Err(SealedError::Forged(id)));
        // the same bytes under another key id
        let other = Uuid::new_v4();
        let moved = text.replace(&id.simple().to_string(), &other.simple().to_string());
        let moved = Sealed::parse(&moved).unwrap().unwrap();
        assert!(moved.open(&k).is_err());
        let mut tampered = text.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(Sealed::parse(&tampered)
            .ok()
            .flatten()
            .is_none_or(|s| s.open(&k).is_err()));
    }

    #[test]
    fn malformed_values_with_the_prefix_are_errors() {
        for bad in ["fl1:", "fl1:nothex:AAAA", "fl1:0123:AAAA"] {
            assert!(Sealed::parse(bad).is_err(), "{bad}");
        }
        let id = Uuid::new_v4().simple().to_string();
        assert!(Sealed::parse(&format!("fl1:{id}:!!")).is_err());
        assert!(Sealed::parse(&format!("fl1:{id}:AAAA")).is_err());
    }
}
