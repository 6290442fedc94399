#!/usr/bin/env bash
# Builds the Java example and runs its tests (JDK 17+, standard library only).
#   ./run-tests.sh               all tests
#   ./run-tests.sh fault         only tests whose name contains "fault"
#   SEED=42 ./run-tests.sh       another fault schedule (default seed 7)
# Output: one line per test, then exactly "N passed, N failed". Exit status 1 if any failed.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v javac >/dev/null 2>&1; then
  echo "javac not found: installing openjdk-17-jdk-headless" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update
  $sudo apt-get install -y openjdk-17-jdk-headless
fi
version=$(javac -version 2>&1 | sed -E 's/^javac ([0-9]+).*/\1/')
if [ "${version:-0}" -lt 17 ]; then
  echo "need JDK 17 or newer, found: $(javac -version 2>&1)" >&2
  exit 1
fi

rm -rf build/classes build/test-classes
mkdir -p build/classes build/test-classes
# --release 17: the example must compile on plain JDK 17 even when a newer JDK builds it.
javac --release 17 -Xlint:all -Werror -d build/classes $(find src/main/java -name '*.java')
javac --release 17 -Xlint:all -Werror -cp build/classes -d build/test-classes $(find src/test/java -name '*.java')

set +e
java ${SEED:+-Dseed="$SEED"} -Dlog.dir=build -cp build/classes:build/test-classes \
  dev.kongretry.example.TestRunner "$@" | tee build/test-output.txt
rc=${PIPESTATUS[0]}
set -e

last=$(tail -n 1 build/test-output.txt)
if [ "$rc" -ne 0 ] || ! [[ "$last" =~ ^[0-9]+\ passed,\ 0\ failed$ ]]; then
  exit 1
fi
