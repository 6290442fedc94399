//! The shared key-value store the budget lives in, as a narrow trait over proxy-wasm
//! shared data (`get_shared_data` / `set_shared_data` with a compare-and-swap token).
//!
//! Nothing here imports proxy-wasm: the wasm adapter implements [`SharedStore`] with
//! `hostcalls::{get_shared_data, set_shared_data}`, mapping `Status::NotFound` to
//! `Ok(None)`, `Status::CasMismatch` to [`StoreError::CasMismatch`] and any other
//! status to [`StoreError::Unavailable`].
//!
//! The two hosts disagree on what `cas` means, and callers must be correct under both:
//!
//! | host | key exists | key absent |
//! |---|---|---|
//! | Kong (ngx_wasm_module) | `cas` must equal the stored cas (`0` fails) | only `cas = 0` writes |
//! | Envoy (proxy-wasm-cpp-host) | `cas = 0` writes unconditionally, else must match | any `cas` writes |
//!
//! The one protocol that is right on both: read, then write with the cas the read
//! returned, or with `0` when the read found nothing. On Envoy two workers that both
//! find the key absent can both "create" it and the first write is lost; that race
//! exists once per key lifetime and callers must treat it as bounded slack.
//!
//! On Kong a get or set whose key resolves to no `shm_kv` zone traps instead of
//! returning an error, so [`StoreError::Unavailable`] never comes from that case: the
//! adapter must know beforehand (configuration) and answer `Unavailable` itself
//! without calling the host.

use std::fmt;

/// Why a shared-data operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// Another writer changed the key since it was read; read again and retry.
    CasMismatch {
        /// The key whose write was refused.
        key: String,
    },
    /// The store cannot be used (no shared-data zone, host error).
    Unavailable {
        /// The key the operation was for.
        key: String,
        /// What the host said, for the log.
        reason: String,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::CasMismatch { key } => write!(
                f,
                "shared data key \"{key}\": compare-and-swap mismatch (written by another worker since it was read)"
            ),
            StoreError::Unavailable { key, reason } => {
                write!(f, "shared data key \"{key}\" unavailable: {reason}")
            }
        }
    }
}

impl std::error::Error for StoreError {}

/// The prefix of a key kept in `zone`: `<zone>/<prefix>`, or `prefix` alone without a zone
/// (on Kong the part before the first `/` names an `shm_kv` zone). `Err(zone)` when the
/// zone cannot be one: empty, or holding `/`.
pub fn zoned_prefix(zone: Option<&str>, prefix: &str) -> Result<String, String> {
    match zone {
        None => Ok(prefix.to_string()),
        Some(zone) if zone.is_empty() || zone.contains('/') => Err(zone.to_string()),
        Some(zone) => Ok(format!("{zone}/{prefix}")),
    }
}

/// Proxy-wide key-value data with compare-and-swap, shared by every worker of a node.
pub trait SharedStore {
    /// The value and its cas token, or `None` when the key does not exist.
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError>;

    /// Writes `value` if `cas` still matches (see the module table for `cas = 0`).
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError>;
}

