#!/usr/bin/env bash
# Runs deploy/docker-compose.yml for real and checks it: builds the images, brings the rig up
# (ZooKeeper, two demo backends, nerve, synapse), sends traffic through synapse from the host,
# checks it is spread over both backends, kills a backend container and checks the failover
# (and the way back), checks the stats page, then tears everything down.
#
#   deploy/compose-check.sh              one ZooKeeper server
#   deploy/compose-check.sh --ensemble   a 3-node ensemble; also kills one ZooKeeper server
#                                        and checks that membership changes still arrive
#   deploy/compose-check.sh --keep       leave the rig running at the end (ports printed)
#   deploy/compose-check.sh --images-only   only get the base, ZooKeeper and backend images
#                                        (CI starts it early, beside the compilation)
#
# Engine: Docker when a Docker engine answers, else podman (+ podman-compose); ENGINE=podman
# or ENGINE=docker forces one. Images:
#   - the agents' image packages binaries built on this host: PROFILE=release (default;
#     cargo build --release) or PROFILE=debug (what the test suite built; CI uses it), copied
#     without their debug info into a two-file build context: nothing compiles in a container;
#   - ZooKeeper, the demo backends and the base image come from a registry (zookeeper:3.8,
#     busybox:1.36, debian:bookworm-slim) when one answers, else they are made here from this
#     Debian bookworm host's installed packages (deploy/local-images/host-rootfs.py: glibc,
#     bash, curl, busybox; plus the JRE and ZooKeeper's jars for the ZooKeeper stand-in),
#     imported as IMAGE_PREFIX-base:host-<hash of the host's package list> (seconds, no
#     download; IMAGES=local or IMAGES=registry forces one way).
# Fails (exit 1, with the containers' logs) when an expectation is not met, and when it cannot
# run at all (no engine, no compose tool): it never skips.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

ENSEMBLE=0
KEEP=0
IMAGES_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --ensemble) ENSEMBLE=1 ;;
    --keep) KEEP=1 ;;
    --images-only) IMAGES_ONLY=1 ;;
    -h | --help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "compose-check: unknown argument $arg" >&2; exit 2 ;;
  esac
done

REQUESTS=${REQUESTS:-20}
IMAGE_PREFIX=${IMAGE_PREFIX:-localhost/nerve-synapse}
PROJECT=${PROJECT:-nerve-synapse-check}
started=$(date +%s)

# Build and compose output goes here (shown when a step fails).
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/nerve-synapse-compose-check.XXXXXX")
elapsed() { echo "$(($(date +%s) - started)) s"; }
say() { printf '==> [%s] %s\n' "$(elapsed)" "$*"; }
ok() { printf '    OK %s\n' "$*"; }
fail() {
  printf 'compose-check FAILED: %s\n' "$*" >&2
  exit 1
}
now_ms() { date +%s%3N; }

# ---------------------------------------------------------------------------------------------
# Engine and compose tool

