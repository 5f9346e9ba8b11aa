"""Every service's `/metrics`, scraped by a real Prometheus (Debian's 2.42) and checked against
docs/METRICS.md.

One stack per module: a nats-server, the scheduler, learner and alerting as separate processes
(and the recorder when HWSCHED_TEST_CLICKHOUSE_URL names a ClickHouse: without one it exposes
nothing), and two monitors of one hardware class, each with `--metrics-listen` on a free port.
A first suite of real tasks (`hwsched submit -f ... --wait`) runs before any check, so that the
series that only exist after an event exist: the learner's prediction error once it predicted a
result, its per-worker slowdown once two workers of a class ran the same workload.

- test_prometheus_*: Prometheus scrapes every endpoint each second (its `/api/v1/targets` all
  `up`), a second suite of 1 s tasks runs while it watches, and PromQL answers with plausible
  values: the increase of the succeeded-tasks counter is the number of tasks run, the workers
  gauge is the number of monitors, and the 90th percentile of the task-duration histogram lies in
  the bucket of a 1 s task.
- test_metrics_doc_*: the names, `# TYPE`s and label names each service exposes are exactly
  those its table in docs/METRICS.md lists, and a metric documented as present at `start` is
  there right after the service is ready.
"""
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from conftest import HWSCHED, ROOT, free_port, start_nats_server, wait_for

PROMETHEUS = os.environ.get("HWSCHED_TEST_PROMETHEUS", shutil.which("prometheus") or "/usr/bin/prometheus")
CLICKHOUSE = os.environ.get("HWSCHED_TEST_CLICKHOUSE_URL")
METRICS_DOC = ROOT / "docs" / "METRICS.md"
SERVICES = ["scheduler", "learner", "alerting", "recorder", "monitor"]
WAIT = 60  # seconds for any awaited event: generous, for a loaded 2-core machine
WARM_TASKS = 8  # the first suite, 0.2 s each
LOAD_TASKS = 6  # the second suite, 1 s each, run while Prometheus watches


