//! The filter's JSON configuration, parsed once into a validated, immutable [`Plan`].
//!
//! Parsing is hand-written over `serde_json::Value` (not `#[derive(Deserialize)]`) so that
//! every error names the field, the value that was wrong and what is allowed, and so that
//! names people paste from other products (`retry_timeout`, `num_retries`) get a pointer to
//! ours instead of a bare "unknown field".

use crate::maintenance::MaintenanceSchedule;
use serde_json::{Map, Value};
use std::fmt;

/// Largest `retries` accepted.
pub const MAX_RETRIES: u32 = 10;
/// Largest `max_body_bytes` accepted (a copy lives in the VM's linear memory per request).
pub const MAX_BODY_LIMIT: u64 = 64 * 1024 * 1024;
/// Largest duration accepted anywhere in the config: one hour, in ms.
pub const MAX_DURATION_MS: u64 = 3_600_000;

/// A configuration error: which field, which value, and what would have been accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field's path, e.g. `retries` or `backoff.base_interval`.
    pub field: String,
    /// The offending value as JSON text (or a short description of it).
    pub value: String,
    /// What is allowed instead.
    pub allowed: String,
}

impl ConfigError {
    fn new(field: &str, value: &Value, allowed: impl Into<String>) -> Self {
        let mut value = value.to_string();
        if value.len() > 80 {
            let mut cut = 77;
            while !value.is_char_boundary(cut) {
                cut -= 1;
            }
            value.truncate(cut);
            value.push_str("...");
        }
        ConfigError {
            field: field.to_string(),
            value,
            allowed: allowed.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid config: `{}` = {}: {}",
            self.field, self.value, self.allowed
        )
    }
}

impl std::error::Error for ConfigError {}

/// How the filter executes attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Dispatch on Kong, response mode on Envoy (decided by the adapter, logged once).
    Auto,
    /// The filter forwards the request itself with `dispatch_http_call` (required on Kong).
    Dispatch,
    /// The first attempt goes the proxy's way; retries replace the response (Envoy only).
    Response,
    /// Native while the route is calm (the filter only watches); once the gateway sees a
    /// retryable failure, or inside a maintenance window, requests run as `auto` would
    /// run them (Kong: dispatch, Envoy: response mode).
    Adaptive,
}

/// URL scheme of a configured upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    /// The `:scheme` pseudo-header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Where attempts are dispatched: Kong `host[:port]`, or an Envoy cluster name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The `upstream` argument of `dispatch_http_call`.
    pub target: String,
    /// `https` turns TLS on (Kong); `http` otherwise.
    pub scheme: Scheme,
    /// Whether the operator wrote the scheme explicitly (`https://...`).
    pub explicit_scheme: bool,
}

/// One retry condition from `retry_on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The connection could not be made (refused, DNS, TLS handshake).
    ConnectFailure,
    /// The attempt did not finish within `per_try_timeout`.
    Timeout,
    /// The connection broke after it was made, or the response could not be read.
    Reset,
}

/// The parsed `retry_on`: which statuses and failure kinds are worth another attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOn {
    /// Status codes retried (classes already expanded), sorted, deduplicated.
    pub statuses: Vec<u16>,
    pub connect_failure: bool,
    pub timeout: bool,
    pub reset: bool,
}

impl RetryOn {
    /// Is this status in the set?
    pub fn status(&self, status: u16) -> bool {
        self.statuses.binary_search(&status).is_ok()
    }

    /// Is this failure kind in the set?
    pub fn failure(&self, kind: FailureKind) -> bool {
        match kind {
            FailureKind::ConnectFailure => self.connect_failure,
            FailureKind::Timeout => self.timeout,
            FailureKind::Reset => self.reset,
        }
    }
}

/// Delay between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// Full jitter: uniform in `[0, min(max, base * 2^(n-1))]` before retry `n`.
    Exponential { base_ms: u64, max_ms: u64 },
    /// The same delay before every retry.
    Fixed { interval_ms: u64 },
}

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

/// Which requests share one adaptive-protection flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtectionScope {
    /// Every route to the same backend: a restarting backend protects all of them at once.
    Upstream,
    /// Each route on its own.
    Route,
}

/// Adaptive mode's settings (`adaptive`); the flag lives in the budget's zone
/// (`budget.zone`, `budget.store`): one shared-data zone for the whole filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptiveConfig {
    /// How long one failure protects the scope, ms.
    pub window_ms: u64,
    /// How old a worker's cached flag may be before it reads shared data again, ms.
    pub cache_ms: u64,
    pub scope: ProtectionScope,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            window_ms: 30_000,
            cache_ms: 1_000,
            scope: ProtectionScope::Upstream,
        }
    }
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

impl Plan {
    /// The budget module's rules for this plan.
    pub fn budget_rules(&self) -> crate::budget::BudgetRules {
        crate::budget::BudgetRules {
            enabled: self.budget.enabled,
            percent: f64::from(self.budget.percent),
            min_retries_per_second: self.budget.min_retries_per_second,
            window_ms: self.budget.window_ms,
            zone: Some(self.budget_store.zone.clone()),
        }
    }

