"""The Grafana dashboards of deploy/grafana, executed: every panel query and every variable query,
with data, on both engines hwsched supports -- the real ClickHouse 18.16 server of `make test`
(HTTP, HWSCHED_TEST_CLICKHOUSE_URL) and the modern engine in-process (chdb).

Each query is expanded the way it is on its way from a dashboard to ClickHouse:
  1. Grafana's template service replaces the dashboard variables: `${worker:singlequote}` gives
     'a','b' (every option for "All", as there is no custom all value); a bare `$worker` goes
     through the plugin's own format function (arrays as 'a','b', scalars as they are);
  2. the plugin's backend replaces its macros: sqlutil.Interpolate (grafana-plugin-sdk-go) with the
     macros of grafana/clickhouse-datasource pkg/macros/macros.go, reproduced below, including how
     a macro without arguments is delimited (see `macro_matches`).
A query that fails, returns no rows, or returns nothing but zeros and empty values fails the test,
naming the dashboard, the panel and the scenario (time range, interval, variable selection).

Each engine gets a fresh database (random name, dropped at the end) with the schema that
`hwsched schema print --server-version <its version>` renders, and a few hours of realistic rows:
six workers of four hardware classes, host and GPU metrics as the monitor names them, the
scheduler's queue gauges and the learner's error gauges, task runs with their test cases,
scheduler decisions, alerts and the workers inventory. The one-minute rollup hw_metrics_1m is filled by its materialized view.
"""
import datetime
import json
import math
import os
import pathlib
import random
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
HWSCHED = os.environ.get("HWSCHED_BIN", str(ROOT / "target" / "debug" / "hwsched"))
OLD_URL_ENV = "HWSCHED_TEST_CLICKHOUSE_URL"
PLUGIN = "grafana-clickhouse-datasource"


def load(path):
    return json.loads(path.read_text())


def datasource_provisioning():
    return yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "clickhouse.yaml").read_text())


# ---------------------------------------------------------------------------------------------
# Grafana's template service (public/app/features/templating/template_srv.ts) and the plugin's
# format function (src/data/CHDatasource.ts `format`).

VARIABLE_RE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}")


def plugin_format(value):
    if isinstance(value, list):
        return "'" + "','".join(value) + "'"
    return value


def grafana_format(value, fmt):
    values = value if isinstance(value, list) else [value]
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    if fmt == "sqlstring":
        return ",".join("'" + v.replace("'", "''") + "'" for v in values)
    if fmt in ("csv", "raw"):
        return ",".join(values)
    raise AssertionError(f"variable format {fmt!r} is not emulated by this test: add it")


def replace_variables(sql, values):
    """values: variable name -> list of selected values (all options for "All")."""
    def sub(m):
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(6)
        if m.group(5):
            raise AssertionError(f"field path {m.group(0)!r} is not emulated by this test")
        if name not in values:
            return m.group(0)  # not a dashboard variable (e.g. a plugin macro): left as it is
        return grafana_format(values[name], fmt) if fmt else plugin_format(values[name])
    return VARIABLE_RE.sub(sub, sql)


# ---------------------------------------------------------------------------------------------
# The plugin's backend: sqlutil.Interpolate + clickhouse-datasource pkg/macros/macros.go.

class MacroError(AssertionError):
    pass


class TimeRange:
    def __init__(self, from_s, to_s, interval_s):
        self.from_s, self.to_s, self.interval_s = from_s, to_s, interval_s


def _dt(t):
    return f"toDateTime({int(math.floor(t))})"


def _dt64(t):
    return f"fromUnixTimestamp64Milli({int(math.floor(t * 1000))})"


def _date(t):
    return "toDate('" + datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d") + "')"


