//! The `etcd` store's sequences as small state machines: each answer from etcd gives the
//! next call, or the end. The adapter sends the calls with `dispatch_http_call` and feeds
//! the answers back; nothing here does I/O (the calls and parsers are in [`super::etcd`]).
//!
//! **Leases.** A lease per request would leave etcd with one lease per keyed request for
//! a whole `ttl` (a day, by default). A worker instead reuses one lease for the claims it
//! makes during [`LEASE_REUSE_MS`]; its TTL covers the latest of them until its result
//! expires: `ttl + lock_timeout + LEASE_REUSE_MS`. Records still expire on their own
//! deadline (read by [`super::decision::decide_request`]); the lease only bounds how long
//! etcd keeps them.

use super::decision::RequestDecision;
use super::etcd::{
    claim_outcome, claim_txn, complete_txn, lease_grant, parse_lease_grant, parse_txn, record_key,
    release_txn, take_over_txn, ClaimOutcome, EtcdCall, EtcdError, TxnResult,
};
use super::fingerprint::{Fingerprint, RecordId};
use super::record::{Record, StoredResponse};

/// How long a worker's lease takes new claims, ms.
pub const LEASE_REUSE_MS: u64 = 60_000;
/// Most transactions one claim sends (a vanished or expired record is claimed again).
pub const MAX_CLAIM_ROUNDS: u32 = 4;

/// A worker's lease and until when new claims may use it (host clock, ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReusableLease {
    pub id: i64,
    pub usable_until_ms: u64,
}

/// The lock a claim won: what settling it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdLock {
    pub key: String,
    pub revision: i64,
    pub lease: i64,
    pub fingerprint: Fingerprint,
}

/// What a claim does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimStep {
    /// Send this call and feed its answer to [`EtcdClaim::on_answer`].
    Call(EtcdCall),
    /// Over: the decision, and the lock when it is ours (`Proceed`).
    Done {
        decision: RequestDecision,
        lock: Option<EtcdLock>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Lease,
    Claim,
    TakeOver,
}

/// One claim on etcd.
#[derive(Debug, Clone)]
pub struct EtcdClaim {
    key: String,
    /// The in-flight record.
    value: Vec<u8>,
    fingerprint: Fingerprint,
    lease: Option<i64>,
    lease_ttl_ms: u64,
    /// A lease this claim was granted, for the worker to reuse.
    granted: Option<ReusableLease>,
    pending: Pending,
    rounds: u32,
}

/// What a claim is for.
#[derive(Debug, Clone, Copy)]
pub struct ClaimSpec<'a> {
    pub prefix: &'a str,
    pub id: &'a RecordId,
    pub fingerprint: &'a Fingerprint,
    pub owner: u64,
    pub now_ms: u64,
    pub lock_timeout_ms: u64,
    pub ttl_ms: u64,
}

impl EtcdClaim {
    /// Starts a claim; `lease` is the worker's, if it is still usable at `now_ms`. The
    /// first call is returned with it. `Err`: the record cannot be encoded (never for an
    /// in-flight record).
    pub fn start(
        spec: ClaimSpec<'_>,
        lease: Option<ReusableLease>,
    ) -> Result<(Self, EtcdCall), EtcdError> {
        let value = Record::InFlight {
            fingerprint: *spec.fingerprint,
            owner: spec.owner,
            locked_until_ms: spec.now_ms.saturating_add(spec.lock_timeout_ms),
        }
        .encode()
        .map_err(|e| EtcdError::Field {
            field: "record".to_string(),
            problem: e.to_string(),
        })?;
        let lease = lease
            .filter(|l| l.usable_until_ms > spec.now_ms)
            .map(|l| l.id);
        let lease_ttl_ms = spec
            .ttl_ms
            .saturating_add(spec.lock_timeout_ms)
            .saturating_add(LEASE_REUSE_MS);
        let mut claim = EtcdClaim {
            key: record_key(spec.prefix, spec.id),
            value,
            fingerprint: *spec.fingerprint,
            lease,
            lease_ttl_ms,
            granted: None,
            pending: Pending::Lease,
            rounds: 0,
        };
        let call = claim.first_call();
        Ok((claim, call))
    }

    fn first_call(&mut self) -> EtcdCall {
        match self.lease {
            Some(lease) => {
                self.pending = Pending::Claim;
                claim_txn(&self.key, &self.value, lease)
            }
            None => {
                self.pending = Pending::Lease;
                lease_grant(self.lease_ttl_ms)
            }
        }
    }

    /// A lease granted during this claim, for the worker's next claims.
    pub fn granted_lease(&self) -> Option<ReusableLease> {
        self.granted
    }

