//! The filter's counters: Prometheus-style names, and which counters one finished request
//! adds to. Host-independent; the adapter defines and increments them.
//!
//! # Names
//!
//! proxy-wasm metrics have a name and no labels. Kong (ngx_wasm_module) stores a filter's
//! metric `m` as `pw:<filter>:m` and its Prometheus plugin (3.9+, `wasm_metrics: true`)
//! exports it as `pw_<filter>_m`, e.g. `pw_kong_retry_kong_retry_requests_total`; it turns
//! a suffix of the name into labels when the filter's `<filter>.meta.json` declares
//! `metrics.label_patterns` (kong/plugins/prometheus/wasmx.lua). Envoy exports the names as
//! they are (its `wasmcustom` stats namespace).
//!
//! So a label goes at the end of the name as `_<label>_<value>` with a value of `[0-9a-z_]`:
//! `kong_retry_retries_by_reason_total_reason_503`. Without label extraction it is still a
//! valid Prometheus name (one series per reason); with the Kong pattern
//! `(_reason_([0-9a-z_]+))$` (or an Envoy `stats_tags` regex of the same shape) it becomes
//! `kong_retry_retries_by_reason_total{reason="503"}`. The unlabelled total of retries is a
//! separate family (`kong_retry_retries_total`), so summing the labelled one never counts a
//! retry twice.

use crate::exchange::{Exchange, KeyAnswer, NativeReason, StopReason};
use crate::retry::outcome::Outcome;
use crate::state::idempotency::Refusal;
use crate::state::protection::Transition;

/// The counters whose names do not depend on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Requests the filter saw (with a configuration), retried or not.
    Requests,
    /// Retries started (attempts after the first), whatever the reason.
    Retries,
    /// Requests that ended with a status below 500 after at least one retry.
    RetrySuccess,
    /// Requests whose next retry the retry budget refused (or the missing store, when
    /// `on_store_unavailable` is `deny`).
    BudgetDenied,
    /// Requests that used all `retries + 1` attempts and still failed.
    Exhausted,
    /// Requests sent once, natively, because their body was too large to copy
    /// (`max_body_bytes`, or on Kong spilled to a file past `client_body_buffer_size`).
    TooLarge,
    /// Adaptive mode: requests that took the native path because their scope was calm.
    CalmRequests,
    /// Adaptive mode: requests handled with retries because their scope was protected (a
    /// recent failure or a maintenance window).
    ProtectedRequests,
    /// Adaptive mode: protection episodes started (a calm scope turned protected by a
    /// failure this gateway saw). Counted by the worker whose write started it; see
    /// `src/state/protection.rs` for the Envoy race that can count one episode twice.
    ProtectionStarted,
    /// Adaptive mode: responses on the calm path that revealed trouble (a retryable status)
    /// and so reached the client as they were: the price of not copying healthy traffic.
    FailuresSeenCalm,
    /// Gateway idempotency: duplicates answered with the stored response.
    KeyReplayed,
    /// Gateway idempotency: duplicates answered 409 (the first is in flight, or its
    /// outcome is unknown).
    KeyConflicts,
    /// Gateway idempotency: a key reused with another method, path or body (422).
    KeyMismatches,
    /// Gateway idempotency: requests refused for their key (400: missing or invalid; 413,
    /// 400: cannot be guarded and `on_store_unavailable` is `deny`).
    KeyRejected,
    /// Gateway idempotency: store calls that failed (down, slow, full), whatever
    /// `on_store_unavailable` then did.
    KeyStoreUnavailable,
    /// Gateway idempotency: results stored for replay.
    KeyStored,
    /// Gateway idempotency: finished records evicted from the `shared` store to make room.
    KeyEvicted,
}

impl Counter {
    /// Every counter, in the order the adapter defines them.
    pub const ALL: [Counter; 17] = [
        Counter::Requests,
        Counter::Retries,
        Counter::RetrySuccess,
        Counter::BudgetDenied,
        Counter::Exhausted,
        Counter::TooLarge,
        Counter::CalmRequests,
        Counter::ProtectedRequests,
        Counter::ProtectionStarted,
        Counter::FailuresSeenCalm,
        Counter::KeyReplayed,
        Counter::KeyConflicts,
        Counter::KeyMismatches,
        Counter::KeyRejected,
        Counter::KeyStoreUnavailable,
        Counter::KeyStored,
        Counter::KeyEvicted,
    ];

    /// Counters that only adaptive mode defines (other modes would export them as zeros
    /// forever).
    pub fn adaptive_only(self) -> bool {
        matches!(
            self,
            Counter::CalmRequests
                | Counter::ProtectedRequests
                | Counter::ProtectionStarted
                | Counter::FailuresSeenCalm
        )
    }

    /// Counters that only gateway idempotency defines.
    pub fn idempotency_only(self) -> bool {
        matches!(
            self,
            Counter::KeyReplayed
                | Counter::KeyConflicts
                | Counter::KeyMismatches
                | Counter::KeyRejected
                | Counter::KeyStoreUnavailable
                | Counter::KeyStored
                | Counter::KeyEvicted
        )
    }

