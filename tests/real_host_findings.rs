//! What the real hosts showed the first shipped module doing wrong (issues 10 and 11), each
//! as a test of the real filter `.wasm` on the test host, whose profiles now follow the
//! real hosts' rules (host/README.md cites each). Every test here failed on main at 6ffdbba.

// Test code: a failed setup step should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod host_support;

use host_support::*;
use proxy_wasm_test_host::{Failure, LogLevel, Profile, Reply, Request};

/// A valid config starts both hosts without a line above info: no error for a scoped
/// property read in the root context (Kong: `cannot get scoped properties outside of a
/// request`), no NYI host call, no start-up host call (Envoy: `restricted_callback`).
#[test]
fn a_healthy_start_logs_nothing_above_info() {
    for setup in SETUPS {
        for extra in ["", r#""mode":"adaptive""#] {
            let mut gw = setup.gateway(extra, 2);
            let ex = gw
                .run(Request::new("GET", "/x"), script(vec![Reply::status(200)]))
                .unwrap();
            assert_eq!(ex.response.status, 200, "{setup:?} {extra}");
            let loud: Vec<String> = gw
                .logs()
                .into_iter()
                .filter(|l| l.level > LogLevel::Info)
                .map(|l| l.message)
                .collect();
            assert!(loud.is_empty(), "{setup:?} {extra}: {loud:?}");
            assert!(gw.traps().is_empty(), "{setup:?}: {:?}", gw.traps());
            assert!(gw.log_contains("host detected: "), "{setup:?}");
        }
    }
}

/// The host is decided from the first request, where each host answers what only it has:
/// on Kong the filter must not take itself for Envoy (Kong answers `plugin_root_id` too).
/// What shows it: Kong's attempts are all dispatched (it cannot retry after the native
/// response), Envoy's first attempt goes natively (response mode).
#[test]
fn each_host_is_told_apart_from_the_first_request() {
    for (setup, first_native) in [(Setup::Kong, false), (Setup::EnvoyResponse, true)] {
        let mut gw = setup.gateway("", 1);
        let ex = gw
            .run(
                Request::new("GET", "/x"),
                script(vec![Reply::status(503), Reply::status(200)]),
            )
            .unwrap();
        assert_eq!(ex.response.status, 200, "{setup:?}");
        let backend: Vec<_> = ex.calls.iter().filter(|c| is_backend(c)).collect();
        assert_eq!(backend.len(), 2, "{setup:?}");
        assert_eq!(!backend[0].is_dispatch(), first_native, "{setup:?}");
        assert!(backend[1].is_dispatch(), "{setup:?}");
    }
}

/// Every backoff wait on Kong logged `dispatch failed: tcp socket - timed out reading`: the
/// delay call's timeout equalled the delay and fired before the delay server's 204.
#[test]
fn a_wait_on_the_delay_endpoint_outlives_its_delay() {
    let mut gw = Setup::Kong.gateway(r#""backoff":{"strategy":"fixed","interval":200}"#, 1);
    let ex = gw
        .run(
            Request::new("GET", "/x"),
            script(vec![Reply::status(503), Reply::status(200)]),
        )
        .unwrap();
    assert_eq!(ex.response.status, 200);
    let waits: Vec<_> = ex.calls.iter().filter(|c| !is_backend(c)).collect();
    assert_eq!(waits.len(), 1, "{:?}", ex.calls);
    assert_eq!(delay_asked(waits[0]), Some(200));
    assert!(waits[0].timeout_ms > 200, "timeout {}", waits[0].timeout_ms);
}

/// A HEAD answered in dispatch mode lost the upstream's Content-Length on Kong. (On Envoy
/// the same promise is checked on the real Envoy 1.40: harness/tests/envoy/framing.rs.)
#[test]
fn a_head_answer_keeps_the_upstreams_content_length() {
    {
        let setup = Setup::Kong;
        let mut gw = setup.gateway("", 1);
        let ex = gw
            .run(
                Request::new("HEAD", "/x"),
                script(vec![Reply::status(200).header("content-length", "5")]),
            )
            .unwrap();
        assert_eq!(ex.response.status, 200, "{setup:?}");
        assert_eq!(ex.response.header("content-length"), Some("5"), "{setup:?}");
        assert!(ex.response.body.is_empty(), "{setup:?}");
        assert!(!ex.response.framing_error, "{setup:?}");
    }
}

/// A connection that broke after the request was sent was logged and counted as a
/// connect failure; Kong's `broken connection` may have reached the upstream.
#[test]
fn kongs_broken_connection_is_a_reset() {
    let mut gw = Setup::Kong.gateway("", 1);
    let ex = gw
        .run(
            Request::new("GET", "/x"),
            script(vec![Reply::failure(Failure::Reset), Reply::status(200)]),
        )
        .unwrap();
    assert_eq!(ex.response.status, 200);
    assert!(gw.log_contains("after reset"), "{:?}", gw.logs());
    assert_eq!(
        metric(&gw, "kong_retry_retries_by_reason_total_reason_reset"),
        1
    );
    assert_eq!(
        metric(
            &gw,
            "kong_retry_retries_by_reason_total_reason_connect_failure"
        ),
        0
    );
}

/// When every attempt failed, Kong's client got a dropped connection: the local response
/// was sent from the callback of a failed dispatch.
#[test]
fn when_every_attempt_times_out_the_client_gets_a_504_with_a_body() {
    let mut gw = Setup::Kong.gateway(r#""retries":2,"per_try_timeout":300"#, 1);
    let ex = gw
        .run(
            Request::new("GET", "/x"),
            script(vec![Reply::failure(Failure::Timeout)]),
        )
        .unwrap();
    assert!(!ex.response.is_dropped(), "{:?}", ex.response);
    assert_eq!(ex.response.status, 504);
    assert!(ex.response.body_text().contains("timeout"));
    assert_eq!(ex.calls.iter().filter(|c| is_backend(c)).count(), 3);
}

/// A rejected config killed the Kong worker for good (`on_configure failure`, "cannot be
/// respawned"): the gateway served nothing.
#[test]
fn a_rejected_config_keeps_every_worker_serving() {
    for profile in [Profile::Kong, Profile::Envoy] {
        let mut gw = proxy_wasm_test_host::Gateway::builder(profile, module())
            .plugin_config(r#"{"retries":"three"}"#)
            .cluster(CLUSTER)
            .workers(2)
            .build()
            .unwrap();
        for w in 0..2 {
            assert!(gw.exited(w).is_none(), "{profile:?} worker {w} exited");
            let ex = gw
                .run_on(
                    w,
                    Request::new("GET", "/x"),
                    script(vec![Reply::status(200)]),
                )
                .unwrap();
            assert_eq!(ex.response.status, 200, "{profile:?}");
        }
        assert!(!log_lines(&gw, LogLevel::Error, "`retries`").is_empty());
    }
}
