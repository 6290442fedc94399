//! The gateways compared, each started fresh in front of a pool: real Envoy 1.40 without a
//! filter, with its own `retry_policy`, with kong_retry (response, adaptive); and the test
//! host's live mode under Kong's rules (a trivial filter, kong_retry dispatch, adaptive).

use crate::LabError;
use kong_retry_harness::envoy::{Bootstrap, Envoy, WasmFilter};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row {
    EnvoyPlain,
    EnvoyRetryPolicy,
    EnvoyResponse,
    EnvoyAdaptive,
    KongPlain,
    KongDispatch,
    KongAdaptive,
}

pub const ALL: [Row; 7] = [
    Row::EnvoyPlain,
    Row::EnvoyRetryPolicy,
    Row::EnvoyResponse,
    Row::EnvoyAdaptive,
    Row::KongPlain,
    Row::KongDispatch,
    Row::KongAdaptive,
];

/// The gateway-node replacement's rows (two real Envoy nodes each).
pub const NODE_ROWS: [Row; 4] = [
    Row::EnvoyPlain,
    Row::EnvoyRetryPolicy,
    Row::EnvoyResponse,
    Row::EnvoyAdaptive,
];

/// `--short`: Envoy with and without the filter.
pub const SHORT: [Row; 2] = [Row::EnvoyPlain, Row::EnvoyResponse];

/// Gateway workers (Envoy `--concurrency`, test host VM instances).
pub const WORKERS: u32 = 2;

impl Row {
    pub fn label(self) -> &'static str {
        match self {
            Row::EnvoyPlain => "Envoy 1.40, no filter",
            Row::EnvoyRetryPolicy => "Envoy 1.40, retry_policy + retry_budget",
            Row::EnvoyResponse => "Envoy 1.40 + kong-retry response",
            Row::EnvoyAdaptive => "Envoy 1.40 + kong-retry adaptive",
            Row::KongPlain => "test host under Kong's rules, trivial filter",
            Row::KongDispatch => "test host under Kong's rules + kong-retry dispatch",
            Row::KongAdaptive => "test host under Kong's rules + kong-retry adaptive",
        }
    }

    /// Does the kong_retry filter run in this row?
    pub fn has_filter(self) -> bool {
        matches!(
            self,
            Row::EnvoyResponse | Row::EnvoyAdaptive | Row::KongDispatch | Row::KongAdaptive
        )
    }

    pub fn is_adaptive(self) -> bool {
        matches!(self, Row::EnvoyAdaptive | Row::KongAdaptive)
    }
}

/// Envoy's own retries, the peer to beat: as many retries as the filter's schedule, a
/// backoff that can span the 2 s gap, Retry-After honoured, the default-like budget.
pub const ENVOY_RETRY_POLICY: &str = "{ retry_on: \"5xx,reset,connect-failure\", num_retries: 5, per_try_timeout: 2s, retry_back_off: { base_interval: 0.25s, max_interval: 1s }, rate_limited_retry_back_off: { reset_headers: [ { name: retry-after, format: SECONDS } ], max_interval: 5s } }";
pub const ENVOY_RETRY_BUDGET: &str =
    "{ budget_percent: { value: 20.0 }, min_retry_concurrency: 3 }";

/// The filter's config in the lab: the shipped schedule (`envoy/envoy.yaml`, `kong/kong.yml`:
/// 5 retries, exponential backoff 300–1200 ms with equal jitter, so at least 2.25 s of waits
/// bridge a 2 s gap, within the 10 s deadline), with the budget raised (see [`LAB_BUDGET`]).
pub fn filter_config(mode: &str, upstream: &str) -> Value {
    json!({
        "mode": mode,
        "upstream": upstream,
        "retries": 5,
        "retry_on": "502,503,504,connect-failure,timeout,reset",
        "per_try_timeout": 2000,
        "deadline": 10000,
        "backoff": { "strategy": "exponential", "base_interval": 300, "max_interval": 1200, "jitter": "equal" },
        "budget": LAB_BUDGET.clone(),
    })
}

/// At 200 req/s a 2 s all-down gap needs up to 5 retries for each of ~400 requests; the
/// default budget (20 % of requests + 10/s) would refuse most of them. The lab sets this
/// and says so in docs/lab.md.
pub static LAB_BUDGET: std::sync::LazyLock<Value> =
    std::sync::LazyLock::new(|| json!({ "percent": 100, "min_retries_per_second": 1000 }));

/// The `.wasm` modules the rows load.
#[derive(Debug, Clone)]
pub struct Modules {
    pub filter: PathBuf,
    /// `harness/fixtures/header-filter`: adds a header, retries nothing (the "no filter"
    /// row on the test host, which always runs a module).
    pub trivial: PathBuf,
}

impl Modules {
    pub fn build(with_kong: bool) -> Result<Modules, LabError> {
        let filter = kong_retry_harness::wasm::filter()?;
        let trivial = if with_kong {
            kong_retry_harness::wasm::fixture("header-filter")?
        } else {
            PathBuf::new()
        };
        Ok(Modules { filter, trivial })
    }
}

/// A started gateway.
pub enum Running {
    Envoy(Envoy),
    #[cfg(feature = "kong-rows")]
    Host(crate::test_host::HostGateway),
}

