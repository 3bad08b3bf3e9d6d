#!/usr/bin/env bash
# The whole test suite: unit tests, and end-to-end tests against a real ZooKeeper (installed
# from Debian packages when missing), real backends and the real binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/zk-local.sh --install-only
# The end-to-end tests run the real binaries: build them first.
cargo build --locked --bins
cargo test --locked --workspace "$@"
