//! Retry budget kept in shared data, so that every worker of a node spends from one
//! budget per scope (route or upstream), and a real outage does not turn every failing
//! request into `retries + 1` upstream calls.
//!
//! # Semantics, and why
//!
//! Finagle/Linkerd semantics (the reference: ratio 0.2, floor 10 retries/s, window 10 s),
//! written as a token bucket so that one small fixed-size value holds the whole state:
//!
//! * every request deposits `percent / 100` of a token;
//! * time deposits `min_retries_per_second` tokens per second (the floor, so that a
//!   quiet route can still retry at all);
//! * every retry withdraws one whole token, **when it is decided** — a retry waiting in
//!   backoff has already paid (Envoy's budget counts only retries in flight, which lets
//!   a backoff queue overcommit it: envoy#30205);
//! * the balance never exceeds `reserve + percent/100 × requests seen in the current or
//!   previous window`, where `reserve = min_retries_per_second × 1 s`. A quiet period
//!   therefore banks one second of the floor, never more: the floor is a rate, so an
//!   outage after a calm spell gets `min_retries_per_second` per second of it, as a fresh
//!   budget does. (A reserve of a whole window, 100 tokens by default, let the first
//!   window of an outage after ten calm seconds spend the bank *and* the refill: 178–184
//!   retries for 100 requests in 6 s on Envoy 1.40, against 90 from a fresh start.)
//!   Deposits still count for a window, as Finagle's window-expiring deposits do;
//! * a fresh budget (new key, evicted key, unreadable value) starts with one second of
//!   the floor, so the first failures after a gateway restart can still be retried.
//!
//! Why a bucket rather than gRPC-style throttling (tokens start full, failures cost,
//! successes refill): gRPC throttling decides from the failure ratio, so at 100 %
//! failure it stops *all* retries, including the ones a rolling upgrade needs, and
//! it never caps the ratio of retries to requests. The issue asks for the ratio cap
//! plus a floor; the bucket gives both and makes the bound easy to state and test.
//!
//! **The bound.** Tokens only enter by deposits and time, a withdrawal needs a whole
//! token, and the balance never goes below zero. So over any stretch of time, from the
//! key's creation or from any later moment, whatever the failure rate and however workers
//! interleave:
//!
//! ```text
//! retries granted ≤ min_retries_per_second × 1 s        (the bank: a fresh start or a calm spell)
//!                 + requests × percent / 100            (those of the stretch and of the window before it)
//!                 + min_retries_per_second × elapsed seconds
//! ```
//!
//! plus one fresh start each time the value is lost (eviction, a malformed value) and,
//! on Envoy only, at most one lost update per worker racing to create the key (Envoy
//! has no create-only write; see [`crate::state::store`]). With no failures nothing is
//! withdrawn.
//!
//! # Cost and the CAS loop
//!
//! [`RetryBudget::record_request`] and a granted [`RetryBudget::try_withdraw`] each cost
//! one read and one compare-and-swap write; a denied withdrawal costs one read and no
//! write. A lost race re-reads and tries again, [`MAX_CAS_ATTEMPTS`] times at most. When
//! the attempts run out a withdrawal is **denied** (contention that heavy means many
//! workers are retrying at once — when the budget matters most; denying is the side
//! that cannot amplify an outage) and a deposit is dropped and reported (which only
//! makes the budget stricter).
//!
//! # Storage
//!
//! Key `kong_retry/budget/<scope-id>`, or `<zone>/kong_retry/budget/<scope-id>` with a
//! zone. On Kong the part before the first `/` names an `shm_kv` zone; when no zone has
//! that name Kong falls back to the default zone `*` (`nginx_wasm_main_shm_kv`), and with
//! neither the host call traps. So without a configured zone, a zone named `kong_retry`
//! is used if the operator defined one. Envoy treats the key as an opaque string.
//!
//! Value: 40 bytes, little-endian, versioned; see [`BudgetState`]. A value of another
//! length or version is treated as a fresh budget and overwritten, never a panic.
//!
//! Time comes from the caller (the host clock, in ms); nothing here reads a clock.

use crate::state::store::{zoned_prefix, SharedStore, StoreError};
use std::fmt;

/// How many read/compare-and-swap rounds one operation may take before giving up.
pub const MAX_CAS_ATTEMPTS: u32 = 8;

/// The key prefix every budget key carries (after the optional zone).
pub const KEY_PREFIX: &str = "kong_retry/budget/";

/// Fixed-point unit: balances are kept in millionths of a retry.
const MICROS_PER_TOKEN: u64 = 1_000_000;
/// The largest accepted `window_ms` (one day); keeps all arithmetic far from overflow.
const MAX_WINDOW_MS: u64 = 86_400_000;
/// The largest accepted `min_retries_per_second`.
const MAX_MIN_RETRIES_PER_SECOND: u32 = 1_000_000;

