#!/usr/bin/env bash
# The whole test suite: unit tests, and end-to-end tests against a real ZooKeeper, real
# backends, the real binaries, headless Chromium and Prometheus (each installed from Debian
# packages when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/zk-local.sh --install-only
# Headless Chromium (the stats page test) and Prometheus (the scrape test), from Debian.
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/prometheus ] || missing+=(prometheus)
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "test.sh: installing ${missing[*]} (Debian packages)" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
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