if [ -z "${ENGINE:-}" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    ENGINE=docker
  elif command -v podman >/dev/null 2>&1; then
    ENGINE=podman
  else
    fail "no container engine: install podman (apt-get install podman podman-compose runc) or Docker"
  fi
fi
command -v "$ENGINE" >/dev/null 2>&1 || fail "ENGINE=$ENGINE is not installed"
if [ "$ENGINE" = docker ]; then
  if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
  else
    fail "no compose tool for Docker (docker compose plugin or docker-compose)"
  fi
else
  command -v podman-compose >/dev/null 2>&1 || fail "podman-compose is not installed (apt-get install podman-compose)"
  COMPOSE=(podman-compose)
fi
"$ENGINE" info >/dev/null 2>&1 || fail "$ENGINE does not work here ($ENGINE info fails)"
FILES=(-f deploy/docker-compose.yml)
[ "$ENSEMBLE" = 1 ] && FILES+=(-f deploy/docker-compose.ensemble.yml)
compose() { "${COMPOSE[@]}" "${FILES[@]}" -p "$PROJECT" "$@"; }
say "engine: $ENGINE, compose: ${COMPOSE[*]}, project: $PROJECT$([ "$ENSEMBLE" = 1 ] && echo ', ZooKeeper ensemble')"

image_exists() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------------------------------------
# Images

if [ -z "${IMAGES:-}" ]; then
  if "$ENGINE" pull -q busybox:1.36 >/dev/null 2>&1; then IMAGES=registry; else IMAGES=local; fi
fi
case "$IMAGES" in
  registry)
    BASE_IMAGE=${BASE_IMAGE:-debian:bookworm-slim}
    export ZK_IMAGE=${ZK_IMAGE:-zookeeper:3.8} BACKEND_IMAGE=${BACKEND_IMAGE:-busybox:1.36}
    ;;
  local)
    # Keyed by the host's packages: a changed host makes new images, an unchanged one reuses
    # them (they are only ever this host's files, so reusing them is not relying on luck).
    host_key=$(dpkg-query -W -f '${Package} ${Version}\n' | sha256sum | cut -c1-12)
    BASE_IMAGE=${BASE_IMAGE:-$IMAGE_PREFIX-base:host-$host_key}
    JRE_BASE_IMAGE=$IMAGE_PREFIX-base-jre:host-$host_key
    export ZK_IMAGE=${ZK_IMAGE:-$IMAGE_PREFIX-zookeeper:3.8} BACKEND_IMAGE=${BACKEND_IMAGE:-$IMAGE_PREFIX-busybox:local}
    ;;
  *) fail "IMAGES must be 'registry' or 'local', not '$IMAGES'" ;;
esac
export AGENTS_IMAGE=${AGENTS_IMAGE:-$IMAGE_PREFIX:local}
say "images ($IMAGES): base $BASE_IMAGE, ZooKeeper $ZK_IMAGE, backends $BACKEND_IMAGE, agents $AGENTS_IMAGE"

# A base image like debian:bookworm-slim, made of this host's files ($1: the tag; $2: --jre
# for the JRE and ZooKeeper's jars too).
import_host_base() {
  command -v dpkg-query >/dev/null 2>&1 && command -v python3 >/dev/null 2>&1 ||
    fail "IMAGES=local needs a Debian host (dpkg-query) with python3, or a registry"
  local tar
  tar=$(mktemp "${TMPDIR:-/tmp}/nerve-synapse-rootfs.XXXXXX.tar")
  say "importing $1 from this host's packages${2:+ ($2)}"
  python3 deploy/local-images/host-rootfs.py ${2:+"$2"} "$tar" || { rm -f "$tar"; fail "cannot assemble $1"; }
  "$ENGINE" import --change 'CMD ["bash"]' "$tar" "$1" >/dev/null || { rm -f "$tar"; fail "cannot import $1"; }
  rm -f "$tar"
}

if [ "$IMAGES" = local ]; then
  image_exists "$BASE_IMAGE" || import_host_base "$BASE_IMAGE"
  image_exists "$JRE_BASE_IMAGE" || import_host_base "$JRE_BASE_IMAGE" --jre
  # $1: deploy/local-images/$1.Dockerfile, $2: the tag, $3: its base.
  build_stand_in() {
    say "building $2 (deploy/local-images/$1.Dockerfile on $3)"
    "$ENGINE" build -f "deploy/local-images/$1.Dockerfile" --build-arg "BASE_IMAGE=$3" \
      -t "$2" deploy/local-images >"$LOGS/build-$1.log" 2>&1 ||
      { tail -30 "$LOGS/build-$1.log" >&2; fail "building $2 failed"; }
  }
  build_stand_in zookeeper "$ZK_IMAGE" "$JRE_BASE_IMAGE"
  build_stand_in busybox "$BACKEND_IMAGE" "$BASE_IMAGE"
fi

if [ "$IMAGES_ONLY" = 1 ]; then
  [ "$IMAGES" = registry ] && "$ENGINE" pull -q "$BASE_IMAGE" >/dev/null && "$ENGINE" pull -q "$ZK_IMAGE" >/dev/null
  say "images ready"
  exit 0
fi

