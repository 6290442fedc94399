//! The `shared` store: idempotency records in the node's shared data (every worker of one
//! Kong or Envoy node), over [`SharedStore`], bounded by the [`Index`].
//!
//! Keys: `<zone>/kong_retry/idem/r/<record id>` for records and
//! `<zone>/kong_retry/idem/index` for the index (same zone rules as the budget).
//!
//! **Claim** ([`SharedRecords::begin`]): read the record and decide
//! ([`decide_request`]); to proceed, write the index (the new in-flight entry, evicting
//! the oldest finished records if the bounds need it) with the cas read, then the record.
//! The index write is the atomic step: of two workers claiming one key only one index
//! write succeeds, and the loser re-reads and finds the winner's entry (409) or record.
//! That is true under Kong's rule (`cas = 0` creates only) and Envoy's (`cas = 0` writes
//! unconditionally), because the index is written with the cas its read returned and
//! only its very first creation uses 0. That first creation on Envoy is the one residual
//! race: two workers creating the index at the same instant, the second overwriting the
//! first's fresh entry. The first's record is written right after, so a duplicate is let
//! through only if it also arrives between those two writes of the first worker.
//!
//! **Settle** ([`SharedRecords::complete`], [`SharedRecords::release`]): only the lock's
//! owner settles it (the owner token in the in-flight record), so a request whose lock
//! expired and was taken over cannot overwrite its successor.
//!
//! A record that cannot be read (garbage, a blank left by eviction or release) counts as
//! absent. Records are blanked (an empty value) rather than deleted: the SDK's delete is
//! a host-specific null write, and an empty value reads the same on both hosts.
//!
//! Kong's `shm_kv` zone may itself evict values when full (LRU): a lost record reads as
//! absent, and its index entry, while it is a live lock, still answers 409.

use super::decision::{decide_request, retry_after_s, RequestDecision};
use super::fingerprint::{Fingerprint, RecordId};
use super::index::{Entry, EntryState, Index};
use super::record::{Record, StoredResponse};
use crate::config::SharedBounds;
use crate::state::store::{zoned_prefix, SharedStore, StoreError};
use std::fmt;

/// The key prefix of the shared store (after the optional zone).
pub const KEY_PREFIX: &str = "kong_retry/idem/";
/// How many read/compare-and-swap rounds one operation may take.
pub const MAX_CAS_ATTEMPTS: u32 = 8;

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    /// `Proceed`: the key is ours now (an in-flight record with our owner token).
    pub decision: RequestDecision,
    /// Finished records evicted to make room (for the evictions metric).
    pub evicted: u32,
}

/// How a settle ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Stored (or released) as asked.
    Done { evicted: u32 },
    /// The record is no longer our lock (it expired and another request took the key):
    /// nothing was written.
    NotOurs,
    /// The response does not fit in the bounds (or the format): the key stays locked
    /// until its deadline.
    NoRoom,
}

/// Why the shared store could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedError {
    /// Shared data failed (no zone, host error).
    Store(StoreError),
    /// Other workers kept winning the compare-and-swap.
    Contended,
    /// Every record in the bounds is a live lock: no room for another.
    Full,
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SharedError::Store(e) => write!(f, "{e}"),
            SharedError::Contended => write!(
                f,
                "idempotency index: compare-and-swap lost {MAX_CAS_ATTEMPTS} times in a row"
            ),
            SharedError::Full => write!(
                f,
                "idempotency store full: every record within shared.max_records / shared.max_bytes is an in-flight lock"
            ),
        }
    }
}

impl std::error::Error for SharedError {}

impl From<StoreError> for SharedError {
    fn from(e: StoreError) -> Self {
        SharedError::Store(e)
    }
}

/// The records of one filter configuration in shared data.
#[derive(Debug, Clone)]
pub struct SharedRecords {
    /// `<zone>/kong_retry/idem/`.
    prefix: String,
    bounds: SharedBounds,
}

/// A record read from the store: what it decodes to, and the cas to write it back with.
struct Read {
    record: Option<Record>,
    cas: u32,
}

