//! The first shipped filter (main at 6ffdbba) under the strict rules: it must
//! fail them as it failed on the real hosts. Needs that module's path:
//! `OLD_FILTER_WASM=/path/to/kong_retry.wasm cargo test -p proxy-wasm-test-host
//! --test old_filter -- --ignored` (the `.wasm` is not part of the repository).

use proxy_wasm_test_host::{Gateway, HostError, Profile, Reply, Request, WasmModule};

fn old_filter() -> WasmModule {
    let path = std::env::var("OLD_FILTER_WASM").expect("set OLD_FILTER_WASM");
    WasmModule::from_file(path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
#[ignore = "needs OLD_FILTER_WASM"]
fn old_filter_does_not_instantiate_on_kong() {
    let module = old_filter();
    let mut gw = Gateway::builder(Profile::Kong, &module)
        .plugin_config("{}")
        .build()
        .unwrap();
    let reason = gw.exited(0).expect("the worker exited").to_string();
    eprintln!("Kong: {reason}");
    assert!(
        reason.contains("incompatible import type for `env::proxy_get_log_level`"),
        "{reason}"
    );
    let err = gw
        .run(Request::new("GET", "/"), |_| Reply::status(200))
        .unwrap_err();
    assert!(matches!(err, HostError::Hung { .. }), "{err}");
}

#[test]
#[ignore = "needs OLD_FILTER_WASM"]
fn old_filter_does_not_load_on_envoy() {
    let module = old_filter();
    let err = Gateway::builder(Profile::Envoy, &module)
        .plugin_config("{}")
        .build()
        .err()
        .expect("refused");
    eprintln!("Envoy: {err}");
    assert!(err.to_string().contains("restricted_callback"), "{err}");
}
