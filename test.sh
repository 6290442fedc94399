#!/usr/bin/env bash
# The whole test suite: lint, native unit tests, the real .wasm on the test host
# (Kong and Envoy profiles), config fixtures, and the Java client example.
set -euo pipefail
cd "$(dirname "$0")"

./scripts/setup.sh
./wasm-build.sh

# On a fresh clone the two Cargo steps below each go through the ~260 crates once:
# clippy checks them (metadata only, about 2 min on 2 cores), the tests build them
# (about 5 min, wasmtime included: ./demo.sh builds only the lab's
# Envoy part, without the test host). Later runs take seconds.
echo "== format and lints"
cargo fmt --all --check
echo "(clippy: on a fresh clone about 2 min, checking wasmtime and the other dependencies)"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p kong-retry --target wasm32-wasip1 --target-dir target/wasm/filter -- -D warnings

echo "== Rust tests (native logic + real .wasm on the test host)"
echo "(on a fresh clone the build takes about 5 min before the first test runs; seconds on a warm checkout)"
cargo test --workspace

echo "== Java client and server example"
./examples/java/run-tests.sh
