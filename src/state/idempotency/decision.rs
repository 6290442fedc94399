//! The semantics table as two pure functions: what to do with a request given the record
//! its key already has ([`decide_request`]), and what to do with the key once the exchange
//! is over ([`settle`]). The table itself is in the module doc of
//! [`crate::state::idempotency`].

use super::fingerprint::Fingerprint;
use super::record::{Record, StoredResponse};
use crate::config::IdempotencyConfig;
use crate::retry::outcome::{Failure, Outcome};

/// Longest idempotency key accepted, bytes (Stripe's limit).
pub const MAX_KEY_LEN: usize = 255;

/// Whether, and how, a request takes part before any store is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Idempotency is off, or the method is not covered: nothing changes.
    NotCovered,
    /// A covered method without the key, and the key is optional: forwarded as today.
    Unkeyed,
    /// A covered method without the key where `required` is set: 400.
    MissingKey,
    /// The key is empty or longer than [`MAX_KEY_LEN`]: 400.
    BadKey,
    /// Keyed: fingerprint the request and ask the store.
    Keyed,
}

/// Decides [`Admission`] from the method and the value of `idempotency_header`.
pub fn admit(config: &IdempotencyConfig, method: &str, key: Option<&[u8]>) -> Admission {
    if !config.covers(method) {
        return Admission::NotCovered;
    }
    match key {
        None if config.required => Admission::MissingKey,
        None => Admission::Unkeyed,
        Some(k) if k.is_empty() || k.len() > MAX_KEY_LEN => Admission::BadKey,
        Some(_) => Admission::Keyed,
    }
}

/// What a keyed request gets, given the record its key has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestDecision {
    /// No live record: claim the key (write an in-flight record), then forward.
    Proceed,
    /// A completed record with the same fingerprint: answer with it.
    Replay(StoredResponse),
    /// A live in-flight record with the same fingerprint: 409, try again after this long.
    Conflict { retry_after_s: u64 },
    /// A live record made by a request with another method, path or body: 422.
    Mismatch,
}

/// The request rows of the table. `existing` is the decoded record (`None` when the key
/// has none, or its value is not a record); time is the host clock in ms.
pub fn decide_request(
    existing: Option<Record>,
    fingerprint: &Fingerprint,
    now_ms: u64,
) -> RequestDecision {
    match existing {
        None => RequestDecision::Proceed,
        Some(record) => {
            let live = match &record {
                Record::InFlight {
                    locked_until_ms, ..
                } => *locked_until_ms > now_ms,
                Record::Completed { expires_at_ms, .. } => *expires_at_ms > now_ms,
            };
            if !live {
                // An expired lock (its holder died or gave up) or an expired result: the
                // key is free again.
                return RequestDecision::Proceed;
            }
            if record.fingerprint() != fingerprint {
                return RequestDecision::Mismatch;
            }
            match record {
                Record::InFlight {
                    locked_until_ms, ..
                } => RequestDecision::Conflict {
                    retry_after_s: retry_after_s(locked_until_ms, now_ms),
                },
                Record::Completed { response, .. } => RequestDecision::Replay(response),
            }
        }
    }
}

/// Whole seconds until `until_ms`, rounded up, at least 1 (`Retry-After` has no fractions).
pub fn retry_after_s(until_ms: u64, now_ms: u64) -> u64 {
    until_ms.saturating_sub(now_ms).div_ceil(1000).max(1)
}

/// What becomes of the key when the exchange is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// The response is the operation's result: store it, replay it until `expires_at_ms`.
    Store { expires_at_ms: u64 },
    /// The outcome proves the request was not applied: free the key now, so that the
    /// client's retry runs for real.
    Release,
    /// Leave the in-flight record alone: duplicates get 409 until the lock expires.
    KeepLocked(LockedBecause),
}