def _rfc3339(t):
    return datetime.datetime.fromtimestamp(int(t), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _one(args, fn):
    if len(args) != 1:
        raise MacroError(f"unexpected number of arguments: expected 1 argument, received {len(args)}")
    return fn(args[0])


def _interval_s(tr):
    return int(max(tr.interval_s, 1))


MACROS = {
    # pkg/macros/macros.go
    "fromTime": lambda tr, a: _dt(tr.from_s),
    "toTime": lambda tr, a: _dt(tr.to_s),
    "fromTime_ms": lambda tr, a: _dt64(tr.from_s),
    "toTime_ms": lambda tr, a: _dt64(tr.to_s),
    "timeFilter": lambda tr, a: _one(a, lambda c: f"{c} >= {_dt(tr.from_s)} AND {c} <= {_dt(tr.to_s)}"),
    "timeFilter_ms": lambda tr, a: _one(a, lambda c: f"{c} >= {_dt64(tr.from_s)} AND {c} <= {_dt64(tr.to_s)}"),
    "dateFilter": lambda tr, a: _one(a, lambda c: f"{c} >= {_date(tr.from_s)} AND {c} <= {_date(tr.to_s)}"),
    "dateTimeFilter": lambda tr, a: _date_time_filter(tr, a),
    "dt": lambda tr, a: _date_time_filter(tr, a),
    "timeInterval": lambda tr, a: _one(
        a, lambda c: f"toStartOfInterval(toDateTime({c}), INTERVAL {_interval_s(tr)} second)"),
    "timeInterval_ms": lambda tr, a: _one(
        a, lambda c: f"toStartOfInterval(toDateTime64({c}, 3), INTERVAL {int(max(tr.interval_s * 1000, 1))} "
                     "millisecond)"),
    "interval_s": lambda tr, a: str(_interval_s(tr)),
    # sqlutil.DefaultMacros, used where the plugin defines none of that name
    "timeFrom": lambda tr, a: _one(a, lambda c: f"{c} >= '{_rfc3339(tr.from_s)}'"),
    "timeTo": lambda tr, a: _one(a, lambda c: f"{c} <= '{_rfc3339(tr.to_s)}'"),
    "timeGroup": lambda tr, a: _unsupported("$__timeGroup (SQL Server's datepart) is not for ClickHouse"),
    "table": lambda tr, a: "",
    "column": lambda tr, a: "",
}
# Macros that take no arguments: sqlutil still looks for an argument list after them (below).
NO_ARGS = {"fromTime", "toTime", "fromTime_ms", "toTime_ms", "interval_s", "table", "column"}


def _unsupported(why):
    raise MacroError(why)


def _date_time_filter(tr, args):
    if len(args) != 2:
        raise MacroError(f"unexpected number of arguments: expected 2 arguments, received {len(args)}")
    d, t = args
    return (f"({d} >= {_date(tr.from_s)} AND {d} <= {_date(tr.to_s)}) AND "
            f"({t} >= {_dt(tr.from_s)} AND {t} <= {_dt(tr.to_s)})")


def macro_matches(sql, name):
    """sqlutil.getMacroMatches: after `$__name` it scans on for a balanced (...) argument list --
    even past other text -- unless a ')' comes before any '('. So `$__interval_s AS s, count()`
    becomes one macro call whose 'arguments' are ` AS s, count(`: keep no-argument macros right
    before a ')' or wrap them: `($__toTime)`."""
    found = []
    for m in re.finditer(r"\$__" + re.escape(name) + r"\b", sql):
        rest = sql[m.start():]
        depth, macro_end, arg_start, force_break = 0, 0, 0, False
        for idx, ch in enumerate(rest):
            if (depth == 0 and macro_end > 0) or force_break:
                break
            if ch == "(":
                depth += 1
                if arg_start == 0:
                    arg_start = idx + 1
            elif ch == ")":
                if depth == 0:
                    macro_end, force_break = 0, True
                    continue
                depth -= 1
                macro_end = idx + 1
        if macro_end == 0:
            macro_end = m.end() - m.start()
        args = rest[arg_start:macro_end - 1] if arg_start > 0 else ""
        found.append((rest[:macro_end], args))
    return found


def interpolate(sql, tr, order=None):
    """sqlutil.Interpolate: each macro in turn (Go map order: any), every occurrence replaced."""
    for name in order or sorted(MACROS):
        for text, args in macro_matches(sql, name):
            if name in NO_ARGS and text != "$__" + name:
                raise MacroError(f"$__{name} swallows the text after it ({text!r}): the plugin would replace "
                                 f"all of it; put $__{name} right before a ')' or write ($__{name})")
            res = MACROS[name](tr, [a.strip() for a in args.split(",")])
            sql = sql.replace(text, res)
    return sql


def expand(raw, values, tr):
    # the frontend replaces the variables, the backend then the macros
    sql = replace_variables(raw, values)
    forward = interpolate(sql, tr)
    backward = interpolate(sql, tr, order=sorted(MACROS, reverse=True))
    assert forward == backward, "macro expansion depends on the order macros are applied in"
    leftover = re.findall(r"\$\{?\w+", forward)
    assert not leftover, f"unexpanded {leftover} in\n{forward}"
    return forward


def test_macro_expansion_follows_the_plugin():
    tr = TimeRange(1700000000, 1700003600, 20)
    assert interpolate("WHERE $__timeFilter(time) AND x", tr) == \
        "WHERE time >= toDateTime(1700000000) AND time <= toDateTime(1700003600) AND x"
    assert interpolate("intDiv(toUInt32(t), $__interval_s) * $__interval_s)", tr) == "intDiv(toUInt32(t), 20) * 20)"
    assert interpolate("$__timeInterval(time)", tr) == "toStartOfInterval(toDateTime(time), INTERVAL 20 second)"
    assert interpolate("time <= ($__toTime) AND f(x)", tr) == "time <= (toDateTime(1700003600)) AND f(x)"
    assert interpolate("$__fromTime_ms", tr) == "fromUnixTimestamp64Milli(1700000000000)"
    assert interpolate("$__dateFilter(d)", tr) == "d >= toDate('2023-11-14') AND d <= toDate('2023-11-14')"
    assert interpolate("$__interval_s", TimeRange(0, 1, 0.2)) == "1"
    # the sqlutil scan: a no-argument macro followed by '(' before ')' takes all that text with it
    assert macro_matches("$__toTime GROUP BY f HAVING max(x) > 1", "toTime") == \
        [("$__toTime GROUP BY f HAVING max(x)", "x")]
    with pytest.raises(MacroError, match="swallows"):
        interpolate("SELECT $__interval_s AS s, count() FROM t", tr)
    values = {"worker": ["w1", "o'w"], "hardware_class": ["gpu:a"]}
    assert replace_variables("IN (${worker:singlequote}) $worker [[hardware_class]] $__timeFilter(t) $other",
                             values) == "IN ('w1','o\\'w') 'w1','o'w' 'gpu:a' $__timeFilter(t) $other"


# ---------------------------------------------------------------------------------------------
# Static checks of the files.

def test_dashboards_exist_and_are_consistent():
    assert {p.stem for p in DASHBOARDS} >= {"hwsched-fleet", "hwsched-worker", "hwsched-tasks",
                                            "hwsched-scheduler", "hwsched-learner", "hwsched-alerts"}
    ds_uid = datasource_provisioning()["datasources"][0]["uid"]
    uids = set()
    for path in DASHBOARDS:
        d = load(path)
        assert d["uid"] not in uids, f"{path.name}: duplicate uid"
        uids.add(d["uid"])
        assert d["schemaVersion"] >= 36 and d["title"] and "hwsched" in d["tags"]
        names = {v["name"]: v for v in d["templating"]["list"]}
        for name in ("worker", "hardware_class"):
            v = names[name]
            assert v["type"] == "query" and v["multi"] and v["includeAll"], f"{path.name}: {name}"
            assert v["datasource"] == {"type": PLUGIN, "uid": ds_uid}
            assert v["query"]["rawSql"] == v["definition"]
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for p in d["panels"]:
            g = p["gridPos"]
            assert g["x"] + g["w"] <= 24, f"{path.name}: {p['title']} overflows the grid"
            if p["type"] == "row":
                continue
            assert p["datasource"] == {"type": PLUGIN, "uid": ds_uid}, f"{path.name}: {p['title']}"
            assert p["targets"], f"{path.name}: {p['title']} has no query"
            for t in p["targets"]:
                assert t["datasource"] == p["datasource"] and t["editorType"] == "sql" and t["rawSql"].strip()
                # a time series needs the time column first; tables and stats read table frames
                assert t["format"] == (0 if p["type"] == "timeseries" else 1), f"{path.name}: {p['title']}"


def test_fleet_panels_read_the_rollup():
    """A 24 h x 100-worker fleet panel must not scan raw hw_metrics rows."""
    d = load(GRAFANA / "dashboards" / "hwsched-fleet.json")
    for p in d["panels"]:
        for t in p.get("targets", []):
            assert not re.search(r"\bhw_metrics\b(?!_1m)", t["rawSql"]), f"{p['title']} reads raw hw_metrics"


def test_provisioning_files():
    (ds,) = datasource_provisioning()["datasources"]
    assert ds["type"] == PLUGIN
    j = ds["jsonData"]
    assert j["host"] == "${HWSCHED_CLICKHOUSE_HOST}" and j["port"] == "${HWSCHED_CLICKHOUSE_HTTP_PORT}"
    assert j["protocol"] in ("http", "native") and j["username"] == "hwsched_reader"
    assert j["defaultDatabase"] == "hwsched"
    assert ds["secureJsonData"]["password"] == "${HWSCHED_CLICKHOUSE_READER_PASSWORD}"
    (prov,) = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "hwsched.yaml").read_text())["providers"]
    assert prov["type"] == "file" and prov["options"]["path"]


