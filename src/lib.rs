//! kong-retry: a proxy-wasm filter that retries failed upstream calls for Kong and Envoy
//! without ever applying a non-idempotent request twice.
//!
//! Everything here but `adapter` is host-independent decision logic with native tests;
//! `adapter` (wasm32 only) is the one place that talks to the proxy-wasm host.

pub mod adaptive;
pub mod config;
pub mod exchange;
pub mod header_map;
pub mod maintenance;
pub mod metrics;
pub mod request_copy;
pub mod retry;
pub mod state;

#[cfg(target_arch = "wasm32")]
mod adapter;
