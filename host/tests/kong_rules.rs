//! Kong (ngx_wasm_module) profile rules, each proven with the probe fixture.
mod common;

use common::*;
use proxy_wasm_test_host::{Failure, Gateway, HostError, Profile, Reply, Request, Source};
use serde_json::json;

fn ok(body: &str) -> Reply {
    Reply::status(200)
        .header("content-length", &body.len().to_string())
        .body(body.to_string())
}

#[test]
fn dispatch_from_response_headers_traps_and_client_gets_upstream_answer() {
    let mut gw = gateway(
        Profile::Kong,
        json!({"on_response_headers": [{"op": "dispatch"}]}),
    );
    assert_eq!(gw.instances_started(), 1);
    let ex = gw
        .run(Request::new("GET", "/a"), |_| ok("upstream"))
        .unwrap();
    assert_eq!(ex.response.status, 200);
    assert_eq!(ex.response.body, b"upstream");
    assert!(ex.response.trapped);
    assert_eq!(ex.response.source, Source::Upstream);
    let traps = gw.traps();
    assert_eq!(traps.len(), 1);
    assert_eq!(traps[0].phase, "on_response_headers");
    assert!(traps[0]
        .message
        .contains("can only send HTTP dispatch during"));
    // on_log is skipped after a trap.
    assert!(markers(&gw, "probe on_log").is_empty());
    // The next request gets a fresh instance, configured again.
    let configured_before = markers(&gw, "probe on_configure").len();
    let _ = gw.run(Request::new("GET", "/b"), |_| ok("x")).unwrap();
    assert_eq!(gw.instances_started(), 2);
    let configured_after = markers(&gw, "probe on_configure").len();
    assert_eq!(configured_after, configured_before + 1);
}

#[test]
fn dispatch_from_response_body_traps() {
    let mut gw = gateway(
        Profile::Kong,
        json!({"on_response_body": [{"op": "dispatch"}]}),
    );
    let ex = gw.run(Request::new("GET", "/a"), |_| ok("up")).unwrap();
    assert!(ex.response.trapped);
    assert_eq!(ex.response.body, b"up");
    assert_eq!(gw.traps()[0].phase, "on_response_body");
}

#[test]
fn dispatch_then_local_response_appends_newline_and_runs_response_phases() {
    let mut gw = gateway(
        Profile::Kong,
        json!({
            "on_request_headers": [{"op": "dispatch", "upstream": "127.0.0.1:9000"}, {"op": "pause"}],
            "on_http_call_response": [{"op": "local_from_call"}]
        }),
    );
    let ex = gw.run(Request::new("GET", "/a"), |_| ok("hello")).unwrap();
    assert_eq!(ex.calls.len(), 1, "only the dispatch, no proxied call");
    assert!(ex.calls[0].is_dispatch());
    assert_eq!(ex.calls[0].header("connection"), Some("close"));
    assert_eq!(ex.response.source, Source::Local);
    assert_eq!(ex.response.body, b"hello\n");
    assert_eq!(ex.response.header("content-length"), Some("6"));
    assert!(!ex.response.framing_error);
    let m = messages(&gw);
    assert!(m.iter().any(|l| l.starts_with("probe on_response_headers")));
    assert!(m
        .iter()
        .any(|l| l.starts_with("probe on_response_body ctx=2 size=6 eos=true")));
    assert!(m.iter().any(|l| l.starts_with("probe on_log")));
}

fn relay_script(remove_length: bool) -> serde_json::Value {
    let mut headers = vec![];
    if remove_length {
        headers.push(json!({"op": "remove_response_header", "name": "content-length"}));
    }
    json!({
        "on_request_headers": [{"op": "dispatch"}, {"op": "pause"}],
        "on_http_call_response": [{"op": "local_from_call"}],
        "on_response_headers": headers,
        "on_response_body": [{"op": "set_response_body_from_stash"}]
    })
}

