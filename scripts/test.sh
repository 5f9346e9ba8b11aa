#!/usr/bin/env bash
# `make test`: start a loopback ClickHouse (Debian's 18.16, installed if
# missing) with data under build/, build, run the Rust suite (each test spawns
# its own nats-server 2.15) and the Python suite (chdb, producer example), then
# stop ClickHouse.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
ch_dir=build/clickhouse-test
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Free ports unless given: another ClickHouse (or a second checkout's tests) may hold the usual ones.
ch_http=${CH_HTTP_TEST:-$(free_port)}
ch_tcp=${CH_TCP_TEST:-$(free_port)}

scripts/setup-env.sh
# A fresh server every run: test databases never pile up.
scripts/clickhouse.sh stop "$ch_dir" || true
rm -rf "$ch_dir"
scripts/clickhouse.sh start "$ch_dir" "$ch_http" "$ch_tcp"
trap 'scripts/clickhouse.sh stop "$ch_dir"' EXIT
echo "ClickHouse $(curl -s "http://127.0.0.1:$ch_http/?query=SELECT%20version()") on 127.0.0.1:$ch_http"

export HWSCHED_TEST_CLICKHOUSE_URL="http://127.0.0.1:$ch_http"
export HWSCHED_TEST_NATS_SERVER="$root/build/venv/bin/nats-server"
export HWSCHED_BIN="$root/target/debug/hwsched"

cargo build --workspace --bins --tests
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee build/cargo-test.log
rust_rc=${PIPESTATUS[0]}
# The core end-to-end tests again on the oldest nats-server hwsched supports
# (the rest of the suite runs on 2.15). Their binaries as built above, run from
# their package's directory as cargo does: `cargo test --test e2e` would select
# fewer packages, unify features differently and rebuild dependencies (a minute).
oldest="$root/build/nats-oldest/bin/nats-server"
echo "end-to-end tests on the oldest supported server, $("$oldest" --version):"
oldest_bins=$(cargo test --workspace --no-run --message-format=json 2>/dev/null | build/venv/bin/python -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    t = m.get("target", {})
    if m.get("reason") == "compiler-artifact" and m.get("executable") and t.get("kind") == ["test"] and t.get("name") in ("e2e", "bundles"):
        print(m["executable"])')
oldest_rc=0
[ "$(echo "$oldest_bins" | grep -c .)" = 2 ] || { echo "e2e and bundles test binaries not found"; oldest_rc=1; }
: > build/cargo-test-oldest.log
for bin in $oldest_bins; do
  (cd tests && HWSCHED_TEST_NATS_SERVER="$oldest" "$bin") 2>&1 | tee -a build/cargo-test-oldest.log
  [ "${PIPESTATUS[0]}" = 0 ] || oldest_rc=1
done
build/venv/bin/python -m pytest -q tests/python
py_rc=$?
set -e

passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' build/cargo-test.log | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' build/cargo-test.log | awk '{s+=$1} END {print s+0}')
echo "rust: ${passed} passed, ${failed} failed; on the oldest nats-server: $(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' build/cargo-test-oldest.log | awk '{s+=$4} END {print s+0}') passed"
[ "$rust_rc" = 0 ] && [ "$oldest_rc" = 0 ] && [ "$py_rc" = 0 ]