    /// Adaptive protection's rules for this plan (same zone as the budget).
    pub fn protection_rules(&self) -> crate::protection::ProtectionRules {
        crate::protection::ProtectionRules::new(
            self.adaptive.window_ms,
            self.adaptive.cache_ms,
            Some(self.budget_store.zone.clone()),
        )
        // The parser checks the same bounds, and zone names never hold '/'; a default
        // keeps this total.
        .unwrap_or_default()
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

/// The validated, immutable configuration of one filter instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub mode: Mode,
    /// `None`: take it from the host (Kong: `kong.router.service`).
    pub upstream: Option<Upstream>,
    pub retries: u32,
    pub retry_on: RetryOn,
    pub per_try_timeout_ms: u64,
    pub deadline_ms: u64,
    /// Methods retried without an idempotency key, upper case.
    pub methods: Vec<String>,
    /// Lower case.
    pub idempotency_header: String,
    pub max_body_bytes: usize,
    /// Lower case; sent upstream on retries.
    pub attempt_header: String,
    /// Lower case; sent to the client.
    pub attempts_header: String,
    pub backoff: Backoff,
    /// 0: ignore `Retry-After`.
    pub retry_after_max_ms: u64,
    pub budget: BudgetConfig,
    /// Where the budget is kept (from `budget.zone` and `budget.store`).
    pub budget_store: BudgetStoreConfig,
    /// Kong: `host:port` of the loopback delay server.
    pub delay_endpoint: Option<String>,
    /// Adaptive mode's window, cache and scope (defaults outside adaptive mode).
    pub adaptive: AdaptiveConfig,
    /// Adaptive mode: when requests are protected from the first one (empty otherwise).
    pub maintenance_windows: MaintenanceSchedule,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            mode: Mode::Auto,
            upstream: None,
            retries: 2,
            retry_on: RetryOn {
                statuses: vec![502, 503, 504],
                connect_failure: true,
                timeout: true,
                reset: true,
            },
            per_try_timeout_ms: 2_000,
            deadline_ms: 10_000,
            methods: ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]
                .iter()
                .map(|m| m.to_string())
                .collect(),
            idempotency_header: "idempotency-key".to_string(),
            max_body_bytes: 1_048_576,
            attempt_header: "x-retry-attempt".to_string(),
            attempts_header: "x-kong-retry-attempts".to_string(),
            backoff: Backoff::Exponential {
                base_ms: 25,
                max_ms: 250,
            },
            retry_after_max_ms: 10_000,
            budget: BudgetConfig::default(),
            budget_store: BudgetStoreConfig::default(),
            delay_endpoint: None,
            adaptive: AdaptiveConfig::default(),
            maintenance_windows: MaintenanceSchedule::default(),
        }
    }
}

const FIELDS: &[&str] = &[
    "mode",
    "upstream",
    "retries",
    "retry_on",
    "per_try_timeout",
    "deadline",
    "methods",
    "idempotency_header",
    "max_body_bytes",
    "attempt_header",
    "attempts_header",
    "backoff",
    "retry_after_max",
    "budget",
    "delay_endpoint",
    "adaptive",
    "maintenance_windows",
];

/// Hints for names that operators bring from Kong, Envoy, NGINX or their notes.
fn hint_for_unknown(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "retry_timeout" | "timeout" | "timeout_ms" | "retry_timeout_ms" | "try_timeout" => {
            "did you mean `per_try_timeout` (ms, the timeout of each attempt) or `deadline` (ms, the overall time for all attempts)?"
        }
        "per_try_timeout_ms" | "pertrytimeout" | "per-try-timeout" => {
            "did you mean `per_try_timeout` (ms, the timeout of each attempt)?"
        }
        "overall_timeout" | "total_timeout" | "request_timeout" | "deadline_ms" => {
            "did you mean `deadline` (ms, the overall time for all attempts)?"
        }
        "num_retries" | "max_retries" | "retry" | "retry_count" | "attempts" | "max_attempts" => {
            "did you mean `retries` (retries after the first attempt, 0-10)?"
        }
        "retry_on_status" | "retriable_status_codes" | "retry_statuses" | "status_codes"
        | "retryon" | "retry-on" => "did you mean `retry_on` (e.g. \"502,503,timeout\")?",
        "retry_methods" | "idempotent_methods" | "method" => "did you mean `methods`?",
        "idempotency_key" | "idempotency_key_header" => "did you mean `idempotency_header`?",
        "max_body_size" | "max_request_body" | "body_limit" => "did you mean `max_body_bytes`?",
        "base_interval" | "max_interval" | "interval" | "retry_back_off" | "backoff_base" => {
            "backoff settings go inside the `backoff` object, e.g. {\"backoff\":{\"strategy\":\"exponential\",\"base_interval\":25,\"max_interval\":250}}"
        }
        "host" | "service" | "cluster" | "upstream_url" | "url" => {
            "did you mean `upstream` (Kong: host:port or https://host:port; Envoy: cluster name)?"
        }
        _ => return None,
    })
}

/// Parses the plugin configuration bytes. Empty input or `null` means all defaults.
pub fn parse(bytes: &[u8]) -> Result<Plan, ConfigError> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t.trim(),
        Err(_) => {
            return Err(ConfigError {
                field: "(config)".into(),
                value: format!("{} bytes", bytes.len()),
                allowed: "the configuration must be UTF-8 JSON".into(),
            })
        }
    };
    if text.is_empty() {
        return Ok(Plan::default());
    }
    let value: Value = serde_json::from_str(text).map_err(|e| ConfigError {
        field: "(config)".into(),
        value: format!("not JSON ({e})"),
        allowed: "a JSON object, e.g. {\"retries\":2,\"retry_on\":\"gateway-error,timeout\"}"
            .into(),
    })?;
    parse_value(&value)
}

