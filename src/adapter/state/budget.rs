//! The retry budget as one VM uses it: which budget a request spends from, and what
//! happens when the store cannot be used. Whether there is a store at all is
//! [`StoreAccess`]'s decision (Kong traps on shared data without a zone).

use super::store::{HostStore, StoreAccess, StoreState};
use crate::adapter::root::Host;
use crate::config::{Plan, StoreUnavailable};
use crate::state::budget::{RetryBudget, Verdict};
use crate::state::store::StoreError;

/// The budget of one VM (one root context).
pub struct VmBudget {
    root_id: u32,
    budget: Option<RetryBudget>,
    on_unavailable: StoreUnavailable,
    /// The line saying where the budget is kept is written once per VM.
    announced: bool,
    /// The store-unavailable line is written once per VM, not per request.
    warned: bool,
}

impl VmBudget {
    /// No plan yet: every retry allowed, shared data never touched.
    pub fn new(root_id: u32) -> Self {
        VmBudget {
            root_id,
            budget: None,
            on_unavailable: StoreUnavailable::Allow,
            announced: false,
            warned: false,
        }
    }

    /// Is the budget on? (Then the VM's [`StoreAccess`] should look for the store.)
    pub fn enabled(&self) -> bool {
        self.budget.is_some()
    }

    /// Takes the plan's budget (root context, `on_configure`).
    pub fn configure(&mut self, plan: &Plan) {
        self.budget = match RetryBudget::new(plan.budget_rules()) {
            Ok(b) if plan.budget.enabled => Some(b),
            Ok(_) => None,
            Err(e) => {
                // The config parser bounds every field; this would be a filter bug.
                log::error!("kong_retry [{}]: {e}; retry budget off", self.root_id);
                None
            }
        };
        self.on_unavailable = plan.budget.on_store_unavailable;
        self.announced = false;
        self.warned = false;
    }

    /// Counts a request that may be retried towards the budget of `scope`.
    pub fn record_request(
        &mut self,
        access: &mut StoreAccess,
        host: Host,
        scope: &str,
        now_ms: u64,
        ctx: u32,
    ) {
        if self.budget.is_none() || !self.resolve(access, host) {
            return;
        }
        let Some(budget) = self.budget.as_ref() else {
            return;
        };
        match budget.record_request(&HostStore, scope, now_ms) {
            Ok(()) => {}
            Err(StoreError::CasMismatch { .. }) => log::debug!(
                "kong_retry [{ctx}]: budget deposit dropped (shared data too contended)"
            ),
            Err(e @ StoreError::Unavailable { .. }) => self.unavailable(e.to_string()),
        }
    }

    /// May retry `attempt` of a request of `scope` be spent? A yes is paid for now.
    pub fn allow_retry(
        &mut self,
        access: &mut StoreAccess,
        host: Host,
        scope: &str,
        now_ms: u64,
        ctx: u32,
        attempt: u32,
    ) -> bool {
        if self.budget.is_none() {
            return true;
        }
        if !self.resolve(access, host) {
            return self.on_unavailable == StoreUnavailable::Allow;
        }
        let Some(budget) = self.budget.as_ref() else {
            return true;
        };
        match budget.try_withdraw(&HostStore, scope, now_ms) {
            Verdict::Granted => true,
            Verdict::Denied => {
                log::debug!("kong_retry [{ctx}]: retry {attempt} denied by the retry budget");
                false
            }
            Verdict::StoreUnavailable(e) => {
                self.unavailable(e.to_string());
                self.on_unavailable == StoreUnavailable::Allow
            }
        }
    }

    /// Is the store usable? Says once where the budget is kept, or why it is not.
    fn resolve(&mut self, access: &mut StoreAccess, host: Host) -> bool {
        match access.resolve(host) {
            StoreState::Ready(found) => {
                if !self.announced {
                    self.announced = true;
                    log::info!(
                        "kong_retry [{}]: retry budget kept in shared data ({found})",
                        self.root_id
                    );
                }
                true
            }
            StoreState::Unchecked => false,
            StoreState::Missing(why) => {
                let why = why.clone();
                self.unavailable(why);
                false
            }
        }
    }

    /// Says once per VM that the budget cannot be kept, and what happens instead.
    fn unavailable(&mut self, why: String) {
        if self.warned {
            return;
        }
        self.warned = true;
        let then = match self.on_unavailable {
            StoreUnavailable::Allow => {
                "retries go ahead without a budget (budget.on_store_unavailable = \"allow\")"
            }
            StoreUnavailable::Deny => "no retries (budget.on_store_unavailable = \"deny\")",
        };
        log::warn!(
            "kong_retry [{}]: retry budget store unavailable: {why}; {then}",
            self.root_id
        );
    }
}
