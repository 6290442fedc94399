//! The root context: parses the plan, detects the host, owns the timers of Envoy waits.

use super::abi;
use super::driver::Driver;
use super::http::HttpShim;
use super::metrics::Metrics;
use super::state::budget::VmBudget;
use super::state::idempotency::VmKeys;
use super::state::protection::VmProtection;
use super::state::store::StoreAccess;
use crate::config::{self, Mode, Plan};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::{Rc, Weak};

/// Which proxy runs the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    Unknown,
    Kong,
    Envoy,
}

impl Host {
    fn name(self) -> &'static str {
        match self {
            Host::Unknown => "unknown",
            Host::Kong => "kong",
            Host::Envoy => "envoy",
        }
    }
}

/// Messages logged once per VM, not once per request.
#[derive(Debug, Clone, Copy)]
pub enum Notice {
    NoDelayEndpoint = 1,
    ResponseModeOnKong = 2,
    NoUpstream = 4,
    EarlyDelay = 8,
    NoTimer = 16,
    NoRelay = 32,
    DispatchBodyOnEnvoy = 64,
}

/// One pending Envoy wait: at `due_ms`, feed `DelayElapsed` to `context_id`.
#[derive(Debug, Clone, Copy)]
struct Timer {
    due_ms: u64,
    context_id: u32,
}

/// State shared by the root context and its requests (one VM, one thread).
pub struct Shared {
    pub root_id: u32,
    pub plan: RefCell<Option<Rc<Plan>>>,
    host: Cell<Host>,
    host_detected: Cell<bool>,
    notices: Cell<u32>,
    rng: Cell<u64>,
    timers: RefCell<Vec<Timer>>,
    ticking: Cell<bool>,
    /// The tick period while no wait is pending: 0, or the metrics flush in adaptive mode.
    idle_tick_ms: Cell<u32>,
    /// The live request drivers the root may act for (Envoy waits), registered on first wait.
    drivers: RefCell<BTreeMap<u32, Weak<RefCell<Driver>>>>,
    /// Dispatches made while the root was acting for a request: token → request context.
    root_tokens: RefCell<BTreeMap<u32, u32>>,
    /// True while the root context is running a callback for a request.
    pub acting_for_request: Cell<bool>,
    /// Whether this VM may use shared data (budget and adaptive protection alike).
    pub store: RefCell<StoreAccess>,
    /// The retry budget.
    pub budget: RefCell<VmBudget>,
    /// Adaptive mode: this worker's view of which scopes are protected.
    pub protection: RefCell<VmProtection>,
    /// Gateway idempotency: the records' store.
    pub keys: RefCell<VmKeys>,
    /// This VM's counters.
    pub metrics: RefCell<Metrics>,
    /// Drivers of finished requests, reused by the next ones: a calm request then costs
    /// no allocation of its own state.
    pub spare_drivers: RefCell<Vec<Rc<RefCell<Driver>>>>,
}

impl Shared {
    /// Logs `message` at warn level the first time this notice is raised in this VM.
    pub fn notice_once(&self, notice: Notice, message: &str) {
        let bit = notice as u32;
        if self.notices.get() & bit == 0 {
            self.notices.set(self.notices.get() | bit);
            log::warn!("kong_retry [{}]: {message}", self.root_id);
        }
    }

    /// The host, detected on the first request of this VM and logged once.
    ///
    /// Call it from a request context only. Kong refuses every dotted property outside a
    /// request (`cannot get scoped properties outside of a request`, logged as an error,
    /// ngx_proxy_wasm_properties.c), and answers `plugin_root_id` and `plugin_name` as Envoy
    /// does, so the root context cannot tell the hosts apart without an error line. Inside a
    /// request `ngx.*` (nginx variables) resolves on Kong only.
    pub fn host(&self) -> Host {
        if self.host_detected.get() {
            return self.host.get();
        }
        // Envoy answers `plugin_root_id` even when the root id is empty; so does Kong,
        // which is why `ngx.*` is asked first.
        let found = if abi::property(&["ngx", "hostname"]).is_some() {
            Host::Kong
        } else if abi::property_answered(&["plugin_root_id"]) {
            Host::Envoy
        } else {
            Host::Unknown
        };
        self.host.set(found);
        self.host_detected.set(true);
        let mode = self.plan.borrow().as_ref().map(|p| p.mode);
        let exec = match (mode, found) {
            (Some(Mode::Response), Host::Envoy) | (Some(Mode::Auto), Host::Envoy) => "response",
            (Some(Mode::Adaptive), Host::Envoy) => {
                "adaptive (native while calm, response mode while protected)"
            }
            (Some(Mode::Adaptive), _) => {
                "adaptive (native while calm, dispatch mode while protected)"
            }
            _ => "dispatch",
        };
        log::info!(
            "kong_retry [{}]: host detected: {}; attempts run in {} mode",
            self.root_id,
            found.name(),
            exec
        );
        found
    }

