#!/usr/bin/env bash
# The benchmark command: synapse beside HAProxy (and beside no proxy), on this machine.
#
#   bench/run.sh                                  # every default phase (about 10 minutes)
#   bench/run.sh --only keepalive,close,rate,redis  # the data plane beside HAProxy
#   bench/run.sh --only fleet                     # the fleet phase (N up to 2000: slow)
#   bench/run.sh --help                           # phases and knobs (rounds, durations, CPUs)
#
# Phases: keepalive, close (wrk -t1 -c32, closed loop: req/s, latency, and each proxy's CPU per
# request: its utime + stime from /proc/<pid>/stat over the run / requests, also user time
# alone), rate (open loop at 50 % of HAProxy's keep-alive maximum: p50/p99/p99.9 and the
# latency added over direct), redis, propagation, churn, cost, h2; count, fleet and scrape only
# when named. Medians over rounds with their range; synapse / HAProxy ratios per round.
#
#   bench/run.sh --only scrape --baseline-synapse /path/to/older/synapse
#
# scrape: p50/p99/p99.9 of HTTP keep-alive at a fixed rate through a synapse of 200 services x 10
# backends while /metrics is scraped every 100 ms, beside not scraped (docs/benchmark.md).
#
# Installs what is missing (Debian packages: nginx, haproxy, wrk, h2load, redis, ZooKeeper), builds
# the release binaries, then runs the driver (bench/src/main.rs): the load generators on one
# CPU, proxies and backends on another (BENCH_CLIENT_CPUS / BENCH_SERVER_CPUS, taskset lists;
# default 0 and 1). Prints one table and writes bench/results.json (--out to change).
# Not part of the test suite.
#
# Counting the work per request (for whoever changes the data path):
#
#   bench/run.sh --only count                     # allocations + system calls per request
#
# builds synapse a second time with `--features count-alloc` (a counting global allocator;
# counts served as JSON on `GET /debug/alloc` of the admin port) into
# target/release/synapse-count-alloc, then, for TCP and HTTP, keep-alive and a connection per
# request: heap allocations, reallocations and bytes per request (counter deltas over a wrk
# run / requests), and system calls per request by name, synapse beside HAProxy
# (`strace -c -f -p PID` over another wrk run). By hand: build with the feature, start
# synapse, `curl 127.0.0.1:3422/debug/alloc` before and after your load.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for pair in nginx:nginx-light haproxy:haproxy wrk:wrk h2load:nghttp2-client redis-server:redis-server redis-benchmark:redis-tools taskset:util-linux strace:strace; do
  bin=${pair%%:*} pkg=${pair#*:}
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  # The packages start their services; the benchmark runs its own.
  for svc in nginx haproxy redis-server; do
    command -v systemctl >/dev/null 2>&1 && $sudo systemctl stop "$svc" 2>/dev/null || true
  done
fi
deploy/zk-local.sh --install-only
# The fleet phase's plot draws its text with DejaVu Sans (no system font lookup).
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq fonts-dejavu-core >/dev/null || true
fi
# The fleet phase holds one ZooKeeper session (a socket) per watcher, up to 2000 and more,
# and the ZooKeeper servers it starts inherit the limit.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# The count phase's synapse: the same code with a counting allocator. Cargo keeps both
# feature sets' artefacts, so switching back and forth rebuilds nothing once both exist.
if [[ " $* " =~ --only[=\ ]([a-z,]*,)?count(,|\ ) ]]; then
  cargo build --release --locked -p synapse --features count-alloc
  cp target/release/synapse target/release/synapse-count-alloc
fi
cargo build --release --locked -p nerve -p synapse -p bench
client=${BENCH_CLIENT_CPUS:-0}
server=${BENCH_SERVER_CPUS:-1}
# The driver (and the ZooKeeper it starts) stays on the client CPUs; it pins the rest itself.
exec taskset -c "$client" target/release/bench --client-cpus "$client" --server-cpus "$server" "$@"
