//! The gateways compared, each started fresh in front of a pool: real Envoy 1.40 without a
//! filter, with its own `retry_policy`, with kong_retry (response, adaptive); and the test
//! host's live mode under Kong's rules (a trivial filter, kong_retry dispatch, adaptive).

use crate::delay::DelayServer;
use crate::forwarder::Forwarder;
use crate::{err, LabError};
use kong_retry_harness::envoy::{Bootstrap, Envoy, WasmFilter};
use proxy_wasm_test_host::live::{LiveGateway, LiveOptions};
use proxy_wasm_test_host::{Gateway as HostGateway, Profile, WasmModule};
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

/// The filter's config in the lab. `backoff.jitter` is not in this revision's filter, so
/// the schedule that hides a 2 s gap is fixed 500 ms × 5 retries within a 7 s deadline.
/// The budget is raised for the lab (see [`LAB_BUDGET`]).
pub fn filter_config(mode: &str, upstream: &str) -> Value {
    json!({
        "mode": mode,
        "upstream": upstream,
        "retries": 5,
        "retry_on": "502,503,504,connect-failure,timeout,reset",
        "per_try_timeout": 2000,
        "deadline": 7000,
        "backoff": { "strategy": "fixed", "interval": 500 },
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
    Host {
        gateway: LiveGateway,
        _service: Forwarder,
        _delay: DelayServer,
    },
}

impl Running {
    /// Starts `row` in front of `upstreams`.
    pub fn start(row: Row, upstreams: &[SocketAddr], m: &Modules) -> Result<Running, LabError> {
        let envoy = |filter: Option<&str>, policy: bool| -> Result<Running, LabError> {
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
            Ok(Running::Envoy(Envoy::start(&b)?))
        };
        let host = |module: &PathBuf, config: Option<&str>| -> Result<Running, LabError> {
            let service = Forwarder::start(upstreams.to_vec())?;
            let wasm = WasmModule::from_file(module)
                .map_err(|e| err(format!("loading {}: {e}", module.display())))?;
            let target = service.addr().to_string();
            let delay = DelayServer::start()?;
            let cfg = match config {
                Some(mode) => {
                    let mut c = filter_config(mode, &target);
                    c["delay_endpoint"] = Value::from(delay.addr().to_string());
                    c.to_string()
                }
                None => "{}".into(),
            };
            let builder = HostGateway::builder(Profile::Kong, &wasm)
                .plugin_config(cfg)
                .workers(WORKERS as usize)
                .upstream(&target)
                .log_level(proxy_wasm_test_host::LogLevel::Warn);
            let gateway = LiveGateway::start(builder, LiveOptions::default())
                .map_err(|e| err(format!("test host: {e}")))?;
            Ok(Running::Host {
                gateway,
                _service: service,
                _delay: delay,
            })
        };
        match row {
            Row::EnvoyPlain => envoy(None, false),
            Row::EnvoyRetryPolicy => envoy(None, true),
            Row::EnvoyResponse => envoy(Some("response"), false),
            Row::EnvoyAdaptive => envoy(Some("adaptive"), false),
            Row::KongPlain => host(&m.trivial, None),
            Row::KongDispatch => host(&m.filter, Some("dispatch")),
            Row::KongAdaptive => host(&m.filter, Some("adaptive")),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        match self {
            Running::Envoy(e) => e.addr(),
            Running::Host { gateway, .. } => gateway.addr(),
        }
    }

    /// Retries the gateway sent: Envoy's `upstream_rq_retry` for its retry_policy, the
    /// filter's `kong_retry_retries_total` otherwise.
    pub fn retries(&self) -> u64 {
        match self {
            Running::Envoy(e) => e
                .metrics()
                .map(|m| {
                    m.value("kong_retry_retries_total")
                        + m.with_label("envoy_cluster_upstream_rq_retry", "backend")
                            .unwrap_or(0.0)
                })
                .unwrap_or(0.0) as u64,
            Running::Host { gateway, .. } => gateway
                .with_gateway(|g| g.metric("kong_retry_retries_total"))
                .unwrap_or(0),
        }
    }

    /// The gateway's retry counters at the end (the filter's `kong_retry_*`, Envoy's
    /// cluster retry stats), for the notes.
    pub fn counters(&self) -> Vec<(String, u64)> {
        let keep = |n: &str| {
            n.starts_with("kong_retry_")
                || (n.starts_with("envoy_cluster_upstream_rq_retry") && !n.contains("backoff"))
        };
        match self {
            Running::Envoy(e) => {
                let Ok(text) = e.admin_get("/stats/prometheus") else {
                    return Vec::new();
                };
                let mut out: Vec<(String, u64)> = Vec::new();
                for line in text.lines().filter(|l| !l.starts_with('#')) {
                    let Some((name, value)) = line.rsplit_once(' ') else {
                        continue;
                    };
                    let family = name.split('{').next().unwrap_or(name);
                    if !keep(family)
                        || (family.starts_with("envoy_cluster") && !name.contains("\"backend\""))
                    {
                        continue;
                    }
                    let v = value.parse::<f64>().unwrap_or(0.0) as u64;
                    match out.iter_mut().find(|(n, _)| n == family) {
                        Some((_, total)) => *total += v,
                        None => out.push((family.to_string(), v)),
                    }
                }
                out.retain(|(_, v)| *v > 0);
                out
            }
            Running::Host { gateway, .. } => gateway.with_gateway(|g| {
                g.metrics()
                    .into_iter()
                    .filter(|(n, v)| keep(n) && *v > 0)
                    .collect()
            }),
        }
    }

    /// Errors the gateway logged about the filter (traps, wasm errors), for the report.
    pub fn filter_errors(&self) -> Vec<String> {
        match self {
            Running::Envoy(e) => e.wasm_errors(),
            Running::Host { gateway, .. } => {
                gateway.with_gateway(|g| g.traps().iter().map(|t| format!("{t:?}")).collect())
            }
        }
    }
}
