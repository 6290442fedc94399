//! The driver's side of gateway idempotency: it executes the exchange's `Claim` and
//! `Settle` on the configured store. The `shared` store answers at once; the `etcd` store
//! is a sequence of `dispatch_http_call`s (the steps are in
//! [`crate::state::idempotency::etcd_steps`]), sent from the phases where Kong allows a
//! dispatch: request headers, request body, and a call's response.

use super::{Driver, Purpose};
use crate::adapter::abi;
use crate::adapter::state::idempotency::StoreEffect;
use crate::config::{IdempotencyStore, Plan};
use crate::exchange::{ClaimAnswer, ClaimRequest, Event, SettleRequest};
use crate::metrics::Counter;
use crate::state::idempotency::etcd::EtcdCall;
use crate::state::idempotency::etcd_steps::{
    lease_gone, release_call, settled, store_call, ClaimSpec, ClaimStep, EtcdClaim,
};
use crate::state::idempotency::RequestDecision;
use std::time::Duration;

/// Did the store answer at once, or is a call out?
pub(super) enum Step<T> {
    Now(T),
    /// A dispatch is pending; its answer continues the exchange.
    Pending,
}

/// Which etcd sequence a dispatch belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StoreCall {
    Claim,
    /// `stores`: it stores a result (rather than releasing the key), for the metric.
    Settle {
        stores: bool,
    },
}

impl Driver {
    fn plan(&self) -> Option<std::rc::Rc<Plan>> {
        self.shared.plan.borrow().clone()
    }

    /// Claims the request's key.
    pub(super) fn claim(&mut self, req: ClaimRequest) -> Step<ClaimAnswer> {
        let Some(plan) = self.plan() else {
            return Step::Now(ClaimAnswer::Unavailable);
        };
        let now_ms = abi::now_ms();
        match plan.idempotency.store {
            IdempotencyStore::Shared => {
                let (answer, effect) = match (
                    self.shared.keys.try_borrow_mut(),
                    self.shared.store.try_borrow_mut(),
                ) {
                    (Ok(mut keys), Ok(mut access)) => {
                        keys.claim_shared(&mut access, self.host, &req, now_ms)
                    }
                    _ => (ClaimAnswer::Unavailable, StoreEffect::unavailable()),
                };
                self.count_effect(effect.evicted, effect.unavailable, false);
                Step::Now(answer)
            }
            IdempotencyStore::Etcd => {
                let lease = self.shared.keys.borrow().lease;
                let spec = ClaimSpec {
                    prefix: &plan.idempotency.etcd.prefix,
                    id: &req.id,
                    fingerprint: &req.fingerprint,
                    owner: req.owner,
                    now_ms,
                    lock_timeout_ms: req.lock_timeout_ms,
                    ttl_ms: plan.idempotency.ttl_ms,
                };
                let started = EtcdClaim::start(spec, lease);
                let Ok((claim, call)) = started else {
                    return Step::Now(self.store_failed("cannot encode the in-flight record"));
                };
                self.etcd_claim = Some(Box::new(claim));
                if self.send_etcd(&plan, &call, StoreCall::Claim) {
                    Step::Pending
                } else {
                    self.etcd_claim = None;
                    Step::Now(self.store_failed("dispatch to etcd refused"))
                }
            }
        }
    }

    /// Settles the key; a failure leaves the lock to expire (the safe side).
    pub(super) fn settle(&mut self, req: SettleRequest) -> Step<()> {
        let Some(plan) = self.plan() else {
            return Step::Now(());
        };
        match plan.idempotency.store {
            IdempotencyStore::Shared => {
                let effect = match (
                    self.shared.keys.try_borrow_mut(),
                    self.shared.store.try_borrow_mut(),
                ) {
                    (Ok(mut keys), Ok(mut access)) => {
                        keys.settle_shared(&mut access, self.host, req, abi::now_ms())
                    }
                    _ => StoreEffect::unavailable(),
                };
                self.count_effect(effect.evicted, effect.unavailable, effect.stored);
                Step::Now(())
            }
            IdempotencyStore::Etcd => {
                let Some(lock) = self.etcd_lock.as_ref() else {
                    return Step::Now(());
                };
                let stores = matches!(req, SettleRequest::Store { .. });
                let call = match req {
                    SettleRequest::Store {
                        response,
                        expires_at_ms,
                        ..
                    } => match store_call(lock, response, expires_at_ms) {
                        Ok(c) => c,
                        Err(e) => {
                            self.settle_failed(&e.to_string());
                            return Step::Now(());
                        }
                    },
                    SettleRequest::Release { .. } => release_call(lock),
                };
                if self.send_etcd(&plan, &call, StoreCall::Settle { stores }) {
                    Step::Pending
                } else {
                    self.settle_failed("dispatch to etcd refused");
                    Step::Now(())
                }
            }
        }
    }