#[test]
fn byte_exact_relay_recipe_yields_original_bytes() {
    let original: Vec<u8> = (0..=255u8).collect();
    let mut gw = gateway(Profile::Kong, relay_script(true));
    let body = original.clone();
    let ex = gw
        .run(Request::new("GET", "/bytes"), move |_| {
            Reply::status(200).body(body.clone())
        })
        .unwrap();
    assert_eq!(ex.response.body, original);
    assert_eq!(ex.response.header("content-length"), None);
    assert!(!ex.response.framing_error);

    // An empty body gets no "\n" and is left alone.
    let ex = gw
        .run(Request::new("GET", "/empty"), |_| Reply::status(204))
        .unwrap();
    assert_eq!(ex.response.status, 204);
    assert!(ex.response.body.is_empty());
    assert!(!ex.response.framing_error);
}

#[test]
fn relay_without_removing_content_length_breaks_framing() {
    let mut gw = gateway(Profile::Kong, relay_script(false));
    let ex = gw
        .run(Request::new("GET", "/x"), |_| {
            Reply::status(200).body("abc")
        })
        .unwrap();
    assert_eq!(ex.response.body, b"abc");
    assert!(
        ex.response.framing_error,
        "content-length 4 for a 3-byte body"
    );
}

#[test]
fn pause_in_response_headers_does_not_wait() {
    let mut gw = gateway(
        Profile::Kong,
        json!({"on_response_headers": [{"op": "pause"}]}),
    );
    let ex = gw.run(Request::new("GET", "/"), |_| ok("body")).unwrap();
    assert_eq!(ex.response.body, b"body");
}

#[test]
fn local_response_in_response_headers_keeps_upstream_headers() {
    let mut gw = gateway(
        Profile::Kong,
        json!({"on_response_headers": [{"op": "local", "status": 503, "headers": [["x-local", "1"]], "body": "replaced"}]}),
    );
    let ex = gw
        .run(Request::new("GET", "/"), |_| {
            Reply::status(200)
                .header("x-up", "yes")
                .header("content-length", "2")
                .body("up")
        })
        .unwrap();
    assert_eq!(ex.response.status, 503);
    assert_eq!(ex.response.body, b"replaced\n");
    assert_eq!(ex.response.header("x-up"), Some("yes"));
    assert_eq!(
        ex.response.header("x-local"),
        None,
        "headers argument ignored"
    );
    assert!(ex.response.framing_error, "stale content-length");
    assert!(!ex.response.trapped);
}

#[test]
fn local_response_in_response_body_traps() {
    let mut gw = gateway(
        Profile::Kong,
        json!({"on_response_body": [{"op": "local", "status": 500, "body": "no"}]}),
    );
    let ex = gw.run(Request::new("GET", "/"), |_| ok("up")).unwrap();
    assert!(ex.response.trapped);
    assert_eq!(ex.response.body, b"up");
    assert!(gw.traps()[0].message.contains("response already sent"));
}

#[test]
fn local_response_headers_have_replace_semantics() {
    let script = json!({"on_request_headers": [{"op": "local", "status": 200,
        "headers": [["set-cookie", "a=1"], ["set-cookie", "b=2"]], "body": ""}]});
    let mut gw = gateway(Profile::Kong, script.clone());
    let ex = gw
        .run(Request::new("GET", "/"), |_| unreachable!())
        .unwrap();
    assert_eq!(ex.response.header_all("set-cookie"), vec!["b=2"]);
    assert!(ex.response.body.is_empty(), "no \\n for an empty body");
    assert!(ex.calls.is_empty());

    let mut envoy = gateway(Profile::Envoy, script);
    let ex = envoy
        .run(Request::new("GET", "/"), |_| unreachable!())
        .unwrap();
    assert_eq!(ex.response.header_all("set-cookie"), vec!["a=1", "b=2"]);
}

