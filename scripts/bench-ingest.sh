#!/usr/bin/env bash
# Recorder ingest rate, metric rows per second, with release binaries: a fresh
# nats-server 2.15, a fresh loopback ClickHouse (Debian's 18.16 here) and
# `hwsched recorder`; `hwsched bench ingest` publishes ROWS samples in batches
# of 20 and waits until ClickHouse holds them all. Then the same volume as a
# backlog: published while the recorder is stopped, timed from its start.
# Usage: scripts/bench-ingest.sh [ROWS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd); cd "$root"
rows=${1:-1000000}
. scripts/bench-nats.sh
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http=$(free); tcp=$(free)
scripts/clickhouse.sh start "$dir/ch" "$http" "$tcp"
trap 'for p in "${pids[@]}"; do kill -TERM $p 2>/dev/null; done; wait; scripts/clickhouse.sh stop "$dir/ch"; rm -rf "$dir"' EXIT
export HWSCHED_CLICKHOUSE_URL=http://127.0.0.1:$http
echo "ClickHouse $(curl -s "$HWSCHED_CLICKHOUSE_URL/?query=SELECT%20version()"), nats-server $(build/venv/bin/nats-server --version)"
$bin schema migrate >/dev/null
$bin recorder 2>"$dir/recorder.log" & recorder=$!; pids+=($recorder)
sleep 1
echo "live: recorder running while publishing"
$bin bench ingest --rows "$rows"
kill -TERM $recorder; wait $recorder 2>/dev/null || true
echo "backlog: published with the recorder stopped, then the recorder started"
run=backlog$$
$bin bench ingest --rows "$rows" --run "$run" --no-wait
start=$(date +%s.%N)
$bin recorder 2>>"$dir/recorder.log" & pids+=($!)
$bin bench ingest --rows "$rows" --run "$run" --wait-only >/dev/null
python3 -c "import sys; t=float(sys.argv[2])-float(sys.argv[1]); print(f'backlog of {int(sys.argv[3])} rows stored in {t:.2f} s from the recorder start: {int(sys.argv[3])/t:.0f} rows/s')" "$start" "$(date +%s.%N)" "$rows"
printf "recorder peak RSS %s MB\n" "$(awk '/VmHWM/ {printf "%.1f", $2/1024}' /proc/${pids[-1]}/status)"
