#!/usr/bin/env bash
# Short-test workloads on hwsched and on Ray, side by side (one after the
# other, on this machine), with release binaries. Each hwsched variant gets a
# fresh stack: nats-server 2.15 on a free loopback port with JetStream in a
# temporary directory, `hwsched all` (scheduler, learner, alerting, recorder;
# no ClickHouse) with HWSCHED_POLICY=<variant>, and two monitors: m1 with 6
# slots, m2 with 2 slots declaring ACCEL_KIND=2. Tasks ask for cpu_cores 0.25,
# so all 8 slots run at once even on a 2-core machine. Ray runs the same
# workloads with scripts/bench_burst_ray.py: ray.init(num_cpus=8,
# resources={ACCEL_KIND: 2}), one @ray.remote(num_cpus=1) task per command.
# Both sides warm up first (16 `true` tasks on hwsched, 32 on Ray); within a
# variant the runs share one stack, so the learner has seen the earlier runs.
#
# Workloads (WORKLOADS selects, in this order; RUNS repeats each):
#   burst    N_BURST x `true` in one suite, `submit --wait -f`: tasks_per_s =
#            N / wall, wall from the submit command's start to its exit (every
#            result in). CPU ms per task over the burst, from /proc/PID/stat:
#            <proc>_self = utime+stime (fields 14-15) of `hwsched all` (all),
#            each monitor (m1, m2), nats-server (nats); <proc>_children =
#            cutime+cstime (16-17), the waited-for children: for monitors the
#            test commands themselves; client = the submit CLI's user+sys;
#            total = all of them. Resolution: one clock tick (10 ms) per
#            process over the whole burst. Ray: the same over the driver's
#            live process tree (driver, gcs_server, raylet, workers (children
#            = the test commands), other = Ray's agents and monitors).
#            NATS msgs per task over the burst, from nats-server's monitoring
#            port: in/out (/varz in_msgs, out_msgs: every message published
#            to and delivered by the server, acks and replies included),
#            js_api (JetStream API calls), stored_<STREAM> (messages the
#            stream kept: a KV put, an event, a result) and stored_total.
#   sleep    N_SLEEP x `sleep SLEEP_S`: wall_s; ideal_s = N*S/8; efficiency =
#            ideal/wall.
#   latency  N_LAT x `true`, one at a time, submit -> result:
#            p50/p95/p99_ms: a connected NATS client (nats-py from build/venv)
#            publishing to hws.tasks.submit with Hws-Reply-To and waiting for
#            the "finished" reply (Ray: one ray.get(f.remote()) at a time);
#            e2e_p50/p99_ms: `hwsched bench e2e --window 1` (reads results
#            from HWS_RESULTS; it prints whole milliseconds, p50/p99 only);
#            cli_p50/p95_ms: one `hwsched submit --wait -- true` process per
#            task (includes process start and NATS connect).
#   accel    N_ACCEL x `sleep ACCEL_SLEEP_S`, every other one requiring
#            accelerators {ACCEL_KIND: 1} (only m2 has them, 2 units): wall_s;
#            ideal_s = max(accel tasks*S/2, N*S/8); placement.plain_on.m2 =
#            plain tasks that took one of the accelerator worker's 2 slots.
# placement.<worker> counts where tasks finished; failed = failed + rejected
# + lost (no result before WAIT_TIMEOUT_S).
#
# Output: a markdown table per workload (min-max over RUNS per variant and
# Ray; ratio columns are ratios of the medians: hwsched/Ray and
# <policy>/least-loaded; for tasks/s higher is better, for s, ms and CPU lower
# is better) on stdout, and every raw number in OUT_JSON.
#
# Usage:
#   scripts/bench-burst.sh                      full size (several minutes)
#   RUNS=1 N_BURST=200 N_SLEEP=40 N_LAT=20 N_ACCEL=40 scripts/bench-burst.sh   smoke
#   SKIP_RAY=1 VARIANTS=hwsched WORKLOADS="burst latency" scripts/bench-burst.sh
# Environment (defaults):
#   BIN (target/release/hwsched; not built here: cargo build --release -p hwsched)
#   NATS_SERVER (build/venv/bin/nats-server, from `make env`)
#   NATS_PYTHON (build/venv/bin/python, with nats-py; without it no p50/p95/p99)
#   VARIANTS ("hwsched least-loaded": scheduler policies, HWSCHED_POLICY)
#   WORKLOADS ("burst sleep latency accel"), RUNS (3)
#   N_BURST (2000), N_SLEEP (500), SLEEP_S (0.2), N_LAT (200),
#   N_ACCEL (400), ACCEL_SLEEP_S (0.2), ACCEL_KIND (tpu)
#   WAIT_TIMEOUT_S (600): longest one workload run may wait for its results
#   SKIP_RAY (unset; 1 skips Ray), RAY_VENV (build/bench-venv: created with
#     `pip install ray==RAY_VERSION` (2.60.0) when it has no ray),
#     RAY_AUTH_MODE (disabled: no token written to ~/.ray)
#   PERF_DIR (unset; a directory: each burst run is profiled system-wide with
#     `perf record -a -g`, one VARIANT-burst-rN.data file per run; the profile
#     costs CPU, so tasks/s from such a run is not comparable)
#   OUT_JSON (build/bench-burst.json), KEEP_LOGS (unset; 1 keeps the log
#     directory, which is also kept, and its logs' tails printed, on failure)
set -euo pipefail
export LC_ALL=C  # EPOCHREALTIME and printf use '.' as the decimal point
root=$(cd "$(dirname "$0")/.." && pwd); cd "$root"

