//! Body framing: bytes exact both ways, big, empty, bodiless statuses, HEAD, chunked
//! uploads, bodies over `max_body_bytes`, repeated `Set-Cookie`.

use crate::common::*;
use kong_retry_harness::client::Request;
use kong_retry_harness::http1::sha256_hex;
use kong_retry_harness::upstream::script::pattern;
use serde_json::json;

#[test]
fn binary_bodies_are_byte_exact_both_ways() {
    in_every_mode(|mode| {
        let rig = Rig::start(mode, json!({}));
        let body: Vec<u8> = (0..=255u8).collect();
        let r = rig.ok(&Request::new("PUT", "/b?id=bin&plan=503,ok&echo=1").body(body.clone()));
        assert_eq!(r.status, 200);
        assert_eq!(r.body, body);
        assert!(rig
            .calls("bin")
            .iter()
            .all(|c| c.body_sha256 == sha256_hex(&body)));
        rig.assert_clean();
    });
}

#[test]
fn one_mib_request_and_response_are_byte_exact() {
    in_every_mode(|mode| {
        let rig = Rig::start(mode, json!({}));
        let mib = 1024 * 1024;
        let up = pattern(mib);
        let r = rig.ok(&Request::new("PUT", "/big?id=bigput&plan=503,ok&echo=1").body(up.clone()));
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), mib);
        assert!(r.body == up, "1 MiB echo differs");
        let calls = rig.calls("bigput");
        assert_eq!(calls.len(), 2);
        assert!(calls.iter().all(|c| c.body_sha256 == sha256_hex(&up)));
        let r = rig.ok(&Request::get(&format!(
            "/big?id=bigget&plan=503,ok&size={mib}"
        )));
        assert_eq!(r.status, 200);
        assert!(
            r.body == up,
            "1 MiB response differs (got {} bytes)",
            r.body.len()
        );
        assert_eq!(rig.calls("bigget").len(), 2);
        rig.assert_clean();
    });
}

#[test]
fn empty_bodies_and_bodiless_statuses() {
    in_every_mode(|mode| {
        let rig = Rig::start(mode, json!({}));
        let r = rig.ok(&Request::new("POST", "/e?id=empty&plan=503,ok&echo=1")
            .header("idempotency-key", "empty-1")
            .body(Vec::new()));
        assert_eq!(r.status, 200);
        assert!(r.body.is_empty());
        assert_eq!(r.header("content-length"), Some("0"));
        assert!(rig.calls("empty").iter().all(|c| c.body_len == 0));
        assert_eq!(rig.calls("empty").len(), 2);
        for status in [204, 304] {
            let id = format!("s{status}");
            let r = rig.ok(&Request::get(&format!(
                "/e?id={id}&plan=503,ok&status={status}"
            )));
            assert_eq!(r.status, status);
            assert!(r.body.is_empty());
            assert_eq!(rig.calls(&id).len(), 2, "{status} after a retry");
        }
        rig.assert_clean();
    });
}

#[test]
fn head_keeps_content_length() {
    in_every_mode(|mode| {
        let rig = Rig::start(mode, json!({}));
        let r = rig.ok(&Request::new("HEAD", "/h?id=head1&size=1000"));
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-length"),
            Some("1000"),
            "HEAD, first attempt"
        );
        let r = rig.ok(&Request::new("HEAD", "/h?id=head2&plan=503,ok&size=1000"));
        assert_eq!(r.status, 200);
        assert_eq!(rig.calls("head2").len(), 2);
        assert_eq!(
            r.header("content-length"),
            Some("1000"),
            "HEAD after a retry"
        );
        rig.assert_clean();
    });
}

#[test]
fn chunked_request_body_is_copied_whole() {
    in_every_mode(|mode| {
        let rig = Rig::start(mode, json!({}));
        let body = pattern(10_000);
        let r = rig.ok(&Request::new("PUT", "/c?id=chunked&plan=503,ok&echo=1")
            .body(body.clone())
            .chunked(1000));
        assert_eq!(r.status, 200);
        assert!(
            r.body == body,
            "echo of the chunked upload differs ({} bytes)",
            r.body.len()
        );
        let calls = rig.calls("chunked");
        assert_eq!(calls.len(), 2);
        assert!(calls.iter().all(|c| c.body_sha256 == sha256_hex(&body)));
        rig.assert_clean();
    });
}

#[test]
fn body_over_max_body_bytes_is_sent_once() {
    in_every_mode(|mode| {
        let rig = Rig::start(mode, json!({ "max_body_bytes": 1024 }));
        let body = pattern(4096);
        let r = rig.ok(&Request::new("PUT", "/l?id=large&plan=503").body(body.clone()));
        assert_eq!(r.status, 503);
        let r2 = rig.ok(&Request::new("PUT", "/l?id=largechunked&plan=503")
            .body(body.clone())
            .chunked(512));
        assert_eq!(r2.status, 503);
        for id in ["large", "largechunked"] {
            let calls = rig.calls(id);
            assert_eq!(calls.len(), 1, "{id}: too large to copy, sent once");
            assert_eq!(
                calls[0].body_sha256,
                sha256_hex(&body),
                "{id}: the body still arrives whole"
            );
        }
        assert_eq!(rig.metrics().value("kong_retry_too_large_total"), 2.0);
        rig.assert_clean();
    });
}

#[test]
fn repeated_set_cookie_headers_all_arrive() {
    in_every_mode(|mode| {
        let rig = Rig::start(mode, json!({}));
        let r = rig.ok(&Request::get("/k?id=cookies&plan=503,ok&cookies=3"));
        assert_eq!(r.status, 200);
        assert_eq!(
            r.all("set-cookie"),
            ["c1=v1; Path=/", "c2=v2; Path=/", "c3=v3; Path=/"]
        );
        rig.assert_clean();
    });
}
