//! The shipped deployment file `envoy/envoy.yaml`, loaded as it is (only addresses and
//! the module path changed), and adaptive mode's counters.

use crate::common::*;
use kong_retry_harness::client::Request;
use kong_retry_harness::envoy::Envoy;
use kong_retry_harness::upstream::Upstream;
use serde_json::json;
use std::path::Path;

/// `envoy/envoy.yaml` with its addresses on loopback and the module at `wasm`; every
/// replaced text must be there (a changed file fails here, not silently).
fn shipped_yaml(upstream_port: u16, wasm: &Path) -> String {
    let path = kong_retry_harness::repo_root()
        .join("envoy")
        .join("envoy.yaml");
    let mut yaml =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let swaps = [
        (
            "address: 0.0.0.0, port_value: 10000",
            "address: 127.0.0.1, port_value: 0".to_string(),
        ),
        (
            "address: 127.0.0.1, port_value: 9901",
            "address: 127.0.0.1, port_value: 0".to_string(),
        ),
        (
            "address: orders.shop.svc.cluster.local, port_value: 8080",
            format!("address: 127.0.0.1, port_value: {upstream_port}"),
        ),
        (
            "filename: /etc/envoy/kong_retry.wasm",
            format!("filename: {}", wasm.display()),
        ),
    ];
    for (from, to) in swaps {
        assert!(
            yaml.contains(from),
            "envoy/envoy.yaml no longer contains {from:?}"
        );
        yaml = yaml.replace(from, &to);
    }
    yaml
}

fn check_shipped_config(wasm: &Path) {
    let upstream = Upstream::start().unwrap();
    let envoy = Envoy::start_yaml(&shipped_yaml(upstream.addr().port(), wasm), 2, "info")
        .unwrap_or_else(|e| panic!("envoy/envoy.yaml with {}: {e}", wasm.display()));
    let r = envoy
        .send(&Request::get("/orders/1?id=orders&plan=503,ok"))
        .unwrap();
    assert_eq!(r.status, 200, "the filter retries on /");
    assert_eq!(r.header("x-kong-retry-attempts"), Some("2"));
    assert_eq!(upstream.calls("orders").unwrap().len(), 2);
    let r = envoy
        .send(&Request::get("/reports/1?id=reports&plan=503,ok"))
        .unwrap();
    assert_eq!(r.status, 503, "the filter is disabled on /reports");
    assert_eq!(r.header("x-kong-retry-attempts"), None);
    assert_eq!(upstream.calls("reports").unwrap().len(), 1);
    if let Err(e) = envoy.check_wasm_clean() {
        panic!("{}: {e}", wasm.display());
    }
}

#[test]
fn shipped_envoy_yaml_loads_and_keeps_its_per_route_toggle() {
    check_shipped_config(&filter_wasm());
    // The module ./wasm-build.sh ships (./test.sh builds it first).
    let dist = kong_retry_harness::repo_root()
        .join("dist")
        .join("kong_retry.wasm");
    if dist.is_file() {
        check_shipped_config(&dist);
    }
}

#[test]
fn adaptive_mode_counts_calm_and_protected_requests() {
    in_modes(&[Mode::Adaptive], |mode| {
        // Rig::start arms protection with one calm request that fails (503).
        let rig = Rig::start(mode, json!({}));
        let m = rig.metrics();
        assert_eq!(m.value("kong_retry_calm_requests_total"), 1.0);
        assert_eq!(m.value("kong_retry_failures_seen_calm_total"), 1.0);
        assert_eq!(m.value("kong_retry_protection_started_total"), 1.0);
        assert_eq!(m.value("kong_retry_protected_requests_total"), 0.0);
        let r = rig.ok(&Request::get("/a?id=after&plan=503,ok"));
        assert_eq!(r.status, 200);
        let m = rig.metrics();
        assert_eq!(m.value("kong_retry_protected_requests_total"), 1.0);
        assert_eq!(m.value("kong_retry_calm_requests_total"), 1.0);
        assert_eq!(m.value("kong_retry_requests_total"), 2.0);
        rig.assert_clean();
    });
}
