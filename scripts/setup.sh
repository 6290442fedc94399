#!/usr/bin/env bash
# Installs what kong-retry's build and tests need on a fresh Debian machine.
# Idempotent: each step checks first, so a warm machine pays almost nothing.
set -euo pipefail

if ! rustup target list --installed | grep -qx wasm32-wasip1; then
  echo "setup: adding Rust target wasm32-wasip1"
  rustup target add wasm32-wasip1
fi
for component in clippy rustfmt; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    rustup component add "$component"
  fi
done

missing=()
command -v wasm-opt >/dev/null 2>&1 || missing+=(binaryen)
command -v javac >/dev/null 2>&1 || missing+=(openjdk-17-jdk-headless)
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