bin=${BIN:-target/release/hwsched}
nats=${NATS_SERVER:-build/venv/bin/nats-server}
nats_python=${NATS_PYTHON:-build/venv/bin/python}
variants=${VARIANTS:-hwsched least-loaded}
export WORKLOADS=${WORKLOADS:-burst sleep latency accel} RUNS=${RUNS:-3}
export N_BURST=${N_BURST:-2000} N_SLEEP=${N_SLEEP:-500} SLEEP_S=${SLEEP_S:-0.2} N_LAT=${N_LAT:-200}
export N_ACCEL=${N_ACCEL:-400} ACCEL_SLEEP_S=${ACCEL_SLEEP_S:-0.2} ACCEL_KIND=${ACCEL_KIND:-tpu}
wait_timeout=${WAIT_TIMEOUT_S:-600}
ray_venv=${RAY_VENV:-build/bench-venv}; ray_version=${RAY_VERSION:-2.60.0}
out_json=${OUT_JSON:-build/bench-burst.json}
clk_tck=$(getconf CLK_TCK)

for w in $WORKLOADS; do
  case $w in burst|sleep|latency|accel) ;; *) echo "unknown workload $w (burst sleep latency accel)" >&2; exit 2 ;; esac
done
[ -x "$bin" ] || { echo "no hwsched binary at $bin: cargo build --release -p hwsched, or set BIN" >&2; exit 2; }
[ -x "$nats" ] || { echo "no nats-server at $nats: make env, or set NATS_SERVER" >&2; exit 2; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

dir=$(mktemp -d -t bench-burst.XXXXXX)
results=$dir/results.jsonl; : >"$results"
pids=()          # the running hwsched stack, in start order
declare -A procs # name -> pid: all, m1, m2, nats
ray_pid=""

stop_stack() {
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  for i in "${pids[@]}"; do wait "$i" 2>/dev/null || true; done
  pids=()
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_stack
  if [ -n "$ray_pid" ]; then kill -TERM "$ray_pid" 2>/dev/null || true; wait "$ray_pid" 2>/dev/null || true; fi
  if [ "$rc" != 0 ]; then
    echo "bench-burst failed (exit $rc); last log lines:" >&2
    find "$dir" -maxdepth 2 -name '*.log' -size +0 | sort | while read -r f; do
      echo "== ${f#"$dir"/}" >&2; tail -n 8 "$f" >&2
    done
    echo "logs kept in $dir" >&2
  elif [ "${KEEP_LOGS:-}" = 1 ]; then
    echo "logs kept in $dir" >&2
  else
    rm -rf "$dir"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Helper (stdlib Python; the `latency` mode needs nats-py): suites, summaries,
# the connected latency client, the report.
cat >"$dir/bb.py" <<'PY'
import asyncio, json, os, re, statistics, sys, time, uuid

def pct(xs, p):  # nearest rank above, as hwsched's bench
    import math
    return xs[max(0, math.ceil(len(xs) * p) - 1)] if xs else 0.0

def gen(workload, prefix, n, kind, *cmd):
    tasks = []
    for i in range(int(n)):
        t = {"task_id": f"{prefix}-{i:05d}", "name": workload, "test_type": f"bench-{workload}",
             "command": list(cmd), "requirements": {"cpu_cores": 0.25}}
        if workload == "accel" and i % 2 == 0:  # every other one needs the accelerator
            t["task_id"] = f"{prefix}-acc-{i:05d}"
            t["requirements"]["accelerators"] = {kind: 1}
        tasks.append(t)
    json.dump({"tasks": tasks}, sys.stdout)

def summarize(path, n, wall, times, accel_worker):
    """The submit CLI's JSON lines -> counts and placements."""
    n, wall = int(n), float(wall)
    fin, rejected = {}, set()
    for line in open(path):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("update") == "finished":
            fin[r["taskId"]] = r
        elif r.get("update") == "rejected":
            rejected.add(r.get("taskId"))
    ok = sum(1 for r in fin.values() if r.get("succeeded"))
    m = {"n": n, "wall_s": round(wall, 4), "succeeded": ok, "failed": n - ok,
         "rejected": len(rejected), "lost": n - len(fin) - len(rejected),
         "retried": sum(1 for r in fin.values() if int(r.get("attempts", 1)) > 1), "placement": {}}
    acc = {"accel_on": {}, "plain_on": {}}
    for tid, r in fin.items():
        w = r.get("workerId", "?")
        m["placement"][w] = m["placement"].get(w, 0) + 1
        if "-acc-" in tid:
            acc["accel_on"][w] = acc["accel_on"].get(w, 0) + 1
        else:
            acc["plain_on"][w] = acc["plain_on"].get(w, 0) + 1
    if accel_worker:
        acc["plain_on"].setdefault(accel_worker, 0)
        m["placement"] = acc
    if times:  # "wall user sys" of the submit CLI
        _, u, s = (float(x) for x in open(times).read().split()[-3:])
        m["client_cpu_s"] = round(u + s, 3)
    return m

def nats_snap(port):
    """nats-server's message counters (/varz) and the messages stored per stream (/jsz)."""
    from urllib.request import urlopen
    v = json.load(urlopen(f"http://127.0.0.1:{port}/varz"))
    j = json.load(urlopen(f"http://127.0.0.1:{port}/jsz?accounts=true&streams=true"))
    streams = {}
    for acc in j.get("account_details") or []:
        for st in acc.get("stream_detail") or []:
            streams[st["name"]] = st["state"]["messages"]
    api = (j.get("api") or {}).get("total", 0)
    return {"in": v["in_msgs"], "out": v["out_msgs"], "api": api, "streams": streams}

def nats_per_task(before, after, n):
    """Messages per task over the burst: into and out of nats-server, JetStream
    API calls, and messages each stream stored (a KV put or an event is one)."""
    b, a, n = json.load(open(before)), json.load(open(after)), int(n)
    out = {"in": round((a["in"] - b["in"]) / n, 2), "out": round((a["out"] - b["out"]) / n, 2),
           "js_api": round((a["api"] - b["api"]) / n, 2)}
    stored = 0
    for name, count in sorted(a["streams"].items()):
        d = count - b["streams"].get(name, 0)
        if d:
            out[f"stored_{name}"] = round(d / n, 2)
            stored += d
    out["stored_total"] = round(stored / n, 2)
    return out

def cpu(before, after, clk, n, client_s):
    """CPU ms per task from two snapshots of lines `name self children` (ticks)."""
    b = {l.split()[0]: [int(x) for x in l.split()[1:]] for l in open(before)}
    a = {l.split()[0]: [int(x) for x in l.split()[1:]] for l in open(after)}
    ms = 1000.0 / int(clk) / int(n)
    out, total = {}, 0.0
    for name in a:
        ds, dc = a[name][0] - b[name][0], a[name][1] - b[name][1]
        out[f"{name}_self"] = round(ds * ms, 3)
        if name.startswith("m") or dc:
            out[f"{name}_children"] = round(dc * ms, 3)
        total += (ds + dc) * ms
    out["client"] = round(float(client_s) * 1000 / int(n), 3)
    out["total"] = round(total + out["client"], 3)
    return out

async def latency(url, n, prefix):
    import nats
    nc = await nats.connect(url)
    js = nc.jetstream()
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    run = uuid.uuid4().hex[:8]
    lat, bad = [], 0
    for i in range(int(n)):
        tid = f"lat-{run}-{i:05d}"
        task = {"task_id": tid, "name": "latency", "test_type": "bench-latency", "command": ["true"],
                "requirements": {"cpu_cores": 0.25}}
        t = time.perf_counter()
        await js.publish(f"{prefix}.tasks.submit", json.dumps(task).encode(),
                         headers={"Content-Type": "application/json", "Nats-Msg-Id": tid, "Hws-Reply-To": inbox})
        while True:
            r = json.loads((await sub.next_msg(timeout=120)).data)
            if r.get("taskId") != tid:
                continue
            if r.get("finished"):
                bad += r.get("status") != "TASK_STATUS_SUCCEEDED"
                break
            if not r.get("accepted"):
                bad += 1
                break
        lat.append((time.perf_counter() - t) * 1000)
    await nc.drain()
    lat.sort()
    return {"p50_ms": round(pct(lat, .5), 3), "p95_ms": round(pct(lat, .95), 3), "p99_ms": round(pct(lat, .99), 3),
            "mean_ms": round(sum(lat) / len(lat), 3), "failed": bad}

def latency_extra(e2e_out, cli_times):
    m = {}
    text = open(e2e_out).read()
    g = re.search(r"finished (\d+) of (\d+) in ([\d.]+) s", text)
    p = re.search(r"p50 (\d+) ms, p99 (\d+) ms", text)
    if g and p:
        m.update(e2e_p50_ms=int(p[1]), e2e_p99_ms=int(p[2]), e2e_failed=int(g[2]) - int(g[1]))
    lat = sorted((float(b) - float(a)) * 1000 for a, b in (l.split()[:2] for l in open(cli_times)))
    bad = sum(1 for l in open(cli_times) if l.split()[2] != "0")
    if lat:
        m.update(cli_p50_ms=round(pct(lat, .5), 3), cli_p95_ms=round(pct(lat, .95), 3), cli_failed=bad)
    return m

ROWS = {  # per workload: (key, or prefix.*, label, with ratio columns)
    "burst": [("tasks_per_s", "tasks/s", 1), ("wall_s", "wall s", 1), ("failed", "failed+lost", 0),
              ("retried", "retried", 0), ("cpu_ms_per_task.*", "CPU ms/task", 1),
              ("nats_msgs_per_task.*", "NATS msgs/task", 0), ("placement.*", "placed on", 0)],
    "sleep": [("wall_s", "wall s", 1), ("ideal_s", "ideal s", 0), ("efficiency", "ideal/wall", 1),
              ("failed", "failed+lost", 0), ("placement.*", "placed on", 0)],
    "latency": [("p50_ms", "p50 ms", 1), ("p95_ms", "p95 ms", 1), ("p99_ms", "p99 ms", 1), ("mean_ms", "mean ms", 1),
                ("e2e_p50_ms", "bench e2e p50 ms (whole ms)", 1), ("e2e_p99_ms", "bench e2e p99 ms (whole ms)", 1),
                ("cli_p50_ms", "submit CLI p50 ms", 1), ("cli_p95_ms", "submit CLI p95 ms", 1),
                ("failed", "failed", 0), ("e2e_failed", "bench e2e failed", 0), ("cli_failed", "submit CLI failed", 0)],
    "accel": [("wall_s", "wall s", 1), ("ideal_s", "ideal s", 0), ("efficiency", "ideal/wall", 1),
              ("failed", "failed+lost", 0), ("placement.*", "placed on", 0)],
}
# the order of the CPU rows (others after these, total last)
CPU_ORDER = ["all_self", "all_children", "m1_self", "m1_children", "m2_self", "m2_children", "nats_self",
             "client", "driver_self", "driver_children", "gcs_server_self", "raylet_self", "workers_self",
             "workers_children", "other_self", "other_children", "total"]

def row_label(label, sub):
    if sub.startswith("accel_on.") or sub.startswith("plain_on."):
        kind, w = sub.split(".", 1)
        return f"{kind[:-3]} tasks on {w}"
    return f"{label} {sub}"

def flat(d, pre=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{pre}{k}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[pre + k] = v
    return out

def num(x):
    if x is None:
        return "-"
    if abs(x) >= 100 or x == int(x):
        return f"{x:.0f}"
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}" if abs(x) >= 0.1 else f"{x:.3f}"

def report(results, out_json, config):
    recs = [json.loads(l) for l in open(results) if l.strip()]
    variants = config["variants"] + (["ray"] if any(r["system"] == "ray" for r in recs) else [])
    summary, lines = {}, []
    for w in config["workloads"]:
        vals = {}  # variant -> key -> [values]
        for r in recs:
            if r["workload"] == w:
                for k, v in flat({k: v for k, v in r.items() if k not in ("system", "variant", "workload", "run")}).items():
                    vals.setdefault(r["variant"], {}).setdefault(k, []).append(v)
        if not vals:
            continue
        cols = [v for v in variants if v in vals]
        keys = []
        for key, label, ratio in ROWS[w]:
            if key.endswith("*"):
                pre = key[:-1]
                found = {k[len(pre):] for v in vals.values() for k in v if k.startswith(pre)}
                order = lambda k: (CPU_ORDER.index(k) if k in CPU_ORDER else len(CPU_ORDER) - 1, k)
                keys += [(pre + k, row_label(label, k), ratio) for k in sorted(found, key=order)]
            elif any(key in v for v in vals.values()):
                keys.append((key, label, ratio))
        hw = [v for v in cols if v != "ray"]
        ratios = [(v, "ray") for v in hw if "ray" in cols]
        ratios += [(v, "least-loaded") for v in hw if v != "least-loaded" and "least-loaded" in cols]
        summary[w] = {v: {k: {"min": min(x), "max": max(x), "median": statistics.median(x), "runs": x}
                          for k, x in vals[v].items()} for v in cols}
        lines.append(f"\n### {w}\n")
        lines.append("| metric | " + " | ".join(cols) + "".join(f" | {a}/{b}" for a, b in ratios) + " |")
        lines.append("|---|" + "---:|" * (len(cols) + len(ratios)))
        for key, label, ratio in keys:
            cells = []
            for v in cols:
                x = vals[v].get(key)
                cells.append("-" if not x else num(min(x)) if min(x) == max(x) else f"{num(min(x))}–{num(max(x))}")
            for a, b in ratios:
                xa, xb = vals[a].get(key), vals[b].get(key)
                ok = ratio and xa and xb and statistics.median(xb) != 0
                cells.append(f"{statistics.median(xa) / statistics.median(xb):.2f}" if ok else "-")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    c = config
    head = (f"{c['version']} vs Ray, {c['nproc']} CPUs, RUNS={c['runs']}: cells are min–max over the runs, "
            f"ratio columns are ratios of the medians (tasks/s, ideal/wall: higher is better; s, ms, CPU: lower is better)")
    text = head + "\n" + "\n".join(lines)
    print(text)
    json.dump({"config": config, "runs": recs, "summary": summary}, open(out_json, "w"), indent=1)

if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "gen":
        gen(*args)
    elif mode == "summarize":
        print(json.dumps(summarize(*args)))
    elif mode == "nats-snap":
        print(json.dumps(nats_snap(*args)))
    elif mode == "nats-per-task":
        print(json.dumps(nats_per_task(*args)))
    elif mode == "cpu":
        print(json.dumps(cpu(*args)))
    elif mode == "latency":
        print(json.dumps(asyncio.run(latency(*args))))
    elif mode == "latency-extra":
        print(json.dumps(latency_extra(*args)))
    elif mode == "report":
        report(args[0], args[1], json.loads(args[2]))
PY
bb() { python3 "$dir/bb.py" "$@"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { # FILE PATTERN PID: until PATTERN is in FILE (30 s), while PID lives
  local i
  for ((i = 0; i < 300; i++)); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || { echo "process $3 exited before '$2' (see ${1#"$dir"/})" >&2; return 1; }
    sleep 0.1
  done
  echo "no '$2' in ${1#"$dir"/} after 30 s" >&2; return 1
}
alive() { # every stack process still runs
  local n
  for n in nats all m1 m2; do
    kill -0 "${procs[$n]}" 2>/dev/null || { echo "$n (pid ${procs[$n]}) died" >&2; return 1; }
  done
}
ticks() { # PID -> "self children": utime+stime, cutime+cstime (clock ticks)
  local s f
  s=$(<"/proc/$1/stat"); s=${s##*) }
  read -r -a f <<<"$s"
  echo "$((f[11] + f[12])) $((f[13] + f[14]))"
}
cpu_snap() { local n; for n in all m1 m2 nats; do echo "$n $(ticks "${procs[$n]}")"; done; }
record() { # SYSTEM VARIANT WORKLOAD RUN METRICS_JSON
  python3 -c 'import json,sys; print(json.dumps({"system": sys.argv[1], "variant": sys.argv[2], "workload": sys.argv[3], "run": int(sys.argv[4]), **json.loads(sys.argv[5])}))' "$@" >>"$results"
}
say() { printf '%s\n' "$*" >&2; }

start_stack() { # VARIANT (the scheduler policy)
  local v=$1 vdir=$dir/$1 port m
  mkdir -p "$vdir/m1-work" "$vdir/m2-work"
  port=$(free_port)
  nats_http=$(free_port)
  "$nats" -a 127.0.0.1 -p "$port" -m "$nats_http" -js -sd "$vdir/js" 2>"$vdir/nats.log" & pids+=($!); procs[nats]=$!
  export HWSCHED_NATS_URL=nats://127.0.0.1:$port
  wait_for "$vdir/nats.log" "Server is ready" "${procs[nats]}"
  HWSCHED_POLICY=$v HWSCHED_LOG=info "$bin" all 2>"$vdir/all.log" & pids+=($!); procs[all]=$!
  wait_for "$vdir/all.log" "scheduler ready" "${procs[all]}"
  for m in m1 m2; do
    local extra=(--slots 6)
    [ "$m" = m2 ] && extra=(--slots 2 --accelerator "$ACCEL_KIND=2")
    (cd "$vdir/$m-work" && HWSCHED_LOG=info exec "$bin" monitor --worker-id "$m" "${extra[@]}" \
      --bundle-cache-dir "$vdir/$m-cache" 2>"$vdir/$m.log") & pids+=($!); procs[$m]=$!
  done
  for m in m1 m2; do wait_for "$vdir/$m.log" "monitor ready" "${procs[$m]}"; done
  # warm-up, which also waits until the scheduler knows both workers
  bb gen warmup "warmup-${v//[^A-Za-z0-9_]/-}" 16 "$ACCEL_KIND" true >"$vdir/warmup.json"
  "$bin" submit --wait --no-progress -o json --wait-timeout-s 60 -f "$vdir/warmup.json" >"$vdir/warmup.out" 2>>"$vdir/client.log" \
    || { say "warm-up failed on $v"; return 1; }
  say "== $v: nats $HWSCHED_NATS_URL, $($bin --version), all pid ${procs[all]}, monitors ${procs[m1]} ${procs[m2]}"
}

submit_suite() { # VDIR NAME SUITE -> runs it; leaves NAME.out and NAME.time; echoes wall s
  local vdir=$1 name=$2 suite=$3 t0 t1 rc=0
  TIMEFORMAT='%3R %3U %3S'
  t0=$EPOCHREALTIME
  { time "$bin" submit --wait --no-progress -o json --wait-timeout-s "$wait_timeout" -f "$suite" \
      >"$vdir/$name.out" 2>>"$vdir/client.log"; } 2>"$vdir/$name.time" || rc=$?
  t1=$EPOCHREALTIME
  [ "$rc" = 0 ] || say "  submit exited $rc (1: a task failed or was rejected; see ${vdir#"$dir"/}/client.log)"
  python3 -c 'import sys; print(float(sys.argv[2]) - float(sys.argv[1]))' "$t0" "$t1"
}

run_workload() { # VARIANT WORKLOAD RUN
  local v=$1 w=$2 r=$3 vdir=$dir/$1 prefix name wall m n accel_worker="" cmd
  prefix="$w-${v//[^A-Za-z0-9_]/-}-r$r"; name="$w-r$r"
  case $w in
    burst) n=$N_BURST; cmd=(true) ;;
    sleep) n=$N_SLEEP; cmd=(sleep "$SLEEP_S") ;;
    accel) n=$N_ACCEL; cmd=(sleep "$ACCEL_SLEEP_S"); accel_worker=m2 ;;
    latency)
      m='{}'
      if "$nats_python" -c 'import nats' 2>/dev/null; then
        m=$("$nats_python" "$dir/bb.py" latency "$HWSCHED_NATS_URL" "$N_LAT" "${HWSCHED_SUBJECT_PREFIX:-hws}")
      else
        say "  no nats-py in $nats_python (make env): no connected-client p50/p95/p99"
      fi
      "$bin" bench e2e --window 1 --tasks "$N_LAT" --command true --report-s 100000 --timeout-s 60 \
        >"$vdir/$name.e2e" 2>>"$vdir/client.log" || say "  bench e2e failed (see ${vdir#"$dir"/}/$name.e2e)"
      local i t0 t1 rc
      : >"$vdir/$name.cli"
      for ((i = 0; i < N_LAT; i++)); do
        rc=0; t0=$EPOCHREALTIME
        "$bin" submit --wait --no-progress --cpu 0.25 --name latency --test-type bench-latency -o json -- true \
          >>"$vdir/$name.cli-out" 2>>"$vdir/client.log" || rc=$?
        t1=$EPOCHREALTIME
        echo "$t0 $t1 $rc" >>"$vdir/$name.cli"
      done
      m=$(python3 -c 'import json,sys; print(json.dumps({"n": int(sys.argv[3]), **json.loads(sys.argv[1]), **json.loads(sys.argv[2])}))' \
        "$m" "$(bb latency-extra "$vdir/$name.e2e" "$vdir/$name.cli")" "$N_LAT")
      record hwsched "$v" "$w" "$r" "$m"
      say "  $v latency run $r: $m"
      alive
      return
      ;;
  esac
  bb gen "$w" "$prefix" "$n" "$ACCEL_KIND" "${cmd[@]}" >"$vdir/$name.json"
  local perf_pid=""
  if [ "$w" = burst ]; then
    cpu_snap >"$vdir/$name.cpu0"
    bb nats-snap "$nats_http" >"$vdir/$name.nats0"
    if [ -n "${PERF_DIR:-}" ]; then
      mkdir -p "$PERF_DIR"
      perf record -a -g -F 499 -o "$PERF_DIR/$v-$name.data" 2>"$vdir/perf.log" & perf_pid=$!
      sleep 1
    fi
  fi
  wall=$(submit_suite "$vdir" "$name" "$vdir/$name.json")
  if [ "$w" = burst ]; then
    cpu_snap >"$vdir/$name.cpu1"
    bb nats-snap "$nats_http" >"$vdir/$name.nats1"
    if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
  fi
  m=$(bb summarize "$vdir/$name.out" "$n" "$wall" "$vdir/$name.time" "$accel_worker")
  m=$(python3 - "$m" "$w" <<'PY'
import json, os, sys
m, w = json.loads(sys.argv[1]), sys.argv[2]
if w == "burst":
    m["tasks_per_s"] = round(m["n"] / m["wall_s"], 2)
else:
    s = float(os.environ["SLEEP_S" if w == "sleep" else "ACCEL_SLEEP_S"])
    ideal = m["n"] * s / 8
    if w == "accel":
        ideal = max(ideal, (m["n"] + 1) // 2 * s / 2)
    m["ideal_s"] = round(ideal, 3)
    m["efficiency"] = round(ideal / m["wall_s"], 3)
print(json.dumps(m))
PY
)
  if [ "$w" = burst ]; then
    local client; client=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["client_cpu_s"])' "$m")
    m=$(python3 -c 'import json,sys; m=json.loads(sys.argv[1]); m["cpu_ms_per_task"]=json.loads(sys.argv[2]); print(json.dumps(m))' \
      "$m" "$(bb cpu "$vdir/$name.cpu0" "$vdir/$name.cpu1" "$clk_tck" "$n" "$client")")
    m=$(python3 -c 'import json,sys; m=json.loads(sys.argv[1]); m["nats_msgs_per_task"]=json.loads(sys.argv[2]); print(json.dumps(m))' \
      "$m" "$(bb nats-per-task "$vdir/$name.nats0" "$vdir/$name.nats1" "$n")")
  fi
  record hwsched "$v" "$w" "$r" "$m"
  say "  $v $w run $r: $m"
  alive
}

