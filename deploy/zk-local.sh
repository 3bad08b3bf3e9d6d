#!/usr/bin/env bash
# Gets a local ZooKeeper running for the demo and for manual tests.
#
#   deploy/zk-local.sh                 install if missing, start on 127.0.0.1:${ZK_PORT:-2181}, wait until ready
#   deploy/zk-local.sh --install-only  only make sure ZooKeeper (Debian package, or Docker) is available
#   deploy/zk-local.sh stop            stop the ZooKeeper this script started
#
# Uses the Debian package (java + /usr/share/java/zookeeper.jar), installing it with apt-get
# when missing. When neither is possible but a Docker engine answers, runs the `zookeeper`
# service of deploy/docker-compose.yml instead.
set -euo pipefail

ZK_PORT=${ZK_PORT:-2181}
ZK_DIR=${ZK_DIR:-${TMPDIR:-/tmp}/nerve-synapse-zk-$ZK_PORT}
JAR=/usr/share/java/zookeeper.jar
here=$(cd "$(dirname "$0")" && pwd)

have_debian_zk() { command -v java >/dev/null 2>&1 && [ -f "$JAR" ]; }
have_docker() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

install() {
  have_debian_zk && return 0
  if command -v apt-get >/dev/null 2>&1; then
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "zk-local: installing ZooKeeper from Debian packages" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq zookeeper default-jre-headless >/dev/null
    have_debian_zk && return 0
  fi
  have_docker && return 0
  echo "zk-local: cannot get ZooKeeper: no apt-get and no Docker engine. Install ZooKeeper 3.8 (java + zookeeper.jar) by hand." >&2
  exit 1
}

ready() {
  local out
  out=$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$ZK_PORT; printf srvr >&3; cat <&3" 2>/dev/null) || return 1
  grep -q "Mode:" <<<"$out"
}

start() {
  install
  if ready; then
    echo "zk-local: ZooKeeper already answers on 127.0.0.1:$ZK_PORT"
    return 0
  fi
  if have_debian_zk; then
    mkdir -p "$ZK_DIR/data"
    cat >"$ZK_DIR/zoo.cfg" <<CFG
tickTime=500
dataDir=$ZK_DIR/data
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
minSessionTimeout=1000
maxSessionTimeout=30000
admin.enableServer=false
4lw.commands.whitelist=*
CFG
    nohup java -Xmx256m -XX:+UseSerialGC -cp "$JAR:/usr/share/java/slf4j-simple.jar" \
      org.apache.zookeeper.server.quorum.QuorumPeerMain "$ZK_DIR/zoo.cfg" >"$ZK_DIR/zookeeper.log" 2>&1 &
    echo $! >"$ZK_DIR/pid"
  else
    ZK_PORT=$ZK_PORT docker compose -f "$here/docker-compose.yml" up -d zookeeper
  fi
  for _ in $(seq 1 120); do
    if ready; then
      echo "zk-local: ZooKeeper ready on 127.0.0.1:$ZK_PORT (data and log in $ZK_DIR)"
      return 0
    fi
    sleep 0.25
  done
  echo "zk-local: ZooKeeper did not become ready; log tail:" >&2
  tail -20 "$ZK_DIR/zookeeper.log" >&2 || true
  exit 1
}

stop() {
  if [ -f "$ZK_DIR/pid" ]; then
    local pid
    pid=$(cat "$ZK_DIR/pid")
    kill "$pid" 2>/dev/null || true
    # Wait for the JVM to exit (and free the port) before returning; SIGKILL after 10 s.
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "zk-local: ZooKeeper (pid $pid) still running after 10 s; killing it" >&2
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$ZK_DIR/pid"
    echo "zk-local: stopped"
  elif have_docker; then
    docker compose -f "$here/docker-compose.yml" stop zookeeper
  fi
}

case "${1:-start}" in
  --install-only) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 [--install-only|start|stop]" >&2; exit 2 ;;
esac
