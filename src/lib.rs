//! kong-retry: a proxy-wasm filter that retries failed upstream calls for Kong and Envoy
//! without ever applying a non-idempotent request twice.
//!
//! Everything here but `adapter` is host-independent decision logic with native tests;
//! `adapter` (wasm32 only) is the one place that talks to the proxy-wasm host.

pub mod budget;
pub mod store;