/// Parses an already decoded JSON value.
pub fn parse_value(value: &Value) -> Result<Plan, ConfigError> {
    let obj = match value {
        Value::Null => return Ok(Plan::default()),
        Value::Object(o) => o,
        other => {
            return Err(ConfigError::new(
                "(config)",
                other,
                "a JSON object of settings",
            ))
        }
    };
    for (name, v) in obj {
        if !FIELDS.contains(&name.as_str()) {
            let allowed = match hint_for_unknown(name) {
                Some(h) => format!("unknown field; {h}"),
                None => format!("unknown field; known fields: {}", FIELDS.join(", ")),
            };
            return Err(ConfigError::new(name, v, allowed));
        }
    }

    let mut plan = Plan::default();
    if let Some(v) = obj.get("mode") {
        plan.mode = parse_mode(v)?;
    }
    if let Some(v) = obj.get("upstream") {
        plan.upstream = parse_upstream("upstream", v)?;
    }
    if let Some(v) = obj.get("retries") {
        plan.retries = int_in("retries", v, 0, u64::from(MAX_RETRIES), "")? as u32;
    }
    if let Some(v) = obj.get("retry_on") {
        plan.retry_on = parse_retry_on(v)?;
    }
    if let Some(v) = obj.get("per_try_timeout") {
        plan.per_try_timeout_ms = int_in("per_try_timeout", v, 1, MAX_DURATION_MS, " (ms)")?;
    }
    if let Some(v) = obj.get("deadline") {
        plan.deadline_ms = int_in("deadline", v, 1, MAX_DURATION_MS, " (ms)")?;
    }
    if plan.deadline_ms < plan.per_try_timeout_ms {
        return Err(ConfigError {
            field: "deadline".into(),
            value: plan.deadline_ms.to_string(),
            allowed: format!(
                "must be at least per_try_timeout ({} ms): the deadline covers all attempts",
                plan.per_try_timeout_ms
            ),
        });
    }
    if let Some(v) = obj.get("methods") {
        plan.methods = parse_methods(v)?;
    }
    if let Some(v) = obj.get("idempotency_header") {
        plan.idempotency_header = header_name("idempotency_header", v)?;
    }
    if let Some(v) = obj.get("max_body_bytes") {
        plan.max_body_bytes = int_in("max_body_bytes", v, 0, MAX_BODY_LIMIT, " (bytes)")? as usize;
    }
    if let Some(v) = obj.get("attempt_header") {
        plan.attempt_header = header_name("attempt_header", v)?;
    }
    if let Some(v) = obj.get("attempts_header") {
        plan.attempts_header = header_name("attempts_header", v)?;
    }
    if let Some(v) = obj.get("backoff") {
        plan.backoff = parse_backoff(v)?;
    }
    if let Some(v) = obj.get("retry_after_max") {
        plan.retry_after_max_ms = int_in("retry_after_max", v, 0, MAX_DURATION_MS, " (ms)")?;
    }
    if let Some(v) = obj.get("budget") {
        (plan.budget, plan.budget_store) = parse_budget(v)?;
    }
    if let Some(v) = obj.get("delay_endpoint") {
        plan.delay_endpoint = parse_delay_endpoint(v)?;
    }
    for field in ["adaptive", "maintenance_windows"] {
        if obj.contains_key(field) && plan.mode != Mode::Adaptive {
            return Err(ConfigError::new(
                "mode",
                obj.get("mode").unwrap_or(&Value::from("auto")),
                format!("`{field}` applies only to \"adaptive\" mode: set \"mode\":\"adaptive\" or remove `{field}`"),
            ));
        }
    }
    if let Some(v) = obj.get("adaptive") {
        plan.adaptive = parse_adaptive(v)?;
    }
    if let Some(v) = obj.get("maintenance_windows") {
        plan.maintenance_windows = MaintenanceSchedule::from_json(v).map_err(|e| ConfigError {
            field: e.field,
            value: e.value,
            allowed: e.allowed,
        })?;
    }
    Ok(plan)
}

fn int_in(field: &str, v: &Value, min: u64, max: u64, unit: &str) -> Result<u64, ConfigError> {
    let allowed = || format!("an integer from {min} to {max}{unit}");
    match v.as_u64() {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => {
            let why = if v.is_string() {
                format!("{}, written as a JSON number, not a string", allowed())
            } else {
                allowed()
            };
            Err(ConfigError::new(field, v, why))
        }
    }
}

fn string<'a>(field: &str, v: &'a Value, allowed: &str) -> Result<&'a str, ConfigError> {
    v.as_str()
        .ok_or_else(|| ConfigError::new(field, v, allowed.to_string()))
}

fn parse_mode(v: &Value) -> Result<Mode, ConfigError> {
    const ALLOWED: &str = "one of \"auto\", \"dispatch\", \"response\", \"adaptive\"";
    match string("mode", v, ALLOWED)? {
        "auto" => Ok(Mode::Auto),
        "dispatch" => Ok(Mode::Dispatch),
        "response" => Ok(Mode::Response),
        "adaptive" => Ok(Mode::Adaptive),
        _ => Err(ConfigError::new("mode", v, ALLOWED)),
    }
}