impl SharedRecords {
    /// Records kept in `zone` (`None`: unprefixed keys) within `bounds`. `Err(zone)` when
    /// the zone cannot be one.
    pub fn new(zone: Option<&str>, bounds: SharedBounds) -> Result<Self, String> {
        Ok(SharedRecords {
            prefix: zoned_prefix(zone, KEY_PREFIX)?,
            bounds,
        })
    }

    /// The shared-data key of a record.
    pub fn record_key(&self, id: &RecordId) -> String {
        format!("{}r/{}", self.prefix, id.hex())
    }

    /// The shared-data key of the index.
    pub fn index_key(&self) -> String {
        format!("{}index", self.prefix)
    }

    /// The claim: decides the request against the key's record and, to proceed, writes an
    /// in-flight record held by `owner` until `now_ms + lock_timeout_ms`.
    pub fn begin<S: SharedStore + ?Sized>(
        &self,
        store: &S,
        id: &RecordId,
        fingerprint: &Fingerprint,
        owner: u64,
        now_ms: u64,
        lock_timeout_ms: u64,
    ) -> Result<Begin, SharedError> {
        let key = self.record_key(id);
        let locked_until_ms = now_ms.saturating_add(lock_timeout_ms);
        let value = Record::InFlight {
            fingerprint: *fingerprint,
            owner,
            locked_until_ms,
        }
        .encode()
        .map_err(|_| SharedError::Full)?;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let read = self.read(store, &key)?;
            let decision = decide_request(read.record, fingerprint, now_ms);
            if decision != RequestDecision::Proceed {
                return Ok(Begin {
                    decision,
                    evicted: 0,
                });
            }
            let (mut index, index_cas) = self.read_index(store)?;
            if let Some(e) = index.get(id).filter(|e| e.is_live_lock(now_ms)) {
                // Another worker won the index and is about to write the record (or its
                // record was lost): the key is held.
                return Ok(Begin {
                    decision: RequestDecision::Conflict {
                        retry_after_s: retry_after_s(e.until_ms, now_ms),
                    },
                    evicted: 0,
                });
            }
            let entry = Entry {
                id: *id,
                bytes: entry_bytes(&key, &value),
                state: EntryState::InFlight,
                until_ms: locked_until_ms,
            };
            let evicted = index
                .admit(entry, &self.bounds, now_ms)
                .map_err(|_| SharedError::Full)?;
            match store.set(&self.index_key(), &index.encode(), index_cas) {
                Ok(()) => {}
                Err(StoreError::CasMismatch { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
            match store.set(&key, &value, read.cas) {
                Ok(()) => {}
                // The previous holder settled its expired lock in between: re-read, which
                // now finds its result.
                Err(StoreError::CasMismatch { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
            let evicted = self.blank_all(store, &evicted, now_ms);
            return Ok(Begin {
                decision: RequestDecision::Proceed,
                evicted,
            });
        }
        Err(SharedError::Contended)
    }

    /// Stores the result of the request holding the lock as `owner`, replayed until
    /// `expires_at_ms`.
    pub fn complete<S: SharedStore + ?Sized>(
        &self,
        store: &S,
        id: &RecordId,
        owner: u64,
        response: StoredResponse,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<Settled, SharedError> {
        let key = self.record_key(id);
        let read = self.read(store, &key)?;
        let Some(fingerprint) = owned_lock(&read.record, owner) else {
            return Ok(Settled::NotOurs);
        };
        let value = match (Record::Completed {
            fingerprint,
            expires_at_ms,
            response,
        })
        .encode()
        {
            Ok(v) => v,
            // More headers or longer values than the format holds.
            Err(_) => return Ok(Settled::NoRoom),
        };
        let entry = Entry {
            id: *id,
            bytes: entry_bytes(&key, &value),
            state: EntryState::Completed,
            until_ms: expires_at_ms,
        };
        if u64::from(entry.bytes) > self.bounds.max_bytes {
            return Ok(Settled::NoRoom);
        }
        let evicted = match self.update_index(store, |index| {
            index.admit(entry, &self.bounds, now_ms).map(Some)
        })? {
            Some(evicted) => evicted,
            None => return Ok(Settled::NoRoom),
        };
        match store.set(&key, &value, read.cas) {
            Ok(()) => {}
            Err(StoreError::CasMismatch { .. }) => return Ok(Settled::NotOurs),
            Err(e) => return Err(e.into()),
        }
        Ok(Settled::Done {
            evicted: self.blank_all(store, &evicted, now_ms),
        })
    }

    /// Frees the key held by `owner`, so that the next request with it runs.
    pub fn release<S: SharedStore + ?Sized>(
        &self,
        store: &S,
        id: &RecordId,
        owner: u64,
    ) -> Result<Settled, SharedError> {
        let key = self.record_key(id);
        let read = self.read(store, &key)?;
        if owned_lock(&read.record, owner).is_none() {
            return Ok(Settled::NotOurs);
        }
        // Index first: while the record still holds the lock, a claimer gets 409, never
        // a free key that the index still counts as locked.
        self.update_index(store, |index| {
            index.remove(id);
            Ok::<_, ()>(Some(Vec::new()))
        })?;
        match store.set(&key, b"", read.cas) {
            Ok(()) => Ok(Settled::Done { evicted: 0 }),
            Err(StoreError::CasMismatch { .. }) => Ok(Settled::NotOurs),
            Err(e) => Err(e.into()),
        }
    }

    fn read<S: SharedStore + ?Sized>(&self, store: &S, key: &str) -> Result<Read, StoreError> {
        Ok(match store.get(key)? {
            None => Read {
                record: None,
                cas: 0,
            },
            Some((bytes, cas)) => Read {
                // A blank or garbage value is no record; it is overwritten with its cas.
                record: Record::decode(&bytes).ok(),
                cas,
            },
        })
    }

    fn read_index<S: SharedStore + ?Sized>(&self, store: &S) -> Result<(Index, u32), StoreError> {
        Ok(match store.get(&self.index_key())? {
            None => (Index::default(), 0),
            // A garbage index is replaced: its records still answer for themselves.
            Some((bytes, cas)) => (Index::decode(&bytes).unwrap_or_default(), cas),
        })
    }

    /// Read-change-write of the index; `change` returns `Ok(None)` or `Err` to stop without
    /// writing (`Err` maps to `Ok(None)`: no room).
    fn update_index<S, F, E>(
        &self,
        store: &S,
        mut change: F,
    ) -> Result<Option<Vec<RecordId>>, SharedError>
    where
        S: SharedStore + ?Sized,
        F: FnMut(&mut Index) -> Result<Option<Vec<RecordId>>, E>,
    {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (mut index, cas) = self.read_index(store)?;
            let evicted = match change(&mut index) {
                Ok(Some(evicted)) => evicted,
                Ok(None) | Err(_) => return Ok(None),
            };
            match store.set(&self.index_key(), &index.encode(), cas) {
                Ok(()) => return Ok(Some(evicted)),
                Err(StoreError::CasMismatch { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(SharedError::Contended)
    }

    /// Blanks the records of evicted entries, unless one became a live lock meanwhile (a
    /// new claim of the same key). Best effort: a lost race or an outage leaves the value
    /// to the zone's own eviction, and the index no longer counts it either way. Returns
    /// how many entries were evicted.
    fn blank_all<S: SharedStore + ?Sized>(&self, store: &S, ids: &[RecordId], now_ms: u64) -> u32 {
        for id in ids {
            let key = self.record_key(id);
            let Ok(read) = self.read(store, &key) else {
                continue;
            };
            let live_lock = matches!(
                read.record,
                Some(Record::InFlight { locked_until_ms, .. }) if locked_until_ms > now_ms
            );
            if read.cas != 0 && !live_lock {
                let _ = store.set(&key, b"", read.cas);
            }
        }
        u32::try_from(ids.len()).unwrap_or(u32::MAX)
    }
}

/// The fingerprint of `record` when it is an in-flight lock held by `owner`.
fn owned_lock(record: &Option<Record>, owner: u64) -> Option<Fingerprint> {
    match record {
        Some(Record::InFlight {
            fingerprint,
            owner: holder,
            ..
        }) if *holder == owner => Some(*fingerprint),
        _ => None,
    }
}

/// Bytes a record takes in the store, as the index counts them.
fn entry_bytes(key: &str, value: &[u8]) -> u32 {
    u32::try_from(key.len() + value.len()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::store::testing::{CasRule, MemoryStore};

    const LOCK: u64 = 30_000;

    fn records(max_records: u32, max_bytes: u64) -> SharedRecords {
        SharedRecords::new(
            Some("kong_retry"),
            SharedBounds {
                max_records,
                max_bytes,
            },
        )
        .unwrap()
    }

    fn fp(body: &[u8]) -> Fingerprint {
        Fingerprint::of("POST", "/pay", body)
    }

    fn id(key: &str) -> RecordId {
        RecordId::new("route-1", b"", key.as_bytes())
    }

    fn response(body: &[u8]) -> StoredResponse {
        StoredResponse {
            status: 201,
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: body.to_vec(),
        }
    }

    fn both() -> [MemoryStore; 2] {
        [
            MemoryStore::new(CasRule::Kong),
            MemoryStore::new(CasRule::Envoy),
        ]
    }

    #[test]
    fn keys_live_under_the_zone() {
        let r = records(10, 1 << 20);
        assert!(r
            .record_key(&id("k"))
            .starts_with("kong_retry/kong_retry/idem/r/"));
        assert_eq!(r.index_key(), "kong_retry/kong_retry/idem/index");
        assert!(SharedRecords::new(Some("a/b"), SharedBounds::default()).is_err());
    }

    #[test]
    fn first_claims_then_duplicate_409_then_replay_after_complete() {
        for store in both() {
            let r = records(10, 1 << 20);
            let b = r
                .begin(&store, &id("k"), &fp(b"a"), 7, 1_000, LOCK)
                .unwrap();
            assert_eq!(b.decision, RequestDecision::Proceed);
            let dup = r
                .begin(&store, &id("k"), &fp(b"a"), 8, 2_000, LOCK)
                .unwrap();
            assert_eq!(
                dup.decision,
                RequestDecision::Conflict { retry_after_s: 29 }
            );
            let other = r
                .begin(&store, &id("k"), &fp(b"b"), 8, 2_000, LOCK)
                .unwrap();
            assert_eq!(other.decision, RequestDecision::Mismatch);
            assert_eq!(
                r.complete(&store, &id("k"), 7, response(b"{}"), 90_000, 3_000),
                Ok(Settled::Done { evicted: 0 })
            );
            let replay = r
                .begin(&store, &id("k"), &fp(b"a"), 9, 4_000, LOCK)
                .unwrap();
            assert_eq!(replay.decision, RequestDecision::Replay(response(b"{}")));
            // After the ttl the key is free again.
            let again = r
                .begin(&store, &id("k"), &fp(b"a"), 9, 90_000, LOCK)
                .unwrap();
            assert_eq!(again.decision, RequestDecision::Proceed);
        }
    }

    #[test]
    fn release_frees_the_key_only_for_its_owner() {
        for store in both() {
            let r = records(10, 1 << 20);
            r.begin(&store, &id("k"), &fp(b"a"), 7, 0, LOCK).unwrap();
            assert_eq!(r.release(&store, &id("k"), 8), Ok(Settled::NotOurs));
            assert_eq!(
                r.release(&store, &id("k"), 7),
                Ok(Settled::Done { evicted: 0 })
            );
            let next = r.begin(&store, &id("k"), &fp(b"a"), 8, 1, LOCK).unwrap();
            assert_eq!(next.decision, RequestDecision::Proceed);
        }
    }

    #[test]
    fn an_expired_lock_is_taken_over_and_its_late_owner_cannot_settle() {
        for store in both() {
            let r = records(10, 1 << 20);
            r.begin(&store, &id("k"), &fp(b"a"), 7, 0, LOCK).unwrap();
            // Unknown outcome: nothing is written; duplicates get 409 until the deadline.
            let during = r
                .begin(&store, &id("k"), &fp(b"a"), 8, LOCK - 1, LOCK)
                .unwrap();
            assert_eq!(
                during.decision,
                RequestDecision::Conflict { retry_after_s: 1 }
            );
            let after = r.begin(&store, &id("k"), &fp(b"a"), 8, LOCK, LOCK).unwrap();
            assert_eq!(after.decision, RequestDecision::Proceed);
            assert_eq!(
                r.complete(&store, &id("k"), 7, response(b"late"), 99_999, LOCK + 1),
                Ok(Settled::NotOurs)
            );
            assert_eq!(r.release(&store, &id("k"), 7), Ok(Settled::NotOurs));
        }
    }

    #[test]
    fn a_worker_that_loses_the_index_race_gets_409() {
        for store in both() {
            let r = records(10, 1 << 20);
            // Another worker wrote the index entry but not yet its record.
            let mut index = Index::default();
            index
                .admit(
                    Entry {
                        id: id("k"),
                        bytes: 100,
                        state: EntryState::InFlight,
                        until_ms: 5_000,
                    },
                    &SharedBounds::default(),
                    0,
                )
                .unwrap();
            store.put_raw(&r.index_key(), &index.encode());
            let b = r
                .begin(&store, &id("k"), &fp(b"a"), 7, 1_000, LOCK)
                .unwrap();
            assert_eq!(b.decision, RequestDecision::Conflict { retry_after_s: 4 });
        }
    }

    #[test]
    fn lost_cas_races_are_retried_and_bounded() {
        for store in both() {
            let r = records(10, 1 << 20);
            store.fail_next_sets(3);
            let b = r.begin(&store, &id("k"), &fp(b"a"), 7, 0, LOCK).unwrap();
            assert_eq!(b.decision, RequestDecision::Proceed);
            store.fail_next_sets(u32::MAX);
            assert_eq!(
                r.begin(&store, &id("j"), &fp(b"a"), 7, 0, LOCK),
                Err(SharedError::Contended)
            );
        }
    }

    #[test]
    fn store_outage_is_an_error_for_on_store_unavailable() {
        let store = MemoryStore::new(CasRule::Kong);
        store.set_unavailable(true);
        let r = records(10, 1 << 20);
        assert!(matches!(
            r.begin(&store, &id("k"), &fp(b"a"), 7, 0, LOCK),
            Err(SharedError::Store(StoreError::Unavailable { .. }))
        ));
    }

    #[test]
    fn garbage_records_and_index_read_as_absent() {
        for store in both() {
            let r = records(10, 1 << 20);
            store.put_raw(&r.record_key(&id("k")), b"\x00garbage");
            store.put_raw(&r.index_key(), b"not an index");
            let b = r.begin(&store, &id("k"), &fp(b"a"), 7, 0, LOCK).unwrap();
            assert_eq!(b.decision, RequestDecision::Proceed);
            let dup = r.begin(&store, &id("k"), &fp(b"a"), 8, 1, LOCK).unwrap();
            assert!(matches!(dup.decision, RequestDecision::Conflict { .. }));
        }
    }

    #[test]
    fn bounds_evict_the_oldest_results_and_count_them() {
        for store in both() {
            let r = records(3, 1 << 20);
            for (n, key) in ["a", "b", "c"].iter().enumerate() {
                let owner = n as u64;
                r.begin(&store, &id(key), &fp(b"x"), owner, 0, LOCK)
                    .unwrap();
                r.complete(&store, &id(key), owner, response(b"{}"), 90_000, 1)
                    .unwrap();
            }
            let d = r.begin(&store, &id("d"), &fp(b"x"), 9, 2, LOCK).unwrap();
            assert_eq!((d.decision, d.evicted), (RequestDecision::Proceed, 1));
            // "a" was the oldest: its record is gone, so it runs again.
            let a = r.begin(&store, &id("a"), &fp(b"x"), 10, 3, LOCK).unwrap();
            assert_eq!(a.decision, RequestDecision::Proceed);
            assert_eq!(a.evicted, 1, "b goes to make room for a");
            let c = r.begin(&store, &id("c"), &fp(b"x"), 11, 4, LOCK).unwrap();
            assert_eq!(c.decision, RequestDecision::Replay(response(b"{}")));
            let (index, _) = r.read_index(&store).unwrap();
            assert_eq!(index.entries().len(), 3);
        }
    }

    #[test]
    fn bytes_bound_holds_and_an_oversized_result_keeps_the_lock() {
        for store in both() {
            let r = records(100, 2_000);
            r.begin(&store, &id("big"), &fp(b"x"), 1, 0, LOCK).unwrap();
            assert_eq!(
                r.complete(&store, &id("big"), 1, response(&[7; 2_000]), 90_000, 1),
                Ok(Settled::NoRoom)
            );
            let dup = r.begin(&store, &id("big"), &fp(b"x"), 2, 2, LOCK).unwrap();
            assert!(matches!(dup.decision, RequestDecision::Conflict { .. }));
            for n in 0..10u64 {
                let key = format!("k{n}");
                r.begin(&store, &id(&key), &fp(b"x"), n, 10, LOCK).unwrap();
                r.complete(&store, &id(&key), n, response(&[1; 300]), 90_000, 10)
                    .unwrap();
                let (index, _) = r.read_index(&store).unwrap();
                assert!(index.total_bytes() <= 2_000, "{}", index.total_bytes());
            }
        }
    }

    #[test]
    fn a_store_full_of_live_locks_refuses_new_claims() {
        for store in both() {
            let r = records(2, 1 << 20);
            r.begin(&store, &id("a"), &fp(b"x"), 1, 0, LOCK).unwrap();
            r.begin(&store, &id("b"), &fp(b"x"), 2, 0, LOCK).unwrap();
            assert_eq!(
                r.begin(&store, &id("c"), &fp(b"x"), 3, 0, LOCK),
                Err(SharedError::Full)
            );
            // The existing locks still answer.
            let a = r.begin(&store, &id("a"), &fp(b"x"), 4, 0, LOCK).unwrap();
            assert!(matches!(a.decision, RequestDecision::Conflict { .. }));
        }
    }

    /// A store through which a second worker's whole claim runs just before the first
    /// worker's `step`-th shared-data call.
    struct Interleaved<'a> {
        inner: &'a MemoryStore,
        calls: std::cell::Cell<u32>,
        step: u32,
        rival: &'a dyn Fn(&MemoryStore),
    }

    impl Interleaved<'_> {
        fn tick(&self) {
            let n = self.calls.get();
            self.calls.set(n + 1);
            if n == self.step {
                (self.rival)(self.inner);
            }
        }
    }

    impl SharedStore for Interleaved<'_> {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            self.tick();
            self.inner.get(key)
        }

        fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
            self.tick();
            self.inner.set(key, value, cas)
        }
    }

    /// Concurrent duplicates: whichever shared-data call of one worker the other's claim
    /// lands before, exactly one of them proceeds, under both hosts' CAS rules.
    #[test]
    fn exactly_one_of_two_interleaved_claims_proceeds() {
        for rule in [CasRule::Kong, CasRule::Envoy] {
            for step in 0..6 {
                let store = MemoryStore::new(rule);
                let r = records(10, 1 << 20);
                // The index exists already (its first creation is the documented race).
                r.begin(&store, &id("warm-up"), &fp(b"a"), 0, 0, LOCK)
                    .unwrap();
                let rival_decision = std::cell::RefCell::new(None);
                let rival = |s: &MemoryStore| {
                    let b = r.begin(s, &id("k"), &fp(b"a"), 2, 0, LOCK).unwrap();
                    *rival_decision.borrow_mut() = Some(b.decision);
                };
                let first = Interleaved {
                    inner: &store,
                    calls: std::cell::Cell::new(0),
                    step,
                    rival: &rival,
                };
                let mine = r.begin(&first, &id("k"), &fp(b"a"), 1, 0, LOCK).unwrap();
                let theirs = rival_decision.into_inner();
                let proceeded = [Some(mine.decision), theirs]
                    .iter()
                    .filter(|d| **d == Some(RequestDecision::Proceed))
                    .count();
                assert_eq!(proceeded, 1, "{rule:?}, rival before call {step}");
            }
        }
    }
}
