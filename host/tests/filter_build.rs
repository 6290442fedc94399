//! The build helper builds the workspace's filter for the filter's tests.
//! Ignored by default: it builds another team's crate; run with
//! `cargo test -p proxy-wasm-test-host --test filter_build -- --ignored`.

use proxy_wasm_test_host::{build, Gateway, Profile, WasmModule};

#[test]
#[ignore = "builds the root filter crate (slow; exercised by the filter's own tests)"]
fn filter_wasm_builds_and_loads() {
    let path = build::filter_wasm().unwrap_or_else(|e| panic!("{e}"));
    assert!(path.ends_with("kong_retry.wasm"), "{}", path.display());
    let module = WasmModule::from_file(&path).unwrap();
    for profile in [Profile::Kong, Profile::Envoy] {
        Gateway::builder(profile, &module)
            .plugin_config("{}")
            .build()
            .unwrap_or_else(|e| panic!("{profile:?}: {e}"));
    }
}
