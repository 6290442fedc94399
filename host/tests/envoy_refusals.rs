//! What the Envoy profile refuses the way Envoy 1.40.0 does (each checked on
//! the real Envoy with the probe fixture): host calls during `_initialize`,
//! and imports that proxy-wasm-cpp-host does not export with that type.
mod common;

use common::*;
use proxy_wasm_test_host::{Gateway, HostError, Profile, Reply, Request, WasmModule};

#[test]
fn a_host_call_during_initialize_fails_the_vm() {
    // Seen on Envoy 1.40.0 with this probe variant (get_log_level in
    // proxy_wasm::main!, as the first shipped filter did): "Function:
    // _initialize failed: Uncaught Error: restricted_callback", "Plugin probe
    // failed to load", Envoy exits.
    let module = probe_with(&["start-log-level"]);
    let err = Gateway::builder(Profile::Envoy, &module)
        .plugin_config("{}")
        .build()
        .err()
        .expect("the plugin does not load");
    match &err {
        HostError::StartTrap { phase, message, .. } => {
            assert_eq!(*phase, "_initialize");
            assert_eq!(
                message,
                "Function: _initialize failed: Uncaught Error: restricted_callback"
            );
        }
        other => panic!("{other}"),
    }
    // proxy_log is allowed then (cpp-host src/wasm.cc startVm; seen: "wasm log:
    // probe _initialize").
    let module = probe_with(&["start-log"]);
    let gw = Gateway::builder(Profile::Envoy, &module)
        .plugin_config("{}")
        .build()
        .unwrap();
    assert!(gw.log_contains("probe _initialize"));
    // The plain probe makes no host call during _initialize.
    let mut gw = gateway(Profile::Envoy, serde_json::json!({}));
    let ex = gw
        .run(Request::new("GET", "/"), |_| Reply::status(200))
        .unwrap();
    assert_eq!(ex.response.status, 200);
}

#[test]
fn an_import_typed_otherwise_than_cpp_host_exports_fails_to_load() {
    // Kong's declaration of proxy_get_log_level. Seen on Envoy 1.40.0 with this
    // probe variant, word for word.
    let module = probe_with(&["kong-log-level"]);
    let err = Gateway::builder(Profile::Envoy, &module)
        .plugin_config("{}")
        .build()
        .err()
        .expect("the plugin does not load");
    assert_eq!(
        err.to_string(),
        "cannot load module: Failed to load Wasm module due to an import type mismatch: \
         env.proxy_get_log_level, want: i32 i32 -> i32, but host exports: i32 -> i32"
    );
}

#[test]
fn an_import_cpp_host_does_not_export_fails_to_load() {
    // src/v8/v8.cc V8::link: "Failed to load Wasm module due to a missing import".
    for (module, name, ty) in [
        (
            "env",
            "proxy_get_map_values",
            "(param i32 i32 i32 i32 i32) (result i32)",
        ),
        (
            "wasi_snapshot_preview1",
            "sock_open",
            "(param i32 i32 i32) (result i32)",
        ),
        ("other", "f", ""),
    ] {
        let wat = format!(
            r#"(module
              (import "{module}" "{name}" (func {ty}))
              (memory (export "memory") 1)
              (func (export "proxy_abi_version_0_2_1"))
              (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024))"#
        );
        let m = WasmModule::from_bytes(wat.as_bytes()).unwrap();
        let err = Gateway::builder(Profile::Envoy, &m)
            .build()
            .err()
            .expect("refused");
        assert_eq!(
            err.to_string(),
            format!(
                "cannot load module: Failed to load Wasm module due to a missing import: {module}.{name}"
            )
        );
    }
}
