//! The filter end to end through a real Envoy 1.40 (`.venv/`, `scripts/setup.sh`), in
//! response, dispatch and adaptive modes: what a client gets (status, headers, body
//! bytes), how often the upstream was called and with what, the filter's counters in
//! `/stats/prometheus`, and an Envoy log free of wasm errors.
//!
//! Each scenario runs its three modes at once, each with its own Envoy and upstream on
//! free loopback ports; processes are stopped by pid when the test ends or fails.

// Test code: a failed setup step should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod budget;
mod common;
mod deploy;
mod framing;
mod outcomes;
mod timing;
