//! The fakes and the run-to-completion driver.
mod common;

use common::*;
use proxy_wasm_test_host::{CallKind, Failure, HostError, Profile, Reply, Request};
use serde_json::json;

fn retry_script() -> serde_json::Value {
    json!({
        "on_request_headers": [{"op": "dispatch", "timeout_ms": 100}, {"op": "pause"}],
        "on_http_call_response": [{"op": "local_from_call"}]
    })
}

#[test]
fn delayed_answer_after_timeout_loses_to_the_timeout() {
    let mut gw = gateway(Profile::Kong, retry_script());
    let ex = gw
        .run(Request::new("GET", "/"), |_| {
            Reply::status(200).body("late").after_ms(150)
        })
        .unwrap();
    // The probe answers 502 from the failed call's callback, which Kong
    // delivers as a dropped connection (kong_rules.rs).
    assert!(ex.response.is_dropped(), "{:?}", ex.response);
    assert_eq!(gw.now_ms(), 100);
    assert!(gw.log_contains("dispatch_status=Some(\"timeout\")"));
}

#[test]
fn delayed_answer_within_timeout_arrives() {
    let mut gw = gateway(Profile::Kong, retry_script());
    let ex = gw
        .run(Request::new("GET", "/"), |_| {
            Reply::status(201).body("ok").after_ms(40)
        })
        .unwrap();
    assert_eq!(ex.response.status, 201);
    assert_eq!(ex.calls[0].sent_at_ms, 0);
    assert_eq!(gw.now_ms(), 40);
}

#[test]
fn a_request_that_waits_forever_is_an_error_not_a_hang() {
    let mut gw = gateway(
        Profile::Kong,
        json!({"on_request_headers": [{"op": "pause"}]}),
    );
    let err = gw
        .run(Request::new("GET", "/"), |_| Reply::status(200))
        .unwrap_err();
    assert!(matches!(err, HostError::Stuck { .. }), "{err}");
}

#[test]
fn answering_an_unknown_call_is_an_error() {
    let mut gw = gateway(Profile::Kong, json!({}));
    let rid = gw.send(0, Request::new("GET", "/"));
    let call = gw.pending()[0].clone();
    assert_eq!(call.kind, CallKind::Proxied);
    assert_eq!(call.request, Some(rid));
    gw.answer(call.id, Reply::status(200)).unwrap();
    assert!(gw.answer(call.id, Reply::status(200)).is_err());
    assert_eq!(gw.calls().len(), 1);
}

#[test]
fn request_stats_count_fuel_host_calls_and_bytes() {
    let mut gw = gateway(Profile::Kong, retry_script());
    let ex = gw
        .run(Request::new("GET", "/"), |_| {
            Reply::status(200).body(vec![0u8; 4096])
        })
        .unwrap();
    let stats = gw.stats(ex.request).unwrap();
    assert!(stats.fuel > 0);
    assert_eq!(gw.fuel_used(ex.request), Some(stats.fuel));
    assert!(stats.host_calls >= 4, "{stats:?}");
    assert!(stats.bytes_to_guest >= 4096, "{stats:?}");
    assert!(stats.bytes_from_guest >= 4096, "{stats:?}");
}

#[test]
fn start_up_cost_is_booked_to_the_root_not_the_first_request() {
    let script = json!({
        "on_configure": [{"op": "get_shared", "key": "k"}],
        "on_request_headers": [{"op": "log", "msg": "hi"}],
    });
    let mut gw = gateway(Profile::Kong, script);
    let start_up = gw.root_stats();
    assert_eq!(start_up.shared_data_gets, 1, "{start_up:?}");
    assert!(start_up.callbacks >= 3 && start_up.fuel > 0, "{start_up:?}");
    let first = gw
        .run(Request::new("GET", "/"), |_| Reply::status(200))
        .unwrap();
    let second = gw
        .run(Request::new("GET", "/"), |_| Reply::status(200))
        .unwrap();
    let (first, second) = (
        gw.stats(first.request).unwrap(),
        gw.stats(second.request).unwrap(),
    );
    assert_eq!(first.shared_data_gets, 0, "{first:?}");
    assert_eq!(
        (first.callbacks, first.host_calls),
        (second.callbacks, second.host_calls)
    );
}

#[test]
fn clock_and_random_are_deterministic() {
    let script = json!({"on_request_headers": [{"op": "now"}, {"op": "random"}]});
    let run = |seed| {
        let mut gw = builder(Profile::Kong, script.clone())
            .seed(seed)
            .build()
            .unwrap();
        gw.advance(1234);
        let _ = gw
            .run(Request::new("GET", "/"), |_| Reply::status(200))
            .unwrap();
        messages(&gw)
            .into_iter()
            .filter(|m| m.starts_with("probe now") || m.starts_with("probe random"))
            .collect::<Vec<_>>()
    };
    let a = run(1);
    assert_eq!(a, run(1));
    assert_ne!(a, run(2));
    assert_eq!(a[0], "probe now: Some(1700000001234)");
}

#[test]
fn stdout_is_captured_as_logs() {
    let mut gw = gateway(
        Profile::Envoy,
        json!({"on_request_headers": [{"op": "print", "msg": "hello stdout"}]}),
    );
    let _ = gw
        .run(Request::new("GET", "/"), |_| Reply::status(200))
        .unwrap();
    assert!(gw.log_contains("hello stdout"));
}

#[test]
fn proxied_request_carries_filter_header_changes() {
    let mut gw = gateway(
        Profile::Envoy,
        json!({"on_request_headers": [{"op": "set_request_header", "name": "x-attempt", "value": "1"}]}),
    );
    let ex = gw
        .run(
            Request::new("POST", "/p").header("a", "b").body("data"),
            |c| {
                assert_eq!(c.header("x-attempt"), Some("1"));
                assert_eq!(c.header("content-length"), Some("4"));
                assert_eq!(c.body, b"data");
                Reply::failure(Failure::Reset)
            },
        )
        .unwrap();
    assert_eq!(ex.response.status, 503);
}
