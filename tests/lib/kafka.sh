#!/usr/bin/env bash
# Fetches, starts and stops a throwaway single-node Apache Kafka broker (KRaft, broker and controller
# in one JVM) for tests, benchmarks and the demo.
#
#   kafka.sh fetch                               the broker's jars into tests/.kafka-libs (idempotent)
#   kafka.sh start DIR [--set key=value]...      start a broker in DIR (created)
#   kafka.sh stop DIR                            stop it (idempotent)
#   kafka.sh restart DIR [--set key=value]...    stop, then start again on the same ports and data
#
# The jars come from Maven Central through tests/lib/kafka/pom.xml (the Apache download site is not
# reachable from every build machine); the local repository is ~/.m2 unless BW_M2_REPO names
# another. A stamp keyed on the pom's content makes a second fetch a no-op that asks no registry.
#
# 'start' on a fresh DIR picks two free loopback ports (broker, controller), writes
# DIR/server.properties and DIR/log4j.properties, formats DIR/data and starts 'java kafka.Kafka' in
# the background (pid in DIR/kafka.pid, log in DIR/kafka.log, JVM output in DIR/kafka.out). It
# returns once a real client (kcat -L) sees the broker, then writes DIR/env (BW_KAFKA_BOOTSTRAP,
# BW_KAFKA_DIR, BW_KAFKA_PID, BW_KAFKA_LOG) to source and prints its path. 'start' on a DIR whose
# broker was stopped starts it again on the same ports and data without formatting. Every listener
# is on 127.0.0.1 and nothing else is opened. --set lines are appended to server.properties (the last
# value of a key wins), so they also apply on a restart.
#
# Environment: BW_KAFKA_LIBS (jar directory, default tests/.kafka-libs), BW_M2_REPO (Maven local
# repository), BW_KAFKA_HEAP (default 512m), BW_KAFKA_START_TIMEOUT (seconds, default 60).
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
pom="$top/tests/lib/kafka/pom.xml"
libs=${BW_KAFKA_LIBS:-$top/tests/.kafka-libs}
heap=${BW_KAFKA_HEAP:-512m}
start_timeout=${BW_KAFKA_START_TIMEOUT:-60}

