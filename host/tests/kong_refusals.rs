//! What the Kong profile refuses the way ngx_wasm_module 3bed278 does: imports
//! its hfuncs table lacks or types otherwise, NYI host functions, scoped
//! properties outside a request, a rejected configuration (the worker exits
//! for good), and a local response from a failed dispatch's callback.
mod common;

use common::*;
use proxy_wasm_test_host::{Failure, Gateway, HostError, Profile, Reply, Request, WasmModule};
use serde_json::json;

fn ok(body: &str) -> Reply {
    Reply::status(200).body(body.to_string())
}

/// The gateway's worker 0 exited at start-up: its reason, and a request hangs.
fn exit_reason(gw: &mut Gateway) -> String {
    let reason = gw.exited(0).expect("worker 0 exited").to_string();
    let err = gw.run(Request::new("GET", "/"), |_| ok("")).unwrap_err();
    assert!(matches!(err, HostError::Hung { .. }), "{err}");
    reason
}

#[test]
fn an_import_typed_otherwise_than_the_hfuncs_table_fails_instantiation() {
    // SDK 0.2.5's get_log_level imports proxy_get_log_level(i32) -> i32; the
    // table declares (i32, i32) -> i32 (the first shipped filter, issue #11).
    let module = probe_with(&["sdk-log-level"]);
    let mut gw = Gateway::builder(Profile::Kong, &module)
        .plugin_config("{}")
        .build()
        .unwrap();
    let reason = exit_reason(&mut gw);
    assert!(
        reason.contains(
            "failed instantiating \"probe\" module: incompatible import type for \
             `env::proxy_get_log_level`"
        ),
        "{reason}"
    );
    assert!(
        reason.contains(
            "expected type `(func (param i32) (result i32))`, \
             found type `(func (param i32 i32) (result i32))`"
        ),
        "{reason}"
    );
    assert!(reason.contains("failed initializing \"probe\" filter (unknown error)"));
    assert!(gw.log_contains("cannot be respawned"));
    // Envoy declares it the SDK's way and answers.
    let mut envoy = Gateway::builder(Profile::Envoy, &module)
        .plugin_config(json!({"on_request_headers": [{"op": "get_log_level"}]}).to_string())
        .build()
        .unwrap();
    let _ = envoy.run(Request::new("GET", "/"), |_| ok("")).unwrap();
    assert!(envoy.log_contains("probe log_level: Ok(Trace)"));
    // The plain probe imports nothing Kong refuses.
    let gw = gateway(Profile::Kong, json!({}));
    assert_eq!(gw.exited(0), None);
}

#[test]
fn an_import_missing_from_the_hfuncs_table_fails_linking() {
    // proxy_get_header_map_size is Envoy's (cpp-host exports.h), not Kong's.
    let wat = r#"(module
      (import "env" "proxy_get_header_map_size" (func (param i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "proxy_abi_version_0_2_1"))
      (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024))"#;
    let module = WasmModule::from_bytes(wat.as_bytes()).unwrap();
    let mut gw = Gateway::builder(Profile::Kong, &module).build().unwrap();
    let reason = exit_reason(&mut gw);
    assert!(
        reason
            .contains("failed importing \"env.proxy_get_header_map_size\": missing host function"),
        "{reason}"
    );
    assert!(reason.contains("incompatible host interface"), "{reason}");
    assert!(Gateway::builder(Profile::Envoy, &module).build().is_ok());
}

