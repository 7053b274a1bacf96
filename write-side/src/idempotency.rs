//! Idempotency keys: a key makes the event id deterministic (UUID v5 of command name and key),
//! and a bounded in-memory store (least recently used first out, time to live) remembers each
//! key's answer, so a retry with the same body gets the original answer without producing
//! again, a retry with another body gets `422`, and a concurrent duplicate waits for the first
//! request's outcome instead of producing twice. After a restart the store is empty: the retry
//! produces again, with the same event id, and read models dedupe on it.

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use uuid::Uuid;

/// The namespace of idempotent event ids (fixed forever: changing it changes every id).
pub const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_0c2e_5b7d_4e8a_9c3b_2d4f_6e8a_0b1c);

/// The event id of the command `command` sent with idempotency key `key`.
pub fn event_id_for(command: &str, key: &str) -> Uuid {
    let mut name = Vec::with_capacity(command.len() + key.len() + 1);
    name.extend_from_slice(command.as_bytes());
    name.push(b'\n');
    name.extend_from_slice(key.as_bytes());
    Uuid::new_v5(&EVENT_ID_NAMESPACE, &name)
}

/// Checks an `Idempotency-Key` value: 1 to 255 printable ASCII characters.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// A fingerprint of a JSON body that ignores object key order and formatting.
pub fn fingerprint(body: &serde_json::Value) -> [u8; 32] {
    fn feed(hasher: &mut Sha256, value: &serde_json::Value) {
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
            scalar => hasher.update(scalar.to_string().as_bytes()),
        }
    }
    let mut hasher = Sha256::new();
    feed(&mut hasher, body);
    hasher.finalize().into()
}

type Key = (String, String);

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

/// The remembered answers, by (command name, idempotency key).
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
/// request (which then produces, with the same event id).
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

    /// Claims `key` of `command` for a body with `fingerprint`, waiting at most `wait` for a
    /// concurrent request with the same key to finish.
    pub async fn claim(
        &self,
        command: &str,
        key: &str,
        fingerprint: [u8; 32],
        wait: Duration,
    ) -> Result<Claim<A>, ClaimError> {
        let key: Key = (command.to_string(), key.to_string());
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

    #[test]
    fn event_ids_are_deterministic_per_command_and_key() {
        assert_eq!(
            event_id_for("PlaceOrder", "k1"),
            event_id_for("PlaceOrder", "k1")
        );
        assert_ne!(
            event_id_for("PlaceOrder", "k1"),
            event_id_for("PlaceOrder", "k2")
        );
        assert_ne!(
            event_id_for("PlaceOrder", "k1"),
            event_id_for("ShipOrder", "k1")
        );
        assert_eq!(event_id_for("PlaceOrder", "k1").get_version_num(), 5);
    }

    #[test]
    fn fingerprints_ignore_key_order() {
        assert_eq!(
            fingerprint(&json!({"a": 1, "b": [1, {"x": "y", "z": null}]})),
            fingerprint(&json!({"b": [1, {"z": null, "x": "y"}], "a": 1}))
        );
        assert_ne!(fingerprint(&json!({"a": 1})), fingerprint(&json!({"a": 2})));
        assert_ne!(
            fingerprint(&json!({"a": "1"})),
            fingerprint(&json!({"a": 1}))
        );
    }

    #[tokio::test]
    async fn replay_conflict_and_release() {
        let store: IdempotencyStore<u32> = IdempotencyStore::new(10, Duration::from_secs(60));
        let Claim::Owner(guard) = store.claim("C", "k", [1; 32], WAIT).await.unwrap() else {
            panic!("expected owner");
        };
        guard.complete(7);
        assert!(matches!(
            store.claim("C", "k", [1; 32], WAIT).await.unwrap(),
            Claim::Replay(a) if *a == 7
        ));
        assert!(matches!(
            store.claim("C", "k", [2; 32], WAIT).await.unwrap(),
            Claim::Conflict
        ));
        // A guard dropped without an answer frees the key.
        let Claim::Owner(guard) = store.claim("C", "other", [1; 32], WAIT).await.unwrap() else {
            panic!("expected owner");
        };
        drop(guard);
        assert!(matches!(
            store.claim("C", "other", [1; 32], WAIT).await.unwrap(),
            Claim::Owner(_)
        ));
    }

    #[tokio::test]
    async fn concurrent_duplicate_waits_for_the_first() {
        let store: IdempotencyStore<u32> = IdempotencyStore::new(10, Duration::from_secs(60));
        let Claim::Owner(guard) = store.claim("C", "k", [1; 32], WAIT).await.unwrap() else {
            panic!("expected owner");
        };
        let second = {
            let store = store.clone();
            tokio::spawn(async move { store.claim("C", "k", [1; 32], WAIT).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!second.is_finished());
        guard.complete(9);
        assert!(matches!(second.await.unwrap().unwrap(), Claim::Replay(a) if *a == 9));
    }

    #[tokio::test]
    async fn waiting_is_bounded() {
        let store: IdempotencyStore<u32> = IdempotencyStore::new(10, Duration::from_secs(60));
        let _guard = store.claim("C", "k", [1; 32], WAIT).await.unwrap();
        let result = store
            .claim("C", "k", [1; 32], Duration::from_millis(10))
            .await;
        assert_eq!(result.err(), Some(ClaimError::StillInProgress));
    }

    #[tokio::test]
    async fn least_recently_used_are_evicted_and_ttl_expires() {
        let store: IdempotencyStore<u32> = IdempotencyStore::new(2, Duration::from_secs(60));
        for key in ["a", "b"] {
            if let Claim::Owner(g) = store.claim("C", key, [1; 32], WAIT).await.unwrap() {
                g.complete(1);
            }
        }
        // Touch "a", so "b" is the least recently used.
        assert!(matches!(
            store.claim("C", "a", [1; 32], WAIT).await.unwrap(),
            Claim::Replay(_)
        ));
        if let Claim::Owner(g) = store.claim("C", "c", [1; 32], WAIT).await.unwrap() {
            g.complete(1);
        }
        assert_eq!(store.len(), 2);
        assert!(matches!(
            store.claim("C", "b", [1; 32], WAIT).await.unwrap(),
            Claim::Owner(_)
        ));

        let short: IdempotencyStore<u32> = IdempotencyStore::new(2, Duration::from_millis(1));
        if let Claim::Owner(g) = short.claim("C", "a", [1; 32], WAIT).await.unwrap() {
            g.complete(1);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(matches!(
            short.claim("C", "a", [2; 32], WAIT).await.unwrap(),
            Claim::Owner(_)
        ));
    }
}