/// The budget's settings, as plain numbers (the config module maps its JSON onto these).
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetRules {
    /// When false, every retry is granted and the store is never touched.
    pub enabled: bool,
    /// Retries allowed as a percentage of requests, 0 to 100.
    pub percent: f64,
    /// Retries allowed per second regardless of traffic (the floor).
    pub min_retries_per_second: u32,
    /// How far back requests count, in milliseconds; also sizes the reserve.
    pub window_ms: u64,
    /// Kong `shm_kv` zone to keep the budget in (`<zone>/` key prefix); `None` for the default.
    pub zone: Option<String>,
}

impl Default for BudgetRules {
    fn default() -> Self {
        BudgetRules {
            enabled: true,
            percent: 20.0,
            min_retries_per_second: 10,
            window_ms: 10_000,
            zone: None,
        }
    }
}

/// A [`BudgetRules`] value that cannot be used, naming the field and the value.
#[derive(Debug, Clone, PartialEq)]
pub enum BudgetRulesError {
    /// `percent` is not a finite number from 0 to 100.
    Percent(f64),
    /// `min_retries_per_second` is above 1000000.
    MinRetriesPerSecond(u32),
    /// `window_ms` is 0 or longer than a day.
    Window(u64),
    /// `zone` is empty or contains `/`.
    Zone(String),
}

impl fmt::Display for BudgetRulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BudgetRulesError::Percent(value) => write!(
                f,
                "budget.percent: {value} is not allowed; expected a number from 0 to 100"
            ),
            BudgetRulesError::MinRetriesPerSecond(value) => write!(
                f,
                "budget.min_retries_per_second: {value} is not allowed; expected 0 to {MAX_MIN_RETRIES_PER_SECOND}"
            ),
            BudgetRulesError::Window(value) => write!(
                f,
                "budget.window: {value} is not allowed; expected 1 to {MAX_WINDOW_MS} (milliseconds)"
            ),
            BudgetRulesError::Zone(value) => write!(
                f,
                "budget.zone: {value:?} is not allowed; expected a non-empty shm_kv zone name without '/'"
            ),
        }
    }
}

impl std::error::Error for BudgetRulesError {}

/// What [`RetryBudget::try_withdraw`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The retry is paid for; go ahead (after any backoff).
    Granted,
    /// The budget is spent (or too contended); return the failure to the client.
    Denied,
    /// The store could not be used; the filter applies `on_store_unavailable`.
    StoreUnavailable(StoreError),
}

/// The retry budget of one filter configuration; the state lives in a [`SharedStore`].
#[derive(Debug, Clone)]
pub struct RetryBudget {
    rules: BudgetRules,
    /// Micro-tokens one request deposits.
    deposit: u64,
    /// Micro-tokens the floor adds per millisecond.
    refill_per_ms: u64,
    /// Micro-tokens the floor may bank: `min_retries_per_second × 1 s`.
    reserve: u64,
    /// Micro-tokens a fresh budget starts with: one second of the floor (at most the reserve).
    initial: u64,
    /// `<zone>/kong_retry/budget/` or `kong_retry/budget/`.
    key_prefix: String,
}

impl RetryBudget {
    /// Checks `rules` and precomputes the fixed-point rates.
    pub fn new(rules: BudgetRules) -> Result<Self, BudgetRulesError> {
        if !rules.percent.is_finite() || !(0.0..=100.0).contains(&rules.percent) {
            return Err(BudgetRulesError::Percent(rules.percent));
        }
        if rules.min_retries_per_second > MAX_MIN_RETRIES_PER_SECOND {
            return Err(BudgetRulesError::MinRetriesPerSecond(
                rules.min_retries_per_second,
            ));
        }
        if rules.window_ms == 0 || rules.window_ms > MAX_WINDOW_MS {
            return Err(BudgetRulesError::Window(rules.window_ms));
        }
        let key_prefix =
            zoned_prefix(rules.zone.as_deref(), KEY_PREFIX).map_err(BudgetRulesError::Zone)?;
        // percent ≤ 100, so the product is at most 1e6 and the cast is exact enough.
        let deposit = (rules.percent * (MICROS_PER_TOKEN as f64) / 100.0).round() as u64;
        let per_second = u64::from(rules.min_retries_per_second);
        let refill_per_ms = per_second * (MICROS_PER_TOKEN / 1000);
        // One second of the floor, and no more than the window's worth (a window < 1 s).
        let reserve = (per_second * MICROS_PER_TOKEN).min(refill_per_ms * rules.window_ms);
        let initial = reserve;
        Ok(RetryBudget {
            rules,
            deposit,
            refill_per_ms,
            reserve,
            initial,
            key_prefix,
        })
    }

    /// The rules this budget was built from.
    pub fn rules(&self) -> &BudgetRules {
        &self.rules
    }

    /// The shared-data key of the budget for `scope_id` (a route id or an upstream).
    pub fn key(&self, scope_id: &str) -> String {
        format!("{}{scope_id}", self.key_prefix)
    }

