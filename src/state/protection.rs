//! Adaptive mode's route protection: whether a scope (route or upstream) is calm, so its
//! requests take the proxy's native path and the filter only watches, or protected, so
//! they go through dispatch mode with retries.
//!
//! # Semantics, and why
//!
//! * A retryable outcome seen on the native path (or on a protected attempt) marks the
//!   scope protected in shared data until `now + window`
//!   ([`ProtectionCache::mark_failure`]). Every worker of the node then protects it.
//! * Failures that keep coming push the end out: `until = max(stored, now + window)`,
//!   written only when that moves the end by at least a twentieth of the window (1.5 s
//!   for the default 30 s). During an outage every protected request may fail; without
//!   the step each failure would be a read and a compare-and-swap write, racing every
//!   other worker's. With it a worker writes about once per step and the end is at most
//!   one step short of `last failure + window`.
//! * A scheduled maintenance window ([`crate::maintenance`]) protects without any
//!   failure and without touching shared data ([`ProtectionCache::check`]).
//! * The store only ever learns that protection *starts or lasts longer*; calm returns
//!   by itself when `until` passes. So no writer can cut another's protection short,
//!   even when two routes with different windows share an upstream scope.
//!
//! # Cost on the calm path
//!
//! Healthy traffic must not pay for protection, so [`ProtectionCache`] is a per-worker
//! cache of the flag: a request reads shared data only when the cached answer is older
//! than `cache` ms (default 1000), or when a protection it knew about has ended since
//! (one read to learn whether another worker extended it). Every call makes at most one
//! read; within `cache` ms a calm scope costs none. A worker that marks protection
//! updates its own cache at once, so it protects from its very next request; other
//! workers follow within `cache` ms. The lookup compares the scope id against the
//! cached keys and allocates nothing; a key string is built once per scope.
//!
//! # Shared data, CAS and failures
//!
//! [`ProtectionCache::mark_failure`] reads, then writes with the cas the read returned
//! (`0` when the key is absent): create-only on Kong, an unconditional write on Envoy
//! (see [`crate::state::store`]). A lost race re-reads, [`MAX_CAS_ATTEMPTS`] times at most; the
//! re-read usually finds the rival's extension and writes nothing. Only the worker whose
//! write turns a calm (absent, expired or unreadable) value into a protected one gets
//! [`Transition::Started`], so a node-wide metric counts each protection episode once —
//! except on Envoy, where two workers that both find the key absent can both create it
//! (no create-only write there) and both report `Started`.
//!
//! When shared data fails, a worker still protects on what it saw itself: a failure it
//! marked protects its own requests for the window even if the write was lost (store
//! unavailable, contention). When the store cannot be read and the worker knows of no
//! protection, the answer is [`Protection::StoreUnavailable`]; the adapter treats that
//! as calm (the native path is what the route would get without this filter) and logs it.
//!
//! # Storage
//!
//! Key `kong_retry/protect/<scope-id>`, or `<zone>/kong_retry/protect/<scope-id>` with a
//! zone (same zone rules as [`crate::state::budget`]). Value: 16 bytes, see [`encode`]. A value
//! of another length or version reads as calm and is overwritten by the next failure; a
//! value claiming protection further ahead than the longest window allowed (a clock that
//! went back, or garbage) reads as calm too, so it cannot protect forever.
//!
//! Time comes from the caller (the host clock, ms since the Unix epoch).

use crate::maintenance::MaintenanceSchedule;
use crate::state::store::{zoned_prefix, SharedStore, StoreError};
use std::fmt;

/// How many read/compare-and-swap rounds one [`ProtectionCache::mark_failure`] may take.
pub const MAX_CAS_ATTEMPTS: u32 = 8;
/// The key prefix every protection key carries (after the optional zone).
pub const KEY_PREFIX: &str = "kong_retry/protect/";
/// Shortest accepted window, ms.
pub const MIN_WINDOW_MS: u64 = 1_000;
/// Longest accepted window, ms (one hour).
pub const MAX_WINDOW_MS: u64 = 3_600_000;
/// Longest accepted cache age, ms.
pub const MAX_CACHE_MS: u64 = 60_000;
/// Scopes one worker's cache remembers; the least recently used is dropped beyond this.
pub const MAX_CACHED_SCOPES: usize = 32;
/// A failure extends protection only by at least `window / EXTEND_STEP_DIVISOR`.
const EXTEND_STEP_DIVISOR: u64 = 20;
/// Workers' clocks interleave a few ms out of order; a stored end this far beyond the
/// longest window is still believed.
const CLOCK_SKEW_MS: u64 = 1_000;

/// The validated settings of adaptive protection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectionRules {
    window_ms: u64,
    cache_ms: u64,
    zone: Option<String>,
}

impl Default for ProtectionRules {
    /// A 30 s window, a 1 s cache, the default zone.
    fn default() -> Self {
        ProtectionRules {
            window_ms: 30_000,
            cache_ms: 1_000,
            zone: None,
        }
    }
}

/// Settings that cannot be used, naming the field and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtectionRulesError {
    /// `window` is outside [`MIN_WINDOW_MS`]..=[`MAX_WINDOW_MS`].
    Window(u64),
    /// `cache` is above [`MAX_CACHE_MS`] or above the window.
    Cache { cache_ms: u64, window_ms: u64 },
    /// `zone` is empty or contains `/`.
    Zone(String),
}

