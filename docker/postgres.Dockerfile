# PostgreSQL 15 with the breakwater output plugin built from this checkout (decoder/).
# Build context: the top of the repository (docker-compose.yml sets it).
#
# Pinned to a minor that has output_plugin_libraries, which appeared in 15.19: the compose file
# lists the plugin in that setting, and an older minor refuses to start on the unknown setting.
# 15.20 is the minor the project is tested on (Debian 12's postgresql-15). A pinned minor, rather
# than the moving "15-bookworm" tag, can never turn out older than 15.19 on a stale mirror or
# cache. The "-bookworm" suffix matters: the bare "15" tags of the official image follow Debian
# trixie now.
FROM postgres:15.20-bookworm

COPY decoder/ /usr/src/breakwater/decoder/

# Build and install in one layer, then remove the build dependencies again so that the image
# gains only breakwater.so. The headers come from the PGDG repository the image installs
# PostgreSQL from; pg_config is the server's own (postgresql-client-15), not libpq-dev's wrapper.
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends build-essential "postgresql-server-dev-$PG_MAJOR"; \
    pgc="/usr/lib/postgresql/$PG_MAJOR/bin/pg_config"; \
    make -C /usr/src/breakwater/decoder PG_CONFIG="$pgc" clean; \
    make -C /usr/src/breakwater/decoder PG_CONFIG="$pgc"; \
    make -C /usr/src/breakwater/decoder PG_CONFIG="$pgc" install; \
    apt-get purge -y --auto-remove build-essential "postgresql-server-dev-$PG_MAJOR"; \
    rm -rf /var/lib/apt/lists/* /usr/src/breakwater; \
    test -f "/usr/lib/postgresql/$PG_MAJOR/lib/breakwater.so"
