//! Envoy profile rules, each proven with the probe fixture.
mod common;

use common::*;
use proxy_wasm_test_host::{Failure, HostError, Profile, Reply, Request, Source};
use serde_json::json;

#[test]
fn dispatch_allowed_from_response_headers_and_local_response_replaces_response() {
    let mut gw = gateway(
        Profile::Envoy,
        json!({
            "on_response_headers": [{"op": "dispatch", "upstream": "backend"}, {"op": "pause"}],
            // The upstream's body still reaches the paused filter: it must hold it too.
            "on_response_body": [{"op": "pause"}],
            "on_http_call_response": [{"op": "local_from_call", "headers": [["x-retried", "1"]]}]
        }),
    );
    let ex = gw
        .run(Request::new("GET", "/r"), |call| {
            if call.is_dispatch() {
                Reply::status(200).body("second")
            } else {
                Reply::status(503).header("x-up", "1").body("first")
            }
        })
        .unwrap();
    assert!(gw.traps().is_empty());
    assert_eq!(ex.calls.len(), 2);
    assert_eq!(ex.calls[1].upstream(), Some("backend"));
    assert_eq!(ex.response.status, 200);
    assert_eq!(ex.response.body, b"second", "no \\n on Envoy");
    assert_eq!(ex.response.header("x-retried"), Some("1"));
    assert_eq!(ex.response.header("x-up"), None, "whole response replaced");
    assert_eq!(ex.response.source, Source::Local);
    assert!(!ex.response.framing_error);
}

#[test]
fn pause_in_response_headers_holds_the_body_until_a_local_response() {
    // Seen on Envoy 1.40.0 (probe: on_response_headers Pause): on_response_body
    // never came and the client timed out. Here the pause waits for the
    // dispatch's answer even though the upstream sent a body.
    let mut gw = gateway(
        Profile::Envoy,
        json!({
            "on_response_headers": [{"op": "dispatch", "upstream": "backend"}, {"op": "pause"}],
            "on_http_call_response": [{"op": "local_from_call"}]
        }),
    );
    let ex = gw
        .run(Request::new("GET", "/r"), |call| {
            if call.is_dispatch() {
                Reply::status(200).body("second").after_ms(5)
            } else {
                Reply::status(503).body("first")
            }
        })
        .unwrap();
    assert!(!gw.log_contains("probe on_response_body ctx=2 size=5"));
    assert_eq!(ex.response.status, 200);
    assert_eq!(ex.response.body, b"second");
    // Nothing resumes it: the client waits (the driver gives up instead).
    let mut gw = gateway(
        Profile::Envoy,
        json!({"on_response_headers": [{"op": "pause"}]}),
    );
    let err = gw
        .run(Request::new("GET", "/r"), |_| Reply::status(200).body("x"))
        .unwrap_err();
    assert!(matches!(err, HostError::Stuck { .. }), "{err}");
}

#[test]
fn pause_in_request_headers_holds_the_body_until_resumed() {
    // Seen on Envoy 1.40.0 (probe: on_request_headers Pause, POST "abc"): no
    // on_request_body, the client timed out. The first shipped filter's keyed
    // POST waited for a body callback like this and hung (issue #10).
    let mut gw = gateway(
        Profile::Envoy,
        json!({"on_request_headers": [{"op": "pause"}]}),
    );
    let err = gw
        .run(Request::new("POST", "/p").body("abc"), |_| {
            Reply::status(201)
        })
        .unwrap_err();
    assert!(matches!(err, HostError::Stuck { .. }), "{err}");
    assert!(!gw.log_contains("probe on_request_body"));

    // Resumed from a dispatch callback: the body Envoy held comes whole, in one
    // end-of-stream callback (seen: size=6 eos=true), then the forward.
    let mut gw = gateway(
        Profile::Envoy,
        json!({
            "on_request_headers": [{"op": "dispatch", "upstream": "backend"}, {"op": "pause"}],
            "on_http_call_response": [{"op": "resume"}],
            "on_request_body": [{"op": "read_request_body"}]
        }),
    );
    let ex = gw
        .run(Request::new("POST", "/p").body("abcdef"), |call| {
            Reply::status(if call.is_dispatch() { 200 } else { 201 }).after_ms(3)
        })
        .unwrap();
    let bodies = markers(&gw, "probe on_request_body");
    assert_eq!(bodies, vec!["probe on_request_body ctx=2 size=6 eos=true"]);
    assert!(gw.log_contains("probe request body: 6 bytes"));
    assert_eq!(ex.calls.len(), 2);
    assert!(ex.calls[1].sent_at_ms >= 3, "proxied only after the resume");
    assert_eq!(ex.calls[1].body, b"abcdef");
    assert_eq!(ex.response.status, 201);
}

