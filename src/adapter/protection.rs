//! Adaptive protection as one VM (one worker) uses it: the worker's [`ProtectionCache`],
//! which store it may read, and the lines logged once.
//!
//! Without shared data (Kong with no detected `shm_kv` zone, or `budget.store: "none"`) the
//! cache runs over [`NoStore`]: no host call at all, and a failure still protects the
//! worker that saw it (the cache keeps what it marked itself); only the other workers do
//! not learn of it, so each worker pays its own revealing response. Maintenance windows
//! never need the store.

use super::root::Host;
use super::store::{HostStore, NoStore, StoreAccess, StoreState};
use crate::config::{Mode, Plan};
use crate::maintenance::MaintenanceSchedule;
use crate::protection::{Protection, ProtectionCache, Transition};
use crate::store::StoreError;

/// The VM's adaptive protection; inert outside adaptive mode.
pub struct VmProtection {
    root_id: u32,
    cache: Option<ProtectionCache>,
    schedule: MaintenanceSchedule,
    /// Inside a maintenance window at the last check (for the start/end log lines).
    in_window: bool,
    /// The no-store line and the store-failure line are written once per VM.
    warned_missing: bool,
    warned_failure: bool,
}

impl VmProtection {
    /// Not in adaptive mode (yet).
    pub fn new(root_id: u32) -> Self {
        VmProtection {
            root_id,
            cache: None,
            schedule: MaintenanceSchedule::default(),
            in_window: false,
            warned_missing: false,
            warned_failure: false,
        }
    }

    /// Is adaptive mode on? (Then the VM's [`StoreAccess`] should look for the store.)
    pub fn enabled(&self) -> bool {
        self.cache.is_some()
    }

    /// Takes the plan (root context, `on_configure`): a fresh cache in adaptive mode.
    pub fn configure(&mut self, plan: &Plan) {
        self.cache =
            (plan.mode == Mode::Adaptive).then(|| ProtectionCache::new(plan.protection_rules()));
        self.schedule = plan.maintenance_windows.clone();
        self.in_window = false;
        self.warned_missing = false;
        self.warned_failure = false;
    }

    /// Is `scope` calm, scheduled or protected now? At most one shared-data read.
    pub fn check(
        &mut self,
        access: &mut StoreAccess,
        host: Host,
        scope: &str,
        now_ms: u64,
        ctx: u32,
    ) -> Protection {
        if !self.schedule.is_empty() {
            self.note_window(now_ms, ctx);
        }
        let ready = self.store_ready(access, host);
        let Some(cache) = self.cache.as_mut() else {
            return Protection::Calm;
        };
        let answer = if ready {
            cache.check(&self.schedule, &HostStore, scope, now_ms)
        } else {
            cache.check(&self.schedule, &NoStore, scope, now_ms)
        };
        if answer == Protection::StoreUnavailable && ready {
            self.store_failed(&StoreError::Unavailable {
                key: scope.to_string(),
                reason: "the protection flag could not be read".to_string(),
            });
        }
        answer
    }

    /// Records a retryable outcome for `scope`; `Some(Started)` when it turned a calm scope
    /// protected (for the metric).
    pub fn mark_failure(
        &mut self,
        access: &mut StoreAccess,
        host: Host,
        scope: &str,
        now_ms: u64,
    ) -> Option<Transition> {
        let ready = self.store_ready(access, host);
        let cache = self.cache.as_mut()?;
        let result = if ready {
            cache.mark_failure(&HostStore, scope, now_ms)
        } else {
            // What this worker knew before (no host call): only then is this a start.
            let known = cache.is_protected(&NoStore, scope, now_ms);
            let _ = cache.mark_failure(&NoStore, scope, now_ms);
            return Some(match known {
                Protection::Protected { .. } => Transition::Unchanged,
                _ => Transition::Started,
            });
        };
        match result {
            Ok(t) => Some(t),
            // Lost races: the rivals wrote; this worker protects anyway.
            Err(StoreError::CasMismatch { .. }) => Some(Transition::Unchanged),
            Err(e) => {
                self.store_failed(&e);
                None
            }
        }
    }

    /// May this VM use shared data? Says once what happens when it may not.
    fn store_ready(&mut self, access: &mut StoreAccess, host: Host) -> bool {
        match access.resolve(host, true) {
            StoreState::Ready(_) => true,
            StoreState::Unchecked => false,
            StoreState::Missing(why) => {
                if !self.warned_missing {
                    self.warned_missing = true;
                    log::warn!(
                        "kong_retry [{}]: adaptive protection without shared data: {why}; each worker protects on the failures it sees itself, the others do not learn of them",
                        self.root_id
                    );
                }
                false
            }
        }
    }

    fn store_failed(&mut self, e: &StoreError) {
        if !self.warned_failure {
            self.warned_failure = true;
            log::warn!(
                "kong_retry [{}]: adaptive protection store unavailable: {e}; this worker protects on what it sees itself",
                self.root_id
            );
        }
    }

    /// Logs when a maintenance window starts or ends, as this worker sees it.
    fn note_window(&mut self, now_ms: u64, ctx: u32) {
        let window = self.schedule.window_at(now_ms);
        match (window, self.in_window) {
            (Some(w), false) => {
                self.in_window = true;
                log::info!(
                    "kong_retry [{ctx}]: maintenance window {w}: requests are protected (retries on)"
                );
            }
            (None, true) => {
                self.in_window = false;
                log::info!(
                    "kong_retry [{ctx}]: maintenance window over: requests go natively while calm"
                );
            }
            _ => {}
        }
    }
}