impl fmt::Display for ProtectionRulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtectionRulesError::Window(value) => write!(
                f,
                "adaptive.window: {value} is not allowed; expected {MIN_WINDOW_MS} to {MAX_WINDOW_MS} (milliseconds)"
            ),
            ProtectionRulesError::Cache { cache_ms, window_ms } => write!(
                f,
                "adaptive.cache: {cache_ms} is not allowed; expected 0 to {} (milliseconds, at most {MAX_CACHE_MS} and at most adaptive.window, {window_ms}, or a worker could miss a whole protection)",
                MAX_CACHE_MS.min(*window_ms)
            ),
            ProtectionRulesError::Zone(value) => write!(
                f,
                "adaptive.zone: {value:?} is not allowed; expected a non-empty shm_kv zone name without '/'"
            ),
        }
    }
}

impl std::error::Error for ProtectionRulesError {}

impl ProtectionRules {
    /// Checks the settings: `window_ms` 1000–3600000, `cache_ms` 0–60000 and not above
    /// the window, `zone` a non-empty name without `/`.
    pub fn new(
        window_ms: u64,
        cache_ms: u64,
        zone: Option<String>,
    ) -> Result<Self, ProtectionRulesError> {
        if !(MIN_WINDOW_MS..=MAX_WINDOW_MS).contains(&window_ms) {
            return Err(ProtectionRulesError::Window(window_ms));
        }
        if cache_ms > MAX_CACHE_MS || cache_ms > window_ms {
            return Err(ProtectionRulesError::Cache {
                cache_ms,
                window_ms,
            });
        }
        zoned_prefix(zone.as_deref(), KEY_PREFIX).map_err(ProtectionRulesError::Zone)?;
        Ok(ProtectionRules {
            window_ms,
            cache_ms,
            zone,
        })
    }

    /// How long one failure protects the scope, ms.
    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    /// How old a worker's cached flag may be before it reads shared data again, ms.
    pub fn cache_ms(&self) -> u64 {
        self.cache_ms
    }

    /// The Kong `shm_kv` zone, if one was configured.
    pub fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }

    /// The shared-data key of the protection flag of `scope_id` (a route id or an upstream).
    pub fn key(&self, scope_id: &str) -> String {
        format!("{}{scope_id}", self.key_prefix())
    }

    fn key_prefix(&self) -> String {
        // `new` checked the zone.
        zoned_prefix(self.zone.as_deref(), KEY_PREFIX).unwrap_or_default()
    }

    /// The smallest extension worth a write.
    fn extend_step_ms(&self) -> u64 {
        self.window_ms / EXTEND_STEP_DIVISOR
    }
}

/// Which path a request takes in adaptive mode, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// No recent failure, no maintenance window: native path, the filter only watches.
    Calm,
    /// Inside a scheduled maintenance window: dispatch mode from the first request.
    Scheduled,
    /// A recent retryable failure: dispatch mode until `until_ms` (host clock).
    Protected { until_ms: u64 },
    /// Shared data could not be read and this worker marked nothing itself: take the
    /// native path (as without the filter) and log it.
    StoreUnavailable,
}

impl Protection {
    /// Does the request go through dispatch mode (retries, budget, backoff)?
    pub fn dispatches(self) -> bool {
        matches!(self, Protection::Scheduled | Protection::Protected { .. })
    }
}

/// What one [`ProtectionCache::mark_failure`] did, for the protection metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The scope was calm and is now protected (count one protection episode).
    Started,
    /// The scope was protected and now stays protected longer.
    Extended,
    /// Nothing written: the scope is already protected about as long as this failure asks.
    Unchanged,
}

/// One worker's cached view of the protection flags, plus what it marked itself.
///
/// Plain per-worker state (a root context owns one); never shared between workers.
#[derive(Debug, Clone)]
pub struct ProtectionCache {
    rules: ProtectionRules,
    /// Length of the key prefix, to find an entry by scope id without building its key.
    prefix_len: usize,
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    /// The full shared-data key; `key[prefix_len..]` is the scope id.
    key: String,
    /// When shared data was last read (or written) for this key; `None`: never.
    read_at_ms: Option<u64>,
    /// The end of protection found by that read or write (0: calm). A lower bound of
    /// the stored value, which only grows.
    shared_until_ms: u64,
    /// The last read failed (the store is unavailable).
    unavailable: bool,
    /// The end of protection this worker marked itself; survives a lost write.
    local_until_ms: u64,
    /// For dropping the least recently used scope.
    used_at_ms: u64,
}

impl Entry {
    /// The latest end of protection this worker knows of.
    fn known_until_ms(&self) -> u64 {
        self.shared_until_ms.max(self.local_until_ms)
    }

    fn needs_read(&self, now_ms: u64, cache_ms: u64) -> bool {
        match self.read_at_ms {
            None => true,
            // A clock that went back makes the age unknown: read.
            Some(read_at) if now_ms < read_at => true,
            Some(read_at) => {
                let expired_since_read =
                    self.shared_until_ms > read_at && self.shared_until_ms <= now_ms;
                now_ms - read_at >= cache_ms || expired_since_read
            }
        }
    }

    fn answer(&self, now_ms: u64) -> Protection {
        let until_ms = self.known_until_ms();
        if until_ms > now_ms {
            Protection::Protected { until_ms }
        } else if self.unavailable {
            Protection::StoreUnavailable
        } else {
            Protection::Calm
        }
    }

    /// Records what a read found: `Some(until)` (0 for calm) or `None` for a failed read.
    fn saw(&mut self, now_ms: u64, until_ms: Option<u64>) {
        self.read_at_ms = Some(now_ms);
        match until_ms {
            Some(until_ms) => {
                self.shared_until_ms = until_ms;
                self.unavailable = false;
            }
            // Keep the last value seen: the protection it showed has not been undone.
            None => self.unavailable = true,
        }
    }
}

impl ProtectionCache {
    /// An empty cache for one worker.
    pub fn new(rules: ProtectionRules) -> Self {
        let prefix_len = rules.key_prefix().len();
        ProtectionCache {
            rules,
            prefix_len,
            entries: Vec::new(),
        }
    }