    /// A cheap random number for backoff jitter (splitmix64 over the clock).
    pub fn random(&self) -> u64 {
        let mut z = self
            .rng
            .get()
            .wrapping_add(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(abi::now_ns());
        self.rng.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Registers a live request driver the root will act for.
    pub fn register(&self, context_id: u32, driver: Weak<RefCell<Driver>>) {
        self.drivers.borrow_mut().insert(context_id, driver);
    }

    /// Forgets a finished request.
    pub fn unregister(&self, context_id: u32) {
        self.drivers.borrow_mut().remove(&context_id);
        self.timers
            .borrow_mut()
            .retain(|t| t.context_id != context_id);
        self.root_tokens
            .borrow_mut()
            .retain(|_, ctx| *ctx != context_id);
    }

    /// Remembers a dispatch made while the root acted for `context_id`.
    pub fn note_root_token(&self, token: u32, context_id: u32) {
        self.root_tokens.borrow_mut().insert(token, context_id);
    }

    /// Sets the tick period the root keeps when no wait is pending (root context only: Kong
    /// refuses a tick period set anywhere else, and lets it be set once).
    pub fn set_idle_tick(&self, ms: u32) {
        if abi::set_tick_period_ms(ms).is_ok() {
            self.idle_tick_ms.set(ms);
        }
    }

    /// Schedules `DelayElapsed` for `context_id` after `ms` on the root's tick (Envoy).
    /// Returns false when the host cannot tick.
    pub fn schedule(&self, context_id: u32, ms: u64) -> bool {
        if !self.ticking.get() {
            if abi::set_tick_period_ms(TICK_MS).is_err() {
                return false;
            }
            self.ticking.set(true);
        }
        self.timers.borrow_mut().push(Timer {
            due_ms: abi::now_ms().saturating_add(ms),
            context_id,
        });
        true
    }

    fn driver(&self, context_id: u32) -> Option<Rc<RefCell<Driver>>> {
        self.drivers
            .borrow()
            .get(&context_id)
            .and_then(Weak::upgrade)
    }
}

/// Tick period while Envoy waits are pending.
const TICK_MS: u32 = 5;

/// Adaptive mode: how often a worker hands its calm-path counts to the host's metrics.
const METRICS_FLUSH_MS: u32 = 1000;

/// The root context of one filter configuration.
pub struct FilterRoot {
    shared: Rc<Shared>,
}

impl FilterRoot {
    /// A root context with no plan yet.
    pub fn new(context_id: u32) -> Self {
        FilterRoot {
            shared: Rc::new(Shared {
                root_id: context_id,
                plan: RefCell::new(None),
                host: Cell::new(Host::Unknown),
                host_detected: Cell::new(false),
                notices: Cell::new(0),
                rng: Cell::new(u64::from(context_id)),
                timers: RefCell::new(Vec::new()),
                ticking: Cell::new(false),
                idle_tick_ms: Cell::new(0),
                drivers: RefCell::new(BTreeMap::new()),
                root_tokens: RefCell::new(BTreeMap::new()),
                acting_for_request: Cell::new(false),
                store: RefCell::new(StoreAccess::new()),
                budget: RefCell::new(VmBudget::new(context_id)),
                protection: RefCell::new(VmProtection::new(context_id)),
                keys: RefCell::new(VmKeys::new(context_id)),
                metrics: RefCell::new(Metrics::default()),
                spare_drivers: RefCell::new(Vec::new()),
            }),
        }
    }

    fn act_for(&self, context_id: u32, f: impl FnOnce(&mut Driver)) {
        let Some(driver) = self.shared.driver(context_id) else {
            return;
        };
        if abi::set_effective_context(context_id).is_err() {
            log::warn!(
                "kong_retry [{}]: cannot act for request {context_id}",
                self.shared.root_id
            );
            return;
        }
        self.shared.acting_for_request.set(true);
        match driver.try_borrow_mut() {
            Ok(mut d) => f(&mut d),
            Err(_) => log::warn!(
                "kong_retry [{}]: request {context_id} busy",
                self.shared.root_id
            ),
        }
        self.shared.acting_for_request.set(false);
        let _ = abi::set_effective_context(self.shared.root_id);
    }
}

impl Drop for FilterRoot {
    fn drop(&mut self) {
        // Spare drivers hold the shared state they belong to: break the cycle.
        if let Ok(mut spare) = self.shared.spare_drivers.try_borrow_mut() {
            spare.clear();
        }
    }
}

impl Context for FilterRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let context = self.shared.root_tokens.borrow_mut().remove(&token_id);
        match context {
            Some(ctx) => self.act_for(ctx, |d| {
                d.on_call_response(token_id, num_headers, body_size)
            }),
            None => log::warn!(
                "kong_retry [{}]: answer for unknown dispatch {token_id} ignored",
                self.shared.root_id
            ),
        }
    }
}

