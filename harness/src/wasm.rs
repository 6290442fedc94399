//! The `.wasm` modules Envoy loads: the filter built from this checkout, and fixtures.

use crate::HarnessError;
use std::path::PathBuf;

/// `kong_retry.wasm` built from the current source (`cargo build --release --target
/// wasm32-wasip1`, shared with the test host's builds and `./wasm-build.sh`).
pub fn filter() -> Result<PathBuf, HarnessError> {
    proxy_wasm_test_host::build::filter_wasm().map_err(|e| HarnessError::new(e.to_string()))
}

/// A fixture filter under `harness/fixtures/<name>` (its own cargo project).
pub fn fixture(name: &str) -> Result<PathBuf, HarnessError> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    proxy_wasm_test_host::build::cargo_wasm(dir).map_err(|e| HarnessError::new(e.to_string()))
}
