//! Waits and timing: per-try timeouts on a hanging upstream, backoff that really waits,
//! `Retry-After` honoured and capped, a client that goes away mid-retry.

use crate::common::*;
use kong_retry_harness::client::{self, Request};
use serde_json::json;
use std::time::Duration;

/// Gap between the end of call `i` and the arrival of call `i + 1`, in ms.
fn gaps(calls: &[kong_retry_harness::upstream::Call]) -> Vec<f64> {
    calls
        .windows(2)
        .map(|w| w[1].arrived_ms - w[0].answered_ms)
        .collect()
}

#[test]
fn hanging_upstream_times_out_per_try_then_retries() {
    in_every_mode(|mode| {
        // Response mode: the native attempt's timeout is the route's.
        let rig = Rig::start_with(mode, json!({ "per_try_timeout": 500 }), |b| {
            b.route_timeout_ms = 500
        });
        let r = rig.ok(&Request::get("/slow?id=hang1&plan=hang,ok"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "ok hang1 call 2\n");
        assert!(
            r.elapsed >= Duration::from_millis(490),
            "the first try waited its timeout: {:?}",
            r.elapsed
        );
        assert_eq!(rig.calls("hang1").len(), 2);
        let m = rig.metrics();
        let timeouts = m.value("kong_retry_retries_by_reason_total_reason_timeout")
            + m.value("kong_retry_retries_by_reason_total_reason_504");
        assert_eq!(
            timeouts, 1.0,
            "one retry after a timeout (Envoy's own 504 in response mode)"
        );
        rig.assert_clean();
    });
}

#[test]
fn when_every_attempt_times_out_the_client_gets_504_with_a_body() {
    in_every_mode(|mode| {
        let rig = Rig::start_with(
            mode,
            json!({ "per_try_timeout": 400, "retries": 1, "deadline": 3000 }),
            |b| b.route_timeout_ms = 400,
        );
        let r = rig
            .send(&Request::get("/slow?id=hangall&plan=hang"))
            .unwrap_or_else(|e| panic!("the client must get an answer, not: {e}"));
        assert_eq!(r.status, 504);
        assert!(!r.body.is_empty(), "504 with a body");
        assert_eq!(rig.calls("hangall").len(), 2);
        rig.assert_clean();
    });
}

#[test]
fn backoff_really_waits_between_attempts() {
    in_every_mode(|mode| {
        let rig = Rig::start(
            mode,
            json!({ "backoff": { "strategy": "fixed", "interval": 300 } }),
        );
        let r = rig.ok(&Request::get("/b?id=backoff&plan=503*2,ok"));
        assert_eq!(r.status, 200);
        let calls = rig.calls("backoff");
        assert_eq!(calls.len(), 3);
        for gap in gaps(&calls) {
            assert!(
                (295.0..1300.0).contains(&gap),
                "gap {gap:.1} ms for a 300 ms backoff"
            );
        }
        rig.assert_clean();
    });
}

#[test]
fn retry_after_is_honoured_and_capped() {
    in_every_mode(|mode| {
        let rig = Rig::start(mode, json!({ "retry_after_max": 2000 }));
        let r = rig.ok(&Request::get("/r?id=ra1&plan=503,ok&retry_after=1"));
        assert_eq!(r.status, 200);
        let calls = rig.calls("ra1");
        assert_eq!(calls.len(), 2);
        let gap = gaps(&calls)[0];
        assert!(
            (995.0..2500.0).contains(&gap),
            "Retry-After: 1 waited {gap:.1} ms"
        );
        // Above retry_after_max: the response goes to the client as it is, no retry.
        let r = rig.ok(&Request::get("/r?id=ra30&plan=503,ok&retry_after=30"));
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after"), Some("30"));
        assert_eq!(rig.calls("ra30").len(), 1);
        rig.assert_clean();
    });
}

#[test]
fn client_going_away_mid_retry_stops_the_retries() {
    in_every_mode(|mode| {
        let rig = Rig::start(
            mode,
            json!({ "backoff": { "strategy": "fixed", "interval": 500 } }),
        );
        // Leaves during the first backoff wait.
        client::send_and_leave(
            rig.envoy.addr(),
            &Request::get("/g?id=gone&plan=503"),
            Duration::from_millis(200),
        )
        .unwrap();
        // Leaves while an attempt hangs.
        client::send_and_leave(
            rig.envoy.addr(),
            &Request::get("/g?id=gonehang&plan=hang"),
            Duration::from_millis(200),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(
            rig.calls("gone").len(),
            1,
            "no retry for a client that left"
        );
        assert_eq!(
            rig.calls("gonehang").len(),
            1,
            "no retry for a client that left"
        );
        // The gateway goes on serving.
        let r = rig.ok(&Request::get("/g?id=after&plan=503,ok"));
        assert_eq!(r.status, 200);
        rig.assert_clean();
    });
}