fn parse_adaptive(v: &Value) -> Result<AdaptiveConfig, ConfigError> {
    use crate::protection::{MAX_CACHE_MS, MAX_WINDOW_MS, MIN_WINDOW_MS};
    const ALLOWED: &str = "an object with window (ms), cache (ms), scope (\"upstream\"|\"route\"); the shared-data zone is budget.zone";
    if let Some(z) = v.get("zone") {
        return Err(ConfigError::new(
            "adaptive.zone",
            z,
            "unknown field; the protection flag lives in the filter's one shared-data zone, set with budget.zone (and budget.store)",
        ));
    }
    let obj = object("adaptive", v, &["window", "cache", "scope"], ALLOWED)?;
    let mut a = AdaptiveConfig::default();
    if let Some(w) = obj.get("window") {
        a.window_ms = int_in("adaptive.window", w, MIN_WINDOW_MS, MAX_WINDOW_MS, " (ms)")?;
    }
    if let Some(c) = obj.get("cache") {
        a.cache_ms = int_in("adaptive.cache", c, 0, MAX_CACHE_MS, " (ms)")?;
    }
    if a.cache_ms > a.window_ms {
        return Err(ConfigError {
            field: "adaptive.cache".into(),
            value: a.cache_ms.to_string(),
            allowed: format!(
                "must be at most adaptive.window ({} ms), or a worker could miss a whole protection",
                a.window_ms
            ),
        });
    }
    if let Some(s) = obj.get("scope") {
        const A: &str = "one of \"upstream\" (every route to the same backend), \"route\"";
        a.scope = match string("adaptive.scope", s, A)? {
            "upstream" => ProtectionScope::Upstream,
            "route" => ProtectionScope::Route,
            _ => return Err(ConfigError::new("adaptive.scope", s, A)),
        };
    }
    Ok(a)
}

/// Parses `host[:port]`, `http://host[:port]`, `https://host[:port]` or a cluster name.
pub fn parse_upstream(field: &str, v: &Value) -> Result<Option<Upstream>, ConfigError> {
    const ALLOWED: &str =
        "Kong: \"host:port\" or \"https://host:port\" (no path); Envoy: a cluster name";
    let s = string(field, v, ALLOWED)?;
    let (scheme, explicit, rest) = if let Some(r) = s.strip_prefix("https://") {
        (Scheme::Https, true, r)
    } else if let Some(r) = s.strip_prefix("http://") {
        (Scheme::Http, true, r)
    } else if s.contains("://") {
        return Err(ConfigError::new(field, v, ALLOWED));
    } else {
        (Scheme::Http, false, s)
    };
    let rest = if explicit {
        rest.strip_suffix('/').unwrap_or(rest)
    } else {
        rest
    };
    let bad_char = |c: char| c.is_whitespace() || c.is_control() || c == '/' || c == '?';
    if rest.is_empty() || rest.chars().any(bad_char) {
        return Err(ConfigError::new(field, v, ALLOWED));
    }
    if explicit || looks_like_host_port(rest) {
        check_host_port(field, v, rest, explicit, ALLOWED)?;
    }
    Ok(Some(Upstream {
        target: rest.to_string(),
        scheme,
        explicit_scheme: explicit,
    }))
}

fn looks_like_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && !port.is_empty() && !host.contains(':'),
        None => false,
    }
}

fn check_host_port(
    field: &str,
    v: &Value,
    s: &str,
    port_optional: bool,
    allowed: &str,
) -> Result<(), ConfigError> {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p)),
        _ => (s, None),
    };
    if host.is_empty() {
        return Err(ConfigError::new(field, v, allowed));
    }
    match port {
        Some(p) => match p.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) && !p.starts_with('+') => Ok(()),
            _ => Err(ConfigError::new(
                field,
                v,
                format!("the port must be 1-65535; {allowed}"),
            )),
        },
        None if port_optional => Ok(()),
        None => Err(ConfigError::new(field, v, allowed)),
    }
}

fn parse_delay_endpoint(v: &Value) -> Result<Option<String>, ConfigError> {
    const ALLOWED: &str = "\"host:port\" of the loopback delay server, e.g. \"127.0.0.1:8555\"";
    let s = string("delay_endpoint", v, ALLOWED)?;
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(ConfigError::new("delay_endpoint", v, ALLOWED));
    }
    check_host_port("delay_endpoint", v, s, false, ALLOWED)?;
    Ok(Some(s.to_string()))
}

/// A list, or a comma-separated string, of non-empty trimmed items.
fn list_items(field: &str, v: &Value, allowed: &str) -> Result<Vec<String>, ConfigError> {
    let items: Vec<String> = match v {
        Value::String(s) => s.split(',').map(|t| t.trim().to_string()).collect(),
        Value::Array(a) => {
            let mut out = Vec::with_capacity(a.len());
            for (i, item) in a.iter().enumerate() {
                match item {
                    Value::String(s) => out.push(s.trim().to_string()),
                    Value::Number(n) => out.push(n.to_string()),
                    other => {
                        return Err(ConfigError::new(&format!("{field}[{i}]"), other, allowed))
                    }
                }
            }
            out
        }
        other => return Err(ConfigError::new(field, other, allowed)),
    };
    if items.iter().all(|s| s.is_empty()) {
        return Err(ConfigError::new(
            field,
            v,
            format!("must not be empty; {allowed}"),
        ));
    }
    Ok(items)
}