/// Why a key stays locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockedBecause {
    /// A timeout, reset or 504 after the request may have reached the upstream: it may
    /// have been applied, and running it again could apply it twice.
    UnknownOutcome,
    /// A result whose body is larger than `max_response_bytes`.
    TooLarge,
}

/// The settle rows of the table. `attempts` are the outcomes of every attempt in order
/// (the last is the final one); `body_len` is the final response's body size; `now_ms`
/// the host clock.
pub fn settle(
    attempts: &[Outcome],
    body_len: usize,
    config: &IdempotencyConfig,
    now_ms: u64,
) -> Settlement {
    let Some((last, earlier)) = attempts.split_last() else {
        // Nothing was sent.
        return Settlement::Release;
    };
    if is_unknown(last) {
        return Settlement::KeepLocked(LockedBecause::UnknownOutcome);
    }
    if proves_not_applied(last) {
        // An earlier attempt that timed out or was reset may still have been applied.
        return if earlier.iter().any(is_unknown) {
            Settlement::KeepLocked(LockedBecause::UnknownOutcome)
        } else {
            Settlement::Release
        };
    }
    if body_len > config.max_response_bytes {
        return Settlement::KeepLocked(LockedBecause::TooLarge);
    }
    Settlement::Store {
        expires_at_ms: now_ms.saturating_add(config.ttl_ms),
    }
}

/// Does this attempt's outcome prove that the upstream did not apply the request? Only
/// then may a guarded request be sent again, or its key be released: the upstream does
/// not honour keys (that is what gateway idempotency is for).
pub fn proves_not_applied(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Status(s) => matches!(s, 408 | 409 | 425 | 429 | 502 | 503),
        Outcome::Failed(f) => matches!(f, Failure::ConnectFailure | Failure::DispatchRefused),
    }
}

