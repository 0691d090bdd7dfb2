//! A cache in front of the API key store, so that a busy client costs one store read a second
//! to authenticate instead of one for every request.
//!
//! Every authenticated request looked its key up in the store, and on SQLite each statement is
//! a round trip to the connection's own thread: at thousands of requests a second that hand-off,
//! not the look-up, is what a request costs. [`CachedKeys`] keeps what the store answered for a
//! key hash (the key, revoked or not, or that no key has that hash) for a short age,
//! `http.key_cache_ms` (1 s by default), and for a bounded number of hashes.
//!
//! A key revoked through this cache (the API's `DELETE /v1/keys/{id}` and every other
//! revocation of this process's service) is dropped from it before the revocation returns, so
//! that the next request with the key is refused. A key revoked behind its back, by another
//! process (the CLI, another server on the same PostgreSQL database), is refused once its
//! entry is older than the age: that is the price of the cache, and an age of 0 turns the cache
//! off for whoever cannot pay it.
//!
//! Hashes that no key has are kept too, apart from the keys and fewer of them, so that a
//! client stuck with a wrong or deleted key costs one read a second as well; a flood of
//! distinct wrong keys cannot be helped by any cache (each is new), and kept apart it cannot
//! push the known keys out either. Such a miss cannot hide a key created later: a new key's
//! secret is drawn at random, so no request presented it before, and a key created through
//! this cache drops the miss anyway.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use clarion_domain::auth::{ApiKey, ApiKeyId, KeyHash, NewApiKey};
use clarion_domain::ports::{ApiKeyStore, Clock, StoreError};
use time::OffsetDateTime;

/// How long and how much [`CachedKeys`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCacheSettings {
    /// How long an answer of the store is used; zero turns the cache off.
    pub max_age: Duration,
    /// The most keys kept. Hashes that no key has are kept up to a tenth of this.
    pub max_entries: usize,
}

impl Default for KeyCacheSettings {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(1),
            max_entries: 10_000,
        }
    }
}

/// An [`ApiKeyStore`] that answers `find_api_key` from memory when the store answered the
/// same hash less than `max_age` ago, and otherwise does what the store it wraps does.
pub struct CachedKeys {
    store: Arc<dyn ApiKeyStore>,
    clock: Arc<dyn Clock>,
    settings: KeyCacheSettings,
    state: Mutex<State>,
}

impl fmt::Debug for CachedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedKeys")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What the store answered, and when.
#[derive(Debug, Clone)]
struct Entry<T> {
    value: T,
    at: OffsetDateTime,
}

#[derive(Debug, Default)]
struct State {
    /// Keys the store found, revoked ones included.
    found: HashMap<KeyHash, Entry<ApiKey>>,
    /// Hashes the store has no key for.
    unknown: HashMap<KeyHash, Entry<()>>,
    /// Changed by every revocation and creation, so that an answer read before one of them
    /// is not kept after it: a look-up that started before a revocation and ends after it
    /// must not put the key back as it was.
    generation: u64,
}

impl CachedKeys {
    #[must_use]
    pub fn new(
        store: Arc<dyn ApiKeyStore>,
        clock: Arc<dyn Clock>,
        settings: KeyCacheSettings,
    ) -> Self {
        Self {
            store,
            clock,
            settings,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change to the state is a single map operation or counter step, so a panic
        // elsewhere cannot leave it half changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fresh<T>(&self, entry: Option<&Entry<T>>, now: OffsetDateTime) -> bool {
        // A clock that went back is treated like an old entry: the store is asked again.
        entry.is_some_and(|entry| now >= entry.at && now - entry.at < self.settings.max_age)
    }

    /// Forgets what might have changed: the entries of `id` and every miss on `hash`.
    fn invalidate(&self, id: Option<ApiKeyId>, hash: Option<&KeyHash>) {
        let mut state = self.state();
        state.generation = state.generation.wrapping_add(1);
        if let Some(id) = id {
            state.found.retain(|_, entry| entry.value.id != id);
        }
        if let Some(hash) = hash {
            state.unknown.remove(hash);
        }
    }
}

/// Inserts into a map of at most `max` entries: past it, entries older than `max_age` go, and
/// if that is not enough, any half of the others (a dropped entry costs only one read).
fn insert_bounded<T>(
    map: &mut HashMap<KeyHash, Entry<T>>,
    key: KeyHash,
    entry: Entry<T>,
    max: usize,
    max_age: Duration,
) {
    let max = max.max(1);
    if map.len() >= max && !map.contains_key(&key) {
        let now = entry.at;
        map.retain(|_, old| now >= old.at && now - old.at < max_age);
        if map.len() >= max {
            let excess: Vec<KeyHash> = map.keys().take(map.len() - max / 2).cloned().collect();
            for old in excess {
                map.remove(&old);
            }
        }
    }
    map.insert(key, entry);
}

#[async_trait]
impl ApiKeyStore for CachedKeys {
    async fn insert_api_key(
        &self,
        key: &NewApiKey,
        now: OffsetDateTime,
    ) -> Result<ApiKey, StoreError> {
        let inserted = self.store.insert_api_key(key, now).await;
        self.invalidate(None, Some(&key.hash));
        inserted
    }

    async fn find_api_key(&self, hash: &KeyHash) -> Result<Option<ApiKey>, StoreError> {
        if self.settings.max_age.is_zero() {
            return self.store.find_api_key(hash).await;
        }
        let now = self.clock.now();
        let generation = {
            let state = self.state();
            if let Some(entry) = state.found.get(hash).filter(|e| self.fresh(Some(*e), now)) {
                return Ok(Some(entry.value.clone()));
            }
            if self.fresh(state.unknown.get(hash), now) {
                return Ok(None);
            }
            state.generation
        };
        // Errors are not kept: the next request asks the store again.
        let found = self.store.find_api_key(hash).await?;
        let mut state = self.state();
        if state.generation == generation {
            let (max, max_age) = (self.settings.max_entries, self.settings.max_age);
            match &found {
                Some(key) => {
                    let entry = Entry {
                        value: key.clone(),
                        at: now,
                    };
                    insert_bounded(&mut state.found, hash.clone(), entry, max, max_age);
                }
                None => {
                    let entry = Entry { value: (), at: now };
                    insert_bounded(&mut state.unknown, hash.clone(), entry, max / 10, max_age);
                }
            }
        }
        Ok(found)
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        self.store.list_api_keys().await
    }

    async fn revoke_api_key(
        &self,
        id: ApiKeyId,
        now: OffsetDateTime,
    ) -> Result<Option<ApiKey>, StoreError> {
        let revoked = self.store.revoke_api_key(id, now).await;
        // Also after an error: the revocation may have been committed all the same.
        self.invalidate(Some(id), None);
        revoked
    }
}

#[cfg(test)]
mod tests;
