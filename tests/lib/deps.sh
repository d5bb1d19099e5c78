#!/usr/bin/env bash
# Installs the system packages Breakwater builds and tests with (Debian 12), the Python test venv,
# the jars of the test Kafka broker (tests/lib/kafka.sh fetch) and the test schema registry's
# distribution (tests/lib/registry.sh fetch), both from Maven Central. Idempotent: a second run on
# a ready machine installs nothing and asks no registry.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

pkgs=(
  build-essential pkg-config clang-format valgrind curl
  postgresql-15 postgresql-server-dev-15 libpq-dev postgresql-15-wal2json
  librdkafka-dev libavro-dev libcurl4-openssl-dev libinih-dev libmicrohttpd-dev libjansson-dev
  kcat docker-compose
  openjdk-17-jre-headless maven
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep 'install ok installed' >/dev/null || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Debian package starts a 'main' cluster on 5432 that nothing here uses; our tests and the demo
# start their own on sockets in temporary directories.

venv="$here/.venv"
req="$here/requirements.txt"
stamp="$venv/.requirements.stamp"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if [ ! -f "$stamp" ] || ! cmp -s "$req" "$stamp"; then
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
  cp "$req" "$stamp"
fi

# the test broker's jars (tests/.kafka-libs); a no-op while the pom is unchanged
"$here/lib/kafka.sh" fetch

# the test schema registry (Apicurio, tests/.registry); a no-op while the pom is unchanged. It runs
# on Java 21+, which Debian 12 does not package: the build machines carry the Temurin 25 JDK.
"$here/lib/registry.sh" fetch
registry_java=${BW_REGISTRY_JAVA:-/usr/lib/jvm/temurin-25-jdk-amd64/bin/java}
[ -x "$registry_java" ] || echo "deps: warning: no Java 21+ at $registry_java: the schema registry" \
  "tests cannot start one (set BW_REGISTRY_JAVA to a Java 21+ 'java')" >&2
