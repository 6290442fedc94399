//! The retry budget as one VM uses it: is there a store, which budget a request spends from,
//! and what happens when the store cannot be used.
//!
//! On Kong a shared-data call whose key resolves to no `shm_kv` zone traps (the client gets
//! 500), so nothing here touches shared data before it believes a zone exists:
//! `budget.store = "auto"` looks for the zone in Kong's read-only `kong.configuration.*`
//! properties (an absent key is not-found, never a trap), once per VM.

use super::abi;
use super::root::Host;
use super::store::HostStore;
use crate::budget::{RetryBudget, Verdict};
use crate::config::{BudgetStore, Plan, StoreUnavailable};
use crate::store::StoreError;

/// Whether this VM may use shared data for the budget.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StoreState {
    /// Not decided yet (Kong: the root context found no zone; requests look once more).
    Unchecked,
    Ready,
    /// No store; the text says why, for the one log line.
    Missing(String),
}

/// The budget of one VM (one root context).
pub struct VmBudget {
    root_id: u32,
    budget: Option<RetryBudget>,
    store: BudgetStore,
    zone: String,
    on_unavailable: StoreUnavailable,
    state: StoreState,
    /// The store-unavailable line is written once per VM, not per request.
    warned: bool,
}

impl VmBudget {
    /// No plan yet: every retry allowed, shared data never touched.
    pub fn new(root_id: u32) -> Self {
        VmBudget {
            root_id,
            budget: None,
            store: BudgetStore::None,
            zone: String::new(),
            on_unavailable: StoreUnavailable::Allow,
            state: StoreState::Unchecked,
            warned: false,
        }
    }

    /// Takes the plan's budget (root context, `on_configure`) and, on Kong, looks for the zone.
    pub fn configure(&mut self, plan: &Plan, host: Host) {
        self.budget = match RetryBudget::new(plan.budget_rules()) {
            Ok(b) if plan.budget.enabled => Some(b),
            Ok(_) => None,
            Err(e) => {
                // The config parser bounds every field; this would be a filter bug.
                log::error!("kong_retry [{}]: {e}; retry budget off", self.root_id);
                None
            }
        };
        self.store = plan.budget_store.store;
        self.zone = plan.budget_store.zone.clone();
        self.on_unavailable = plan.budget.on_store_unavailable;
        self.state = StoreState::Unchecked;
        self.warned = false;
        if self.budget.is_some() {
            self.resolve(host, false);
        }
    }

    /// Counts a request that may be retried towards the budget of `scope`.
    pub fn record_request(&mut self, host: Host, scope: &str, now_ms: u64, ctx: u32) {
        if self.budget.is_none() || !self.resolve(host, true) {
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
        host: Host,
        scope: &str,
        now_ms: u64,
        ctx: u32,
        attempt: u32,
    ) -> bool {
        if self.budget.is_none() {
            return true;
        }
        if !self.resolve(host, true) {
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

    /// Is the store usable? Decides once per VM; `in_request` is the last chance to look.
    fn resolve(&mut self, host: Host, in_request: bool) -> bool {
        if self.state == StoreState::Unchecked {
            match self.look(host) {
                Ok(found) => {
                    log::info!(
                        "kong_retry [{}]: retry budget kept in shared data ({found})",
                        self.root_id
                    );
                    self.state = StoreState::Ready;
                }
                // Kong's properties may not answer in the root context: look again in the
                // first request before giving up.
                Err(_) if !in_request => {}
                Err(why) => self.state = StoreState::Missing(why),
            }
        }
        match &self.state {
            StoreState::Ready => true,
            StoreState::Unchecked => false,
            StoreState::Missing(why) => {
                let why = why.clone();
                self.unavailable(why);
                false
            }
        }
    }

    /// Where the store is, or why there is none.
    fn look(&self, host: Host) -> Result<String, String> {
        match (self.store, host) {
            (BudgetStore::None, _) => Err("budget.store is \"none\"".to_string()),
            (BudgetStore::Shm, _) => Ok(format!(
                "zone \"{}\", budget.store \"shm\": not checked",
                self.zone
            )),
            (BudgetStore::Auto, Host::Envoy) => Ok("Envoy".to_string()),
            (BudgetStore::Auto, Host::Kong | Host::Unknown) => {
                // 3.6+ names the zone `nginx_wasm_shm_kv_<zone>`, 3.4/3.5 `nginx_wasm_shm_<zone>`;
                // with neither, a key whose zone is unknown lands in the default `*` zone.
                let named = [
                    format!("nginx_wasm_shm_kv_{}", self.zone),
                    format!("nginx_wasm_shm_{}", self.zone),
                    "nginx_wasm_main_shm_kv".to_string(),
                ];
                for key in &named {
                    if abi::property(&["kong", "configuration", key]).is_some() {
                        return Ok(format!(
                            "zone \"{}\", found as kong.configuration.{key}",
                            self.zone
                        ));
                    }
                }
                Err(format!(
                    "no shm_kv zone \"{0}\" in kong.configuration (add nginx_wasm_shm_kv_{0} to kong.conf; if the zone exists but this Kong does not show its configuration to filters, set budget.store to \"shm\")",
                    self.zone
                ))
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
