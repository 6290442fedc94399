//! Gateway idempotency with the `shared` store, one test per row of the semantics table
//! (docs/operator-guide.md, "Gateway idempotency"; module doc of src/state/idempotency),
//! on the test host under Kong (dispatch mode), Envoy in response mode and Envoy in
//! dispatch mode. Each test asserts what a client sees (status, headers, body bytes), how
//! often the upstream was called, the idempotency metrics, and a host log free of errors.

// Test code: a failed setup step should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod host_support;

use host_support::*;
use proxy_wasm_test_host::{
    ClientResponse, Failure, Gateway, LogLevel, Reply, Request, RequestId, UpstreamCall,
};

const KEY_HEADER: &str = "idempotency-key";
const LOCK_TIMEOUT_MS: u64 = 30_000;

const REPLAYED: &str = "kong_retry_idempotency_replayed_total";
const CONFLICTS: &str = "kong_retry_idempotency_conflicts_total";
const MISMATCHES: &str = "kong_retry_idempotency_mismatches_total";
const REJECTED: &str = "kong_retry_idempotency_rejected_total";
const UNAVAILABLE: &str = "kong_retry_idempotency_store_unavailable_total";
const STORED: &str = "kong_retry_idempotency_stored_total";
const EVICTED: &str = "kong_retry_idempotency_evicted_total";

/// The plugin config: retries without waiting (so no delay calls), idempotency on with
/// `idem` (object members without braces), plus `top` at the top level.
fn config(idem: &str, top: &str) -> String {
    let mut c = String::from(
        r#""backoff":{"strategy":"fixed","interval":0},"idempotency":{"enabled":true"#,
    );
    if !idem.is_empty() {
        c.push(',');
        c.push_str(idem);
    }
    c.push('}');
    if !top.is_empty() {
        c.push(',');
        c.push_str(top);
    }
    c
}

/// One worker with the shared store.
fn gateway(setup: Setup, idem: &str) -> Gateway {
    setup.gateway(&config(idem, ""), 1)
}

/// A POST to /payments with key `key` and `body`.
fn post(key: &str, body: &[u8]) -> Request {
    Request::new("POST", "/payments")
        .header(KEY_HEADER, key)
        .header("content-type", "application/json")
        .body(body.to_vec())
}

/// Runs `request` to its end; the upstream answers with `replies` in turn (the last one
/// repeats). Returns the client's response and how many backend calls it made.
fn run(gw: &mut Gateway, request: Request, replies: Vec<Reply>) -> (ClientResponse, usize) {
    let ex = gw
        .run(request, script(replies))
        .unwrap_or_else(|e| panic!("{e}"));
    let calls = ex.calls.iter().filter(|c| is_backend(c)).count();
    (ex.response, calls)
}

fn created(body: &str) -> Reply {
    Reply::status(201)
        .header("content-type", "application/json")
        .body(body.as_bytes().to_vec())
}

/// The response is the gateway's own problem+json with this status.
fn assert_problem(setup: Setup, resp: &ClientResponse, status: u16) {
    assert_eq!(resp.status, status, "{setup:?}: {}", resp.body_text());
    assert_eq!(
        resp.header("content-type"),
        Some("application/problem+json"),
        "{setup:?}"
    );
    let v: serde_json::Value = serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("{setup:?}: not JSON ({e}): {}", resp.body_text()));
    assert_eq!(v["status"], status, "{setup:?}");
    assert!(
        v["title"].is_string() && v["detail"].is_string(),
        "{setup:?}"
    );
    assert_eq!(resp.header("idempotent-replayed"), None, "{setup:?}");
}

/// No trap, no error in the host's log, every response framed.
fn assert_clean(setup: Setup, gw: &Gateway) {
    assert!(gw.traps().is_empty(), "{setup:?}: traps {:?}", gw.traps());
    let errors = log_lines(gw, LogLevel::Error, "");
    assert!(
        errors.is_empty(),
        "{setup:?}: errors in the log: {errors:?}"
    );
}

fn replayed(resp: &ClientResponse) -> bool {
    resp.header("idempotent-replayed") == Some("true")
}

// ---- request rows ----