#[test]
fn request_body_readable_only_in_request_phases_and_log() {
    let read = json!([{"op": "read_request_body"}]);
    let mut gw = gateway(
        Profile::Kong,
        json!({"on_request_body": read, "on_response_headers": read, "on_log": read}),
    );
    let _ = gw
        .run(Request::new("POST", "/").body("12345"), |_| ok(""))
        .unwrap();
    let bodies = markers(&gw, "probe request body");
    assert_eq!(
        bodies,
        vec![
            "probe request body: 5 bytes",
            "probe request body: status 1",
            "probe request body: 5 bytes"
        ]
    );
}

#[test]
fn request_headers_end_of_stream_is_false_and_no_body_callback_without_body() {
    let mut gw = gateway(Profile::Kong, json!({}));
    let _ = gw.run(Request::new("GET", "/"), |_| ok("")).unwrap();
    let _ = gw
        .run(Request::new("POST", "/").body("abc"), |_| ok(""))
        .unwrap();
    let m = messages(&gw);
    assert!(m
        .iter()
        .any(|l| l == "probe on_request_headers ctx=2 headers=4 eos=false"));
    assert!(m
        .iter()
        .any(|l| l == "probe on_request_headers ctx=3 headers=5 eos=false"));
    let bodies: Vec<&String> = m
        .iter()
        .filter(|l| l.starts_with("probe on_request_body"))
        .collect();
    assert_eq!(bodies, vec!["probe on_request_body ctx=3 size=3 eos=true"]);
}

#[test]
fn chunked_request_body_is_assembled_once() {
    let mut gw = gateway(Profile::Kong, json!({}));
    let _ = gw
        .run(
            Request::new("POST", "/")
                .header("transfer-encoding", "chunked")
                .body(vec![7u8; 100]),
            |_| ok(""),
        )
        .unwrap();
    let bodies: Vec<String> = messages(&gw)
        .into_iter()
        .filter(|l| l.starts_with("probe on_request_body"))
        .collect();
    assert_eq!(
        bodies,
        vec!["probe on_request_body ctx=2 size=100 eos=true"]
    );
}

#[test]
fn body_above_buffer_size_is_unreadable_but_still_proxied() {
    let mut gw = builder(
        Profile::Kong,
        json!({"on_request_body": [{"op": "read_request_body"}]}),
    )
    .body_buffer_size(8192)
    .build()
    .unwrap();
    let big = vec![b'x'; 10_000];
    let ex = gw
        .run(Request::new("POST", "/").body(big.clone()), |_| ok(""))
        .unwrap();
    assert!(gw.log_contains("probe request body: status 1"), "NotFound");
    assert!(gw.log_contains("cannot read request body buffered to file"));
    assert_eq!(ex.calls[0].body, big);
}

#[test]
fn dispatch_upstream_must_be_host_port() {
    let mut gw = gateway(
        Profile::Kong,
        json!({"on_request_headers": [
            {"op": "dispatch", "upstream": "http://127.0.0.1:9000"},
            {"op": "dispatch", "upstream": "backend"},
            {"op": "dispatch", "upstream": "127.0.0.1:9000"}
        ]}),
    );
    let rid = gw.send(0, Request::new("GET", "/"));
    let m = messages(&gw);
    let results: Vec<&String> = m
        .iter()
        .filter(|l| l.starts_with("probe dispatch"))
        .collect();
    assert_eq!(
        results,
        vec![
            "probe dispatch: Err(BadArgument)",
            "probe dispatch: Ok(1)",
            "probe dispatch: Ok(2)"
        ]
    );
    let pending = gw.pending();
    assert_eq!(pending.len(), 3, "two dispatches and the proxied request");
    assert_eq!(pending[0].upstream(), Some("backend"));
    assert_eq!(pending[0].request, Some(rid));
}

