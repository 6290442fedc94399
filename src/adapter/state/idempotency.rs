//! Gateway idempotency as one VM keeps it: the `shared` store's records in shared data
//! (claimed and settled synchronously), or the worker's reusable etcd lease for the `etcd`
//! store (whose calls the driver dispatches). A store that cannot be used is said once
//! per VM; each request then follows `on_store_unavailable`.

use super::store::{HostStore, StoreAccess, StoreState};
use crate::adapter::root::Host;
use crate::config::{IdempotencyStore, Plan, StoreUnavailable};
use crate::exchange::{ClaimAnswer, ClaimRequest, SettleRequest};
use crate::state::idempotency::etcd_steps::ReusableLease;
use crate::state::idempotency::{Settled, SharedRecords};

/// The idempotency store of one VM (one root context).
pub struct VmKeys {
    root_id: u32,
    /// `store: shared`: where the records are.
    shared: Option<SharedRecords>,
    on_unavailable: StoreUnavailable,
    /// `store: etcd`: the lease this worker's claims reuse.
    pub lease: Option<ReusableLease>,
    announced: bool,
    warned: bool,
    warned_settle: bool,
}

/// What a synchronous store call did, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreEffect {
    /// Finished records evicted to make room.
    pub evicted: u32,
    /// The store could not be used.
    pub unavailable: bool,
    /// A settle stored the result.
    pub stored: bool,
}

impl StoreEffect {
    /// The store could not be used.
    pub fn unavailable() -> Self {
        StoreEffect {
            unavailable: true,
            ..StoreEffect::default()
        }
    }
}

impl VmKeys {
    /// No plan yet: nothing kept.
    pub fn new(root_id: u32) -> Self {
        VmKeys {
            root_id,
            shared: None,
            on_unavailable: StoreUnavailable::Allow,
            lease: None,
            announced: false,
            warned: false,
            warned_settle: false,
        }
    }

    /// Takes the plan's idempotency settings (root context, `on_configure`).
    pub fn configure(&mut self, plan: &Plan) {
        let c = &plan.idempotency;
        self.shared = None;
        self.lease = None;
        self.announced = false;
        self.warned = false;
        self.warned_settle = false;
        self.on_unavailable = c.on_store_unavailable;
        if !c.enabled || c.store != IdempotencyStore::Shared {
            return;
        }
        match SharedRecords::new(Some(&plan.budget_store.zone), c.shared) {
            Ok(r) => self.shared = Some(r),
            // The config parser checks the zone; this would be a filter bug.
            Err(zone) => log::error!(
                "kong_retry [{}]: idempotency: zone {zone:?} cannot prefix shared-data keys; store unavailable",
                self.root_id
            ),
        }
    }

    /// Does this VM keep records in shared data (so [`StoreAccess`] must look for it)?
    pub fn needs_shared_data(plan: &Plan) -> bool {
        plan.idempotency.enabled && plan.idempotency.store == IdempotencyStore::Shared
    }

    /// Claims a key in the `shared` store.
    pub fn claim_shared(
        &mut self,
        access: &mut StoreAccess,
        host: Host,
        req: &ClaimRequest,
        now_ms: u64,
    ) -> (ClaimAnswer, StoreEffect) {
        let Some(records) = self.usable(access, host) else {
            return (ClaimAnswer::Unavailable, StoreEffect::unavailable());
        };
        let begun = records.begin(
            &HostStore,
            &req.id,
            &req.fingerprint,
            req.owner,
            now_ms,
            req.lock_timeout_ms,
        );
        match begun {
            Ok(begin) => (
                ClaimAnswer::Decided(begin.decision),
                StoreEffect {
                    evicted: begin.evicted,
                    ..StoreEffect::default()
                },
            ),
            Err(e) => {
                self.unavailable(&e.to_string());
                (ClaimAnswer::Unavailable, StoreEffect::unavailable())
            }
        }
    }

    /// Settles a key in the `shared` store. A failure leaves the lock to expire.
    pub fn settle_shared(
        &mut self,
        access: &mut StoreAccess,
        host: Host,
        req: SettleRequest,
        now_ms: u64,
    ) -> StoreEffect {
        let Some(records) = self.usable(access, host) else {
            return StoreEffect::unavailable();
        };
        let stores = matches!(req, SettleRequest::Store { .. });
        let result = match req {
            SettleRequest::Store {
                id,
                owner,
                response,
                expires_at_ms,
            } => records.complete(&HostStore, &id, owner, response, expires_at_ms, now_ms),
            SettleRequest::Release { id, owner } => records.release(&HostStore, &id, owner),
        };
        match result {
            Ok(Settled::Done { evicted }) => StoreEffect {
                evicted,
                stored: stores,
                unavailable: false,
            },
            Ok(Settled::NotOurs | Settled::NoRoom) => StoreEffect::default(),
            Err(e) => {
                self.unsettled(&e.to_string());
                StoreEffect::unavailable()
            }
        }
    }

    /// The records, once shared data is known to be usable.
    fn usable(&mut self, access: &mut StoreAccess, host: Host) -> Option<&SharedRecords> {
        self.shared.as_ref()?;
        match access.resolve(host) {
            StoreState::Ready(found) => {
                if !self.announced {
                    self.announced = true;
                    log::info!(
                        "kong_retry [{}]: idempotency records kept in shared data ({found})",
                        self.root_id
                    );
                }
                self.shared.as_ref()
            }
            StoreState::Unchecked => None,
            StoreState::Missing(why) => {
                let why = why.clone();
                self.unavailable(&why);
                None
            }
        }
    }

    /// Says once per VM that the store cannot be used, and what requests get instead.
    pub fn unavailable(&mut self, why: &str) {
        if self.warned {
            return;
        }
        self.warned = true;
        let then = match self.on_unavailable {
            StoreUnavailable::Allow => "keyed requests go once without the gateway's idempotency (idempotency.on_store_unavailable = \"allow\")",
            StoreUnavailable::Deny => "keyed requests get 503 (idempotency.on_store_unavailable = \"deny\")",
        };
        log::warn!(
            "kong_retry [{}]: idempotency store unavailable: {why}; {then}",
            self.root_id
        );
    }

    /// A key could not be settled: said once per VM.
    pub fn unsettled(&mut self, why: &str) {
        if self.warned_settle {
            return;
        }
        self.warned_settle = true;
        log::warn!(
            "kong_retry [{}]: idempotency store unavailable: a result could not be stored or a key released ({why}); such keys stay locked until lock_timeout (duplicates get 409)",
            self.root_id
        );
    }

    /// The store works again: the next failure is said again.
    pub fn recovered(&mut self) {
        self.warned = false;
        self.warned_settle = false;
    }
}