#[test]
fn a_method_not_covered_or_the_feature_off_is_forwarded_every_time() {
    for setup in SETUPS {
        // PUT is not in the default `methods` (POST, PATCH); POST with the feature off.
        let cases = [
            ("PUT", config("", "")),
            ("POST", r#""idempotency":{"enabled":false}"#.to_string()),
        ];
        for (method, cfg) in cases {
            let mut gw = setup.gateway(&cfg, 1);
            for _ in 0..2 {
                let req = Request::new(method, "/payments")
                    .header(KEY_HEADER, "op-1")
                    .body(b"{\"amount\":1}".to_vec());
                let (resp, calls) = run(&mut gw, req, vec![created("done")]);
                assert_eq!(resp.status, 201, "{setup:?} {method}");
                assert_eq!(resp.body, b"done", "{setup:?} {method}");
                assert!(!replayed(&resp), "{setup:?} {method}");
                assert_eq!(calls, 1, "{setup:?} {method}");
            }
            assert_eq!(backend_calls(&gw).len(), 2, "{setup:?} {method}");
            for m in [REPLAYED, CONFLICTS, STORED, REJECTED] {
                assert_eq!(metric(&gw, m), 0, "{setup:?} {method} {m}");
            }
            assert_clean(setup, &gw);
        }
    }
}

#[test]
fn a_covered_request_without_a_key_is_forwarded_unless_the_key_is_required() {
    for setup in SETUPS {
        let mut gw = gateway(setup, "");
        for _ in 0..2 {
            let req = Request::new("POST", "/payments").body(b"{}".to_vec());
            // Without a key a POST is not replayable: one call, the upstream's answer.
            let (resp, calls) = run(&mut gw, req, vec![Reply::status(503), created("x")]);
            assert_eq!(resp.status, 503, "{setup:?}");
            assert_eq!(calls, 1, "{setup:?}");
        }
        assert_eq!(backend_calls(&gw).len(), 2, "{setup:?}");
        assert_eq!(metric(&gw, REJECTED), 0, "{setup:?}");
        assert_clean(setup, &gw);

        let mut gw = gateway(setup, r#""required":true"#);
        let req = Request::new("POST", "/payments").body(b"{}".to_vec());
        let (resp, calls) = run(&mut gw, req, vec![created("never")]);
        assert_problem(setup, &resp, 400);
        assert!(
            resp.body_text().contains(KEY_HEADER),
            "{setup:?}: {}",
            resp.body_text()
        );
        assert_eq!(calls, 0, "{setup:?}");
        assert_eq!(metric(&gw, REJECTED), 1, "{setup:?}");
        // A method not covered still goes without a key.
        let (resp, calls) = run(
            &mut gw,
            Request::new("GET", "/payments"),
            vec![created("g")],
        );
        assert_eq!((resp.status, calls), (201, 1), "{setup:?}");
        assert_clean(setup, &gw);
    }
}

#[test]
fn an_empty_or_overlong_key_gets_400() {
    let long = "k".repeat(256);
    let longest = "k".repeat(255);
    for setup in SETUPS {
        let mut gw = gateway(setup, "");
        for key in ["", "   ", long.as_str()] {
            let (resp, calls) = run(&mut gw, post(key, b"{}"), vec![created("never")]);
            assert_problem(setup, &resp, 400);
            assert_eq!(calls, 0, "{setup:?} key of {} bytes", key.len());
        }
        assert_eq!(metric(&gw, REJECTED), 3, "{setup:?}");
        let (resp, calls) = run(&mut gw, post(&longest, b"{}"), vec![created("ok")]);
        assert_eq!(
            (resp.status, calls),
            (201, 1),
            "{setup:?}: 255 bytes is a key"
        );
        assert_eq!(backend_calls(&gw).len(), 1, "{setup:?}");
        assert_clean(setup, &gw);
    }
}

#[test]
fn the_first_keyed_request_is_forwarded_and_retried_as_the_policy_says() {
    for setup in SETUPS {
        let mut gw = gateway(setup, "");
        let body = br#"{"amount":100}"#;
        let (resp, calls) = run(
            &mut gw,
            post("op-1", body),
            vec![Reply::status(503), created("paid")],
        );
        assert_eq!(resp.status, 201, "{setup:?}");
        assert_eq!(resp.body, b"paid", "{setup:?}");
        assert!(!replayed(&resp), "{setup:?}");
        assert_eq!(calls, 2, "{setup:?}");
        for c in backend_calls(&gw) {
            assert_eq!(
                c.body, body,
                "{setup:?}: every attempt carries the same bytes"
            );
            assert_eq!(c.header(KEY_HEADER), Some("op-1"), "{setup:?}");
        }
        assert_eq!(metric(&gw, STORED), 1, "{setup:?}");
        assert_eq!(metric(&gw, "kong_retry_retries_total"), 1, "{setup:?}");
        assert_clean(setup, &gw);
    }
}

#[test]
fn a_result_past_its_ttl_is_forgotten_and_the_key_runs_again() {
    for setup in SETUPS {
        let mut gw = gateway(setup, r#""ttl":60000"#);
        let (_, calls) = run(&mut gw, post("op-1", b"{}"), vec![created("first")]);
        assert_eq!(calls, 1, "{setup:?}");
        gw.advance(59_999);
        let (dup, calls) = run(&mut gw, post("op-1", b"{}"), vec![created("never")]);
        assert_eq!(
            (dup.body.as_slice(), calls),
            (&b"first"[..], 0),
            "{setup:?}"
        );
        assert!(replayed(&dup), "{setup:?}");
        gw.advance(1);
        // An expired record is no record: another body is no mismatch either.
        let (resp, calls) = run(
            &mut gw,
            post("op-1", b"{\"new\":1}"),
            vec![created("second")],
        );
        assert_eq!(
            (resp.body.as_slice(), calls),
            (&b"second"[..], 1),
            "{setup:?}"
        );
        assert!(!replayed(&resp), "{setup:?}");
        let (dup, calls) = run(
            &mut gw,
            post("op-1", b"{\"new\":1}"),
            vec![created("never")],
        );
        assert_eq!(
            (dup.body.as_slice(), calls),
            (&b"second"[..], 0),
            "{setup:?}"
        );
        assert_eq!(metric(&gw, MISMATCHES), 0, "{setup:?}");
        assert_eq!(metric(&gw, STORED), 2, "{setup:?}");
        assert_clean(setup, &gw);
    }
}

#[test]
fn a_duplicate_of_a_completed_request_gets_the_stored_response_byte_exact() {
    // Every byte value, and more than one host buffer's worth (Envoy's native body is
    // read whole before it is stored).
    let body: Vec<u8> = (0..70_000u32).map(|i| (i % 256) as u8).collect();
    for setup in SETUPS {
        let mut gw = gateway(setup, "");
        let reply = Reply::status(201)
            .header("content-type", "application/octet-stream")
            .header("etag", "\"v1\"")
            .header("set-cookie", "a=1")
            .header("set-cookie", "b=2")
            .header("x-payment-id", "pay_7")
            .header("connection", "close")
            .header("keep-alive", "timeout=5")
            .body(body.clone());
        let (first, calls) = run(&mut gw, post("op-1", b"{}"), vec![reply]);
        assert_eq!((first.status, calls), (201, 1), "{setup:?}");
        assert_eq!(first.body, body, "{setup:?}");

        for _ in 0..2 {
            let (dup, calls) = run(&mut gw, post("op-1", b"{}"), vec![created("again")]);
            assert_eq!(calls, 0, "{setup:?}: the upstream is not called again");
            assert_eq!(dup.status, 201, "{setup:?}");
            assert_eq!(dup.body, body, "{setup:?}: body byte-exact");
            assert!(!dup.framing_error, "{setup:?}");
            assert!(replayed(&dup), "{setup:?}: {:?}", dup.headers);
            assert_eq!(
                dup.header("content-type"),
                Some("application/octet-stream"),
                "{setup:?}"
            );
            assert_eq!(dup.header("etag"), Some("\"v1\""), "{setup:?}");
            assert_eq!(dup.header("x-payment-id"), Some("pay_7"), "{setup:?}");
            assert_eq!(dup.header_all("set-cookie"), ["a=1", "b=2"], "{setup:?}");
            for hop in ["connection", "keep-alive", "transfer-encoding"] {
                assert_eq!(dup.header(hop), None, "{setup:?}: {hop} is hop-by-hop");
            }
        }
        assert_eq!(backend_calls(&gw).len(), 1, "{setup:?}");
        assert_eq!(metric(&gw, REPLAYED), 2, "{setup:?}");
        assert_eq!(metric(&gw, STORED), 1, "{setup:?}");
        assert_clean(setup, &gw);
    }
}

/// Sends `request` and returns its id once the gateway waits for the upstream.
fn send_and_hold(gw: &mut Gateway, request: Request) -> (RequestId, UpstreamCall) {
    let rid = gw.send(0, request);
    let pending = gw.pending();
    assert_eq!(pending.len(), 1, "one call held open: {pending:?}");
    assert!(gw.response(rid).is_none());
    (rid, pending[0].clone())
}

#[test]
fn a_duplicate_while_the_first_is_in_flight_gets_409_and_one_reaches_the_upstream() {
    for setup in SETUPS {
        // Two workers: the node's shared data is one store for both.
        let mut gw = setup.gateway(&config("", ""), 2);
        let (first, call) = send_and_hold(&mut gw, post("op-1", b"{}"));
        // Within per_try_timeout (2 s), so the first is still waiting.
        gw.advance(1_500);
        // A duplicate on each worker while the first waits for the upstream: 28.5 s
        // left on the lock, rounded up.
        for worker in [0, 1] {
            let dup = gw.send(worker, post("op-1", b"{}"));
            let resp = gw.response(dup).expect("answered at once");
            assert_problem(setup, &resp, 409);
            assert_eq!(resp.header("retry-after"), Some("29"), "{setup:?}");
        }
        assert_eq!(
            gw.pending().len(),
            1,
            "{setup:?}: nothing else went upstream"
        );
        gw.answer(call.id, created("paid")).unwrap();
        let resp = gw.response(first).expect("first answered");
        assert_eq!(
            (resp.status, resp.body.as_slice()),
            (201, &b"paid"[..]),
            "{setup:?}"
        );
        // Once it completed, a duplicate gets its result.
        let (dup, calls) = run(&mut gw, post("op-1", b"{}"), vec![created("again")]);
        assert_eq!((dup.status, calls), (201, 0), "{setup:?}");
        assert!(replayed(&dup), "{setup:?}");
        assert_eq!(
            backend_calls(&gw).len(),
            1,
            "{setup:?}: exactly one reached the upstream"
        );
        assert_eq!(metric(&gw, CONFLICTS), 2, "{setup:?}");
        assert_eq!(metric(&gw, REPLAYED), 1, "{setup:?}");
        assert_clean(setup, &gw);
    }
}

#[test]
fn the_same_key_with_another_body_path_or_method_gets_422() {
    for setup in SETUPS {
        let mut gw = gateway(setup, "");
        let others = || {
            [
                post("op-1", br#"{"amount":2}"#),
                Request::new("POST", "/payments?x=1")
                    .header(KEY_HEADER, "op-1")
                    .body(br#"{"amount":1}"#.to_vec()),
                Request::new("PATCH", "/payments")
                    .header(KEY_HEADER, "op-1")
                    .body(br#"{"amount":1}"#.to_vec()),
            ]
        };
        // While the first is in flight...
        let (first, call) = send_and_hold(&mut gw, post("op-1", br#"{"amount":1}"#));
        for req in others() {
            let rid = gw.send(0, req);
            assert_problem(setup, &gw.response(rid).expect("answered at once"), 422);
        }
        gw.answer(call.id, created("paid")).unwrap();
        assert_eq!(gw.response(first).unwrap().status, 201, "{setup:?}");
        // ... and once it completed.
        for req in others() {
            let (resp, calls) = run(&mut gw, req, vec![created("never")]);
            assert_problem(setup, &resp, 422);
            assert_eq!(calls, 0, "{setup:?}");
        }
        assert_eq!(backend_calls(&gw).len(), 1, "{setup:?}");
        assert_eq!(metric(&gw, MISMATCHES), 6, "{setup:?}");
        // The record is untouched: the original request still replays.
        let (dup, _) = run(
            &mut gw,
            post("op-1", br#"{"amount":1}"#),
            vec![created("x")],
        );
        assert!(replayed(&dup) && dup.body == b"paid", "{setup:?}");
        assert_clean(setup, &gw);
    }
}

// ---- settle rows ----

#[test]
fn results_2xx_4xx_and_500_are_stored_and_replayed() {
    for setup in SETUPS {
        let mut gw = gateway(setup, "");
        let statuses = [200u16, 201, 204, 302, 400, 404, 422, 500];
        for (i, status) in statuses.into_iter().enumerate() {
            let key = format!("op-{i}");
            let body = match status {
                204 => Vec::new(),
                _ => format!("result {status}").into_bytes(),
            };
            let answer = Reply::status(status).body(body.clone());
            let (resp, calls) = run(&mut gw, post(&key, b"{}"), vec![answer]);
            assert_eq!((resp.status, calls), (status, 1), "{setup:?}");
            let (dup, calls) = run(&mut gw, post(&key, b"{}"), vec![created("again")]);
            assert_eq!(dup.status, status, "{setup:?}");
            assert_eq!(dup.body, body, "{setup:?} {status}");
            assert!(!dup.framing_error, "{setup:?} {status}");
            assert!(replayed(&dup), "{setup:?} {status}");
            assert_eq!(calls, 0, "{setup:?} {status}");
        }
        assert_eq!(metric(&gw, STORED), 8, "{setup:?}");
        assert_eq!(metric(&gw, REPLAYED), 8, "{setup:?}");
        assert_clean(setup, &gw);
    }
}

#[test]
fn outcomes_that_prove_nothing_was_applied_release_the_key() {
    for setup in SETUPS {
        let mut gw = gateway(setup, "");
        // 502 and 503 are in the default retry_on (1 + 2 retries), 429 is not.
        for (status, want) in [(503u16, 3), (502, 3), (429, 1)] {
            let key = format!("op-{status}");
            let before = backend_calls(&gw).len();
            let failing = Reply::status(status).body(b"not now".to_vec());
            let (resp, calls) = run(&mut gw, post(&key, b"{}"), vec![failing]);
            assert_eq!((resp.status, calls), (status, want), "{setup:?}");
            assert_eq!(resp.body, b"not now", "{setup:?} {status}");
            // The client's retry with the same key runs for real.
            let (again, calls) = run(&mut gw, post(&key, b"{}"), vec![created("paid")]);
            assert_eq!((again.status, calls), (201, 1), "{setup:?} {status}");
            assert!(!replayed(&again), "{setup:?} {status}");
            assert_eq!(backend_calls(&gw).len(), before + want + 1, "{setup:?}");
        }
        assert_eq!(metric(&gw, CONFLICTS), 0, "{setup:?}");
        assert_eq!(metric(&gw, STORED), 3, "{setup:?}: the three 201s");
        assert_clean(setup, &gw);
    }
}

#[test]
fn a_refused_connection_cannot_be_told_from_a_reset_and_keeps_the_key_locked() {
    // Neither host proves that a failed dispatch sent nothing: Kong reports a refused
    // connect as `broken connection`, like a failed send or read (operator guide,
    // "Metrics"); Envoy calls back with no reason at all. The filter takes the safe
    // reading, so the connect-failure row of the settle table (release) applies only to
    // failures the host names (Kong: resolver or TLS handshake failure).
    for setup in SETUPS {
        let mut gw = setup.builder(&config("", "")).workers(1).build().unwrap();
        let claimed_at = gw.now_ms();
        let (resp, calls) = run(
            &mut gw,
            post("op-1", b"{}"),
            vec![Reply::failure(Failure::Refused)],
        );
        assert!(resp.status >= 502, "{setup:?}: {}", resp.status);
        assert_eq!(calls, 3, "{setup:?}: retried as the policy says");
        assert_locked_until_lock_timeout(setup, &mut gw, "op-1", claimed_at);
        assert_clean(setup, &gw);
    }
}

/// A duplicate gets 409 until `lock_timeout` after the claim, then runs for real.
fn assert_locked_until_lock_timeout(setup: Setup, gw: &mut Gateway, key: &str, claimed_at: u64) {
    let calls_before = backend_calls(gw).len();
    let (dup, calls) = run(gw, post(key, b"{}"), vec![created("never")]);
    assert_problem(setup, &dup, 409);
    assert!(dup.header("retry-after").is_some(), "{setup:?} {key}");
    assert_eq!(calls, 0, "{setup:?} {key}");
    let now = gw.now_ms();
    gw.advance((claimed_at + LOCK_TIMEOUT_MS).saturating_sub(now) - 1);
    let (dup, calls) = run(gw, post(key, b"{}"), vec![created("never")]);
    assert_problem(setup, &dup, 409);
    assert_eq!(dup.header("retry-after"), Some("1"), "{setup:?} {key}");
    assert_eq!(calls, 0, "{setup:?} {key}");
    gw.advance(1);
    let (resp, calls) = run(gw, post(key, b"{}"), vec![created("paid")]);
    assert_eq!(
        (resp.status, calls),
        (201, 1),
        "{setup:?} {key}: free after lock_timeout"
    );
    assert!(!replayed(&resp), "{setup:?} {key}");
    assert_eq!(backend_calls(gw).len(), calls_before + 1, "{setup:?} {key}");
}

#[test]
fn unknown_outcomes_keep_the_key_locked_until_lock_timeout() {
    for setup in SETUPS {
        // Envoy's route timeout (15 s by default) would outlast the deadline: the native
        // first attempt gets the per-try timeout's length here.
        let mut gw = setup
            .builder(&config("", ""))
            .workers(1)
            .proxy_timeout_ms(2_000)
            .build()
            .unwrap();
        let cases: [(&str, Vec<Reply>); 5] = [
            ("timeout", vec![Reply::failure(Failure::Timeout)]),
            ("reset", vec![Reply::failure(Failure::Reset)]),
            ("504", vec![Reply::status(504)]),
            // The last attempt alone would release the key; an earlier one may have
            // been applied.
            ("504-then-503", vec![Reply::status(504), Reply::status(503)]),
            (
                "timeout-then-refused",
                vec![
                    Reply::failure(Failure::Timeout),
                    Reply::failure(Failure::Refused),
                ],
            ),
        ];
        for (name, replies) in cases {
            let key = format!("op-{name}");
            let claimed_at = gw.now_ms();
            let (resp, calls) = run(&mut gw, post(&key, b"{}"), replies);
            assert!(resp.status >= 500, "{setup:?} {name}: {}", resp.status);
            assert_eq!(calls, 3, "{setup:?} {name}");
            assert_locked_until_lock_timeout(setup, &mut gw, &key, claimed_at);
        }
        assert_eq!(
            metric(&gw, STORED),
            5,
            "{setup:?}: only the final runs' results"
        );
        assert_eq!(metric(&gw, CONFLICTS), 10, "{setup:?}");
        assert_clean(setup, &gw);
    }
}

#[test]
fn a_response_over_max_response_bytes_is_not_stored_and_the_key_stays_locked() {
    for setup in SETUPS {
        let mut gw = gateway(setup, r#""max_response_bytes":8"#);
        let claimed_at = gw.now_ms();
        let (resp, calls) = run(&mut gw, post("op-1", b"{}"), vec![created("123456789")]);
        assert_eq!((resp.status, calls), (201, 1), "{setup:?}");
        assert_eq!(
            resp.body, b"123456789",
            "{setup:?}: the client still gets it whole"
        );
        assert_eq!(metric(&gw, STORED), 0, "{setup:?}");
        assert_locked_until_lock_timeout(setup, &mut gw, "op-1", claimed_at);
        // Eight bytes fit.
        let (_, calls) = run(&mut gw, post("op-2", b"{}"), vec![created("12345678")]);
        assert_eq!(calls, 1, "{setup:?}");
        let (dup, calls) = run(&mut gw, post("op-2", b"{}"), vec![created("never")]);
        assert_eq!((dup.status, calls), (201, 0), "{setup:?}");
        assert_eq!(dup.body, b"12345678", "{setup:?}");
        assert_clean(setup, &gw);
    }
}

// ---- bounds, store, body, scope ----

#[test]
fn the_shared_store_keeps_max_records_and_evicts_the_oldest_finished_first() {
    for setup in SETUPS {
        let mut gw = gateway(setup, r#""shared":{"max_records":3}"#);
        for k in ["k1", "k2", "k3", "k4"] {
            let (resp, calls) = run(&mut gw, post(k, b"{}"), vec![created(k)]);
            assert_eq!((resp.status, calls), (201, 1), "{setup:?} {k}");
        }
        assert_eq!(metric(&gw, EVICTED), 1, "{setup:?}: k1 made room for k4");
        for k in ["k2", "k3", "k4"] {
            let (dup, calls) = run(&mut gw, post(k, b"{}"), vec![created("never")]);
            assert_eq!(
                (calls, dup.body.as_slice()),
                (0, k.as_bytes()),
                "{setup:?} {k}"
            );
            assert!(replayed(&dup), "{setup:?} {k}");
        }
        // k1 was forgotten: it runs again (and evicts k2, now the oldest).
        let (resp, calls) = run(&mut gw, post("k1", b"{}"), vec![created("k1 again")]);
        assert_eq!((resp.status, calls), (201, 1), "{setup:?}");
        assert!(!replayed(&resp), "{setup:?}");
        assert_eq!(metric(&gw, EVICTED), 2, "{setup:?}");
        assert_eq!(backend_calls(&gw).len(), 5, "{setup:?}");
        assert_clean(setup, &gw);
    }
}

/// The same keyed request twice where the gateway cannot guard it: with `allow` each
/// goes to the upstream (once: `reply` is its answer, not retried) and nothing is
/// remembered; with `deny` each gets the problem `denied` and the upstream is not called.
fn assert_unguarded_or_refused(
    setup: Setup,
    gw: &mut Gateway,
    policy: &str,
    request: impl Fn() -> Request,
    reply: Reply,
    denied: u16,
) {
    let Reply::Response { status, body, .. } = reply.clone() else {
        panic!("a response, please");
    };
    for _ in 0..2 {
        let (resp, calls) = run(gw, request(), vec![reply.clone()]);
        if policy == "allow" {
            assert_eq!((resp.status, calls), (status, 1), "{setup:?} {policy}");
            assert_eq!(resp.body, body, "{setup:?} {policy}");
            assert!(!replayed(&resp), "{setup:?} {policy}");
        } else {
            assert_problem(setup, &resp, denied);
            assert_eq!(calls, 0, "{setup:?} {policy}");
        }
    }
    let want = if policy == "allow" { 2 } else { 0 };
    assert_eq!(backend_calls(gw).len(), want, "{setup:?} {policy}");
    assert_eq!(metric(gw, STORED), 0, "{setup:?} {policy}");
}

#[test]
fn kong_without_a_zone_follows_on_store_unavailable() {
    for policy in ["allow", "deny"] {
        let mut gw = Setup::Kong
            .builder(&config(
                &format!(r#""on_store_unavailable":"{policy}""#),
                "",
            ))
            .shared_data_zone(false)
            .workers(1)
            .build()
            .unwrap();
        assert_unguarded_or_refused(
            Setup::Kong,
            &mut gw,
            policy,
            || post("op-1", b"{}"),
            created("paid"),
            503,
        );
        assert_eq!(metric(&gw, UNAVAILABLE), 2, "{policy}");
        let warnings = log_lines(&gw, LogLevel::Warn, "idempotency store unavailable");
        assert_eq!(
            warnings.len(),
            1,
            "{policy}: said once per VM: {warnings:?}"
        );
        assert!(warnings[0].contains(policy), "{warnings:?}");
        assert_clean(Setup::Kong, &gw);
    }
}

#[test]
fn a_keyed_body_over_max_body_bytes_goes_once_unguarded_or_gets_413() {
    for setup in SETUPS {
        for policy in ["allow", "deny"] {
            let idem = format!(r#""on_store_unavailable":"{policy}""#);
            let mut gw = setup.gateway(&config(&idem, r#""max_body_bytes":16"#), 1);
            // Native, once: the upstream's answer, not retried, not stored.
            let busy = Reply::status(503).body(b"busy".to_vec());
            let request = || post("op-1", &[b'a'; 17]);
            assert_unguarded_or_refused(setup, &mut gw, policy, request, busy, 413);
            for c in backend_calls(&gw) {
                assert_eq!(c.body, [b'a'; 17], "{setup:?}: the body went whole");
            }
            assert_clean(setup, &gw);
        }
    }
}

#[test]
fn the_same_key_from_two_consumers_is_two_operations() {
    for setup in SETUPS {
        let mut gw = gateway(setup, r#""consumer_header":"X-Consumer-ID""#);
        let from =
            |consumer: &str, body: &[u8]| post("op-1", body).header("x-consumer-id", consumer);
        let (a, calls) = run(
            &mut gw,
            from("alice", b"{\"a\":1}"),
            vec![created("alice paid")],
        );
        assert_eq!((a.status, calls), (201, 1), "{setup:?}");
        // Another consumer's key space: another body is no mismatch, and it runs.
        let (b, calls) = run(
            &mut gw,
            from("bob", b"{\"b\":2}"),
            vec![created("bob paid")],
        );
        assert_eq!((b.status, calls), (201, 1), "{setup:?}");
        assert!(!replayed(&b), "{setup:?}");
        // Each gets its own result replayed.
        let (a2, calls) = run(&mut gw, from("alice", b"{\"a\":1}"), vec![created("never")]);
        assert_eq!(
            (a2.body.as_slice(), calls),
            (&b"alice paid"[..], 0),
            "{setup:?}"
        );
        let (b2, calls) = run(&mut gw, from("bob", b"{\"b\":2}"), vec![created("never")]);
        assert_eq!(
            (b2.body.as_slice(), calls),
            (&b"bob paid"[..], 0),
            "{setup:?}"
        );
        // A request without the header is a third consumer (the empty one).
        let (c, calls) = run(&mut gw, post("op-1", b"{}"), vec![created("anon paid")]);
        assert_eq!((c.status, calls), (201, 1), "{setup:?}");
        assert_eq!(metric(&gw, MISMATCHES), 0, "{setup:?}");
        assert_eq!(metric(&gw, REPLAYED), 2, "{setup:?}");
        assert_eq!(backend_calls(&gw).len(), 3, "{setup:?}");
        assert_clean(setup, &gw);
    }
}

#[test]
fn kong_a_keyed_body_spilled_to_a_file_goes_once_unguarded_or_gets_413() {
    // A body over client_body_buffer_size is spilled to a file and unreadable (BRIEF,
    // "cannot read request body buffered to file"): it cannot be fingerprinted.
    for policy in ["allow", "deny"] {
        let idem = format!(r#""on_store_unavailable":"{policy}""#);
        let mut gw = Setup::Kong
            .builder(&config(&idem, ""))
            .body_buffer_size(64)
            .workers(1)
            .build()
            .unwrap();
        let request = || post("op-1", &[b'a'; 100]);
        assert_unguarded_or_refused(Setup::Kong, &mut gw, policy, request, created("paid"), 413);
        assert!(gw.traps().is_empty(), "{:?}", gw.traps());
    }
}

#[test]
fn a_keyed_post_without_a_body_is_guarded_too() {
    // No body to wait for: on Envoy in dispatch mode the first attempt is dispatched
    // (with a body it goes natively, see the warning in the log).
    for setup in SETUPS {
        let mut gw = gateway(setup, "");
        let capture = || Request::new("POST", "/payments/7/capture").header(KEY_HEADER, "cap-7");
        let (resp, calls) = run(
            &mut gw,
            capture(),
            vec![Reply::status(503), created("captured")],
        );
        assert_eq!((resp.status, calls), (201, 2), "{setup:?}");
        let (dup, calls) = run(&mut gw, capture(), vec![created("never")]);
        assert_eq!(
            (dup.body.as_slice(), calls),
            (&b"captured"[..], 0),
            "{setup:?}"
        );
        assert!(replayed(&dup), "{setup:?}");
        if setup == Setup::EnvoyDispatch {
            assert!(
                backend_calls(&gw).iter().all(|c| c.is_dispatch()),
                "{setup:?}"
            );
        }
        assert_clean(setup, &gw);
    }
}
