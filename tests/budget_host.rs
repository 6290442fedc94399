//! The retry budget of the real filter `.wasm` on the test host, under Kong's and Envoy's
//! rules: several workers (VM instances) spending from one node store, retries waiting in
//! backoff already paid for, per-route keys, and what happens without a store.

// Test code: a failed setup step should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod host_support;

use host_support::*;
use proxy_wasm_test_host::{LogLevel, Reply, Request};

const STORE_WARNING: &str = "retry budget store unavailable";

/// The bound of `src/state/budget.rs` for the default rules (20 %, floor 10/s, fresh start of one
/// second of the floor): retries ≤ 10 + requests × 0.2 + 10 × seconds since the first request.
fn budget_bound(requests: u64, elapsed_ms: u64) -> f64 {
    10.0 + requests as f64 * 0.2 + 10.0 * elapsed_ms as f64 / 1000.0
}

/// `n` GETs, one every `every_ms` of host time, spread over the workers; every backend call
/// answers `status` at once. Returns (backend calls, first request time, last call time,
/// last request time).
fn paced_failures(
    traffic: &mut Traffic,
    n: usize,
    every_ms: u64,
    status: u16,
) -> (usize, u64, u64, u64) {
    let workers = traffic.gw.workers();
    let start = traffic.gw.now_ms();
    let mut upstream = |_: &proxy_wasm_test_host::UpstreamCall| Answer::Now(Reply::status(status));
    for i in 0..n {
        let at = start + i as u64 * every_ms;
        traffic.run_until(at, &mut upstream);
        traffic.send(i % workers, Request::new("GET", &format!("/orders/{i}")));
    }
    let last_request = traffic.gw.now_ms();
    traffic.finish(30_000, &mut upstream);
    let calls = backend_calls(&traffic.gw);
    let last_call = calls.iter().map(|c| c.sent_at_ms).max().unwrap_or(start);
    (calls.len(), start, last_call, last_request)
}

