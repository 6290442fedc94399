//! `budget`: the retry budget's numbers and scope, and where it is kept (zone, store).

use super::read::{int_in, object, one_of, string};
use super::ConfigError;
use serde_json::Value;

/// Which requests share one retry budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetScope {
    Route,
    Upstream,
}

/// What to do when the budget's shared store cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreUnavailable {
    /// Retry as if the budget had room (fail open).
    Allow,
    /// Do not retry (fail closed).
    Deny,
}

/// Where the budget lives, and whether the filter may touch shared data at all.
///
/// On Kong a shared-data call with no `shm_kv` zone behind it traps (the client gets a 500),
/// so the filter calls shared data only when it believes a zone exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetStore {
    /// Envoy: shared data always exists. Kong: look for the zone once per VM in the
    /// read-only `kong.configuration.*` properties; none found means no store.
    Auto,
    /// The operator asserts that the zone exists: use shared data without looking.
    Shm,
    /// No store: `on_store_unavailable` decides every retry.
    None,
}

/// Default `budget.zone`: the Kong `shm_kv` zone `kong/kong.conf` defines.
pub const DEFAULT_BUDGET_ZONE: &str = "kong_retry";

/// The retry budget's numbers (the budget module interprets them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetConfig {
    pub enabled: bool,
    /// Retries allowed as a percentage of requests in the window.
    pub percent: u32,
    /// Retries always allowed per second, whatever the percentage says.
    pub min_retries_per_second: u32,
    /// Length of the counting window, ms.
    pub window_ms: u64,
    pub scope: BudgetScope,
    pub on_store_unavailable: StoreUnavailable,
}

/// Where the budget is kept (`budget.zone`, `budget.store`): apart from [`BudgetConfig`]'s
/// numbers because a zone name is text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetStoreConfig {
    /// Kong `shm_kv` zone; keys are `<zone>/kong_retry/budget/<scope-id>`.
    pub zone: String,
    pub store: BudgetStore,
}

impl Default for BudgetStoreConfig {
    fn default() -> Self {
        BudgetStoreConfig {
            zone: DEFAULT_BUDGET_ZONE.to_string(),
            store: BudgetStore::Auto,
        }
    }
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            enabled: true,
            percent: 20,
            min_retries_per_second: 10,
            window_ms: 10_000,
            scope: BudgetScope::Route,
            on_store_unavailable: StoreUnavailable::Allow,
        }
    }
}

pub(super) fn parse_budget(v: &Value) -> Result<(BudgetConfig, BudgetStoreConfig), ConfigError> {
    const ALLOWED: &str = "an object with enabled, percent, min_retries_per_second, window (ms), scope (\"route\"|\"upstream\"), on_store_unavailable (\"allow\"|\"deny\"), zone, store (\"auto\"|\"shm\"|\"none\")";
    let obj = object(
        "budget",
        v,
        &[
            "enabled",
            "percent",
            "min_retries_per_second",
            "window",
            "scope",
            "on_store_unavailable",
            "zone",
            "store",
        ],
        ALLOWED,
    )?;
    let mut b = BudgetConfig::default();
    let mut at = BudgetStoreConfig::default();
    if let Some(e) = obj.get("enabled") {
        b.enabled = e
            .as_bool()
            .ok_or_else(|| ConfigError::new("budget.enabled", e, "true or false"))?;
    }
    if let Some(p) = obj.get("percent") {
        b.percent = int_in("budget.percent", p, 0, 100, " (percent of requests)")? as u32;
    }
    if let Some(m) = obj.get("min_retries_per_second") {
        b.min_retries_per_second =
            int_in("budget.min_retries_per_second", m, 0, 100_000, "")? as u32;
    }
    if let Some(w) = obj.get("window") {
        b.window_ms = int_in("budget.window", w, 1_000, 600_000, " (ms)")?;
    }
    if let Some(s) = obj.get("scope") {
        const A: &str = "one of \"route\", \"upstream\"";
        b.scope = one_of(
            "budget.scope",
            s,
            A,
            &[
                ("route", BudgetScope::Route),
                ("upstream", BudgetScope::Upstream),
            ],
        )?;
    }
    if let Some(s) = obj.get("on_store_unavailable") {
        const A: &str = "one of \"allow\" (fail open), \"deny\" (fail closed)";
        b.on_store_unavailable = one_of(
            "budget.on_store_unavailable",
            s,
            A,
            &[
                ("allow", StoreUnavailable::Allow),
                ("deny", StoreUnavailable::Deny),
            ],
        )?;
    }
    if let Some(z) = obj.get("zone") {
        const A: &str = "an shm_kv zone name: 1 to 64 letters, digits, '_' or '-' (Kong: the <name> of nginx_wasm_shm_kv_<name>)";
        let name = string("budget.zone", z, A)?;
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
        if !ok {
            return Err(ConfigError::new("budget.zone", z, A));
        }
        at.zone = name.to_string();
    }
    if let Some(s) = obj.get("store") {
        const A: &str = "one of \"auto\" (Kong: use the zone if the configuration shows one; Envoy: always), \"shm\" (the zone exists, trust it), \"none\" (no store: on_store_unavailable applies)";
        at.store = one_of(
            "budget.store",
            s,
            A,
            &[
                ("auto", BudgetStore::Auto),
                ("shm", BudgetStore::Shm),
                ("none", BudgetStore::None),
            ],
        )?;
    }
    Ok((b, at))
}
