//! The worst-case numbers a notice quotes, as a pure function of a parsed [`Plan`].
//!
//! Upper bounds, deliberately: the notice tells API consumers how long they may have to wait,
//! so every term is its largest possible value.
//!
//! - An attempt lasts at most `per_try_timeout`.
//! - The wait before retry `n` is at most the backoff ceiling for `n`: exponential
//!   `min(max_interval, base_interval * 2^(n-1))`, or the fixed `interval`; and at least its
//!   floor (`kong_retry::retry::backoff::floor_ms`): 0 with full jitter, half the ceiling with
//!   equal jitter, the interval when fixed. The floors are what a request is sure to wait, so
//!   they (not the ceilings) decide how many timed-out attempts fit before the deadline.
//! - If `retry_on` holds 429 or 503 and `retry_after_max > 0`, such a response's `Retry-After`
//!   is honoured up to `retry_after_max`, so any wait may stretch to that — but only while the
//!   wait and one more attempt of `per_try_timeout` fit before `deadline` (`time_for_attempt`
//!   in src/exchange/mod.rs), which caps how many full-length waits one request can get
//!   ([`full_retry_after_waits`]).
//! - The filter never starts an attempt that cannot finish before `deadline`, so a request
//!   never takes longer than `deadline` at the gateway: the longest is
//!   `min(deadline, sum of attempts and waits)`.
//! - On Kong, waiting needs `delay_endpoint` (Kong offers a filter no per-request timer); without
//!   it the filter retries at once without backoff, and a response whose `Retry-After` asks for
//!   a wait is passed on unretried (`StopReason::CannotWait` in src/exchange.rs).

use kong_retry::config::{Mode, Plan};
use kong_retry::retry::backoff::{ceiling_ms, floor_ms};

/// Where a configuration runs, as far as the input tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// A kong.yml: Kong's rules apply.
    Kong,
    /// A bare filter config: Kong or Envoy.
    Unknown,
}

/// Whether the filter can wait between attempts: everywhere except on Kong without a
/// `delay_endpoint` (response mode is Envoy's, where the root context's tick waits).
pub fn waits_possible(plan: &Plan, host: Host) -> bool {
    let kong_like = match plan.mode {
        Mode::Response => false,
        // Adaptive mode retries in dispatch mode on Kong.
        Mode::Auto | Mode::Dispatch | Mode::Adaptive => true,
    };
    !(host == Host::Kong && kong_like && plan.delay_endpoint.is_none())
}

/// What a notice says about time for one filter configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// Attempts in total: the first plus `retries`.
    pub attempts: u32,
    /// The filter can wait between attempts (see [`waits_possible`]); if not, waits are 0.
    pub waits_possible: bool,
    /// `per_try_timeout`, ms.
    pub per_try_timeout_ms: u64,
    /// The longest wait before each retry from backoff alone, ms (index 0: before retry 1).
    pub backoff_ceilings_ms: Vec<u64>,
    /// The shortest wait before each retry, ms (index 0: before retry 1): 0 with full jitter.
    pub backoff_floors_ms: Vec<u64>,
    /// `Some(retry_after_max)` when a `Retry-After` can stretch a wait (429/503 retried).
    pub retry_after_cap_ms: Option<u64>,
    /// Sum of the longest waits between attempts, ms.
    pub waits_ms: u64,
    /// All attempts at their timeout plus all waits at their longest, ms.
    pub sum_ms: u64,
    /// `deadline`, ms.
    pub deadline_ms: u64,
    /// The longest a request can take at the gateway: `min(deadline, sum)`, ms.
    pub longest_ms: u64,
    /// The deadline, not the sum, sets `longest_ms`.
    pub capped_by_deadline: bool,
    /// Attempts that fit before the deadline when every attempt times out (no attempt starts
    /// that could not finish in time; each wait at its floor: full jitter may wait 0 ms, equal
    /// jitter half its ceiling, fixed its interval).
    pub attempts_if_all_time_out: u32,
}

/// Whether a `Retry-After` can make the gateway wait longer than its backoff.
pub fn retry_after_applies(plan: &Plan) -> bool {
    plan.retry_after_max_ms > 0
        && kong_retry::retry::retry_after::HONOURED_STATUSES
            .iter()
            .any(|&s| plan.retry_on.status(s))
}

