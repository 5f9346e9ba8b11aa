# hwsched — the two commands that matter: `make run` and `make test`.
SHELL := /bin/bash
CH_DIR_TEST := build/clickhouse-test

.PHONY: all build run test test-rust test-python lint fmt clean env stop-clickhouse fuzz test-chaos

all: build

## Install the local tools (nats-server 2.15, chdb, pytest, nats-py) into build/venv.
env:
	@scripts/setup-env.sh

build:
	cargo build --workspace --bins

## Start everything (NATS, ClickHouse when available, all services, a monitor),
## submit a sample suite and show placements and results. Ctrl-C stops it all.
run: env build
	@scripts/run.sh

## Install and start what the tests need, run the whole suite, stop what was started.
test: env
	@scripts/test.sh

## Fuzz every decoder of external input for FUZZ_SECONDS (60) each: task requests,
## suite files, alert rules, worker messages, configuration values, JUnit reports (nightly + cargo-fuzz).
fuzz:
	@scripts/fuzz.sh

## The slow reliability checks beside `make test`: the slow chaos tests, then `make fuzz`.
test-chaos: env
	@scripts/test-chaos.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

stop-clickhouse:
	@scripts/clickhouse.sh stop $(CH_DIR_TEST)

clean:
	@scripts/clickhouse.sh stop $(CH_DIR_TEST) || true
	rm -rf build target
