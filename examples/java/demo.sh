#!/usr/bin/env bash
# Starts the example payment server on a free port, runs the client demo against it
# (N payments, default 5), shows the server's counters, and stops the server.
#   ./demo.sh [N]
set -euo pipefail
cd "$(dirname "$0")"
n="${1:-5}"
mkdir -p build/classes
javac --release 17 -d build/classes $(find src/main/java -name '*.java')

java -cp build/classes dev.kongretry.example.PaymentServer 0 > build/demo-server.out &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  grep -q '^listening on ' build/demo-server.out 2>/dev/null && break
  sleep 0.1
done
port=$(sed -n 's/^listening on \([0-9]*\)$/\1/p' build/demo-server.out)
if [ -z "$port" ]; then
  echo "the payment server did not start within 5 s; its output:" >&2
  cat build/demo-server.out >&2
  exit 1
fi
echo "server on port $port"

java -cp build/classes dev.kongretry.example.IdempotentClient "http://127.0.0.1:$port" "$n"
if command -v curl >/dev/null 2>&1; then
  url="http://127.0.0.1:$port/payments"
  body='{"amount":500,"currency":"EUR","reference":"by-hand-1"}'
  echo; echo "--- the server side of the contract, by hand (curl) ---"
  echo "first POST with key k-1:";        curl -s -i -X POST "$url" -H 'Idempotency-Key: "k-1"' -d "$body" | grep -E '^HTTP|^Idempotent|^\{'
  echo "same key, same body (replay):";   curl -s -i -X POST "$url" -H 'Idempotency-Key: "k-1"' -d "$body" | grep -E '^HTTP|^Idempotent|^\{'
  echo "same key, other body (422):";     curl -s -i -X POST "$url" -H 'Idempotency-Key: "k-1"' -d "${body/500/501}" | grep -E '^HTTP|^\{'
  echo "no key (400):";                   curl -s -i -X POST "$url" -d "$body" | grep -E '^HTTP|^\{'
  echo "GET /stats: $(curl -s "http://127.0.0.1:$port/stats")"
fi