/// Could this attempt have been applied without the gateway learning the result?
fn is_unknown(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Status(s) => *s == 504,
        Outcome::Failed(f) => matches!(f, Failure::Timeout | Failure::Reset | Failure::Unspecified),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::{Failed, Status};

    fn config() -> IdempotencyConfig {
        IdempotencyConfig {
            enabled: true,
            max_response_bytes: 100,
            ttl_ms: 1_000,
            ..IdempotencyConfig::default()
        }
    }

    fn fp(body: &[u8]) -> Fingerprint {
        Fingerprint::of("POST", "/pay", body)
    }

    fn response() -> StoredResponse {
        StoredResponse {
            status: 201,
            headers: vec![],
            body: b"ok".to_vec(),
        }
    }

    fn in_flight(body: &[u8], until: u64) -> Option<Record> {
        Some(Record::InFlight {
            fingerprint: fp(body),
            owner: 1,
            locked_until_ms: until,
        })
    }

    fn completed(body: &[u8], expires: u64) -> Option<Record> {
        Some(Record::Completed {
            fingerprint: fp(body),
            expires_at_ms: expires,
            response: response(),
        })
    }

    #[test]
    fn admission_rows() {
        let mut c = config();
        assert_eq!(admit(&c, "GET", Some(b"k")), Admission::NotCovered);
        assert_eq!(admit(&c, "post", Some(b"k")), Admission::Keyed);
        assert_eq!(admit(&c, "POST", None), Admission::Unkeyed);
        assert_eq!(admit(&c, "POST", Some(b"")), Admission::BadKey);
        assert_eq!(admit(&c, "POST", Some(&[b'k'; 256])), Admission::BadKey);
        assert_eq!(admit(&c, "POST", Some(&[b'k'; 255])), Admission::Keyed);
        c.required = true;
        assert_eq!(admit(&c, "PATCH", None), Admission::MissingKey);
        c.enabled = false;
        assert_eq!(admit(&c, "POST", None), Admission::NotCovered);
    }

    #[test]
    fn first_request_proceeds() {
        assert_eq!(
            decide_request(None, &fp(b"a"), 10),
            RequestDecision::Proceed
        );
    }

    #[test]
    fn duplicate_of_completed_is_replayed() {
        assert_eq!(
            decide_request(completed(b"a", 2_000), &fp(b"a"), 1_999),
            RequestDecision::Replay(response())
        );
    }

    #[test]
    fn duplicate_in_flight_gets_409_with_retry_after_rounded_up() {
        assert_eq!(
            decide_request(in_flight(b"a", 5_001), &fp(b"a"), 1_000),
            RequestDecision::Conflict { retry_after_s: 5 }
        );
        assert_eq!(
            decide_request(in_flight(b"a", 1_001), &fp(b"a"), 1_000),
            RequestDecision::Conflict { retry_after_s: 1 }
        );
    }

    #[test]
    fn same_key_other_payload_is_422_in_flight_or_completed() {
        assert_eq!(
            decide_request(in_flight(b"a", 5_000), &fp(b"b"), 1_000),
            RequestDecision::Mismatch
        );
        assert_eq!(
            decide_request(completed(b"a", 5_000), &fp(b"b"), 1_000),
            RequestDecision::Mismatch
        );
    }

    #[test]
    fn expired_lock_or_result_frees_the_key() {
        assert_eq!(
            decide_request(in_flight(b"a", 1_000), &fp(b"a"), 1_000),
            RequestDecision::Proceed
        );
        assert_eq!(
            decide_request(completed(b"a", 1_000), &fp(b"b"), 1_001),
            RequestDecision::Proceed
        );
    }

    #[test]
    fn results_are_stored_with_ttl() {
        let c = config();
        for last in [200, 201, 204, 301, 400, 404, 422, 500, 501] {
            assert_eq!(
                settle(&[Status(last)], 2, &c, 10),
                Settlement::Store {
                    expires_at_ms: 1_010
                },
                "{last}"
            );
        }
        // A result after a retried 503 is still the result.
        assert_eq!(
            settle(&[Status(503), Status(201)], 2, &c, 0),
            Settlement::Store {
                expires_at_ms: 1_000
            }
        );
    }

    #[test]
    fn proofs_of_not_applied_release() {
        let c = config();
        for last in [
            Status(502),
            Status(503),
            Status(429),
            Status(408),
            Status(409),
            Status(425),
            Failed(Failure::ConnectFailure),
            Failed(Failure::DispatchRefused),
        ] {
            assert_eq!(settle(&[last], 0, &c, 0), Settlement::Release, "{last:?}");
            assert_eq!(
                settle(&[Status(503), last], 0, &c, 0),
                Settlement::Release,
                "{last:?}"
            );
        }
        assert_eq!(settle(&[], 0, &c, 0), Settlement::Release);
    }

    #[test]
    fn unknown_outcomes_keep_the_key_locked() {
        let c = config();
        for last in [
            Status(504),
            Failed(Failure::Timeout),
            Failed(Failure::Reset),
            Failed(Failure::Unspecified),
        ] {
            assert_eq!(
                settle(&[last], 0, &c, 0),
                Settlement::KeepLocked(LockedBecause::UnknownOutcome),
                "{last:?}"
            );
        }
        // An earlier attempt timed out: a final 503 no longer proves anything.
        assert_eq!(
            settle(&[Failed(Failure::Timeout), Status(503)], 0, &c, 0),
            Settlement::KeepLocked(LockedBecause::UnknownOutcome)
        );
        assert_eq!(
            settle(&[Status(504), Failed(Failure::ConnectFailure)], 0, &c, 0),
            Settlement::KeepLocked(LockedBecause::UnknownOutcome)
        );
    }

    #[test]
    fn result_over_max_response_bytes_keeps_the_lock() {
        let c = config();
        assert_eq!(
            settle(&[Status(200)], 101, &c, 0),
            Settlement::KeepLocked(LockedBecause::TooLarge)
        );
        assert!(matches!(
            settle(&[Status(200)], 100, &c, 0),
            Settlement::Store { .. }
        ));
    }
}
