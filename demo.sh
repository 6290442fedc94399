#!/usr/bin/env bash
# The README's first command. Installs what is missing (scripts/setup.sh), builds dist/
# (kong_retry.wasm + kong_retry.meta.json), then runs the real filter on the proxy-wasm
# test host under Kong's rules (dispatch mode) and Envoy's (response mode) and prints a
# trace of a request whose upstream fails twice, and of a POST without and with an
# Idempotency-Key. Exit status 1 when the filter misbehaved: the demo is a smoke check.
set -euo pipefail
cd "$(dirname "$0")"

./scripts/setup.sh
./wasm-build.sh

if [ ! -x target/debug/kong-retry-demo ]; then
  echo "demo: building the demo and the test host; the first build compiles wasmtime and"
  echo "      tokio (about 160 crates, 4-5 min on 2 cores), later ones take seconds"
fi
# Not quiet: Cargo's progress line shows the first build moving. ./test.sh and the tools
# reuse this build (feature-pins/).
cargo build -p kong-retry-demo
echo
exec cargo run -q -p kong-retry-demo
