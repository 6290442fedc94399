//! Adaptive mode with the real filter `.wasm` on the test host: calm requests take the
//! proxy's native path (the filter only watches), a revealing failure protects the scope in
//! shared data, protected requests are retried, calm returns when the window is over, and a
//! maintenance window protects from the first request. What a client and the upstream see,
//! the protection counters, and what the calm path costs (shared-data reads, bytes copied).

// Test code: a failed setup step should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod host_support;

use host_support::*;
use proxy_wasm_test_host::{
    CallKind, Exchange, Failure, Gateway, LogLevel, Reply, Request, UpstreamCall,
};

const CALM: &str = "kong_retry_calm_requests_total";
const PROTECTED: &str = "kong_retry_protected_requests_total";
const STARTED: &str = "kong_retry_protection_started_total";
const SEEN_CALM: &str = "kong_retry_failures_seen_calm_total";

/// The protection flag of the configured upstream (default scope) in the default zone.
fn flag_key() -> String {
    format!("kong_retry/kong_retry/protect/{UPSTREAM}")
}

fn flag_key_envoy() -> String {
    format!("kong_retry/kong_retry/protect/{CLUSTER}")
}

/// `setup` in adaptive mode with `extra` settings.
fn adaptive(setup: Setup, extra: &str, workers: usize) -> Gateway {
    setup.gateway(&adaptive_config(extra), workers)
}

