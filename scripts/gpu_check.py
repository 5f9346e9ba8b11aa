#!/usr/bin/env python3
"""Helper of scripts/gpu-check.sh, standard library only (the GPU machine has no venv).

Modes (each check mode prints one line "PASS|FAIL|SKIP <check>: <observed values>"):
  alloc [--hold S] [--no-cuda]   the GPU task: 1 GiB through libcuda.so.1 (ctypes), held S s
  caps URL WORKER OUT_JSON       capabilities from the monitor (request hws.workers.<id>.capabilities)
  check-caps CAPS_JSON           compares them with nvidia-smi
  metrics URL WORKER SECONDS NGPUS   counts hws.metrics.<id> batches and their GPU samples
  reserved BIN TASK_ID OUT_DIR   polls `BIN explain` for the task's reserved GPUs (background)
  check-task TASK_ID DIR         judges the task from the files gpu-check.sh wrote in DIR
  check-faults MONITOR_LOG NGPUS the GPU-fault signals the monitor read (its log), against nvidia-smi's ECC mode
  selftest [URL WORKER]          decoder tests; with a running stack, decodes its live messages
NATS: a minimal client over a socket (CONNECT, SUB, PUB, MSG/HMSG, PING/PONG); subjects use
the default prefix unless HWSCHED_SUBJECT_PREFIX is set. Protobuf: field numbers from
schemas/hwsched/v1/{worker,metrics}.proto.
"""
import ctypes, json, os, re, socket, struct, subprocess, sys, time, urllib.parse

PREFIX = os.environ.get("HWSCHED_SUBJECT_PREFIX") or "hws"
GPU_METRICS = ("gpu.util_pct", "gpu.mem_used_mb", "gpu.temp_c", "gpu.power_w")  # libs/proto/src/metric.rs
MIN_TASK_GPU_MB = 900


# ---- protobuf: just enough to read the messages we need ----
def varint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return v, i


def fields(b):
    """(field number, wire type, raw value) of every field, unknown ones included."""
    i, out = 0, []
    while i < len(b):
        key, i = varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(b, i)
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 2:
            n, i = varint(b, i)
            v, i = b[i:i + n], i + n
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wt} (field {num})")
        if i > len(b):
            raise ValueError("truncated message")
        out.append((num, wt, v))
    return out


def scalar(kind, wt, v):
    if kind == "s":
        return bytes(v).decode("utf-8", "replace")
    if kind == "d":
        return struct.unpack("<d", v)[0] if wt == 1 else 0.0
    if kind == "i":
        return v - (1 << 64) if v >= 1 << 63 else v
    if kind == "b":
        return bool(v)
    return v  # "u"


def decode(schema, b):
    """Message -> dict by schema {num: (name, kind)}; kind "s" "d" "i" "u" "b", a nested schema
    (dict), ["repeated", kind] or "map" (map<string,string>); absent fields get proto3 defaults."""
    defaults = {"s": "", "d": 0.0, "i": 0, "u": 0, "b": False, "map": {}}
    out = {}
    for name, kind in schema.values():
        out[name] = [] if isinstance(kind, list) else {} if kind == "map" else None if isinstance(kind, dict) else defaults[kind]
    for num, wt, v in fields(b):
        if num not in schema:
            continue
        name, kind = schema[num]
        if isinstance(kind, list):
            inner = kind[1]
            out[name].append(decode(inner, v) if isinstance(inner, dict) else scalar(inner, wt, v))
        elif kind == "map":
            e = decode({1: ("k", "s"), 2: ("v", "s")}, v)
            out[name][e["k"]] = e["v"]
        elif isinstance(kind, dict):
            out[name] = decode(kind, v)
        else:
            out[name] = scalar(kind, wt, v)
    return out


GPU_INFO = {1: ("index", "u"), 2: ("uuid", "s"), 3: ("vendor", "s"), 4: ("model", "s"), 5: ("memory_mb", "u"),
            6: ("compute_capability", "s"), 7: ("driver_version", "s"), 8: ("power_limit_w", "u"),
            9: ("mig_enabled", "b"), 10: ("pcie_generation", "u"), 11: ("pcie_width", "u")}