#[test]
fn request_body_comes_as_data_then_end_of_stream_and_pause_buffers_it() {
    // Seen on Envoy 1.40.0 with the probe: "abc" gave (3, eos=false) then
    // (0, eos=true); after a Continue the end-of-stream callback reads nothing,
    // after a Pause it sees every byte buffered; in request headers the body
    // reads as empty.
    let read = json!({"op": "read_request_body"});
    let mut gw = gateway(
        Profile::Envoy,
        json!({"on_request_headers": [read], "on_request_body": [read]}),
    );
    let ex = gw
        .run(Request::new("POST", "/").body("abc"), |_| {
            Reply::status(200)
        })
        .unwrap();
    assert_eq!(
        markers(&gw, "probe on_request_body"),
        vec![
            "probe on_request_body ctx=2 size=3 eos=false",
            "probe on_request_body ctx=2 size=0 eos=true"
        ]
    );
    assert_eq!(
        markers(&gw, "probe request body"),
        vec![
            "probe request body: none",
            "probe request body: 3 bytes",
            "probe request body: none"
        ]
    );
    assert_eq!(ex.calls[0].body, b"abc", "the upstream still gets it all");

    // A filter that copies the body at end of stream must buffer it first.
    let mut gw = gateway(
        Profile::Envoy,
        json!({"on_request_body": [{"op": "pause_until_eos"}, read]}),
    );
    let ex = gw
        .run(Request::new("POST", "/").body("abcdef"), |_| {
            Reply::status(200)
        })
        .unwrap();
    assert_eq!(
        markers(&gw, "probe on_request_body"),
        vec![
            "probe on_request_body ctx=2 size=6 eos=false",
            "probe on_request_body ctx=2 size=6 eos=true"
        ]
    );
    assert_eq!(
        markers(&gw, "probe request body"),
        vec!["probe request body: 6 bytes", "probe request body: 6 bytes"]
    );
    assert_eq!(ex.calls[0].body, b"abcdef");

    // Pausing at end of stream too waits for a resume that never comes (seen:
    // the client timed out).
    let mut gw = gateway(
        Profile::Envoy,
        json!({"on_request_body": [{"op": "pause"}]}),
    );
    let err = gw
        .run(Request::new("POST", "/").body("abc"), |_| {
            Reply::status(200)
        })
        .unwrap_err();
    assert!(matches!(err, HostError::Stuck { .. }), "{err}");

    // Kong: one callback, the whole body, end of stream (BRIEF, real host).
    let mut kong = gateway(Profile::Kong, json!({"on_request_body": [read]}));
    let _ = kong
        .run(Request::new("POST", "/").body("abc"), |_| {
            Reply::status(200)
        })
        .unwrap();
    assert_eq!(
        markers(&kong, "probe on_request_body"),
        vec!["probe on_request_body ctx=2 size=3 eos=true"]
    );
}

#[test]
fn dispatch_needs_a_known_cluster() {
    let mut gw = gateway(
        Profile::Envoy,
        json!({"on_request_headers": [
            {"op": "dispatch", "upstream": "127.0.0.1:9000"},
            {"op": "dispatch", "upstream": "backend"}
        ]}),
    );
    gw.send(0, Request::new("GET", "/"));
    let m = messages(&gw);
    let results: Vec<&String> = m
        .iter()
        .filter(|l| l.starts_with("probe dispatch"))
        .collect();
    assert_eq!(
        results,
        vec!["probe dispatch: Err(BadArgument)", "probe dispatch: Ok(1)"]
    );
}

#[test]
fn request_headers_end_of_stream_reflects_body() {
    let mut gw = gateway(Profile::Envoy, json!({}));
    let _ = gw
        .run(Request::new("GET", "/"), |_| Reply::status(200))
        .unwrap();
    let _ = gw
        .run(Request::new("POST", "/").body("x"), |_| Reply::status(200))
        .unwrap();
    assert!(gw.log_contains("probe on_request_headers ctx=2 headers=4 eos=true"));
    assert!(gw.log_contains("probe on_request_headers ctx=3 headers=5 eos=false"));
    assert!(gw.log_contains("probe on_request_body ctx=3 size=1 eos=false"));
    assert!(gw.log_contains("probe on_request_body ctx=3 size=0 eos=true"));
}

#[test]
fn failed_dispatch_has_no_headers_and_no_dispatch_status() {
    let mut gw = gateway(
        Profile::Envoy,
        json!({
            "on_request_headers": [{"op": "dispatch", "upstream": "backend"}, {"op": "pause"}],
            "on_http_call_response": [{"op": "local", "status": 504, "body": "t"}]
        }),
    );
    let ex = gw
        .run(Request::new("GET", "/"), |_| Reply::failure(Failure::Reset))
        .unwrap();
    assert_eq!(ex.response.status, 504);
    assert!(gw.log_contains("headers=0 body=0 status=None dispatch_status=None"));
}

#[test]
fn tick_period_can_be_changed_and_set_from_request() {
    let mut gw = gateway(
        Profile::Envoy,
        json!({"on_configure": [{"op": "tick_period", "ms": 100}, {"op": "tick_period", "ms": 50}]}),
    );
    assert_eq!(gw.tick_period(0), Some(50));
    gw.advance(100);
    assert_eq!(markers(&gw, "probe on_tick").len(), 2);
}

#[test]
fn proxy_failure_gives_envoy_error_page() {
    let mut gw = gateway(Profile::Envoy, json!({}));
    let ex = gw
        .run(Request::new("GET", "/"), |_| {
            Reply::failure(Failure::Refused)
        })
        .unwrap();
    assert_eq!(ex.response.status, 503);
    assert_eq!(ex.response.source, Source::Gateway);
    let mut kong = gateway(Profile::Kong, json!({}));
    let ex = kong
        .run(Request::new("GET", "/"), |_| {
            Reply::failure(Failure::Timeout)
        })
        .unwrap();
    assert_eq!(ex.response.status, 504);
}
