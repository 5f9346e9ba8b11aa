#!/usr/bin/env bash
# Scheduler throughput and latency, submit -> assignment, with release binaries:
# a fresh nats-server 2.15, `hwsched scheduler`, and `hwsched bench assign`
# playing W simulated workers and the producer. Prints the bench's numbers and
# the scheduler's peak resident memory.
# Usage: scripts/bench-assign.sh [WORKERS] [TASKS] [RATE (0 = max)] [SLOTS]
# SCHED_WRAP runs the scheduler under a profiler, e.g. SCHED_WRAP="heaptrack -o
# build/sched" (the RSS and CPU printed are then the wrapper's, not the scheduler's).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd); cd "$root"
workers=${1:-1000}; tasks=${2:-20000}; rate=${3:-0}; slots=${4:-8}
. scripts/bench-nats.sh
HWSCHED_LOG=info ${SCHED_WRAP:-} $bin scheduler 2>"$dir/sched.log" & pids+=($!); sched_pid=$!
until grep -q "scheduler ready" "$dir/sched.log"; do sleep 0.1; done
$bin bench assign --workers "$workers" --tasks "$tasks" --rate "$rate" --slots "$slots" || echo "bench failed (see above)"
printf "scheduler peak RSS %s MB, CPU %s s; nats-server CPU %s s\n" "$(awk "/VmHWM/ {printf \"%.1f\", \$2/1024}" /proc/$sched_pid/status)" "$(awk "{printf \"%.1f\", (\$14+\$15)/100}" /proc/$sched_pid/stat)" "$(nats_cpu)"
