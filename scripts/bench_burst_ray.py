#!/usr/bin/env python3
"""The Ray side of scripts/bench-burst.sh: the same four short-test workloads on
a local Ray instance, ray.init(num_cpus=RAY_CPUS (8), resources={ACCEL_KIND: 2}),
each task a @ray.remote(num_cpus=1) function that runs the command with
subprocess.run, so 8 run at once as on hwsched's 6 + 2 slots.

Prints one JSON object per line and run on stdout (Ray's own chatter goes to
stderr), in the shape bench-burst.sh collects:
  {"system": "ray", "variant": "ray", "workload": W, "run": R, ...metrics}
Workloads (the same knobs as bench-burst.sh, read from the environment):
  burst    N_BURST x `true` submitted at once, then ray.get of all: tasks_per_s,
           wall_s, and CPU ms per task of the Ray process tree (see tree_cpu)
  sleep    N_SLEEP x `sleep SLEEP_S`: wall_s (ideal N*S/8)
  latency  N_LAT x `true`, one ray.get(f.remote()) at a time: p50/p95/p99 ms
  accel    N_ACCEL x `sleep ACCEL_SLEEP_S`, every other one asking for
           {ACCEL_KIND: 1} (2 units exist): wall_s
WORKLOADS selects, RUNS repeats each. RAY_TEMP_DIR is Ray's session directory
(short path: Ray's unix sockets live there).
Run with the venv that has ray, e.g. build/bench-venv/bin/python.
"""
import json
import math
import os
import signal
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def env_int(name, default):
    return int(os.environ.get(name, default))


def env_float(name, default):
    return float(os.environ.get(name, default))


def percentile(sorted_xs, p):
    """Nearest rank above, like hwsched's bench (services/hwsched/src/bench/shared.rs)."""
    if not sorted_xs:
        return 0.0
    return sorted_xs[max(0, math.ceil(len(sorted_xs) * p) - 1)]


def proc_stat(pid):
    """(ppid, comm, utime+stime, cutime+cstime) in clock ticks, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    comm = s[s.index("(") + 1:s.rindex(")")]
    f = s[s.rindex(")") + 2:].split()
    # f[0] is field 3 (state): utime/stime/cutime/cstime are fields 14-17
    return int(f[1]), comm, int(f[11]) + int(f[12]), int(f[13]) + int(f[14])


def category(pid, comm, me):
    if pid == me:
        return "driver"
    if comm in ("gcs_server", "raylet"):
        return comm
    if comm.startswith("ray::"):
        return "workers"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"default_worker.py" in f.read():
                return "workers"
    except OSError:
        pass
    return "other"


def tree_cpu():
    """CPU ticks per pid of this driver and every live descendant: Ray starts
    gcs_server, raylet, its agents and (under raylet) the workers, and each
    worker waits for the `subprocess.run` children, so their time is in the
    worker's cutime+cstime. Returns {pid: (category, self, children)}."""
    me = os.getpid()
    stats = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st:
                stats[int(d)] = st
    kids = {}
    for pid, (ppid, *_rest) in stats.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = {}, [me]
    while todo:
        pid = todo.pop()
        if pid in stats:
            _, comm, own, children = stats[pid]
            out[pid] = (category(pid, comm, me), own, children)
            todo.extend(kids.get(pid, []))
    return out


def cpu_delta(before, after, n):
    """CPU ms per task by category, self and children (waited-for children:
    the test commands, for workers), over the processes alive at the end."""
    res = {}
    for pid, (cat, own, children) in after.items():
        _, own0, children0 = before.get(pid, (cat, 0, 0))
        r = res.setdefault(cat, [0, 0])
        r[0] += own - own0
        r[1] += children - children0
    ms = 1000.0 / CLK_TCK / max(n, 1)
    cpu = {f"{cat}_self": round(v[0] * ms, 3) for cat, v in res.items()}
    cpu.update({f"{cat}_children": round(v[1] * ms, 3) for cat, v in res.items() if v[1]})
    cpu["total"] = round(sum(v[0] + v[1] for v in res.values()) * ms, 3)
    return cpu


