#!/usr/bin/env bash
# The whole test suite: unit tests, and end-to-end tests against a real ZooKeeper, real
# backends (redis-server among them), the real binaries, headless Chromium and Prometheus.
# On a fresh Debian machine with only the Rust toolchain, it installs what the tests need
# (Debian packages, apt-get; sudo when not root), builds, runs every test binary even when
# one fails, and ends with one line: how many passed and failed, and which failed.
#
#   deploy/test.sh                      everything
#   deploy/test.sh -p nerve --lib       extra arguments go to `cargo test`
#   TEST_INSTALL_ONLY=1 deploy/test.sh  only install what the tests need (deploy/fresh-check.sh)
#
# Exit status: 0 when every test passed, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/packages.sh

# ZooKeeper 3.8 and a JRE (the registry and every end-to-end test).
deploy/zk-local.sh --install-only
# What the build and the other tests run, as COMMAND-or-PATH=DEBIAN-PACKAGE.
need=(
  cc=gcc /usr/include/stdio.h=libc6-dev       # the linker, and C for `ring`'s build script
  /etc/ssl/certs/ca-certificates.crt=ca-certificates  # cargo fetching from crates.io
  redis-server=redis-server                   # nerve's redis check (nerve_checks)
  /usr/bin/chromium=chromium                  # the stats page test (headless)
  /usr/share/fonts/truetype/dejavu=fonts-dejavu-core  # ...and a font for it to render with
  /usr/bin/prometheus=prometheus              # the scrape test
  curl=curl                                   # HTTP/2 prior-knowledge client (synapse_http)
  kill=procps                                 # signals to the agents under test
)
# gRPC health check tests: their packages go here (tools or Python modules the gRPC tests
# run), as more COMMAND-or-PATH=PACKAGE entries.
need+=(
  python3=python3                             # real gRPC peers (synapse_grpc), see below
)
need_packages test.sh "${need[@]}"
# Real gRPC servers and clients for the synapse gRPC tests (tests/grpc/peer.py): Python
# grpcio and grpcio-health-checking from PyPI (prebuilt wheels, seconds), in a virtualenv in
# the target directory, where the tests look for it (tests/src/grpc.rs).
grpc_venv=${CARGO_TARGET_DIR:-target}/grpc-venv
if ! "$grpc_venv/bin/python3" -c 'import grpc, grpc_health.v1.health' 2>/dev/null; then
  # Debian's python3 makes virtualenvs only with python3-venv (ensurepip).
  python3 -c 'import ensurepip' 2>/dev/null || need_packages test.sh /usr/lib/python3-venv-missing=python3-venv
  echo "test.sh: installing grpcio and grpcio-health-checking into $grpc_venv (PyPI)" >&2
  if ! { python3 -m venv "$grpc_venv" &&
    "$grpc_venv/bin/pip" install -q 'grpcio>=1.60,<2' 'grpcio-health-checking>=1.60,<2'; }; then
    echo "test.sh: could not install grpcio into $grpc_venv (PyPI); the synapse gRPC tests need it" >&2
    exit 1
  fi
fi
[ -z "${TEST_INSTALL_ONLY:-}" ] || exit 0

# The end-to-end tests run the real binaries: build them first.
cargo build --locked --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# --no-fail-fast: one failing test binary does not keep the others from running.
cargo test --locked --workspace --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
# One closing line over every test binary (cargo prints a result per binary, doc-tests
# last): totals, then the failed tests as binary::test, then binaries that ended without a
# result (did not build, crashed, were killed).
awk '
  /^ *Running / { bin = $NF; sub(/.*\//, "", bin); sub(/-[0-9a-f]+\)$/, "", bin)
                  if ($2 == "unittests" && $3 !~ /lib\.rs$/) bin = bin "(" $3 ")"
                  got[bin] = 0; order[++n] = bin; next }
  /^ *Doc-tests / { bin = "doc:" $2; got[bin] = 0; order[++n] = bin; next }
  /^test .* \.\.\. FAILED$/ { name = $2; failed_names = failed_names " " bin "::" name; next }
  /^test result:/ { got[bin] = 1
                    for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
  END {
    for (i = 1; i <= n; i++) if (!got[order[i]]) broken = broken " " order[i]
    line = sprintf("tests: %d passed, %d failed", p, f)
    if (failed_names != "") line = line ":" failed_names
    if (broken != "") line = line "; test binaries without a result:" broken
    print line
  }' "$log"
exit "$((status == 0 ? 0 : 1))"