#[test]
fn full_failure_across_workers_stays_within_the_budget() {
    const N: usize = 400;
    for setup in SETUPS {
        let gw = setup.gateway(r#""retries":3"#, 4);
        let mut traffic = Traffic::new(gw);
        let (calls, start, last_call, last_request) = paced_failures(&mut traffic, N, 10, 503);
        let retries = (calls - N) as u64;
        let gw = &traffic.gw;

        // The formula of src/state/budget.rs, from the first request to the last retry decided
        // (no later than the last call), and not stingy either: everything deposited up to
        // the last request was spent, but for the last fraction of a token.
        let upper = budget_bound(N as u64, last_call - start);
        let lower = budget_bound(N as u64, last_request - start) - 1.0;
        assert!(
            (retries as f64) <= upper && (retries as f64) >= lower,
            "{setup:?}: {retries} retries for {N} requests, expected {lower:.1}..={upper:.1}"
        );
        eprintln!("{setup:?}: {retries} retries, bound {lower:.1}..={upper:.1}");
        // Without a budget it would have been 3 × 400.
        assert!(retries < 200, "{setup:?}: {retries}");

        // Every worker took part, one store.
        let workers: std::collections::BTreeSet<usize> =
            backend_calls(gw).iter().map(|c| c.worker).collect();
        assert_eq!(workers.len(), 4, "{setup:?}");
        assert!(gw.shared_data(&setup.budget_key()).is_some(), "{setup:?}");

        // Metrics: every request seen, every retry counted with its reason, every request
        // ended either refused by the budget or with its retries exhausted.
        assert_eq!(
            metric(gw, "kong_retry_requests_total"),
            N as u64,
            "{setup:?}"
        );
        assert_eq!(metric(gw, "kong_retry_retries_total"), retries, "{setup:?}");
        assert_eq!(
            metric(gw, "kong_retry_retries_by_reason_total_reason_503"),
            retries,
            "{setup:?}"
        );
        let denied = metric(gw, "kong_retry_budget_denied_total");
        let exhausted = metric(gw, "kong_retry_exhausted_total");
        assert_eq!(denied + exhausted, N as u64, "{setup:?}");
        assert!(
            denied > exhausted,
            "{setup:?}: {denied} denied, {exhausted} exhausted"
        );
        assert_eq!(metric(gw, "kong_retry_retry_success_total"), 0, "{setup:?}");
        for rid in &traffic.requests {
            assert_eq!(gw.response(*rid).unwrap().status, 503, "{setup:?}");
        }
        assert!(gw.traps().is_empty(), "{setup:?}: {:?}", gw.traps());
    }
}

#[test]
fn without_the_budget_every_failure_is_retried() {
    const N: usize = 100;
    for setup in SETUPS {
        let gw = setup.gateway(r#""retries":3,"budget":{"enabled":false}"#, 4);
        let mut traffic = Traffic::new(gw);
        let (calls, ..) = paced_failures(&mut traffic, N, 10, 503);
        assert_eq!(calls, 4 * N, "{setup:?}");
        let gw = &traffic.gw;
        assert_eq!(
            metric(gw, "kong_retry_exhausted_total"),
            N as u64,
            "{setup:?}"
        );
        assert_eq!(metric(gw, "kong_retry_budget_denied_total"), 0, "{setup:?}");
        // A disabled budget never touches shared data.
        assert!(gw.shared_data(&setup.budget_key()).is_none(), "{setup:?}");
    }
}

#[test]
fn retries_waiting_in_backoff_have_already_paid() {
    // 100 requests fail at the same instant and each wants a retry in one second. A budget
    // that counted only retries in flight (envoy#30205) would let all 100 through.
    const N: usize = 100;
    for setup in SETUPS {
        let gw = setup.gateway(
            r#""retries":1,"backoff":{"strategy":"fixed","interval":1000}"#,
            4,
        );
        let mut traffic = Traffic::new(gw);
        let mut upstream = |_: &proxy_wasm_test_host::UpstreamCall| Answer::Now(Reply::status(503));
        for i in 0..N {
            traffic.send(i % 4, Request::new("GET", "/x"));
        }
        traffic.run_until(999, &mut upstream);
        assert_eq!(
            backend_calls(&traffic.gw).len(),
            N,
            "{setup:?}: nothing retried yet"
        );
        // Decided at t = 0: the fresh start (10) plus 100 × 20 %.
        assert_eq!(
            metric(&traffic.gw, "kong_retry_budget_denied_total"),
            70,
            "{setup:?}"
        );
        traffic.finish(10_000, &mut upstream);
        let calls = backend_calls(&traffic.gw);
        assert_eq!(calls.len(), N + 30, "{setup:?}");
        assert!(
            calls[N..].iter().all(|c| c.sent_at_ms >= 1000),
            "{setup:?}: a retry started before its backoff was over"
        );
        assert_eq!(metric(&traffic.gw, "kong_retry_retries_total"), 30);
    }
}

#[test]
fn budget_scope_is_the_route_by_default_and_the_upstream_as_an_option() {
    for setup in SETUPS {
        let upstream = match setup {
            Setup::Kong => UPSTREAM,
            _ => CLUSTER,
        };
        let upstream_key = format!("kong_retry/kong_retry/budget/{upstream}");
        // Envoy has no route name here: its route key is the upstream's.
        let distinct = setup.budget_key() != upstream_key;

        let mut gw = setup.gateway(r#""backoff":{"strategy":"fixed","interval":0}"#, 1);
        let ex = gw
            .run(Request::new("GET", "/x"), |_| Reply::status(200))
            .unwrap();
        assert_eq!(ex.response.status, 200, "{setup:?}");
        assert!(
            gw.shared_data(&setup.budget_key()).is_some(),
            "{setup:?}: {:?}",
            gw.logs()
        );
        if distinct {
            assert!(gw.shared_data(&upstream_key).is_none(), "{setup:?}");
        }

        let mut gw = setup.gateway(r#""budget":{"scope":"upstream"}"#, 1);
        let ex = gw
            .run(Request::new("GET", "/x"), |_| Reply::status(200))
            .unwrap();
        assert_eq!(ex.response.status, 200, "{setup:?}");
        assert!(gw.shared_data(&upstream_key).is_some(), "{setup:?}");
        if distinct {
            assert!(gw.shared_data(&setup.budget_key()).is_none(), "{setup:?}");
        }
    }
    assert_ne!(
        Setup::Kong.budget_key(),
        format!("kong_retry/kong_retry/budget/{UPSTREAM}"),
        "Kong's route and upstream keys differ, so the scopes are told apart there"
    );
}

#[test]
fn kong_budget_in_a_zone_of_its_own() {
    let mut gw = Setup::Kong
        .builder(r#""budget":{"zone":"retry_state"}"#)
        .shared_data_zone_name("retry_state")
        .build()
        .unwrap();
    let ex = gw
        .run(Request::new("GET", "/x"), |_| Reply::status(200))
        .unwrap();
    assert_eq!(ex.response.status, 200);
    let key = format!("retry_state/kong_retry/budget/{KONG_ROUTE_ID}");
    assert!(gw.shared_data(&key).is_some(), "{:?}", gw.logs());
    assert!(log_lines(&gw, LogLevel::Warn, STORE_WARNING).is_empty());
    assert!(gw.log_contains("retry budget kept in shared data"));
}

/// 20 requests over two workers on Kong without any `shm_kv` zone; each upstream call
/// answers 503 then 200 alternately.
fn kong_without_zone(extra: &str) -> Traffic {
    let gw = Setup::Kong
        .builder(extra)
        .shared_data_zone(false)
        .workers(2)
        .build()
        .unwrap();
    let mut traffic = Traffic::new(gw);
    let mut n = 0;
    let mut upstream = |_: &proxy_wasm_test_host::UpstreamCall| {
        n += 1;
        Answer::Now(Reply::status(if n % 2 == 1 { 503 } else { 200 }))
    };
    for i in 0..20 {
        traffic.send(i % 2, Request::new("GET", "/x"));
        traffic.finish(5_000, &mut upstream);
    }
    traffic
}

#[test]
fn kong_without_a_zone_fails_open_by_default_logged_once_per_worker() {
    let traffic = kong_without_zone(r#""backoff":{"strategy":"fixed","interval":0}"#);
    let gw = &traffic.gw;
    assert!(gw.traps().is_empty(), "{:?}", gw.traps());
    for rid in &traffic.requests {
        assert_eq!(gw.response(*rid).unwrap().status, 200);
    }
    assert_eq!(backend_calls(gw).len(), 40);
    let warnings = log_lines(gw, LogLevel::Warn, STORE_WARNING);
    assert_eq!(warnings.len(), 2, "once per VM (2 workers): {warnings:?}");
    assert!(
        warnings[0].contains("nginx_wasm_shm_kv_kong_retry"),
        "{warnings:?}"
    );
    assert!(warnings[0].contains("\"allow\""), "{warnings:?}");
    assert_eq!(metric(gw, "kong_retry_retries_total"), 20);
    assert_eq!(metric(gw, "kong_retry_retry_success_total"), 20);
    assert_eq!(metric(gw, "kong_retry_budget_denied_total"), 0);
}

#[test]
fn kong_without_a_zone_fails_closed_when_configured() {
    let traffic = kong_without_zone(r#""budget":{"on_store_unavailable":"deny"}"#);
    let gw = &traffic.gw;
    assert!(gw.traps().is_empty(), "{:?}", gw.traps());
    // Every request got the upstream's first answer, unretried.
    let statuses: Vec<u16> = traffic
        .requests
        .iter()
        .map(|r| gw.response(*r).unwrap().status)
        .collect();
    assert_eq!(backend_calls(gw).len(), 20);
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 10);
    let warnings = log_lines(gw, LogLevel::Warn, STORE_WARNING);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("\"deny\""), "{warnings:?}");
    assert_eq!(metric(gw, "kong_retry_retries_total"), 0);
    assert_eq!(metric(gw, "kong_retry_budget_denied_total"), 10);
}

#[test]
fn kong_with_another_zone_than_configured_never_touches_shared_data() {
    // The node has a zone `kong_retry`; the config names `retry_state`, which Kong would not
    // resolve (the key would fall to a default zone that does not exist either: a trap).
    let mut gw = Setup::Kong
        .builder(r#""budget":{"zone":"retry_state"},"backoff":{"strategy":"fixed","interval":0}"#)
        .workers(1)
        .build()
        .unwrap();
    for _ in 0..3 {
        let ex = gw
            .run(
                Request::new("GET", "/x"),
                script(vec![Reply::status(502), Reply::status(200)]),
            )
            .unwrap();
        assert_eq!(ex.response.status, 200);
        // Failing open: every 502 retried.
        assert_eq!(ex.calls.iter().filter(|c| is_backend(c)).count(), 2);
    }
    assert!(gw
        .shared_data(&format!("retry_state/kong_retry/budget/{KONG_ROUTE_ID}"))
        .is_none());
    assert!(gw.shared_data(&Setup::Kong.budget_key()).is_none());
    assert_eq!(log_lines(&gw, LogLevel::Warn, STORE_WARNING).len(), 1);
    assert!(gw.log_contains("nginx_wasm_shm_kv_retry_state"));
}

#[test]
fn store_none_applies_the_configured_behaviour_on_both_hosts() {
    for setup in SETUPS {
        for (policy, calls) in [("allow", 2), ("deny", 1)] {
            let mut gw = setup.gateway(
                &format!(
                    r#""budget":{{"store":"none","on_store_unavailable":"{policy}"}},"backoff":{{"strategy":"fixed","interval":0}}"#
                ),
                1,
            );
            for _ in 0..3 {
                let ex = gw
                    .run(
                        Request::new("GET", "/x"),
                        script(vec![Reply::status(503), Reply::status(200)]),
                    )
                    .unwrap();
                let want = if calls == 2 { 200 } else { 503 };
                assert_eq!(ex.response.status, want, "{setup:?} {policy}");
                let backend = ex.calls.iter().filter(|c| is_backend(c)).count();
                assert_eq!(backend, calls, "{setup:?} {policy}");
            }
            assert!(gw.shared_data(&setup.budget_key()).is_none());
            let warnings = log_lines(&gw, LogLevel::Warn, STORE_WARNING);
            assert_eq!(warnings.len(), 1, "{setup:?} {policy}: {warnings:?}");
            assert!(warnings[0].contains("budget.store is \"none\""));
        }
    }
}

#[test]
fn kong_store_shm_trusts_the_operator_and_a_missing_zone_traps() {
    // The documented cost of `store: "shm"`: without the zone Kong traps and the client
    // gets 500. With the zone it works and nothing is looked up.
    let mut gw = Setup::Kong
        .builder(r#""budget":{"store":"shm"}"#)
        .shared_data_zone(false)
        .build()
        .unwrap();
    let ex = gw
        .run(Request::new("GET", "/x"), |_| Reply::status(200))
        .unwrap();
    assert!(ex.response.trapped);
    assert_eq!(ex.response.status, 500);

    let mut gw = Setup::Kong
        .builder(r#""budget":{"store":"shm"}"#)
        .without_property(&["kong", "configuration", "nginx_wasm_shm_kv_kong_retry"])
        .build()
        .unwrap();
    let ex = gw
        .run(Request::new("GET", "/x"), |_| Reply::status(200))
        .unwrap();
    assert_eq!(ex.response.status, 200);
    assert!(gw.shared_data(&Setup::Kong.budget_key()).is_some());
}

#[test]
fn a_disabled_budget_needs_no_store() {
    let traffic = kong_without_zone(
        r#""budget":{"enabled":false},"backoff":{"strategy":"fixed","interval":0}"#,
    );
    let gw = &traffic.gw;
    assert!(gw.traps().is_empty());
    assert_eq!(backend_calls(gw).len(), 40);
    assert!(log_lines(gw, LogLevel::Warn, STORE_WARNING).is_empty());
}
