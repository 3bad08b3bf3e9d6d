#!/usr/bin/env bash
# End-to-end demo of nerve + synapse on one machine, with nothing but loopback ports.
#
#   deploy/demo.sh          (from any directory)
#
# What it does:
#   1. builds nerve and synapse (cargo build --bins -q)
#   2. starts a private ZooKeeper (deploy/zk-local.sh, free port, temp data dir)
#   3. starts two tiny HTTP backends answering "backend-a" / "backend-b"
#   4. starts nerve (health-checks both backends, registers them in ZooKeeper) and
#      synapse (watches ZooKeeper, load-balances a local port over the registered backends)
#   5. sends 20 requests through synapse and shows the spread over the backends
#   6. stops backend-a, measures how long until synapse stops routing to it, and shows
#      that the next 20 requests all go to backend-b
# Everything it started is stopped on exit (also on failure or Ctrl-C); the logs stay.
# Exits non-zero when an expectation fails.
#
# Needs cargo (the Rust toolchain). What else it needs (a C compiler and linker, python3, curl,
# java + ZooKeeper) it installs from Debian packages with apt-get when missing, as
# deploy/test.sh does. Environment knobs: DEMO_REQUESTS (default 20), DEMO_FAILOVER_LIMIT_S (default 10).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

REQUESTS=${DEMO_REQUESTS:-20}
FAILOVER_LIMIT_S=${DEMO_FAILOVER_LIMIT_S:-10}
SERVICE=demo-web
ZK_SERVICE_PATH=/services/$SERVICE

# ----------------------------------------------------------------------------------------------
# Output helpers

if [ -t 1 ]; then
  BOLD=$'\e[1m' GREEN=$'\e[32m' RED=$'\e[31m' RESET=$'\e[0m'
else
  BOLD="" GREEN="" RED="" RESET=""
fi
step=0
section() { step=$((step + 1)); printf '\n%s==> %d. %s%s\n' "$BOLD" "$step" "$*" "$RESET"; }
info() { printf '    %s\n' "$*"; }
ok() { printf '    %sOK%s %s\n' "$GREEN" "$RESET" "$*"; }
fail() {
  printf '\n%sFAILED:%s %s\n' "$RED" "$RESET" "$*" >&2
  exit 1
}