#[test]
fn failed_dispatch_reports_dispatch_status_and_no_headers() {
    let mut gw = gateway(
        Profile::Kong,
        json!({
            "on_request_headers": [{"op": "dispatch", "timeout_ms": 500}, {"op": "pause"}],
            "on_http_call_response": [{"op": "resume"}]
        }),
    );
    // Timeout from the fake clock: the callback runs at 500 ms, not before.
    let rid = gw.send(0, Request::new("GET", "/"));
    gw.advance(499);
    assert!(!gw.log_contains("probe on_http_call_response"));
    gw.advance(1);
    assert!(gw.log_contains("headers=0 body=0 status=None dispatch_status=Some(\"timeout\")"));
    let forward = gw.pending()[0].id;
    gw.answer(forward, ok("native")).unwrap();
    assert_eq!(gw.response(rid).unwrap().body, b"native");
    // Refused.
    let ex = gw
        .run(Request::new("GET", "/"), |call| {
            if call.is_dispatch() {
                Reply::failure(Failure::Refused)
            } else {
                ok("native")
            }
        })
        .unwrap();
    assert_eq!(ex.response.status, 200);
    assert!(gw.log_contains("dispatch_status=Some(\"broken connection\")"));
    // Success: :status and :dispatch_status ok.
    let _ = gw.run(Request::new("GET", "/"), |_| ok("x")).unwrap();
    assert!(gw.log_contains("headers=2 body=1 status=Some(\"200\") dispatch_status=Some(\"ok\")"));
}

#[test]
fn truncated_dispatch_reports_status_and_size_but_body_read_fails() {
    let mut gw = gateway(
        Profile::Kong,
        json!({
            "on_request_headers": [{"op": "dispatch"}, {"op": "pause"}],
            "on_http_call_response": [{"op": "read_call_body_raw"}, {"op": "read_call_body"}]
        }),
    );
    let ex = gw
        .run(Request::new("GET", "/"), |_| {
            Reply::truncated(200, 1000, vec![1u8; 10])
        })
        .unwrap();
    assert!(gw.log_contains("body=1000 status=Some(\"200\") dispatch_status=Some(\"ok\")"));
    assert!(gw.log_contains("probe call body raw: status 2"));
    // The SDK 0.2.5 getter panics on BadArgument: a trap, the client gets 500.
    assert!(ex.response.trapped);
    assert_eq!(ex.response.status, 500);
}

#[test]
fn shared_data_without_zone_traps_and_client_gets_500() {
    let mut gw = builder(
        Profile::Kong,
        json!({"on_request_headers": [{"op": "get_shared", "key": "k"}]}),
    )
    .shared_data_zone(false)
    .build()
    .unwrap();
    let ex = gw.run(Request::new("GET", "/"), |_| ok("")).unwrap();
    assert_eq!(ex.response.status, 500);
    assert!(ex.response.trapped);
    assert!(ex.calls.is_empty());
    assert!(gw.traps()[0]
        .message
        .contains("could not resolve namespace"));
}