fn parse_retry_on(v: &Value) -> Result<RetryOn, ConfigError> {
    const ALLOWED: &str = "a list or comma-separated string of status codes 400-599, classes \"5xx\" and \"gateway-error\" (502,503,504), and failures \"connect-failure\", \"timeout\", \"reset\"";
    let mut on = RetryOn {
        statuses: Vec::new(),
        connect_failure: false,
        timeout: false,
        reset: false,
    };
    for item in list_items("retry_on", v, ALLOWED)? {
        if item.is_empty() {
            continue;
        }
        match item.to_ascii_lowercase().as_str() {
            "5xx" => on.statuses.extend(500..=599),
            "gateway-error" | "gateway_error" => on.statuses.extend([502, 503, 504]),
            "connect-failure" | "connect_failure" => on.connect_failure = true,
            "timeout" => on.timeout = true,
            "reset" => on.reset = true,
            code => match code.parse::<u16>() {
                Ok(n) if (400..=599).contains(&n) && code.len() == 3 => on.statuses.push(n),
                _ => {
                    return Err(ConfigError {
                        field: "retry_on".into(),
                        value: format!("{item:?}"),
                        allowed: ALLOWED.into(),
                    })
                }
            },
        }
    }
    on.statuses.sort_unstable();
    on.statuses.dedup();
    Ok(on)
}

fn parse_methods(v: &Value) -> Result<Vec<String>, ConfigError> {
    const ALLOWED: &str =
        "a list of HTTP methods, e.g. [\"GET\",\"HEAD\",\"OPTIONS\",\"TRACE\",\"PUT\",\"DELETE\"]";
    let mut out = Vec::new();
    for item in list_items("methods", v, ALLOWED)? {
        if item.is_empty() {
            continue;
        }
        if !item.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-') {
            return Err(ConfigError {
                field: "methods".into(),
                value: format!("{item:?}"),
                allowed: ALLOWED.into(),
            });
        }
        let m = item.to_ascii_uppercase();
        if !out.contains(&m) {
            out.push(m);
        }
    }
    Ok(out)
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn header_name(field: &str, v: &Value) -> Result<String, ConfigError> {
    const ALLOWED: &str =
        "an HTTP header name (letters, digits, '-'), not a hop-by-hop or pseudo header";
    let s = string(field, v, ALLOWED)?;
    if s.is_empty() || !s.bytes().all(is_tchar) {
        return Err(ConfigError::new(field, v, ALLOWED));
    }
    let lower = s.to_ascii_lowercase();
    if crate::request_copy::is_hop_by_hop(&lower)
        || matches!(lower.as_str(), "host" | "content-length")
    {
        return Err(ConfigError::new(field, v, ALLOWED));
    }
    Ok(lower)
}

fn object<'a>(
    field: &str,
    v: &'a Value,
    known: &[&str],
    allowed: &str,
) -> Result<&'a Map<String, Value>, ConfigError> {
    let obj = v
        .as_object()
        .ok_or_else(|| ConfigError::new(field, v, allowed.to_string()))?;
    for (name, val) in obj {
        if !known.contains(&name.as_str()) {
            return Err(ConfigError::new(
                &format!("{field}.{name}"),
                val,
                format!("unknown field; known fields: {}", known.join(", ")),
            ));
        }
    }
    Ok(obj)
}

fn parse_backoff(v: &Value) -> Result<Backoff, ConfigError> {
    const ALLOWED: &str = "{\"strategy\":\"exponential\",\"base_interval\":25,\"max_interval\":250} or {\"strategy\":\"fixed\",\"interval\":5000} (ms)";
    let obj = object(
        "backoff",
        v,
        &["strategy", "base_interval", "max_interval", "interval"],
        ALLOWED,
    )?;
    let strategy = match obj.get("strategy") {
        None => "exponential",
        Some(s) => string("backoff.strategy", s, "one of \"exponential\", \"fixed\"")?,
    };
    match strategy {
        "exponential" => {
            if let Some(i) = obj.get("interval") {
                return Err(ConfigError::new(
                    "backoff.interval",
                    i,
                    "only with \"strategy\":\"fixed\"; exponential uses base_interval and max_interval",
                ));
            }
            let base_ms = match obj.get("base_interval") {
                Some(b) => int_in("backoff.base_interval", b, 1, 60_000, " (ms)")?,
                None => 25,
            };
            let max_ms = match obj.get("max_interval") {
                Some(m) => int_in("backoff.max_interval", m, 1, 300_000, " (ms)")?,
                None => base_ms.saturating_mul(10),
            };
            if max_ms < base_ms {
                return Err(ConfigError {
                    field: "backoff.max_interval".into(),
                    value: max_ms.to_string(),
                    allowed: format!("must be at least base_interval ({base_ms} ms)"),
                });
            }
            Ok(Backoff::Exponential { base_ms, max_ms })
        }
        "fixed" => {
            for f in ["base_interval", "max_interval"] {
                if let Some(x) = obj.get(f) {
                    return Err(ConfigError::new(
                        &format!("backoff.{f}"),
                        x,
                        "only with \"strategy\":\"exponential\"; fixed uses interval",
                    ));
                }
            }
            match obj.get("interval") {
                Some(i) => Ok(Backoff::Fixed {
                    interval_ms: int_in("backoff.interval", i, 0, 300_000, " (ms)")?,
                }),
                None => Err(ConfigError {
                    field: "backoff.interval".into(),
                    value: "(missing)".into(),
                    allowed:
                        "required with \"strategy\":\"fixed\": an integer from 0 to 300000 (ms)"
                            .into(),
                }),
            }
        }
        _ => Err(ConfigError::new(
            "backoff.strategy",
            obj.get("strategy").unwrap_or(&Value::Null),
            "one of \"exponential\", \"fixed\"",
        )),
    }
}

