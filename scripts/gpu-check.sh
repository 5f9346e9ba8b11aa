#!/usr/bin/env bash
# GPU acceptance: on a machine with an NVIDIA GPU, from prebuilt binaries, in about a
# minute (bounded below 4), checks what the monitor does through NVML and how a GPU task runs:
#   gpu           nvidia-smi lists a GPU; without one (no nvidia-smi, or NVML fails) it prints
#                 "no NVIDIA GPU/NVML on this machine" and exits 2, starting nothing.
#   capabilities  the monitor's GpuInfo (model, memory, compute capability, MIG mode, power
#                 limit, driver; reply of hws.workers.<id>.capabilities) equals nvidia-smi's
#                 --query-gpu values; fields this nvidia-smi lacks ([N/A], unsupported) are named.
#   metrics       6 s of hws.metrics.<id>: >= 4 MetricsBatch, each with gpu.util_pct,
#                 gpu.mem_used_mb, gpu.temp_c, gpu.power_w for every GPU (temp and power > 0);
#                 heartbeats count the GPUs.
#   task          `submit --gpu 1` of `gpu_check.py alloc` (1 GiB through libcuda.so.1 by ctypes,
#                 held 10 s): it succeeds, its CUDA_VISIBLE_DEVICES is the index the scheduler
#                 reserved (`explain`), the result's gpu_memory_peak_mb (`tasks ID -o json`) is
#                 >= 900, and `hwsched logs ID` returns its output.
#   faults        the GPU-fault signals the monitor reads through NVML (its "GPU fault signals" log
#                 line per GPU: uncorrected ECC count, pages pending retirement, XID/double-bit ECC
#                 event set): "not_supported" passes (consumer GPU, ECC off) unless nvidia-smi says
#                 ECC is enabled; an NVML error, a GPU without the line, or a GPU fault fails.
#   footprint     the monitor's VmRSS and CPU (utime+stime from /proc) over 20 s idle and during
#                 the task; fails if RSS > 100 MB or idle CPU > 5 % of one core.
# Each check prints a PASS/FAIL/SKIP line with what it saw; then a summary (also in
# $OUT/summary.txt). Exit 0 only if every check that ran passed; 1 otherwise; 2 without a GPU.
# The stack: nats-server on a free loopback port (JetStream in the run directory),
# `hwsched all` (no ClickHouse) and `hwsched monitor --worker-id gpu-check --level $LEVEL`.
#
# Usage:
#   OUT=/tmp/gpu BIN=target/release/hwsched scripts/gpu-check.sh
# Environment (defaults):
#   BIN (target/release/hwsched: cargo build --release -p hwsched), NATS_SERVER
#   (build/venv/bin/nats-server), OUT (unset: a temporary directory, kept on failure; set: every
#   process's log and summary.txt go there), LEVEL (standard: the monitor's default level, which
#   samples GPU utilisation, memory, temperature and power), HOLD_S (10)
#   DRY_RUN_WITHOUT_GPU=1: on a machine without a GPU, run everything anyway (CPU samples in
#   place of GPU ones, the task without --gpu or CUDA): tests this script; GPU checks fail.
set -euo pipefail
export LC_ALL=C
root=$(cd "$(dirname "$0")/.." && pwd); cd "$root"
bin=${BIN:-target/release/hwsched}
nats=${NATS_SERVER:-build/venv/bin/nats-server}
level=${LEVEL:-standard}
hold=${HOLD_S:-10}
dry=${DRY_RUN_WITHOUT_GPU:-}
helper=$root/scripts/gpu_check.py
worker=gpu-check
t_start=$SECONDS

# 1. a GPU, before anything starts
smi_out=""
if ! command -v nvidia-smi >/dev/null; then smi_why="no nvidia-smi on PATH"
elif ! smi_out=$(timeout 60 nvidia-smi -L 2>&1); then smi_why="nvidia-smi -L failed: ${smi_out%%$'\n'*}"
elif [[ $smi_out != *"GPU "* ]]; then smi_why="nvidia-smi -L lists no GPU"
else smi_why=""
fi
if [ -n "$smi_why" ] && [ "$dry" != 1 ]; then
  echo "no NVIDIA GPU/NVML on this machine ($smi_why)"
  if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && echo "no NVIDIA GPU/NVML on this machine ($smi_why)" >"$OUT/summary.txt"; fi
  exit 2
fi
for x in "$bin" "$nats"; do
  [ -x "$x" ] || { echo "not executable: $x (set BIN / NATS_SERVER)" >&2; exit 2; }
done
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

