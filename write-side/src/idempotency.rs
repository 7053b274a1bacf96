//! Idempotency keys: the event id of a keyed command is derived from everything that makes the
//! command distinct — its name, the authenticated principal, the key and a fingerprint of the
//! body — so a true retry always carries the same event id (read models record it once), while
//! the same key with another body can never carry the id of an earlier event, on any instance,
//! after any restart. A bounded in-memory store (least recently used first out, time to live)
//! remembers each key's answer, so a retry with the same body gets the original answer without
//! producing again, a retry with another body gets `422`, and a concurrent duplicate waits for
//! the first request's outcome instead of producing twice.
//!
//! The body fingerprint is an HMAC-SHA256 keyed with the write side's fingerprint secret
//! ([`FingerprintKey`], `WRITE_SIDE_FINGERPRINT_SECRET`): a body holds personal data (an email,
//! an address), and an unkeyed hash of it — through the event id derived from it — would let
//! anyone who can guess candidates confirm them. Every write-side instance must share the
//! secret (event ids must agree across instances and restarts); changing it changes the id of
//! every later retry, so a retry across the change is a new event.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use uuid::Uuid;

/// The namespace of idempotent event ids (fixed forever: changing it changes every id).
pub const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_0c2e_5b7d_4e8a_9c3b_2d4f_6e8a_0b1c);

/// What a client's `Idempotency-Key` is scoped to: one command, sent by one principal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    /// The command's name (`PlaceOrder`).
    pub command: String,
    /// Who sent it ([`crate::auth::Caller::principal`]; empty when authentication is off).
    pub principal: String,
    /// The client's key.
    pub key: String,
}

impl IdempotencyKey {
    /// The key `key` of `command` sent by `principal`.
    pub fn new(command: &str, principal: &str, key: &str) -> IdempotencyKey {
        IdempotencyKey {
            command: command.to_string(),
            principal: principal.to_string(),
            key: key.to_string(),
        }
    }
}

/// The event id of the command identified by `key` with a body of `fingerprint` (UUID v5 of
/// all four, each length-prefixed so no two different inputs share a name).
pub fn event_id_for(key: &IdempotencyKey, fingerprint: &[u8; 32]) -> Uuid {
    let mut name = Vec::with_capacity(
        64 + key.command.len() + key.principal.len() + key.key.len() + fingerprint.len(),
    );
    name.extend_from_slice(b"factline-event-id/2");
    for part in [
        key.command.as_bytes(),
        key.principal.as_bytes(),
        key.key.as_bytes(),
        fingerprint.as_slice(),
    ] {
        name.extend_from_slice(&(part.len() as u64).to_be_bytes());
        name.extend_from_slice(part);
    }
    Uuid::new_v5(&EVENT_ID_NAMESPACE, &name)
}

/// Checks an `Idempotency-Key` value: 1 to 255 printable ASCII characters, without leading or
/// trailing spaces ([`crate::request_meta::valid_token`]).
pub fn valid_key(key: &str) -> bool {
    crate::request_meta::valid_token(key, 255)
}

/// The secret keying body fingerprints (32 bytes derived from the configured secret).
#[derive(Clone)]
pub struct FingerprintKey([u8; 32]);

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FingerprintKey(..)")
    }
}

impl FingerprintKey {
    /// The key of a configured secret (any length; the configuration asks for at least 32
    /// characters).
    pub fn new(secret: &[u8]) -> FingerprintKey {
        FingerprintKey(Sha256::digest(secret).into())
    }
}

/// A keyed fingerprint of a JSON body that ignores object key order and formatting; a number
/// with a zero fraction counts as its integer (`2.0` as `2`), as it does in the event.
pub fn fingerprint(key: &FingerprintKey, body: &serde_json::Value) -> [u8; 32] {
    type Hasher = Hmac<Sha256>;
    fn feed(hasher: &mut Hasher, value: &serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                hasher.update(b"{");
                for (k, v) in entries {
                    hasher.update(serde_json::Value::String(k.clone()).to_string().as_bytes());
                    hasher.update(b":");
                    feed(hasher, v);
                    hasher.update(b",");
                }
                hasher.update(b"}");
            }
            Value::Array(items) => {
                hasher.update(b"[");
                for item in items {
                    feed(hasher, item);
                    hasher.update(b",");
                }
                hasher.update(b"]");
            }
            Value::Number(n) => match factline_schemas::json_integer(n) {
                Some(i) => hasher.update(i.to_string().as_bytes()),
                None => hasher.update(n.to_string().as_bytes()),
            },
            scalar => hasher.update(scalar.to_string().as_bytes()),
        }
    }
    // HMAC accepts keys of any length: this cannot fail
    let mut hasher = match Hasher::new_from_slice(&key.0) {
        Ok(hasher) => hasher,
        Err(_) => unreachable!("hmac takes a key of any length"),
    };
    feed(&mut hasher, body);
    hasher.finalize().into_bytes().into()
}

