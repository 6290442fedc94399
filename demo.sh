#!/usr/bin/env bash
# The README's first command. Installs what is missing (scripts/setup.sh), builds dist/
# (kong_retry.wasm + kong_retry.meta.json), then runs a short rolling-upgrade lab on real
# sockets: real Envoy 1.40 with and without the filter in front of three real upstreams that
# are replaced one by one, under open-loop load; it prints the table (docs/lab.md has the
# full lab, `cargo run --release -p kong-retry-lab`). Then, when a JDK is on PATH, the Java
# example's client makes 20 payments through real Envoy with the filter's idempotency, in
# front of an upstream that ignores keys, with upstream 503s and answers lost on the way
# back; it prints whether each was applied exactly once (exit 1 when not).
#   ./demo.sh trace   instead prints the scripted trace of the filter on the test host under
#                     Kong's and Envoy's rules (a request that fails twice, POSTs with and
#                     without an Idempotency-Key); exit 1 when the filter misbehaved.
set -euo pipefail
cd "$(dirname "$0")"

./scripts/setup.sh
./wasm-build.sh

if [ "${1:-}" = "trace" ]; then
  if [ ! -d target/debug/build ]; then
    echo "demo: the first build compiles the test host, wasmtime and tokio"
    echo "      (about 170 crates, 4-5 min on 2 cores); later ones take seconds"
  fi
  # Not quiet: Cargo's progress line shows the first build moving. ./test.sh and the tools
  # reuse this build (feature-pins/).
  cargo build -p kong-retry-demo
  echo
  exec cargo run -q -p kong-retry-demo
fi
# The short lab has Envoy rows only: without the feature kong-rows it needs no test host and
# no wasmtime (about 55 crates, 1-2 min the first time on 2 cores). Not quiet, so that the
# first build shows its progress.
[ -d target/debug/build ] || echo "demo: the first build compiles the lab (about 55 crates, 1-2 min on 2 cores)"
cargo build -p kong-retry-lab --no-default-features
echo
exec cargo run -q -p kong-retry-lab --no-default-features -- --short
