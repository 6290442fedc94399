//! The filter's JSON configuration, parsed once into a validated, immutable [`Plan`].
//!
//! Parsing is hand-written over `serde_json::Value` (not `#[derive(Deserialize)]`) so that
//! every error names the field, the value that was wrong and what is allowed, and so that
//! names people paste from other products (`retry_timeout`, `num_retries`) get a pointer to
//! ours instead of a bare "unknown field".

mod adaptive;
mod backoff;
mod budget;
mod error;
mod hints;
mod idempotency;
mod read;
mod retry_on;
mod upstream;

pub use adaptive::{AdaptiveConfig, ProtectionScope};
pub use backoff::{Backoff, Jitter};
pub use budget::{
    BudgetConfig, BudgetScope, BudgetStore, BudgetStoreConfig, StoreUnavailable,
    DEFAULT_BUDGET_ZONE,
};
pub(crate) use error::truncated;
pub use error::ConfigError;
pub use idempotency::{
    EtcdConfig, IdempotencyConfig, IdempotencyStore, SharedBounds, DEFAULT_ETCD_PREFIX,
};
pub use retry_on::{FailureKind, RetryOn};
pub use upstream::{parse_upstream, upstream_from_kong_service, Scheme, Upstream};

use crate::maintenance::MaintenanceSchedule;
use read::{int_in, list_items, one_of, string};
use serde_json::Value;

/// Largest `retries` accepted.
pub const MAX_RETRIES: u32 = 10;
/// Largest `max_body_bytes` accepted (a copy lives in the VM's linear memory per request).
pub const MAX_BODY_LIMIT: u64 = 64 * 1024 * 1024;
/// Largest duration accepted anywhere in the config: one hour, in ms.
pub const MAX_DURATION_MS: u64 = 3_600_000;

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
    /// Gateway-side idempotency keys (the key header is `idempotency_header`).
    pub idempotency: IdempotencyConfig,
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
            // Envoy's defaults: base 25 ms, max 10 × base, full jitter.
            backoff: Backoff::Exponential {
                base_ms: 25,
                max_ms: 250,
                jitter: Jitter::Full,
            },
            retry_after_max_ms: 10_000,
            budget: BudgetConfig::default(),
            budget_store: BudgetStoreConfig::default(),
            delay_endpoint: None,
            adaptive: AdaptiveConfig::default(),
            maintenance_windows: MaintenanceSchedule::default(),
            idempotency: IdempotencyConfig::default(),
        }
    }
}

impl Plan {
    /// The budget module's rules for this plan.
    pub fn budget_rules(&self) -> crate::state::budget::BudgetRules {
        crate::state::budget::BudgetRules {
            enabled: self.budget.enabled,
            percent: f64::from(self.budget.percent),
            min_retries_per_second: self.budget.min_retries_per_second,
            window_ms: self.budget.window_ms,
            zone: Some(self.budget_store.zone.clone()),
        }
    }

    /// Adaptive protection's rules for this plan (same zone as the budget).
    pub fn protection_rules(&self) -> crate::state::protection::ProtectionRules {
        crate::state::protection::ProtectionRules::new(
            self.adaptive.window_ms,
            self.adaptive.cache_ms,
            Some(self.budget_store.zone.clone()),
        )
        // The parser checks the same bounds, and zone names never hold '/'; a default
        // keeps this total.
        .unwrap_or_default()
    }
}

/// The top-level fields `parse` accepts, in the order the unknown-field error lists them.
pub const FIELDS: &[&str] = &[
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
    "idempotency",
];

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
            let allowed = match hints::hint_for_unknown(name) {
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
        plan.retry_on = retry_on::parse_retry_on(v)?;
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
        plan.backoff = backoff::parse_backoff(v)?;
    }
    if let Some(v) = obj.get("retry_after_max") {
        plan.retry_after_max_ms = int_in("retry_after_max", v, 0, MAX_DURATION_MS, " (ms)")?;
    }
    if let Some(v) = obj.get("budget") {
        (plan.budget, plan.budget_store) = budget::parse_budget(v)?;
    }
    if let Some(v) = obj.get("delay_endpoint") {
        plan.delay_endpoint = upstream::parse_delay_endpoint(v)?;
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
        plan.adaptive = adaptive::parse_adaptive(v)?;
    }
    if let Some(v) = obj.get("maintenance_windows") {
        plan.maintenance_windows = MaintenanceSchedule::from_json(v)?;
    }
    if let Some(v) = obj.get("idempotency") {
        plan.idempotency = idempotency::parse_idempotency(v, plan.deadline_ms)?;
    }
    Ok(plan)
}

fn parse_mode(v: &Value) -> Result<Mode, ConfigError> {
    const ALLOWED: &str = "one of \"auto\", \"dispatch\", \"response\", \"adaptive\"";
    one_of(
        "mode",
        v,
        ALLOWED,
        &[
            ("auto", Mode::Auto),
            ("dispatch", Mode::Dispatch),
            ("response", Mode::Response),
            ("adaptive", Mode::Adaptive),
        ],
    )
}

fn parse_methods(v: &Value) -> Result<Vec<String>, ConfigError> {
    parse_methods_of(
        "methods",
        v,
        "[\"GET\",\"HEAD\",\"OPTIONS\",\"TRACE\",\"PUT\",\"DELETE\"]",
    )
}

/// A list (or comma-separated string) of HTTP methods for `field`, upper case, deduplicated;
/// `example` shows a good value in the error.
fn parse_methods_of(field: &str, v: &Value, example: &str) -> Result<Vec<String>, ConfigError> {
    let allowed = format!("a list of HTTP methods, e.g. {example}");
    let mut out = Vec::new();
    for item in list_items(field, v, &allowed)? {
        if item.is_empty() {
            continue;
        }
        if !item.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-') {
            return Err(ConfigError {
                field: field.into(),
                value: format!("{item:?}"),
                allowed,
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
            (r#"{"backoff":{"jitter":"none"}}"#, "backoff.jitter"),
            (
                r#"{"backoff":{"strategy":"fixed","interval":1,"jitter":"full"}}"#,
                "backoff.jitter",
            ),
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
    fn invalid_utf8_is_an_error_not_a_panic() {
        assert_eq!(parse(&[0xff, 0xfe]).unwrap_err().field, "(config)");
    }
}
