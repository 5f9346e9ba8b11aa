#!/usr/bin/env bash
# `make run`: NATS (HWSCHED_NATS_URL if it answers, else a local nats-server
# 2.15), ClickHouse when available, `hwsched all`, a monitor for this
# machine and, where Chromium has WebGPU, a second one for a browser worker;
# submits examples/suite.json and shows placements and results.
# Ctrl-C stops everything cleanly.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
run=build/run
mkdir -p "$run"
bin=target/debug/hwsched
pids=()
started_ch=""

stop_all() {
  trap - INT TERM EXIT
  echo
  echo "stopping..."
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -n "$started_ch" ] && scripts/clickhouse.sh stop "$run/clickhouse"
  echo "stopped. Logs are in $run/."
  exit 0
}
trap stop_all INT TERM EXIT

answers() { # host:port
  local hp=${1#*://}; hp=${hp%%,*}; hp=${hp##*@}
  timeout 2 bash -c "</dev/tcp/${hp%:*}/${hp##*:}" 2>/dev/null
}

wait_log() { # file needle seconds
  for _ in $(seq 1 $(( $3 * 10 ))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "timed out waiting for '$2' in $1:" >&2; tail -20 "$1" >&2; return 1
}

# 1. NATS
if [ -n "${HWSCHED_NATS_URL:-}" ] && answers "$HWSCHED_NATS_URL"; then
  echo "NATS: using $HWSCHED_NATS_URL"
else
  [ -n "${HWSCHED_NATS_URL:-}" ] && echo "NATS at $HWSCHED_NATS_URL does not answer; starting a local one"
  port=4250
  while answers "127.0.0.1:$port"; do port=$((port + 1)); done
  build/venv/bin/nats-server -a 127.0.0.1 -p "$port" -js -sd "$run/nats" >"$run/nats.log" 2>&1 &
  pids+=($!)
  wait_log "$run/nats.log" "Server is ready" 10 || exit 1
  export HWSCHED_NATS_URL="nats://127.0.0.1:$port"
  echo "NATS: started $(build/venv/bin/nats-server --version) at $HWSCHED_NATS_URL (store $run/nats)"
fi

# 2. ClickHouse, when available
if [ -n "${HWSCHED_CLICKHOUSE_URL:-}" ]; then
  echo "ClickHouse: using $HWSCHED_CLICKHOUSE_URL"
elif scripts/clickhouse.sh start "$run/clickhouse" 18223 19100 2>"$run/clickhouse-start.log"; then
  started_ch=1
  export HWSCHED_CLICKHOUSE_URL=http://127.0.0.1:18223
  echo "ClickHouse: started $(curl -s "$HWSCHED_CLICKHOUSE_URL/?query=SELECT%20version()") at $HWSCHED_CLICKHOUSE_URL (data $run/clickhouse)"
else
  echo "ClickHouse: not available ($(tail -1 "$run/clickhouse-start.log")); running without it"
fi

# 3. Services: the control plane in one process, and a monitor for this machine.
export HWSCHED_STARTUP_GRACE_S=${HWSCHED_STARTUP_GRACE_S:-5}
"$bin" all --metrics-listen 127.0.0.1:9464 >"$run/all.log" 2>&1 &
pids+=($!)
wait_log "$run/all.log" "scheduler ready" 30 || exit 1
# the example pytest project runs with the venv's python (pytest is installed there)
PATH="$root/build/venv/bin:$PATH" "$bin" monitor --metrics-listen 127.0.0.1:9465 >"$run/monitor.log" 2>&1 &
pids+=($!)
wait_log "$run/monitor.log" "monitor ready" 30 || exit 1
echo "services: hwsched all (metrics http://127.0.0.1:9464/metrics), hwsched monitor (http://127.0.0.1:9465/metrics)"
# A second kind of worker, when this machine has one for real: a browser with
# WebGPU (headless Chromium; without a GPU its WebGPU runs on SwiftShader, a
# software Vulkan), held to one core by an affinity mask, which the monitor
# reads as its size. The WebGPU check runs first: nothing is declared that
# this machine does not have.
browser=""
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null && adapter=$(python3 examples/webgpu/webgpu_test.py --adapter 2>"$run/webgpu-check.log"); then
  PATH="$root/build/venv/bin:$PATH" taskset -c "$(( $(nproc) - 1 ))" "$bin" monitor --worker-id "$(hostname)-browser" \
    --accelerator webgpu=1 --backend webgpu,wasm --label "browser=chromium,webgpu_adapter=${adapter// /-}" \
    --metrics-listen 127.0.0.1:9466 >"$run/monitor-browser.log" 2>&1 &
  pids+=($!)
  wait_log "$run/monitor-browser.log" "monitor ready" 30 && browser=1
  echo "a browser worker: WebGPU adapter '$adapter', one core (hwsched monitor, http://127.0.0.1:9466/metrics)"
else
  echo "no browser worker: $( [ "$(nproc)" -ge 2 ] || echo "one core only"; tail -1 "$run/webgpu-check.log" 2>/dev/null)"
fi
echo
"$bin" workers
echo
echo "submitting examples/suite.json:"
# a suffix per run: the same suite submitted again is new work, not a duplicate
suffix="-$(date +%H%M%S)"
# a task the scheduler refuses, with the reason (a suite file with one is refused whole, before sending)
"$bin" submit --id "demo-invalid$suffix" --name "rejected: negative memory" --memory=-1 -- true
"$bin" submit -f examples/suite.json --id-suffix="$suffix" --wait --wait-timeout-s 120
if [ -n "$browser" ]; then
  echo
  echo "placed by hardware: a WebGPU test can only run in the browser, a test asking for 2 cores only on the"
  echo "full-size worker (examples/webgpu/suite.json):"
  "$bin" submit -f examples/webgpu/suite.json --id-suffix="$suffix" --wait --wait-timeout-s 120 --no-progress
  echo "why the WebGPU test went where it did (hwsched explain demo-webgpu-matmul$suffix):"
  "$bin" explain "demo-webgpu-matmul$suffix" | head -12 || true
  echo
  echo "the learned model changing a placement: a 2-process kernel that fits both workers runs once on"
  echo "each (pinned with --hardware-class); on the one-core browser it takes about twice as long, so"
  echo "submitted freely it now goes to the full-size worker, for the runtime the learner predicts there:"
  kernel=(python3 -c "import multiprocessing as m; print('checksum', sum(m.Pool(2).map(sum, [range(0, 4 * 10**7), range(4 * 10**7, 8 * 10**7)])))")
  for class in accel:webgpu cpu; do
    "$bin" submit --id "demo-kernel-${class%%:*}$suffix" --name "vision: parallel kernel" --test-type vision_kernel \
      --cpu 1 --hardware-class "$class" --wait --no-progress -- "${kernel[@]}" | grep -E "finished"
  done
  sleep 2.5 # the learner publishes its model every 2 s
  "$bin" model | grep -E "^WORKLOAD|parallel kernel" || true
  "$bin" submit --id "demo-kernel-free$suffix" --name "vision: parallel kernel" --test-type vision_kernel --cpu 1 \
    --wait --no-progress -- "${kernel[@]}" | grep -E "assigned to|finished"
  "$bin" explain "demo-kernel-free$suffix" | sed -n '/^decision/,$p' || true
fi
echo
echo "a real test job: examples/pytest-project packed as a bundle (uploaded once, by digest), its pytest"
echo "suite in 3 shards, logs streamed, per-test results in one JUnit report, a plot brought back:"
pytest_id="demo-pytest$suffix"
"$bin" submit --bundle examples/pytest-project --shards 3 --id "$pytest_id" --name "tinyml: pytest" \
  --test-type pytest --wait --logs --no-progress --junit-xml report.xml --outputs 'out/*.svg' \
  --junit "$run/junit.xml" -- python -m pytest -q --junitxml=report.xml
echo "the JUnit report for CI ($run/junit.xml):"
grep -o '<testsuite [^>]*>' "$run/junit.xml" | head -3
echo "shard 0's stored log (hwsched logs $pytest_id--s0):"
"$bin" logs "$pytest_id--s0" | tail -3
echo "artifacts (hwsched artifacts ID --get DIR):"
for s in 0 1 2; do "$bin" artifacts "$pytest_id--s$s" --get "$run/artifacts/s$s"; done
echo
echo "a test that needs more memory than it asked for (64 MB): killed by the kernel at its attempt's cgroup"
echo "limit and retried with 1.5x the memory until it fits (without cgroups, e.g. not root, it just runs):"
"$bin" submit --id "demo-oom$suffix" --name "memory hog" --memory 64 --wait --no-progress -- \
  python3 -c "b = b'x' * (100 << 20); print('touched', len(b) >> 20, 'MB')" | grep -E "retried|finished" || true
"$bin" explain "demo-oom$suffix" | sed -n '/^attempts/,/^decision/p' | grep -v '^decision' || true
echo
echo "one task's history, read back from the streams (hwsched tasks demo-memory$suffix):"
"$bin" tasks "demo-memory$suffix" || true
echo
sleep 2.5 # the learner publishes its model every 2 s
echo "what the learner has learned so far (hwsched model):"
"$bin" model || true
echo
echo "alerts firing now (hwsched alerts; built-in rules, hwsched silence to mute one):"
"$bin" alerts || true
echo
if [ -n "${HWSCHED_CLICKHOUSE_URL:-}" ]; then
  echo "latest runs recorded in ClickHouse (database ${HWSCHED_CLICKHOUSE_DATABASE:-hwsched}):"
  curl -s "$HWSCHED_CLICKHOUSE_URL/" --data-binary \
    "SELECT task_id, attempt, worker_id, status, round(duration_s, 2) AS seconds, memory_peak_mb FROM ${HWSCHED_CLICKHOUSE_DATABASE:-hwsched}.task_runs FINAL ORDER BY finished_at DESC, task_id LIMIT 10 FORMAT PrettyCompactNoEscapes"
  echo "their placement decisions (rank 0 = the chosen worker; scheduler_decisions):"
  curl -s "$HWSCHED_CLICKHOUSE_URL/" --data-binary \
    "SELECT task_id, worker_id, policy, round(cost, 3) AS cost, round(completion_s, 1) AS expected_s, candidates_total AS candidates FROM ${HWSCHED_CLICKHOUSE_DATABASE:-hwsched}.scheduler_decisions FINAL WHERE rank = 0 ORDER BY time DESC, task_id LIMIT 10 FORMAT PrettyCompactNoEscapes"
  echo "the pytest job's test cases, one row each (test_cases; Grafana: slowest and most failing by hardware):"
  curl -s "$HWSCHED_CLICKHOUSE_URL/" --data-binary \
    "SELECT task_id, name, status, round(duration_s, 3) AS seconds, hardware_class FROM ${HWSCHED_CLICKHOUSE_DATABASE:-hwsched}.test_cases WHERE task_id LIKE '$pytest_id%' ORDER BY task_id, name LIMIT 12 FORMAT PrettyCompactNoEscapes"
  curl -s "$HWSCHED_CLICKHOUSE_URL/" --data-binary \
    "SELECT count() AS metric_rows, uniqExact(metric) AS metrics FROM ${HWSCHED_CLICKHOUSE_DATABASE:-hwsched}.hw_metrics FORMAT PrettyCompactNoEscapes"
fi
echo
echo "hwsched is running. From another shell, e.g.:"
echo "  export HWSCHED_NATS_URL=$HWSCHED_NATS_URL"
echo "  $bin submit --wait -- python3 -c 'print(42)'"
echo "  $bin quarantine list                          # workers failing more than their tests predict"
echo "  $bin watch                       # workers and tasks, refreshing"
echo "  $bin drain WORKER --reason demo  # WORKER as hwsched workers shows it; then $bin undrain WORKER"
echo "Following events (Ctrl-C stops everything):"
"$bin" events &
pids+=($!)
wait
