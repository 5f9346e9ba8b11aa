#!/usr/bin/env bash
# Rough end-to-end numbers of the walking skeleton with release binaries:
#   throughput: N trivial tasks (`true`) submitted as one suite, until all finished;
#   latency:    K single tasks submitted one after another with `submit --wait`;
#   footprint:  resident memory of `hwsched all` and `hwsched monitor` afterwards.
# Usage: scripts/bench-skeleton.sh [N] [K] [SLOTS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd); cd "$root"
n=${1:-300}; k=${2:-20}; slots=${3:-2}
. scripts/bench-nats.sh
HWSCHED_LOG=info $bin all 2>"$dir/all.log" & pids+=($!); all_pid=$!
until grep -q "scheduler ready" "$dir/all.log"; do sleep 0.1; done
HWSCHED_LOG=info $bin monitor --worker-id bench --slots "$slots" 2>"$dir/mon.log" & pids+=($!); mon_pid=$!
until grep -q "monitor ready" "$dir/mon.log"; do sleep 0.1; done

python3 - "$n" > "$dir/suite.json" <<'PY'
import json, sys, uuid
run = uuid.uuid4().hex[:6]
print(json.dumps([{"task_id": f"b-{run}-{i}", "command": ["true"], "requirements": {"cpu_cores": 0.01}} for i in range(int(sys.argv[1]))]))
PY
start=$(date +%s.%N)
$bin submit -f "$dir/suite.json" --wait >/dev/null
end=$(date +%s.%N)
python3 -c "print(f'throughput: $n tasks in {$end-$start:.2f} s = {$n/($end-$start):.0f} tasks/s (slots=$slots)')"

lat=()
for i in $(seq 1 "$k"); do
  s=$(date +%s%N); $bin submit --wait -- true >/dev/null; e=$(date +%s%N)
  lat+=($(( (e - s) / 1000000 )))
done
printf '%s\n' "${lat[@]}" | sort -n | awk '{a[NR]=$1} END {printf "latency (submit --wait -- true, incl. CLI start and connect): p50 %d ms, max %d ms over %d runs\n", a[int((NR+1)/2)], a[NR], NR}'
for p in $all_pid $mon_pid; do
  printf '%s RSS %s MB\n' "$(tr '\0' ' ' </proc/$p/cmdline | awk '{print $2}')" "$(awk '/VmRSS/ {printf "%.1f", $2/1024}' /proc/$p/status)"
done
