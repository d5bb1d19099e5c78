#!/usr/bin/env bash
# Starts and stops a throwaway PostgreSQL 15 cluster for tests, benchmarks and the demo.
#
#   pgcluster.sh start DIR [--tcp] [--plugin PATH] [--set name=value]...
#   pgcluster.sh stop DIR
#   pgcluster.sh restart DIR   (fast shutdown, then start on the same port and data)
#
# The cluster lives in DIR (created), listens on a socket in DIR (and on 127.0.0.1 with --tcp, on a
# free port), has wal_level=logical, loads the breakwater plugin from a copy of PATH (default: this
# checkout's decoder/breakwater.so) via dynamic_library_path, and lists it in
# output_plugin_libraries where the server has that setting (15.19+). DIR/env holds the libpq
# environment (PGHOST, PGPORT, PGUSER, PGDATABASE) to source. Run as root, the server runs as the
# 'postgres' user, since PostgreSQL refuses to run as root.
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
pg_bindir=$(${PG_CONFIG:-pg_config} --bindir)

die() { echo "pgcluster: $*" >&2; exit 1; }

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start() {
  local dir=$1; shift
  local tcp=0 plugin="$top/decoder/breakwater.so" sets=()
  while [ $# -gt 0 ]; do
    case $1 in
      --tcp) tcp=1 ;;
      --plugin) plugin=$2; shift ;;
      --set) sets+=("$2"); shift ;;
      *) die "unknown argument '$1' (expected --tcp, --plugin PATH or --set name=value)" ;;
    esac
    shift
  done
  [ -f "$plugin" ] || die "plugin '$plugin' not found: run 'make' first"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ -e "$dir/data" ] && die "'$dir/data' exists already: stop it and remove '$dir' first"
  mkdir -p "$dir/lib"
  cp "$plugin" "$dir/lib/breakwater.so"
  [ "$(id -u)" -eq 0 ] && chown -R postgres: "$dir"
  # postgres must be able to reach DIR through its parents
  [ "$(id -u)" -eq 0 ] && { as_owner test -x "$dir" || die "user postgres cannot enter '$dir': use a directory under /tmp"; }

  as_owner "$pg_bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; die "initdb failed"; }

  local port; port=$(free_port)
  {
    echo "port = $port"
    echo "unix_socket_directories = '$dir'"
    if [ $tcp -eq 1 ]; then echo "listen_addresses = '127.0.0.1'"; else echo "listen_addresses = ''"; fi
    echo "wal_level = logical"
    echo "max_replication_slots = 20"
    echo "max_wal_senders = 20"
    echo "dynamic_library_path = '$dir/lib:\$libdir'"
    echo "fsync = off"
    echo "full_page_writes = off"
    echo "logging_collector = off"
    echo "log_min_messages = warning"
    echo "log_line_prefix = '%m [%p] %q%a '"
    if "$pg_bindir/postgres" --describe-config 2>/dev/null | grep '^output_plugin_libraries' >/dev/null; then
      echo "output_plugin_libraries = 'pgoutput, test_decoding, breakwater, wal2json'"
    fi
    for s in "${sets[@]+"${sets[@]}"}"; do
      echo "${s%%=*} = '${s#*=}'"
    done
  } >>"$dir/data/postgresql.conf"
  # replication connections over the socket (and loopback with --tcp), trusted: a test cluster
  echo "local replication all trust" >>"$dir/data/pg_hba.conf"
  echo "host replication all 127.0.0.1/32 trust" >>"$dir/data/pg_hba.conf"

  as_owner "$pg_bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
    || { cat "$dir/server.log" >&2; die "server did not start (log above)"; }
  cat >"$dir/env" <<ENV
export PGHOST='$dir'
export PGPORT='$port'
export PGUSER=postgres
export PGDATABASE=postgres
export BW_PGDATA='$dir/data'
ENV
  echo "$dir/env"
}

stop() {
  local dir=$1
  [ -d "$dir/data" ] || return 0
  as_owner "$pg_bindir/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
}

restart() {
  local dir=$1
  [ -d "$dir/data" ] || die "no cluster in '$dir'"
  as_owner "$pg_bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -m fast -w -t 60 restart >/dev/null \
    || { tail -50 "$dir/server.log" >&2; die "server did not restart (log above)"; }
}

cmd=${1:-}; shift || true
case $cmd in
  start) [ $# -ge 1 ] || die "usage: pgcluster.sh start DIR [options]"; start "$@" ;;
  stop) [ $# -eq 1 ] || die "usage: pgcluster.sh stop DIR"; stop "$1" ;;
  restart) [ $# -eq 1 ] || die "usage: pgcluster.sh restart DIR"; restart "$1" ;;
  *) die "usage: pgcluster.sh start DIR [--tcp] [--plugin PATH] [--set name=value]... | stop DIR | restart DIR" ;;
esac
