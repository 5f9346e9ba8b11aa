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
# --workspace, as make test builds: one package alone would unify features
# differently and rebuild dependencies
cargo build --workspace --bins --tests
HWSCHED_TEST_NATS_SERVER="$root/build/venv/bin/nats-server" \
  cargo test --workspace --test chaos --test clickhouse_outage -- --ignored --nocapture
scripts/fuzz.sh
