//! Shared helpers for the host's tests: the probe fixture and gateway shortcuts.
#![allow(dead_code)]

use proxy_wasm_test_host::{build, Gateway, Profile, WasmModule};
use serde_json::Value;

/// The probe fixture, built once per test process.
pub fn probe() -> WasmModule {
    let path = build::probe_wasm().unwrap_or_else(|e| panic!("{e}"));
    WasmModule::from_file(path).unwrap_or_else(|e| panic!("{e}"))
}

/// A variant of the probe built with cargo features (fixtures/probe/Cargo.toml).
pub fn probe_with(features: &[&str]) -> WasmModule {
    let path = build::probe_wasm_with(features).unwrap_or_else(|e| panic!("{e}"));
    WasmModule::from_file(path).unwrap_or_else(|e| panic!("{e}"))
}

/// A gateway running the probe with this script.
pub fn gateway(profile: Profile, script: Value) -> Gateway {
    builder(profile, script)
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

pub fn builder(profile: Profile, script: Value) -> proxy_wasm_test_host::GatewayBuilder {
    Gateway::builder(profile, &probe())
        .plugin_config(script.to_string())
        .cluster("backend")
        .upstream("127.0.0.1:8080")
}

/// Log messages, for assertions on the probe's markers.
pub fn messages(gw: &Gateway) -> Vec<String> {
    gw.logs().into_iter().map(|l| l.message).collect()
}

/// The log messages that start with `prefix` (one kind of probe marker).
pub fn markers(gw: &Gateway, prefix: &str) -> Vec<String> {
    messages(gw)
        .into_iter()
        .filter(|m| m.starts_with(prefix))
        .collect()
}