    /// An etcd answer (`None`: the call failed, or no status came back): the next call of
    /// the sequence, or the event that ends it.
    pub(super) fn on_store_answer(
        &mut self,
        call: StoreCall,
        answer: Option<(u16, Vec<u8>)>,
    ) -> Option<Event> {
        match call {
            StoreCall::Settle { stores } => {
                match answer.as_ref().map(|(status, body)| settled(*status, body)) {
                    Some(Ok(true)) => {
                        if stores {
                            self.shared.metrics.borrow_mut().add(Counter::KeyStored);
                        }
                    }
                    Some(Ok(false)) => log::debug!(
                        "kong_retry [{}]: idempotency: the key was no longer ours; nothing settled",
                        self.id
                    ),
                    Some(Err(e)) => self.settle_failed(&e.to_string()),
                    None => self.settle_failed("no answer from etcd within etcd.timeout"),
                }
                self.etcd_lock = None;
                Some(Event::Settled)
            }
            StoreCall::Claim => {
                let Some(mut claim) = self.etcd_claim.take() else {
                    return Some(Event::Claimed(ClaimAnswer::Unavailable));
                };
                let Some((status, body)) = answer else {
                    return Some(Event::Claimed(
                        self.store_failed("no answer from etcd within etcd.timeout"),
                    ));
                };
                let step = claim.on_answer(status, &body, abi::now_ms());
                if let Some(lease) = claim.granted_lease() {
                    self.shared.keys.borrow_mut().lease = Some(lease);
                }
                match step {
                    Ok(ClaimStep::Call(next)) => {
                        let plan = self.plan()?;
                        self.etcd_claim = Some(claim);
                        if self.send_etcd(&plan, &next, StoreCall::Claim) {
                            return None;
                        }
                        self.etcd_claim = None;
                        Some(Event::Claimed(
                            self.store_failed("dispatch to etcd refused"),
                        ))
                    }
                    Ok(ClaimStep::Done { decision, lock }) => {
                        self.shared.keys.borrow_mut().recovered();
                        if decision == RequestDecision::Proceed {
                            self.etcd_lock = lock;
                        }
                        Some(Event::Claimed(ClaimAnswer::Decided(decision)))
                    }
                    Err(e) => {
                        if lease_gone(&e) {
                            self.shared.keys.borrow_mut().lease = None;
                        }
                        Some(Event::Claimed(self.store_failed(&e.to_string())))
                    }
                }
            }
        }
    }

    /// The store failed: said once per VM, counted, and the request follows
    /// `on_store_unavailable`.
    fn store_failed(&mut self, why: &str) -> ClaimAnswer {
        self.shared.keys.borrow_mut().unavailable(why);
        self.count_effect(0, true, false);
        ClaimAnswer::Unavailable
    }

    /// A settle failed: the key stays locked until its deadline (the safe side), counted
    /// and said once per VM.
    fn settle_failed(&mut self, why: &str) {
        self.shared.keys.borrow_mut().unsettled(why);
        self.count_effect(0, true, false);
    }

    fn count_effect(&self, evicted: u32, unavailable: bool, stored: bool) {
        let mut m = self.shared.metrics.borrow_mut();
        m.add_n(Counter::KeyEvicted, evicted);
        if unavailable {
            m.add(Counter::KeyStoreUnavailable);
        }
        if stored {
            m.add(Counter::KeyStored);
        }
    }

    /// Sends one etcd call to `etcd.endpoint`; false when the host refused it.
    fn send_etcd(&mut self, plan: &Plan, call: &EtcdCall, purpose: StoreCall) -> bool {
        let Some(endpoint) = plan.idempotency.etcd.endpoint.as_ref() else {
            return false;
        };
        let headers = vec![
            (":method", "POST"),
            (":path", call.path),
            (":authority", endpoint.target.as_str()),
            (":scheme", endpoint.scheme.as_str()),
            ("content-type", "application/json"),
        ];
        match proxy_wasm::hostcalls::dispatch_http_call(
            &endpoint.target,
            headers,
            Some(call.body.as_bytes()),
            Vec::new(),
            Duration::from_millis(plan.idempotency.etcd.timeout_ms),
        ) {
            Ok(token) => {
                self.track(token, Purpose::Store(purpose));
                true
            }
            Err(status) => {
                log::warn!(
                    "kong_retry [{}]: dispatch to etcd at {} refused ({status:?})",
                    self.id,
                    endpoint.target
                );
                false
            }
        }
    }
}
