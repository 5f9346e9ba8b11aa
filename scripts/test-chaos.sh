#!/usr/bin/env bash
# `make test-chaos`: the slow reliability checks beside `make test`: the chaos
# tests marked #[ignore] (10,000 tasks with the active scheduler killed), then
# every fuzz target (scripts/fuzz.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup-env.sh
cargo build --workspace --bins --tests
HWSCHED_TEST_NATS_SERVER="$root/build/venv/bin/nats-server" \
  cargo test -p hwsched-tests --test chaos -- --ignored --nocapture
scripts/fuzz.sh