#[test]
fn a_function_the_table_marks_nyi_traps_when_called() {
    // Typed as Kong declares it, the import links; calling it traps.
    let module = probe_with(&["kong-log-level"]);
    let mut gw = Gateway::builder(Profile::Kong, &module)
        .plugin_config(json!({"on_request_headers": [{"op": "kong_log_level"}]}).to_string())
        .build()
        .unwrap();
    let ex = gw.run(Request::new("GET", "/"), |_| ok("up")).unwrap();
    assert!(ex.response.trapped);
    assert_eq!(
        gw.traps()[0].message,
        "host trap (function not yet implemented): proxy_get_log_level"
    );
    // proxy_done is NYI on Kong, implemented on Envoy.
    let script = json!({"on_request_headers": [{"op": "done"}]});
    let mut kong = gateway(Profile::Kong, script.clone());
    let ex = kong.run(Request::new("GET", "/"), |_| ok("up")).unwrap();
    assert!(ex.response.trapped);
    assert_eq!(
        kong.traps()[0].message,
        "host trap (function not yet implemented): proxy_done"
    );
    let mut envoy = gateway(Profile::Envoy, script);
    let ex = envoy.run(Request::new("GET", "/"), |_| ok("up")).unwrap();
    assert!(!ex.response.trapped);
    assert!(envoy.log_contains("probe done: Ok(())"));
}

#[test]
fn scoped_properties_are_an_error_outside_a_request_and_plugin_ones_are_answered() {
    let reads = json!([
        {"op": "get_property", "path": ["kong", "route_id"]},
        {"op": "get_property", "path": ["plugin_name"]},
        {"op": "get_property", "path": ["plugin_root_id"]},
        {"op": "get_property", "path": ["plugin_vm_id"]},
        {"op": "get_property", "path": ["node"]}
    ]);
    let mut gw = gateway(
        Profile::Kong,
        json!({"on_configure": reads, "on_request_headers": reads}),
    );
    let root = markers(&gw, "probe property");
    assert_eq!(
        root,
        vec![
            "probe property kong.route_id: Err(InternalFailure)",
            "probe property plugin_name: Ok(Some(\"probe\"))",
            "probe property plugin_root_id: Ok(Some(\"0\"))",
            "probe property plugin_vm_id: Ok(None)",
            "probe property node: Ok(None)",
        ]
    );
    assert!(gw.log_contains("[error] [wasm] cannot get scoped properties outside of a request"));
    assert!(gw.log_contains("[alert] [wasm] NYI - \"plugin_vm_id\" property"));
    assert!(gw.log_contains("[error] [wasm] \"node\" property not supported"));
    // The same dotted read in a request is answered.
    let _ = gw.run(Request::new("GET", "/"), |_| ok("")).unwrap();
    assert!(gw.log_contains(
        "probe property kong.route_id: Ok(Some(\"5f1c2bcd-0000-4000-8000-000000000001\"))"
    ));
    // Envoy has no such rule.
    let envoy = gateway(Profile::Envoy, json!({"on_configure": reads}));
    assert!(envoy.log_contains("probe property plugin_name: Ok(Some(\"filter\"))"));
    assert!(!envoy.log_contains("scoped properties"));
}

#[test]
fn scoped_properties_are_an_error_in_every_root_callback() {
    let read = json!([{"op": "get_property", "path": ["kong", "service_id"]}]);
    let mut gw = gateway(
        Profile::Kong,
        json!({
            "on_configure": [{"op": "tick_period", "ms": 100}],
            "on_tick": [{"op": "get_property", "path": ["kong", "service_id"]}, {"op": "dispatch"}],
            "on_http_call_response": read
        }),
    );
    gw.advance(100);
    let call = gw.pending()[0].id;
    gw.answer(call, ok("x")).unwrap();
    assert_eq!(
        markers(&gw, "probe property"),
        vec![
            "probe property kong.service_id: Err(InternalFailure)",
            "probe property kong.service_id: Err(InternalFailure)"
        ]
    );
    // Writing one from the root is refused too; SDK 0.2.5's setter panics on
    // the status, so on_configure traps and the worker exits.
    let gw = gateway(
        Profile::Kong,
        json!({"on_configure": [{"op": "set_property", "path": ["kong", "x"], "value": "1"}]}),
    );
    assert!(gw.log_contains("cannot set scoped properties outside of a request"));
    assert!(gw.exited(0).is_some());
}

