//! Gateway idempotency across two gateway nodes sharing one etcd, on real processes: two
//! real Envoys 1.40 with the filter (`store: etcd`, the `etcd` cluster), one real etcd on
//! loopback, our upstream, which does not honour keys and counts effects per key (a 2xx
//! it answered is an applied operation).
//!
//! A client whose answer from node A was lost retries on node B with the same key and
//! bytes: B replays A's result, or answers 409 while A's request is in flight; the
//! upstream applies the operation once. Then etcd stopped or frozen: `on_store_unavailable`
//! decides, within `etcd.timeout`, counted in a metric. Last, a small seeded chaos run.

// Test code: a failed setup step should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kong_retry_harness::client::{self, ClientError, Request, Response};
use kong_retry_harness::envoy::Envoy;
use kong_retry_harness::idempotency::chaos::{self, ChaosOptions};
use kong_retry_harness::idempotency::{
    filter_config, is_problem, keyed_post, replayed, retry_after_secs, start_envoys, Nodes, Store,
};
use kong_retry_harness::upstream::Upstream;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The etcd store's counter of requests that found it unavailable.
const STORE_UNAVAILABLE: &str = "kong_retry_idempotency_store_unavailable_total";

fn wasm() -> PathBuf {
    static WASM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match WASM.get_or_init(|| kong_retry_harness::wasm::filter().map_err(|e| e.to_string())) {
        Ok(p) => p.clone(),
        Err(e) => panic!("cannot build the filter: {e}"),
    }
}

fn nodes(idempotency: Value) -> Nodes {
    let config = filter_config(Store::Etcd, &idempotency, &json!({}));
    Nodes::start(2, &wasm(), &config).unwrap_or_else(|e| panic!("{e}"))
}

fn send(node: &Envoy, req: &Request) -> Response {
    node.send(req).unwrap_or_else(|e| {
        panic!(
            "{} {}: no whole answer: {e}; log {}",
            req.method,
            req.path,
            node.log_path().display()
        )
    })
}

fn effects(upstream: &Upstream, key: &str) -> (u64, u64) {
    let s = upstream.summary().unwrap_or_else(|e| panic!("{e}"));
    s.keys
        .iter()
        .find(|(k, _, _)| k == key)
        .map_or((0, 0), |(_, calls, effects)| (*calls, *effects))
}

