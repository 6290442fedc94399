//! On real Envoy 1.40, response mode: a keyed POST whose native attempt got a 503 decides
//! its key by who made the 503. The upstream's own (`response.code_details` is
//! `via_upstream`) proves the request was not applied: the key is released and the
//! client's retry runs. Envoy's own, after a failed connection, may follow a request that
//! reached the upstream: the key stays locked and the retry gets 409.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kong_retry_harness::client::Request;
use kong_retry_harness::envoy::{Bootstrap, Envoy, WasmFilter};
use kong_retry_harness::upstream::Upstream;
use serde_json::json;
use std::net::{SocketAddr, TcpListener};

fn envoy(upstream: SocketAddr) -> Envoy {
    let wasm = kong_retry_harness::wasm::filter().unwrap_or_else(|e| panic!("{e}"));
    let cfg = json!({"mode": "response", "upstream": "backend", "retries": 2,
        "backoff": {"strategy": "fixed", "interval": 10},
        "idempotency": {"enabled": true}})
    .to_string();
    let b = Bootstrap::new(&[upstream]).filter(WasmFilter::kong_retry(&wasm, &cfg));
    Envoy::start(&b).unwrap_or_else(|e| panic!("{e}"))
}

fn pay(envoy: &Envoy, id: &str, key: &str, body: &[u8]) -> kong_retry_harness::client::Response {
    envoy
        .send(
            &Request::new("POST", &format!("/pay?id={id}&plan=503"))
                .header("idempotency-key", key)
                .body(body.to_vec()),
        )
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_upstreams_503_releases_the_key_and_envoys_own_keeps_it_locked() {
    let upstream = Upstream::start().unwrap_or_else(|e| panic!("{e}"));
    let gw = envoy(upstream.addr());
    assert_eq!(pay(&gw, "a", "k1", b"amount=1").status, 503);
    assert_eq!(
        pay(&gw, "a", "k1", b"amount=1").status,
        503,
        "released: the retry runs"
    );
    assert_eq!(upstream.calls("a").unwrap().len(), 6, "3 attempts each");
    gw.check_wasm_clean().unwrap_or_else(|e| panic!("{e}"));

    // A port nobody listens on: Envoy answers 503 itself. Without a body: a refused connect
    // can beat the body to the filter, and the request then goes unclaimed (the lab's
    // early-failure gap), which would make this check a race.
    let dead = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let gw = envoy(dead);
    let first = pay(&gw, "b", "k2", b"");
    assert_eq!(first.status, 503);
    assert!(
        first.text().contains("reset before headers"),
        "{}",
        first.text()
    );
    let again = pay(&gw, "b", "k2", b"");
    assert_eq!(again.status, 409, "{}", again.text());
    assert!(again.header("retry-after").is_some());
    gw.check_wasm_clean().unwrap_or_else(|e| panic!("{e}"));
}