fn adaptive_config(extra: &str) -> String {
    if extra.is_empty() {
        r#""mode":"adaptive""#.to_string()
    } else {
        format!(r#""mode":"adaptive",{extra}"#)
    }
}

fn ok() -> Reply {
    Reply::status(200).body(b"fine".to_vec())
}

/// (proxied natively, dispatched to the backend) calls of one exchange.
fn kinds(ex: &Exchange) -> (usize, usize) {
    let proxied = ex
        .calls
        .iter()
        .filter(|c| matches!(c.kind, CallKind::Proxied))
        .count();
    let dispatched = ex
        .calls
        .iter()
        .filter(|c| matches!(c.kind, CallKind::Dispatch { .. }) && is_backend(c))
        .count();
    (proxied, dispatched)
}

/// The protection counters as the host exports them. Calm requests count in wasm memory
/// until the root's next tick hands them over (at most a second), so the clock moves to it.
fn counters(gw: &mut Gateway) -> [u64; 4] {
    flush_metrics(gw);
    [CALM, PROTECTED, STARTED, SEEN_CALM].map(|n| metric(gw, n))
}

/// Moves the fake clock to the root's next metrics flush (a tick every second).
fn flush_metrics(gw: &mut Gateway) {
    gw.advance(1_000);
}

fn assert_clean(gw: &Gateway) {
    assert!(gw.traps().is_empty(), "{:?}", gw.traps());
}

#[test]
fn kong_calm_then_failure_then_protected_then_calm_again() {
    let mut gw = adaptive(Setup::Kong, r#""adaptive":{"window":5000}"#, 1);
    let get = || Request::new("GET", "/orders/1");

    // Calm: the native path, the response untouched.
    let ex = gw.run(get(), script(vec![ok()])).unwrap();
    assert_eq!((ex.response.status, kinds(&ex)), (200, (1, 0)));
    assert_eq!(ex.response.header("x-kong-retry-attempts"), None);
    assert_eq!(counters(&mut gw), [1, 0, 0, 0]);
    assert!(gw.shared_data(&flag_key()).is_none());

    // A failure on the calm path reaches the client (one upstream call) and protects.
    let ex = gw
        .run(
            get(),
            script(vec![Reply::status(503).body(b"down".to_vec())]),
        )
        .unwrap();
    assert_eq!((ex.response.status, kinds(&ex)), (503, (1, 0)));
    assert_eq!(ex.response.body, b"down");
    assert_eq!(counters(&mut gw), [2, 0, 1, 1]);
    assert!(gw.shared_data(&flag_key()).is_some());
    assert!(gw.log_contains("protection of 127.0.0.1:8080 started after 503"));

    // Protected: dispatch mode, the next failure is hidden by a retry.
    let ex = gw
        .run(get(), script(vec![Reply::status(503), ok()]))
        .unwrap();
    assert_eq!((ex.response.status, kinds(&ex)), (200, (0, 2)));
    assert_eq!(ex.response.body, b"fine");
    assert_eq!(ex.response.header("x-kong-retry-attempts"), Some("2"));
    assert_eq!(counters(&mut gw), [2, 1, 1, 1]);
    assert_eq!(metric(&gw, "kong_retry_retry_success_total"), 1);

    // A POST without a key is never retried, even protected: it goes natively, and its
    // failure keeps the scope protected (no new episode).
    let ex = gw
        .run(
            Request::new("POST", "/orders").body(b"{}".to_vec()),
            script(vec![Reply::status(502)]),
        )
        .unwrap();
    assert_eq!((ex.response.status, kinds(&ex)), (502, (1, 0)));
    assert_eq!(counters(&mut gw), [2, 2, 1, 1]);

    // The window is over: calm again, natively.
    gw.advance(5_001);
    let ex = gw.run(get(), script(vec![ok()])).unwrap();
    assert_eq!((ex.response.status, kinds(&ex)), (200, (1, 0)));
    assert_eq!(counters(&mut gw), [3, 2, 1, 1]);

    // A second failure is a second episode.
    let ex = gw.run(get(), script(vec![Reply::status(504)])).unwrap();
    assert_eq!((ex.response.status, kinds(&ex)), (504, (1, 0)));
    assert_eq!(counters(&mut gw), [4, 2, 2, 2]);
    flush_metrics(&mut gw);
    assert_eq!(metric(&gw, "kong_retry_requests_total"), 6);
    assert_clean(&gw);
}

#[test]
fn failures_keep_extending_the_protection() {
    let mut gw = adaptive(Setup::Kong, r#""adaptive":{"window":2000},"retries":1"#, 1);
    let get = || Request::new("GET", "/x");
    gw.run(get(), script(vec![Reply::status(503)])).unwrap();
    // Every 1.5 s a protected request fails twice (exhausted): each failure extends.
    for _ in 0..4 {
        gw.advance(1_500);
        let ex = gw.run(get(), script(vec![Reply::status(503)])).unwrap();
        assert_eq!((ex.response.status, kinds(&ex)), (503, (0, 2)));
    }
    assert_eq!(counters(&mut gw), [1, 4, 1, 1]);
    // Quiet for longer than the window: calm.
    gw.advance(2_001);
    let ex = gw.run(get(), script(vec![ok()])).unwrap();
    assert_eq!(kinds(&ex), (1, 0));
    assert_clean(&gw);
}

#[test]
fn the_proxys_own_502_and_504_reveal_connect_failures_and_timeouts() {
    for (failure, status) in [(Failure::Refused, 502), (Failure::Reset, 502)] {
        let mut gw = adaptive(Setup::Kong, r#""retry_on":"connect-failure,reset""#, 1);
        let ex = gw
            .run(
                Request::new("GET", "/x"),
                script(vec![Reply::failure(failure)]),
            )
            .unwrap();
        assert_eq!(ex.response.status, status, "{failure:?}");
        assert_eq!(counters(&mut gw), [1, 0, 1, 1], "{failure:?}");
        assert_clean(&gw);
    }
    // A timeout of the native forward: the proxy's 504.
    let mut gw = adaptive(Setup::Kong, r#""retry_on":"timeout""#, 1);
    let rid = gw.send(0, Request::new("GET", "/x"));
    let call = gw.pending()[0].id;
    gw.answer(call, Reply::failure(Failure::Timeout)).unwrap();
    assert_eq!(gw.response(rid).unwrap().status, 504);
    assert_eq!(counters(&mut gw), [1, 0, 1, 1]);
    // A 502 that retry_on does not cover in any way changes nothing.
    let ex = gw
        .run(Request::new("GET", "/x"), script(vec![Reply::status(500)]))
        .unwrap();
    assert_eq!(ex.response.status, 500);
    assert_eq!(metric(&gw, STARTED), 1);
    assert_clean(&gw);
}

#[test]
fn other_workers_learn_of_a_protection_through_shared_data_within_the_cache_age() {
    let mut gw = adaptive(Setup::Kong, "", 2);
    let get = || Request::new("GET", "/x");
    // Worker 1 reads the flag (calm) and caches it for 1 s.
    let ex = gw.run_on(1, get(), script(vec![ok()])).unwrap();
    assert_eq!(kinds(&ex), (1, 0));
    // Worker 0 sees a failure: its own next request is protected at once.
    gw.run_on(0, get(), script(vec![Reply::status(503)]))
        .unwrap();
    let ex = gw.run_on(0, get(), script(vec![ok()])).unwrap();
    assert_eq!(kinds(&ex), (0, 1));
    // Worker 1 still trusts its cached answer...
    let ex = gw.run_on(1, get(), script(vec![ok()])).unwrap();
    assert_eq!(kinds(&ex), (1, 0));
    // ...until it is a second old: then it reads the flag and protects too.
    gw.advance(1_000);
    let ex = gw
        .run_on(1, get(), script(vec![Reply::status(503), ok()]))
        .unwrap();
    assert_eq!((ex.response.status, kinds(&ex)), (200, (0, 2)));
    // One episode, counted once, by the worker that started it.
    assert_eq!(counters(&mut gw), [3, 2, 1, 1]);
    assert_clean(&gw);
}

#[test]
fn a_scheduled_window_protects_from_the_first_request_without_shared_data() {
    // The host clock starts at 2023-11-14T22:13:20Z.
    let windows = [
        r#"[{"start":"2023-11-14T22:00:00Z","end":"2023-11-14T22:30:00Z"}]"#,
        r#"[{"daily":{"start":"22:00","end":"22:30"}}]"#,
    ];
    for windows in windows {
        for zone in [true, false] {
            let what = format!("{windows} zone={zone}");
            let extra = format!(r#""maintenance_windows":{windows},"budget":{{"enabled":false}}"#);
            let mut gw = Setup::Kong
                .builder(&adaptive_config(&extra))
                .shared_data_zone(zone)
                .workers(1)
                .build()
                .unwrap();
            // The first request is protected, and deciding so reads no shared data.
            let ex = gw
                .run(Request::new("GET", "/x"), script(vec![ok()]))
                .unwrap();
            assert_eq!((ex.response.status, kinds(&ex)), (200, (0, 1)), "{what}");
            let stats = gw.stats(ex.request).unwrap();
            assert_eq!(
                (stats.shared_data_gets, stats.shared_data_sets),
                (0, 0),
                "{what}"
            );
            // A failure is hidden by a retry. It also sets the flag, so that protection
            // outlasts the window if failures go on until its end.
            let ex = gw
                .run(
                    Request::new("GET", "/x"),
                    script(vec![Reply::status(503), ok()]),
                )
                .unwrap();
            assert_eq!((ex.response.status, kinds(&ex)), (200, (0, 2)), "{what}");
            assert_eq!(counters(&mut gw), [0, 2, 1, 0], "{what}");
            assert!(gw.log_contains("maintenance window"), "{what}");

            // 16 min 40 s later it is 22:30:00: the window is over, calm again.
            gw.advance(1_000_000);
            let ex = gw
                .run(Request::new("GET", "/x"), script(vec![ok()]))
                .unwrap();
            assert_eq!((ex.response.status, kinds(&ex)), (200, (1, 0)), "{what}");
            assert!(gw.log_contains("maintenance window over"), "{what}");
            assert_clean(&gw);
        }
    }
}

#[test]
fn the_calm_path_reads_shared_data_at_most_once_per_request_and_copies_nothing() {
    let mut traffic = Traffic::new(adaptive(Setup::Kong, "", 2));
    let mut upstream = |_: &UpstreamCall| Answer::After(2, ok());
    // 400 requests, one every 5 ms of host time (2 s), alternating workers.
    for i in 0..400u64 {
        traffic.run_until(i * 5, &mut upstream);
        traffic.send(i as usize % 2, Request::new("GET", &format!("/orders/{i}")));
    }
    traffic.finish(5_000, &mut upstream);
    let gw = &mut traffic.gw;
    let mut gets = 0;
    for rid in &traffic.requests {
        let s = gw.stats(*rid).unwrap();
        assert!(s.shared_data_gets <= 1, "{s:?}");
        assert_eq!(s.shared_data_sets, 0, "{s:?}");
        gets += s.shared_data_gets;
        assert_eq!(gw.response(*rid).unwrap().status, 200);
    }
    // The flag is read when a worker's cached answer is a second old: 2 workers × 2 s.
    assert!((2..=6).contains(&gets), "{gets} reads for 400 requests");
    assert_eq!(counters(gw), [400, 0, 0, 0]);
    assert!(gw
        .calls()
        .iter()
        .all(|c| matches!(c.kind, CallKind::Proxied)));
    assert_clean(gw);
}

#[test]
fn the_calm_path_costs_the_same_for_any_request_size() {
    let mut gw = adaptive(Setup::Kong, "", 1);
    // Warm up (host detection, first cache read).
    gw.run(Request::new("GET", "/"), script(vec![ok()]))
        .unwrap();
    let small = gw
        .run(Request::new("GET", "/"), script(vec![ok()]))
        .unwrap();
    let mut big = Request::new("PUT", "/documents/1").body(vec![b'x'; 4096]);
    for i in 0..20 {
        big = big.header(&format!("x-extra-{i}"), &"v".repeat(100));
    }
    let big = gw.run(big, script(vec![ok()])).unwrap();
    assert_eq!(kinds(&big), (1, 0));
    let (s, b) = (
        gw.stats(small.request).unwrap(),
        gw.stats(big.request).unwrap(),
    );
    // Nothing of the request crosses into the filter: only the response's `:status`.
    assert_eq!(s.bytes_to_guest, b.bytes_to_guest, "{s:?} vs {b:?}");
    assert!(s.bytes_to_guest < 64, "{s:?}");
    // The same request in dispatch mode copies it all.
    let mut dispatch = Setup::Kong.gateway("", 1);
    let mut big = Request::new("PUT", "/documents/1").body(vec![b'x'; 4096]);
    for i in 0..20 {
        big = big.header(&format!("x-extra-{i}"), &"v".repeat(100));
    }
    let ex = dispatch.run(big, script(vec![ok()])).unwrap();
    let d = dispatch.stats(ex.request).unwrap();
    assert!(d.bytes_to_guest > 6_000, "{d:?}");
    assert_clean(&gw);
}

#[test]
fn kong_without_a_zone_protects_the_worker_that_saw_the_failure() {
    let mut gw = Setup::Kong
        .builder(&adaptive_config(""))
        .shared_data_zone(false)
        .workers(2)
        .build()
        .unwrap();
    let get = || Request::new("GET", "/x");
    let ex = gw
        .run_on(0, get(), script(vec![Reply::status(503)]))
        .unwrap();
    assert_eq!(ex.response.status, 503);
    // Worker 0 protects itself...
    let ex = gw
        .run_on(0, get(), script(vec![Reply::status(503), ok()]))
        .unwrap();
    assert_eq!((ex.response.status, kinds(&ex)), (200, (0, 2)));
    // ...worker 1 never learns of it, and pays its own revealing response.
    gw.advance(2_000);
    let ex = gw
        .run_on(1, get(), script(vec![Reply::status(503)]))
        .unwrap();
    assert_eq!((ex.response.status, kinds(&ex)), (503, (1, 0)));
    let ex = gw
        .run_on(1, get(), script(vec![Reply::status(503), ok()]))
        .unwrap();
    assert_eq!(ex.response.status, 200);
    // Each worker started its own protection; nothing touched shared data (no trap).
    assert_eq!(counters(&mut gw), [2, 2, 2, 2]);
    assert_eq!(
        log_lines(
            &gw,
            LogLevel::Warn,
            "adaptive protection without shared data"
        )
        .len(),
        2,
        "once per worker"
    );
    assert_clean(&gw);
}

#[test]
fn envoy_protected_requests_run_in_response_mode() {
    let mut gw = adaptive(Setup::EnvoyResponse, r#""adaptive":{"window":3000}"#, 1);
    let get = || Request::new("GET", "/x");
    let ex = gw.run(get(), script(vec![ok()])).unwrap();
    assert_eq!((ex.response.status, kinds(&ex)), (200, (1, 0)));
    // Calm: the upstream's 503 reaches the client.
    let ex = gw.run(get(), script(vec![Reply::status(503)])).unwrap();
    assert_eq!((ex.response.status, kinds(&ex)), (503, (1, 0)));
    assert!(gw.shared_data(&flag_key_envoy()).is_some());
    // Protected: the first attempt still goes natively, the retry replaces its 503.
    let ex = gw
        .run(get(), script(vec![Reply::status(503), ok()]))
        .unwrap();
    assert_eq!((ex.response.status, kinds(&ex)), (200, (1, 1)));
    assert_eq!(ex.response.body, b"fine");
    // Envoy's own 503 for a refused connection reveals trouble as well.
    gw.advance(3_001);
    let ex = gw
        .run(get(), script(vec![Reply::failure(Failure::Refused)]))
        .unwrap();
    assert_eq!((ex.response.status, kinds(&ex)), (503, (1, 0)));
    assert_eq!(counters(&mut gw), [3, 1, 2, 2]);
    assert_clean(&gw);
}

#[test]
fn adaptive_counters_exist_only_in_adaptive_mode() {
    let names =
        |gw: &Gateway| -> Vec<String> { gw.metrics().into_iter().map(|(n, _)| n).collect() };
    let gw = adaptive(Setup::Kong, "", 1);
    for n in [CALM, PROTECTED, STARTED, SEEN_CALM] {
        assert!(names(&gw).contains(&n.to_string()), "{n}");
    }
    let gw = Setup::Kong.gateway("", 1);
    for n in [CALM, PROTECTED, STARTED, SEEN_CALM] {
        assert!(!names(&gw).contains(&n.to_string()), "{n}");
    }
}