#[test]
fn the_shm_kv_zone_shows_in_kong_configuration_only_when_configured() {
    let script = json!({"on_request_headers": [
        {"op": "get_property", "path": ["kong", "configuration", "nginx_wasm_shm_kv_kong_retry"]},
        {"op": "get_property", "path": ["kong", "configuration", "nginx_wasm_shm_kv_other"]}
    ]});
    let props = |gw: &Gateway| -> Vec<String> { markers(gw, "probe property") };
    // Default: a zone named kong_retry; another name is not found (no trap).
    let mut gw = gateway(Profile::Kong, script.clone());
    let _ = gw.run(Request::new("GET", "/"), |_| ok("")).unwrap();
    assert_eq!(
        props(&gw),
        vec![
            "probe property kong.configuration.nginx_wasm_shm_kv_kong_retry: Ok(Some(\"4m\"))",
            "probe property kong.configuration.nginx_wasm_shm_kv_other: Ok(None)",
        ]
    );
    // A zone by another name.
    let mut gw = builder(Profile::Kong, script.clone())
        .shared_data_zone_name("other")
        .build()
        .unwrap();
    let _ = gw.run(Request::new("GET", "/"), |_| ok("")).unwrap();
    assert!(props(&gw)[0].ends_with("Ok(None)"), "{:?}", props(&gw));
    assert!(
        props(&gw)[1].ends_with("Ok(Some(\"4m\"))"),
        "{:?}",
        props(&gw)
    );
    // No zone: neither property, and reading them does not trap.
    let mut gw = builder(Profile::Kong, script)
        .shared_data_zone(false)
        .build()
        .unwrap();
    let ex = gw.run(Request::new("GET", "/"), |_| ok("")).unwrap();
    assert!(!ex.response.trapped);
    assert!(
        props(&gw).iter().all(|p| p.ends_with("Ok(None)")),
        "{:?}",
        props(&gw)
    );
}

#[test]
fn a_nonzero_cas_on_an_absent_key_is_a_mismatch_on_kong_and_inserts_on_envoy() {
    let script = json!({"on_request_headers": [
        {"op": "set_shared", "key": "k", "value": "1", "cas": 7}
    ]});
    let mut kong = gateway(Profile::Kong, script.clone());
    let _ = kong.run(Request::new("GET", "/"), |_| ok("")).unwrap();
    assert_eq!(kong.shared_data("k"), None);
    let mut envoy = gateway(Profile::Envoy, script);
    let _ = envoy.run(Request::new("GET", "/"), |_| ok("")).unwrap();
    assert_eq!(envoy.shared_data("k"), Some(b"1".to_vec()));
}

#[test]
fn cas_zero_succeeds_only_when_absent() {
    let script = json!({"on_request_headers": [
        {"op": "set_shared", "key": "k", "value": "1"},
        {"op": "set_shared", "key": "k", "value": "2"},
        {"op": "get_shared", "key": "k"},
        {"op": "set_shared", "key": "k", "value": "3", "cas": "last"}
    ]});
    let mut gw = gateway(Profile::Kong, script.clone());
    let _ = gw.run(Request::new("GET", "/"), |_| ok("")).unwrap();
    let sets = markers(&gw, "probe set_shared");
    assert_eq!(
        sets,
        vec![
            "probe set_shared k: Ok(())",
            "probe set_shared k: Err(CasMismatch)",
            "probe set_shared k: Ok(())"
        ]
    );
    assert_eq!(gw.shared_data("k"), Some(b"3".to_vec()));

    let mut envoy = gateway(Profile::Envoy, script);
    let _ = envoy.run(Request::new("GET", "/"), |_| ok("")).unwrap();
    let sets = markers(&envoy, "probe set_shared");
    assert_eq!(
        sets,
        vec![
            "probe set_shared k: Ok(())",
            "probe set_shared k: Ok(())",
            "probe set_shared k: Ok(())"
        ]
    );
}

#[test]
fn shared_data_and_metrics_are_shared_by_workers() {
    let mut gw = builder(
        Profile::Kong,
        json!({
            "on_configure": [{"op": "define_metric", "name": "requests"}],
            "on_request_headers": [{"op": "increment_metric", "name": "requests"}, {"op": "get_shared", "key": "seen"}],
            "on_log": [{"op": "set_shared", "key": "seen", "value": "yes"}]
        }),
    )
    .workers(2)
    .build()
    .unwrap();
    let _ = gw.run_on(0, Request::new("GET", "/"), |_| ok("")).unwrap();
    let _ = gw.run_on(1, Request::new("GET", "/"), |_| ok("")).unwrap();
    assert_eq!(gw.metric("requests"), Some(2));
    assert!(gw.log_contains("probe get_shared seen: Some(\"yes\")"));
}

