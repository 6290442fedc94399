//! Shared data as the filter may use it: whether this VM may touch it at all
//! ([`StoreAccess`], one decision per VM for the budget and adaptive protection alike), and
//! `SharedStore` over the raw host calls ([`HostStore`]).
//!
//! On Kong a shared-data call whose key resolves to no `shm_kv` zone traps (the client gets
//! 500), so nothing touches shared data before [`StoreAccess`] believes a zone exists:
//! `budget.store = "auto"` looks for the zone in Kong's read-only `kong.configuration.*`
//! properties (an absent key is not-found, never a trap), once per VM.

use crate::adapter::abi::{self, CAS_MISMATCH};
use crate::adapter::root::Host;
use crate::config::{BudgetStore, Plan};
use crate::state::store::{SharedStore, StoreError};

/// Proxy-wide shared data, as the host offers it. Use only when [`StoreAccess`] says so.
pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        abi::get_shared_data(key).map_err(|s| StoreError::Unavailable {
            key: key.to_string(),
            reason: format!("get_shared_data returned status {}", s.0),
        })
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        match abi::set_shared_data(key, value, cas) {
            Ok(()) => Ok(()),
            Err(s) if s.0 == CAS_MISMATCH => Err(StoreError::CasMismatch {
                key: key.to_string(),
            }),
            Err(s) => Err(StoreError::Unavailable {
                key: key.to_string(),
                reason: format!("set_shared_data returned status {}", s.0),
            }),
        }
    }
}

/// No shared data: every call is unavailable, and no host call is made.
pub struct NoStore;

impl SharedStore for NoStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        Err(StoreError::Unavailable {
            key: key.to_string(),
            reason: "no shared-data store".to_string(),
        })
    }

    fn set(&self, key: &str, _value: &[u8], _cas: u32) -> Result<(), StoreError> {
        self.get(key).map(|_| ())
    }
}

/// Whether this VM may use shared data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreState {
    /// Not decided yet: the first request that needs shared data looks.
    Unchecked,
    /// Usable; the text says where it was found, for the one log line.
    Ready(String),
    /// No store; the text says why, for the one log line.
    Missing(String),
}

/// The VM's one decision about shared data (`budget.store`, `budget.zone`).
pub struct StoreAccess {
    store: BudgetStore,
    zone: String,
    state: StoreState,
}

impl StoreAccess {
    /// No plan yet: shared data is never touched.
    pub fn new() -> Self {
        StoreAccess {
            store: BudgetStore::None,
            zone: String::new(),
            state: StoreState::Missing("not configured".to_string()),
        }
    }

    /// Takes the plan's store settings (root context, `on_configure`). Nothing is looked up
    /// here: Kong answers `kong.configuration.*` only inside a request, and logs an error
    /// for every dotted property read in the root context. `needed`: some feature (the
    /// budget, adaptive protection) will use shared data.
    pub fn configure(&mut self, plan: &Plan, needed: bool) {
        self.store = plan.budget_store.store;
        self.zone = plan.budget_store.zone.clone();
        self.state = if needed {
            StoreState::Unchecked
        } else {
            StoreState::Missing("no feature uses shared data".to_string())
        };
    }

    /// Decides once per VM whether shared data is usable. Call it from a request context.
    pub fn resolve(&mut self, host: Host) -> &StoreState {
        if self.state == StoreState::Unchecked {
            self.state = match self.look(host) {
                Ok(found) => StoreState::Ready(found),
                Err(why) => StoreState::Missing(why),
            };
        }
        &self.state
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
}
