#!/usr/bin/env bash
# The claim "on a fresh Debian machine with only the Rust toolchain, deploy/test.sh installs
# what it needs and the tests pass", checked in a container (podman):
#
#   deploy/fresh-check.sh              install steps, build, and the tests that use each
#                                      installed dependency (CI runs this)
#   deploy/fresh-check.sh --full       the whole suite (deploy/test.sh with no arguments)
#
# The image is a fresh Debian bookworm: its `required` packages and apt, nothing else (no
# ZooKeeper, JRE, redis, Chromium, Prometheus, curl, C compiler, CA certificates, Python
# venv), made of this host's installed files by deploy/local-images/host-rootfs.py --debian
# (no image registry answers here), remade at each run so that nothing installed by an
# earlier run remains. apt-get in it installs from Debian's mirror, as on a new machine.
# The Rust toolchain (1.95.0, the pinned one) is this host's, mounted read-only.
#
# Kept between runs, under target/fresh-check/ (caches a fresh machine would fill itself, not
# system state): cargo's download cache (crates.io) and the build directory, so a CI run does
# not rebuild every dependency. The final link still needs the installed C toolchain.
#
# Why not the whole suite in CI: the build in the container (from an empty build directory)
# takes about as long as CI's own, and the whole suite runs on the host already; the default
# run covers every dependency test.sh installs (ZooKeeper, redis, Chromium, Prometheus,
# curl, the gRPC peers) through one test each area. Timings (2 shared cores): see the
# numbers printed at the end; --full adds the host suite's time.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
export CONTAINERS_CONF=${CONTAINERS_CONF:-$repo/.ci/containers.conf}
engine=${ENGINE:-podman}
toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
tc_dir=$(ls -d "$rustup_home/toolchains/$toolchain"-* 2>/dev/null | head -n1 || true)
[ -n "$tc_dir" ] && [ -x "$tc_dir/bin/cargo" ] || {
  echo "fresh-check: Rust $toolchain not found under $rustup_home/toolchains (rustup toolchain install $toolchain)" >&2
  exit 1
}
command -v "$engine" >/dev/null || { echo "fresh-check: $engine not found (apt-get install podman)" >&2; exit 1; }

if [ "${1:-}" = --full ]; then
  args=()
else
  # One test per installed dependency; `--` filters of the single test binary.
  args=(-p integration-tests --test it --
    registry::                                   # ZooKeeper + JRE
    nerve_checks::redis_ping_with_and_without_auth  # redis-server
    stats_page::                                 # Chromium, fonts
    prometheus::                                 # Prometheus
    synapse_http::                               # curl (h2c)
    synapse_grpc::                               # the Python gRPC peers
  )
fi

started=$(date +%s)
state=$repo/target/fresh-check
mkdir -p "$state/cargo-home" "$state/target"
image=localhost/nerve-synapse-fresh-debian:latest
tar=$(mktemp "${TMPDIR:-/tmp}/fresh-debian.XXXXXX.tar")
trap 'rm -f "$tar"' EXIT
python3 deploy/local-images/host-rootfs.py --debian "$tar"
"$engine" import -q "$tar" "$image" >/dev/null
echo "fresh-check: image made in $(($(date +%s) - started)) s"

# This machine's own network settings, not the project's needs: the certificate authorities
# its administrator added (here, an egress proxy that re-signs TLS), so that crates.io and
# PyPI answer in the container as on the host. ca-certificates (installed by test.sh's
# steps) takes them in; pip is told to use the system's bundle, as the host's pip.conf does.
local_ca=()
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  local_ca=(-v /usr/local/share/ca-certificates:/usr/local/share/ca-certificates:ro
    -e PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
fi

# The tests start browsers and JVMs: room in /dev/shm.
status=0
"$engine" run --rm --shm-size=1g "${local_ca[@]}" \
  -v "$repo:/src:ro" \
  -v "$tc_dir:/opt/rust:ro" \
  -v "$state/cargo-home:/cargo" \
  -v "$state/target:/target" \
  -e PATH=/opt/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  -e CARGO_HOME=/cargo -e CARGO_TARGET_DIR=/target -e CARGO_TERM_COLOR=never \
  -w /src "$image" \
  bash -c 'set -e
    t0=$(date +%s)
    TEST_INSTALL_ONLY=1 deploy/test.sh
    echo "fresh-check: install steps took $(($(date +%s) - t0)) s"
    t1=$(date +%s)
    deploy/test.sh "$@"
    echo "fresh-check: build and tests took $(($(date +%s) - t1)) s"' fresh-check "${args[@]}" || status=$?
echo "fresh-check: $([ "$status" = 0 ] && echo passed || echo FAILED) in $(($(date +%s) - started)) s"
exit "$status"
