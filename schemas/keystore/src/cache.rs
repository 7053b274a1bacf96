//! The per-process cache of data keys, and how it learns of erasures made by other processes.
//!
//! The cache lifetime `ttl` (`FACTLINE_KEYS_CACHE_TTL_MS`) is the bound on how long after an
//! erasure a process may still use the destroyed key. A process keeps that bound by checking
//! the erasures table (the store runs the query, [`KeyCache::check_due`] says when): each
//! successful check evicts the keys destroyed since the last one, so an entry may be used
//! while less than `ttl` has passed since the later of its own read from PostgreSQL and the
//! start of the last successful check. While checks succeed (at most one every `ttl / 2`, and
//! only while keys are looked up), a subject's key is read from PostgreSQL once instead of once
//! per `ttl`; when they fail, entries expire `ttl` after their read, as without checks.
//! A look-up waits for a check only when the last one is a whole `ttl` old
//! ([`KeyCache::check_overdue`]); before that, the store runs the check in a task of its own,
//! so a slow database holds up no look-up of a cached key.
//!
//! A key read just before its erasure and cached just after the check that saw the erasure
//! would outlive it: every read takes a [`Ticket`] first, and a live key is cached only when
//! no check found a new erasure since its ticket was taken.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use aes_gcm::Aes256Gcm;
use uuid::Uuid;

use crate::store::KeyState;

/// How far back each check looks before the previous check's database time: an erasure's
/// `erased_at` is its transaction's start, which may precede a check that does not yet see
/// its commit.
pub(crate) const CHECK_OVERLAP: Duration = Duration::from_secs(300);

/// Taken before a key is read from PostgreSQL; see the module doc.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    read_at: Instant,
    epoch: u64,
}

/// One erasure seen by a check: the (prefixed) subject's bytes and the destroyed key.
pub(crate) type Seen = (Vec<u8>, Option<Uuid>);

/// Where the erasure checks have got to; held (as an async lock) by the one check running.
#[derive(Default)]
pub(crate) struct CheckState {
    /// The database time of the previous check's snapshot.
    pub since: Option<SystemTime>,
    /// Keys seen destroyed within the overlap window, so a check tells new erasures apart.
    seen: HashMap<Uuid, Instant>,
}

struct Entries {
    by_subject: HashMap<String, (Instant, (Uuid, Arc<Aes256Gcm>))>,
    by_id: HashMap<Uuid, (Instant, KeyState)>,
    /// Start of the last successful erasure check.
    checked_at: Option<Instant>,
    /// Raised by every check that finds an erasure not seen before.
    epoch: u64,
}

/// The data keys of one process, by subject (encryption) and by id (decryption).
pub(crate) struct KeyCache {
    entries: Mutex<Entries>,
    check: Arc<tokio::sync::Mutex<CheckState>>,
    ttl: Duration,
    capacity: usize,
}

fn usable(read_at: Instant, checked_at: Option<Instant>, ttl: Duration) -> bool {
    checked_at.map_or(read_at, |c| c.max(read_at)).elapsed() < ttl
}

/// Makes room for one more entry: drops what can no longer be used, everything if that is
/// not enough.
fn make_room<K, V>(
    map: &mut HashMap<K, (Instant, V)>,
    capacity: usize,
    checked_at: Option<Instant>,
    ttl: Duration,
) {
    if map.len() >= capacity {
        map.retain(|_, (read_at, _)| usable(*read_at, checked_at, ttl));
        if map.len() >= capacity {
            map.clear();
        }
    }
}