    /// The rules this cache applies.
    pub fn rules(&self) -> &ProtectionRules {
        &self.rules
    }

    /// The request's path: [`Protection::Scheduled`] inside a maintenance window (no
    /// store access at all), otherwise [`Self::is_protected`].
    pub fn check<S: SharedStore + ?Sized>(
        &mut self,
        schedule: &MaintenanceSchedule,
        store: &S,
        scope_id: &str,
        now_ms: u64,
    ) -> Protection {
        if schedule.contains(now_ms) {
            return Protection::Scheduled;
        }
        self.is_protected(store, scope_id, now_ms)
    }

    /// Is `scope_id` protected by a recent failure? Reads shared data at most once, and
    /// only when the cached answer is older than `cache_ms` or a known protection has
    /// ended since it was read. Never returns [`Protection::Scheduled`].
    pub fn is_protected<S: SharedStore + ?Sized>(
        &mut self,
        store: &S,
        scope_id: &str,
        now_ms: u64,
    ) -> Protection {
        let cache_ms = self.rules.cache_ms;
        let entry = self.entry(scope_id, now_ms);
        if entry.needs_read(now_ms, cache_ms) {
            let until_ms = match store.get(&entry.key) {
                Ok(None) => Some(0),
                Ok(Some((bytes, _cas))) => Some(believable(decode(&bytes), now_ms)),
                Err(_) => None,
            };
            entry.saw(now_ms, until_ms);
        }
        entry.answer(now_ms)
    }

    /// Until when (host ms, exclusive) [`Self::is_protected`] is sure to answer
    /// [`Protection::Calm`] for `scope_id` without reading the store, as of `now_ms`;
    /// `now_ms` or earlier when it is not calm now or would read at once.
    ///
    /// Lets a caller that asks about the same scope on every request skip the lookup while
    /// nothing can change: the answer only changes by a read (due at this instant), by
    /// [`Self::mark_failure`] (the caller must forget the instant then), or by a clock that
    /// goes back (the caller must check `now_ms` against when it asked).
    pub fn calm_until_ms(&self, scope_id: &str, now_ms: u64) -> u64 {
        let prefix_len = self.prefix_len;
        let Some(entry) = self
            .entries
            .iter()
            .find(|e| e.key.get(prefix_len..) == Some(scope_id))
        else {
            return now_ms;
        };
        if entry.answer(now_ms) != Protection::Calm || entry.needs_read(now_ms, self.rules.cache_ms)
        {
            return now_ms;
        }
        // Calm now means every known end is in the past, so no expiry can trigger a read;
        // only the cache age can.
        match entry.read_at_ms {
            Some(read_at) => read_at.saturating_add(self.rules.cache_ms),
            None => now_ms,
        }
    }

    /// Records a retryable outcome for `scope_id`: protects it until `now + window`
    /// (never shortening a longer protection) in shared data and in this worker's cache.
    ///
    /// On an error this worker still protects the scope for the window; only the other
    /// workers do not learn of it.
    pub fn mark_failure<S: SharedStore + ?Sized>(
        &mut self,
        store: &S,
        scope_id: &str,
        now_ms: u64,
    ) -> Result<Transition, StoreError> {
        let target = now_ms.saturating_add(self.rules.window_ms);
        let step = self.rules.extend_step_ms();
        let entry = self.entry(scope_id, now_ms);
        // Already in the store and lasting about as long (this worker wrote or read it
        // there): no store access at all. This is what keeps an outage's failures from
        // writing each time. Only the store's value counts: what this worker marked
        // locally may never have reached the other workers.
        let known = entry.shared_until_ms;
        entry.local_until_ms = entry.local_until_ms.max(target);
        if known > now_ms && known.saturating_add(step) >= target {
            return Ok(Transition::Unchanged);
        }
        for _ in 0..MAX_CAS_ATTEMPTS {
            // An absent key is written with cas 0: create-only on Kong, a plain write on Envoy.
            let (current, cas) = match store.get(&entry.key) {
                Ok(None) => (0, 0),
                Ok(Some((bytes, cas))) => (believable(decode(&bytes), now_ms), cas),
                Err(error) => {
                    entry.saw(now_ms, None);
                    return Err(error);
                }
            };
            entry.saw(now_ms, Some(current));
            if current > now_ms && current.saturating_add(step) >= target {
                return Ok(Transition::Unchanged);
            }
            let transition = if current > now_ms {
                Transition::Extended
            } else {
                Transition::Started
            };
            match store.set(&entry.key, &encode(target), cas) {
                Ok(()) => {
                    entry.shared_until_ms = target;
                    return Ok(transition);
                }
                Err(StoreError::CasMismatch { .. }) => continue,
                Err(error) => {
                    entry.unavailable = true;
                    return Err(error);
                }
            }
        }
        Err(StoreError::CasMismatch {
            key: entry.key.clone(),
        })
    }

    /// The cache entry of `scope_id`, created (dropping the least recently used one when
    /// full) if needed.
    fn entry(&mut self, scope_id: &str, now_ms: u64) -> &mut Entry {
        let prefix_len = self.prefix_len;
        let found = self
            .entries
            .iter()
            .position(|e| e.key.get(prefix_len..) == Some(scope_id));
        let index = match found {
            Some(index) => index,
            None => {
                let fresh = Entry {
                    key: self.rules.key(scope_id),
                    read_at_ms: None,
                    shared_until_ms: 0,
                    unavailable: false,
                    local_until_ms: 0,
                    used_at_ms: now_ms,
                };
                match self
                    .entries
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, e)| e.used_at_ms)
                {
                    Some((oldest, _)) if self.entries.len() >= MAX_CACHED_SCOPES => {
                        self.entries[oldest] = fresh;
                        oldest
                    }
                    _ => {
                        self.entries.push(fresh);
                        self.entries.len() - 1
                    }
                }
            }
        };
        // In bounds: a position found above, the slot just replaced, or the new last one.
        let entry = &mut self.entries[index];
        entry.used_at_ms = now_ms;
        entry
    }
}

