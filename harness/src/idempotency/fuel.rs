//! The filter's wasm fuel per keyed POST on the test host (wasmtime with fuel metering),
//! where each etcd call the filter dispatches is answered by a real etcd, so the filter
//! parses real answers on the etcd path. Feature `fuel` (the test host's runtime, which
//! `./demo.sh`'s short build leaves out).

use super::cost::BODY;
use super::{filter_config, Store};
use crate::client::{self, Request as ClientRequest};
use crate::HarnessError;
use proxy_wasm_test_host::{
    Failure, Gateway, LogLevel, Profile, Reply, Request, RequestStats, UpstreamCall, WasmModule,
};
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;

/// The filter's cost per keyed POST on the test host.
#[derive(Debug, Clone)]
pub struct Fuel {
    pub profile: Profile,
    pub store: Store,
    pub requests: u64,
    pub totals: RequestStats,
    /// etcd calls the filter made, in all.
    pub etcd_calls: u64,
}

impl Fuel {
    pub fn per_request(&self, total: u64) -> f64 {
        total as f64 / self.requests.max(1) as f64
    }
}

/// Requests per worker before measuring (host detection, first allocations).
const FUEL_WARMUP: usize = 4;
const WORKERS: usize = 2;

/// Runs `requests` keyed POSTs (a new key each) on the test host under `profile`, in
/// dispatch mode, with idempotency on `store`; the backend answers 200 at once, the etcd
/// calls go to the real etcd at `etcd`. A request's cost is what the host booked to its
/// context plus the root context's work while it ran (as `bench/` counts it).
pub fn fuel(
    module: &WasmModule,
    profile: Profile,
    store: Store,
    etcd: SocketAddr,
    requests: usize,
) -> Result<Fuel, HarnessError> {
    let etcd_target = match profile {
        Profile::Envoy => "etcd".to_string(),
        Profile::Kong => etcd.to_string(),
    };
    let (upstream, top) = match profile {
        Profile::Envoy => ("orders", json!({"upstream": "orders"})),
        Profile::Kong => (
            "orders.internal:8080",
            json!({"upstream": "orders.internal:8080", "delay_endpoint": "127.0.0.1:8555"}),
        ),
    };
    let config = filter_config(store, &json!({"etcd": {"endpoint": etcd_target}}), &top);
    let what = format!("{profile:?}, store {}", store.name());
    let mut gw = Gateway::builder(profile, module)
        .plugin_config(config.to_string())
        .workers(WORKERS)
        .upstream(upstream)
        .cluster(upstream)
        .cluster("etcd")
        .seed(7)
        .log_level(LogLevel::Info)
        .build()
        .map_err(|e| HarnessError::new(format!("{what}: {e}")))?;
    let mut out = Fuel {
        profile,
        store,
        requests: 0,
        totals: RequestStats::default(),
        etcd_calls: 0,
    };
    for i in 0..WORKERS * FUEL_WARMUP + requests {
        let req = Request::new("POST", "/orders")
            .authority("api.example.com")
            .header("content-type", "application/json")
            .header("idempotency-key", &format!("fuel-{i}"))
            .body(BODY.to_vec());
        let root_before = gw.root_stats();
        let mut etcd_calls = 0u64;
        let mut failure = None;
        let ex = gw
            .run_on(i % WORKERS, req, |call: &UpstreamCall| {
                if call.upstream() == Some(etcd_target.as_str()) {
                    etcd_calls += 1;
                    return etcd_reply(etcd, call).unwrap_or_else(|e| {
                        failure = Some(e);
                        Reply::failure(Failure::Refused)
                    });
                }
                Reply::status(200)
                    .header("content-type", "application/json")
                    .header("content-length", "11")
                    .body(b"{\"ok\":true}".to_vec())
            })
            .map_err(|e| HarnessError::new(format!("{what}: request {i}: {e}")))?;
        if let Some(e) = failure {
            return Err(HarnessError::new(format!("{what}: request {i}: etcd: {e}")));
        }
        gw.advance(1);
        if let Some(trap) = gw.traps().first() {
            return Err(HarnessError::new(format!(
                "{what}: request {i}: trap in {}: {}",
                trap.phase, trap.message
            )));
        }
        if ex.response.status != 200 {
            return Err(HarnessError::new(format!(
                "{what}: request {i}: the client got {} {}",
                ex.response.status,
                ex.response.body_text()
            )));
        }
        if i < WORKERS * FUEL_WARMUP {
            continue;
        }
        let stats = gw
            .stats(ex.request)
            .ok_or_else(|| HarnessError::new(format!("{what}: request {i}: no stats")))?;
        let root = gw.root_stats();
        out.requests += 1;
        out.etcd_calls += etcd_calls;
        out.totals.add(&stats);
        out.totals.add(&root.since(&root_before));
    }
    Ok(out)
}

/// Sends the filter's etcd call to the real etcd and hands its answer back.
fn etcd_reply(etcd: SocketAddr, call: &UpstreamCall) -> Result<Reply, String> {
    let req = ClientRequest::new(&call.method, &call.path)
        .header("content-type", "application/json")
        .body(call.body.clone())
        .timeout(Duration::from_secs(5));
    let r = client::send(etcd, &req).map_err(|e| format!("{} {}: {e}", call.method, call.path))?;
    Ok(Reply::status(r.status)
        .header("content-type", "application/json")
        .header("content-length", &r.body.len().to_string())
        .body(r.body))
}
