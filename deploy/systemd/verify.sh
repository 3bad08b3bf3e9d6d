#!/usr/bin/env bash
# Checks the unit files with `systemd-analyze verify` (syntax, directives known to this
# systemd, executables present). The units name /usr/local/bin/{nerve,synapse}: the check runs
# on copies naming the binaries cargo built instead (release if built, else debug).
# Any finding fails the check.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
command -v systemd-analyze >/dev/null 2>&1 || {
  echo "verify: systemd-analyze not found (Debian package systemd)" >&2
  exit 1
}
target=${CARGO_TARGET_DIR:-$repo/target}
bin=$target/release
[ -x "$bin/nerve" ] && [ -x "$bin/synapse" ] || bin=$target/debug
[ -x "$bin/nerve" ] && [ -x "$bin/synapse" ] || {
  echo "verify: build the binaries first (cargo build --bins)" >&2
  exit 1
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for unit in nerve synapse; do
  sed "s#/usr/local/bin/#$bin/#g" "$repo/deploy/systemd/$unit.service" >"$work/$unit.service"
done
cp "$repo/deploy/systemd/synapse.socket" "$work/"
out=$(cd "$work" && systemd-analyze verify nerve.service synapse.service synapse.socket 2>&1) || true
if [ -n "$out" ]; then
  echo "$out" >&2
  echo "verify: systemd-analyze verify found problems in deploy/systemd/" >&2
  exit 1
fi
echo "verify: deploy/systemd/{nerve,synapse}.service and synapse.socket pass systemd-analyze verify ($(systemd-analyze --version | head -n1))"