    /// Counts one request (a first attempt) towards the budget of `scope_id`.
    ///
    /// An error means the deposit was not recorded; the budget is then only stricter.
    pub fn record_request<S: SharedStore + ?Sized>(
        &self,
        store: &S,
        scope_id: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        if !self.rules.enabled {
            return Ok(());
        }
        self.update(store, &self.key(scope_id), now_ms, |state| {
            state.requests_current = state.requests_current.saturating_add(1);
            state.balance = state
                .balance
                .saturating_add(self.deposit)
                .min(self.cap(state));
            true
        })
        .map(|_| ())
    }

    /// Decides one retry for `scope_id` and, when granted, pays for it now.
    pub fn try_withdraw<S: SharedStore + ?Sized>(
        &self,
        store: &S,
        scope_id: &str,
        now_ms: u64,
    ) -> Verdict {
        if !self.rules.enabled {
            return Verdict::Granted;
        }
        let paid = self.update(store, &self.key(scope_id), now_ms, |state| {
            if state.balance < MICROS_PER_TOKEN {
                return false;
            }
            state.balance -= MICROS_PER_TOKEN;
            true
        });
        match paid {
            Ok(true) => Verdict::Granted,
            Ok(false) | Err(StoreError::CasMismatch { .. }) => Verdict::Denied,
            Err(error @ StoreError::Unavailable { .. }) => Verdict::StoreUnavailable(error),
        }
    }

    /// Read, bring up to `now_ms`, let `change` decide, write with the cas read; retry on
    /// a lost race. Returns whether `change` asked for (and got) a write.
    fn update<S, F>(
        &self,
        store: &S,
        key: &str,
        now_ms: u64,
        mut change: F,
    ) -> Result<bool, StoreError>
    where
        S: SharedStore + ?Sized,
        F: FnMut(&mut BudgetState) -> bool,
    {
        for _ in 0..MAX_CAS_ATTEMPTS {
            // An absent key is written with cas 0: create-only on Kong, a plain write on Envoy.
            let (mut state, cas) = match store.get(key)? {
                Some((bytes, cas)) => (
                    BudgetState::decode(&bytes).unwrap_or_else(|| self.fresh(now_ms)),
                    cas,
                ),
                None => (self.fresh(now_ms), 0),
            };
            self.advance(&mut state, now_ms);
            if !change(&mut state) {
                return Ok(false);
            }
            match store.set(key, &state.encode(), cas) {
                Ok(()) => return Ok(true),
                Err(StoreError::CasMismatch { .. }) => continue,
                Err(error) => return Err(error),
            }
        }
        Err(StoreError::CasMismatch {
            key: key.to_string(),
        })
    }

    fn fresh(&self, now_ms: u64) -> BudgetState {
        BudgetState {
            balance: self.initial,
            last_ms: now_ms,
            window_start_ms: now_ms,
            requests_current: 0,
            requests_previous: 0,
        }
    }

    /// The most the balance may hold: the reserve plus one window of request deposits.
    fn cap(&self, state: &BudgetState) -> u64 {
        let requests = state.requests_current.max(state.requests_previous);
        self.reserve
            .saturating_add(self.deposit.saturating_mul(u64::from(requests)))
    }

    /// Rolls the request windows forward and adds the floor for the time since the last
    /// update, then applies the cap.
    fn advance(&self, state: &mut BudgetState, now_ms: u64) {
        let window = self.rules.window_ms;
        // A host clock stepped back by more than a window would freeze the floor until
        // it caught up; restart the clocks instead (this mints no tokens). A denial does
        // not write, so the restart sticks with the next write (every request writes).
        let horizon = now_ms.saturating_add(window);
        if state.last_ms > horizon || state.window_start_ms > horizon {
            state.last_ms = now_ms;
            state.window_start_ms = now_ms;
        }
        let since_window = now_ms.saturating_sub(state.window_start_ms);
        if since_window >= window {
            let passed = since_window / window;
            state.requests_previous = if passed == 1 {
                state.requests_current
            } else {
                0
            };
            state.requests_current = 0;
            state.window_start_ms = state
                .window_start_ms
                .saturating_add(passed.saturating_mul(window));
        }
        // Workers' clocks interleave a few ms out of order: time before `last_ms` was
        // already paid for, so it adds nothing.
        let elapsed = now_ms.saturating_sub(state.last_ms);
        state.balance = state
            .balance
            .saturating_add(elapsed.saturating_mul(self.refill_per_ms))
            .min(self.cap(state));
        state.last_ms = state.last_ms.max(now_ms);
    }
}

/// The stored value of one budget.
///
/// Layout, version 1, 40 bytes, integers little-endian:
///
/// | bytes | field |
/// |---|---|
/// | 0 | version (1) |
/// | 1..8 | reserved, written as 0 |
/// | 8..16 | balance, micro-tokens (u64) |
/// | 16..24 | time the floor was last added, host ms (u64) |
/// | 24..32 | start of the current request window, host ms (u64) |
/// | 32..36 | requests in the current window (u32) |
/// | 36..40 | requests in the previous window (u32) |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BudgetState {
    balance: u64,
    last_ms: u64,
    window_start_ms: u64,
    requests_current: u32,
    requests_previous: u32,
}

impl BudgetState {
    const VERSION: u8 = 1;
    const LEN: usize = 40;

    fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[0] = Self::VERSION;
        out[8..16].copy_from_slice(&self.balance.to_le_bytes());
        out[16..24].copy_from_slice(&self.last_ms.to_le_bytes());
        out[24..32].copy_from_slice(&self.window_start_ms.to_le_bytes());
        out[32..36].copy_from_slice(&self.requests_current.to_le_bytes());
        out[36..40].copy_from_slice(&self.requests_previous.to_le_bytes());
        out
    }

    /// `None` for anything but a version-1 value of exactly [`Self::LEN`] bytes.
    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::LEN || bytes.first() != Some(&Self::VERSION) {
            return None;
        }
        let u64_at = |at: usize| {
            bytes
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        };
        let u32_at = |at: usize| {
            bytes
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes)
        };
        Some(BudgetState {
            balance: u64_at(8)?,
            last_ms: u64_at(16)?,
            window_start_ms: u64_at(24)?,
            requests_current: u32_at(32)?,
            requests_previous: u32_at(36)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::store::testing::{CasRule, MemoryStore};
    use std::cell::Cell;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    const SCOPE: &str = "route-1";
    const RULES: [CasRule; 2] = [CasRule::Kong, CasRule::Envoy];

    fn budget(rules: BudgetRules) -> RetryBudget {
        RetryBudget::new(rules).unwrap()
    }

    fn state(store: &MemoryStore, b: &RetryBudget) -> BudgetState {
        BudgetState::decode(&store.peek(&b.key(SCOPE)).unwrap().0).unwrap()
    }

    /// Upper bound of the module doc, in micro-tokens, for a budget created at time 0.
    fn bound_micros(b: &RetryBudget, requests: u64, elapsed_ms: u64) -> u64 {
        b.initial + b.deposit * requests + b.refill_per_ms * elapsed_ms
    }

    /// xorshift64*: deterministic failures without a dependency.
    struct Rng(u64);
    impl Rng {
        fn percent(&mut self) -> u32 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as u32 % 100
        }
    }

    /// One traffic pattern for [`simulate`].
    #[derive(Debug, Clone)]
    pub struct Scenario {
        pub budget: BudgetRules,
        pub failure_percent: u32,
        pub retries: u32,
        pub requests: u64,
        pub requests_per_second: u64,
        pub workers: u64,
        pub cas_rule: CasRule,
    }

    impl Scenario {
        pub fn new(failure_percent: u32, budget_on: bool) -> Self {
            Scenario {
                budget: BudgetRules {
                    enabled: budget_on,
                    ..BudgetRules::default()
                },
                failure_percent,
                retries: 3,
                requests: 1000,
                requests_per_second: 100,
                workers: 4,
                cas_rule: CasRule::Kong,
            }
        }
    }

    /// What one simulated run did.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Simulation {
        pub upstream_calls: u64,
        pub retries_granted: u64,
        pub retries_denied: u64,
        pub store_gets: u64,
        pub store_sets: u64,
        pub last_event_ms: u64,
    }

    /// Discrete-event run: requests arrive evenly, are spread over `workers` (each with its
    /// own `RetryBudget`, one shared store), an attempt takes 20 ms, every attempt fails
    /// with `failure_percent` probability, a retry is decided (and paid) when the attempt
    /// fails and starts after a 25 ms backoff. Events of all workers interleave in time.
    pub fn simulate(scenario: &Scenario) -> Simulation {
        const ATTEMPT_MS: u64 = 20;
        const BACKOFF_MS: u64 = 25;
        let store = MemoryStore::new(scenario.cas_rule);
        let budgets: Vec<RetryBudget> = (0..scenario.workers)
            .map(|_| budget(scenario.budget.clone()))
            .collect();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut sim = Simulation::default();
        // (time, sequence, request, attempt); attempt 0 = arrival.
        let mut events = BinaryHeap::new();
        let mut seq = 0u64;
        for request in 0..scenario.requests {
            let at = request * 1000 / scenario.requests_per_second;
            events.push(Reverse((at, seq, request, 0u32)));
            seq += 1;
        }
        while let Some(Reverse((now, _, request, attempt))) = events.pop() {
            sim.last_event_ms = now;
            let worker = &budgets[(request % scenario.workers) as usize];
            if attempt == 0 {
                worker.record_request(&store, SCOPE, now).unwrap();
                sim.upstream_calls += 1;
                events.push(Reverse((now + ATTEMPT_MS, seq, request, 1)));
                seq += 1;
                continue;
            }
            let failed = rng.percent() < scenario.failure_percent;
            if !failed || attempt > scenario.retries {
                continue;
            }
            match worker.try_withdraw(&store, SCOPE, now) {
                Verdict::Granted => {
                    sim.retries_granted += 1;
                    sim.upstream_calls += 1;
                    let next = now + BACKOFF_MS + ATTEMPT_MS;
                    events.push(Reverse((next, seq, request, attempt + 1)));
                    seq += 1;
                }
                Verdict::Denied => sim.retries_denied += 1,
                Verdict::StoreUnavailable(error) => panic!("{error}"),
            }
        }
        sim.store_gets = store.gets();
        sim.store_sets = store.sets();
        sim
    }

    // --- the bound under load -------------------------------------------------------

    #[test]
    fn full_failure_from_several_workers_stays_within_the_formula() {
        for cas_rule in RULES {
            for (requests, rps) in [(1000, 100), (5000, 1000), (200, 10)] {
                let scenario = Scenario {
                    requests,
                    requests_per_second: rps,
                    cas_rule,
                    ..Scenario::new(100, true)
                };
                let sim = simulate(&scenario);
                let b = budget(scenario.budget.clone());
                let bound = bound_micros(&b, requests, sim.last_event_ms);
                let label = format!("{cas_rule:?} {requests} req at {rps}/s: {sim:?}");
                assert!(
                    sim.retries_granted * MICROS_PER_TOKEN <= bound,
                    "over budget: {label}, bound {bound}"
                );
                // Not stingy either: everything deposited is spent but the last fraction.
                assert!(
                    sim.retries_granted + 2 >= bound / MICROS_PER_TOKEN,
                    "under budget: {label}, bound {bound}"
                );
                assert!(sim.retries_denied > 0, "{label}");
            }
        }
    }

    #[test]
    fn no_failures_spend_nothing() {
        let sim = simulate(&Scenario::new(0, true));
        assert_eq!(sim.retries_granted, 0);
        assert_eq!(sim.retries_denied, 0);
        assert_eq!(sim.upstream_calls, 1000);
        // One read and one write per request, nothing else.
        assert_eq!((sim.store_gets, sim.store_sets), (1000, 1000));
    }

    #[test]
    fn low_failure_rates_are_not_limited_and_high_ones_are() {
        // 10 %: expected 111 retries per 1000 requests, well inside 20 % + floor.
        let on = simulate(&Scenario::new(10, true));
        let off = simulate(&Scenario::new(10, false));
        assert_eq!(on.retries_denied, 0, "{on:?}");
        assert_eq!(on.retries_granted, off.retries_granted);
        assert_eq!(
            off.store_gets + off.store_sets,
            0,
            "a disabled budget is free"
        );

        // 50 %: ~875 wanted, the budget allows ~20 % + the floor over the 10 s run.
        let on = simulate(&Scenario::new(50, true));
        let off = simulate(&Scenario::new(50, false));
        let b = budget(BudgetRules::default());
        assert!(on.retries_denied > 0, "{on:?}");
        assert!(on.retries_granted * MICROS_PER_TOKEN <= bound_micros(&b, 1000, on.last_event_ms));
        assert!(
            off.retries_granted > 2 * on.retries_granted,
            "{off:?} vs {on:?}"
        );
    }

    #[test]
    fn retries_waiting_in_backoff_are_already_paid() {
        // 200 requests fail at the same instant; none of their retries has started yet.
        let store = MemoryStore::new(CasRule::Kong);
        let b = budget(BudgetRules::default());
        for _ in 0..200 {
            b.record_request(&store, SCOPE, 0).unwrap();
        }
        let granted = (0..200)
            .filter(|_| b.try_withdraw(&store, SCOPE, 0) == Verdict::Granted)
            .count() as u64;
        // 10 (fresh start) + 200 × 0.2 = 50, no matter how long the backoffs are.
        assert_eq!(granted, 50);
    }

    #[test]
    fn floor_allows_min_retries_per_second_without_traffic_share() {
        let rules = BudgetRules {
            percent: 0.0,
            ..BudgetRules::default()
        };
        let store = MemoryStore::new(CasRule::Kong);
        let b = budget(rules);
        let mut granted = 0;
        // 5 s of a request every 10 ms, all failing, each wanting a retry.
        for t in (0..=5000).step_by(10) {
            b.record_request(&store, SCOPE, t).unwrap();
            if b.try_withdraw(&store, SCOPE, t) == Verdict::Granted {
                granted += 1;
            }
        }
        // 10 at the start + 10/s × 5 s.
        assert_eq!(granted, 60);
    }

    #[test]
    fn window_rollover_caps_what_a_healthy_period_banks() {
        let b = budget(BudgetRules::default());
        let outage_burst = |store: &MemoryStore, at: u64| {
            (0..1000)
                .filter(|_| b.try_withdraw(store, SCOPE, at) == Verdict::Granted)
                .count()
        };

        // 1000 healthy requests over the first 10 s window, then an outage at 10 s:
        // the bank is the reserve (one second of the floor: 10) plus 20 % of that window's
        // 1000 requests.
        let store = MemoryStore::new(CasRule::Kong);
        for i in 0..1000 {
            b.record_request(&store, SCOPE, i * 10).unwrap();
        }
        assert_eq!(outage_burst(&store, 10_000), 210);

        // The same traffic, but the outage starts after two idle windows: the requests
        // have left the window and only the reserve is left.
        let store = MemoryStore::new(CasRule::Kong);
        for i in 0..1000 {
            b.record_request(&store, SCOPE, i * 10).unwrap();
        }
        assert_eq!(outage_burst(&store, 35_000), 10);

        // And an hour of idle time banks no more than the reserve either.
        assert_eq!(outage_burst(&store, 3_600_000), 10);
    }

    #[test]
    fn scopes_are_independent() {
        let store = MemoryStore::new(CasRule::Kong);
        let b = budget(BudgetRules::default());
        for _ in 0..10 {
            assert_eq!(b.try_withdraw(&store, "route-a", 0), Verdict::Granted);
        }
        assert_eq!(b.try_withdraw(&store, "route-a", 0), Verdict::Denied);
        assert_eq!(b.try_withdraw(&store, "route-b", 0), Verdict::Granted);
    }

    // --- host calls and compare-and-swap --------------------------------------------

    #[test]
    fn one_read_and_one_write_per_request_and_per_granted_retry() {
        let store = MemoryStore::new(CasRule::Kong);
        let b = budget(BudgetRules::default());
        b.record_request(&store, SCOPE, 0).unwrap();
        assert_eq!((store.gets(), store.sets()), (1, 1));
        assert_eq!(b.try_withdraw(&store, SCOPE, 0), Verdict::Granted);
        assert_eq!((store.gets(), store.sets()), (2, 2));
        for _ in 0..9 {
            b.try_withdraw(&store, SCOPE, 0);
        }
        // The balance is now 0.2: a denial reads and does not write.
        let (gets, sets) = (store.gets(), store.sets());
        assert_eq!(b.try_withdraw(&store, SCOPE, 0), Verdict::Denied);
        assert_eq!((store.gets(), store.sets()), (gets + 1, sets));
    }

    #[test]
    fn cas_contention_retries_a_bounded_number_of_times() {
        for rule in RULES {
            for k in 0..MAX_CAS_ATTEMPTS {
                let store = MemoryStore::new(rule);
                let b = budget(BudgetRules::default());
                store.fail_next_sets(k);
                assert_eq!(
                    b.try_withdraw(&store, SCOPE, 0),
                    Verdict::Granted,
                    "{rule:?} k={k}"
                );
                assert_eq!(
                    (store.gets(), store.sets()),
                    (u64::from(k) + 1, u64::from(k) + 1)
                );
            }

            // Every attempt lost: the withdrawal is denied after exactly 8 rounds.
            let store = MemoryStore::new(rule);
            let b = budget(BudgetRules::default());
            b.record_request(&store, SCOPE, 0).unwrap();
            let before = state(&store, &b);
            store.fail_next_sets(1000);
            assert_eq!(b.try_withdraw(&store, SCOPE, 0), Verdict::Denied);
            assert_eq!((store.gets(), store.sets()), (9, 9));
            let err = b.record_request(&store, SCOPE, 0).unwrap_err();
            assert_eq!(err, StoreError::CasMismatch { key: b.key(SCOPE) });
            assert_eq!((store.gets(), store.sets()), (17, 17));
            assert_eq!(state(&store, &b), before, "nothing was written");
        }
    }

    /// A store where, right after some reads, another worker completes an operation on
    /// the same key before our write: a real lost race, not a forced error.
    struct RacingStore<'a> {
        inner: &'a MemoryStore,
        rival: &'a RetryBudget,
        races_left: Cell<u32>,
        rival_withdraws: bool,
    }

    impl SharedStore for RacingStore<'_> {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            let read = self.inner.get(key);
            if self.races_left.get() > 0 {
                self.races_left.set(self.races_left.get() - 1);
                if self.rival_withdraws {
                    assert_eq!(
                        self.rival.try_withdraw(self.inner, SCOPE, 0),
                        Verdict::Granted
                    );
                } else {
                    self.rival.record_request(self.inner, SCOPE, 0).unwrap();
                }
            }
            read
        }
        fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn lost_races_lose_no_update_on_either_host() {
        for rule in RULES {
            let store = MemoryStore::new(rule);
            let ours = budget(BudgetRules::default());
            let rival = budget(BudgetRules::default());
            ours.record_request(&store, SCOPE, 0).unwrap(); // the key exists from here on
            let racing = RacingStore {
                inner: &store,
                rival: &rival,
                races_left: Cell::new(3),
                rival_withdraws: false,
            };
            ours.record_request(&racing, SCOPE, 0).unwrap();
            assert_eq!(state(&store, &ours).requests_current, 5, "{rule:?}");

            let racing = RacingStore {
                inner: &store,
                rival: &rival,
                races_left: Cell::new(3),
                rival_withdraws: true,
            };
            assert_eq!(ours.try_withdraw(&racing, SCOPE, 0), Verdict::Granted);
            // 10 + 5 × 0.2 = 11 tokens, 4 withdrawn (3 by the rival, 1 by us).
            assert_eq!(
                state(&store, &ours).balance,
                7 * MICROS_PER_TOKEN,
                "{rule:?}"
            );
        }
    }

    #[test]
    fn creating_the_key_races_safely_on_kong_and_loses_one_update_on_envoy() {
        for (rule, recorded) in [(CasRule::Kong, 2), (CasRule::Envoy, 1)] {
            let store = MemoryStore::new(rule);
            let ours = budget(BudgetRules::default());
            let rival = budget(BudgetRules::default());
            let racing = RacingStore {
                inner: &store,
                rival: &rival,
                races_left: Cell::new(1),
                rival_withdraws: false,
            };
            // We read "absent", the rival creates the key, we write with cas 0.
            ours.record_request(&racing, SCOPE, 0).unwrap();
            assert_eq!(state(&store, &ours).requests_current, recorded, "{rule:?}");
        }
    }

    #[test]
    fn store_unavailable_is_reported_not_decided() {
        let store = MemoryStore::new(CasRule::Kong);
        store.set_unavailable(true);
        let b = budget(BudgetRules::default());
        let err = b.record_request(&store, SCOPE, 0).unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { .. }));
        match b.try_withdraw(&store, SCOPE, 0) {
            Verdict::StoreUnavailable(error) => {
                assert!(
                    error.to_string().contains("kong_retry/budget/route-1"),
                    "{error}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_disabled_budget_grants_without_touching_the_store() {
        let store = MemoryStore::new(CasRule::Kong);
        store.set_unavailable(true);
        let b = budget(BudgetRules {
            enabled: false,
            ..BudgetRules::default()
        });
        b.record_request(&store, SCOPE, 0).unwrap();
        assert_eq!(b.try_withdraw(&store, SCOPE, 0), Verdict::Granted);
        assert_eq!((store.gets(), store.sets()), (0, 0));
    }

    // --- stored values and clocks ---------------------------------------------------

    #[test]
    fn malformed_values_are_a_fresh_budget() {
        let mut wrong_version = BudgetState {
            balance: 99 * MICROS_PER_TOKEN,
            last_ms: 0,
            window_start_ms: 0,
            requests_current: 7,
            requests_previous: 7,
        }
        .encode();
        wrong_version[0] = 2;
        let values: [&[u8]; 6] = [
            b"",
            b"x",
            &[1u8; 39],
            &[1u8; 41],
            &wrong_version,
            b"{\"tokens\":5}",
        ];
        for rule in RULES {
            for value in values {
                let store = MemoryStore::new(rule);
                let b = budget(BudgetRules::default());
                store.put_raw(&b.key(SCOPE), value);
                b.record_request(&store, SCOPE, 500).unwrap();
                let s = state(&store, &b);
                assert_eq!(s.requests_current, 1, "{rule:?} {value:?}");
                assert_eq!(s.balance, 10 * MICROS_PER_TOKEN + 200_000);
                let granted = (0..20)
                    .filter(|_| b.try_withdraw(&store, SCOPE, 500) == Verdict::Granted)
                    .count();
                assert_eq!(granted, 10, "{rule:?} {value:?}");
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let b = budget(BudgetRules::default());
        let store = MemoryStore::new(CasRule::Kong);
        let mut rng = Rng(42);
        for round in 0..5000u64 {
            let len = if round % 2 == 0 {
                40
            } else {
                rng.percent() as usize % 64
            };
            let mut value: Vec<u8> = (0..len).map(|_| (rng.percent() * 7 % 256) as u8).collect();
            if round % 4 == 0 && !value.is_empty() {
                value[0] = 1;
            }
            store.put_raw(&b.key(SCOPE), &value);
            let now = u64::from(rng.percent()) * 1_000_000;
            b.record_request(&store, SCOPE, now).unwrap();
            let _ = b.try_withdraw(&store, SCOPE, now);
            let s = state(&store, &b);
            assert!(s.balance <= b.cap(&s), "round {round}: {s:?}");
        }
    }

    #[test]
    fn extreme_but_well_formed_values_are_clamped() {
        let b = budget(BudgetRules::default());
        let store = MemoryStore::new(CasRule::Kong);
        let extreme = BudgetState {
            balance: u64::MAX,
            last_ms: u64::MAX,
            window_start_ms: u64::MAX,
            requests_current: u32::MAX,
            requests_previous: u32::MAX,
        };
        store.put_raw(&b.key(SCOPE), &extreme.encode());
        b.record_request(&store, SCOPE, 1_000).unwrap();
        let s = state(&store, &b);
        assert!(s.balance <= b.cap(&s));
        assert_eq!(
            (s.last_ms, s.window_start_ms),
            (1_000, 1_000),
            "clocks restarted"
        );
        assert_eq!(b.try_withdraw(&store, SCOPE, u64::MAX), Verdict::Granted);
    }

    #[test]
    fn a_clock_going_backwards_mints_no_tokens() {
        let store = MemoryStore::new(CasRule::Kong);
        let b = budget(BudgetRules {
            percent: 0.0,
            ..BudgetRules::default()
        });
        // Spend the fresh 10 tokens at t = 60 s (one window already lies behind).
        b.record_request(&store, SCOPE, 60_000).unwrap();
        while b.try_withdraw(&store, SCOPE, 60_000) == Verdict::Granted {}
        // Slightly out of order (another worker's clock) and a big step back: nothing.
        assert_eq!(b.try_withdraw(&store, SCOPE, 59_990), Verdict::Denied);
        assert_eq!(b.try_withdraw(&store, SCOPE, 1_000), Verdict::Denied);
        // The next request (which always writes) restarts the clocks; from there the
        // floor runs again on the new clock.
        b.record_request(&store, SCOPE, 1_000).unwrap();
        assert_eq!(b.try_withdraw(&store, SCOPE, 1_000), Verdict::Denied);
        assert_eq!(b.try_withdraw(&store, SCOPE, 1_100), Verdict::Granted);
        assert_eq!(b.try_withdraw(&store, SCOPE, 1_100), Verdict::Denied);
    }

    #[test]
    fn state_encoding_round_trips_in_forty_bytes() {
        let s = BudgetState {
            balance: 123_456_789,
            last_ms: 1_700_000_000_123,
            window_start_ms: 1_700_000_000_000,
            requests_current: 42,
            requests_previous: 4242,
        };
        let bytes = s.encode();
        assert_eq!(bytes.len(), 40);
        assert_eq!(&bytes[..8], &[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(BudgetState::decode(&bytes), Some(s));
    }

    // --- rules and keys -------------------------------------------------------------

    #[test]
    fn keys_are_namespaced_with_an_optional_zone() {
        let b = budget(BudgetRules::default());
        assert_eq!(b.key("8d2e-route"), "kong_retry/budget/8d2e-route");
        let b = budget(BudgetRules {
            zone: Some("retry_budgets".into()),
            ..BudgetRules::default()
        });
        assert_eq!(
            b.key("api.internal:8080"),
            "retry_budgets/kong_retry/budget/api.internal:8080"
        );
    }

    #[test]
    fn bad_rules_name_the_field_and_the_value() {
        let cases = [
            (
                BudgetRules {
                    percent: 120.0,
                    ..BudgetRules::default()
                },
                "budget.percent: 120",
            ),
            (
                BudgetRules {
                    percent: f64::NAN,
                    ..BudgetRules::default()
                },
                "budget.percent: NaN",
            ),
            (
                BudgetRules {
                    percent: -1.0,
                    ..BudgetRules::default()
                },
                "budget.percent: -1",
            ),
            (
                BudgetRules {
                    window_ms: 0,
                    ..BudgetRules::default()
                },
                "budget.window: 0",
            ),
            (
                BudgetRules {
                    min_retries_per_second: 2_000_000,
                    ..BudgetRules::default()
                },
                "budget.min_retries_per_second: 2000000",
            ),
            (
                BudgetRules {
                    zone: Some("a/b".into()),
                    ..BudgetRules::default()
                },
                "budget.zone: \"a/b\"",
            ),
            (
                BudgetRules {
                    zone: Some(String::new()),
                    ..BudgetRules::default()
                },
                "budget.zone: \"\"",
            ),
        ];
        for (rules, message) in cases {
            let err = RetryBudget::new(rules).unwrap_err().to_string();
            assert!(err.starts_with(message), "{err}");
        }
    }

    #[test]
    fn fractional_percent_is_kept_in_micro_tokens() {
        let b = budget(BudgetRules {
            percent: 12.5,
            min_retries_per_second: 0,
            ..BudgetRules::default()
        });
        let store = MemoryStore::new(CasRule::Envoy);
        for _ in 0..8 {
            b.record_request(&store, SCOPE, 0).unwrap();
        }
        assert_eq!(b.try_withdraw(&store, SCOPE, 0), Verdict::Granted);
        assert_eq!(b.try_withdraw(&store, SCOPE, 0), Verdict::Denied);
    }

    // --- the measurement asked for in issue 4 ---------------------------------------

    #[test]
    fn simulation_table() {
        // 10 000 requests per run, reported per 1000: at a constant rate both the ratio
        // and the floor scale with the request count, so only the noise shrinks.
        const REQUESTS: u64 = 10_000;
        let per_thousand = |n: u64| n as f64 * 1000.0 / REQUESTS as f64;
        let mut table = String::from(
            "retries issued per 1000 requests (retries=3, 4 workers, 20 %, 10/s, 10 s window)\n\
             rate     failure  budget off  budget on  denied (on)\n",
        );
        for rps in [100, 1000] {
            for failure in [0, 10, 50, 100] {
                let run = |on: bool| {
                    simulate(&Scenario {
                        requests: REQUESTS,
                        requests_per_second: rps,
                        ..Scenario::new(failure, on)
                    })
                };
                let (off, on) = (run(false), run(true));
                table.push_str(&format!(
                    "{rps:>4}/s  {failure:>6} %  {:>10.1}  {:>9.1}  {:>11.1}\n",
                    per_thousand(off.retries_granted),
                    per_thousand(on.retries_granted),
                    per_thousand(on.retries_denied),
                ));
                if failure == 100 {
                    assert_eq!(off.retries_granted, 3 * REQUESTS);
                }
                assert!(on.retries_granted <= off.retries_granted);
            }
        }
        println!("{table}");
    }
}
