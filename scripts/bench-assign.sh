#!/usr/bin/env bash
# Scheduler throughput and latency, submit -> assignment, with release binaries:
# a fresh nats-server 2.15, `hwsched scheduler`, and `hwsched bench assign`
# playing W simulated workers and the producer. Prints the bench's numbers and
# the scheduler's peak resident memory.
# Usage: scripts/bench-assign.sh [WORKERS] [TASKS] [RATE (0 = max)] [SLOTS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd); cd "$root"
workers=${1:-1000}; tasks=${2:-20000}; rate=${3:-0}; slots=${4:-8}
cargo build --release -q -p hwsched
bin=target/release/hwsched
dir=$(mktemp -d); pids=()
trap 'for p in "${pids[@]}"; do kill -TERM $p 2>/dev/null; done; wait; rm -rf "$dir"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
build/venv/bin/nats-server -a 127.0.0.1 -p "$port" -js -sd "$dir/js" 2>"$dir/nats.log" & pids+=($!)
export HWSCHED_NATS_URL=nats://127.0.0.1:$port HWSCHED_LOG=warn
until grep -q "Server is ready" "$dir/nats.log"; do sleep 0.1; done
HWSCHED_LOG=info $bin scheduler 2>"$dir/sched.log" & pids+=($!); sched_pid=$!
until grep -q "scheduler ready" "$dir/sched.log"; do sleep 0.1; done
$bin bench assign --workers "$workers" --tasks "$tasks" --rate "$rate" --slots "$slots" || echo "bench failed (see above)"
printf "scheduler peak RSS %s MB, CPU %s s; nats-server CPU %s s\n" "$(awk "/VmHWM/ {printf \"%.1f\", \$2/1024}" /proc/$sched_pid/status)" "$(awk "{printf \"%.1f\", (\$14+\$15)/100}" /proc/$sched_pid/stat)" "$(awk "{printf \"%.1f\", (\$14+\$15)/100}" /proc/${pids[0]}/stat)"
