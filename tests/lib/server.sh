# server.sh — what tests/lib/kafka.sh and tests/lib/registry.sh share about the background JVM
# each runs (sourced, not run). A server is a pid file plus a mark: a piece of the command line
# that tells the pid still names our process and not a later one that reused the number.
#
#   free_ports                      two free loopback ports, held open together so they differ
#   server_pid PIDFILE MARK         the running pid (exit 1 when not running, or a zombie)
#   stop_server PIDFILE MARK WHAT   SIGTERM, 30 s, then SIGKILL; removes the pid file
#
# The sourcing script defines die().

free_ports() {
  python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(" ".join(str(x.getsockname()[1]) for x in s))
for x in s: x.close()'
}

server_pid() {
  local pidfile=$1 mark=$2 pid state
  [ -f "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ "$state" != Z ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -F -- "$mark" >/dev/null || return 1
  echo "$pid"
}

stop_server() {
  local pidfile=$1 mark=$2 what=$3 pid i
  if ! pid=$(server_pid "$pidfile" "$mark"); then rm -f "$pidfile"; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  # a clean shutdown takes a second or two; give it 30 s before killing
  for ((i = 0; i < 300; i++)); do
    server_pid "$pidfile" "$mark" >/dev/null || { rm -f "$pidfile"; return 0; }
    sleep 0.1
  done
  echo "$what $pid ignored SIGTERM for 30 s: killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    server_pid "$pidfile" "$mark" >/dev/null || { rm -f "$pidfile"; return 0; }
    sleep 0.1
  done
  die "$what $pid survived SIGKILL"
}