type Key = IdempotencyKey;

enum State<A> {
    /// A request is producing; the receiver changes when it is done or gone.
    Pending {
        owner: u64,
        done: watch::Receiver<()>,
    },
    /// The answer to give to retries.
    Done(Arc<A>),
}

struct Slot<A> {
    fingerprint: [u8; 32],
    state: State<A>,
    tick: u64,
    since: Instant,
}

struct Inner<A> {
    slots: HashMap<Key, Slot<A>>,
    by_use: BTreeMap<u64, Key>,
    tick: u64,
}

/// The remembered answers, by [`IdempotencyKey`].
pub struct IdempotencyStore<A> {
    inner: Arc<Mutex<Inner<A>>>,
    capacity: usize,
    ttl: Duration,
}

impl<A> Clone for IdempotencyStore<A> {
    fn clone(&self) -> Self {
        IdempotencyStore {
            inner: self.inner.clone(),
            capacity: self.capacity,
            ttl: self.ttl,
        }
    }
}

impl<A> std::fmt::Debug for IdempotencyStore<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyStore")
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// What a request with an idempotency key should do.
pub enum Claim<A> {
    /// Nobody has this key: produce, then [`ClaimGuard::complete`] with the answer.
    Owner(ClaimGuard<A>),
    /// The key's earlier request succeeded with the same body: give this answer again.
    Replay(Arc<A>),
    /// The key was used with a different body.
    Conflict,
}

/// Why a claim could not be settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// The request holding the key did not finish in time.
    #[error("a request with the same idempotency key is still in progress")]
    StillInProgress,
}

/// The right to produce for one key; dropping it without completing frees the key for the next
/// request (which then produces, with the same event id if its body is the same).
pub struct ClaimGuard<A> {
    store: IdempotencyStore<A>,
    key: Key,
    owner: u64,
    done: Option<watch::Sender<()>>,
}

