#!/usr/bin/env bash
# Monitor footprint measured from outside the process: CPU time (utime+stime from
# /proc/<pid>/stat) and RSS (VmRSS, VmHWM) of a release `hwsched monitor` at 1 Hz,
# idle host, over SECONDS (default 60), at LEVEL (default standard).
# Usage: scripts/bench-monitor.sh [SECONDS] [LEVEL]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd); cd "$root"
secs=${1:-60}; level=${2:-standard}
cargo build --release -q -p hwsched
dir=$(mktemp -d); pids=()
trap 'for p in "${pids[@]}"; do kill -TERM $p 2>/dev/null; done; wait; rm -rf "$dir"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
build/venv/bin/nats-server -a 127.0.0.1 -p "$port" -js -sd "$dir/js" 2>"$dir/nats.log" & pids+=($!)
until grep -q "Server is ready" "$dir/nats.log"; do sleep 0.1; done
HWSCHED_NATS_URL=nats://127.0.0.1:$port HWSCHED_LOG=warn target/release/hwsched monitor --worker-id bench --level "$level" & pids+=($!); mon=$!
sleep 5 # start-up (detection, probes) is not steady state
tck=$(getconf CLK_TCK)
a=$(awk '{print $14+$15}' /proc/$mon/stat)
sleep "$secs"
b=$(awk '{print $14+$15}' /proc/$mon/stat)
rss=$(awk '/VmRSS/ {print $2}' /proc/$mon/status); hwm=$(awk '/VmHWM/ {print $2}' /proc/$mon/status)
python3 -c "print(f'monitor, level $level, 1 Hz, {$secs} s: CPU {($b-$a)/$tck/$secs*100:.2f}% of one core, RSS {$rss/1024:.1f} MB (peak {$hwm/1024:.1f} MB)')"