#[test]
fn a_rejected_configuration_kills_the_worker_and_clients_hang() {
    let mut gw = builder(Profile::Kong, json!({"reject": []}))
        .workers(2)
        .build()
        .unwrap();
    for w in 0..2 {
        let reason = gw.exited(w).expect("exited");
        assert!(
            reason.contains(
                "[emerg] [proxy-wasm] failed initializing \"probe\" filter (on_configure failure)"
            ),
            "{reason}"
        );
        assert!(reason.contains(&format!(
            "worker process {w} exited with fatal code 2 and cannot be respawned"
        )));
    }
    let rid = gw.send(1, Request::new("GET", "/"));
    gw.advance(60_000);
    assert!(gw.response(rid).is_none(), "nobody ever answers");
    assert!(gw.hung(rid).is_some());
    assert!(gw.calls().is_empty());
    // Envoy refuses to start instead.
    let err = builder(Profile::Envoy, json!({"reject": []}))
        .build()
        .err()
        .expect("Envoy does not start");
    assert!(matches!(err, HostError::Configure { .. }), "{err}");
}

#[test]
fn a_local_response_from_a_failed_dispatch_callback_drops_the_connection() {
    let script = json!({
        "on_request_headers": [{"op": "dispatch", "timeout_ms": 300}, {"op": "pause"}],
        "on_http_call_response": [{"op": "local", "status": 504, "body": "timed out"}]
    });
    for failure in [Failure::Timeout, Failure::Refused, Failure::Reset] {
        let mut gw = gateway(Profile::Kong, script.clone());
        let ex = gw
            .run(Request::new("GET", "/"), |_| Reply::failure(failure))
            .unwrap();
        assert!(ex.response.is_dropped(), "{failure:?}: {:?}", ex.response);
        assert_eq!(ex.response.status, 0);
        assert!(gw.log_contains("[alert] zero size buf in writer t:1 r:0 f:0"));
    }
    // After a dispatch that got a response, whatever its status, it reaches the client.
    let mut gw = gateway(Profile::Kong, script.clone());
    let ex = gw
        .run(Request::new("GET", "/"), |_| Reply::status(503))
        .unwrap();
    assert_eq!(ex.response.status, 504);
    assert_eq!(ex.response.body, b"timed out\n");
    assert!(!gw.log_contains("zero size buf"));
    // Envoy delivers it.
    let mut envoy = gateway(
        Profile::Envoy,
        json!({
            "on_request_headers": [{"op": "dispatch", "upstream": "backend", "timeout_ms": 300}, {"op": "pause"}],
            "on_http_call_response": [{"op": "local", "status": 504, "body": "timed out"}]
        }),
    );
    let ex = envoy
        .run(Request::new("GET", "/"), |_| {
            Reply::failure(Failure::Timeout)
        })
        .unwrap();
    assert_eq!(ex.response.status, 504);
    assert_eq!(ex.response.body, b"timed out");
}

#[test]
fn workaround_answer_from_the_callback_of_a_dispatch_that_got_a_response() {
    // After the failed attempt, one more dispatch to an endpoint that answers
    // at once (the filter's delay endpoint with a zero wait); its callback
    // sends the final answer, which Kong delivers.
    let script = json!({
        "on_request_headers": [{"op": "dispatch", "timeout_ms": 300}, {"op": "pause"}],
        "on_http_call_response": [{"op": "if_call_failed",
            "then": [{"op": "dispatch", "upstream": "127.0.0.1:9001", "path": "/kong-retry/delay"}],
            "otherwise": [{"op": "local", "status": 504, "body": "all attempts timed out"}]}]
    });
    let mut gw = gateway(Profile::Kong, script);
    let ex = gw
        .run(Request::new("GET", "/"), |call| {
            if call.path == "/kong-retry/delay" {
                Reply::status(204)
            } else {
                Reply::failure(Failure::Timeout).after_ms(300)
            }
        })
        .unwrap();
    assert!(!ex.response.is_dropped());
    assert_eq!(ex.response.status, 504);
    assert_eq!(ex.response.body, b"all attempts timed out\n");
    assert_eq!(ex.calls.len(), 2);
    assert!(!gw.log_contains("zero size buf"));
}
