//! Envoy profile rules, each proven with the probe fixture.
mod common;

use common::*;
use proxy_wasm_test_host::{Failure, Profile, Reply, Request, Source};
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
fn pause_in_response_headers_still_delivers_the_body_and_continue_there_lets_it_go() {
    // StopIteration holds the headers only; encodeData still reaches the filter and
    // a Continue from it resumes the stream: the dispatch's answer comes too late.
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
    assert!(gw.log_contains("probe on_response_body ctx=2 size=5 eos=true"));
    assert_eq!(ex.response.status, 503);
    assert_eq!(ex.response.body, b"first");
    // Without a body there is no body callback: the pause waits for the answer.
    let ex = gw
        .run(Request::new("GET", "/r"), |call| {
            if call.is_dispatch() {
                Reply::status(200).body("second").after_ms(5)
            } else {
                Reply::status(503)
            }
        })
        .unwrap();
    assert_eq!(ex.response.status, 200);
    assert_eq!(ex.response.body, b"second");
}

#[test]
fn pause_in_request_headers_still_delivers_the_body() {
    // Continue from the body callback: headers and body go upstream at once.
    let mut gw = gateway(
        Profile::Envoy,
        json!({"on_request_headers": [{"op": "pause"}]}),
    );
    let ex = gw
        .run(Request::new("POST", "/p").body("abc"), |_| {
            Reply::status(201)
        })
        .unwrap();
    assert!(gw.log_contains("probe on_request_body ctx=2 size=3 eos=true"));
    assert_eq!(ex.response.status, 201);
    assert_eq!(ex.calls.len(), 1);
    assert_eq!(ex.calls[0].body, b"abc");

    // Pause in both: the request waits until the filter resumes it.
    let mut gw = gateway(
        Profile::Envoy,
        json!({
            "on_request_headers": [{"op": "pause"}],
            "on_request_body": [{"op": "dispatch", "upstream": "backend"}, {"op": "pause"}],
            "on_http_call_response": [{"op": "resume"}]
        }),
    );
    let ex = gw
        .run(Request::new("POST", "/p").body("abc"), |call| {
            Reply::status(if call.is_dispatch() { 200 } else { 201 }).after_ms(3)
        })
        .unwrap();
    assert_eq!(ex.calls.len(), 2);
    assert!(ex.calls[0].is_dispatch());
    assert!(ex.calls[1].sent_at_ms >= 3, "proxied only after the resume");
    assert_eq!(ex.response.status, 201);
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
    assert!(gw.log_contains("probe on_request_body ctx=3 size=1 eos=true"));
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