CAPABILITIES = {2: ("worker_id", "s"), 3: ("hostname", "s"), 6: ("memory_mb", "u"), 8: ("gpus", ["repeated", GPU_INFO]),
                10: ("backends", ["repeated", "s"]), 11: ("software", "map"), 13: ("slots", "u"),
                15: ("hardware_class", "s"), 17: ("monitor_version", "s")}
SAMPLE = {1: ("metric", "s"), 2: ("device", "s"), 3: ("value", "d")}
BATCH = {1: ("schema_version", "u"), 2: ("worker_id", "s"), 3: ("timestamp_ms", "i"), 4: ("samples", ["repeated", SAMPLE])}
HEARTBEAT = {2: ("worker_id", "s"), 12: ("seq", "u"), 16: ("gpu_util_pct", "d"), 17: ("gpus", "u")}


# ---- NATS: a minimal synchronous client ----
class Nats:
    def __init__(self, url, timeout=10.0):
        u = urllib.parse.urlparse(url.split(",")[0])
        self.sock = socket.create_connection((u.hostname or "127.0.0.1", u.port or 4222), timeout=timeout)
        self.buf = b""
        if not self._line(time.time() + timeout).startswith(b"INFO"):
            raise ConnectionError("no INFO from the NATS server")
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"lang":"python-stdlib",'
                          b'"version":"0","protocol":1}\r\nPING\r\n')
        while True:
            line = self._line(time.time() + timeout)
            if line == b"PONG":
                return
            if line.startswith(b"-ERR"):
                raise ConnectionError(line.decode())

    def _fill(self, deadline):
        left = deadline - time.time()
        if left <= 0:
            raise TimeoutError
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(1 << 16)
        except socket.timeout:
            raise TimeoutError from None
        if not data:
            raise ConnectionError("NATS connection closed")
        self.buf += data

    def _line(self, deadline):
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def sub(self, subject, sid):
        self.sock.sendall(f"SUB {subject} {sid}\r\n".encode())

    def pub(self, subject, payload=b"", reply=None):
        head = f"PUB {subject} {reply} {len(payload)}" if reply else f"PUB {subject} {len(payload)}"
        self.sock.sendall(head.encode() + b"\r\n" + payload + b"\r\n")

    def next_msg(self, deadline):
        """(subject, sid, headers text, payload), or None at the deadline."""
        try:
            while True:
                line = self._line(deadline)
                p = line.split()
                if not p:
                    continue
                if p[0] == b"PING":
                    self.sock.sendall(b"PONG\r\n")
                elif p[0] == b"MSG":
                    data = self._exact(int(p[-1]) + 2, deadline + 5)[:-2]
                    return p[1].decode(), p[2].decode(), "", data
                elif p[0] == b"HMSG":
                    hlen, total = int(p[-2]), int(p[-1])
                    data = self._exact(total + 2, deadline + 5)[:-2]
                    return p[1].decode(), p[2].decode(), data[:hlen].decode("latin-1"), data[hlen:]
                elif p[0] == b"-ERR":
                    raise ConnectionError(line.decode())
        except TimeoutError:
            return None

    def request(self, subject, timeout):
        inbox = f"_INBOX.gpucheck{os.getpid()}{int(time.time() * 1000)}"
        self.sub(inbox, "99")
        self.pub(subject, b"", inbox)
        deadline = time.time() + timeout
        while (m := self.next_msg(deadline)) is not None:
            if m[1] == "99":
                return m
        return None


def is_json(headers):
    return "content-type: application/json" in headers.lower()


def line(status, check, text):
    print(f"{status} {check}: {text}", flush=True)