# ---------------------------------------------------------------------------------------------
# Engines.

class OldServer:
    """ClickHouse over HTTP (POST), like the plugin's http protocol."""
    name = "clickhouse-18.16"

    def __init__(self, url):
        self.url = url.rstrip("/") + "/"
        self.database = None

    def _post(self, query, body=None, database=None):
        params = {"max_execution_time": "60"}
        if database:
            params["database"] = database
        if body is None:
            data = query.encode()
        else:
            params["query"] = query
            data = body.encode()
        req = urllib.request.Request(self.url + "?" + urllib.parse.urlencode(params), data=data)
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.read().decode()
        except urllib.error.HTTPError as e:
            raise RuntimeError(e.read().decode(errors="replace").strip()) from None

    def version(self):
        return self._post("SELECT version()").strip()

    def execute(self, stmt):
        self._post(stmt)

    def insert(self, table, rows):
        self._post(f"INSERT INTO {self.database}.{table} FORMAT JSONEachRow", body=rows)

    def select(self, sql):
        """(names, types, rows) of a query run in the test database, as TSV cells."""
        return parse_tsv(self._post(sql + "\nFORMAT TabSeparatedWithNamesAndTypes", database=self.database))


class Chdb:
    name = "chdb"

    def __init__(self, sess):
        self.sess = sess
        self.database = None

    def version(self):
        return self.sess.query("SELECT version()", "TSV").data().strip()

    def execute(self, stmt):
        self.sess.query(stmt)

    def insert(self, table, rows):
        self.sess.query(f"INSERT INTO {self.database}.{table} FORMAT JSONEachRow\n" + rows)

    def select(self, sql):
        return parse_tsv(self.sess.query(sql, "TabSeparatedWithNamesAndTypes").data())