/// A stored end of protection, or 0 (calm) when it claims more than the longest window
/// ahead: a clock that went back, or garbage, must not protect forever.
fn believable(until_ms: Option<u64>, now_ms: u64) -> u64 {
    match until_ms {
        Some(until) if until <= now_ms.saturating_add(MAX_WINDOW_MS + CLOCK_SKEW_MS) => until,
        _ => 0,
    }
}

const VERSION: u8 = 1;
const VALUE_LEN: usize = 16;

/// The stored value of one protection flag.
///
/// Layout, version 1, 16 bytes: byte 0 version (1), bytes 1..8 reserved (written as 0,
/// ignored on read), bytes 8..16 end of protection, host ms, u64 little-endian.
pub fn encode(until_ms: u64) -> [u8; VALUE_LEN] {
    let mut out = [0u8; VALUE_LEN];
    out[0] = VERSION;
    out[8..].copy_from_slice(&until_ms.to_le_bytes());
    out
}

/// The end of protection in a version-1 value; `None` for anything else.
pub fn decode(bytes: &[u8]) -> Option<u64> {
    if bytes.len() != VALUE_LEN || bytes.first() != Some(&VERSION) {
        return None;
    }
    bytes
        .get(8..16)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::store::testing::{CasRule, MemoryStore};
    use serde_json::json;
    use std::cell::{Cell, RefCell};

    const RULES: [CasRule; 2] = [CasRule::Kong, CasRule::Envoy];
    const SCOPE: &str = "route-1";
    /// An arbitrary host time, so that "0 = calm" is never confused with a real instant.
    const T0: u64 = 1_796_086_800_000;

    fn cache() -> ProtectionCache {
        ProtectionCache::new(ProtectionRules::default())
    }

    fn stored(store: &MemoryStore, key: &str) -> Option<u64> {
        store.peek(key).and_then(|(bytes, _)| decode(&bytes))
    }

    fn key() -> String {
        ProtectionRules::default().key(SCOPE)
    }

    // --- the protection cycle -------------------------------------------------------

    #[test]
    fn calm_then_failure_then_protected_then_extended_then_calm() {
        for rule in RULES {
            let store = MemoryStore::new(rule);
            let mut worker = cache();
            assert_eq!(worker.is_protected(&store, SCOPE, T0), Protection::Calm);

            // The first failure starts protection for the window.
            let failed_at = T0 + 100;
            assert_eq!(
                worker.mark_failure(&store, SCOPE, failed_at),
                Ok(Transition::Started)
            );
            assert_eq!(stored(&store, &key()), Some(failed_at + 30_000), "{rule:?}");
            assert_eq!(
                worker.is_protected(&store, SCOPE, failed_at + 1),
                Protection::Protected {
                    until_ms: failed_at + 30_000
                }
            );

            // Failures that keep coming push the end out.
            assert_eq!(
                worker.mark_failure(&store, SCOPE, failed_at + 20_000),
                Ok(Transition::Extended)
            );
            let until = failed_at + 50_000;
            assert_eq!(stored(&store, &key()), Some(until), "{rule:?}");
            for now in [failed_at + 29_999, failed_at + 30_000, until - 1] {
                assert_eq!(
                    worker.is_protected(&store, SCOPE, now),
                    Protection::Protected { until_ms: until },
                    "{rule:?} at +{}",
                    now - failed_at
                );
            }
            // Calm again once the window after the last failure has passed.
            assert_eq!(worker.is_protected(&store, SCOPE, until), Protection::Calm);
            assert_eq!(
                worker.is_protected(&store, SCOPE, until + 60_000),
                Protection::Calm
            );

            // A later failure starts a new episode.
            assert_eq!(
                worker.mark_failure(&store, SCOPE, until + 60_000),
                Ok(Transition::Started)
            );
        }
    }

    #[test]
    fn a_burst_of_failures_writes_once_per_step() {
        let store = MemoryStore::new(CasRule::Kong);
        let mut worker = cache();
        let mut transitions = Vec::new();
        // 1000 failures over 10 s, one every 10 ms; the step is 30 s / 20 = 1.5 s.
        for i in 0..1000 {
            transitions.push(worker.mark_failure(&store, SCOPE, T0 + i * 10).unwrap());
        }
        let count = |t: Transition| transitions.iter().filter(|&&x| x == t).count();
        assert_eq!(count(Transition::Started), 1);
        assert_eq!(count(Transition::Extended), 6, "at +1.5, +3, ... +9 s");
        assert_eq!(store.sets(), 7);
        assert_eq!(store.gets(), 7, "the other failures touch no shared data");
        // The end is at most one step short of last failure + window.
        let last_failure = T0 + 9_990;
        let until = stored(&store, &key()).unwrap();
        assert!(until + 1_500 >= last_failure + 30_000, "{until}");
        assert!(until <= last_failure + 30_000);
    }

    #[test]
    fn workers_failing_together_write_once() {
        for rule in RULES {
            let store = MemoryStore::new(rule);
            let mut workers: Vec<ProtectionCache> = (0..4).map(|_| cache()).collect();
            let transitions: Vec<Transition> = workers
                .iter_mut()
                .enumerate()
                .map(|(i, w)| w.mark_failure(&store, SCOPE, T0 + 100 * i as u64).unwrap())
                .collect();
            assert_eq!(
                transitions,
                [
                    Transition::Started,
                    Transition::Unchanged,
                    Transition::Unchanged,
                    Transition::Unchanged
                ],
                "{rule:?}"
            );
            assert_eq!((store.gets(), store.sets()), (4, 1), "{rule:?}");
            // Each of them protects at once; the stored end is the first failure's.
            for w in &mut workers {
                assert!(w.is_protected(&store, SCOPE, T0 + 400).dispatches());
            }
            assert_eq!(stored(&store, &key()), Some(T0 + 30_000));
        }
    }

    #[test]
    fn protection_is_never_shortened() {
        // Two routes share an upstream scope; one protects for 10 min, the other for 10 s.
        let store = MemoryStore::new(CasRule::Kong);
        let mut long = ProtectionCache::new(ProtectionRules::new(600_000, 1_000, None).unwrap());
        let mut short = ProtectionCache::new(ProtectionRules::new(10_000, 1_000, None).unwrap());
        let scope = "api.internal:8080";
        long.mark_failure(&store, scope, T0).unwrap();
        assert_eq!(
            short.is_protected(&store, scope, T0 + 5),
            Protection::Protected {
                until_ms: T0 + 600_000
            }
        );
        assert_eq!(
            short.mark_failure(&store, scope, T0 + 5),
            Ok(Transition::Unchanged)
        );
        assert_eq!(
            stored(&store, &short.rules().key(scope)),
            Some(T0 + 600_000)
        );
    }

    // --- the cache ------------------------------------------------------------------

    #[test]
    fn calm_requests_within_cache_ms_read_shared_data_once() {
        for rule in RULES {
            let store = MemoryStore::new(rule);
            let mut worker = cache();
            for i in 0..1000 {
                // 1000 requests in 999 ms.
                assert_eq!(worker.is_protected(&store, SCOPE, T0 + i), Protection::Calm);
            }
            assert_eq!((store.gets(), store.sets()), (1, 0), "{rule:?}");
            // Then once per cache period.
            for i in 1000..5000 {
                worker.is_protected(&store, SCOPE, T0 + i);
            }
            assert_eq!(store.gets(), 5, "{rule:?}");
        }
    }

    #[test]
    fn calm_until_is_when_the_next_read_is_due() {
        let store = MemoryStore::new(CasRule::Kong);
        let mut worker = cache();
        assert_eq!(worker.calm_until_ms(SCOPE, T0), T0, "never asked");
        assert_eq!(worker.is_protected(&store, SCOPE, T0), Protection::Calm);
        assert_eq!(worker.calm_until_ms(SCOPE, T0 + 10), T0 + 1_000);
        // Asked before that instant, the cache answers calm without a read, as promised.
        for t in [T0 + 10, T0 + 500, T0 + 999] {
            assert_eq!(worker.is_protected(&store, SCOPE, t), Protection::Calm);
        }
        assert_eq!(store.gets(), 1);
        // At that instant it reads.
        assert_eq!(worker.calm_until_ms(SCOPE, T0 + 1_000), T0 + 1_000);
        worker.is_protected(&store, SCOPE, T0 + 1_000);
        assert_eq!(store.gets(), 2);
        // Protected: nothing to promise; calm again once it ends and has been re-read.
        worker.mark_failure(&store, SCOPE, T0 + 1_100).unwrap();
        assert_eq!(worker.calm_until_ms(SCOPE, T0 + 1_200), T0 + 1_200);
        let end = T0 + 31_100;
        assert_eq!(worker.calm_until_ms(SCOPE, end), end, "a read is due");
        assert_eq!(worker.is_protected(&store, SCOPE, end), Protection::Calm);
        assert_eq!(worker.calm_until_ms(SCOPE, end), end + 1_000);
        // No cache: never anything to promise.
        let mut worker = ProtectionCache::new(ProtectionRules::new(30_000, 0, None).unwrap());
        worker.is_protected(&store, SCOPE, T0);
        assert_eq!(worker.calm_until_ms(SCOPE, T0), T0);
        // An unreadable store is not calm.
        let mut worker = cache();
        store.set_unavailable(true);
        assert_eq!(
            worker.is_protected(&store, SCOPE, T0),
            Protection::StoreUnavailable
        );
        assert_eq!(worker.calm_until_ms(SCOPE, T0 + 1), T0 + 1);
    }

    #[test]
    fn a_zero_cache_reads_on_every_request() {
        let store = MemoryStore::new(CasRule::Kong);
        let mut worker = ProtectionCache::new(ProtectionRules::new(30_000, 0, None).unwrap());
        for i in 0..10 {
            worker.is_protected(&store, SCOPE, T0 + i / 3);
        }
        assert_eq!(store.gets(), 10);
    }

    #[test]
    fn a_worker_that_marks_protects_from_its_next_request_without_a_read() {
        let store = MemoryStore::new(CasRule::Envoy);
        let mut worker = cache();
        assert_eq!(worker.is_protected(&store, SCOPE, T0), Protection::Calm);
        worker.mark_failure(&store, SCOPE, T0 + 1).unwrap();
        let reads = store.gets();
        assert_eq!(
            worker.is_protected(&store, SCOPE, T0 + 2),
            Protection::Protected {
                until_ms: T0 + 30_001
            }
        );
        assert_eq!(store.gets(), reads, "answered from the cache");
    }

    #[test]
    fn another_worker_sees_protection_within_cache_ms() {
        for rule in RULES {
            let store = MemoryStore::new(rule);
            let (mut a, mut b) = (cache(), cache());
            assert_eq!(b.is_protected(&store, SCOPE, T0), Protection::Calm);
            a.mark_failure(&store, SCOPE, T0 + 10).unwrap();
            let protected = Protection::Protected {
                until_ms: T0 + 30_010,
            };
            // B's cached "calm" is still good until 1000 ms after its read...
            assert_eq!(b.is_protected(&store, SCOPE, T0 + 999), Protection::Calm);
            // ...then it reads and follows A.
            assert_eq!(
                b.is_protected(&store, SCOPE, T0 + 1_000),
                protected,
                "{rule:?}"
            );
            assert_eq!(
                store.gets(),
                3,
                "B's two reads and A's read before its write"
            );
        }
    }

    #[test]
    fn a_known_protection_that_ends_is_read_again_once() {
        let store = MemoryStore::new(CasRule::Kong);
        let (mut a, mut b) = (cache(), cache());
        a.mark_failure(&store, SCOPE, T0).unwrap();
        let first_end = T0 + 30_000;
        assert_eq!(
            b.is_protected(&store, SCOPE, first_end - 500),
            Protection::Protected {
                until_ms: first_end
            }
        );
        // A extends just before B's cached end; B's cache is still fresh at the end, but
        // the protection it knew has ended, so it reads instead of turning calm.
        a.mark_failure(&store, SCOPE, first_end - 200).unwrap();
        let reads = store.gets();
        assert_eq!(
            b.is_protected(&store, SCOPE, first_end),
            Protection::Protected {
                until_ms: first_end + 29_800
            }
        );
        assert_eq!(store.gets(), reads + 1);
        // When the protection really ends: one read, then calm from the cache.
        let end = first_end + 29_800;
        let reads = store.gets();
        for now in end..end + 500 {
            assert_eq!(b.is_protected(&store, SCOPE, now), Protection::Calm);
        }
        assert_eq!(store.gets(), reads + 1);
    }

    #[test]
    fn a_clock_going_back_reads_again() {
        let store = MemoryStore::new(CasRule::Kong);
        let mut worker = cache();
        worker.is_protected(&store, SCOPE, T0);
        worker.is_protected(&store, SCOPE, T0 - 5_000);
        assert_eq!(store.gets(), 2);
    }

    #[test]
    fn scopes_are_cached_apart_and_the_cache_is_bounded() {
        let store = MemoryStore::new(CasRule::Kong);
        let mut worker = cache();
        worker.mark_failure(&store, "route-a", T0).unwrap();
        assert!(worker.is_protected(&store, "route-a", T0 + 1).dispatches());
        assert_eq!(
            worker.is_protected(&store, "route-b", T0 + 1),
            Protection::Calm
        );
        // A scope id that is a prefix or extension of another is a different scope.
        assert_eq!(
            worker.is_protected(&store, "route-", T0 + 1),
            Protection::Calm
        );
        assert_eq!(
            worker.is_protected(&store, "route-aa", T0 + 1),
            Protection::Calm
        );

        for i in 0..(MAX_CACHED_SCOPES as u64 * 3) {
            worker.is_protected(&store, &format!("scope-{i}"), T0 + 10 + i);
        }
        assert_eq!(worker.entries.len(), MAX_CACHED_SCOPES);
        // route-a was dropped from the cache; its protection is read back from the store.
        let reads = store.gets();
        assert!(worker
            .is_protected(&store, "route-a", T0 + 500)
            .dispatches());
        assert_eq!(store.gets(), reads + 1);
    }

    // --- maintenance windows --------------------------------------------------------

    #[test]
    fn a_scheduled_window_protects_from_the_first_request_without_shared_data() {
        let schedule = MaintenanceSchedule::from_json(&json!([
            {"start": "2026-12-01T01:00:00Z", "end": "2026-12-01T03:00:00Z"}
        ]))
        .unwrap();
        let store = MemoryStore::new(CasRule::Kong);
        store.set_unavailable(true);
        let mut worker = cache();
        // T0 is 2026-12-01T01:00:00Z.
        for now in [T0, T0 + 1, T0 + 2 * 3_600_000 - 1] {
            let p = worker.check(&schedule, &store, SCOPE, now);
            assert_eq!(p, Protection::Scheduled);
            assert!(p.dispatches());
        }
        assert_eq!(store.gets(), 0);
        // Outside the window the flag decides (here: store unavailable, nothing marked).
        let after = worker.check(&schedule, &store, SCOPE, T0 + 2 * 3_600_000);
        assert_eq!(after, Protection::StoreUnavailable);
        assert!(!after.dispatches());
        store.set_unavailable(false);
        worker.mark_failure(&store, SCOPE, T0 + 7_300_000).unwrap();
        assert!(worker
            .check(&schedule, &store, SCOPE, T0 + 7_300_001)
            .dispatches());
        assert!(!Protection::Calm.dispatches());
    }

    // --- contention -----------------------------------------------------------------

    #[test]
    fn cas_contention_is_bounded_and_the_worker_still_protects() {
        for rule in RULES {
            let store = MemoryStore::new(rule);
            let mut worker = cache();
            store.fail_next_sets(MAX_CAS_ATTEMPTS);
            let err = worker.mark_failure(&store, SCOPE, T0).unwrap_err();
            assert_eq!(err, StoreError::CasMismatch { key: key() });
            assert_eq!(
                (store.gets(), store.sets()),
                (u64::from(MAX_CAS_ATTEMPTS), u64::from(MAX_CAS_ATTEMPTS)),
                "{rule:?}"
            );
            assert_eq!(stored(&store, &key()), None);
            assert_eq!(
                worker.is_protected(&store, SCOPE, T0 + 1),
                Protection::Protected {
                    until_ms: T0 + 30_000
                },
                "{rule:?}: this worker protects on what it saw"
            );

            // Fewer lost races than attempts: the write lands.
            let store = MemoryStore::new(rule);
            let mut worker = cache();
            store.fail_next_sets(MAX_CAS_ATTEMPTS - 1);
            assert_eq!(
                worker.mark_failure(&store, SCOPE, T0),
                Ok(Transition::Started)
            );
            assert_eq!(stored(&store, &key()), Some(T0 + 30_000));
        }
    }

    /// A store where, right after our reads, another worker marks the same scope before
    /// our write: a real lost race, not a forced error.
    struct RacingStore<'a> {
        inner: &'a MemoryStore,
        rival: RefCell<ProtectionCache>,
        /// When the rival's failures happen, one per race.
        rival_times: RefCell<Vec<u64>>,
        rival_transitions: RefCell<Vec<Transition>>,
        racing: Cell<bool>,
    }

    impl SharedStore for RacingStore<'_> {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            let read = self.inner.get(key);
            if !self.racing.get() {
                if let Some(at) = self.rival_times.borrow_mut().pop() {
                    self.racing.set(true);
                    let t = self
                        .rival
                        .borrow_mut()
                        .mark_failure(self.inner, SCOPE, at)
                        .unwrap();
                    self.rival_transitions.borrow_mut().push(t);
                    self.racing.set(false);
                }
            }
            read
        }
        fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
            self.inner.set(key, value, cas)
        }
    }

    fn racing(store: &MemoryStore, rival_times: Vec<u64>) -> RacingStore<'_> {
        RacingStore {
            inner: store,
            rival: RefCell::new(cache()),
            rival_times: RefCell::new(rival_times),
            rival_transitions: RefCell::new(Vec::new()),
            racing: Cell::new(false),
        }
    }

    #[test]
    fn racing_to_start_counts_one_start_on_kong_and_may_count_two_on_envoy() {
        for (rule, ours) in [
            (CasRule::Kong, Transition::Unchanged),
            (CasRule::Envoy, Transition::Started),
        ] {
            let store = MemoryStore::new(rule);
            // We read "absent", the rival creates the key, we write with cas 0.
            let race = racing(&store, vec![T0]);
            let mut worker = cache();
            assert_eq!(worker.mark_failure(&race, SCOPE, T0), Ok(ours), "{rule:?}");
            assert_eq!(*race.rival_transitions.borrow(), [Transition::Started]);
            assert_eq!(stored(&store, &key()), Some(T0 + 30_000));
        }
    }

    #[test]
    fn lost_races_re_read_and_keep_the_furthest_end() {
        for rule in RULES {
            let store = MemoryStore::new(rule);
            let mut worker = cache();
            // The key exists (an old, ended episode), so the cas is real on both hosts.
            store.put_raw(&key(), &encode(T0 - 60_000));
            // Three rival failures (each extending) land between our reads and writes;
            // our fourth round finds T0 + 34 s and extends it to T0 + 40 s.
            let race = racing(&store, vec![T0 + 4_000, T0 + 2_000, T0]);
            assert_eq!(
                worker.mark_failure(&race, SCOPE, T0 + 10_000),
                Ok(Transition::Extended),
                "{rule:?}"
            );
            assert_eq!(
                *race.rival_transitions.borrow(),
                [
                    Transition::Started,
                    Transition::Extended,
                    Transition::Extended
                ]
            );
            assert_eq!(stored(&store, &key()), Some(T0 + 40_000), "{rule:?}");
            assert_eq!(
                (store.gets(), store.sets()),
                (7, 7),
                "ours: 4 reads, 4 writes; the rival: 3 and 3"
            );
        }
    }

    // --- stored values and failures -------------------------------------------------

    #[test]
    fn malformed_values_are_calm_and_are_overwritten() {
        let mut wrong_version = encode(T0 + 10_000);
        wrong_version[0] = 2;
        let far_future = encode(T0 + MAX_WINDOW_MS + CLOCK_SKEW_MS + 10);
        let values: [&[u8]; 8] = [
            b"",
            b"x",
            &[1u8; 15],
            &[1u8; 17],
            &wrong_version,
            b"{\"until\":1796086810000}",
            &far_future,
            &encode(u64::MAX),
        ];
        for rule in RULES {
            for value in values {
                let store = MemoryStore::new(rule);
                store.put_raw(&key(), value);
                let mut worker = cache();
                assert_eq!(
                    worker.is_protected(&store, SCOPE, T0),
                    Protection::Calm,
                    "{rule:?} {value:?}"
                );
                assert_eq!(
                    worker.mark_failure(&store, SCOPE, T0 + 1),
                    Ok(Transition::Started),
                    "{rule:?} {value:?}"
                );
                assert_eq!(stored(&store, &key()), Some(T0 + 30_001));
            }
        }
    }

    #[test]
    fn a_value_within_the_longest_window_is_believed() {
        let store = MemoryStore::new(CasRule::Kong);
        let until = T0 + MAX_WINDOW_MS + CLOCK_SKEW_MS;
        store.put_raw(&key(), &encode(until));
        assert_eq!(
            cache().is_protected(&store, SCOPE, T0),
            Protection::Protected { until_ms: until }
        );
    }

    #[test]
    fn reserved_bytes_are_ignored() {
        let mut value = encode(T0 + 10);
        value[1..8].copy_from_slice(&[9; 7]);
        assert_eq!(decode(&value), Some(T0 + 10));
    }

    #[test]
    fn arbitrary_bytes_and_times_never_panic() {
        let store = MemoryStore::new(CasRule::Kong);
        let mut worker = cache();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..5000 {
            let len = if round % 2 == 0 {
                16
            } else {
                next() as usize % 40
            };
            let mut value: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 4 == 0 && !value.is_empty() {
                value[0] = VERSION;
            }
            store.put_raw(&key(), &value);
            let now = match round % 3 {
                0 => next(),
                1 => u64::MAX - next() % 100,
                _ => T0 + next() % 100_000,
            };
            let seen = worker.is_protected(&store, SCOPE, now);
            if let Protection::Protected { until_ms } = seen {
                assert!(until_ms > now);
            }
            let _ = worker.mark_failure(&store, SCOPE, now);
        }
    }

    #[test]
    fn store_unavailable_is_cached_and_reported() {
        let store = MemoryStore::new(CasRule::Kong);
        store.set_unavailable(true);
        let mut worker = cache();
        for i in 0..100 {
            assert_eq!(
                worker.is_protected(&store, SCOPE, T0 + i),
                Protection::StoreUnavailable
            );
        }
        assert_eq!(
            store.gets(),
            1,
            "a broken store is not asked on every request"
        );

        // A failure cannot be shared, but this worker protects itself for the window.
        let err = worker.mark_failure(&store, SCOPE, T0 + 200).unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { .. }));
        assert!(
            err.to_string().contains("kong_retry/protect/route-1"),
            "{err}"
        );
        assert_eq!(
            worker.is_protected(&store, SCOPE, T0 + 5_000),
            Protection::Protected {
                until_ms: T0 + 30_200
            }
        );
        assert_eq!(
            worker.is_protected(&store, SCOPE, T0 + 30_200),
            Protection::StoreUnavailable
        );

        // The store comes back: the worker reads it within cache_ms.
        store.set_unavailable(false);
        assert_eq!(
            worker.is_protected(&store, SCOPE, T0 + 31_200),
            Protection::Calm
        );
    }

    #[test]
    fn a_protection_seen_before_the_store_failed_is_kept() {
        let store = MemoryStore::new(CasRule::Kong);
        let (mut a, mut b) = (cache(), cache());
        a.mark_failure(&store, SCOPE, T0).unwrap();
        b.is_protected(&store, SCOPE, T0 + 1);
        store.set_unavailable(true);
        assert_eq!(
            b.is_protected(&store, SCOPE, T0 + 5_000),
            Protection::Protected {
                until_ms: T0 + 30_000
            }
        );
        assert_eq!(
            b.is_protected(&store, SCOPE, T0 + 30_000),
            Protection::StoreUnavailable
        );
    }

    #[test]
    fn a_write_that_fails_after_the_read_is_reported() {
        /// Reads work, writes fail: e.g. the zone is full.
        struct ReadOnly<'a>(&'a MemoryStore);
        impl SharedStore for ReadOnly<'_> {
            fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
                self.0.get(key)
            }
            fn set(&self, key: &str, _: &[u8], _: u32) -> Result<(), StoreError> {
                Err(StoreError::Unavailable {
                    key: key.to_string(),
                    reason: "no memory".to_string(),
                })
            }
        }
        let store = MemoryStore::new(CasRule::Kong);
        let mut worker = cache();
        let err = worker
            .mark_failure(&ReadOnly(&store), SCOPE, T0)
            .unwrap_err();
        assert!(err.to_string().contains("no memory"));
        assert!(worker.is_protected(&store, SCOPE, T0 + 1).dispatches());
    }

    // --- encoding, rules and keys ---------------------------------------------------

    #[test]
    fn value_encoding_round_trips_in_sixteen_bytes() {
        for until in [0, 1, T0, u64::MAX] {
            let bytes = encode(until);
            assert_eq!(bytes.len(), 16);
            assert_eq!(&bytes[..8], &[1, 0, 0, 0, 0, 0, 0, 0]);
            assert_eq!(decode(&bytes), Some(until));
        }
    }

    #[test]
    fn keys_are_namespaced_with_an_optional_zone() {
        assert_eq!(
            ProtectionRules::default().key("8d2e-route"),
            "kong_retry/protect/8d2e-route"
        );
        let zoned = ProtectionRules::new(30_000, 1_000, Some("retry_state".into())).unwrap();
        assert_eq!(
            zoned.key("api.internal:8080"),
            "retry_state/kong_retry/protect/api.internal:8080"
        );
        let store = MemoryStore::new(CasRule::Kong);
        let mut worker = ProtectionCache::new(zoned);
        worker
            .mark_failure(&store, "api.internal:8080", T0)
            .unwrap();
        assert!(store
            .peek("retry_state/kong_retry/protect/api.internal:8080")
            .is_some());
        assert!(worker
            .is_protected(&store, "api.internal:8080", T0 + 1)
            .dispatches());
    }

    #[test]
    fn defaults_and_bounds() {
        let d = ProtectionRules::default();
        assert_eq!(
            (d.window_ms(), d.cache_ms(), d.zone()),
            (30_000, 1_000, None)
        );
        assert_eq!(ProtectionRules::new(30_000, 1_000, None), Ok(d));
        assert!(ProtectionRules::new(MIN_WINDOW_MS, 0, None).is_ok());
        assert!(ProtectionRules::new(MAX_WINDOW_MS, MAX_CACHE_MS, None).is_ok());
        assert!(ProtectionRules::new(5_000, 5_000, None).is_ok());
    }

    #[test]
    fn bad_rules_name_the_field_and_the_value() {
        let cases = [
            (
                ProtectionRules::new(0, 0, None),
                "adaptive.window: 0 is not allowed",
            ),
            (
                ProtectionRules::new(999, 0, None),
                "adaptive.window: 999 is not allowed",
            ),
            (
                ProtectionRules::new(3_600_001, 1_000, None),
                "adaptive.window: 3600001 is not allowed",
            ),
            (
                ProtectionRules::new(30_000, 60_001, None),
                "adaptive.cache: 60001 is not allowed; expected 0 to 30000",
            ),
            (
                ProtectionRules::new(3_000, 5_000, None),
                "adaptive.cache: 5000 is not allowed; expected 0 to 3000",
            ),
            (
                ProtectionRules::new(30_000, 1_000, Some("a/b".into())),
                "adaptive.zone: \"a/b\" is not allowed",
            ),
            (
                ProtectionRules::new(30_000, 1_000, Some(String::new())),
                "adaptive.zone: \"\" is not allowed",
            ),
        ];
        for (result, message) in cases {
            let err = result.unwrap_err().to_string();
            assert!(err.starts_with(message), "{err}");
        }
    }
}
