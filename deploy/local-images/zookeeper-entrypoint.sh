#!/bin/sh
# Writes /conf/zoo.cfg from the variables the official `zookeeper` image reads, then runs
# ZooKeeper in the foreground (as that image does).
set -eu
: "${ZOO_DATA_DIR:=/data}" "${ZOO_DATA_LOG_DIR:=/datalog}" "${ZOO_TICK_TIME:=2000}"
: "${ZOO_INIT_LIMIT:=5}" "${ZOO_SYNC_LIMIT:=2}" "${ZOO_MAX_CLIENT_CNXNS:=60}"
: "${ZOO_STANDALONE_ENABLED:=true}" "${ZOO_ADMINSERVER_ENABLED:=true}"
: "${ZOO_4LW_COMMANDS_WHITELIST:=srvr}" "${ZOO_MY_ID:=1}"
: "${ZOO_SERVERS:=server.1=localhost:2888:3888;2181}"
cfg=/conf/zoo.cfg
{
  echo "dataDir=$ZOO_DATA_DIR"
  echo "dataLogDir=$ZOO_DATA_LOG_DIR"
  echo "tickTime=$ZOO_TICK_TIME"
  echo "initLimit=$ZOO_INIT_LIMIT"
  echo "syncLimit=$ZOO_SYNC_LIMIT"
  echo "maxClientCnxns=$ZOO_MAX_CLIENT_CNXNS"
  echo "standaloneEnabled=$ZOO_STANDALONE_ENABLED"
  echo "admin.enableServer=$ZOO_ADMINSERVER_ENABLED"
  echo "4lw.commands.whitelist=$ZOO_4LW_COMMANDS_WHITELIST"
  for server in $ZOO_SERVERS; do echo "$server"; done
  # Newline-separated extra settings, as in the official image.
  if [ -n "${ZOO_CFG_EXTRA:-}" ]; then printf '%s\n' $ZOO_CFG_EXTRA; fi
} >"$cfg"
echo "$ZOO_MY_ID" >"$ZOO_DATA_DIR/myid"
exec java -Xmx256m \
  -cp "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar" \
  org.apache.zookeeper.server.quorum.QuorumPeerMain "$cfg"
