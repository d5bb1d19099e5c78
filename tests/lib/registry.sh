#!/usr/bin/env bash
# Fetches, starts and stops a throwaway schema registry with the Confluent Schema Registry API
# (Apicurio Registry 3.3.3, its ccompat v7 API) for tests, benchmarks and the demo.
#
#   registry.sh fetch          the registry's distribution into tests/.registry (idempotent)
#   registry.sh start DIR      start a registry in DIR (created)
#   registry.sh stop DIR       stop it (idempotent)
#   registry.sh restart DIR    stop, then start again on the same ports
#
# The distribution (io.apicurio:apicurio-registry-app:3.3.3:tar.gz:all, a Quarkus fast-jar) comes
# from Maven Central through tests/lib/registry/pom.xml and is unpacked into
# tests/.registry/quarkus-app; the local repository is ~/.m2 unless BW_M2_REPO names another. A
# stamp keyed on the pom's content makes a second fetch a no-op that asks no registry.
#
# 'start' on a fresh DIR picks two free loopback ports (HTTP, management) and starts
# 'java -jar quarkus-run.jar' in the background (pid in DIR/registry.pid, console log in
# DIR/registry.log, JVM temporary files in DIR/tmp). It returns once GET .../subjects answers 200,
# then writes DIR/env (BW_REGISTRY_URL, the Confluent-compatible base URL; BW_REGISTRY_DIR,
# BW_REGISTRY_PID, BW_REGISTRY_LOG) to source and prints its path. 'start' on a DIR whose registry
# was stopped starts it again on the same ports (new ones, with a warning, if another process took
# one meanwhile). Both servers listen on 127.0.0.1 only.
#
# Storage is in memory (H2): a stopped registry loses every subject, schema id and setting, and the
# global compatibility level starts as NONE (Confluent's default is BACKWARD).
#
# Apicurio 3.x needs Java 21+: the Temurin 25 JDK of the build machines unless BW_REGISTRY_JAVA
# names another java.
#
# Environment: BW_REGISTRY_HOME (distribution directory, default tests/.registry), BW_M2_REPO
# (Maven local repository), BW_REGISTRY_JAVA (default /usr/lib/jvm/temurin-25-jdk-amd64/bin/java),
# BW_REGISTRY_HEAP (default 512m), BW_REGISTRY_START_TIMEOUT (seconds, default 90).
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
pom="$top/tests/lib/registry/pom.xml"
home=${BW_REGISTRY_HOME:-$top/tests/.registry}
java=${BW_REGISTRY_JAVA:-/usr/lib/jvm/temurin-25-jdk-amd64/bin/java}
heap=${BW_REGISTRY_HEAP:-512m}
start_timeout=${BW_REGISTRY_START_TIMEOUT:-90}
api=/apis/ccompat/v7