    /// The metric name.
    pub fn name(self) -> &'static str {
        match self {
            Counter::Requests => "kong_retry_requests_total",
            Counter::Retries => "kong_retry_retries_total",
            Counter::RetrySuccess => "kong_retry_retry_success_total",
            Counter::BudgetDenied => "kong_retry_budget_denied_total",
            Counter::Exhausted => "kong_retry_exhausted_total",
            Counter::TooLarge => "kong_retry_too_large_total",
            Counter::CalmRequests => "kong_retry_calm_requests_total",
            Counter::ProtectedRequests => "kong_retry_protected_requests_total",
            Counter::ProtectionStarted => "kong_retry_protection_started_total",
            Counter::FailuresSeenCalm => "kong_retry_failures_seen_calm_total",
            Counter::KeyReplayed => "kong_retry_idempotency_replayed_total",
            Counter::KeyConflicts => "kong_retry_idempotency_conflicts_total",
            Counter::KeyMismatches => "kong_retry_idempotency_mismatches_total",
            Counter::KeyRejected => "kong_retry_idempotency_rejected_total",
            Counter::KeyStoreUnavailable => "kong_retry_idempotency_store_unavailable_total",
            Counter::KeyStored => "kong_retry_idempotency_stored_total",
            Counter::KeyEvicted => "kong_retry_idempotency_evicted_total",
        }
    }

    /// Position in [`Counter::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The family of per-reason retry counters (the label `reason` is appended to the name).
pub const RETRIES_BY_REASON: &str = "kong_retry_retries_by_reason_total";

/// The counter of retries made because the previous attempt ended with `reason`:
/// `kong_retry_retries_by_reason_total_reason_503`, `..._reason_connect_failure`.
pub fn retries_by_reason(reason: Outcome) -> String {
    let value: String = reason
        .label()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{RETRIES_BY_REASON}_reason_{value}")
}

/// The counter a request adds to when it is over (retrying stopped, or it went natively),
/// if any. Each request is over once; the adapter calls this at that moment.
pub fn on_finish(exchange: &Exchange) -> Option<Counter> {
    match exchange.native_reason() {
        Some(NativeReason::BodyTooLarge | NativeReason::BodyUnreadable) => Some(Counter::TooLarge),
        Some(_) => None,
        None => match exchange.stop_reason() {
            Some(StopReason::Budget) => Some(Counter::BudgetDenied),
            Some(StopReason::Key(answer)) => on_key_answer(answer),
            Some(StopReason::Exhausted) => Some(Counter::Exhausted),
            Some(StopReason::Final) if exchange.attempts() >= 2 => match exchange.last_outcome() {
                Some(Outcome::Status(s)) if s < 500 => Some(Counter::RetrySuccess),
                _ => None,
            },
            _ => None,
        },
    }
}

/// The counter a gateway idempotency answer adds to. A 503 for an unavailable store is
/// counted where the store failed (`KeyStoreUnavailable`), with `allow` and `deny` alike.
fn on_key_answer(answer: KeyAnswer) -> Option<Counter> {
    match answer {
        KeyAnswer::Replayed => Some(Counter::KeyReplayed),
        KeyAnswer::Refused(Refusal::InFlight { .. }) => Some(Counter::KeyConflicts),
        KeyAnswer::Refused(Refusal::Mismatch) => Some(Counter::KeyMismatches),
        KeyAnswer::Refused(Refusal::StoreUnavailable) => None,
        KeyAnswer::Refused(
            Refusal::MissingKey | Refusal::BadKey | Refusal::BodyTooLarge | Refusal::HeaderNotText,
        ) => Some(Counter::KeyRejected),
    }
}

/// The counter a [`crate::state::protection::ProtectionCache::mark_failure`] result adds to:
/// only a calm scope turning protected is an event worth a series.
pub fn on_protection(transition: Transition) -> Option<Counter> {
    match transition {
        Transition::Started => Some(Counter::ProtectionStarted),
        Transition::Extended | Transition::Unchanged => None,
    }
}