/// How many waits of the full `retry_after_max` one request can get, when that is fewer than
/// its retries; `None` when every retry could wait that long, or no `Retry-After` applies.
///
/// The filter starts a wait only if the wait and one more attempt of `per_try_timeout` still
/// end before `deadline`, counted from the request's arrival (src/exchange/mod.rs,
/// `time_for_attempt`). With attempts taking no time at all, `k` full waits need
/// `k * retry_after_max + per_try_timeout <= deadline`: an upper bound, as slower attempts
/// only leave less room.
pub fn full_retry_after_waits(plan: &Plan) -> Option<u32> {
    if !retry_after_applies(plan) {
        return None;
    }
    let room = plan.deadline_ms.saturating_sub(plan.per_try_timeout_ms);
    let fit = room / plan.retry_after_max_ms;
    (fit < u64::from(plan.retries)).then_some(fit as u32)
}

/// Computes the notice's numbers for `plan` running on `host`.
pub fn timing(plan: &Plan, host: Host) -> Timing {
    let attempts = plan.retries.saturating_add(1);
    let can_wait = waits_possible(plan, host);
    let backoff_ceilings_ms: Vec<u64> = (1..=plan.retries)
        .map(|n| ceiling_ms(&plan.backoff, n))
        .collect();
    let backoff_floors_ms: Vec<u64> = (1..=plan.retries)
        .map(|n| floor_ms(&plan.backoff, n))
        .collect();
    let retry_after_cap_ms = retry_after_applies(plan).then_some(plan.retry_after_max_ms);
    let waits_ms = if can_wait {
        backoff_ceilings_ms
            .iter()
            .map(|&b| b.max(retry_after_cap_ms.unwrap_or(0)))
            .fold(0u64, u64::saturating_add)
    } else {
        0
    };
    let sum_ms = plan
        .per_try_timeout_ms
        .saturating_mul(u64::from(attempts))
        .saturating_add(waits_ms);
    let longest_ms = sum_ms.min(plan.deadline_ms);

    // Attempt k (1-based) starts after k-1 timed-out attempts and the shortest waits before
    // retries 1..k-1; it starts only if it can finish by the deadline.
    let mut fit = 0u32;
    let mut waited = 0u64;
    for k in 1..=u64::from(attempts) {
        if k > 1 && can_wait {
            let floor = backoff_floors_ms.get(k as usize - 2).copied().unwrap_or(0);
            waited = waited.saturating_add(floor);
        }
        let end = plan
            .per_try_timeout_ms
            .saturating_mul(k)
            .saturating_add(waited);
        if end > plan.deadline_ms {
            break;
        }
        fit += 1;
    }

    Timing {
        attempts,
        waits_possible: can_wait,
        per_try_timeout_ms: plan.per_try_timeout_ms,
        backoff_ceilings_ms,
        backoff_floors_ms,
        retry_after_cap_ms,
        waits_ms,
        sum_ms,
        deadline_ms: plan.deadline_ms,
        longest_ms,
        capped_by_deadline: sum_ms > plan.deadline_ms,
        // The config guarantees deadline >= per_try_timeout, so the first attempt always fits.
        attempts_if_all_time_out: fit.max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kong_retry::config::parse;

    fn plan(json: &str) -> Plan {
        parse(json.as_bytes()).unwrap()
    }

    fn timing_any(plan: &Plan) -> Timing {
        timing(plan, Host::Unknown)
    }

    #[test]
    fn defaults() {
        // retries 2, per_try 2000, deadline 10000, exponential 25/250, retry_on gateway-error
        // (503 included) with retry_after_max 10000.
        assert_eq!(
            timing_any(&Plan::default()),
            Timing {
                attempts: 3,
                waits_possible: true,
                per_try_timeout_ms: 2_000,
                backoff_ceilings_ms: vec![25, 50],
                backoff_floors_ms: vec![0, 0],
                retry_after_cap_ms: Some(10_000),
                waits_ms: 20_000,
                sum_ms: 26_000,
                deadline_ms: 10_000,
                longest_ms: 10_000,
                capped_by_deadline: true,
                attempts_if_all_time_out: 3,
            }
        );
    }

    #[test]
    fn backoff_only_sum_below_deadline() {
        // 3 retries, no 429/503 in retry_on: waits 100 + 200 + 400, attempts 4 x 2000.
        let t = timing_any(&plan(
            r#"{"retries":3,"retry_on":"502,504,timeout","per_try_timeout":2000,
                "deadline":10000,"backoff":{"base_interval":100,"max_interval":1000}}"#,
        ));
        assert_eq!(
            t,
            Timing {
                attempts: 4,
                waits_possible: true,
                per_try_timeout_ms: 2_000,
                backoff_ceilings_ms: vec![100, 200, 400],
                backoff_floors_ms: vec![0, 0, 0],
                retry_after_cap_ms: None,
                waits_ms: 700,
                sum_ms: 8_700,
                deadline_ms: 10_000,
                longest_ms: 8_700,
                capped_by_deadline: false,
                attempts_if_all_time_out: 4,
            }
        );
    }

    #[test]
    fn exponential_ceiling_caps_at_max_interval() {
        let t = timing_any(&plan(
            r#"{"retries":6,"retry_on":"502","per_try_timeout":100,"deadline":60000,
                "backoff":{"base_interval":100,"max_interval":1000}}"#,
        ));
        assert_eq!(t.backoff_ceilings_ms, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(t.waits_ms, 3_500);
        assert_eq!(t.sum_ms, 7 * 100 + 3_500);
        assert_eq!(t.longest_ms, 4_200);
    }

    #[test]
    fn fixed_backoff_and_deadline_limit_attempts() {
        // 4 retries, fixed 5000: if every attempt times out, 2000 + 5000 + 2000 = 9000 fits in
        // 10000, a third attempt would end at 16000.
        let t = timing_any(&plan(
            r#"{"retries":4,"retry_on":"502","per_try_timeout":2000,"deadline":10000,
                "backoff":{"strategy":"fixed","interval":5000}}"#,
        ));
        assert_eq!(
            t,
            Timing {
                attempts: 5,
                waits_possible: true,
                per_try_timeout_ms: 2_000,
                backoff_ceilings_ms: vec![5000; 4],
                backoff_floors_ms: vec![5000; 4],
                retry_after_cap_ms: None,
                waits_ms: 20_000,
                sum_ms: 30_000,
                deadline_ms: 10_000,
                longest_ms: 10_000,
                capped_by_deadline: true,
                attempts_if_all_time_out: 2,
            }
        );
    }

    #[test]
    fn deadline_limits_timed_out_attempts_with_jitter() {
        // Full jitter may wait 0 ms: 10000 / 3000 -> 3 attempts fit.
        let t = timing_any(&plan(
            r#"{"retries":5,"per_try_timeout":3000,"deadline":10000,"retry_on":"timeout"}"#,
        ));
        assert_eq!(t.attempts, 6);
        assert_eq!(t.attempts_if_all_time_out, 3);
        assert_eq!(t.longest_ms, 10_000);
    }

    #[test]
    fn equal_jitter_floors_are_half_the_ceilings_and_decide_what_fits() {
        // The shipped schedule (kong/kong.yml): 5 retries, equal jitter 300/1200, 2 s per
        // try, 10 s deadline; 502/504 only, so no Retry-After stretches the waits.
        let t = timing_any(&plan(
            r#"{"retries":5,"retry_on":"502,504,timeout","per_try_timeout":2000,
                "deadline":10000,"backoff":{"base_interval":300,"max_interval":1200,
                "jitter":"equal"}}"#,
        ));
        assert_eq!(t.backoff_ceilings_ms, vec![300, 600, 1200, 1200, 1200]);
        assert_eq!(t.backoff_floors_ms, vec![150, 300, 600, 600, 600]);
        assert_eq!(t.waits_ms, 4_500);
        assert_eq!(t.sum_ms, 6 * 2_000 + 4_500);
        assert_eq!(t.longest_ms, 10_000);
        // All timed out, shortest waits: 4 x 2 s + 150 + 300 + 600 = 9.05 s fits; a fifth
        // attempt would end at 11.65 s.
        assert_eq!(t.attempts_if_all_time_out, 4);
        // Full jitter on the same ceilings may wait 0 ms: 5 attempts of 2 s fit.
        let full = timing_any(&plan(
            r#"{"retries":5,"retry_on":"502,504,timeout","per_try_timeout":2000,
                "deadline":10000,"backoff":{"base_interval":300,"max_interval":1200}}"#,
        ));
        assert_eq!(full.backoff_floors_ms, vec![0; 5]);
        assert_eq!(full.attempts_if_all_time_out, 5);
    }

    #[test]
    fn retry_after_needs_429_or_503_and_a_cap() {
        let t = timing_any(&plan(r#"{"retry_on":"429","retry_after_max":3000}"#));
        assert_eq!(t.retry_after_cap_ms, Some(3_000));
        // 3 attempts x 2000 + 2 waits x max(backoff, 3000).
        assert_eq!(t.sum_ms, 12_000);
        assert_eq!(t.longest_ms, 10_000);
        let t = timing_any(&plan(r#"{"retry_on":"503","retry_after_max":0}"#));
        assert_eq!(t.retry_after_cap_ms, None);
        assert_eq!(t.sum_ms, 6_000 + 25 + 50);
        let t = timing_any(&plan(
            r#"{"retry_on":"502,504,reset","retry_after_max":9000}"#,
        ));
        assert_eq!(t.retry_after_cap_ms, None);
    }

    #[test]
    fn full_retry_after_waits_are_bounded_by_the_deadline() {
        // kong/kong.yml's numbers: (10 s - 2 s) / 5 s -> one full wait of 3 retries.
        let p =
            plan(r#"{"retries":3,"per_try_timeout":2000,"deadline":10000,"retry_after_max":5000}"#);
        assert_eq!(full_retry_after_waits(&p), Some(1));
        // Defaults: a 10 s Retry-After never fits a 10 s deadline with a 2 s attempt after it.
        assert_eq!(full_retry_after_waits(&Plan::default()), Some(0));
        // (20 s - 1.5 s) / 3 s = 6 full waits >= 4 retries: every retry may wait in full.
        let p =
            plan(r#"{"retries":4,"per_try_timeout":1500,"deadline":20000,"retry_after_max":3000}"#);
        assert_eq!(full_retry_after_waits(&p), None);
        // Exactly at the edge: 2 x 4 s + 2 s = 10 s fits.
        let p =
            plan(r#"{"retries":3,"per_try_timeout":2000,"deadline":10000,"retry_after_max":4000}"#);
        assert_eq!(full_retry_after_waits(&p), Some(2));
        // No Retry-After honoured: nothing to say.
        let p = plan(r#"{"retries":3,"retry_on":"502,timeout","retry_after_max":5000}"#);
        assert_eq!(full_retry_after_waits(&p), None);
        assert_eq!(
            full_retry_after_waits(&plan(r#"{"retries":3,"retry_after_max":0}"#)),
            None
        );
    }

    #[test]
    fn no_retries() {
        let t = timing_any(&plan(
            r#"{"retries":0,"per_try_timeout":1500,"deadline":1500}"#,
        ));
        assert_eq!(t.attempts, 1);
        assert!(t.backoff_ceilings_ms.is_empty());
        assert_eq!(t.waits_ms, 0);
        assert_eq!(t.sum_ms, 1_500);
        assert_eq!(t.longest_ms, 1_500);
        assert!(!t.capped_by_deadline);
        assert_eq!(t.attempts_if_all_time_out, 1);
    }

    #[test]
    fn kong_without_delay_endpoint_cannot_wait() {
        // kong/kong.yml's numbers: 3 retries, 2 s per try, 10 s deadline, Retry-After <= 5 s.
        let fields = r#""retries":3,"per_try_timeout":2000,"deadline":10000,"retry_after_max":5000,
            "backoff":{"base_interval":100,"max_interval":1000}"#;
        let json = format!("{{{fields}}}");
        let without = timing(&plan(&json), Host::Kong);
        assert!(!without.waits_possible);
        assert_eq!(without.waits_ms, 0);
        assert_eq!(without.sum_ms, 8_000);
        assert_eq!(without.longest_ms, 8_000);
        assert!(!without.capped_by_deadline);
        // The configured ceilings are still reported (the text says they are not used).
        assert_eq!(without.backoff_ceilings_ms, vec![100, 200, 400]);

        let with = format!(r#"{{{fields},"delay_endpoint":"127.0.0.1:8555"}}"#);
        let t = timing(&plan(&with), Host::Kong);
        assert!(t.waits_possible);
        assert_eq!(t.waits_ms, 15_000);
        assert_eq!(t.sum_ms, 23_000);
        assert_eq!(t.longest_ms, 10_000);
        // Same config, host unknown: assume the waits happen (the upper bound).
        assert_eq!(timing(&plan(&json), Host::Unknown).waits_ms, 15_000);
        // Response mode is Envoy's: its tick waits, whatever the input says.
        assert!(waits_possible(&plan(r#"{"mode":"response"}"#), Host::Kong));
    }
}
