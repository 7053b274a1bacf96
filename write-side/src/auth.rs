//! Bearer API keys: the configuration holds SHA-256 hashes of the keys (never the keys), each
//! optionally limited to some commands. A presented key is hashed and compared with every
//! configured hash in constant time.

use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// One accepted API key: the SHA-256 of the key and, optionally, the commands it may send.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    hash: [u8; 32],
    allowed: Option<BTreeSet<String>>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("hash", &format_args!("{}…", &hex::encode(self.hash)[..8]))
            .field("allowed", &self.allowed)
            .finish()
    }
}

/// A malformed API key entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    /// The hash is not 64 hexadecimal characters.
    #[error("entry {index}: expected a SHA-256 hash as 64 hex characters")]
    BadHash {
        /// The entry's position in the list (from 0).
        index: usize,
    },
    /// The command list after `:` is empty.
    #[error("entry {index}: empty command list after ':'")]
    EmptyCommands {
        /// The entry's position in the list (from 0).
        index: usize,
    },
}

impl ApiKey {
    /// An entry for the plain `key` (hashed here), allowed every command, or only `allowed`.
    pub fn from_plain(key: &str, allowed: Option<&[&str]>) -> ApiKey {
        ApiKey {
            hash: Sha256::digest(key.as_bytes()).into(),
            allowed: allowed.map(|a| a.iter().map(|s| s.to_string()).collect()),
        }
    }

    /// Parses `HEX[:Cmd1|Cmd2],HEX,...` (whitespace around entries ignored, empty entries skipped).
    pub fn parse_list(text: &str) -> Result<Vec<ApiKey>, ApiKeyError> {
        text.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .enumerate()
            .map(|(index, entry)| {
                let (hash_hex, commands) = match entry.split_once(':') {
                    Some((h, c)) => (h.trim(), Some(c)),
                    None => (entry, None),
                };
                let mut hash = [0u8; 32];
                hex::decode_to_slice(hash_hex, &mut hash)
                    .map_err(|_| ApiKeyError::BadHash { index })?;
                let allowed = match commands {
                    None => None,
                    Some(list) => {
                        let set: BTreeSet<String> = list
                            .split('|')
                            .map(str::trim)
                            .filter(|c| !c.is_empty())
                            .map(String::from)
                            .collect();
                        if set.is_empty() {
                            return Err(ApiKeyError::EmptyCommands { index });
                        }
                        Some(set)
                    }
                };
                Ok(ApiKey { hash, allowed })
            })
            .collect()
    }

    /// A stable, non-secret identifier of this key: the hex SHA-256 the configuration holds.
    pub fn id(&self) -> String {
        hex::encode(self.hash)
    }

    /// Whether this key may send `command`.
    pub fn allows(&self, command: &str) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|set| set.contains(command))
    }
}

/// Who sent a request, once authenticated.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Authentication is off: everything is allowed.
    Anonymous,
    /// A configured key.
    Key(ApiKey),
}

impl Caller {
    /// Who the caller is, for scoping idempotency keys: empty when authentication is off,
    /// otherwise `key:` and the key's [`ApiKey::id`] (never the key itself). The same on every
    /// instance configured with the same keys, and across restarts.
    pub fn principal(&self) -> String {
        match self {
            Caller::Anonymous => String::new(),
            Caller::Key(key) => format!("key:{}", key.id()),
        }
    }

    /// Whether the caller may send `command`.
    pub fn allows(&self, command: &str) -> bool {
        match self {
            Caller::Anonymous => true,
            Caller::Key(key) => key.allows(command),
        }
    }
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token")]
    Missing,
    /// A token that matches no configured key.
    #[error("invalid bearer token")]
    Invalid,
}

/// The configured keys; empty means authentication is off.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    keys: Vec<ApiKey>,
}

impl ApiKeys {
    /// The keys of the configuration.
    pub fn new(keys: Vec<ApiKey>) -> ApiKeys {
        ApiKeys { keys }
    }

    /// Whether authentication is on.
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Authenticates the value of an `Authorization` header.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        if self.keys.is_empty() {
            return Ok(Caller::Anonymous);
        }
        let header = authorization.ok_or(AuthError::Missing)?;
        let token = match header.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(AuthError::Missing),
        };
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every configured key is compared, in constant time, whatever matches.
        let mut found = None;
        for key in &self.keys {
            if constant_time_eq(&key.hash, &presented) && found.is_none() {
                found = Some(key);
            }
        }
        found
            .map(|key| Caller::Key(key.clone()))
            .ok_or(AuthError::Invalid)
    }
}

/// Compares two hashes without an early exit.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= std::hint::black_box(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(key: &str) -> String {
        hex::encode(Sha256::digest(key.as_bytes()))
    }

    #[test]
    fn parses_hashes_and_command_lists() {
        let text = format!(
            "{}, {}:RegisterCustomer|PlaceOrder,",
            hash("alpha"),
            hash("beta")
        );
        let keys = ApiKeys::new(ApiKey::parse_list(&text).unwrap());
        let alpha = keys.authenticate(Some("Bearer alpha")).unwrap();
        assert!(alpha.allows("ShipOrder"));
        let beta = keys.authenticate(Some("bearer beta")).unwrap();
        assert!(beta.allows("PlaceOrder"));
        assert!(!beta.allows("ShipOrder"));
        assert_eq!(
            keys.authenticate(Some("Bearer gamma")).unwrap_err(),
            AuthError::Invalid
        );
        assert_eq!(keys.authenticate(None).unwrap_err(), AuthError::Missing);
        assert_eq!(
            keys.authenticate(Some("Basic alpha")).unwrap_err(),
            AuthError::Missing
        );
    }

    #[test]
    fn malformed_entries_are_errors() {
        assert_eq!(
            ApiKey::parse_list("abc").unwrap_err(),
            ApiKeyError::BadHash { index: 0 }
        );
        let empty = format!("{}:", hash("x"));
        assert_eq!(
            ApiKey::parse_list(&empty).unwrap_err(),
            ApiKeyError::EmptyCommands { index: 0 }
        );
    }

    #[test]
    fn principals_name_the_key_without_the_secret() {
        let keys = ApiKeys::new(vec![
            ApiKey::from_plain("alpha", None),
            ApiKey::from_plain("beta", None),
        ]);
        let alpha = keys.authenticate(Some("Bearer alpha")).unwrap().principal();
        let beta = keys.authenticate(Some("Bearer beta")).unwrap().principal();
        assert_eq!(alpha, format!("key:{}", hash("alpha")));
        assert_ne!(alpha, beta);
        assert!(!alpha.contains("alpha"));
        assert_eq!(Caller::Anonymous.principal(), "");
    }

    #[test]
    fn no_keys_means_anonymous() {
        let keys = ApiKeys::default();
        assert!(!keys.enabled());
        assert!(keys.authenticate(None).unwrap().allows("anything"));
    }
}