/// An in-memory [`SharedStore`] that follows either host's CAS rule, for native tests.
#[cfg(test)]
pub mod testing {
    use super::{SharedStore, StoreError};
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    /// Which host's compare-and-swap semantics the fake applies.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum CasRule {
        /// ngx_wasm_module: the cas must equal the stored one, `0` when the key is absent.
        Kong,
        /// proxy-wasm-cpp-host: `cas = 0` (or an absent key) writes unconditionally.
        Envoy,
    }

    /// Shared data kept in a map, with switches to simulate contention and outages.
    #[derive(Debug)]
    pub struct MemoryStore {
        rule: CasRule,
        entries: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        /// Envoy hands out cas values from one node-wide counter.
        next_envoy_cas: Cell<u32>,
        forced_mismatches: Cell<u32>,
        unavailable: Cell<bool>,
        gets: Cell<u64>,
        sets: Cell<u64>,
    }

    impl MemoryStore {
        /// An empty store applying `rule`.
        pub fn new(rule: CasRule) -> Self {
            MemoryStore {
                rule,
                entries: RefCell::new(HashMap::new()),
                next_envoy_cas: Cell::new(1),
                forced_mismatches: Cell::new(0),
                unavailable: Cell::new(false),
                gets: Cell::new(0),
                sets: Cell::new(0),
            }
        }

        /// The next `k` sets fail with `CasMismatch`, as if another worker won each race.
        pub fn fail_next_sets(&self, k: u32) {
            self.forced_mismatches.set(k);
        }

        /// Makes every later call fail with `Unavailable` (or work again).
        pub fn set_unavailable(&self, unavailable: bool) {
            self.unavailable.set(unavailable);
        }

        /// Stores raw bytes as if some other writer had put them there.
        pub fn put_raw(&self, key: &str, value: &[u8]) {
            let cas = self.bump_cas(key);
            self.entries
                .borrow_mut()
                .insert(key.to_string(), (value.to_vec(), cas));
        }

        /// The stored bytes and cas, without counting a call.
        pub fn peek(&self, key: &str) -> Option<(Vec<u8>, u32)> {
            self.entries.borrow().get(key).cloned()
        }

        /// How many `get` calls were made.
        pub fn gets(&self) -> u64 {
            self.gets.get()
        }

        /// How many `set` calls were made (successful or not).
        pub fn sets(&self) -> u64 {
            self.sets.get()
        }

        /// The cas the next successful write of `key` gets.
        fn bump_cas(&self, key: &str) -> u32 {
            match self.rule {
                // ngx_wasm_shm_kv: a node starts at 0 and is incremented on every write.
                CasRule::Kong => self
                    .entries
                    .borrow()
                    .get(key)
                    .map_or(1, |(_, cas)| cas.wrapping_add(1).max(1)),
                // SharedData::nextCas: one counter for all keys, never 0.
                CasRule::Envoy => {
                    let cas = self.next_envoy_cas.get();
                    self.next_envoy_cas.set(cas.wrapping_add(1).max(1));
                    cas
                }
            }
        }

        fn unavailable_error(key: &str) -> StoreError {
            StoreError::Unavailable {
                key: key.to_string(),
                reason: "no shared data zone (test)".to_string(),
            }
        }
    }

    impl SharedStore for MemoryStore {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            self.gets.set(self.gets.get() + 1);
            if self.unavailable.get() {
                return Err(Self::unavailable_error(key));
            }
            Ok(self.entries.borrow().get(key).cloned())
        }

        fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
            self.sets.set(self.sets.get() + 1);
            if self.unavailable.get() {
                return Err(Self::unavailable_error(key));
            }
            let forced = self.forced_mismatches.get();
            if forced > 0 {
                self.forced_mismatches.set(forced - 1);
                return Err(StoreError::CasMismatch {
                    key: key.to_string(),
                });
            }
            let stored = self.entries.borrow().get(key).map(|(_, cas)| *cas);
            let accepted = match (self.rule, stored) {
                (CasRule::Kong, Some(current)) => cas == current,
                (CasRule::Kong, None) => cas == 0,
                (CasRule::Envoy, Some(current)) => cas == 0 || cas == current,
                (CasRule::Envoy, None) => true,
            };
            if !accepted {
                return Err(StoreError::CasMismatch {
                    key: key.to_string(),
                });
            }
            let next = self.bump_cas(key);
            self.entries
                .borrow_mut()
                .insert(key.to_string(), (value.to_vec(), next));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{CasRule, MemoryStore};
    use super::*;

    fn cas_of(store: &MemoryStore, key: &str) -> u32 {
        store.get(key).unwrap().unwrap().1
    }

    #[test]
    fn absent_key_reads_as_none_on_both_hosts() {
        for rule in [CasRule::Kong, CasRule::Envoy] {
            let store = MemoryStore::new(rule);
            assert_eq!(store.get("k").unwrap(), None, "{rule:?}");
        }
    }

    #[test]
    fn read_then_write_with_returned_cas_works_on_both_hosts() {
        for rule in [CasRule::Kong, CasRule::Envoy] {
            let store = MemoryStore::new(rule);
            store.set("k", b"one", 0).unwrap();
            let cas = cas_of(&store, "k");
            assert_ne!(cas, 0, "{rule:?}: an existing key never has cas 0");
            store.set("k", b"two", cas).unwrap();
            assert_eq!(store.get("k").unwrap().unwrap().0, b"two");
            assert_eq!(
                store.set("k", b"three", cas),
                Err(StoreError::CasMismatch { key: "k".into() }),
                "{rule:?}: a stale cas must be refused"
            );
        }
    }

    #[test]
    fn kong_zero_cas_only_creates() {
        let store = MemoryStore::new(CasRule::Kong);
        store.set("k", b"one", 0).unwrap();
        assert!(matches!(
            store.set("k", b"two", 0),
            Err(StoreError::CasMismatch { .. })
        ));
        assert_eq!(store.get("k").unwrap().unwrap().0, b"one");
        // A non-zero cas on an absent key is a mismatch on Kong.
        assert!(store.set("other", b"x", 7).is_err());
    }

    #[test]
    fn envoy_zero_cas_overwrites_and_absent_key_always_writes() {
        let store = MemoryStore::new(CasRule::Envoy);
        store.set("k", b"one", 0).unwrap();
        store.set("k", b"two", 0).unwrap();
        assert_eq!(store.get("k").unwrap().unwrap().0, b"two");
        store.set("other", b"x", 7).unwrap();
        assert_eq!(store.get("other").unwrap().unwrap().0, b"x");
    }

    #[test]
    fn forced_mismatches_and_outage_are_reported_with_the_key() {
        let store = MemoryStore::new(CasRule::Kong);
        store.fail_next_sets(1);
        let err = store.set("kong_retry/budget/r1", b"v", 0).unwrap_err();
        assert!(err.to_string().contains("kong_retry/budget/r1"), "{err}");
        store.set("kong_retry/budget/r1", b"v", 0).unwrap();

        store.set_unavailable(true);
        let err = store.get("kong_retry/budget/r1").unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { .. }));
        assert!(err.to_string().contains("kong_retry/budget/r1"), "{err}");
        assert_eq!((store.gets(), store.sets()), (1, 2));
    }
}
