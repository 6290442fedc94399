//! Bad module input is an error, never a hang or a crash of the test process.
mod common;

use common::*;
use proxy_wasm_test_host::{Gateway, HostError, Profile, Reply, Request, WasmModule};
use serde_json::json;
use std::time::{Duration, Instant};

const ABI: &str = r#"
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
"#;

/// The error building a gateway for this module gives.
fn start_error(profile: Profile, wat: &str) -> HostError {
    let module = WasmModule::from_bytes(wat.as_bytes()).unwrap();
    match Gateway::builder(profile, &module).build() {
        Ok(_) => panic!("the module started"),
        Err(e) => e,
    }
}

#[test]
fn module_without_abi_exports_is_rejected() {
    let err = WasmModule::from_bytes(br#"(module (memory (export "memory") 1))"#).unwrap_err();
    assert!(matches!(err, HostError::Abi(_)), "{err}");
}

#[test]
fn garbage_bytes_are_a_load_error() {
    let err = WasmModule::from_bytes(b"\0asm garbage").unwrap_err();
    assert!(matches!(err, HostError::Load(_)), "{err}");
}

/// Kong: a worker whose start-up fails exits and is not respawned; the gateway
/// runs on without it and its requests hang. The reason, from its error log.
fn kong_exit_reason(wat: &str) -> String {
    let module = WasmModule::from_bytes(wat.as_bytes()).unwrap();
    let mut gw = Gateway::builder(Profile::Kong, &module).build().unwrap();
    let reason = gw.exited(0).expect("the worker exited").to_string();
    let err = gw
        .run(Request::new("GET", "/"), |_| Reply::status(200))
        .unwrap_err();
    assert!(matches!(err, HostError::Hung { .. }), "{err}");
    reason
}

#[test]
fn trap_in_initialize_is_reported() {
    let wat = format!(r#"(module {ABI} (func (export "_initialize") unreachable))"#);
    let err = start_error(Profile::Envoy, &wat);
    assert!(
        matches!(
            err,
            HostError::StartTrap {
                phase: "_initialize",
                ..
            }
        ),
        "{err}"
    );
    let reason = kong_exit_reason(&wat);
    assert!(reason.contains("(unknown error)"), "{reason}");
    assert!(reason.contains("cannot be respawned"), "{reason}");
}

#[test]
fn four_gib_memory_request_is_a_load_error() {
    let wat = r#"(module
      (memory (export "memory") 65536)
      (func (export "proxy_abi_version_0_2_1"))
      (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 0))"#;
    let err = start_error(Profile::Envoy, wat);
    assert!(matches!(err, HostError::Load(_)), "{err}");
    assert!(kong_exit_reason(wat).contains("failed instantiating"));
}

#[test]
fn infinite_loop_in_start_is_an_error_within_seconds() {
    let wat = format!(r#"(module {ABI} (func (export "_initialize") (loop (br 0))))"#);
    let t = Instant::now();
    let err = start_error(Profile::Envoy, &wat);
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(err.to_string().contains("fuel"), "{err}");
}

#[test]
fn infinite_loop_in_a_callback_traps_within_seconds() {
    let mut gw = gateway(
        Profile::Kong,
        json!({"on_request_headers": [{"op": "spin"}]}),
    );
    let t = Instant::now();
    let ex = gw
        .run(Request::new("GET", "/"), |_| Reply::status(200))
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(ex.response.status, 500);
    assert!(gw.traps()[0].message.contains("fuel"), "{:?}", gw.traps());
}

#[test]
fn growing_past_the_memory_limit_traps() {
    let mut gw = builder(
        Profile::Kong,
        json!({"on_request_headers": [{"op": "alloc", "mb": 512}]}),
    )
    .memory_limit(64 << 20)
    .build()
    .unwrap();
    let ex = gw
        .run(Request::new("GET", "/"), |_| Reply::status(200))
        .unwrap();
    assert!(ex.response.trapped);
    assert_eq!(gw.traps().len(), 1);
}

#[test]
fn unknown_imports_still_load() {
    let wat = format!(
        r#"(module
          (import "wasi_snapshot_preview1" "path_open" (func $po (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
          (import "env" "proxy_call_foreign_function" (func $ff (param i32 i32 i32 i32 i32 i32) (result i32)))
          {ABI})"#
    );
    let module = WasmModule::from_bytes(wat.as_bytes()).unwrap();
    let mut gw = Gateway::builder(Profile::Envoy, &module).build().unwrap();
    // No callbacks exported: requests pass through untouched.
    let ex = gw
        .run(Request::new("GET", "/"), |_| Reply::status(204))
        .unwrap();
    assert_eq!(ex.response.status, 204);
}