#[test]
fn tick_period_is_root_only_and_settable_once_ticks_fire_per_worker() {
    let mut gw = builder(
        Profile::Kong,
        json!({"on_configure": [{"op": "tick_period", "ms": 100}]}),
    )
    .workers(2)
    .build()
    .unwrap();
    assert_eq!(gw.tick_period(0), Some(100));
    gw.advance(250);
    let ticks = markers(&gw, "probe on_tick").len();
    assert_eq!(ticks, 4, "2 workers × 2 periods");

    // A second nonzero period traps in on_configure: the worker exits for good.
    let gw2 = gateway(
        Profile::Kong,
        json!({"on_configure": [{"op": "tick_period", "ms": 100}, {"op": "tick_period", "ms": 50}]}),
    );
    let exit = gw2.exited(0).expect("the worker exited");
    assert!(exit.contains("tick_period already set"), "{exit}");
    assert!(exit.contains("(on_configure failure)"), "{exit}");
    // Setting 0 is always accepted (`period && rexec->tick_period`).
    let gw4 = gateway(
        Profile::Kong,
        json!({"on_configure": [{"op": "tick_period", "ms": 100}, {"op": "tick_period", "ms": 0}]}),
    );
    assert!(gw4.exited(0).is_none());
    assert_eq!(gw4.tick_period(0), None);

    // From a request context: traps, with the host's words and no prefix
    // (ngx_proxy_wasm_result_trap(.., NGX_WAVM_OK)).
    let mut gw3 = gateway(
        Profile::Kong,
        json!({"on_request_headers": [{"op": "tick_period", "ms": 10}]}),
    );
    let ex = gw3.run(Request::new("GET", "/"), |_| ok("")).unwrap();
    assert!(ex.response.trapped);
    assert_eq!(
        gw3.traps()[0].message,
        "can only set tick_period in root context"
    );
    // The same call from the root context's tick and call response is allowed.
    let mut root = gateway(
        Profile::Kong,
        json!({"on_configure": [{"op": "tick_period", "ms": 100}],
               "on_tick": [{"op": "dispatch"}],
               "on_http_call_response": [{"op": "tick_period", "ms": 0}]}),
    );
    root.advance(100);
    let call = root.pending()[0].id;
    root.answer(call, ok("x")).unwrap();
    assert!(root.traps().is_empty(), "{:?}", root.traps());
    assert_eq!(root.tick_period(0), None);
}

#[test]
fn effective_context_is_a_noop_and_root_dispatch_answers_root() {
    let script = json!({
        "on_configure": [{"op": "tick_period", "ms": 100}],
        "on_request_headers": [{"op": "pause"}],
        "on_tick": [{"op": "effective_last_request"}, {"op": "resume"}]
    });
    let mut gw = gateway(Profile::Kong, script.clone());
    let rid = gw.send(0, Request::new("GET", "/"));
    gw.advance(100);
    assert!(gw.log_contains("probe effective 2: Ok(())"));
    // The root context cannot resume the request: no forward happened.
    assert!(gw.calls().is_empty());
    assert!(gw.response(rid).is_none() || gw.response(rid).unwrap().trapped);

    let mut envoy = gateway(Profile::Envoy, script);
    let rid = envoy.send(0, Request::new("GET", "/"));
    envoy.advance(100);
    assert_eq!(envoy.pending().len(), 1, "tick resumed the request");
    let id = envoy.pending()[0].id;
    envoy.answer(id, ok("done")).unwrap();
    assert_eq!(envoy.response(rid).unwrap().body, b"done");

    let mut root = gateway(
        Profile::Kong,
        json!({"on_configure": [{"op": "tick_period", "ms": 100}], "on_tick": [{"op": "dispatch"}]}),
    );
    root.advance(100);
    let call = root.pending().pop().unwrap();
    assert_eq!(call.request, None);
    root.answer(call.id, ok("x")).unwrap();
    assert!(root.log_contains("probe on_http_call_response ctx=1 token=1"));
}