PROFILE=${PROFILE:-release}
case "$PROFILE" in
  release) say "building the release binaries and $AGENTS_IMAGE"; cargo build --release --locked --bins -q ;;
  debug) say "building $AGENTS_IMAGE from the debug binaries"; cargo build --locked --bins -q ;;
  *) fail "PROFILE must be 'release' or 'debug', not '$PROFILE'" ;;
esac
# The build context: the two binaries where deploy/Dockerfile expects them, and nothing else
# (no walk through target/). Debug info is left out: the image does not need it.
context=$LOGS/context
mkdir -p "$context/target/release"
for bin in nerve synapse; do
  if command -v objcopy >/dev/null 2>&1; then
    objcopy --strip-debug "target/$PROFILE/$bin" "$context/target/release/$bin"
  else
    cp "target/$PROFILE/$bin" "$context/target/release/$bin"
  fi
done
"$ENGINE" build -f deploy/Dockerfile --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$AGENTS_IMAGE" "$context" \
  >"$LOGS/build-agents.log" 2>&1 || { tail -30 "$LOGS/build-agents.log" >&2; fail "building $AGENTS_IMAGE failed"; }
rm -rf "$context"
size=$("$ENGINE" image inspect --format '{{.Size}}' "$AGENTS_IMAGE")
ok "$AGENTS_IMAGE: $((size / 1000 / 1000)) MB"

# ---------------------------------------------------------------------------------------------
# The rig

free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
held = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)
print(" ".join(str(s.getsockname()[1]) for s in held))
PY
}
read -r SYNAPSE_PORT SYNAPSE_ADMIN_PORT NERVE_ADMIN_PORT ZK_PORT <<<"$(free_ports 4)"
export SYNAPSE_PORT SYNAPSE_ADMIN_PORT NERVE_ADMIN_PORT ZK_PORT

# The container of a compose service (both compose tools set these labels).
container_of() {
  "$ENGINE" ps -aq --filter "label=com.docker.compose.project=$PROJECT" \
    --filter "label=com.docker.compose.service=$1" | head -n1
}

