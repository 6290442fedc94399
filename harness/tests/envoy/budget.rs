//! The retry budget at 100 % failure: within its bound on a fresh instance, after earlier
//! hung and abandoned requests, and with two workers sharing one budget.
//!
//! Bound (docs/design.md, *Retry budget*), over any stretch of T seconds:
//! `retries ≤ min_retries_per_second × 1 s + percent/100 × requests + min_retries_per_second × T`,
//! with the defaults 10 + 0.2 × requests + 10 × T.

use crate::common::*;
use kong_retry_harness::client::{self, Request};
use serde_json::json;
use std::time::{Duration, Instant};

/// Sends `n` requests to an always-503 id from `threads` clients; (retries, seconds).
fn burst(rig: &Rig, id: &str, n: usize, threads: usize) -> (u64, f64) {
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for i in (t..n).step_by(threads) {
                    let r = rig.ok(&Request::get(&format!("/down?id={id}&plan=503&i={i}")));
                    assert_eq!(r.status, 503);
                }
            });
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let calls = rig.calls(id).len() as u64;
    (calls.saturating_sub(n as u64), seconds)
}

/// The bound with the default budget, for `requests` recorded and `seconds` elapsed.
fn bound(requests: u64, seconds: f64) -> f64 {
    10.0 + 0.2 * requests as f64 + 10.0 * seconds
}

#[test]
fn budget_holds_on_a_fresh_instance() {
    in_every_mode(|mode| {
        let rig = Rig::start(mode, json!({ "retries": 3 }));
        let (retries, seconds) = burst(&rig, "fresh", 100, 1);
        let limit = bound(100, seconds);
        assert!(
            retries as f64 <= limit,
            "{retries} retries for 100 requests in {seconds:.2} s; bound {limit:.1}"
        );
        assert!(
            retries >= 25,
            "the budget grants its start and its 20 %: {retries}"
        );
        let m = rig.metrics();
        assert_eq!(m.value("kong_retry_retries_total"), retries as f64);
        assert!(m.value("kong_retry_budget_denied_total") > 0.0);
        rig.assert_clean();
    });
}

#[test]
fn budget_holds_after_hung_and_abandoned_requests() {
    in_every_mode(|mode| {
        let rig = Rig::start_with(
            mode,
            json!({ "retries": 3, "per_try_timeout": 300, "budget": { "window": 3000 } }),
            |b| b.route_timeout_ms = 300,
        );
        // Two clients walk away from hanging requests, two wait for them to time out.
        for i in 0..2 {
            client::send_and_leave(
                rig.envoy.addr(),
                &Request::get(&format!("/h?id=left{i}&plan=hang")),
                Duration::from_millis(100),
            )
            .unwrap();
        }
        std::thread::scope(|s| {
            for i in 0..2 {
                let rig = &rig;
                s.spawn(move || rig.send(&Request::get(&format!("/h?id=hung{i}&plan=hang"))));
            }
        });
        // Then the route is quiet for longer than the budget's window.
        std::thread::sleep(Duration::from_millis(3500));
        let (retries, seconds) = burst(&rig, "after", 100, 1);
        let limit = bound(100 + 4, seconds);
        assert!(
            retries as f64 <= limit,
            "{retries} retries for 100 requests in {seconds:.2} s after earlier hung requests; bound {limit:.1}"
        );
        assert!(retries >= 25, "{retries}");
        rig.assert_clean();
    });
}

#[test]
fn two_workers_share_one_budget() {
    in_every_mode(|mode| {
        let rig = Rig::start_with(mode, json!({ "retries": 3 }), |b| b.concurrency = 2);
        let (retries, seconds) = burst(&rig, "shared", 100, 4);
        let limit = bound(100, seconds);
        assert!(
            retries as f64 <= limit,
            "{retries} retries for 100 requests in {seconds:.2} s on 2 workers; one budget's bound {limit:.1}"
        );
        let m = rig.metrics();
        for worker in ["0", "1"] {
            let cx = m
                .with_label(
                    "envoy_listener_worker_downstream_cx_total",
                    &format!("envoy_worker_id=\"{worker}\""),
                )
                .unwrap_or(0.0);
            assert!(
                cx > 0.0,
                "worker {worker} served no connection: {:?}",
                m.names_with("envoy_listener_worker")
            );
        }
        rig.assert_clean();
    });
}