def parse_tsv(text):
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    names, types = lines[0].split("\t"), lines[1].split("\t")
    return names, types, [line.split("\t") for line in lines[2:]]


@pytest.fixture(scope="module")
def chdb_session(tmp_path_factory):
    from chdb import session as chs
    # chdb runs one embedded server (one data path) per process; another module may hold it.
    try:
        sess = chs.Session(str(tmp_path_factory.mktemp("chdb-dashboards")))
    except Exception as e:  # noqa: BLE001 - chdb raises a bare RuntimeError
        held = re.search(r"initialized with path '([^']+)'", str(e))
        if not held:
            raise
        sess = chs.Session(held.group(1))  # a second connection to it, with its own current database
    yield sess
    sess.close()


def schema(version, database):
    if not os.path.exists(HWSCHED):
        pytest.fail(f"{HWSCHED} not found: build it (cargo build -p hwsched) or set HWSCHED_BIN")
    out = subprocess.run([HWSCHED, "schema", "print", "--server-version", version, "--clickhouse-database", database],
                         check=True, capture_output=True, text=True).stdout
    return [s.strip() for s in out.split(";") if s.strip()]


@pytest.fixture(scope="module", params=["clickhouse-18.16", "chdb"])
def engine(request):
    if request.param == "clickhouse-18.16":
        url = os.environ.get(OLD_URL_ENV)
        if not url:
            yield None  # each test fails, saying why (a missing server is a failure, not a skip)
            return
        eng = OldServer(url)
    else:
        eng = Chdb(request.getfixturevalue("chdb_session"))
    version = eng.version()
    database = "hwsched_dash_" + uuid.uuid4().hex[:10]
    try:
        for stmt in schema(version, database):
            eng.execute(stmt)
        eng.database = database
        if isinstance(eng, Chdb):
            eng.execute(f"USE {database}")
        eng.now = load_sample_data(eng)
        yield eng
    finally:
        eng.execute(f"DROP DATABASE IF EXISTS {database}")


# ---------------------------------------------------------------------------------------------
# Sample data: what the recorder writes for a small fleet over the last six hours.