fn parse_budget(v: &Value) -> Result<(BudgetConfig, BudgetStoreConfig), ConfigError> {
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
        b.scope = match string("budget.scope", s, A)? {
            "route" => BudgetScope::Route,
            "upstream" => BudgetScope::Upstream,
            _ => return Err(ConfigError::new("budget.scope", s, A)),
        };
    }
    if let Some(s) = obj.get("on_store_unavailable") {
        const A: &str = "one of \"allow\" (fail open), \"deny\" (fail closed)";
        b.on_store_unavailable = match string("budget.on_store_unavailable", s, A)? {
            "allow" => StoreUnavailable::Allow,
            "deny" => StoreUnavailable::Deny,
            _ => return Err(ConfigError::new("budget.on_store_unavailable", s, A)),
        };
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
        at.store = match string("budget.store", s, A)? {
            "auto" => BudgetStore::Auto,
            "shm" => BudgetStore::Shm,
            "none" => BudgetStore::None,
            _ => return Err(ConfigError::new("budget.store", s, A)),
        };
    }
    Ok((b, at))
}

/// The upstream of a Kong route's service, from the `kong.router.service` property (JSON).
pub fn upstream_from_kong_service(json: &[u8]) -> Option<Upstream> {
    let v: Value = serde_json::from_slice(json).ok()?;
    let host = v.get("host")?.as_str()?;
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return None;
    }
    let protocol = v.get("protocol").and_then(Value::as_str).unwrap_or("http");
    let scheme = match protocol {
        "https" | "grpcs" | "tls" => Scheme::Https,
        _ => Scheme::Http,
    };
    let port = v
        .get("port")
        .and_then(Value::as_u64)
        .filter(|p| (1..=65535).contains(p));
    let port = port.unwrap_or(if scheme == Scheme::Https { 443 } else { 80 });
    Some(Upstream {
        target: format!("{host}:{port}"),
        scheme,
        explicit_scheme: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> ConfigError {
        parse(json.as_bytes()).expect_err(json)
    }

    #[test]
    fn empty_and_null_give_defaults() {
        assert_eq!(parse(b"").unwrap(), Plan::default());
        assert_eq!(parse(b"  null ").unwrap(), Plan::default());
        assert_eq!(parse(b"{}").unwrap(), Plan::default());
    }

    #[test]
    fn full_config_parses() {
        let p = parse(
            br#"{"mode":"dispatch","upstream":"https://api.internal:8443","retries":3,
            "retry_on":["502","503",504,"timeout","connect-failure"],"per_try_timeout":1500,
            "deadline":8000,"methods":["get","put"],"idempotency_header":"X-Idem",
            "max_body_bytes":65536,"attempt_header":"X-Try","attempts_header":"X-Tries",
            "backoff":{"strategy":"fixed","interval":5000},"retry_after_max":3000,
            "budget":{"enabled":false,"percent":50,"min_retries_per_second":3,"window":5000,
            "scope":"upstream","on_store_unavailable":"deny","zone":"retry-state","store":"shm"},
            "delay_endpoint":"127.0.0.1:8555"}"#,
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Dispatch);
        let up = p.upstream.clone().unwrap();
        assert_eq!(up.target, "api.internal:8443");
        assert_eq!(up.scheme, Scheme::Https);
        assert_eq!(p.retries, 3);
        assert_eq!(p.retry_on.statuses, vec![502, 503, 504]);
        assert!(p.retry_on.timeout && p.retry_on.connect_failure && !p.retry_on.reset);
        assert_eq!(p.per_try_timeout_ms, 1500);
        assert_eq!(p.deadline_ms, 8000);
        assert_eq!(p.methods, vec!["GET", "PUT"]);
        assert_eq!(p.idempotency_header, "x-idem");
        assert_eq!(p.max_body_bytes, 65536);
        assert_eq!(p.attempt_header, "x-try");
        assert_eq!(p.attempts_header, "x-tries");
        assert_eq!(p.backoff, Backoff::Fixed { interval_ms: 5000 });
        assert_eq!(p.retry_after_max_ms, 3000);
        assert!(!p.budget.enabled);
        assert_eq!(p.budget.percent, 50);
        assert_eq!(p.budget.scope, BudgetScope::Upstream);
        assert_eq!(p.budget.on_store_unavailable, StoreUnavailable::Deny);
        assert_eq!(p.budget_store.zone, "retry-state");
        assert_eq!(p.budget_store.store, BudgetStore::Shm);
        let rules = p.budget_rules();
        assert_eq!(rules.zone.as_deref(), Some("retry-state"));
        assert_eq!((rules.percent, rules.window_ms), (50.0, 5000));
        assert_eq!(p.delay_endpoint.as_deref(), Some("127.0.0.1:8555"));
    }

    #[test]
    fn paste_from_notes_names_the_right_fields() {
        let e = err(r#"{"retries":3,"retry_on":"502,503,timeout","retry_timeout":5000}"#);
        assert_eq!(e.field, "retry_timeout");
        let msg = e.to_string();
        assert!(msg.contains("per_try_timeout"), "{msg}");
        assert!(msg.contains("deadline"), "{msg}");
        assert!(
            msg.contains("per attempt") || msg.contains("each attempt"),
            "{msg}"
        );
        assert!(msg.contains("overall"), "{msg}");
    }

    #[test]
    fn retry_on_string_and_classes() {
        let p = parse(br#"{"retry_on":"5xx, 429 ,reset"}"#).unwrap();
        assert_eq!(p.retry_on.statuses.len(), 101);
        assert!(p.retry_on.status(429) && p.retry_on.status(500) && p.retry_on.status(599));
        assert!(!p.retry_on.status(404));
        assert!(p.retry_on.reset && !p.retry_on.timeout);
        let p = parse(br#"{"retry_on":"gateway-error"}"#).unwrap();
        assert_eq!(p.retry_on.statuses, vec![502, 503, 504]);
        assert!(!p.retry_on.connect_failure);
    }

    #[test]
    fn exponential_max_defaults_to_ten_times_base() {
        let p = parse(br#"{"backoff":{"base_interval":100}}"#).unwrap();
        assert_eq!(
            p.backoff,
            Backoff::Exponential {
                base_ms: 100,
                max_ms: 1000
            }
        );
    }

    #[test]
    fn upstream_forms() {
        let up = |s: &str| {
            parse_upstream("upstream", &Value::from(s))
                .unwrap()
                .unwrap()
        };
        assert_eq!(up("backend").target, "backend");
        assert_eq!(
            up("outbound|80||svc.local").target,
            "outbound|80||svc.local"
        );
        assert_eq!(up("127.0.0.1:8080").scheme, Scheme::Http);
        assert_eq!(up("http://h:1/").target, "h:1");
        assert_eq!(up("https://h").target, "h");
        assert!(up("https://h").explicit_scheme);
    }

    #[test]
    fn kong_service_property() {
        let u = upstream_from_kong_service(
            br#"{"host":"orders.svc","port":8443,"protocol":"https","path":"/v1"}"#,
        )
        .unwrap();
        assert_eq!(u.target, "orders.svc:8443");
        assert_eq!(u.scheme, Scheme::Https);
        let u = upstream_from_kong_service(br#"{"host":"a"}"#).unwrap();
        assert_eq!(u.target, "a:80");
        assert!(upstream_from_kong_service(b"{}").is_none());
        assert!(upstream_from_kong_service(b"garbage").is_none());
    }

    /// Every rejected config names its field.
    #[test]
    fn bad_configs_name_their_field() {
        let cases: &[(&str, &str)] = &[
            (r#"{"retries":11}"#, "retries"),
            (r#"{"retries":-1}"#, "retries"),
            (r#"{"retries":"3"}"#, "retries"),
            (r#"{"retries":2.5}"#, "retries"),
            (r#"{"retry_on":"502,oops"}"#, "retry_on"),
            (r#"{"retry_on":"200"}"#, "retry_on"),
            (r#"{"retry_on":""}"#, "retry_on"),
            (r#"{"retry_on":[true]}"#, "retry_on[0]"),
            (r#"{"per_try_timeout":0}"#, "per_try_timeout"),
            (r#"{"deadline":100}"#, "deadline"),
            (r#"{"mode":"fast"}"#, "mode"),
            (r#"{"adaptive":{}}"#, "mode"),
            (r#"{"mode":"dispatch","adaptive":{"window":5000}}"#, "mode"),
            (r#"{"maintenance_windows":[]}"#, "mode"),
            (
                r#"{"mode":"adaptive","adaptive":{"window":999}}"#,
                "adaptive.window",
            ),
            (
                r#"{"mode":"adaptive","adaptive":{"window":3600001}}"#,
                "adaptive.window",
            ),
            (
                r#"{"mode":"adaptive","adaptive":{"cache":60001}}"#,
                "adaptive.cache",
            ),
            (
                r#"{"mode":"adaptive","adaptive":{"window":2000,"cache":3000}}"#,
                "adaptive.cache",
            ),
            (
                r#"{"mode":"adaptive","adaptive":{"scope":"service"}}"#,
                "adaptive.scope",
            ),
            (
                r#"{"mode":"adaptive","adaptive":{"zone":"z"}}"#,
                "adaptive.zone",
            ),
            (
                r#"{"mode":"adaptive","adaptive":{"ttl":1}}"#,
                "adaptive.ttl",
            ),
            (r#"{"mode":"adaptive","adaptive":[]}"#, "adaptive"),
            (
                r#"{"mode":"adaptive","maintenance_windows":{"start":"x"}}"#,
                "maintenance_windows",
            ),
            (
                r#"{"mode":"adaptive","maintenance_windows":[{"start":"2026-12-01T01:00:00Z","end":"2026-12-01T00:00:00Z"}]}"#,
                "maintenance_windows[0].end",
            ),
            (r#"{"upstream":"http://h/path"}"#, "upstream"),
            (r#"{"upstream":"h:99999"}"#, "upstream"),
            (r#"{"upstream":""}"#, "upstream"),
            (r#"{"upstream":"ftp://h"}"#, "upstream"),
            (r#"{"methods":["GET","P OST"]}"#, "methods"),
            (r#"{"methods":5}"#, "methods"),
            (
                r#"{"idempotency_header":"bad header"}"#,
                "idempotency_header",
            ),
            (r#"{"attempt_header":"Connection"}"#, "attempt_header"),
            (r#"{"attempts_header":""}"#, "attempts_header"),
            (r#"{"max_body_bytes":1e12}"#, "max_body_bytes"),
            (r#"{"backoff":{"strategy":"linear"}}"#, "backoff.strategy"),
            (r#"{"backoff":{"strategy":"fixed"}}"#, "backoff.interval"),
            (
                r#"{"backoff":{"base_interval":100,"max_interval":10}}"#,
                "backoff.max_interval",
            ),
            (r#"{"backoff":{"interval":100}}"#, "backoff.interval"),
            (r#"{"backoff":{"jitter":true}}"#, "backoff.jitter"),
            (r#"{"backoff":5}"#, "backoff"),
            (r#"{"retry_after_max":-5}"#, "retry_after_max"),
            (r#"{"budget":{"percent":101}}"#, "budget.percent"),
            (r#"{"budget":{"scope":"service"}}"#, "budget.scope"),
            (
                r#"{"budget":{"on_store_unavailable":"maybe"}}"#,
                "budget.on_store_unavailable",
            ),
            (r#"{"budget":{"enabled":"yes"}}"#, "budget.enabled"),
            (r#"{"budget":{"window":10}}"#, "budget.window"),
            (r#"{"budget":{"ttl":10}}"#, "budget.ttl"),
            (r#"{"budget":{"zone":"a/b"}}"#, "budget.zone"),
            (r#"{"budget":{"zone":""}}"#, "budget.zone"),
            (r#"{"budget":{"zone":"*"}}"#, "budget.zone"),
            (r#"{"budget":{"store":"memory"}}"#, "budget.store"),
            (r#"{"delay_endpoint":"127.0.0.1"}"#, "delay_endpoint"),
            (r#"{"num_retries":2}"#, "num_retries"),
            (r#"{"base_interval":2}"#, "base_interval"),
            (r#"[1,2]"#, "(config)"),
            (r#"{"retries":"#, "(config)"),
        ];
        for (json, field) in cases {
            let e = err(json);
            assert_eq!(&e.field, field, "{json} -> {e}");
            let msg = e.to_string();
            assert!(msg.contains(&format!("`{field}`")), "{json} -> {msg}");
            assert!(!e.allowed.is_empty(), "{json}");
        }
    }

    #[test]
    fn adaptive_mode_and_its_settings() {
        let p = parse(br#"{"mode":"adaptive"}"#).unwrap();
        assert_eq!(p.mode, Mode::Adaptive);
        assert_eq!(p.adaptive, AdaptiveConfig::default());
        assert!(p.maintenance_windows.is_empty());
        let rules = p.protection_rules();
        assert_eq!((rules.window_ms(), rules.cache_ms()), (30_000, 1_000));
        assert_eq!(rules.zone(), Some(DEFAULT_BUDGET_ZONE));

        let p = parse(
            br#"{"mode":"adaptive","adaptive":{"window":5000,"cache":0,"scope":"route"},
            "budget":{"zone":"retry-state"},
            "maintenance_windows":[{"start":"2026-12-01T01:00:00Z","end":"2026-12-01T03:00:00Z"},
            {"daily":{"start":"23:00","end":"01:00"}}]}"#,
        )
        .unwrap();
        assert_eq!(
            p.adaptive,
            AdaptiveConfig {
                window_ms: 5000,
                cache_ms: 0,
                scope: ProtectionScope::Route
            }
        );
        assert_eq!(p.maintenance_windows.windows().len(), 2);
        let rules = p.protection_rules();
        assert_eq!(rules.zone(), Some("retry-state"));
        assert_eq!(rules.key("r"), "retry-state/kong_retry/protect/r");
        // The cache may equal the window.
        assert!(parse(br#"{"mode":"adaptive","adaptive":{"window":1000,"cache":1000}}"#).is_ok());
    }

    #[test]
    fn adaptive_settings_outside_adaptive_mode_name_mode() {
        let e = err(r#"{"mode":"dispatch","maintenance_windows":[]}"#);
        assert_eq!(e.field, "mode");
        assert!(e.allowed.contains("maintenance_windows"), "{e}");
        assert!(e.allowed.contains("adaptive"), "{e}");
        let e = err(r#"{"mode":"adaptive","adaptive":{"zone":"z"}}"#);
        assert!(e.allowed.contains("budget.zone"), "{e}");
    }

    #[test]
    fn invalid_utf8_is_an_error_not_a_panic() {
        assert_eq!(parse(&[0xff, 0xfe]).unwrap_err().field, "(config)");
    }
}