impl<A> IdempotencyStore<A> {
    /// A store of at most `capacity` keys, each remembered for `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> IdempotencyStore<A> {
        IdempotencyStore {
            inner: Arc::new(Mutex::new(Inner {
                slots: HashMap::new(),
                by_use: BTreeMap::new(),
                tick: 0,
            })),
            capacity: capacity.max(1),
            ttl,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<A>> {
        // A panic while holding the lock leaves consistent data (every update is one step).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many keys are remembered (in progress or done).
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Claims `key` for a body with `fingerprint`, waiting at most `wait` for a concurrent
    /// request with the same key to finish.
    pub async fn claim(
        &self,
        key: &IdempotencyKey,
        fingerprint: [u8; 32],
        wait: Duration,
    ) -> Result<Claim<A>, ClaimError> {
        let key: Key = key.clone();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut pending = {
                let mut inner = self.lock();
                inner.tick += 1;
                let tick = inner.tick;
                let expired = inner.slots.get(&key).is_some_and(|s| {
                    matches!(s.state, State::Done(_)) && s.since.elapsed() > self.ttl
                });
                if expired {
                    if let Some(old) = inner.slots.remove(&key) {
                        inner.by_use.remove(&old.tick);
                    }
                }
                match inner.slots.get_mut(&key) {
                    None => {
                        let (sender, receiver) = watch::channel(());
                        inner.slots.insert(
                            key.clone(),
                            Slot {
                                fingerprint,
                                state: State::Pending {
                                    owner: tick,
                                    done: receiver,
                                },
                                tick,
                                since: Instant::now(),
                            },
                        );
                        inner.by_use.insert(tick, key.clone());
                        self.evict(&mut inner);
                        return Ok(Claim::Owner(ClaimGuard {
                            store: self.clone(),
                            key,
                            owner: tick,
                            done: Some(sender),
                        }));
                    }
                    Some(slot) if slot.fingerprint != fingerprint => return Ok(Claim::Conflict),
                    Some(slot) => {
                        let old_tick = std::mem::replace(&mut slot.tick, tick);
                        let result = match &slot.state {
                            State::Done(answer) => Err(answer.clone()),
                            State::Pending { done, .. } => Ok(done.clone()),
                        };
                        inner.by_use.remove(&old_tick);
                        inner.by_use.insert(tick, key.clone());
                        match result {
                            Err(answer) => return Ok(Claim::Replay(answer)),
                            Ok(receiver) => receiver,
                        }
                    }
                }
            };
            // Wait until the owner completes or gives up, then look again.
            match tokio::time::timeout_at(deadline, pending.changed()).await {
                Ok(_) => continue,
                Err(_) => return Err(ClaimError::StillInProgress),
            }
        }
    }

    /// Forgets the least recently used finished keys beyond the capacity.
    fn evict(&self, inner: &mut Inner<A>) {
        let mut budget = inner.slots.len();
        while inner.slots.len() > self.capacity && budget > 0 {
            budget -= 1;
            let Some((&tick, _)) = inner.by_use.iter().next() else {
                break;
            };
            let Some(key) = inner.by_use.remove(&tick) else {
                break;
            };
            let pending = inner
                .slots
                .get(&key)
                .is_some_and(|s| matches!(s.state, State::Pending { .. }));
            if pending {
                // In progress: keep it, as most recently used.
                inner.tick += 1;
                let t = inner.tick;
                if let Some(slot) = inner.slots.get_mut(&key) {
                    slot.tick = t;
                }
                inner.by_use.insert(t, key);
            } else {
                inner.slots.remove(&key);
            }
        }
    }
}

impl<A> ClaimGuard<A> {
    /// Records the answer for retries and wakes the waiting duplicates.
    pub fn complete(mut self, answer: A) {
        let mut inner = self.store.lock();
        if let Some(slot) = inner.slots.get_mut(&self.key) {
            if matches!(slot.state, State::Pending { owner, .. } if owner == self.owner) {
                slot.state = State::Done(Arc::new(answer));
                slot.since = Instant::now();
            }
        }
        drop(inner);
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}

impl<A> Drop for ClaimGuard<A> {
    fn drop(&mut self) {
        let Some(done) = self.done.take() else {
            return;
        };
        let mut inner = self.store.lock();
        let ours = inner.slots.get(&self.key).is_some_and(
            |slot| matches!(slot.state, State::Pending { owner, .. } if owner == self.owner),
        );
        if ours {
            if let Some(slot) = inner.slots.remove(&self.key) {
                inner.by_use.remove(&slot.tick);
            }
        }
        drop(inner);
        let _ = done.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const WAIT: Duration = Duration::from_secs(5);

    fn key() -> FingerprintKey {
        FingerprintKey::new(b"a test secret of at least thirty-two characters")
    }

    #[test]
    fn fingerprints_are_keyed_so_a_guess_cannot_be_confirmed_without_the_secret() {
        let body = json!({"customer_id": "c-1", "email": "ada@example.com", "name": "Ada"});
        let other = FingerprintKey::new(b"another secret of at least thirty-two characters");
        assert_ne!(fingerprint(&key(), &body), fingerprint(&other, &body));
        assert_eq!(fingerprint(&key(), &body), fingerprint(&key(), &body));
        // not the plain hash of the canonical body either
        let canonical = br#"{"customer_id":"c-1","email":"ada@example.com","name":"Ada"}"#;
        let plain: [u8; 32] = Sha256::digest(canonical).into();
        assert_ne!(fingerprint(&key(), &body), plain);
        assert!(!format!("{:?}", key()).contains("secret"));
    }

    fn k(key: &str) -> IdempotencyKey {
        IdempotencyKey::new("C", "", key)
    }

    #[test]
    fn event_ids_depend_on_command_principal_key_and_body() {
        let body = fingerprint(&key(), &json!({"order_id": "o-1"}));
        let id = |command: &str, principal: &str, key: &str, body: &[u8; 32]| {
            event_id_for(&IdempotencyKey::new(command, principal, key), body)
        };
        let base = id("PlaceOrder", "", "k1", &body);
        assert_eq!(base, id("PlaceOrder", "", "k1", &body));
        assert_eq!(
            base,
            id(
                "PlaceOrder",
                "",
                "k1",
                &fingerprint(&key(), &json!({"order_id": "o-1"}))
            )
        );
        assert_ne!(base, id("PlaceOrder", "", "k2", &body));
        assert_ne!(base, id("ShipOrder", "", "k1", &body));
        assert_ne!(base, id("PlaceOrder", "key:ab", "k1", &body));
        assert_ne!(
            base,
            id(
                "PlaceOrder",
                "",
                "k1",
                &fingerprint(&key(), &json!({"order_id": "o-2"}))
            )
        );
        // Parts are length-prefixed: moving characters between them changes the id.
        assert_ne!(id("A", "bc", "d", &body), id("Ab", "c", "d", &body));
        assert_eq!(base.get_version_num(), 5);
    }

    #[tokio::test]
    async fn principals_have_their_own_keys() {
        let store: IdempotencyStore<u32> = IdempotencyStore::new(10, Duration::from_secs(60));
        let alpha = IdempotencyKey::new("C", "key:a", "k");
        let beta = IdempotencyKey::new("C", "key:b", "k");
        let Claim::Owner(guard) = store.claim(&alpha, [1; 32], WAIT).await.unwrap() else {
            panic!("expected owner");
        };
        guard.complete(1);
        assert!(matches!(
            store.claim(&beta, [2; 32], WAIT).await.unwrap(),
            Claim::Owner(_)
        ));
        assert!(matches!(
            store.claim(&alpha, [2; 32], WAIT).await.unwrap(),
            Claim::Conflict
        ));
    }

    #[test]
    fn fingerprints_ignore_key_order() {
        assert_eq!(
            fingerprint(&key(), &json!({"a": 1, "b": [1, {"x": "y", "z": null}]})),
            fingerprint(&key(), &json!({"b": [1, {"z": null, "x": "y"}], "a": 1}))
        );
        assert_ne!(
            fingerprint(&key(), &json!({"a": 1})),
            fingerprint(&key(), &json!({"a": 2}))
        );
        assert_ne!(
            fingerprint(&key(), &json!({"a": "1"})),
            fingerprint(&key(), &json!({"a": 1}))
        );
    }

    #[test]
    fn fingerprints_take_integral_numbers_as_integers() {
        let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
        assert_eq!(
            fingerprint(&key(), &parse(r#"{"a": 2.0, "b": [-1e3, -0.0]}"#)),
            fingerprint(&key(), &parse(r#"{"a": 2, "b": [-1000, 0]}"#))
        );
        assert_ne!(
            fingerprint(&key(), &parse(r#"{"a": 2.5}"#)),
            fingerprint(&key(), &parse(r#"{"a": 2}"#))
        );
    }

    #[tokio::test]
    async fn replay_conflict_and_release() {
        let store: IdempotencyStore<u32> = IdempotencyStore::new(10, Duration::from_secs(60));
        let Claim::Owner(guard) = store.claim(&k("k"), [1; 32], WAIT).await.unwrap() else {
            panic!("expected owner");
        };
        guard.complete(7);
        assert!(matches!(
            store.claim(&k("k"), [1; 32], WAIT).await.unwrap(),
            Claim::Replay(a) if *a == 7
        ));
        assert!(matches!(
            store.claim(&k("k"), [2; 32], WAIT).await.unwrap(),
            Claim::Conflict
        ));
        // A guard dropped without an answer frees the key.
        let Claim::Owner(guard) = store.claim(&k("other"), [1; 32], WAIT).await.unwrap() else {
            panic!("expected owner");
        };
        drop(guard);
        assert!(matches!(
            store.claim(&k("other"), [1; 32], WAIT).await.unwrap(),
            Claim::Owner(_)
        ));
    }

    #[tokio::test]
    async fn concurrent_duplicate_waits_for_the_first() {
        let store: IdempotencyStore<u32> = IdempotencyStore::new(10, Duration::from_secs(60));
        let Claim::Owner(guard) = store.claim(&k("k"), [1; 32], WAIT).await.unwrap() else {
            panic!("expected owner");
        };
        let second = {
            let store = store.clone();
            tokio::spawn(async move { store.claim(&k("k"), [1; 32], WAIT).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!second.is_finished());
        guard.complete(9);
        assert!(matches!(second.await.unwrap().unwrap(), Claim::Replay(a) if *a == 9));
    }

    #[tokio::test]
    async fn waiting_is_bounded() {
        let store: IdempotencyStore<u32> = IdempotencyStore::new(10, Duration::from_secs(60));
        let _guard = store.claim(&k("k"), [1; 32], WAIT).await.unwrap();
        let result = store
            .claim(&k("k"), [1; 32], Duration::from_millis(10))
            .await;
        assert_eq!(result.err(), Some(ClaimError::StillInProgress));
    }

    #[tokio::test]
    async fn least_recently_used_are_evicted_and_ttl_expires() {
        let store: IdempotencyStore<u32> = IdempotencyStore::new(2, Duration::from_secs(60));
        for key in ["a", "b"] {
            if let Claim::Owner(g) = store.claim(&k(key), [1; 32], WAIT).await.unwrap() {
                g.complete(1);
            }
        }
        // Touch "a", so "b" is the least recently used.
        assert!(matches!(
            store.claim(&k("a"), [1; 32], WAIT).await.unwrap(),
            Claim::Replay(_)
        ));
        if let Claim::Owner(g) = store.claim(&k("c"), [1; 32], WAIT).await.unwrap() {
            g.complete(1);
        }
        assert_eq!(store.len(), 2);
        assert!(matches!(
            store.claim(&k("b"), [1; 32], WAIT).await.unwrap(),
            Claim::Owner(_)
        ));

        let short: IdempotencyStore<u32> = IdempotencyStore::new(2, Duration::from_millis(1));
        if let Claim::Owner(g) = short.claim(&k("a"), [1; 32], WAIT).await.unwrap() {
            g.complete(1);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(matches!(
            short.claim(&k("a"), [2; 32], WAIT).await.unwrap(),
            Claim::Owner(_)
        ));
    }
}