H100 = "gpu:nvidia-h100-80gb-hbm3"
WORKERS = [
    # id, hardware class, GPUs, slots, cores, memory MB, final state, GPU model, power limit W
    ("gpu-h100-01", H100, 2, 4, 96, 1031000, "active", "NVIDIA H100 80GB HBM3", 700.0),
    ("gpu-h100-02", H100, 2, 4, 96, 1031000, "active", "NVIDIA H100 80GB HBM3", 700.0),
    ("gpu-a10-01", "gpu:nvidia-a10", 1, 2, 32, 257000, "active", "NVIDIA A10", 150.0),
    ("cpu-epyc-01", "cpu:x86_64-amd-epyc-7b13", 0, 8, 64, 515000, "active", "", 0.0),
    ("cpu-epyc-02", "cpu:x86_64-amd-epyc-7b13", 0, 8, 64, 515000, "draining", "", 0.0),
    ("arm-01", "cpu:aarch64-neoverse-n1", 0, 4, 16, 64000, "offline", "", 0.0),
]
HOURS = 6
STEP_S = 60
# the single-selection scenario picks these (a worker that has every kind of data)
SINGLE = {"hardware_class": H100, "worker": "gpu-h100-01"}


def load_sample_data(eng):
    rnd = random.Random(16)
    now = int(time.time())
    start = now - HOURS * 3600
    offline_at = now - 3600  # arm-01 stopped reporting an hour ago
    types = {}
    for table, name, typ in eng.select(f"SELECT table, name, type FROM system.columns "
                                       f"WHERE database = '{eng.database}'")[2]:
        types.setdefault(table, {})[name] = typ

    def insert(table, rows):
        cols = types[table]
        def conv(row):
            out = {}
            for k, v in row.items():
                t = cols[k]
                if "DateTime64" in t:
                    v = round(float(v), 3)
                elif "DateTime" in t:
                    v = int(v)
                out[k] = v
            return json.dumps(out)
        for i in range(0, len(rows), 20000):
            eng.insert(table, "\n".join(conv(r) for r in rows[i:i + 20000]) + "\n")

    # workers: a first row when registered, the latest on the last refresh (ReplacingMergeTree(last_seen))
    wrows = []
    for wid, cls, gpus, slots, cores, mem, state, model, _ in WORKERS:
        base = dict(worker_id=wid, hostname=wid + ".lab", hardware_class=cls,
                    cpu_model="AMD EPYC 7B13" if "x86" in cls or "gpu" in cls else "Neoverse-N1",
                    logical_cores=cores, memory_mb=mem, slots=slots, gpu_count=gpus, gpu_models=[model] * gpus,
                    accelerators=[], labels=["rack=r1", "zone=a"], first_seen=start - 86400)
        wrows.append(dict(base, state="active", last_seen=start))
        wrows.append(dict(base, state=state, last_seen=offline_at if state == "offline" else now - 20))
    insert("workers", wrows)

    # hw_metrics: the monitor's names and devices, one sample a minute
    mrows = []
    def m(t, wid, device, metric, value):
        mrows.append(dict(time=t + rnd.random(), worker_id=wid, device=device, metric=metric, value=value))
    for t in range(start, now, STEP_S):
        phase = (t - start) / 3600.0
        for k, (wid, cls, gpus, slots, cores, mem, state, model, limit) in enumerate(WORKERS):
            if wid == "arm-01" and t >= offline_at:
                continue
            load = 0.5 + 0.4 * math.sin(phase + k)
            cpu = max(0.0, min(100.0, 100 * load + rnd.uniform(-8, 8)))
            m(t, wid, "cpu", "cpu.util_pct", cpu)
            if k == 0:  # per-core rows (Detailed level) must not leak into the host panels
                m(t, wid, "cpu0", "cpu.util_pct", min(100.0, cpu * 1.1))
            m(t, wid, "cpu", "cpu.load1", cores * load * 0.8)
            m(t, wid, "cpu", "cpu.temp_c", 45 + 30 * load)
            used = mem * (0.3 + 0.4 * load)
            m(t, wid, "mem", "mem.used_pct", 100 * used / mem)
            m(t, wid, "mem", "mem.used_mb", used)
            m(t, wid, "mem", "mem.available_mb", mem - used)
            m(t, wid, "worker", "worker.slots_used", float(round(slots * load)))
            m(t, wid, "worker", "monitor.dropped_batches", 0.0)
            m(t, wid, "eth0", "net.rx_bytes_per_s", 2e7 * load)
            m(t, wid, "eth0", "net.tx_bytes_per_s", 5e6 * load)
            m(t, wid, "nvme0n1", "disk.used_pct", 40 + phase)
            for g in range(gpus):
                dev = f"gpu{g}"
                util = max(0.0, min(100.0, 100 * load + rnd.uniform(-5, 5) - 10 * g))
                temp = 50 + 40 * load + (3 if wid == "gpu-h100-01" and g == 0 else 0)
                power = limit * (0.2 + 0.8 * util / 100)
                m(t, wid, dev, "gpu.util_pct", util)
                m(t, wid, dev, "gpu.mem_used_mb", 80000 * load)
                m(t, wid, dev, "gpu.mem_used_pct", 100 * load)
                m(t, wid, dev, "gpu.temp_c", temp)
                m(t, wid, dev, "gpu.power_w", power)
                m(t, wid, dev, "gpu.power_limit_w", limit)
                m(t, wid, dev, "gpu.throttle_thermal", 1.0 if temp > 85 else 0.0)
                m(t, wid, dev, "gpu.throttle_power", 1.0 if power > 0.97 * limit else 0.0)
                m(t, wid, dev, "gpu.throttle_hw_slowdown", 0.0)
            if state != "offline":
                degraded = wid == "gpu-a10-01" and t > now - 7200
                m(t, wid, "model", "learner.slowdown_ratio", 1.6 if degraded else 1.0 + 0.05 * math.sin(phase * 3 + k))
                m(t, wid, "model", "learner.degraded", 1.0 if degraded else 0.0)
        for age, mape in (("unseen-type", 0.6), ("unseen", 0.35), ("1-4", 0.22), ("5-19", 0.12), ("20+", 0.07)):
            m(t, "hwsched-learner", age, "learner.prediction_mape", mape * (1 + 0.1 * math.sin(phase)))
        m(t, "hwsched-learner", "model", "learner.pairs", float(40 + int(phase * 5)))
        m(t, "hwsched-learner", "model", "learner.degraded_workers", 1.0 if t > now - 7200 else 0.0)
        queued = max(0.0, 12 * math.sin(phase * 2)) + rnd.randint(0, 3)
        m(t, "hwsched-scheduler", "queue", "scheduler.queued", queued)
        m(t, "hwsched-scheduler", "queue", "scheduler.oldest_queued_s", 30 * queued)
    insert("hw_metrics", mrows)

    # task_runs and scheduler_decisions: one attempt about every 70 s
    live = [w for w in WORKERS if w[6] != "offline"]
    runs, decisions = [], []
    test_types = ["unit", "integration", "inference", "training", "benchmark"]
    statuses = ["succeeded"] * 85 + ["failed"] * 7 + ["timed_out"] * 3 + ["error"] * 2 + ["cancelled"] * 3
    n = 0
    for finished in range(start + 300, now - 10, 70):
        n += 1
        pool = WORKERS if finished < offline_at else live
        wid, cls = rnd.choice(pool)[:2]
        status = rnd.choice(statuses)
        if n % 40 == 0:  # every worker sees some failures
            wid, cls, status = WORKERS[(n // 40) % len(live)][0], WORKERS[(n // 40) % len(live)][1], "failed"
        test_type = rnd.choice(test_types)
        speed = 0.4 if "h100" in cls else 0.8 if "a10" in cls else 1.5
        duration = rnd.uniform(20, 400) * speed
        predicted = duration * rnd.uniform(0.7, 1.4)
        started = finished - duration
        assigned = started - rnd.uniform(0.2, 2)
        queued = assigned - rnd.uniform(1, 120)
        task_id = f"t-{n:05d}"
        runs.append(dict(task_id=task_id, attempt=1, name=f"{test_type}-suite-{n % 17}", producer="ci",
                         test_type=test_type, model_family="llama", model_id=f"llama-{n % 3}b", worker_id=wid,
                         hardware_class=cls, status=status, exit_code=0 if status == "succeeded" else 1,
                         queued_at=queued, assigned_at=assigned, started_at=started, finished_at=finished,
                         duration_s=duration, predicted_duration_s=predicted, cpu_peak_pct=rnd.uniform(50, 400),
                         cpu_avg_pct=rnd.uniform(20, 100), memory_peak_mb=rnd.randint(500, 60000),
                         gpu_memory_peak_mb=rnd.randint(1000, 70000) if "gpu" in cls else 0,
                         error="" if status == "succeeded" else f"{status}: exit 1 in step {n % 5}"))
        others = [w for w in pool if w[0] != wid]
        rnd.shuffle(others)
        candidates = [(wid, cls)] + [(w[0], w[1]) for w in others[:2]]
        cost = rnd.uniform(10, 100)
        for rank, (cw, cc) in enumerate(candidates):
            wait = rnd.uniform(0, 60)
            decisions.append(dict(time=assigned, task_id=task_id, attempt=1, name=runs[-1]["name"], producer="ci",
                                  test_type=test_type, policy="hwsched" if n % 5 else "least-loaded", rank=rank,
                                  chosen=1 if rank == 0 else 0, worker_id=cw, hardware_class=cc, cost=cost,
                                  wait_s=wait, completion_s=wait + predicted, predicted_runtime_s=predicted,
                                  candidates_total=len(candidates) + rnd.randint(0, 2),
                                  components=json.dumps({"affinity": 0.1, "completion": round(cost * 0.6, 3),
                                                         "load": 0.2, "thermal": 0.05}, sort_keys=True)))
            cost *= rnd.uniform(1.05, 1.5)
    runs.append(dict(runs[-1]))  # a redelivered result: FINAL counts it once
    insert("task_runs", runs)

    # test_cases: the JUnit report of every run, five cases; a failed run has a failed case,
    # test_flaky fails now and then, test_gpu is skipped off GPU classes
    crows = []
    for r in runs:
        speed = 0.4 if "h100" in r["hardware_class"] else 0.8 if "a10" in r["hardware_class"] else 1.5
        for i, case in enumerate(["test_load", "test_forward", "test_backward", "test_flaky", "test_gpu"]):
            status = "passed"
            if r["status"] != "succeeded" and case == "test_backward":
                status = "failed"
            elif case == "test_flaky" and rnd.random() < 0.1:
                status = "error"
            elif case == "test_gpu" and "gpu" not in r["hardware_class"]:
                status = "skipped"
            crows.append(dict(time=r["finished_at"], task_id=r["task_id"], attempt=r["attempt"],
                              worker_id=r["worker_id"], hardware_class=r["hardware_class"], suite="pytest",
                              classname=f"tests.test_{r['test_type']}", name=case, case_index=i, status=status,
                              duration_s=0.0 if status == "skipped" else rnd.uniform(0.1, 3.0) * (i + 1) * speed,
                              message="" if status == "passed" else f"AssertionError: {case} in step {i}"))
    insert("test_cases", crows)
    insert("scheduler_decisions", decisions)

    # alerts: one row per transition
    arows = []
    def alert(fp, rule, severity, wid, device, metric, value, threshold, transitions, summary, muted_by=""):
        starts = transitions[0][1]
        for state, at in transitions:
            arows.append(dict(time=at, fingerprint=fp, rule=rule, severity=severity, state=state, worker_id=wid,
                              device=device, metric=metric, value=value, threshold=threshold, starts_at=starts,
                              ends_at=at if state == "resolved" else 0, summary=summary,
                              label_keys=["alertname", "severity", "worker_id"],
                              label_values=[rule, severity, wid], muted_by=muted_by))
    alert("f-hot-1", "GpuHot", "critical", "gpu-h100-01", "gpu0", "gpu.temp_c", 91.0, 88.0,
          [("pending", now - 3000), ("firing", now - 2700)], "gpu0 of gpu-h100-01 at 91 C")
    alert("f-pow-1", "GpuPowerCapped", "warning", "gpu-h100-01", "gpu1", "gpu.throttle_power", 1.0, 1.0,
          [("firing", now - 2600)], "gpu1 of gpu-h100-01 power capped", muted_by="inhibited:GpuHot")
    alert("f-off-1", "WorkerOffline", "critical", "arm-01", "", "worker.heartbeat_age_s", 3500.0, 60.0,
          [("firing", offline_at + 60)], "arm-01 sends no heartbeats", muted_by="silence:maintenance-arm")
    alert("f-mem-2", "GpuMemoryHigh", "warning", "gpu-h100-02", "gpu1", "gpu.mem_used_pct", 97.0, 95.0,
          [("firing", now - 4 * 3600), ("resolved", now - 3 * 3600 - 1800)], "gpu1 of gpu-h100-02 memory full")
    alert("f-hot-0", "GpuHot", "critical", "gpu-h100-01", "gpu1", "gpu.temp_c", 89.0, 88.0,
          [("firing", now - 5 * 3600), ("resolved", now - 5 * 3600 + 720)], "gpu1 of gpu-h100-01 at 89 C")
    alert("f-queue", "QueueStale", "warning", "hwsched-scheduler", "queue", "scheduler.oldest_queued_s", 700.0,
          600.0, [("firing", now - 7200), ("resolved", now - 6000)], "a task queued for over 10 minutes")
    alert("f-learn", "WorkerDegraded", "warning", "gpu-a10-01", "model", "learner.degraded", 1.0, 1.0,
          [("firing", now - 7000)], "gpu-a10-01 runs 1.6x slower than its class")
    alert("f-fail", "TaskFailureRate", "warning", "", "", "task.failure_rate", 0.2, 0.1,
          [("firing", now - 1200)], "fleet failure rate 20%")
    arows.append(dict(arows[0]))  # a redelivered transition
    insert("alerts", arows)

    rolled = eng.select("SELECT count() FROM hw_metrics_1m")[2][0][0]
    assert int(rolled) > 0, "the materialized view did not fill hw_metrics_1m"
    return now


# ---------------------------------------------------------------------------------------------
# The panels, run.

EMPTY = {"", "0", "-0", "nan", "-nan", "inf", "-inf", "\\N", "[]", "0000-00-00", "0000-00-00 00:00:00"}


def meaningful(cell):
    return cell not in EMPTY and not cell.startswith("1970-01-01")


def scenarios(now):
    six = TimeRange(now - 6 * 3600, now + 30, 20)
    day = TimeRange(now - 24 * 3600, now + 30, 120)
    return [("last 6h, 20s, All", six, "all"), ("last 24h, 2m, All", day, "all"),
            ("last 6h, 20s, " + SINGLE["worker"], six, SINGLE)]


def queries(dashboard):
    """(panel title, target) of every panel, rows' nested panels included."""
    out = []
    for p in dashboard["panels"]:
        for q in [p] + p.get("panels", []):
            for t in q.get("targets", []):
                out.append((q["title"], t))
    return out


def run_query(eng, sql):
    try:
        return eng.select(sql), None
    except Exception as e:  # noqa: BLE001 - a server or chdb error, reported with the query
        return None, str(e).strip().splitlines()[0][:500]


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_every_query_returns_data(engine, path):
    if engine is None:
        pytest.fail(f"{OLD_URL_ENV} is not set: the dashboards must run against the real ClickHouse 18.16 server "
                    f"(`make test` sets it; or start one with scripts/clickhouse.sh start build/clickhouse-test "
                    f"18123 19000 and export {OLD_URL_ENV}=http://127.0.0.1:18123)", pytrace=False)
    d = load(path)
    failures, ran = [], 0
    for label, tr, selection in scenarios(engine.now):
        where = f"{engine.name} [{label}]"
        values = {}
        for var in d["templating"]["list"]:
            raw = var["query"]["rawSql"] if isinstance(var["query"], dict) else var["query"]
            sql = expand(raw, values, tr)
            result, err = run_query(engine, sql)
            ran += 1
            if err or not result[2]:
                failures.append(f"{d['title']} / variable {var['name']} {where}: {err or 'no rows'}\n{sql}")
                break
            options = [r[0] for r in result[2]]
            if selection == "all":
                values[var["name"]] = options
            else:
                assert selection[var["name"]] in options, f"{var['name']}: {selection[var['name']]} not in {options}"
                values[var["name"]] = [selection[var["name"]]]
        else:
            for title, target in queries(d):
                try:
                    sql = expand(target["rawSql"], values, tr)
                except AssertionError as e:
                    failures.append(f"{d['title']} / {title} {where}: {e}")
                    continue
                result, err = run_query(engine, sql)
                ran += 1
                if err:
                    failures.append(f"{d['title']} / {title} {where}: {err}\n{sql}")
                    continue
                names, types, rows = result
                if not rows:
                    failures.append(f"{d['title']} / {title} {where}: no rows\n{sql}")
                elif not any(meaningful(c) for r in rows for c in r):
                    failures.append(f"{d['title']} / {title} {where}: only zeros and empty values\n{sql}")
                elif target["format"] == 0 and not types[0].startswith("DateTime"):
                    failures.append(f"{d['title']} / {title} {where}: a time series must start with its time "
                                    f"column, not {names[0]} {types[0]}\n{sql}")
    if failures:
        pytest.fail(f"{len(failures)} of {ran} queries failed:\n\n" + "\n\n".join(failures), pytrace=False)