impl RootContext for FilterRoot {
    /// Always true: on Kong a false here kills the worker for good (`[emerg] ...
    /// on_configure failure`, "cannot be respawned") and the gateway serves nothing. A
    /// config that cannot be used is logged once, naming the field, and the filter then
    /// passes every request through untouched.
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        *self.shared.plan.borrow_mut() = None;
        let bytes = match abi::get_buffer(abi::PLUGIN_CONFIGURATION, 0, plugin_configuration_size) {
            Ok(b) => b.unwrap_or_default(),
            Err(s) => {
                log::error!(
                    "kong_retry [{}]: cannot read the configuration (status {}); requests pass through without retries",
                    self.shared.root_id,
                    s.0
                );
                return true;
            }
        };
        let plan = match config::parse(&bytes) {
            Ok(p) => p,
            Err(e) => {
                log::error!(
                    "kong_retry [{}]: {e}; requests pass through without retries",
                    self.shared.root_id
                );
                return true;
            }
        };
        log::info!(
            "kong_retry [{}]: configured: mode={:?} retries={} per_try_timeout={}ms deadline={}ms upstream={}",
            self.shared.root_id,
            plan.mode,
            plan.retries,
            plan.per_try_timeout_ms,
            plan.deadline_ms,
            plan.upstream
                .as_ref()
                .map_or("(from the route)", |u| u.target.as_str())
        );
        if plan.mode == Mode::Adaptive {
            log::info!(
                "kong_retry [{}]: adaptive: a failure protects its {:?} scope for {} ms (cache {} ms); {} maintenance window(s)",
                self.shared.root_id,
                plan.adaptive.scope,
                plan.adaptive.window_ms,
                plan.adaptive.cache_ms,
                plan.maintenance_windows.windows().len()
            );
        }
        let plan = Rc::new(plan);
        *self.shared.plan.borrow_mut() = Some(plan.clone());
        let adaptive = plan.mode == Mode::Adaptive;
        self.shared
            .metrics
            .borrow_mut()
            .define(adaptive, plan.idempotency.enabled);
        if adaptive {
            // Calm requests count in wasm memory; the tick hands the counts to the host.
            self.shared.set_idle_tick(METRICS_FLUSH_MS);
        }
        let mut budget = self.shared.budget.borrow_mut();
        let mut protection = self.shared.protection.borrow_mut();
        budget.configure(&plan);
        protection.configure(&plan);
        self.shared.keys.borrow_mut().configure(&plan);
        let needs_store =
            budget.enabled() || protection.enabled() || VmKeys::needs_shared_data(&plan);
        // Where the store is (Kong: which shm_kv zones exist) is looked up by the first
        // request that needs it: the root context may not read Kong's properties.
        self.shared.store.borrow_mut().configure(&plan, needs_store);
        true
    }

    fn on_tick(&mut self) {
        let now = abi::now_ms();
        let due: Vec<Timer> = {
            let mut timers = self.shared.timers.borrow_mut();
            let (due, later): (Vec<Timer>, Vec<Timer>) =
                timers.iter().partition(|t| t.due_ms <= now);
            *timers = later;
            due
        };
        for t in due {
            self.act_for(t.context_id, Driver::on_delay_elapsed);
        }
        self.shared.metrics.borrow_mut().flush();
        if self.shared.timers.borrow().is_empty()
            && self.shared.ticking.get()
            && abi::set_tick_period_ms(self.shared.idle_tick_ms.get()).is_ok()
        {
            self.shared.ticking.set(false);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(HttpShim::new(context_id, self.shared.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
