# breakwater-relay built from this checkout (relay/), on Debian 12 like the rest of the project.
# Build context: the top of the repository (docker-compose.yml sets it).

FROM debian:bookworm-slim AS build
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends \
        build-essential pkg-config librdkafka-dev libpq-dev libinih-dev libmicrohttpd-dev libjansson-dev \
        libavro-dev libcurl4-openssl-dev; \
    rm -rf /var/lib/apt/lists/*
COPY relay/ /usr/src/breakwater/relay/
# clean first: a binary or objects from the host must never stand in for this build
RUN make -C /usr/src/breakwater/relay clean && make -C /usr/src/breakwater/relay WERROR=1

FROM debian:bookworm-slim
# the runtime libraries of the build stage's -dev packages, and CA certificates for TLS to Kafka,
# PostgreSQL or the schema registry
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends \
        librdkafka1 libpq5 libinih1 libmicrohttpd12 libjansson4 libavro23 libcurl4 \
        ca-certificates; \
    rm -rf /var/lib/apt/lists/*; \
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin breakwater; \
    install -d -o breakwater -g breakwater /var/lib/breakwater
COPY --from=build /usr/src/breakwater/relay/breakwater-relay /usr/local/bin/breakwater-relay
COPY relay/breakwater-relay.conf.example /usr/share/doc/breakwater-relay/
USER breakwater
# /metrics and /healthz, when http.listen binds it (the default 127.0.0.1:9187 is unreachable from
# outside the container: set http.listen = 0.0.0.0:9187)
EXPOSE 9187
# SIGTERM drains (waits up to 30 s for Kafka's acknowledgements), then exits 0; give it the time
# (docker-compose.yml: stop_grace_period)
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/breakwater-relay"]
CMD ["--config=/etc/breakwater/relay.conf"]