    /// Feeds etcd's answer to the pending call.
    pub fn on_answer(
        &mut self,
        status: u16,
        body: &[u8],
        now_ms: u64,
    ) -> Result<ClaimStep, EtcdError> {
        match self.pending {
            Pending::Lease => {
                let lease = parse_lease_grant(status, body)?;
                self.lease = Some(lease.id);
                self.granted = Some(ReusableLease {
                    id: lease.id,
                    usable_until_ms: now_ms.saturating_add(LEASE_REUSE_MS),
                });
                self.pending = Pending::Claim;
                Ok(ClaimStep::Call(claim_txn(&self.key, &self.value, lease.id)))
            }
            Pending::Claim | Pending::TakeOver => {
                let txn = match parse_txn(status, body) {
                    Ok(t) => t,
                    // The worker's lease is gone (revoked, or expired while etcd was
                    // down): take a new one, once.
                    Err(e) if lease_gone(&e) && self.granted.is_none() => {
                        self.lease = None;
                        return Ok(ClaimStep::Call(self.first_call()));
                    }
                    Err(e) => return Err(e),
                };
                self.next_round(txn, now_ms)
            }
        }
    }

    fn next_round(&mut self, txn: TxnResult, now_ms: u64) -> Result<ClaimStep, EtcdError> {
        self.rounds += 1;
        let lease = self.lease.unwrap_or(0);
        let outcome = claim_outcome(txn, &self.fingerprint, now_ms);
        if self.rounds >= MAX_CLAIM_ROUNDS
            && matches!(
                outcome,
                ClaimOutcome::TakeOver { .. } | ClaimOutcome::Vanished
            )
        {
            return Err(EtcdError::Field {
                field: "(claim)".to_string(),
                problem: format!("the key changed under {MAX_CLAIM_ROUNDS} claims in a row"),
            });
        }
        Ok(match outcome {
            ClaimOutcome::Claimed { revision } => ClaimStep::Done {
                decision: RequestDecision::Proceed,
                lock: Some(EtcdLock {
                    key: self.key.clone(),
                    revision,
                    lease,
                    fingerprint: self.fingerprint,
                }),
            },
            ClaimOutcome::Decided(decision) => ClaimStep::Done {
                decision,
                lock: None,
            },
            ClaimOutcome::TakeOver { mod_revision } => {
                self.pending = Pending::TakeOver;
                ClaimStep::Call(take_over_txn(&self.key, mod_revision, &self.value, lease))
            }
            ClaimOutcome::Vanished => {
                self.pending = Pending::Claim;
                ClaimStep::Call(claim_txn(&self.key, &self.value, lease))
            }
        })
    }
}

/// Did etcd refuse a put because its lease does not exist?
pub fn lease_gone(e: &EtcdError) -> bool {
    matches!(e, EtcdError::Status { message, .. } if message.contains("lease not found"))
}

/// The call that stores the result under the lock (same lease). `Err`: the response does
/// not fit the record format (the key then stays locked until its deadline).
pub fn store_call(
    lock: &EtcdLock,
    response: StoredResponse,
    expires_at_ms: u64,
) -> Result<EtcdCall, EtcdError> {
    let value = Record::Completed {
        fingerprint: lock.fingerprint,
        expires_at_ms,
        response,
    }
    .encode()
    .map_err(|e| EtcdError::Field {
        field: "record".to_string(),
        problem: e.to_string(),
    })?;
    Ok(complete_txn(&lock.key, lock.revision, &value, lock.lease))
}

/// The call that frees the key, if it is still our lock.
pub fn release_call(lock: &EtcdLock) -> EtcdCall {
    release_txn(&lock.key, lock.revision)
}