log_problems() { # VARIANT: WARN/ERROR lines in the services' logs
  local vdir=$dir/$1 f c
  for f in all m1 m2; do
    c=$(grep -cE ' (WARN|ERROR) ' "$vdir/$f.log" || true)
    if [ "$c" != 0 ]; then
      say "  $1: $c WARN/ERROR line(s) in $f.log, e.g.:"
      grep -E ' (WARN|ERROR) ' "$vdir/$f.log" | sed -E 's/^[^ ]+ +//' | sort | uniq -c | sort -rn | head -n 5 >&2
    fi
    python3 -c 'import json,sys; print(json.dumps({"system": "hwsched", "variant": sys.argv[1], "workload": "_log", "run": 0, "process": sys.argv[2], "warn_error_lines": int(sys.argv[3])}))' \
      "$1" "$f" "$c" >>"$results"
  done
}

for v in $variants; do
  start_stack "$v"
  for w in $WORKLOADS; do
    for ((r = 1; r <= RUNS; r++)); do run_workload "$v" "$w" "$r"; sleep 1; done
  done
  log_problems "$v"
  stop_stack
done

if [ "${SKIP_RAY:-}" != 1 ]; then
  if ! "$ray_venv/bin/python" -c 'import ray' 2>/dev/null; then
    say "== creating $ray_venv with ray==$ray_version"
    python3 -m venv "$ray_venv"
    "$ray_venv/bin/pip" install -q "ray==$ray_version" >"$dir/pip.log" 2>&1
  fi
  say "== ray $("$ray_venv/bin/python" -c 'import ray; print(ray.__version__)')"
  mkdir -p "$dir/ray"
  RAY_TEMP_DIR=$dir/ray RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled} \
    "$ray_venv/bin/python" scripts/bench_burst_ray.py >"$dir/ray.jsonl" 2>"$dir/ray.log" & ray_pid=$!
  wait "$ray_pid"; ray_pid=""
  while read -r line; do say "  ray: $line"; done <"$dir/ray.jsonl"
  cat "$dir/ray.jsonl" >>"$results"
fi

mkdir -p "$(dirname "$out_json")"
config=$(python3 -c 'import json,os,sys; print(json.dumps({"variants": sys.argv[1].split(), "workloads": os.environ["WORKLOADS"].split(), "runs": int(os.environ["RUNS"]), "bin": sys.argv[2], "version": sys.argv[3], "nproc": os.cpu_count(), **{k: os.environ[k] for k in ("N_BURST", "N_SLEEP", "SLEEP_S", "N_LAT", "N_ACCEL", "ACCEL_SLEEP_S", "ACCEL_KIND")}}))' \
  "$variants" "$bin" "$("$bin" --version)")
bb report "$results" "$out_json" "$config"
say "raw numbers: $out_json"