die() { echo "kafka: $*" >&2; exit 1; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=server.sh
. "$here/server.sh"

running_pid() { local dir=$1; server_pid "$dir/kafka.pid" "kafka.Kafka $dir/server.properties"; }

# ---- fetch ------------------------------------------------------------------------------------

# The stamp holds the pom's hash on its first line, then the name of every jar the fetch copied:
# the set is complete when the hash matches and the directory holds exactly those jars (a stray
# jar would land on the class path).
libs_complete() {
  local stamp="$libs/.stamp"
  [ -f "$stamp" ] || return 1
  [ "$(head -n1 "$stamp")" = "$(sha256sum "$pom" | cut -d' ' -f1)" ] || return 1
  [ "$(tail -n +2 "$stamp")" = "$(jars "$libs")" ]
}

jars() { (cd "$1" && LC_ALL=C ls -1 -- *.jar 2>/dev/null) || true; }

fetch() {
  libs_complete && return 0
  command -v mvn >/dev/null || die "mvn not found: run tests/lib/deps.sh (Debian package 'maven')"
  # copy into a sibling directory and swap it in, so an interrupted fetch never looks complete
  mkdir -p "$(dirname "$libs")"
  fetch_tmp=$(mktemp -d "$libs.tmp.XXXXXX")
  trap 'rm -rf "$fetch_tmp" "$fetch_tmp.log"' EXIT
  local repo=()
  [ -n "${BW_M2_REPO:-}" ] && repo=("-Dmaven.repo.local=$BW_M2_REPO")
  echo "kafka: copying the broker's jars into $libs (Maven Central, cached in ${BW_M2_REPO:-~/.m2})" >&2
  if ! mvn -B -q -Dstyle.color=never "${repo[@]+"${repo[@]}"}" -f "$pom" \
      dependency:copy-dependencies "-Dbw.kafka.libs=$fetch_tmp" >"$fetch_tmp.log" 2>&1; then
    cat "$fetch_tmp.log" >&2
    die "mvn dependency:copy-dependencies failed (output above)"
  fi
  compgen -G "$fetch_tmp/kafka_2.13-*.jar" >/dev/null || die "no kafka_2.13 jar after the fetch"
  { sha256sum "$pom" | cut -d' ' -f1; jars "$fetch_tmp"; } >"$fetch_tmp/.stamp"
  rm -rf "$libs"
  mv "$fetch_tmp" "$libs"
  rm -f "$fetch_tmp.log"
  trap - EXIT
}

# ---- broker -----------------------------------------------------------------------------------


# The broker's pid if DIR's broker is running: the pid file names a live (not zombie) process
# whose command line is a kafka.Kafka of this DIR (a recycled pid is never signalled).

log_tail() {
  local dir=$1
  echo "---- $dir/kafka.log (tail) ----" >&2
  tail -n 40 "$dir/kafka.log" >&2 2>/dev/null || echo "(no log)" >&2
  if [ -s "$dir/kafka.out" ]; then
    echo "---- $dir/kafka.out (tail) ----" >&2
    tail -n 20 "$dir/kafka.out" >&2
  fi
}

# sets JAVA to the java command line shared by the tools and the broker
set_java() {
  local dir=$1
  JAVA=(java -Xmx"$heap" -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true
    "-Dlog4j.configuration=file:$dir/log4j.properties" -cp "$libs/*")
}

write_config() {
  local dir=$1 port=$2 cport=$3
  cat >"$dir/server.properties" <<PROPS
# written by tests/lib/kafka.sh: a single-node KRaft broker for tests, on loopback only
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
# one replica of everything
default.replication.factor=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
min.insync.replicas=1
# internal topics with one partition are created in a blink (the defaults are 50)
offsets.topic.num.partitions=1
transaction.state.log.num.partitions=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
num.partitions=1
# the log cleaner looks for compactable topics every half second (default 15 s), so that tests
# of compacted topics see compaction happen
log.cleaner.backoff.ms=500
PROPS
  cat >"$dir/log4j.properties" <<PROPS
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$dir/kafka.log
log4j.appender.file.Append=true
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.org.apache.kafka.clients=WARN
PROPS
}

append_sets() {
  local dir=$1; shift
  [ $# -gt 0 ] || return 0
  echo "# --set (the last value of a key wins)" >>"$dir/server.properties"
  printf '%s\n' "$@" >>"$dir/server.properties"
}

# parses [--set key=value]... into SETS
parse_sets() {
  SETS=()
  while [ $# -gt 0 ]; do
    case $1 in
      --set)
        [ $# -ge 2 ] || die "--set needs key=value"
        [[ $2 == ?*=* ]] || die "bad --set '$2' (expected key=value)"
        SETS+=("$2"); shift ;;
      *) die "unknown argument '$1' (expected --set key=value)" ;;
    esac
    shift
  done
}

start() {
  local dir=$1; shift
  parse_sets "$@"
  command -v java >/dev/null || die "java not found on PATH (OpenJDK 17: run tests/lib/deps.sh)"
  command -v kcat >/dev/null || die "kcat not found (run tests/lib/deps.sh)"
  fetch

  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local pid
  if pid=$(running_pid "$dir"); then die "a broker is running in '$dir' already (pid $pid)"; fi

  local port cport
  if [ -f "$dir/ports" ]; then
    # a stopped broker: same ports, same data, no format
    read -r port cport <"$dir/ports"
    append_sets "$dir" "${SETS[@]+"${SETS[@]}"}"
  else
    [ -z "$(ls -A "$dir")" ] || die "'$dir' is not empty and holds no stopped broker: use a new directory"
    read -r port cport < <(free_ports)
    write_config "$dir" "$port" "$cport"
    append_sets "$dir" "${SETS[@]+"${SETS[@]}"}"
    set_java "$dir"
    # short-lived tools: the JIT's first tier is enough and starts faster
    local cluster_id
    cluster_id=$("${JAVA[@]}" -XX:TieredStopAtLevel=1 kafka.tools.StorageTool random-uuid 2>>"$dir/kafka.out") \
      || { log_tail "$dir"; die "StorageTool random-uuid failed"; }
    "${JAVA[@]}" -XX:TieredStopAtLevel=1 kafka.tools.StorageTool format -t "$cluster_id" \
      -c "$dir/server.properties" >>"$dir/kafka.out" 2>&1 \
      || { log_tail "$dir"; die "StorageTool format failed"; }
    echo "$port $cport" >"$dir/ports"
  fi
  # setsid: a Ctrl-C meant for the test runner does not reach the broker, whose teardown stops it
  set_java "$dir"
  rm -f "$dir/kafka.pid"
  # the pid file appears whole (write, then rename): an empty one, seen between the shell's
  # open and its write, read as "the broker exited during start-up"
  setsid bash -c 'echo $$ >"$1.tmp" && mv -f "$1.tmp" "$1"; shift; exec "$@"' _ "$dir/kafka.pid" \
    "${JAVA[@]}" kafka.Kafka "$dir/server.properties" </dev/null >>"$dir/kafka.out" 2>&1 &

  # ready = a real client gets metadata listing this broker. The broker binds its port when it
  # starts serving; a client that tried earlier sits out its whole timeout, so kcat waits for that.
  local deadline=$((SECONDS + start_timeout)) meta
  while :; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null \
        && meta=$(kcat -b "127.0.0.1:$port" -L -m 5 2>/dev/null) \
        && [[ $meta == *"broker 1 at 127.0.0.1:$port"* ]]; then
      break
    fi
    if ! running_pid "$dir" >/dev/null && [ -f "$dir/kafka.pid" ]; then
      log_tail "$dir"; die "the broker exited during start-up (log above)"
    fi
    if [ $SECONDS -ge $deadline ]; then
      log_tail "$dir"; stop "$dir"; die "the broker was not ready after ${start_timeout}s (log above)"
    fi
    sleep 0.1
  done
  pid=$(running_pid "$dir") || { log_tail "$dir"; die "the broker answered but its pid is not running"; }
  cat >"$dir/env" <<ENV
export BW_KAFKA_BOOTSTRAP='127.0.0.1:$port'
export BW_KAFKA_DIR='$dir'
export BW_KAFKA_PID='$pid'
export BW_KAFKA_LOG='$dir/kafka.log'
ENV
  echo "$dir/env"
}

stop() {
  local dir=$1
  [ -d "$dir" ] || return 0
  dir=$(cd "$dir" && pwd)
  stop_server "$dir/kafka.pid" "kafka.Kafka $dir/server.properties" "kafka: broker"
}

restart() {
  local dir=$1; shift
  [ -f "$dir/ports" ] || die "'$dir' holds no broker to restart"
  parse_sets "$@"
  stop "$dir"
  start "$dir" "$@"
}

cmd=${1:-}; shift || true
case $cmd in
  fetch) [ $# -eq 0 ] || die "usage: kafka.sh fetch"; fetch ;;
  start) [ $# -ge 1 ] || die "usage: kafka.sh start DIR [--set key=value]..."; start "$@" ;;
  stop) [ $# -eq 1 ] || die "usage: kafka.sh stop DIR"; stop "$1" ;;
  restart) [ $# -ge 1 ] || die "usage: kafka.sh restart DIR [--set key=value]..."; restart "$@" ;;
  *) die "usage: kafka.sh fetch | start DIR [--set key=value]... | stop DIR | restart DIR [--set key=value]..." ;;
esac