#[test]
fn pause_in_request_headers_waits_until_resumed_from_dispatch_callback() {
    let mut gw = gateway(
        Profile::Kong,
        json!({
            "on_request_headers": [{"op": "dispatch"}, {"op": "pause"}],
            "on_http_call_response": [{"op": "resume"}]
        }),
    );
    let rid = gw.send(0, Request::new("GET", "/p"));
    assert_eq!(gw.pending().len(), 1);
    let id = gw.pending()[0].id;
    gw.answer(id, ok("d")).unwrap();
    let pending = gw.pending();
    assert_eq!(pending.len(), 1);
    assert!(!pending[0].is_dispatch());
    gw.answer(pending[0].id, ok("up")).unwrap();
    assert_eq!(gw.response(rid).unwrap().body, b"up");
}

#[test]
fn pause_in_request_headers_holds_the_body_until_resumed() {
    // The body is read in the content phase, after the access phase where the
    // pause waits: a filter that pauses in request headers to wait for the body
    // waits forever.
    let mut gw = gateway(
        Profile::Kong,
        json!({"on_request_headers": [{"op": "pause"}]}),
    );
    let err = gw
        .run(Request::new("POST", "/p").body("abc"), |_| ok("up"))
        .unwrap_err();
    assert!(matches!(err, HostError::Stuck { .. }), "{err}");
    assert!(!gw.log_contains("probe on_request_body"));

    // Resumed from a dispatch callback: then the body comes, then the forward.
    let mut gw = gateway(
        Profile::Kong,
        json!({
            "on_request_headers": [{"op": "dispatch"}, {"op": "pause"}],
            "on_http_call_response": [{"op": "resume"}]
        }),
    );
    let ex = gw
        .run(Request::new("POST", "/p").body("abc"), |_| ok("d"))
        .unwrap();
    assert!(gw.log_contains("probe on_request_body ctx=2 size=3 eos=true"));
    assert_eq!(ex.calls.len(), 2);
    assert_eq!(ex.calls[1].body, b"abc");
}

#[test]
fn trap_before_upstream_gives_500_and_wasm_panic_is_a_trap() {
    let mut gw = gateway(
        Profile::Kong,
        json!({"on_request_headers": [{"op": "panic"}]}),
    );
    let ex = gw.run(Request::new("GET", "/"), |_| ok("")).unwrap();
    assert_eq!(ex.response.status, 500);
    assert_eq!(ex.response.source, Source::Gateway);
    assert!(ex.calls.is_empty());
    assert!(gw.traps()[0].message.contains("wasm trap"));
    assert!(gw.log_contains("probe panic"));
}

#[test]
fn properties_have_kong_defaults_and_overrides() {
    let mut gw = builder(
        Profile::Kong,
        json!({"on_request_headers": [
            {"op": "get_property", "path": ["kong", "route_id"]},
            {"op": "get_property", "path": ["kong", "router", "service"]},
            {"op": "get_property", "path": ["ngx", "request_uri"]},
            {"op": "get_property", "path": ["kong", "service_name"]}
        ]}),
    )
    .upstream("10.0.0.7:8081")
    .without_property(&["kong", "service_name"])
    .build()
    .unwrap();
    let _ = gw.run(Request::new("GET", "/q?x=1"), |_| ok("")).unwrap();
    assert!(gw.log_contains(
        "probe property kong.route_id: Ok(Some(\"5f1c2bcd-0000-4000-8000-000000000001\"))"
    ));
    assert!(gw.log_contains("\\\"host\\\":\\\"10.0.0.7\\\""));
    assert!(gw.log_contains("\\\"port\\\":8081"));
    assert!(gw.log_contains("probe property ngx.request_uri: Ok(Some(\"/q?x=1\"))"));
    assert!(gw.log_contains("probe property kong.service_name: Ok(None)"));
}
