#!/usr/bin/env bash
# The whole test suite: unit tests, and end-to-end tests against a real ZooKeeper (installed
# from Debian packages when missing), real backends and the real binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/zk-local.sh --install-only
# The end-to-end tests run the real binaries: build them first.
cargo build --locked --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked --workspace "$@" 2>&1 | tee "$log" || status=$?
# One closing line over every test binary (cargo prints one per binary, doc-tests last).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