impl Running {
    /// Starts `row` in front of `upstreams`.
    pub fn start(row: Row, upstreams: &[SocketAddr], m: &Modules) -> Result<Running, LabError> {
        if let Some(b) = envoy_bootstrap(row, upstreams, m) {
            return Ok(Running::Envoy(Envoy::start(&b)?));
        }
        #[cfg(feature = "kong-rows")]
        return Ok(Running::Host(crate::test_host::HostGateway::start(
            row, upstreams, m,
        )?));
        #[cfg(not(feature = "kong-rows"))]
        Err(crate::err(format!(
            "{}: this build has no rows on the test host (build with the default feature kong-rows)",
            row.label()
        )))
    }

    pub fn addr(&self) -> SocketAddr {
        match self {
            Running::Envoy(e) => e.addr(),
            #[cfg(feature = "kong-rows")]
            Running::Host(h) => h.addr(),
        }
    }

    /// Retries the gateway sent: Envoy's `upstream_rq_retry` for its retry_policy, the
    /// filter's `kong_retry_retries_total` otherwise.
    pub fn retries(&self) -> u64 {
        match self {
            Running::Envoy(e) => envoy_retries(e),
            #[cfg(feature = "kong-rows")]
            Running::Host(h) => h.retries(),
        }
    }

    /// The gateway's retry counters at the end (the filter's `kong_retry_*`, Envoy's
    /// cluster retry stats), for the notes.
    pub fn counters(&self) -> Vec<(String, u64)> {
        match self {
            Running::Envoy(e) => envoy_counters(e),
            #[cfg(feature = "kong-rows")]
            Running::Host(h) => h.counters(),
        }
    }

    /// Errors the gateway logged about the filter (traps, wasm errors), for the report.
    pub fn filter_errors(&self) -> Vec<String> {
        match self {
            Running::Envoy(e) => e.wasm_errors(),
            #[cfg(feature = "kong-rows")]
            Running::Host(h) => h.filter_errors(),
        }
    }
}

/// The Envoy bootstrap of an Envoy row (None for the rows on the test host).
pub fn envoy_bootstrap(row: Row, upstreams: &[SocketAddr], m: &Modules) -> Option<Bootstrap> {
    let (filter, policy) = match row {
        Row::EnvoyPlain => (None, false),
        Row::EnvoyRetryPolicy => (None, true),
        Row::EnvoyResponse => (Some("response"), false),
        Row::EnvoyAdaptive => (Some("adaptive"), false),
        Row::KongPlain | Row::KongDispatch | Row::KongAdaptive => return None,
    };
    let mut b = Bootstrap::new(upstreams);
    b.concurrency = WORKERS;
    b.log_level = "warning".into();
    if let Some(mode) = filter {
        let cfg = filter_config(mode, "backend").to_string();
        b = b.filter(WasmFilter::kong_retry(&m.filter, &cfg));
    }
    if policy {
        b.retry_policy = Some(ENVOY_RETRY_POLICY.into());
        b.retry_budget = Some(ENVOY_RETRY_BUDGET.into());
    }
    Some(b)
}

/// Retries an Envoy sent: its `upstream_rq_retry` for its retry_policy, the filter's
/// `kong_retry_retries_total` otherwise.
pub fn envoy_retries(e: &Envoy) -> u64 {
    e.metrics()
        .map(|m| {
            m.value("kong_retry_retries_total")
                + m.with_label("envoy_cluster_upstream_rq_retry", "backend")
                    .unwrap_or(0.0)
        })
        .unwrap_or(0.0) as u64
}

/// Is `n` a retry counter worth showing in the notes?
pub fn is_retry_counter(n: &str) -> bool {
    n.starts_with("kong_retry_")
        || (n.starts_with("envoy_cluster_upstream_rq_retry") && !n.contains("backoff"))
}

/// An Envoy's retry counters (the filter's `kong_retry_*`, the `backend` cluster's retry
/// stats), summed over workers.
pub fn envoy_counters(e: &Envoy) -> Vec<(String, u64)> {
    let Ok(text) = e.admin_get("/stats/prometheus") else {
        return Vec::new();
    };
    let mut out: Vec<(String, u64)> = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let family = name.split('{').next().unwrap_or(name);
        if !is_retry_counter(family)
            || (family.starts_with("envoy_cluster") && !name.contains("\"backend\""))
        {
            continue;
        }
        add_counter(&mut out, family, value.parse::<f64>().unwrap_or(0.0) as u64);
    }
    out.retain(|(_, v)| *v > 0);
    out
}

/// Adds `v` to the counter `name` in `counters` (appending it when new).
pub fn add_counter(counters: &mut Vec<(String, u64)>, name: &str, v: u64) {
    match counters.iter_mut().find(|(n, _)| n == name) {
        Some((_, total)) => *total += v,
        None => counters.push((name.to_string(), v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The filter's JSON in envoy/envoy.yaml (the block after `value: |`).
    fn shipped_envoy_config() -> Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../envoy/envoy.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        let block: String = text
            .split("value: |")
            .nth(1)
            .unwrap()
            .lines()
            .skip(1)
            .take_while(|l| l.trim_start().starts_with(['{', '}', '"']))
            .collect();
        serde_json::from_str(&block).unwrap()
    }

    #[test]
    fn the_lab_runs_the_shipped_retry_schedule() {
        let shipped = shipped_envoy_config();
        let lab = filter_config("response", "backend");
        for field in [
            "retries",
            "retry_on",
            "per_try_timeout",
            "deadline",
            "backoff",
        ] {
            assert_eq!(lab[field], shipped[field], "{field}");
        }
    }
}