def main():
    import ray  # only here: --help works without it

    workloads = os.environ.get("WORKLOADS", "burst sleep latency accel").split()
    runs = env_int("RUNS", 3)
    kind = os.environ.get("ACCEL_KIND", "tpu")
    cpus = env_int("RAY_CPUS", 8)
    kw = {}
    if os.environ.get("RAY_TEMP_DIR"):
        kw["_temp_dir"] = os.environ["RAY_TEMP_DIR"]
    # SIGTERM (bench-burst.sh's cleanup) runs ray.shutdown via atexit
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, resources={kind: 2}, include_dashboard=False, log_to_driver=False, **kw)
    init_s = time.perf_counter() - t0

    @ray.remote(num_cpus=1)
    def run_cmd(cmd):
        return subprocess.run(cmd).returncode

    accel = run_cmd.options(resources={kind: 1})

    def emit(workload, run, **metrics):
        print(json.dumps({"system": "ray", "variant": "ray", "workload": workload, "run": run, **metrics}), flush=True)

    # warm-up: every worker process started once (hwsched's side warms up too)
    t = time.perf_counter()
    ray.get([run_cmd.remote(["true"]) for _ in range(4 * cpus)])
    print(f"ray: init {init_s:.2f} s, warm-up {time.perf_counter() - t:.2f} s", file=sys.stderr, flush=True)

    for workload in workloads:
        for run in range(1, runs + 1):
            if workload == "burst":
                n = env_int("N_BURST", 2000)
                before = tree_cpu()
                start = time.perf_counter()
                codes = ray.get([run_cmd.remote(["true"]) for _ in range(n)])
                wall = time.perf_counter() - start
                cpu = cpu_delta(before, tree_cpu(), n)
                emit(workload, run, n=n, wall_s=round(wall, 4), tasks_per_s=round(n / wall, 2),
                     succeeded=codes.count(0), failed=n - codes.count(0), cpu_ms_per_task=cpu)
            elif workload == "sleep":
                n, s = env_int("N_SLEEP", 500), os.environ.get("SLEEP_S", "0.2")
                start = time.perf_counter()
                codes = ray.get([run_cmd.remote(["sleep", s]) for _ in range(n)])
                wall = time.perf_counter() - start
                ideal = n * float(s) / cpus
                emit(workload, run, n=n, wall_s=round(wall, 4), ideal_s=round(ideal, 3),
                     efficiency=round(ideal / wall, 3), succeeded=codes.count(0), failed=n - codes.count(0))
            elif workload == "latency":
                n = env_int("N_LAT", 200)
                lat, codes = [], []
                for _ in range(n):
                    t = time.perf_counter()
                    codes.append(ray.get(run_cmd.remote(["true"])))
                    lat.append((time.perf_counter() - t) * 1000)
                lat.sort()
                emit(workload, run, n=n, p50_ms=round(percentile(lat, 0.5), 3),
                     p95_ms=round(percentile(lat, 0.95), 3), p99_ms=round(percentile(lat, 0.99), 3),
                     mean_ms=round(sum(lat) / n, 3), succeeded=codes.count(0), failed=n - codes.count(0))
            elif workload == "accel":
                n, s = env_int("N_ACCEL", 400), os.environ.get("ACCEL_SLEEP_S", "0.2")
                start = time.perf_counter()
                # interleaved: even tasks need the accelerator, odd ones do not
                refs = [(accel if i % 2 == 0 else run_cmd).remote(["sleep", s]) for i in range(n)]
                codes = ray.get(refs)
                wall = time.perf_counter() - start
                n_acc = (n + 1) // 2
                ideal = max(n_acc * float(s) / 2, n * float(s) / cpus)
                emit(workload, run, n=n, n_accel=n_acc, wall_s=round(wall, 4), ideal_s=round(ideal, 3),
                     efficiency=round(ideal / wall, 3), succeeded=codes.count(0), failed=n - codes.count(0))
            else:
                raise SystemExit(f"unknown workload {workload!r}")
    ray.shutdown()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print(__doc__)
        sys.exit(0 if sys.argv[1] in ("-h", "--help") else 2)
    main()
