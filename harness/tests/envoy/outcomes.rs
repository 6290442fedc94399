//! Retry outcomes: flaky GET, exhausted retries, POST without and with a key, PUT.

use crate::common::*;
use kong_retry_harness::client::Request;
use kong_retry_harness::http1::sha256_hex;
use serde_json::json;

#[test]
fn flaky_get_is_retried_until_it_succeeds() {
    in_every_mode(|mode| {
        let rig = Rig::start(mode, json!({}));
        let r = rig.ok(&Request::get("/orders?id=flaky&plan=503*2,ok"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "ok flaky call 3\n");
        assert_eq!(r.header("x-kong-retry-attempts"), Some("3"));
        let calls = rig.calls("flaky");
        let attempts: Vec<Option<&str>> = calls.iter().map(|c| c.attempt.as_deref()).collect();
        assert_eq!(attempts, [None, Some("2"), Some("3")]);
        let m = rig.metrics();
        assert_eq!(
            m.value("kong_retry_requests_total"),
            1.0 + rig.primed as f64
        );
        assert_eq!(m.value("kong_retry_retries_total"), 2.0);
        assert_eq!(
            m.value("kong_retry_retries_by_reason_total_reason_503"),
            2.0
        );
        assert_eq!(m.value("kong_retry_retry_success_total"), 1.0);
        assert_eq!(m.value("kong_retry_exhausted_total"), 0.0);
        rig.assert_clean();
    });
}

#[test]
fn exhausted_retries_return_the_last_upstream_response() {
    in_every_mode(|mode| {
        let rig = Rig::start(mode, json!({}));
        let r = rig.ok(&Request::get("/orders?id=down&plan=503"));
        assert_eq!(r.status, 503);
        assert_eq!(r.text(), "fail 503 call 3\n", "the last attempt's body");
        assert_eq!(r.header("x-kong-retry-attempts"), Some("3"));
        assert_eq!(rig.calls("down").len(), 3);
        let m = rig.metrics();
        assert_eq!(m.value("kong_retry_exhausted_total"), 1.0);
        assert_eq!(m.value("kong_retry_retries_total"), 2.0);
        assert_eq!(m.value("kong_retry_retry_success_total"), 0.0);
        rig.assert_clean();
    });
}

#[test]
fn post_without_key_is_sent_once() {
    in_every_mode(|mode| {
        let rig = Rig::start(mode, json!({}));
        let r = rig.ok(&Request::new("POST", "/orders?id=post&plan=503").body("x=1"));
        assert_eq!(r.status, 503);
        assert_eq!(r.text(), "fail 503 call 1\n");
        let calls = rig.calls("post");
        assert_eq!(
            calls.len(),
            1,
            "a POST without Idempotency-Key is never retried"
        );
        assert_eq!(calls[0].body_sha256, sha256_hex(b"x=1"));
        assert_eq!(rig.metrics().value("kong_retry_retries_total"), 0.0);
        rig.assert_clean();
    });
}

#[test]
fn keyed_post_is_retried_with_the_same_body_and_applied_once() {
    in_every_mode(|mode| {
        let rig = Rig::start(mode, json!({}));
        let body: Vec<u8> = (0..300u32).map(|i| (i * 7 % 256) as u8).collect();
        let key = format!("order-{}", mode.name());
        let r = rig.ok(
            &Request::new("POST", "/orders?id=kpost&plan=503*2,ok&echo=1")
                .header("idempotency-key", &key)
                .header("content-type", "application/octet-stream")
                .body(body.clone()),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.body, body,
            "the upstream's echo reaches the client byte for byte"
        );
        let calls = rig.calls("kpost");
        assert_eq!(calls.len(), 3);
        for c in &calls {
            assert_eq!(c.body_sha256, sha256_hex(&body), "call {} body", c.n);
            assert_eq!(c.key.as_deref(), Some(key.as_str()));
        }
        let summary = rig.upstream.summary().unwrap();
        assert_eq!(summary.keys, [(key.clone(), 3, 1)], "3 calls, applied once");
        assert_eq!(
            summary.incomplete, 0,
            "no request reached the upstream without its body"
        );
        rig.assert_clean();
    });
}

#[test]
fn put_with_a_body_is_retried() {
    in_every_mode(|mode| {
        let rig = Rig::start(mode, json!({}));
        let r =
            rig.ok(&Request::new("PUT", "/orders/7?id=put&plan=503,ok&echo=1").body("state=paid"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "state=paid");
        let calls = rig.calls("put");
        assert_eq!(calls.len(), 2);
        assert!(calls
            .iter()
            .all(|c| c.body_sha256 == sha256_hex(b"state=paid")));
        assert_eq!(rig.upstream.summary().unwrap().incomplete, 0);
        rig.assert_clean();
    });
}