impl KeyCache {
    pub fn new(ttl: Duration, capacity: usize) -> KeyCache {
        KeyCache {
            entries: Mutex::new(Entries {
                by_subject: HashMap::new(),
                by_id: HashMap::new(),
                checked_at: None,
                epoch: 0,
            }),
            check: Arc::new(tokio::sync::Mutex::new(CheckState::default())),
            ttl,
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached key of `subject`, if it may still be used.
    pub fn by_subject(&self, subject: &str) -> Option<(Uuid, Arc<Aes256Gcm>)> {
        let e = self.lock();
        e.by_subject
            .get(subject)
            .filter(|(read_at, _)| usable(*read_at, e.checked_at, self.ttl))
            .map(|(_, v)| v.clone())
    }

    /// The cached state of key `key_id`, if it may still be used.
    pub fn by_id(&self, key_id: &Uuid) -> Option<KeyState> {
        let e = self.lock();
        e.by_id
            .get(key_id)
            .filter(|(read_at, _)| usable(*read_at, e.checked_at, self.ttl))
            .map(|(_, v)| v.clone())
    }

    /// Taken before reading a key from PostgreSQL.
    pub fn ticket(&self) -> Ticket {
        Ticket {
            read_at: Instant::now(),
            epoch: self.lock().epoch,
        }
    }

    /// Caches a key read under `ticket` (by id, and by subject when given), unless a check
    /// found a new erasure since the ticket was taken. An erased key is cached whatever the
    /// ticket: an erasure is final.
    pub fn put(&self, ticket: Ticket, subject: Option<&str>, key_id: Uuid, state: KeyState) {
        let mut e = self.lock();
        let live = matches!(state, KeyState::Live(_));
        if live && e.epoch != ticket.epoch {
            return;
        }
        let (checked_at, ttl, capacity) = (e.checked_at, self.ttl, self.capacity);
        if let (Some(subject), KeyState::Live(cipher)) = (subject, &state) {
            make_room(&mut e.by_subject, capacity, checked_at, ttl);
            e.by_subject.insert(
                subject.to_owned(),
                (ticket.read_at, (key_id, cipher.clone())),
            );
        }
        make_room(&mut e.by_id, capacity, checked_at, ttl);
        e.by_id.insert(key_id, (ticket.read_at, state));
    }

    /// Forgets `subject`'s key and marks `key_id` erased: the erasing process knows at once.
    pub fn erased_here(&self, subject: &str, key_id: Option<Uuid>) {
        let mut e = self.lock();
        e.by_subject.remove(subject);
        if let Some(key_id) = key_id {
            e.by_id.insert(key_id, (Instant::now(), KeyState::Erased));
        }
    }

    /// Whether an erasure check should run before the next look-up.
    pub fn check_due(&self) -> bool {
        self.lock()
            .checked_at
            .is_none_or(|c| c.elapsed() >= self.ttl / 2)
    }

    /// Whether the last successful check is so old that the entries it kept usable are not
    /// any more: a look-up then waits for the next check rather than read its key again.
    pub fn check_overdue(&self) -> bool {
        self.lock()
            .checked_at
            .is_none_or(|c| c.elapsed() >= self.ttl)
    }

    /// The right to run the one check, waiting for a check already running; `None` once
    /// another task has just run it.
    pub async fn start_check(&self) -> Option<tokio::sync::OwnedMutexGuard<CheckState>> {
        let guard = self.check.clone().lock_owned().await;
        self.check_due().then_some(guard)
    }

    /// The right to run the one check, if no check is running and one is due.
    pub fn try_start_check(&self) -> Option<tokio::sync::OwnedMutexGuard<CheckState>> {
        let guard = self.check.clone().try_lock_owned().ok()?;
        self.check_due().then_some(guard)
    }

    /// Applies a successful check that started at `started` and found `erasures` (those
    /// erased since `state.since` less the overlap), the database time `now` of its snapshot.
    pub fn checked(
        &self,
        state: &mut CheckState,
        started: Instant,
        now: SystemTime,
        erasures: &[Seen],
    ) {
        state.since = Some(now);
        let mut new = false;
        for (_, key_id) in erasures {
            if let Some(key_id) = key_id {
                new |= state.seen.insert(*key_id, started).is_none();
            }
        }
        state.seen.retain(|_, at| at.elapsed() < CHECK_OVERLAP * 2);
        let mut e = self.lock();
        for (subject, key_id) in erasures {
            if let Ok(subject) = std::str::from_utf8(subject) {
                e.by_subject.remove(subject);
            }
            if let Some(key_id) = key_id {
                if matches!(e.by_id.get(key_id), Some((_, KeyState::Live(_)))) {
                    e.by_id.remove(key_id);
                }
            }
        }
        if new {
            e.epoch += 1;
        }
        e.checked_at = Some(started);
    }
}

#[cfg(test)]
mod tests {
    use aes_gcm::aead::KeyInit;

    use super::*;

    fn cipher() -> Arc<Aes256Gcm> {
        Arc::new(Aes256Gcm::new(&Aes256Gcm::generate_key(
            aes_gcm::aead::OsRng,
        )))
    }

    fn live(cache: &KeyCache, id: Uuid) -> bool {
        matches!(cache.by_id(&id), Some(KeyState::Live(_)))
    }

    #[test]
    fn an_entry_expires_after_the_ttl_without_checks() {
        let cache = KeyCache::new(Duration::ZERO, 10);
        let id = Uuid::new_v4();
        cache.put(cache.ticket(), Some("c-1"), id, KeyState::Live(cipher()));
        assert!(cache.by_id(&id).is_none());
        assert!(cache.by_subject("c-1").is_none());
        assert!(cache.check_due());
    }

    #[test]
    fn a_check_keeps_entries_and_evicts_the_erased_ones() {
        let cache = KeyCache::new(Duration::from_secs(3600), 10);
        let (kept, erased) = (Uuid::new_v4(), Uuid::new_v4());
        cache.put(cache.ticket(), Some("c-1"), kept, KeyState::Live(cipher()));
        cache.put(
            cache.ticket(),
            Some("c-2"),
            erased,
            KeyState::Live(cipher()),
        );
        let mut state = CheckState::default();
        cache.checked(
            &mut state,
            Instant::now(),
            SystemTime::now(),
            &[(b"c-2".to_vec(), Some(erased))],
        );
        assert!(live(&cache, kept));
        assert!(cache.by_subject("c-1").is_some());
        assert!(cache.by_id(&erased).is_none());
        assert!(cache.by_subject("c-2").is_none());
        assert!(!cache.check_due());
    }

    #[test]
    fn one_check_runs_at_a_time_and_is_overdue_only_a_whole_lifetime_after_the_last() {
        let cache = KeyCache::new(Duration::from_secs(3600), 10);
        assert!(cache.check_overdue(), "never checked");
        let mut running = cache.try_start_check().expect("a first check is due");
        assert!(cache.try_start_check().is_none(), "one check at a time");
        cache.checked(&mut running, Instant::now(), SystemTime::now(), &[]);
        drop(running);
        assert!(!cache.check_due());
        assert!(!cache.check_overdue());
        assert!(cache.try_start_check().is_none(), "nothing due");
    }

    #[test]
    fn a_key_read_before_a_new_erasure_is_not_cached_after_it() {
        let cache = KeyCache::new(Duration::from_secs(3600), 10);
        let id = Uuid::new_v4();
        let ticket = cache.ticket();
        let mut state = CheckState::default();
        cache.checked(
            &mut state,
            Instant::now(),
            SystemTime::now(),
            &[(b"c-1".to_vec(), Some(id))],
        );
        cache.put(ticket, Some("c-1"), id, KeyState::Live(cipher()));
        assert!(cache.by_id(&id).is_none());
        // the same erasure seen again (overlap window) is not new: later reads are cached
        let ticket = cache.ticket();
        cache.checked(
            &mut state,
            Instant::now(),
            SystemTime::now(),
            &[(b"c-1".to_vec(), Some(id))],
        );
        let other = Uuid::new_v4();
        cache.put(ticket, Some("c-3"), other, KeyState::Live(cipher()));
        assert!(live(&cache, other));
        // an erased state is cached whatever the ticket
        cache.put(ticket, None, id, KeyState::Erased);
        assert!(matches!(cache.by_id(&id), Some(KeyState::Erased)));
    }

    #[test]
    fn the_erasing_process_forgets_at_once() {
        let cache = KeyCache::new(Duration::from_secs(3600), 10);
        let id = Uuid::new_v4();
        cache.put(cache.ticket(), Some("c-1"), id, KeyState::Live(cipher()));
        cache.erased_here("c-1", Some(id));
        assert!(cache.by_subject("c-1").is_none());
        assert!(matches!(cache.by_id(&id), Some(KeyState::Erased)));
    }

    #[test]
    fn a_full_cache_makes_room() {
        let cache = KeyCache::new(Duration::from_secs(3600), 2);
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        for id in &ids {
            cache.put(cache.ticket(), None, *id, KeyState::Live(cipher()));
        }
        assert!(live(&cache, ids[2]));
        assert!(cache.lock().by_id.len() <= 2);
    }
}