die() { echo "registry: $*" >&2; exit 1; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=server.sh
. "$here/server.sh"

running_pid() { local dir=$1; server_pid "$dir/registry.pid" "-Dbw.registry.dir=$dir "; }

# ---- fetch ------------------------------------------------------------------------------------

# The stamp holds the pom's hash; it is written last, inside the directory that is swapped in
# whole, so a stamp whose hash matches means a complete distribution of that pom.
dist_complete() {
  local stamp="$home/.stamp"
  [ -f "$stamp" ] && [ -f "$home/quarkus-app/quarkus-run.jar" ] || return 1
  [ "$(head -n1 "$stamp")" = "$(sha256sum "$pom" | cut -d' ' -f1)" ]
}

fetch() {
  dist_complete && return 0
  command -v mvn >/dev/null || die "mvn not found: run tests/lib/deps.sh (Debian package 'maven')"
  # unpack into a sibling directory and swap it in, so an interrupted fetch never looks complete
  mkdir -p "$(dirname "$home")"
  fetch_tmp=$(mktemp -d "$home.tmp.XXXXXX")
  chmod 755 "$fetch_tmp"
  trap 'rm -rf "$fetch_tmp" "$fetch_tmp.log"' EXIT
  local repo=()
  [ -n "${BW_M2_REPO:-}" ] && repo=("-Dmaven.repo.local=$BW_M2_REPO")
  echo "registry: fetching Apicurio Registry into $home (Maven Central, cached in ${BW_M2_REPO:-~/.m2})" >&2
  if ! mvn -B -q -Dstyle.color=never "${repo[@]+"${repo[@]}"}" -f "$pom" \
      dependency:copy "-Dbw.registry.download=$fetch_tmp/download" >"$fetch_tmp.log" 2>&1; then
    cat "$fetch_tmp.log" >&2
    die "mvn dependency:copy failed (output above)"
  fi
  local archive="$fetch_tmp/download/apicurio-registry-app.tar.gz"
  [ -f "$archive" ] || die "no apicurio-registry-app.tar.gz after the fetch"
  # the archive's root is the fast-jar layout itself (quarkus-run.jar, app/, lib/, quarkus/)
  mkdir "$fetch_tmp/quarkus-app"
  tar -xzf "$archive" -C "$fetch_tmp/quarkus-app" --no-same-owner \
    || die "could not unpack $archive"
  rm -rf "$fetch_tmp/download"
  [ -f "$fetch_tmp/quarkus-app/quarkus-run.jar" ] || die "no quarkus-run.jar in the archive"
  sha256sum "$pom" | cut -d' ' -f1 >"$fetch_tmp/.stamp"
  rm -rf "$home"
  mv "$fetch_tmp" "$home"
  rm -f "$fetch_tmp.log"
  trap - EXIT
}

# ---- registry ---------------------------------------------------------------------------------


# succeeds if every port given can be bound on 127.0.0.1 now
ports_free() {
  python3 -c '
import socket, sys
for p in sys.argv[1:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", int(p)))
    except OSError:
        sys.exit(1)
    finally:
        s.close()' "$@"
}

# The registry's pid if DIR's registry is running: the pid file names a live (not zombie) process
# whose command line carries this DIR's marker property (a recycled pid is never signalled).

log_tail() {
  local dir=$1
  echo "---- $dir/registry.log (tail) ----" >&2
  tail -n 40 "$dir/registry.log" >&2 2>/dev/null || echo "(no log)" >&2
}

check_java() {
  [ -x "$java" ] || die "no Java 21+ at '$java' (Apicurio Registry 3.x needs one; the build" \
    "machines have the Temurin 25 JDK there): set BW_REGISTRY_JAVA to a Java 21+ 'java'"
  local out v major
  out=$("$java" -version 2>&1) || die "'$java -version' failed: $out"
  # openjdk version "25.0.3" 2026-04-21 LTS (after a "Picked up JAVA_TOOL_OPTIONS" line, if set)
  v=$(sed -n '/ version "/{s/.* version "\([^"]*\)".*/\1/p;q;}' <<<"$out")
  major=${v%%[.-]*}
  [[ $major =~ ^[0-9]+$ ]] && [ "$major" -ge 21 ] \
    || die "'$java' is Java '${v:-unknown}'; Apicurio Registry 3.x needs Java 21+ (set BW_REGISTRY_JAVA)"
}

http_status() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null || true
}

start() {
  local dir=$1
  command -v curl >/dev/null || die "curl not found (run tests/lib/deps.sh)"
  check_java
  fetch

  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local pid
  if pid=$(running_pid "$dir"); then die "a registry is running in '$dir' already (pid $pid)"; fi

  local port mport
  if [ -f "$dir/ports" ]; then
    # a stopped registry: same ports, so clients configured with its URL find it again
    read -r port mport <"$dir/ports"
    if ! ports_free "$port" "$mport"; then
      echo "registry: port $port or $mport is taken by another process: starting on new ports" >&2
      read -r port mport < <(free_ports)
    fi
  else
    [ -z "$(ls -A "$dir")" ] || die "'$dir' is not empty and holds no stopped registry: use a new directory"
    read -r port mport < <(free_ports)
  fi
  echo "$port $mport" >"$dir/ports"
  mkdir -p "$dir/tmp"
  rm -f "$dir/registry.pid" "$dir/env"
  # setsid: a Ctrl-C meant for the test runner does not reach the registry, whose teardown stops
  # it. The pid file appears whole (write, then rename). -Dbw.registry.dir marks the process as
  # this DIR's; java.io.tmpdir keeps Vert.x's file cache out of /tmp.
  setsid bash -c 'echo $$ >"$1.tmp" && mv -f "$1.tmp" "$1"; shift; exec "$@"' _ "$dir/registry.pid" \
    "$java" -Xmx"$heap" -Djava.awt.headless=true "-Dbw.registry.dir=$dir" "-Djava.io.tmpdir=$dir/tmp" \
    -Dquarkus.http.host=127.0.0.1 "-Dquarkus.http.port=$port" \
    -Dquarkus.management.host=127.0.0.1 "-Dquarkus.management.port=$mport" \
    -jar "$home/quarkus-app/quarkus-run.jar" </dev/null >>"$dir/registry.log" 2>&1 &

  # ready = the Confluent API lists subjects (storage is initialised by then)
  local url="http://127.0.0.1:$port$api" deadline=$((SECONDS + start_timeout))
  while [ "$(http_status "$url/subjects")" != 200 ]; do
    if ! running_pid "$dir" >/dev/null && [ -f "$dir/registry.pid" ]; then
      log_tail "$dir"; die "the registry exited during start-up (log above)"
    fi
    if [ $SECONDS -ge $deadline ]; then
      log_tail "$dir"; stop "$dir"
      die "the registry did not answer 200 on $url/subjects after ${start_timeout}s (log above)"
    fi
    sleep 0.1
  done
  pid=$(running_pid "$dir") || { log_tail "$dir"; die "the registry answered but its pid is not running"; }
  cat >"$dir/env.tmp" <<ENV
export BW_REGISTRY_URL='$url'
export BW_REGISTRY_DIR='$dir'
export BW_REGISTRY_PID='$pid'
export BW_REGISTRY_LOG='$dir/registry.log'
ENV
  mv -f "$dir/env.tmp" "$dir/env"
  echo "$dir/env"
}

stop() {
  local dir=$1
  [ -d "$dir" ] || return 0
  dir=$(cd "$dir" && pwd)
  stop_server "$dir/registry.pid" "-Dbw.registry.dir=$dir " "registry:"
}

restart() {
  local dir=$1
  [ -f "$dir/ports" ] || die "'$dir' holds no registry to restart"
  stop "$dir"
  start "$dir"
}

cmd=${1:-}; shift || true
case $cmd in
  fetch) [ $# -eq 0 ] || die "usage: registry.sh fetch"; fetch ;;
  start) [ $# -eq 1 ] || die "usage: registry.sh start DIR"; start "$1" ;;
  stop) [ $# -eq 1 ] || die "usage: registry.sh stop DIR"; stop "$1" ;;
  restart) [ $# -eq 1 ] || die "usage: registry.sh restart DIR"; restart "$1" ;;
  *) die "usage: registry.sh fetch | start DIR | stop DIR | restart DIR" ;;
esac