/// Envoy's log lines of the filter and any wasm errors, for failure messages.
fn logs(n: &Nodes) -> String {
    let mut out = String::new();
    for (i, e) in n.nodes.iter().enumerate() {
        let lines = e.filter_lines();
        let tail: Vec<&String> = lines.iter().rev().take(15).collect();
        out.push_str(&format!(
            "\nnode {} log {} (last filter lines):\n",
            kong_retry_harness::idempotency::node_name(i),
            e.log_path().display()
        ));
        for l in tail.into_iter().rev() {
            out.push_str(l);
            out.push('\n');
        }
    }
    for l in n.wasm_errors() {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

fn assert_clean(n: &Nodes) {
    let errors = n.wasm_errors();
    assert!(errors.is_empty(), "wasm errors:\n{}", errors.join("\n"));
}

#[test]
fn a_response_lost_after_node_a_answered_is_replayed_by_node_b() {
    let n = nodes(json!({}));
    let key = "lost-1";
    let body = br#"{"amount_cents":1250,"to":"acct-9"}"#;
    let req = keyed_post("/payments?id=lost&status=201&cookies=2", key, body);
    // Node A answers; the answer is lost on the way back (the client never uses it).
    let first = send(n.node(0), &req);
    assert_eq!(first.status, 201, "{}{}", first.text(), logs(&n));
    assert!(!replayed(&first), "a first run is not a replay");
    let again = send(n.node(1), &req);
    assert_eq!(again.status, 201, "{}{}", again.text(), logs(&n));
    assert!(replayed(&again), "node B replays A's result{}", logs(&n));
    assert_eq!(again.body, first.body, "the stored body, byte-exact");
    assert_eq!(again.header("x-upstream-call"), Some("1"));
    assert_eq!(again.all("set-cookie"), first.all("set-cookie"));
    assert_eq!(
        effects(&n.upstream, key),
        (1, 1),
        "applied once{}",
        logs(&n)
    );
    assert_clean(&n);
}

/// The client gives up on A while the upstream is still applying the payment: Envoy ends
/// the stream, so A never learns the result and cannot store it. For the gateway the
/// outcome is unknown: B answers 409 for as long as A's lock lives (lock_timeout 6 s here),
/// and the upstream applied the payment once. (After the lock the key is free again: the
/// operator sizes lock_timeout beyond the clients' retry horizon, see the guide.)
#[test]
fn a_client_that_gives_up_on_node_a_gets_409_from_node_b_while_the_outcome_is_unknown() {
    let n = nodes(json!({}));
    let key = "impatient-1";
    let req = keyed_post(
        "/payments?id=impatient&delay_ms=1500",
        key,
        br#"{"amount_cents":99}"#,
    );
    // The client gives up on A while the upstream is applying the payment.
    let gave_up = n
        .node(0)
        .send(&req.clone().timeout(Duration::from_millis(300)));
    assert!(
        matches!(gave_up, Err(ClientError::Timeout)),
        "the client times out on A: {gave_up:?}"
    );
    let busy = send(n.node(1), &req);
    assert_eq!(
        busy.status,
        409,
        "A's lock is in flight: {}{}",
        busy.text(),
        logs(&n)
    );
    assert!(is_problem(&busy), "{:?}", busy.headers);
    let wait = retry_after_secs(&busy)
        .unwrap_or_else(|| panic!("409 without Retry-After: {:?}", busy.headers));
    assert!(
        (1..=6).contains(&wait),
        "Retry-After {wait} s, lock_timeout 6 s"
    );
    // Once the upstream has applied it (1.5 s), B still does not run it.
    std::thread::sleep(Duration::from_millis(2000));
    let still = send(n.node(1), &req);
    assert_eq!(
        still.status,
        409,
        "the outcome is still unknown: {}{}",
        still.text(),
        logs(&n)
    );
    assert_eq!(
        effects(&n.upstream, key),
        (1, 1),
        "applied once{}",
        logs(&n)
    );
    assert_clean(&n);
}

#[test]
fn node_a_killed_mid_request_leaves_its_lock_to_answer_409_on_node_b() {
    let mut n = nodes(json!({"lock_timeout": 20000}));
    let key = "killed-1";
    let req = keyed_post(
        "/payments?id=killed&delay_ms=1000",
        key,
        br#"{"amount_cents":7}"#,
    );
    let a = n.node(0).addr();
    let inflight =
        std::thread::spawn(move || client::send(a, &req.timeout(Duration::from_secs(5))));
    // Wait until the upstream has the request, then kill node A by pid.
    let until = Instant::now() + Duration::from_secs(5);
    while n.upstream.calls("killed").unwrap().is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    n.nodes[0].kill();
    assert!(inflight.join().unwrap().is_err(), "A died before answering");
    std::thread::sleep(Duration::from_millis(1200)); // the upstream has applied it
    let req = keyed_post(
        "/payments?id=killed&delay_ms=1000",
        key,
        br#"{"amount_cents":7}"#,
    );
    for _ in 0..2 {
        let r = send(n.node(1), &req);
        assert_eq!(
            r.status,
            409,
            "A's lock outlives A: {}{}",
            r.text(),
            logs(&n)
        );
        let left = retry_after_secs(&r).unwrap_or(0);
        assert!((1..=20).contains(&left), "Retry-After {left}");
    }
    assert_eq!(
        effects(&n.upstream, key),
        (1, 1),
        "applied once, by A's request"
    );
}

#[test]
fn the_same_key_with_another_body_on_node_b_gets_422() {
    let n = nodes(json!({}));
    let key = "reused-1";
    let first = send(
        n.node(0),
        &keyed_post("/payments?id=reused", key, br#"{"amount_cents":100}"#),
    );
    assert_eq!(first.status, 200, "{}", first.text());
    let other = send(
        n.node(1),
        &keyed_post("/payments?id=reused", key, br#"{"amount_cents":900}"#),
    );
    assert_eq!(other.status, 422, "{}{}", other.text(), logs(&n));
    assert!(is_problem(&other), "{:?}", other.headers);
    assert!(!replayed(&other));
    assert_eq!(effects(&n.upstream, key), (1, 1));
    assert_clean(&n);
}

#[test]
fn concurrent_duplicates_on_both_nodes_reach_the_upstream_once() {
    let n = nodes(json!({}));
    let key = "dup-1";
    let req = keyed_post(
        "/payments?id=dup&delay_ms=800",
        key,
        br#"{"amount_cents":5}"#,
    );
    let answers: Vec<Response> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let node = n.node(i % 2);
                let req = &req;
                s.spawn(move || send(node, req))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let first_runs = answers
        .iter()
        .filter(|r| r.status == 200 && !replayed(r))
        .count();
    let others: Vec<(u16, bool)> = answers
        .iter()
        .filter(|r| r.status != 200 || replayed(r))
        .map(|r| (r.status, replayed(r)))
        .collect();
    assert_eq!(first_runs, 1, "one request ran: {others:?}{}", logs(&n));
    assert!(
        others
            .iter()
            .all(|a| *a == (409, false) || *a == (200, true)),
        "the others get 409 (in flight) or the replay: {others:?}"
    );
    assert_eq!(effects(&n.upstream, key), (1, 1), "{}", logs(&n));
    assert_clean(&n);
}

/// Two nodes on one etcd: A with `on_store_unavailable: allow`, B with `deny`.
fn allow_and_deny(etcd_timeout_ms: u64) -> Nodes {
    let etcd = kong_retry_harness::etcd::Etcd::start().unwrap_or_else(|e| panic!("{e}"));
    let upstream = Upstream::start().unwrap_or_else(|e| panic!("{e}"));
    let mut envoys = Vec::new();
    for policy in ["allow", "deny"] {
        let config = filter_config(
            Store::Etcd,
            &json!({"on_store_unavailable": policy, "etcd": {"timeout": etcd_timeout_ms}}),
            &json!({}),
        );
        envoys.extend(
            start_envoys(1, &wasm(), &config, &upstream, &etcd).unwrap_or_else(|e| panic!("{e}")),
        );
    }
    Nodes {
        etcd,
        upstream,
        nodes: envoys,
    }
}

/// With the store unusable: `allow` (node A) forwards once, `deny` (node B) answers 503
/// problem+json without calling the upstream; both answer well within the client's
/// timeout, and count it.
fn store_unavailable_answers(n: &Nodes, what: &str) {
    let client_timeout = Duration::from_secs(10);
    let allow_key = format!("{what}-allow");
    let deny_key = format!("{what}-deny");
    let allowed = send(
        n.node(0),
        &keyed_post(&format!("/payments?id={allow_key}"), &allow_key, b"{}")
            .timeout(client_timeout),
    );
    assert_eq!(
        allowed.status,
        200,
        "allow forwards: {}{}",
        allowed.text(),
        logs(n)
    );
    assert!(!replayed(&allowed));
    assert_eq!(effects(&n.upstream, &allow_key), (1, 1), "forwarded once");
    let denied = send(
        n.node(1),
        &keyed_post(&format!("/payments?id={deny_key}"), &deny_key, b"{}").timeout(client_timeout),
    );
    assert_eq!(denied.status, 503, "deny: {}{}", denied.text(), logs(n));
    assert!(is_problem(&denied), "{:?}", denied.headers);
    assert_eq!(
        effects(&n.upstream, &deny_key),
        (0, 0),
        "deny never forwards"
    );
    // Loose bound (no timing goal): a few etcd.timeout (300 ms) calls at most, far below
    // the client's 10 s.
    for (r, who) in [(&allowed, "allow"), (&denied, "deny")] {
        assert!(
            r.elapsed < Duration::from_secs(5),
            "{what}, {who}: answered after {:?}",
            r.elapsed
        );
    }
    for (i, e) in n.nodes.iter().enumerate() {
        let m = e.metrics().unwrap_or_else(|err| panic!("{err}"));
        assert!(
            m.value(STORE_UNAVAILABLE) >= 1.0,
            "{what}: node {i} counts the unavailable store in {STORE_UNAVAILABLE}; idempotency metrics: {:?}",
            m.names_with("kong_retry_idem")
        );
    }
}

/// After etcd is back, keyed requests are deduplicated again (on the deny node).
fn store_back(n: &Nodes, what: &str) {
    let key = format!("{what}-back");
    let req = keyed_post(&format!("/payments?id={key}"), &key, b"{\"n\":1}");
    let until = Instant::now() + Duration::from_secs(10);
    let first = loop {
        let r = send(n.node(1), &req);
        if r.status != 503 || Instant::now() > until {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        first.status,
        200,
        "{what}: etcd is back: {}{}",
        first.text(),
        logs(n)
    );
    let again = send(n.node(0), &req);
    assert!(
        replayed(&again),
        "{what}: replayed once etcd is back{}",
        logs(n)
    );
    assert_eq!(effects(&n.upstream, &key), (1, 1));
}

#[test]
fn etcd_stopped_allow_forwards_once_and_deny_answers_503() {
    let mut n = allow_and_deny(300);
    n.etcd.stop();
    store_unavailable_answers(&n, "stopped");
    n.etcd.restart().unwrap_or_else(|e| panic!("{e}"));
    store_back(&n, "stopped");
}

#[test]
fn etcd_frozen_allow_forwards_once_and_deny_answers_503_within_the_timeout() {
    let mut n = allow_and_deny(300);
    n.etcd.pause();
    store_unavailable_answers(&n, "frozen");
    n.etcd.resume();
    store_back(&n, "frozen");
}

#[test]
fn a_small_chaos_run_applies_every_operation_at_most_once() {
    let options = ChaosOptions {
        requests: 100,
        concurrency: 6,
        etcd_restarts: 1,
        client_deadline: Duration::from_secs(12),
        ..ChaosOptions::full(11)
    };
    let config = filter_config(
        Store::Etcd,
        &json!({"on_store_unavailable": "deny", "lock_timeout": options.lock_timeout_ms()}),
        &json!({}),
    );
    let mut n = Nodes::start(2, &wasm(), &config).unwrap_or_else(|e| panic!("{e}"));
    let report = chaos::run(&mut n, &options).unwrap_or_else(|e| panic!("{e}"));
    let table = report.markdown();
    let doubles: Vec<String> = report
        .doubles()
        .iter()
        .map(|(o, e)| format!("{} ×{e}: {:?} {:?}", o.key, o.fault, o.failure))
        .collect();
    assert!(
        doubles.is_empty(),
        "applied twice: {doubles:?}\n{table}{}",
        logs(&n)
    );
    assert!(report.phantom_successes().is_empty(), "{table}");
    assert!(report.ops.iter().all(|o| !o.wrong_body), "{table}");
    assert!(report.ops.iter().all(|o| o.unprocessable == 0), "{table}");
    assert!(
        report.ops.iter().any(|o| o.replayed),
        "lost responses are replayed\n{table}"
    );
    assert_eq!(report.etcd_restarts.len(), 1, "{table}");
    assert!(report.wasm_errors.is_empty(), "{table}");
}

#[test]
fn a_hanging_first_attempt_is_cut_at_per_try_timeout_and_its_lock_holds_until_it_ends() {
    // per_try_timeout 1500 ms, deadline 5000 ms, lock_timeout 6000 ms; Envoy's route
    // timeout is 10 s. The first attempt hangs.
    let n = nodes(json!({}));
    let key = "hang-1";
    let path = "/payments?id=hang&plan=hang,ok";
    let body = br#"{"amount_cents":31}"#;
    let a = n.node(0).addr();
    let req = keyed_post(path, key, body).timeout(Duration::from_secs(15));
    let first = std::thread::spawn(move || client::send(a, &req));
    // A duplicate on B once A's lock would have ended, had A kept to its deadline.
    std::thread::sleep(Duration::from_millis(6500));
    let dup = send(n.node(1), &keyed_post(path, key, body));
    let first = first.join().unwrap();
    let first_text = match &first {
        Ok(r) => format!("{} {:?} after {:?}", r.status, r.text(), r.elapsed),
        Err(e) => format!("{e}"),
    };
    let calls = n.upstream.calls("hang").unwrap();
    let steps: Vec<(String, f64)> = calls
        .iter()
        .map(|c| (c.step.clone(), c.arrived_ms))
        .collect();
    let first = first.unwrap_or_else(|e| panic!("A: {e}"));
    assert_eq!(
        (first.status, first.text().as_str()),
        (200, "ok hang call 2\n"),
        "A retries the hanging attempt; upstream calls {steps:?}"
    );
    assert!(
        first.elapsed < Duration::from_secs(5),
        "A answers within its deadline (5 s): {first_text}; upstream calls {steps:?}"
    );
    assert!(
        replayed(&dup) && dup.body == first.body,
        "the duplicate on B, sent after A answered, is the replay: {} {:?}; A: {first_text}; upstream calls {steps:?}",
        dup.status,
        dup.text()
    );
    assert_eq!(
        effects(&n.upstream, key),
        (2, 1),
        "upstream calls {steps:?}"
    );
    assert_clean(&n);
}