# ---- the GPU task ----
def alloc(args):
    hold = float(args[args.index("--hold") + 1]) if "--hold" in args else 8.0
    print(f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}", flush=True)
    print(f"pid={os.getpid()}", flush=True)
    if "--no-cuda" in args:  # dry run on a machine without a GPU
        time.sleep(hold)
        print("gpu-check alloc done (no CUDA)", flush=True)
        return 0
    cu = ctypes.CDLL("libcuda.so.1")

    def check(call, *a):
        r = getattr(cu, call)(*a)
        if r != 0:
            name = ctypes.c_char_p()
            cu.cuGetErrorName(r, ctypes.byref(name))
            raise SystemExit(f"{call} failed: {r} {name.value.decode() if name.value else ''}")

    check("cuInit", 0)
    n, dev = ctypes.c_int(), ctypes.c_int()
    check("cuDeviceGetCount", ctypes.byref(n))
    check("cuDeviceGet", ctypes.byref(dev), 0)
    name = ctypes.create_string_buffer(256)
    check("cuDeviceGetName", name, 256, dev)
    print(f"devices={n.value} device0={name.value.decode()}", flush=True)
    ctx = ctypes.c_void_p()
    check("cuDevicePrimaryCtxRetain", ctypes.byref(ctx), dev)
    check("cuCtxSetCurrent", ctx)
    size, ptr = 1 << 30, ctypes.c_uint64()
    cu.cuMemAlloc_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]
    cu.cuMemsetD8_v2.argtypes = [ctypes.c_uint64, ctypes.c_ubyte, ctypes.c_size_t]
    cu.cuMemFree_v2.argtypes = [ctypes.c_uint64]
    check("cuMemAlloc_v2", ctypes.byref(ptr), size)
    print(f"allocated={size} bytes", flush=True)
    end, sets = time.time() + hold, 0
    while time.time() < end:  # keep the GPU a little busy: utilisation shows in the metrics
        for _ in range(10):
            check("cuMemsetD8_v2", ptr.value, sets % 251, size)
            sets += 1
        check("cuCtxSynchronize")
        time.sleep(0.02)
    check("cuMemFree_v2", ptr.value)
    release = getattr(cu, "cuDevicePrimaryCtxRelease_v2", None) or cu.cuDevicePrimaryCtxRelease
    release(dev)
    print(f"gpu-check alloc done: held {hold:.0f} s, {sets} memsets of 1 GiB", flush=True)
    return 0


# ---- checks ----
def caps(url, worker, out):
    nc = Nats(url)
    m = nc.request(f"{PREFIX}.workers.{worker}.capabilities", 10)
    if m is None:
        raise SystemExit(f"no reply on {PREFIX}.workers.{worker}.capabilities")
    c = json.loads(m[3]) if is_json(m[2]) else decode(CAPABILITIES, m[3])
    with open(out, "w") as f:
        json.dump(c, f, indent=1)
    return 0