/// Reads a settle's answer: `Ok(true)` written, `Ok(false)` the key was no longer ours.
pub fn settled(status: u16, body: &[u8]) -> Result<bool, EtcdError> {
    Ok(matches!(
        parse_txn(status, body)?,
        TxnResult::Succeeded { .. }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const NOW: u64 = 1_000_000;

    fn spec<'a>(id: &'a RecordId, fp: &'a Fingerprint) -> ClaimSpec<'a> {
        ClaimSpec {
            prefix: "/p/",
            id,
            fingerprint: fp,
            owner: 7,
            now_ms: NOW,
            lock_timeout_ms: 30_000,
            ttl_ms: 86_400_000,
        }
    }

    fn key() -> (RecordId, Fingerprint) {
        (
            RecordId::new("r", b"", b"k"),
            Fingerprint::of("POST", "/", b"x"),
        )
    }

    /// A worker lease that is still usable at `NOW`.
    fn usable_lease() -> ReusableLease {
        ReusableLease {
            id: 5,
            usable_until_ms: NOW + 1,
        }
    }

    fn body(call: &EtcdCall) -> Value {
        serde_json::from_str(&call.body).unwrap()
    }

    fn lease_answer(id: i64) -> Vec<u8> {
        format!(r#"{{"header":{{"revision":"5"}},"ID":"{id}","TTL":"86490"}}"#).into_bytes()
    }

    fn claimed(revision: i64) -> Vec<u8> {
        format!(r#"{{"header":{{"revision":"{revision}"}},"succeeded":true,"responses":[{{}}]}}"#)
            .into_bytes()
    }

    fn held_by(value: &[u8], mod_revision: i64) -> Vec<u8> {
        format!(
            r#"{{"header":{{"revision":"9"}},"responses":[{{"response_range":{{"kvs":[{{"value":"{}","mod_revision":"{mod_revision}"}}],"count":"1"}}}}]}}"#,
            super::super::base64::encode(value)
        )
        .into_bytes()
    }

    #[test]
    fn a_claim_without_a_lease_grants_one_then_claims_and_offers_it_for_reuse() {
        let (id, fp) = key();
        let (mut claim, first) = EtcdClaim::start(spec(&id, &fp), None).unwrap();
        assert_eq!(first.path, "/v3/lease/grant");
        // ttl + lock_timeout + reuse window, in seconds.
        assert_eq!(body(&first)["TTL"], "86490");
        let ClaimStep::Call(txn) = claim.on_answer(200, &lease_answer(42), NOW).unwrap() else {
            panic!("expected the claim transaction");
        };
        assert_eq!(txn.path, "/v3/kv/txn");
        assert_eq!(body(&txn)["success"][0]["requestPut"]["lease"], "42");
        assert_eq!(
            claim.granted_lease(),
            Some(ReusableLease {
                id: 42,
                usable_until_ms: NOW + LEASE_REUSE_MS
            })
        );
        match claim.on_answer(200, &claimed(11), NOW).unwrap() {
            ClaimStep::Done {
                decision: RequestDecision::Proceed,
                lock: Some(lock),
            } => {
                assert_eq!((lock.revision, lock.lease), (11, 42));
                let store = store_call(
                    &lock,
                    StoredResponse {
                        status: 201,
                        headers: vec![],
                        body: b"ok".to_vec(),
                    },
                    NOW + 1,
                )
                .unwrap();
                assert_eq!(body(&store)["compare"][0]["mod_revision"], "11");
                assert_eq!(
                    body(&release_call(&lock))["compare"][0]["mod_revision"],
                    "11"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_usable_lease_is_reused_and_an_expired_one_is_not() {
        let (id, fp) = key();
        let lease = usable_lease();
        let (_, first) = EtcdClaim::start(spec(&id, &fp), Some(lease)).unwrap();
        assert_eq!(first.path, "/v3/kv/txn");
        let old = ReusableLease {
            usable_until_ms: NOW,
            ..lease
        };
        let (_, first) = EtcdClaim::start(spec(&id, &fp), Some(old)).unwrap();
        assert_eq!(first.path, "/v3/lease/grant");
    }

    #[test]
    fn a_lost_lease_is_replaced_once() {
        let (id, fp) = key();
        let lease = usable_lease();
        let (mut claim, _) = EtcdClaim::start(spec(&id, &fp), Some(lease)).unwrap();
        let gone = br#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#;
        let ClaimStep::Call(grant) = claim.on_answer(404, gone, NOW).unwrap() else {
            panic!()
        };
        assert_eq!(grant.path, "/v3/lease/grant");
        claim.on_answer(200, &lease_answer(6), NOW).unwrap();
        assert!(claim.on_answer(404, gone, NOW).is_err());
    }

    #[test]
    fn an_existing_record_decides_and_an_expired_one_is_taken_over() {
        let (id, fp) = key();
        let lease = usable_lease();
        let live = Record::InFlight {
            fingerprint: fp,
            owner: 1,
            locked_until_ms: NOW + 3_000,
        }
        .encode()
        .unwrap();
        let (mut claim, _) = EtcdClaim::start(spec(&id, &fp), Some(lease)).unwrap();
        assert_eq!(
            claim.on_answer(200, &held_by(&live, 8), NOW).unwrap(),
            ClaimStep::Done {
                decision: RequestDecision::Conflict { retry_after_s: 3 },
                lock: None
            }
        );
        let expired = Record::InFlight {
            fingerprint: fp,
            owner: 1,
            locked_until_ms: NOW - 1,
        }
        .encode()
        .unwrap();
        let (mut claim, _) = EtcdClaim::start(spec(&id, &fp), Some(lease)).unwrap();
        let ClaimStep::Call(take) = claim.on_answer(200, &held_by(&expired, 8), NOW).unwrap()
        else {
            panic!()
        };
        assert_eq!(body(&take)["compare"][0]["mod_revision"], "8");
        // Others keep taking the key over: the claim gives up, bounded.
        let mut last = Ok(ClaimStep::Call(take));
        for _ in 0..MAX_CLAIM_ROUNDS {
            last = claim.on_answer(200, &held_by(&expired, 8), NOW);
        }
        assert!(last.is_err());
        assert!(settled(200, &claimed(3)).unwrap());
        assert!(!settled(200, &held_by(&expired, 8)).unwrap());
    }
}
