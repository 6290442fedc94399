//! Gateway idempotency inside one exchange: which key the request holds, what the store
//! answered, and what becomes of the key when the exchange is over. The decisions
//! themselves (admission, the request and settle rows of the table) are in
//! [`crate::state::idempotency`]; this module turns them into the exchange's messages.

use super::messages::FinalResponse;
use crate::config::{IdempotencyConfig, StoreUnavailable};
use crate::header_map::{first_bytes, Headers};
use crate::request_copy::RequestCopy;
use crate::retry::outcome::Outcome;
use crate::state::idempotency::{
    admit, refusal_answer, settle, Admission, Fingerprint, RecordId, Refusal, RequestDecision,
    Settlement, StoredResponse,
};

/// What the exchange asks the store for before attempt 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    pub id: RecordId,
    pub fingerprint: Fingerprint,
    /// This request's token in the in-flight record: only its owner settles a lock.
    pub owner: u64,
    pub lock_timeout_ms: u64,
}

/// The store's answer to a [`ClaimRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimAnswer {
    /// The record decided (`Proceed`: the key is ours now).
    Decided(RequestDecision),
    /// The store could not answer; `on_store_unavailable` decides.
    Unavailable,
}

/// What the exchange asks the store to do with its key once the exchange is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleRequest {
    /// Store the result, replayed until `expires_at_ms`.
    Store {
        id: RecordId,
        owner: u64,
        response: StoredResponse,
        expires_at_ms: u64,
    },
    /// Free the key at once.
    Release { id: RecordId, owner: u64 },
}

/// Why the exchange answered for the idempotency store instead of the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAnswer {
    /// A stored response replayed.
    Replayed,
    /// 400, 409, 422, 413, 503: see [`Refusal`].
    Refused(Refusal),
}

/// One request's idempotency key, from admission to settlement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGuard {
    id: RecordId,
    owner: u64,
    /// The client's path (with query), fingerprinted with method and body.
    path: String,
    /// The store gave us the key: we must settle it.
    claimed: bool,
}

/// What admission says for a request, before any body is read.
pub enum Admitted {
    /// No guard: the request goes as it would without gateway idempotency.
    Unguarded,
    /// Keyed: a guard to claim once the body is whole.
    Guarded(KeyGuard),
    /// Answered at once (400).
    Refused(Refusal),
}

impl KeyGuard {
    /// Admission for the request whose headers were copied; `scope_id` is the route or
    /// upstream the key lives in, `owner` draws a random token (only for a keyed request).
    pub fn admit(
        config: &IdempotencyConfig,
        key_header: &str,
        copy: &RequestCopy,
        scope_id: &str,
        owner: impl FnOnce() -> u64,
    ) -> Admitted {
        let key = first_bytes(&copy.headers, key_header).map(<[u8]>::trim_ascii);
        match admit(config, &copy.method, key) {
            Admission::NotCovered | Admission::Unkeyed => Admitted::Unguarded,
            Admission::MissingKey => Admitted::Refused(Refusal::MissingKey),
            Admission::BadKey => Admitted::Refused(Refusal::BadKey),
            Admission::Keyed => {
                let consumer = config
                    .consumer_header
                    .as_deref()
                    .and_then(|h| first_bytes(&copy.headers, h))
                    .unwrap_or(&[]);
                Admitted::Guarded(KeyGuard {
                    id: RecordId::new(scope_id, consumer, key.unwrap_or(&[])),
                    owner: owner(),
                    path: copy.path.clone(),
                    claimed: false,
                })
            }
        }
    }

    /// The claim for the request whose body is now whole.
    pub fn claim(&self, config: &IdempotencyConfig, method: &str, body: &[u8]) -> ClaimRequest {
        ClaimRequest {
            id: self.id,
            fingerprint: Fingerprint::of(method, &self.path, body),
            owner: self.owner,
            lock_timeout_ms: config.lock_timeout_ms,
        }
    }

    /// The store answered. `Ok(())`: go on with attempt 1 (`self` is claimed, or the guard
    /// must be dropped when `unguarded` says so); `Err`: answer the client with this.
    pub fn on_claim(
        &mut self,
        answer: ClaimAnswer,
        config: &IdempotencyConfig,
        key_header: &str,
    ) -> Result<Proceed, (KeyAnswer, FinalResponse)> {
        match answer {
            ClaimAnswer::Decided(RequestDecision::Proceed) => {
                self.claimed = true;
                Ok(Proceed::Guarded)
            }
            ClaimAnswer::Decided(RequestDecision::Replay(stored)) => Err((
                KeyAnswer::Replayed,
                FinalResponse {
                    status: stored.status,
                    headers: stored.replay_headers(),
                    body: stored.body,
                },
            )),
            ClaimAnswer::Decided(RequestDecision::Conflict { retry_after_s }) => {
                Err(refused(Refusal::InFlight { retry_after_s }, key_header))
            }
            ClaimAnswer::Decided(RequestDecision::Mismatch) => {
                Err(refused(Refusal::Mismatch, key_header))
            }
            ClaimAnswer::Unavailable => match config.on_store_unavailable {
                StoreUnavailable::Allow => Ok(Proceed::Unguarded),
                StoreUnavailable::Deny => Err(refused(Refusal::StoreUnavailable, key_header)),
            },
        }
    }

    /// Does the store hold our lock (so the end of the exchange must settle it)?
    pub fn claimed(&self) -> bool {
        self.claimed
    }

    /// What to ask the store once the exchange is over. `outcomes`: every attempt's, in
    /// order; `response`: the final response when the exchange has it (`None`: only
    /// failures, or a native response whose body is not read yet — `body_len` then
    /// decides nothing). `attempts_header` is left out of what is stored.
    pub fn settle(
        &self,
        outcomes: &[Outcome],
        response: Option<(u16, &Headers, &[u8])>,
        attempts_header: &str,
        config: &IdempotencyConfig,
        now_ms: u64,
    ) -> Option<SettleRequest> {
        if !self.claimed {
            return None;
        }
        let body_len = response.map_or(0, |(_, _, b)| b.len());
        match settle(outcomes, body_len, config, now_ms) {
            Settlement::Store { expires_at_ms } => {
                let (status, headers, body) = response?;
                let headers: Headers = headers
                    .iter()
                    .filter(|(n, _)| n != attempts_header)
                    .cloned()
                    .collect();
                Some(SettleRequest::Store {
                    id: self.id,
                    owner: self.owner,
                    response: StoredResponse::from_upstream(status, &headers, body),
                    expires_at_ms,
                })
            }
            Settlement::Release => Some(SettleRequest::Release {
                id: self.id,
                owner: self.owner,
            }),
            Settlement::KeepLocked(_) => None,
        }
    }

    /// Would the final outcome be stored (so a native response's body must be read)?
    pub fn stores(&self, outcomes: &[Outcome], config: &IdempotencyConfig) -> bool {
        self.claimed && matches!(settle(outcomes, 0, config, 0), Settlement::Store { .. })
    }
}

/// How attempt 1 goes after the claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proceed {
    /// The key is ours.
    Guarded,
    /// The store is unavailable and `allow` lets the request go once without a key.
    Unguarded,
}

/// The local response for a refusal; `key_header` is named in its detail.
pub fn refused(refusal: Refusal, key_header: &str) -> (KeyAnswer, FinalResponse) {
    let answer = refusal_answer(refusal, key_header);
    (
        KeyAnswer::Refused(refusal),
        FinalResponse {
            status: answer.status,
            headers: answer.headers,
            body: answer.body,
        },
    )
}