/// Is this request over (no more attempts will be made for it)?
pub fn finished(exchange: &Exchange) -> bool {
    exchange.native_reason().is_some() || exchange.stop_reason().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, Scheme};
    use crate::exchange::{AttemptResponse, BodyRead, Env, Event, Execution, Target};
    use crate::retry::outcome::Failure;
    use std::rc::Rc;

    struct FixedEnv {
        budget: bool,
    }

    impl Env for FixedEnv {
        fn now_ms(&self) -> u64 {
            1_000_000
        }
        fn random(&mut self) -> u64 {
            0
        }
        fn allow_retry(&mut self, _attempt: u32) -> bool {
            self.budget
        }
    }

    fn exchange(json: &str) -> Exchange {
        Exchange::new(
            Rc::new(parse(json.as_bytes()).unwrap()),
            Execution::Dispatch,
            Target {
                upstream: "b:80".into(),
                scheme: Scheme::Http,
            },
        )
    }

    fn get(x: &mut Exchange, env: &mut FixedEnv, extra: &[(&str, &str)]) {
        let mut headers = vec![
            (":method".to_string(), b"GET".to_vec()),
            (":path".to_string(), b"/".to_vec()),
        ];
        headers.extend(
            extra
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())),
        );
        x.handle(
            Event::RequestHeaders {
                headers,
                path: None,
                authority: None,
            },
            env,
        );
    }

    fn answer(x: &mut Exchange, env: &mut FixedEnv, outcome: Outcome) {
        x.handle(
            Event::AttemptResult(AttemptResponse {
                outcome,
                headers: match outcome {
                    Outcome::Status(s) => vec![(":status".into(), s.to_string().into_bytes())],
                    Outcome::Failed(_) => vec![],
                },
                body: vec![],
            }),
            env,
        );
    }

    const NO_WAIT: &str = r#"{"retries":1,"backoff":{"strategy":"fixed","interval":0}}"#;

    #[test]
    fn names_follow_prometheus_conventions() {
        for c in Counter::ALL {
            let n = c.name();
            assert!(n.starts_with("kong_retry_") && n.ends_with("_total"), "{n}");
            assert!(
                n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{n}"
            );
            assert_eq!(Counter::ALL[c.index()], c);
        }
        let adaptive: Vec<&str> = Counter::ALL
            .iter()
            .filter(|c| c.adaptive_only())
            .map(|c| c.name())
            .collect();
        assert_eq!(
            adaptive,
            [
                "kong_retry_calm_requests_total",
                "kong_retry_protected_requests_total",
                "kong_retry_protection_started_total",
                "kong_retry_failures_seen_calm_total"
            ]
        );
        assert_eq!(
            on_protection(Transition::Started),
            Some(Counter::ProtectionStarted)
        );
        assert_eq!(on_protection(Transition::Extended), None);
        assert_eq!(on_protection(Transition::Unchanged), None);
        assert_eq!(
            retries_by_reason(Outcome::Status(503)),
            "kong_retry_retries_by_reason_total_reason_503"
        );
        assert_eq!(
            retries_by_reason(Outcome::Failed(Failure::ConnectFailure)),
            "kong_retry_retries_by_reason_total_reason_connect_failure"
        );
        assert_eq!(
            retries_by_reason(Outcome::Failed(Failure::Unspecified)),
            "kong_retry_retries_by_reason_total_reason_no_response"
        );
    }

    #[test]
    fn a_request_adds_to_the_counter_of_how_it_ended() {
        let mut env = FixedEnv { budget: true };

        // Success after a retry.
        let mut x = exchange(NO_WAIT);
        get(&mut x, &mut env, &[]);
        assert!(!finished(&x));
        answer(&mut x, &mut env, Outcome::Status(503));
        answer(&mut x, &mut env, Outcome::Status(200));
        assert!(finished(&x));
        assert_eq!(on_finish(&x), Some(Counter::RetrySuccess));

        // Success at once: nothing beyond the request itself.
        let mut x = exchange(NO_WAIT);
        get(&mut x, &mut env, &[]);
        answer(&mut x, &mut env, Outcome::Status(200));
        assert_eq!(on_finish(&x), None);

        // A retry that ends on a 5xx outside retry_on is no success.
        let mut x = exchange(NO_WAIT);
        get(&mut x, &mut env, &[]);
        answer(&mut x, &mut env, Outcome::Status(503));
        answer(&mut x, &mut env, Outcome::Status(500));
        assert_eq!(on_finish(&x), None);

        // Exhausted.
        let mut x = exchange(NO_WAIT);
        get(&mut x, &mut env, &[]);
        answer(&mut x, &mut env, Outcome::Status(503));
        answer(&mut x, &mut env, Outcome::Failed(Failure::Reset));
        assert_eq!(on_finish(&x), Some(Counter::Exhausted));

        // Denied by the budget.
        let mut env = FixedEnv { budget: false };
        let mut x = exchange(NO_WAIT);
        get(&mut x, &mut env, &[]);
        answer(&mut x, &mut env, Outcome::Status(503));
        assert_eq!(on_finish(&x), Some(Counter::BudgetDenied));

        // Too large, announced or found while reading.
        let mut x = exchange(r#"{"max_body_bytes":4}"#);
        get(&mut x, &mut env, &[("content-length", "5")]);
        assert_eq!(on_finish(&x), Some(Counter::TooLarge));
        let mut x = exchange("{}");
        get(&mut x, &mut env, &[("content-length", "9000")]);
        assert!(!finished(&x));
        x.handle(Event::RequestBody(BodyRead::Unreadable), &mut env);
        assert_eq!(on_finish(&x), Some(Counter::TooLarge));

        // Not retryable at all: over at once, no counter.
        let mut x = exchange(r#"{"retries":0}"#);
        get(&mut x, &mut env, &[]);
        assert!(finished(&x));
        assert_eq!(on_finish(&x), None);
    }
}