teardown() {
  local rc=$?
  trap - EXIT
  set +e
  if [ "$rc" -ne 0 ]; then
    echo "---- containers ----" >&2
    "$ENGINE" ps -a --filter "label=com.docker.compose.project=$PROJECT" >&2
    for svc in synapse nerve zookeeper zookeeper-2 zookeeper-3 backend-a backend-b; do
      local id
      id=$(container_of "$svc")
      [ -n "$id" ] || continue
      echo "---- logs: $svc (last 40 lines) ----" >&2
      "$ENGINE" logs --tail 40 "$id" >&2 2>&1
    done
  fi
  if [ "$KEEP" = 1 ] && [ "$rc" -eq 0 ]; then
    say "kept running: curl http://127.0.0.1:$SYNAPSE_PORT/  stats http://127.0.0.1:$SYNAPSE_ADMIN_PORT/stats"
    say "tear down: ${COMPOSE[*]} ${FILES[*]} -p $PROJECT down -v"
  else
    say "tearing down"
    compose down -v >/dev/null 2>&1
  fi
  [ "$rc" -eq 0 ] && rm -rf "$LOGS"
  say "total $(elapsed)"
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Leftovers of an interrupted run would hold the names.
compose down -v >/dev/null 2>&1 || true
say "starting the rig (synapse on 127.0.0.1:$SYNAPSE_PORT, admin :$SYNAPSE_ADMIN_PORT, nerve admin :$NERVE_ADMIN_PORT)"
compose up -d >"$LOGS/up.log" 2>&1 || { tail -30 "$LOGS/up.log" >&2; fail "compose up failed"; }

# The backends synapse routes demo-web to, as sorted "host:port" words.
routed() {
  curl -fsS --max-time 2 "http://127.0.0.1:$SYNAPSE_ADMIN_PORT/services" 2>/dev/null |
    python3 -c '
import json, sys
svc = json.load(sys.stdin).get("demo-web", {})
print(" ".join(sorted("{}:{}".format(b["host"], b["port"]) for b in svc.get("backends", []))))'
}

# Fails at once when an agent's container stopped or was restarted (a crash, a bad config).
agents_alive() {
  local svc id state
  for svc in nerve synapse; do
    id=$(container_of "$svc")
    state=$("$ENGINE" inspect --format '{{.State.Status}} {{.RestartCount}}' "$id" 2>/dev/null || echo missing)
    [ "$state" = "running 0" ] || fail "the $svc container is not running as started (status, restarts: $state)"
  done
}

# Polls until synapse routes to exactly "$2" (within $1 seconds).
wait_routes() {
  local limit=$1 want=$2 deadline=$(($(now_ms) + $1 * 1000)) got
  while :; do
    got=$(routed || true)
    [ "$got" = "$want" ] && return 0
    agents_alive
    [ "$(now_ms)" -lt "$deadline" ] || fail "synapse routes to '$got', not '$want', after ${limit}s"
    sleep 0.2
  done
}

# $1 requests through synapse from the host; one answer per line ("error" for a failure).
traffic() {
  for _ in $(seq 1 "$1"); do
    curl -fsS --max-time 3 "http://127.0.0.1:$SYNAPSE_PORT/" 2>/dev/null || echo error
  done
}

count() { grep -cx "$1" <<<"$2" || true; }

t0=$(now_ms)
wait_routes 180 "backend-a:8080 backend-b:8080"
ok "synapse routes to backend-a and backend-b, $(($(now_ms) - t0)) ms after compose up"

say "$REQUESTS requests through synapse from the host"
answers=$(traffic "$REQUESTS")
a=$(count backend-a "$answers") b=$(count backend-b "$answers")
[ $((a + b)) -eq "$REQUESTS" ] || fail "only $((a + b)) of $REQUESTS answered: $(sort <<<"$answers" | uniq -c | tr '\n' ' ')"
[ "$a" -gt 0 ] && [ "$b" -gt 0 ] || fail "not balanced: backend-a $a, backend-b $b"
ok "all answered: backend-a $a, backend-b $b"

say "stats page"
stats=$(curl -fsS --max-time 3 "http://127.0.0.1:$SYNAPSE_ADMIN_PORT/stats")
grep -q '<td>backend-a:8080</td>' <<<"$stats" && grep -q '<td>backend-b:8080</td>' <<<"$stats" ||
  fail "/stats does not show both backends"
ok "/stats lists both backends"

say "killing the backend-a container"
victim=$(container_of backend-a)
[ -n "$victim" ] || fail "no container for backend-a"
t_kill=$(now_ms)
"$ENGINE" kill "$victim" >/dev/null
wait_routes 30 "backend-b:8080"
ok "synapse dropped backend-a $(($(now_ms) - t_kill)) ms after the kill"
answers=$(traffic "$REQUESTS")
b=$(count backend-b "$answers")
[ "$b" -eq "$REQUESTS" ] || fail "after the failover only $b of $REQUESTS reached backend-b"
ok "all $REQUESTS requests answered by backend-b"

say "starting backend-a again"
# (podman without systemd complains here that it cannot schedule healthchecks: harmless.)
"$ENGINE" start "$victim" >"$LOGS/start.log" 2>&1 || { cat "$LOGS/start.log" >&2; fail "cannot start backend-a again"; }
wait_routes 60 "backend-a:8080 backend-b:8080"
ok "synapse routes to both again"

if [ "$ENSEMBLE" = 1 ]; then
  say "killing ZooKeeper server 1 (of 3), then backend-b"
  "$ENGINE" kill "$(container_of zookeeper)" >/dev/null
  "$ENGINE" kill "$(container_of backend-b)" >/dev/null
  wait_routes 60 "backend-a:8080"
  answers=$(traffic "$REQUESTS")
  a=$(count backend-a "$answers")
  [ "$a" -eq "$REQUESTS" ] || fail "with one ZooKeeper server down, only $a of $REQUESTS reached backend-a"
  ok "the change arrived through the two remaining servers; all requests answered by backend-a"
fi

say "compose check passed"
