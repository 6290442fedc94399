#!/usr/bin/env bash
# The whole test suite: lint, native unit tests, the real .wasm on the test host
# (Kong and Envoy profiles), config fixtures, and the Java client example.
set -euo pipefail
cd "$(dirname "$0")"

./scripts/setup.sh
./wasm-build.sh

echo "== format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p kong-retry --target wasm32-wasip1 --target-dir target/wasm/filter -- -D warnings

echo "== Rust tests (native logic + real .wasm on the test host)"
cargo test --workspace

echo "== Java client and server example"
./examples/java/run-tests.sh