if [ -n "${OUT:-}" ]; then mkdir -p "$OUT"; dir=$(cd "$OUT" && pwd); else dir=$(mktemp -d -t gpu-check.XXXXXX); fi
# a reused OUT starts afresh: empty JetStream store, nothing from the last run
rm -rf "$dir/js" "$dir/cache" "$dir/work" "$dir/notes" "$dir/reserved" "$dir/compute-apps" "$dir/helper.log"
mkdir -p "$dir/work"
: >"$dir/results"
pids=() # nats, all, monitor: stopped in reverse order
bg="" # the background `reserved` poller

stop() { # PID: TERM, then KILL after 10 s
  local i
  kill -TERM "$1" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  [ -z "$bg" ] || stop "$bg"
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop "${pids[i]}"; done
  rm -rf "$dir/js" "$dir/cache" "$dir/work" # state, not logs
  if [ "$rc" != 0 ] || [ -n "${OUT:-}" ]; then echo "logs in $dir"; else rm -rf "$dir"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

result() { # STATUS CHECK TEXT
  printf '%s %s: %s\n' "$1" "$2" "$3" | tee -a "$dir/results"
}
helper_check() { # CHECK ARGS...: runs a helper mode that prints one result line
  local name=$1 out; shift
  out=$(python3 "$helper" "$@" 2>>"$dir/helper.log") || true
  if [[ $out == PASS* || $out == FAIL* || $out == SKIP* ]]; then
    printf '%s\n' "$out" | tee -a "$dir/results"
  else
    result FAIL "$name" "helper failed: $(tail -n 1 "$dir/helper.log" 2>/dev/null)"
  fi
}
wait_for() { # FILE TEXT PID SECONDS: until TEXT is in FILE, while PID lives
  local i
  for ((i = 0; i < $4 * 10; i++)); do
    [[ -f $1 && $(<"$1") == *"$2"* ]] && return 0
    kill -0 "$3" 2>/dev/null || { echo "pid $3 exited before '$2' (see $1)" >&2; return 1; }
    sleep 0.1
  done
  echo "no '$2' in $1 after $4 s" >&2; return 1
}
clk=$(getconf CLK_TCK 2>/dev/null || echo 100)
ticks() { # PID -> utime+stime, clock ticks (0 when gone)
  local s f
  s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
  s=${s##*) }
  read -r -a f <<<"$s"
  echo $((f[11] + f[12]))
}
rss_mb() { # PID -> VmRSS, MB (0 when gone)
  local l
  while read -r l; do
    if [[ $l == VmRSS:* ]]; then l=${l#VmRSS:}; echo $((${l% kB} / 1024)); return; fi
  done < <(cat "/proc/$1/status" 2>/dev/null)
  echo 0
}
now_ms() { # bash 5's EPOCHREALTIME, else GNU date
  if [ -n "${EPOCHREALTIME:-}" ]; then local t=${EPOCHREALTIME/./}; echo $((t / 1000)); else date +%s%3N; fi
}
pct() { # TICKS MS -> percent of one core, one decimal
  local p=$(($1 * 1000000 / (clk * ($2 > 0 ? $2 : 1))))
  printf '%d.%d' $((p / 10)) $((p % 10))
}

if [ -n "$smi_why" ]; then result FAIL gpu "DRY_RUN_WITHOUT_GPU: $smi_why"
else result PASS gpu "$(timeout 60 nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader 2>&1 | tr '\n' ' ')"
fi

start_stack() {
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$nats" -a 127.0.0.1 -p "$port" -js -sd "$dir/js" 2>"$dir/nats.log" & pids+=($!)
  export HWSCHED_NATS_URL=nats://127.0.0.1:$port
  wait_for "$dir/nats.log" "Server is ready" "${pids[0]}" 20 || return 1
  HWSCHED_LOG=info "$bin" all 2>"$dir/all.log" & pids+=($!)
  wait_for "$dir/all.log" "scheduler ready" "${pids[1]}" 30 || return 1
  (cd "$dir/work" && HWSCHED_LOG=info exec "$bin" monitor --worker-id "$worker" --level "$level" \
    --bundle-cache-dir "$dir/cache" 2>"$dir/monitor.log") & pids+=($!)
  mon=${pids[2]}
  wait_for "$dir/monitor.log" "monitor ready" "$mon" 45 || return 1
}

if ! start_stack; then
  for c in capabilities metrics task faults footprint; do result FAIL "$c" "not run: the stack did not start (see $dir/*.log)"; done
else
  # 2. capabilities, compared with nvidia-smi
  ngpus=0 # the GPUs nvidia-smi lists: metrics must come for each
  while read -r l; do if [[ $l == "GPU "* ]]; then ngpus=$((ngpus + 1)); fi; done <<<"$smi_out"
  if python3 "$helper" caps "$HWSCHED_NATS_URL" "$worker" "$dir/capabilities.json" 2>>"$dir/helper.log"; then
    if [ -n "$smi_why" ]; then result FAIL capabilities "dry run: $(tr -d '\n ' <"$dir/capabilities.json" | cut -c1-200)"
    else helper_check capabilities check-caps "$dir/capabilities.json"
    fi
  else
    result FAIL capabilities "no capabilities reply: $(tail -n 1 "$dir/helper.log")"
  fi

  # 3. metrics for 6 s, inside the 20 s idle window of 5.
  t0=$(now_ms); c0=$(ticks "$mon")
  helper_check metrics metrics "$HWSCHED_NATS_URL" "$worker" 6 "$ngpus"
  left=$((20000 - ($(now_ms) - t0)))
  [ "$left" -le 0 ] || sleep "$((left / 1000)).$(printf '%03d' $((left % 1000)))"
  idle_ms=$(($(now_ms) - t0 + 1)); idle_ticks=$(($(ticks "$mon") - c0)); rss_idle=$(rss_mb "$mon")

  # 4. the GPU task
  tid=gpu-check-alloc-$(date +%s)
  gpu_args=(--gpu 1); alloc_args=(--hold "$hold")
  if [ -n "$smi_why" ]; then gpu_args=(); alloc_args+=(--no-cuda); fi
  python3 "$helper" reserved "$bin" "$tid" "$dir" 2>>"$dir/helper.log" & bg=$!
  t0=$(now_ms); c0=$(ticks "$mon")
  submit_rc=0
  timeout 110 "$bin" submit --wait --no-progress -o json --id "$tid" --name gpu-check-alloc \
    ${gpu_args[@]+"${gpu_args[@]}"} --timeout 90 --wait-timeout-s 100 -- python3 "$helper" alloc "${alloc_args[@]}" \
    >"$dir/submit.out" 2>"$dir/submit.err" || submit_rc=$?
  task_ms=$(($(now_ms) - t0 + 1)); task_ticks=$(($(ticks "$mon") - c0)); rss_task=$(rss_mb "$mon")
  stop "$bg"; bg=""
  echo "submit exit $submit_rc" >>"$dir/submit.err"
  timeout 30 "$bin" tasks "$tid" -o json >"$dir/tasks.json" 2>>"$dir/client.log" || true
  logs_rc=0; timeout 30 "$bin" logs "$tid" >"$dir/logs.out" 2>"$dir/logs.err" || logs_rc=$?
  echo "$logs_rc" >"$dir/logs.rc"
  helper_check task check-task "$tid" "$dir"

  # 5. the fault signals, as read at start and swept every interval since (dry run: no GPU, fails)
  helper_check faults check-faults "$dir/monitor.log" "$ngpus"

  # 6. footprint
  idle_pct=$(pct "$idle_ticks" "$idle_ms"); task_pct=$(pct "$task_ticks" "$task_ms")
  rss=$((rss_idle > rss_task ? rss_idle : rss_task))
  text="RSS ${rss_idle} MB idle, ${rss_task} MB after the task; CPU ${idle_pct}% of one core idle ($((idle_ms / 1000)) s), ${task_pct}% during the task ($((task_ms / 1000)) s); level $level"
  if ! kill -0 "$mon" 2>/dev/null; then
    result FAIL footprint "the monitor died (see $dir/monitor.log)"
  elif [ "$rss" -gt 100 ] || [ $((idle_ticks * 1000000 / (clk * idle_ms))) -gt 50 ]; then
    result FAIL footprint "$text (limits: 100 MB, 5%)"
  else
    result PASS footprint "$text"
  fi
  for f in all monitor; do
    n=0
    while read -r l; do
      if [[ $l == *" WARN "* || $l == *" ERROR "* ]]; then n=$((n + 1)); fi
    done <"$dir/$f.log"
    [ "$n" = 0 ] || echo "note: $n WARN/ERROR lines in $dir/$f.log" | tee -a "$dir/notes"
  done
fi

# summary
pass=0 fail=0 skip=0
while read -r s _; do case $s in PASS) pass=$((pass + 1)) ;; FAIL) fail=$((fail + 1)) ;; SKIP) skip=$((skip + 1)) ;; esac; done <"$dir/results"
verdict=PASS; [ "$fail" = 0 ] || verdict=FAIL
{
  echo "== gpu-check summary: $("$bin" --version 2>/dev/null), level $level, $(date -u +%FT%TZ) =="
  cat "$dir/results"
  [ ! -f "$dir/notes" ] || cat "$dir/notes"
  echo "RESULT: $verdict ($pass passed, $fail failed, $skip skipped) in $((SECONDS - t_start)) s"
} >"$dir/summary.txt"
echo; cat "$dir/summary.txt"
[ "$verdict" = PASS ]
