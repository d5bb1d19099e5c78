# Breakwater top-level build: delegates to each part and stops at the first failure.
#   make          build the decoder and the relay
#   make install  install the output plugin into the server's pkglibdir
#   make deps     install system packages (idempotent; Debian)
#   make test     install deps, build, and run every test suite
#   make demo     a live tour: PostgreSQL, Kafka and the relay, a workload, events as they arrive
#                 (make demo FORMAT=avro: Avro rows, with a schema registry)
#   make bench    run the benchmarks (prints ratios, never fails on speed)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PG_CONFIG ?= pg_config
export PG_CONFIG

.PHONY: all decoder relay install deps test check-format format bench demo clean

all: decoder relay

decoder:
	$(MAKE) -C decoder

relay:
	$(MAKE) -C relay WERROR=1

install: decoder
	$(MAKE) -C decoder install

deps:
	tests/lib/deps.sh

test: deps
	$(MAKE) all
	$(MAKE) check-format
	tests/run-all.sh

check-format:
	tests/lib/check-format.sh

format:
	tests/lib/check-format.sh --fix

# FORMAT=avro: rows as Avro, with a schema registry beside Kafka
demo: deps all
	relay/demo.sh $(if $(filter avro,$(FORMAT)),--avro)

bench: deps all
	bench/decode/run.sh
	bench/e2e/run.sh
	bench/storm/run.sh
	bench/snapshot/run.sh

clean:
	$(MAKE) -C decoder clean
	$(MAKE) -C relay clean
	rm -rf tests/.venv tests/.out
