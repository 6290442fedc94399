//! Adaptive protection as one VM (one worker) uses it: the worker's [`ProtectionCache`],
//! which store it may read, and the lines logged once.
//!
//! Without shared data (Kong with no detected `shm_kv` zone, or `budget.store: "none"`) the
//! cache runs over [`NoStore`]: no host call at all, and a failure still protects the
//! worker that saw it (the cache keeps what it marked itself); only the other workers do
//! not learn of it, so each worker pays its own revealing response. Maintenance windows
//! never need the store.

use super::store::{HostStore, NoStore, StoreAccess, StoreState};
use crate::adapter::root::Host;
use crate::adaptive::{self, RevealingStatuses};
use crate::config::{Mode, Plan, ProtectionScope};
use crate::maintenance::MaintenanceSchedule;
use crate::state::protection::{Protection, ProtectionCache, Transition};
use crate::state::store::StoreError;

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
    /// The scope when the config fixes it (`scope: "upstream"` with a configured
    /// `upstream`): requests name it as `None`, so the calm path builds no string.
    fixed_scope: Option<String>,
    /// The fixed scope is calm from `.0` until `.1` (host ms) without asking the cache: the
    /// cache promised no read and no change before then ([`ProtectionCache::calm_until_ms`]),
    /// and no maintenance window starts. Forgotten when a failure is marked.
    calm_memo: Option<(u64, u64)>,
    /// Which native response statuses reveal trouble, on Kong and on Envoy.
    revealing: [RevealingStatuses; 2],
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
            fixed_scope: None,
            calm_memo: None,
            revealing: [RevealingStatuses::default(); 2],
        }
    }

    /// Does a natively proxied response with this status reveal trouble on `host`?
    pub fn reveals(&self, host: Host, status: u16) -> bool {
        let set = match host {
            Host::Envoy => &self.revealing[1],
            Host::Kong | Host::Unknown => &self.revealing[0],
        };
        set.contains(status)
    }

    /// The scope every request of this VM belongs to, if the config fixes one.
    pub fn fixed_scope(&self) -> Option<&str> {
        self.fixed_scope.as_deref()
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
        self.fixed_scope = match (plan.adaptive.scope, &plan.upstream) {
            (ProtectionScope::Upstream, Some(u)) => Some(u.target.clone()),
            _ => None,
        };
        self.calm_memo = None;
        self.revealing = [
            RevealingStatuses::new(&plan.retry_on, adaptive::KONG),
            RevealingStatuses::new(&plan.retry_on, adaptive::ENVOY),
        ];
    }

    /// Is `scope` (`None`: the fixed scope) calm, scheduled or protected now? At most one
    /// shared-data read.
    pub fn check(
        &mut self,
        access: &mut StoreAccess,
        host: Host,
        scope: Option<&str>,
        now_ms: u64,
        ctx: u32,
    ) -> Protection {
        if !self.schedule.is_empty() {
            self.note_window(now_ms, ctx);
        }
        let fixed = scope.is_none();
        if let (true, Some((since, until))) = (fixed, self.calm_memo) {
            if since <= now_ms && now_ms < until {
                return Protection::Calm;
            }
        }
        let ready = self.store_ready(access, host);
        let Some(scope) = scope.or(self.fixed_scope.as_deref()) else {
            return Protection::Calm;
        };
        let Some(cache) = self.cache.as_mut() else {
            return Protection::Calm;
        };
        let answer = if ready {
            cache.check(&self.schedule, &HostStore, scope, now_ms)
        } else {
            cache.check(&self.schedule, &NoStore, scope, now_ms)
        };
        if fixed {
            self.calm_memo = None;
            if answer == Protection::Calm {
                let mut until = cache.calm_until_ms(scope, now_ms);
                if let Some(change) = self.schedule.next_change_ms(now_ms) {
                    until = until.min(change);
                }
                if until > now_ms {
                    self.calm_memo = Some((now_ms, until));
                }
            }
        }
        if answer == Protection::StoreUnavailable && ready {
            self.store_failed(&StoreError::Unavailable {
                key: scope.to_string(),
                reason: "the protection flag could not be read".to_string(),
            });
        }
        answer
    }

    /// Records a retryable outcome for `scope` (`None`: the fixed scope); `Some(Started)`
    /// when it turned a calm scope protected (for the metric).
    pub fn mark_failure(
        &mut self,
        access: &mut StoreAccess,
        host: Host,
        scope: Option<&str>,
        now_ms: u64,
    ) -> Option<Transition> {
        self.calm_memo = None;
        let ready = self.store_ready(access, host);
        let scope = scope.or(self.fixed_scope.as_deref())?;
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
        match access.resolve(host) {
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