def smi_gpus():
    """nvidia-smi's view by GPU index; fields it lacks are None (one query per field as a fallback)."""
    want = ["name", "memory.total", "compute_cap", "mig.mode.current", "power.limit", "enforced.power.limit",
            "driver_version"]

    def query(fs):
        r = subprocess.run(["nvidia-smi", "--query-gpu=index," + ",".join(fs), "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            return None
        rows = {}
        for ln in r.stdout.strip().splitlines():
            p = [x.strip() for x in ln.split(",")]
            tail = p[len(p) - (len(fs) - 1):] if len(fs) > 1 else []
            rows[int(p[0])] = [",".join(p[1:len(p) - len(tail)])] + tail  # a comma in the name stays in it
        return rows

    gpus, rows = {}, query(want)
    for i, f in enumerate(want):
        col = {k: v[i] for k, v in rows.items()} if rows else {k: v[0] for k, v in (query([f]) or {}).items()}
        for k, v in col.items():
            na = v == "" or "N/A" in v or "Not Supported" in v or "Unknown" in v
            gpus.setdefault(k, {})[f] = None if na else v
    return {k: {f: g.get(f) for f in want} for k, g in gpus.items()}


def check_caps(path):
    c = json.load(open(path))
    smi, gpus = smi_gpus(), sorted(c.get("gpus", []), key=lambda g: g.get("index", 0))
    bad, unverified, desc = [], set(), []
    if len(gpus) != len(smi):
        bad.append(f"monitor reports {len(gpus)} GPUs, nvidia-smi {len(smi)}")
    for g in gpus:
        i, s = g.get("index", 0), smi.get(g.get("index", 0), {})
        desc.append(f"gpu{i} {g['model']!r} {g['memory_mb']} MiB cc {g['compute_capability'] or '?'} "
                    f"MIG {'on' if g['mig_enabled'] else 'off'} {g['power_limit_w']} W driver {g['driver_version']}")
        if not s:
            continue
        if s["name"] is not None and g["model"] != s["name"]:
            bad.append(f"gpu{i} model {g['model']!r} != nvidia-smi {s['name']!r}")
        if s["memory.total"] is not None:
            mib = float(s["memory.total"])
            if abs(g["memory_mb"] - mib) > max(2.0, 0.01 * mib):
                bad.append(f"gpu{i} memory {g['memory_mb']} MiB != nvidia-smi {mib:.0f} MiB")
        if not g["compute_capability"]:
            bad.append(f"gpu{i} no compute capability")
        elif s["compute_cap"] is None:
            unverified.add("compute_cap")
        elif g["compute_capability"] != s["compute_cap"]:
            bad.append(f"gpu{i} compute capability {g['compute_capability']} != nvidia-smi {s['compute_cap']}")
        if s["mig.mode.current"] is None:
            unverified.add("mig.mode.current")
        elif g["mig_enabled"] != (s["mig.mode.current"].lower() == "enabled"):
            bad.append(f"gpu{i} MIG {g['mig_enabled']} != nvidia-smi {s['mig.mode.current']}")
        limits = [float(s[k]) for k in ("enforced.power.limit", "power.limit") if s[k] is not None]
        if not limits:
            unverified.add("power.limit")
        elif not any(abs(g["power_limit_w"] - w) <= 1.0 for w in limits):
            bad.append(f"gpu{i} power limit {g['power_limit_w']} W != nvidia-smi {'/'.join(f'{w:g}' for w in limits)} W")
        if s["driver_version"] is not None and g["driver_version"] != s["driver_version"]:
            bad.append(f"gpu{i} driver {g['driver_version']} != nvidia-smi {s['driver_version']}")
    if gpus and "cuda" not in c.get("backends", []):
        bad.append(f"backends {c.get('backends')} lack cuda")
    text = "; ".join(desc) or "no GPUs"
    text += f"; class {c.get('hardware_class')}, backends {','.join(c.get('backends', []))}, cuda {c.get('software', {}).get('cuda', '?')}"
    if unverified:
        text += f"; nvidia-smi lacks {', '.join(sorted(unverified))} (unsupported or [N/A]): not compared"
    line("FAIL" if bad or not gpus else "PASS", "capabilities", ("; ".join(bad) + " | " if bad else "") + text)
    return 0


def metrics(url, worker, seconds, ngpus):
    seconds, ngpus = float(seconds), int(ngpus)
    nc = Nats(url)
    nc.sub(f"{PREFIX}.metrics.{worker}", "1")
    nc.sub(f"{PREFIX}.workers.{worker}.heartbeat", "2")
    batches, hbs, deadline = [], [], time.time() + seconds
    while (m := nc.next_msg(deadline)) is not None:
        if m[1] == "1":
            batches.append(json.loads(m[3]) if is_json(m[2]) else decode(BATCH, m[3]))
        elif m[1] == "2":
            hbs.append(json.loads(m[3]) if is_json(m[2]) else decode(HEARTBEAT, m[3]))
    if ngpus:
        want = {(f"gpu{i}", n) for i in range(ngpus) for n in GPU_METRICS}
    else:  # dry run without a GPU: the same path over CPU samples
        want = {("cpu", "cpu.util_pct"), ("mem", "mem.used_mb")}
    full, last, samples = 0, {}, 0
    for b in batches:
        got = {(s["device"], s["metric"]): s["value"] for s in b["samples"]}
        samples += sum(1 for d, _ in got if d.startswith("gpu" if ngpus else "cpu"))
        full += want <= got.keys()
        last.update({k: v for k, v in got.items() if k in want})
    ts = [b["timestamp_ms"] for b in batches]
    gap = (ts[-1] - ts[0]) / (len(ts) - 1) / 1000 if len(ts) > 1 else 0.0
    bad = []
    if len(batches) < 4 * seconds / 6:
        bad.append(f"only {len(batches)} batches in {seconds:g} s")
    if full < len(batches):
        bad.append(f"{len(batches) - full} batches lack some of {sorted(n for _, n in want)}")
    for i in range(ngpus):
        for n in ("gpu.temp_c", "gpu.power_w"):
            if last.get((f"gpu{i}", n), 0.0) <= 0.0:
                bad.append(f"gpu{i} {n} reads {last.get((f'gpu{i}', n))} (NVML read failed?)")
    hb_gpus = {h["gpus"] for h in hbs}
    if not hbs:
        bad.append("no heartbeats")
    elif hb_gpus != {ngpus}:
        bad.append(f"heartbeats say gpus={sorted(hb_gpus)}, expected {ngpus}")
    vals = ", ".join(f"{d} {n.split('.', 1)[1]}={v:.1f}" for (d, n), v in sorted(last.items()))
    text = (f"{len(batches)} batches in {seconds:g} s (every {gap:.2f} s), {full} with all of "
            f"{'util/mem/temp/power per GPU' if ngpus else 'cpu.util_pct+mem.used_mb (no GPU)'}, "
            f"{samples} {'GPU' if ngpus else 'CPU'} samples; last: {vals or '-'}; "
            f"{len(hbs)} heartbeats, gpus={sorted(hb_gpus)}, gpu_util {hbs[-1]['gpu_util_pct'] if hbs else 0:.1f}%")
    line("FAIL" if bad else "PASS", "metrics", ("; ".join(bad) + " | " if bad else "") + text)
    return 0


def reserved(bin_, task_id, out_dir):
    """Polls `explain` until the task holds GPUs (written to OUT_DIR/reserved), then what
    nvidia-smi sees using the GPU, once some process does (OUT_DIR/compute-apps); the
    script stops it when the task has ended."""
    def write(name, text):
        with open(f"{out_dir}/{name}", "w") as f:
            f.write(text)

    end = time.time() + 110
    while time.time() < end:
        try:
            r = subprocess.run([bin_, "explain", task_id, "-o", "json"], capture_output=True, text=True, timeout=30)
            rec = json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else {}
        except (ValueError, subprocess.SubprocessError):
            rec = {}
        if rec.get("gpuIndices"):
            write("reserved", ",".join(str(i) for i in rec["gpuIndices"]))
            for _ in range(15):  # CUDA's start can take seconds
                time.sleep(1)
                apps = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                                      capture_output=True, text=True, timeout=60).stdout.strip()
                write("compute-apps", apps.replace("\n", "; ") or "none")
                if apps:
                    break
            return 0
        time.sleep(0.2)
    return 0


def check_task(task_id, d):
    def read(name):
        try:
            return open(f"{d}/{name}").read()
        except OSError:
            return ""

    fin = {}
    for ln in read("submit.out").splitlines():
        try:
            u = json.loads(ln)
        except ValueError:
            continue
        if u.get("update") in ("finished", "rejected") and u.get("taskId") == task_id:
            fin = u
    try:
        attempts = json.loads(read("tasks.json") or "{}").get("attempts", [])
    except ValueError:
        attempts = []
    res = (attempts[-1] if attempts else None) or fin.get("result") or {}
    usage = res.get("resources", {})
    gpu_mb = int(usage.get("gpuMemoryPeakMb", 0))
    out = read("logs.out") or res.get("stdoutTail", "")
    cvd = next((l.split("=", 1)[1] for l in out.splitlines() if l.startswith("CUDA_VISIBLE_DEVICES=")), None)
    pid = next((l.split("=", 1)[1] for l in out.splitlines() if l.startswith("pid=")), "?")
    want = read("reserved").strip()
    bad = []
    if not fin.get("succeeded"):
        why = [fin.get("update", "lost (no result)"), fin.get("status", ""), "; ".join(fin.get("reasons", [])),
               f"error {res['error']!r}" if res.get("error") else "",
               f"stderr {res['stderrTail'][-300:]!r}" if res.get("stderrTail") else ""]
        bad.append("task " + " ".join(w for w in why if w))
    if not want:
        bad.append("reserved GPUs never seen in `explain`")
    if cvd is None or cvd != want or not cvd:
        bad.append(f"CUDA_VISIBLE_DEVICES={cvd!r}, reserved {want!r}")
    if gpu_mb < MIN_TASK_GPU_MB:
        bad.append(f"task GPU memory {gpu_mb} MB < {MIN_TASK_GPU_MB}")
    logs_rc = read("logs.rc").strip()
    if logs_rc != "0" or "gpu-check alloc done" not in read("logs.out"):
        bad.append(f"`hwsched logs` exit {logs_rc or '?'}, {len(read('logs.out'))} bytes{'' if 'alloc done' in read('logs.out') else ', no alloc output'}")
    text = (f"{task_id} on {fin.get('workerId', '?')} {fin.get('status', '?')} in {fin.get('durationS', 0):.1f} s; "
            f"reserved [{want}] CUDA_VISIBLE_DEVICES={cvd}; result gpu_memory_peak_mb={gpu_mb} "
            f"gpu_util_peak={usage.get('gpuUtilPeakPct', 0)}% gpu_energy_j={usage.get('gpuEnergyJ', '-')} "
            f"samples={usage.get('samples', 0)}; task pid {pid}, nvidia-smi compute apps (pid, MiB): "
            f"{read('compute-apps').strip() or '-'}; logs {len(read('logs.out'))} bytes")
    line("FAIL" if bad else "PASS", "task", ("; ".join(bad) + " | " if bad else "") + text)
    return 0


# the monitor's log messages about GPU faults (services/monitor/src/gpu.rs, executor.rs), longest first
FAULT_MSGS = ("GPU fault signals unreadable", "GPU fault signal unreadable", "GPU fault signals",
              "GPU fault during the attempt", "GPU fault", "GPU lost")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def fault_log(path):
    """(message, fields, rest of line) of the monitor log's GPU-fault lines, text or JSON format."""
    out = []
    for raw in open(path, errors="replace"):
        ln = ANSI.sub("", raw).strip()
        if ln.startswith("{"):
            try:
                j = json.loads(ln)
            except ValueError:
                continue
            if j.get("message") in FAULT_MSGS:
                out.append((j["message"], {k: str(v) for k, v in j.items()}, ln))
            continue
        for m in FAULT_MSGS:
            k = ln.find(": " + m)
            rest = ln[k + 2 + len(m):] if k >= 0 else ""
            if k >= 0 and re.match(r"(\s+\w+=|$)", rest):
                out.append((m, dict(re.findall(r"(\w+)=(\S+)", rest)), rest.strip()))
                break
    return out


def check_faults(log, ngpus):
    """Each GPU's fault signals (ECC count, pages pending retirement, XID/ECC event set) as the
    monitor read them at start: "not_supported" passes, an NVML error fails, and so does a fault."""
    ngpus, seen, bad, faults = int(ngpus), {}, [], []
    for msg, f, rest in fault_log(log):
        if msg == "GPU fault signals":
            seen[f.get("gpu", "?")] = f
        elif msg.endswith("unreadable"):
            bad.append(f"{msg}: {rest[:160]}")
        else:
            faults.append(f"{msg}: {rest[:160]}")
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=index,ecc.mode.current", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=60)
        smi_ecc = dict(tuple(x.strip() for x in ln.split(",", 1)) for ln in r.stdout.splitlines() if "," in ln)
    except (OSError, subprocess.SubprocessError):
        smi_ecc = {}
    desc = []
    for i in map(str, range(ngpus)):
        s = seen.get(i)
        if s is None:
            bad.append(f"gpu{i}: no 'GPU fault signals' line in the monitor log")
            continue
        vals = {k: s.get(k, "?") for k in ("ecc", "retirement", "events")}
        desc.append(f"gpu{i} " + " ".join(f"{k}={v}" for k, v in vals.items()) + f" (nvidia-smi ECC {smi_ecc.get(i, '?')})")
        bad += [f"gpu{i} {k} read: {v}" for k, v in vals.items() if v == "?" or v.startswith("error")]
        if smi_ecc.get(i) == "Enabled" and vals["ecc"] != "ok":
            bad.append(f"gpu{i} ECC enabled (nvidia-smi) but the monitor's ECC read says {vals['ecc']}")
    if not ngpus:
        bad.append("no GPUs: no fault signals to read")
    if faults:
        bad.append(f"{len(faults)} GPU fault lines: " + "; ".join(faults[:3]))
    line("FAIL" if bad else "PASS", "faults", ("; ".join(bad) + " | " if bad else "") + ("; ".join(desc) or "-"))
    return 0


# ---- self-test ----
def enc_varint(v):
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
        v >>= 7
        if not v:
            return bytes(out)


def enc(num, wt, v):
    key = enc_varint(num << 3 | wt)
    if wt == 0:
        return key + enc_varint(v)
    if wt == 1:
        return key + struct.pack("<d", v)
    return key + enc_varint(len(v)) + v


def selftest(args):
    # MetricSample{metric: "cpu.util_pct", device: "cpu", value: 12.5}, written out by hand
    s = bytes.fromhex("0a0c") + b"cpu.util_pct" + bytes.fromhex("1203") + b"cpu" + bytes.fromhex("19") + struct.pack("<d", 12.5)
    assert decode(SAMPLE, s) == {"metric": "cpu.util_pct", "device": "cpu", "value": 12.5}
    b = enc(1, 0, 1) + enc(2, 2, b"w") + enc(3, 0, 1733300000123) + enc(4, 2, s) + enc(4, 2, s) + enc(9, 2, b"x")
    b += bytes.fromhex("6d") + b"\x01\x02\x03\x04"  # unknown fixed32 field 13: skipped
    d = decode(BATCH, b)
    assert d["worker_id"] == "w" and d["timestamp_ms"] == 1733300000123 and len(d["samples"]) == 2, d
    g = enc(1, 0, 0) + enc(4, 2, b"NVIDIA H200") + enc(5, 0, 143771) + enc(6, 2, b"9.0") + enc(8, 0, 700) + enc(9, 0, 1)
    c = decode(CAPABILITIES, enc(8, 2, g) + enc(10, 2, b"cpu") + enc(10, 2, b"cuda") + enc(11, 2, enc(1, 2, b"cuda") + enc(2, 2, b"12.8")))
    assert c["gpus"][0]["memory_mb"] == 143771 and c["gpus"][0]["mig_enabled"] is True and c["gpus"][0]["index"] == 0
    assert c["backends"] == ["cpu", "cuda"] and c["software"] == {"cuda": "12.8"}, c
    assert decode(HEARTBEAT, enc(3, 0, 1) + enc(16, 1, 42.0))["gpu_util_pct"] == 42.0
    assert scalar("i", 0, (1 << 64) - 5) == -5
    print("decoder: ok")
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".log") as f:
        f.write("2026-01-01T00:00:00Z  INFO hwsched_monitor::gpu: GPU fault signals gpu=0 ecc=ok retirement=not_supported events=xid+dbe\n"
                "2026-01-01T00:00:00Z  INFO hwsched_monitor::gpu: NVML initialised gpus=1\n"
                '{"level":"WARN","message":"GPU fault signal unreadable","gpu":1,"error":"Unknown"}\n'
                "2026-01-01T00:00:01Z  WARN hwsched_monitor::gpu: GPU fault gpu=0 fault=XID 79\n")
        f.flush()
        got = [(m, fl.get("gpu"), fl.get("events")) for m, fl, _ in fault_log(f.name)]
    assert got == [("GPU fault signals", "0", "xid+dbe"), ("GPU fault signal unreadable", "1", None),
                   ("GPU fault", "0", None)], got
    print("fault log parser: ok")
    if len(args) >= 2:  # against a running stack
        url, worker = args[0], args[1]
        import tempfile
        with tempfile.NamedTemporaryFile("r", suffix=".json") as f:
            caps(url, worker, f.name)
            c = json.load(f)
        print(f"capabilities: {c['worker_id']} {c['hardware_class']} {len(c['gpus'])} GPUs, "
              f"{c['memory_mb']} MB, backends {c['backends']}, software {c['software']}")
        metrics(url, worker, 3, 0)
    return 0


def main(argv):
    mode, args = argv[1], argv[2:]
    if mode == "alloc":
        return alloc(args)
    if mode == "caps":
        return caps(*args)
    if mode == "check-caps":
        return check_caps(*args)
    if mode == "metrics":
        return metrics(*args)
    if mode == "reserved":
        return reserved(*args)
    if mode == "check-task":
        return check_task(*args)
    if mode == "check-faults":
        return check_faults(*args)
    if mode == "selftest":
        return selftest(args)
    raise SystemExit(f"unknown mode {mode}: see the docstring")


if __name__ == "__main__":
    sys.exit(main(sys.argv if len(sys.argv) > 1 else [sys.argv[0], "selftest"]))
