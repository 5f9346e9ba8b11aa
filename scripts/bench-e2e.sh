#!/usr/bin/env bash
# Producer -> result through the whole system, release binaries: a fresh
# nats-server 2.15, a private ClickHouse (Debian's, under build/), each service
# as its own process (scheduler, learner, alerting, recorder) and MONITORS real
# monitors with SLOTS slots running `true`; then `hwsched bench e2e`, which
# samples the resident memory of every one of them.
# Usage:
#   scripts/bench-e2e.sh                       throughput: 20,000 tasks as fast as they finish
#   RATE=150 DURATION=600 scripts/bench-e2e.sh soak: 150 tasks/s for 10 minutes
# Environment: RATE (0 = max), TASKS, DURATION (s), MONITORS (2), SLOTS (8).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd); cd "$root"
rate=${RATE:-0}; monitors=${MONITORS:-2}; slots=${SLOTS:-8}
. scripts/bench-nats.sh
ch_dir="$dir/clickhouse"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ch_http=$(free_port)
scripts/clickhouse.sh start "$ch_dir" "$ch_http" "$(free_port)"
trap 'for p in "${pids[@]}"; do kill -TERM $p 2>/dev/null; done; wait; scripts/clickhouse.sh stop "$ch_dir"; rm -rf "$dir"' EXIT
export HWSCHED_CLICKHOUSE_URL=http://127.0.0.1:$ch_http HWSCHED_CLICKHOUSE_DATABASE=bench
watch=(--pid "nats-server=${pids[0]}")
start() { # NAME ARGS...: starts `hwsched ARGS` and watches its memory
  local name=$1; shift
  HWSCHED_LOG=info $bin "$@" 2>"$dir/$name.log" & pids+=($!)
  watch+=(--pid "$name=$!")
}
start scheduler scheduler
until grep -q "scheduler ready" "$dir/scheduler.log"; do sleep 0.1; done
start learner learner
start alerting alerting
start recorder recorder
for i in $(seq 1 "$monitors"); do
  start "monitor$i" monitor --worker-id "bench-m$i" --slots "$slots"
  until grep -q "monitor ready" "$dir/monitor$i.log"; do sleep 0.1; done
done
until grep -q "ClickHouse schema ready" "$dir/recorder.log"; do sleep 0.1; done
size=(--tasks "${TASKS:-20000}")
[ -n "${DURATION:-}" ] && size=(--duration-s "$DURATION")
$bin bench e2e --rate "$rate" "${size[@]}" "${watch[@]}" || { echo "bench failed (see above); logs:"; tail -3 "$dir"/*.log; }
sleep 3  # the recorder flushes every second
rows=$(curl -s "http://127.0.0.1:$ch_http/?query=SELECT%20count()%20FROM%20bench.task_runs")
echo "task_runs rows in ClickHouse: $rows"