# Milliseconds since the epoch.
now_ms() {
  if [ -n "${EPOCHREALTIME:-}" ]; then
    local t=${EPOCHREALTIME/[.,]/}
    echo $((10#$t / 1000))
  else
    date +%s%3N
  fi
}

command -v cargo >/dev/null 2>&1 ||
  fail "'cargo' is required but not on PATH: install the Rust toolchain (https://rustup.rs)"
. deploy/packages.sh
need_packages demo.sh cc=gcc /usr/include/stdio.h=libc6-dev \
  /etc/ssl/certs/ca-certificates.crt=ca-certificates python3=python3 curl=curl kill=procps ||
  fail "could not install what the demo needs"
deploy/zk-local.sh --install-only || fail "could not install ZooKeeper"

# ----------------------------------------------------------------------------------------------
# State and cleanup

WORK=$(mktemp -d "${TMPDIR:-/tmp}/nerve-synapse-demo.XXXXXX")
ZK_DIR=$WORK/zookeeper
ZK_STARTED=0
declare -A PIDS=()   # name -> pid of every process this script started (ZooKeeper aside)

# Stops one process we started: SIGTERM, wait up to 10 s, then SIGKILL.
stop_pid() {
  local name=$1 pid=$2
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "    $name (pid $pid) ignored SIGTERM for 10 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT
  trap "" INT TERM  # finish cleaning up even when interrupted again
  set +e
  printf '\n%s==> Cleaning up%s\n' "$BOLD" "$RESET"
  # nerve first (it deregisters while ZooKeeper is still up), then synapse, then the backends.
  for name in nerve synapse backend-a backend-b; do
    if [ -n "${PIDS[$name]:-}" ]; then
      stop_pid "$name" "${PIDS[$name]}"
      info "stopped $name"
    fi
  done
  if [ "$ZK_STARTED" = 1 ]; then
    ZK_DIR=$ZK_DIR ZK_PORT=$ZK_PORT deploy/zk-local.sh stop 2>&1 | sed 's/^/    /'
  fi
  info "logs and configs kept in $WORK"
  if [ "$rc" -eq 0 ]; then
    printf '\n%sDemo passed.%s\n' "$GREEN" "$RESET"
  elif [ "$rc" -eq 130 ] || [ "$rc" -eq 143 ]; then
    printf '\n%sDemo interrupted.%s Logs: %s\n' "$RED" "$RESET" "$WORK" >&2
  else
    printf '\n%sDemo failed (exit %d).%s Logs: %s\n' "$RED" "$rc" "$RESET" "$WORK" >&2
    for log in nerve synapse; do
      if [ -s "$WORK/$log.log" ]; then
        printf '\n--- last lines of %s ---\n' "$WORK/$log.log" >&2
        tail -n 15 "$WORK/$log.log" >&2
      fi
    done
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# `n` distinct free loopback ports (all bound at once by the OS, then released).
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
held = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    held.append(s)
print(" ".join(str(s.getsockname()[1]) for s in held))
PY
}

# Polls `cmd...` every 0.1 s until it succeeds or `seconds` pass.
wait_for() {
  local seconds=$1
  shift
  local deadline=$(($(now_ms) + seconds * 1000))
  until "$@" >/dev/null 2>&1; do
    [ "$(now_ms)" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# Fails fast when a background process we started has died.
assert_running() {
  local name=$1 log=$2
  kill -0 "${PIDS[$name]}" 2>/dev/null || {
    tail -n 20 "$log" >&2 || true
    fail "$name exited early (log: $log)"
  }
}

# The ports of the backends synapse currently routes to for $SERVICE, sorted, space-separated.
routed_ports() {
  curl -fsS --max-time 1 "http://127.0.0.1:$SYNAPSE_ADMIN_PORT/services" |
    python3 -c '
import json, sys
svc = json.load(sys.stdin).get(sys.argv[1], {})
print(" ".join(str(p) for p in sorted(b["port"] for b in svc.get("backends", []))))
' "$SERVICE"
}

routes_exactly() { [ "$(routed_ports)" = "$*" ]; }

# Sends $1 requests through synapse; prints one answer per line ("error" when one failed).
send_requests() {
  local n=$1 body
  for _ in $(seq 1 "$n"); do
    body=$(curl -fsS --max-time 2 "http://127.0.0.1:$LB_PORT/" 2>/dev/null) || body=error
    echo "${body:-error}"
  done
}

# Prints per-answer counts of the answers in file $1, as "  backend-a  10  ##########".
print_counts() {
  sort "$1" | uniq -c | while read -r count name; do
    printf '      %-10s %3d  %s\n' "$name" "$count" "$(printf '%*s' "$count" '' | tr ' ' '#')"
  done
}

count_of() { grep -cx "$2" "$1" || true; }

# ----------------------------------------------------------------------------------------------

printf '%snerve + synapse demo%s (work dir: %s)\n' "$BOLD" "$RESET" "$WORK"

section "Building nerve and synapse"
cargo build --locked --bins -q
BIN=${CARGO_TARGET_DIR:-$repo/target}/debug
[ -x "$BIN/nerve" ] && [ -x "$BIN/synapse" ] || fail "binaries not found in $BIN"
ok "$BIN/nerve, $BIN/synapse"

read -r ZK_PORT A_PORT B_PORT LB_PORT NERVE_ADMIN_PORT SYNAPSE_ADMIN_PORT <<<"$(free_ports 6)"

section "Starting a private ZooKeeper on 127.0.0.1:$ZK_PORT"
ZK_STARTED=1
if ! ZK_DIR=$ZK_DIR ZK_PORT=$ZK_PORT deploy/zk-local.sh start 2>&1 | sed 's/^/    /'; then
  fail "ZooKeeper did not start (see $ZK_DIR/zookeeper.log)"
fi

section "Starting two demo backends"
start_backend() {
  local name=$1 port=$2 dir=$WORK/$1
  mkdir -p "$dir"
  echo "$name" >"$dir/index.html"
  echo ok >"$dir/health"
  python3 -m http.server "$port" --bind 127.0.0.1 --directory "$dir" >"$WORK/$name.log" 2>&1 &
  PIDS[$name]=$!
}
start_backend backend-a "$A_PORT"
start_backend backend-b "$B_PORT"
for b in "backend-a $A_PORT" "backend-b $B_PORT"; do
  set -- $b
  wait_for 15 curl -fsS --max-time 1 "http://127.0.0.1:$2/health" ||
    fail "$1 did not answer on 127.0.0.1:$2 (log: $WORK/$1.log)"
  ok "$1 answers on http://127.0.0.1:$2/  ->  $(curl -fsS "http://127.0.0.1:$2/")"
done

section "Writing configs and starting nerve and synapse"
cat >"$WORK/nerve.yaml" <<YAML
# nerve: health-checks both backends and keeps one ephemeral node per healthy one.
instance_id: demo-host
admin:
  listen: 127.0.0.1:$NERVE_ADMIN_PORT
drain_time: 0s
services:
$(for b in "backend-a $A_PORT" "backend-b $B_PORT"; do
  set -- $b
  cat <<SVC
  - name: $1
    instance_id: demo-host-$1
    host: 127.0.0.1
    port: $2
    zk_hosts: 127.0.0.1:$ZK_PORT
    zk_path: $ZK_SERVICE_PATH
    labels: {backend: $1}
    check_interval: 200ms
    rise: 2
    fall: 2
    checks:
      - type: http
        uri: /health
        timeout: 500ms
SVC
done)
YAML
cat >"$WORK/synapse.yaml" <<YAML
# synapse: serves $SERVICE on 127.0.0.1:$LB_PORT, round-robin over the registered backends.
admin:
  listen: 127.0.0.1:$SYNAPSE_ADMIN_PORT
drain_timeout: 2s
services:
  - name: $SERVICE
    zk_hosts: 127.0.0.1:$ZK_PORT
    zk_path: $ZK_SERVICE_PATH
    listen: 127.0.0.1:$LB_PORT
    connect_timeout: 500ms
YAML
"$BIN/nerve" --check-config -c "$WORK/nerve.yaml" | sed 's/^/    /'
"$BIN/synapse" --check-config -c "$WORK/synapse.yaml" | sed 's/^/    /'

# NO_COLOR: plain log files, without terminal colour codes.
NO_COLOR=1 "$BIN/nerve" -c "$WORK/nerve.yaml" >"$WORK/nerve.log" 2>&1 &
PIDS[nerve]=$!
NO_COLOR=1 "$BIN/synapse" -c "$WORK/synapse.yaml" >"$WORK/synapse.log" 2>&1 &
PIDS[synapse]=$!
info "nerve   pid ${PIDS[nerve]}, admin http://127.0.0.1:$NERVE_ADMIN_PORT/status"
info "synapse pid ${PIDS[synapse]}, admin http://127.0.0.1:$SYNAPSE_ADMIN_PORT/services"
info "synapse serves $SERVICE on 127.0.0.1:$LB_PORT"

section "Waiting until synapse routes to both backends"
t0=$(now_ms)
expected="$(printf '%s\n' "$A_PORT" "$B_PORT" | sort -n | tr '\n' ' ' | sed 's/ $//')"
deadline=$((t0 + 30000))
until routes_exactly "$expected"; do
  assert_running nerve "$WORK/nerve.log"
  assert_running synapse "$WORK/synapse.log"
  [ "$(now_ms)" -lt "$deadline" ] ||
    fail "synapse did not list both backends within 30 s (it lists: '$(routed_ports 2>/dev/null || true)')"
  sleep 0.1
done
ok "synapse lists backend-a (:$A_PORT) and backend-b (:$B_PORT) after $(($(now_ms) - t0)) ms"
info "GET /services:"
curl -fsS "http://127.0.0.1:$SYNAPSE_ADMIN_PORT/services" |
  python3 -c '
import json, sys
for name, svc in json.load(sys.stdin).items():
    print("      {}: listen {}, zk_path {}, synced {}".format(
        name, svc["listen"], svc["zk_path"], str(svc["synced"]).lower()))
    for b in svc["backends"]:
        labels = ",".join("{}={}".format(k, v) for k, v in sorted((b["labels"] or {}).items()))
        print("        - {}:{}  node {}  labels {}".format(b["host"], b["port"], b["id"], labels or "-"))
'

section "Sending $REQUESTS requests through synapse (127.0.0.1:$LB_PORT)"
send_requests "$REQUESTS" >"$WORK/round1.txt"
print_counts "$WORK/round1.txt"
a=$(count_of "$WORK/round1.txt" backend-a)
b=$(count_of "$WORK/round1.txt" backend-b)
[ $((a + b)) -eq "$REQUESTS" ] || fail "only $((a + b)) of $REQUESTS requests were answered by a backend"
[ "$a" -gt 0 ] && [ "$b" -gt 0 ] || fail "traffic was not spread over both backends (a=$a, b=$b)"
ok "all $REQUESTS answered, spread over both backends (backend-a $a, backend-b $b)"

section "Stopping backend-a and timing the failover"
stop_pid backend-a "${PIDS[backend-a]}"
unset 'PIDS[backend-a]'
t_kill=$(now_ms)
info "backend-a stopped; nerve checks every 200ms and declares it down after 2 failed checks"
deadline=$((t_kill + FAILOVER_LIMIT_S * 1000))
until routes_exactly "$B_PORT"; do
  assert_running nerve "$WORK/nerve.log"
  assert_running synapse "$WORK/synapse.log"
  [ "$(now_ms)" -lt "$deadline" ] ||
    fail "synapse still routes to '$(routed_ports 2>/dev/null || true)' ${FAILOVER_LIMIT_S} s after backend-a stopped"
  sleep 0.02
done
failover_ms=$(($(now_ms) - t_kill))
ok "synapse stopped routing to backend-a ${BOLD}${failover_ms} ms${RESET} after it went down"
curl -sS --max-time 1 "http://127.0.0.1:$NERVE_ADMIN_PORT/status" |
  python3 -c '
import json, sys
for s in json.load(sys.stdin)["services"]:
    flag = lambda v: "true " if v else "false"
    print("      nerve: {:<9} healthy={} registered={} last check error: {}".format(
        s["name"], flag(s["healthy"]), flag(s["registered"]), s["last_check_error"] or "-"))
' || true

section "Sending $REQUESTS more requests: all should reach backend-b"
send_requests "$REQUESTS" >"$WORK/round2.txt"
print_counts "$WORK/round2.txt"
b=$(count_of "$WORK/round2.txt" backend-b)
[ "$b" -eq "$REQUESTS" ] || fail "only $b of $REQUESTS requests reached backend-b after the failover"
ok "all $REQUESTS requests answered by backend-b"

section "Summary"
info "round 1: backend-a $a, backend-b $(count_of "$WORK/round1.txt" backend-b) of $REQUESTS requests"
info "failover: backend-a removed from synapse's route table in $failover_ms ms (limit ${FAILOVER_LIMIT_S} s)"
info "round 2: backend-b $b of $REQUESTS requests"
info "logs: $WORK/{nerve,synapse,backend-a,backend-b}.log, $ZK_DIR/zookeeper.log"
info "configs: $WORK/nerve.yaml, $WORK/synapse.yaml"
