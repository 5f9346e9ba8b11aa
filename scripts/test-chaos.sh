#!/usr/bin/env bash
# `make test-chaos`: the slow reliability checks beside `make test`: the tests
# marked #[ignore] (10,000 tasks with the active scheduler killed; ClickHouse
# down for HWSCHED_CHAOS_OUTAGE_S, default 180, under ingest), then every fuzz
# target for FUZZ_SECONDS each (scripts/fuzz.sh). CI runs it after `make test`
# with shorter times (.ci/run).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup-env.sh
# The targets make test builds (--workspace --tests): a narrower selection
# (-p, or --test NAME) unifies features differently and rebuilds dependencies.
# Only tests/tests/chaos.rs and clickhouse_outage.rs have #[ignore] tests.
cargo build --workspace --bins --tests
HWSCHED_TEST_NATS_SERVER="$root/build/venv/bin/nats-server" \
  cargo test --workspace --tests -- --ignored --nocapture
scripts/fuzz.sh
