#!/usr/bin/env bash
# Builds dist/kong_retry.wasm (Kong takes the filter name from the file name) and copies
# kong/kong_retry.meta.json beside it.
set -euo pipefail
cd "$(dirname "$0")"

# A shipped file, copied beside the module (without it Kong cannot validate `config`,
# kong/README.md): its absence is an error, checked before the build.
if [ ! -f kong/kong_retry.meta.json ]; then
    echo "kong/kong_retry.meta.json is missing: dist/ would hold a filter Kong cannot validate" >&2
    exit 1
fi

TARGET=wasm32-wasip1
# The same directory as the test host's build::filter_wasm(), so builds are shared.
TARGET_DIR=target/wasm/filter

if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
fi

cargo build --release --target "$TARGET" --target-dir "$TARGET_DIR" -p kong-retry --lib

mkdir -p dist
built="$TARGET_DIR/$TARGET/release/kong_retry.wasm"

# Optional: a smaller, faster module. Never fail the build for it; scripts/setup.sh (which
# ./test.sh and ./demo.sh run first) is the one place that installs it.
if command -v wasm-opt >/dev/null 2>&1; then
    wasm-opt -O --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int \
        --enable-mutable-globals "$built" -o dist/kong_retry.wasm
else
    echo "wasm-opt not found (./scripts/setup.sh installs Debian's binaryen); copying the unoptimised module" >&2
    cp "$built" dist/kong_retry.wasm
fi

cp kong/kong_retry.meta.json dist/kong_retry.meta.json

size=$(wc -c < dist/kong_retry.wasm)
echo "dist/kong_retry.wasm: $size bytes ($(( (size + 1023) / 1024 )) KiB)"