def http_get(url, timeout=5):
    """The body of a 200 answer, or None (not up yet, refused, an error status)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def wait_until(probe, timeout, what):
    """Polls `probe` (returns (done, state)) until done; on timeout the last state is the message."""
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        done, state = probe()
        if done:
            return state
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last seen: {state}")


def exposed(text):
    """{name as queried in PromQL: (type, label names)} of an OpenMetrics text: a counter under
    `<family>_total`, a histogram under its family name with `le` among its labels."""
    lines = text.splitlines()
    types = dict(re.match(r"# TYPE (\S+) (\S+)$", ln).groups() for ln in lines if ln.startswith("# TYPE "))
    suffixes = {"counter": {"_total"}, "gauge": {""}, "histogram": {"_bucket", "_sum", "_count"}}
    found = {}
    for ln in lines:
        if not ln or ln.startswith("#"):
            continue
        m = re.match(r"([A-Za-z_:][\w:]*)(?:\{(.*)\})? \S+$", ln)
        assert m, f"unparsable sample line {ln!r}"
        sample, labels = m[1], set(re.findall(r'(\w+)="(?:[^"\\]|\\.)*"', m[2] or ""))
        family = max((f for f in types if sample.startswith(f)), key=len, default=None)
        assert family, f"sample {sample} has no # TYPE line"
        kind = types[family]
        assert sample[len(family):] in suffixes.get(kind, {""}), f"sample {sample} does not fit its {kind} {family}"
        name = family + "_total" if kind == "counter" else family
        found.setdefault(name, (kind, set()))[1].update(labels)
    return found


def documented():
    """{service: {metric: (type, label names, appears)}} from docs/METRICS.md's tables: a
    `## <service>` heading, then rows `| `metric` | type | labels | appears | meaning |`."""
    docs, service = {}, None
    for ln in METRICS_DOC.read_text().splitlines():
        if m := re.match(r"## (\S+)\s*$", ln):
            service = m[1]
        elif m := re.match(r"\|\s*`(\w+)`\s*\|", ln):
            cells = [c.strip() for c in ln.strip().strip("|").split("|")]
            assert len(cells) == 5, f"METRICS.md row needs 5 cells: {ln}"
            assert service in SERVICES, f"METRICS.md: {m[1]} under {service!r}, not a service heading"
            _, kind, labels, appears, _ = cells
            assert appears == "start" or appears.startswith("after: "), f"{m[1]}: appears {appears!r}"
            assert m[1] not in docs.setdefault(service, {}), f"METRICS.md lists {m[1]} twice"
            names = set() if labels == "-" else {x.strip() for x in labels.split(",")}
            docs[service][m[1]] = (kind, names, appears)
    return docs


class Stack:
    """The started processes: `ports[service]` lists the metrics ports (two for the monitors)."""

    def __init__(self, tmp, env):
        self.tmp, self.env, self.procs, self.ports, self.at_start = tmp, env, [], {}, {}

    def start(self, service, args, extra_env=None):
        port = free_port()
        log = self.tmp / f"{service}-{port}.log"
        self.procs.append(subprocess.Popen(
            [HWSCHED, *args, "--metrics-listen", f"127.0.0.1:{port}"], env=dict(self.env, **(extra_env or {})),
            stdout=subprocess.DEVNULL, stderr=open(log, "w")))
        proc = self.procs[-1]

        def ready():
            assert proc.poll() is None, f"{service} exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            return http_get(f"http://127.0.0.1:{port}/readyz", timeout=1) == "ready", "not ready"

        wait_until(ready, WAIT, f"{service} /readyz on {port}")
        # right after readiness: what the doc calls `start`
        self.at_start.setdefault(service, []).append(self.scrape_port(port))
        self.ports.setdefault(service, []).append(port)
        return log

    @staticmethod
    def scrape_port(port):
        text = http_get(f"http://127.0.0.1:{port}/metrics")
        assert text is not None and text.rstrip().endswith("# EOF"), f"/metrics on {port}: {text!r}"
        return text

    def scrape(self, service):
        return [self.scrape_port(p) for p in self.ports[service]]

    def value(self, service, sample):
        """A sample's value on the service's (first) endpoint, or None."""
        m = re.search(rf"^{re.escape(sample)} (\S+)$", self.scrape(service)[0], re.M)
        return float(m[1]) if m else None

    def run_suite(self, name, count, seconds):
        """Submits `count` tasks of one workload, each sleeping `seconds`, and waits until all succeeded."""
        tag = uuid.uuid4().hex[:6]
        tasks = [{"task_id": f"{name}-{tag}-{i}", "name": name, "test_type": "unit", "command": ["sleep", str(seconds)],
                  "max_attempts": 1, "requirements": {"cpu_cores": 1, "memory_mb": 64}} for i in range(count)]
        suite = self.tmp / f"{name}-{tag}.json"
        suite.write_text(json.dumps({"tasks": tasks}))
        r = subprocess.run([HWSCHED, "submit", "-f", str(suite), "--wait", "--no-progress", "--wait-timeout-s", "90"],
                           env=self.env, capture_output=True, text=True, timeout=150)
        if r.returncode != 0:
            # why the rest waits (a host busy with other work: "critically overloaded")
            q = subprocess.run([HWSCHED, "queue"], env=self.env, capture_output=True, text=True, timeout=30)
            raise AssertionError(f"suite {name}: exit {r.returncode}\n{r.stdout[-1500:]}\n{r.stderr[-1000:]}\n"
                                 f"hwsched queue:\n{q.stdout[-1500:]}{q.stderr[-500:]}")


def start_nats(stack):
    proc, stack.env["HWSCHED_NATS_URL"] = start_nats_server(stack.tmp / "js")
    stack.procs.append(proc)


def clickhouse(sql):
    req = urllib.request.Request(CLICKHOUSE, data=sql.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read().decode()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("metrics")
    s = Stack(tmp, dict(os.environ, HWSCHED_LOG="info,async_nats=warn"))
    for k in [k for k in s.env if k.startswith("HWSCHED_CLICKHOUSE_")]:
        del s.env[k]
    uniq = uuid.uuid4().hex[:8]
    database = f"hwsched_metrics_{uniq}"
    try:
        start_nats(s)
        # round-robin: both monitors take turns (the learner compares them), and a host busy with
        # other work is no reason to hold tasks back, as the default policy rightly does
        sched_log = s.start("scheduler", ["scheduler", "--policy", "round-robin"])
        s.start("learner", ["learner", "--publish-interval-ms", "300"])
        s.start("alerting", ["alerting"])
        if CLICKHOUSE:
            s.start("recorder", ["recorder"],
                    {"HWSCHED_CLICKHOUSE_URL": CLICKHOUSE, "HWSCHED_CLICKHOUSE_DATABASE": database})
        for w in ("a", "b"):
            s.start("monitor", ["monitor", "--worker-id", f"prom-{w}-{uniq}", "--slots", "1",
                                "--bundle-cache-dir", str(tmp / f"bundles-{w}"), "--task-dir", str(tmp)])
        wait_for(lambda: "scheduler ready" in sched_log.read_text(), WAIT, "the active scheduler")
        wait_until(lambda: ((v := s.value("scheduler", "hwsched_scheduler_workers_known")) == 2, v), WAIT,
                   "the scheduler to know both monitors")
        s.run_suite("prom-warm", WARM_TASKS, 0.2)

        # the learner's event-born series: both monitors ran the workload, so each is compared with its peer
        def learner_families():
            names = exposed(s.scrape("learner")[0])
            want = {"hwsched_learner_prediction_mape", "hwsched_learner_worker_slowdown_ratio"}
            return want <= names.keys(), sorted(names)

        wait_until(learner_families, WAIT, "the learner's prediction error and worker slowdown series")
        if CLICKHOUSE:
            wait_until(lambda: ("hwsched_recorder_pending" in (n := exposed(s.scrape("recorder")[0])), sorted(n)),
                       WAIT, "the recorder's first backlog report")
        yield s
    finally:
        for p in reversed(s.procs):
            p.terminate()
        codes = [p.wait(timeout=30) for p in s.procs]
        if CLICKHOUSE:
            clickhouse(f"DROP DATABASE IF EXISTS {database}")
    assert codes == [0] * len(codes), f"every process exits 0 on SIGTERM: {codes}"


# ---------------------------------------------------------------- Prometheus


class Prometheus:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"

    def query(self, promql):
        """The one value of an instant query (a vector of one element, or a scalar), or None when empty."""
        body = http_get(f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        assert body is not None, f"Prometheus did not answer {promql!r}"
        data = json.loads(body)["data"]
        if data["resultType"] == "scalar":
            return float(data["result"][1])
        assert len(data["result"]) <= 1, f"{promql!r}: more than one series: {data['result']}"
        return float(data["result"][0]["value"][1]) if data["result"] else None


@pytest.fixture(scope="module")
def prometheus(stack, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prometheus")
    jobs = [{"job_name": svc, "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in ports]}]}
            for svc, ports in stack.ports.items()]
    config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
              "scrape_configs": jobs}
    (tmp / "prometheus.yml").write_text(json.dumps(config, indent=1))  # JSON is YAML
    port = free_port()
    log = tmp / "prometheus.log"
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    prom = Prometheus(port)
    try:
        def ready():
            assert proc.poll() is None, f"prometheus exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            return http_get(f"{prom.base}/-/ready", timeout=1) is not None, "not ready"

        wait_until(ready, WAIT, "Prometheus /-/ready")
        expected = sum(len(p) for p in stack.ports.values())

        def all_up():
            body = http_get(f"{prom.base}/api/v1/targets?state=active")
            targets = json.loads(body)["data"]["activeTargets"] if body else []
            state = [(t["labels"]["job"], t["scrapeUrl"], t["health"], t["lastError"]) for t in targets]
            return len(targets) == expected and all(t["health"] == "up" for t in targets), state

        wait_until(all_up, WAIT, f"Prometheus to scrape all {expected} targets up")
        yield prom
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_prometheus_counts_the_tasks_run_while_it_scrapes(stack, prometheus):
    before = prometheus.query("hwsched_scheduler_tasks_succeeded_total")
    assert before == WARM_TASKS, f"Prometheus' first sample holds the first suite: {before}"
    stack.run_suite("prom-load", LOAD_TASKS, 1)
    total = WARM_TASKS + LOAD_TASKS
    # each service counts on its own, and Prometheus scrapes each on its own: wait for all three
    counters = ["hwsched_scheduler_tasks_succeeded_total", "hwsched_scheduler_assignments_total",
                "hwsched_learner_results_total"]
    wait_until(lambda: ((v := [prometheus.query(c) for c in counters]) == [total] * 3, dict(zip(counters, v))),
               WAIT, f"Prometheus to scrape {total} tasks succeeded, assigned and learned from")
    # increase() extrapolates past the first and last samples (by up to about one scrape interval
    # each, over a span of a few seconds here): never less than the truth, far less than twice it
    for counter in counters:
        inc = prometheus.query(f"increase({counter}[5m])")
        assert LOAD_TASKS <= inc < 2 * LOAD_TASKS, f"increase of {counter} over the second suite: {inc}"
    rate = prometheus.query("rate(hwsched_scheduler_tasks_succeeded_total[5m])")
    assert 0 < rate < 2 * LOAD_TASKS, f"tasks per second, averaged since the first scrape: {rate}"

    # gauges, each updated on its own schedule: the two monitors, an empty queue, two learned
    # pairs (two workloads on one hardware class), both monitors scraped
    for promql, want in [("hwsched_scheduler_workers_known", 2), ("hwsched_scheduler_queue_depth", 0),
                         ("hwsched_learner_pairs", 2), ("count(up{job='monitor'} == 1)", 2)]:
        wait_until(lambda: ((v := prometheus.query(promql)) == want, v), WAIT, f"{promql} == {want}")

    # the histogram: only the second suite's 1 s tasks moved it while Prometheus watched, so the
    # 90th percentile interpolates inside the (0.8, 1.6] bucket, and the mean is a little over 1 s
    p90 = prometheus.query(
        "histogram_quantile(0.9, sum by (le) (rate(hwsched_scheduler_task_duration_seconds_bucket[5m])))")
    assert p90 is not None and 0.8 < p90 <= 1.6, f"p90 of 1 s tasks: {p90}"
    mean = prometheus.query("sum(rate(hwsched_scheduler_task_duration_seconds_sum[5m]))"
                            " / sum(rate(hwsched_scheduler_task_duration_seconds_count[5m]))")
    assert mean is not None and 0.95 <= mean < 1.6, f"mean duration of 1 s tasks: {mean}"
    if CLICKHOUSE:
        rows = prometheus.query("increase(hwsched_recorder_rows_total[5m])")
        assert rows is not None and rows >= LOAD_TASKS, f"the recorder stored at least the task runs: {rows}"


# ---------------------------------------------------------------- docs/METRICS.md


def test_metrics_doc_names_each_service_once_with_its_table():
    docs = documented()
    assert sorted(docs) == sorted(SERVICES), f"METRICS.md sections: {sorted(docs)}"


@pytest.mark.parametrize("service", SERVICES)
def test_metrics_doc_lists_exactly_what_the_service_exposes(stack, service):
    if service not in stack.ports:
        pytest.skip("the recorder exposes metrics only with ClickHouse: set HWSCHED_TEST_CLICKHOUSE_URL (make test does)")
    doc = documented()[service]
    problems = []
    for i, (text, start_text) in enumerate(zip(stack.scrape(service), stack.at_start[service])):
        where = f"{service}[{i}] on 127.0.0.1:{stack.ports[service][i]}"
        now, at_start = exposed(text), exposed(start_text)
        for name in sorted(now.keys() - doc.keys()):
            problems.append(f"{where}: {name} ({now[name][0]}, labels {sorted(now[name][1])}) is not in METRICS.md")
        for name in sorted(doc.keys() - now.keys()):
            problems.append(f"{where}: METRICS.md lists {name}, never exposed")
        for name in sorted(doc.keys() & now.keys()):
            kind, labels, appears = doc[name]
            if now[name] != (kind, labels):
                problems.append(f"{where}: {name} is {now[name][0]} {sorted(now[name][1])}, "
                                f"METRICS.md says {kind} {sorted(labels)}")
            if appears == "start" and name not in at_start:
                problems.append(f"{where}: {name} is documented at start but was absent when the service became ready")
    assert not problems, "\n".join(problems)
