"""`hwsched alerting --alertmanager` against a real Alertmanager (Debian's prometheus-alertmanager
0.25), routing to a webhook receiver that this test runs. Real monitors make the alerts: CPU
samples cross `CpuSeen` at once; a monitor killed with SIGKILL raises `WorkerOffline`, and the
same worker coming back resolves it. Checked: the firing alert reaches the receiver through
Alertmanager with its labels and annotations; its resolution follows; a silence set in
Alertmanager keeps one worker's alert from the receiver while the other's goes out; and the
payload hwsched POSTs to a `--webhook` itself has the shape of Alertmanager's own webhook payload,
the one Alertmanager sent in this very test being the golden sample."""
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import HWSCHED, free_port, wait_for

ALERTMANAGER = os.environ.get("HWSCHED_TEST_ALERTMANAGER", shutil.which("prometheus-alertmanager")
                              or "/usr/bin/prometheus-alertmanager")
WAIT = 30

RULES = """
rules:
  - name: CpuSeen
    metric: cpu.util_pct
    op: ">="
    threshold: 0
    for: 0s
    severity: warning
    labels: {team: infra}
    summary: "{worker_id} cpu at {value}"
  - name: WorkerOffline
    metric: worker.heartbeat_age_s
    threshold: 2
    for: 0s
    severity: critical
    summary: "{worker_id} silent for {value} s"
route: {group_by: [alertname], group_wait: 200ms, group_interval: 1s}
inhibit: []
"""

# Alertmanager: one route to the test's receiver, short waits, resolutions sent.
AM_CONFIG = """
global:
  resolve_timeout: 5m
route:
  receiver: {receiver}
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: test-receiver
    webhook_configs:
      - url: {url}/am
        send_resolved: true
  - name: elsewhere
    webhook_configs:
      - url: {url}/elsewhere
        send_resolved: true
"""

# maps whose keys are the alerts' own (label names): compared as "string to string"
LABEL_MAPS = {"labels", "annotations", "groupLabels", "commonLabels", "commonAnnotations"}
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
ZERO_TIME = "0001-01-01T00:00:00Z"


class Receiver:
    """An HTTP listener recording every POST as (path, JSON body, monotonic time)."""

    def __init__(self):
        self.posts = []
        self.changed = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with outer.changed:
                    outer.posts.append((self.path, body, time.monotonic()))
                    outer.changed.notify_all()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, path, want, what):
        """The first POST to `path` (earlier ones included) whose body satisfies `want`."""
        deadline = time.monotonic() + WAIT
        with self.changed:
            while True:
                for p, body, at in self.posts:
                    if p == path and want(body):
                        return body, at
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(p, b.get("status"), alerts(b)) for p, b, _ in self.posts]
                    raise AssertionError(f"timed out waiting for {what} on {path}; received: {seen}")
                self.changed.wait(left)

    def bodies(self, path):
        with self.changed:
            return [(body, at) for p, body, at in self.posts if p == path]


def alerts(body):
    """(alertname, worker_id, status) of each alert of a webhook payload."""
    return [(a["labels"].get("alertname"), a["labels"].get("worker_id"), a["status"]) for a in body.get("alerts", [])]


def has(name, worker, status):
    return lambda body: (name, worker, status) in alerts(body)


def alert_of(body, name, worker):
    return next(a for a in body["alerts"] if (a["labels"]["alertname"], a["labels"]["worker_id"]) == (name, worker))


def shape(value, key=None):
    """The keys and value types of a JSON value, recursively; label maps as "str->str"."""
    if key in LABEL_MAPS:
        assert isinstance(value, dict) and all(isinstance(v, str) for v in value.values()), (key, value)
        return "str->str"
    if isinstance(value, dict):
        return {k: shape(v, k) for k, v in value.items()}
    if isinstance(value, list):
        shapes = [shape(v) for v in value]
        assert all(s == shapes[0] for s in shapes), (key, shapes)
        return [shapes[0]] if shapes else []
    return type(value).__name__


def check_times(alert):
    assert RFC3339.match(alert["startsAt"]), alert
    if alert["status"] == "firing":
        assert alert["endsAt"] == ZERO_TIME, alert
    else:
        assert RFC3339.match(alert["endsAt"]) and alert["endsAt"] != ZERO_TIME, alert
        parse = lambda t: datetime.datetime.fromisoformat(re.sub(r"\.\d+", "", t).replace("Z", "+00:00"))
        assert parse(alert["endsAt"]) >= parse(alert["startsAt"]), alert


def http_json(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read() or b"null")


class Procs:
    """Processes of the test, their stderr in tmp_path; terminated at the end."""

    def __init__(self, tmp_path, env):
        self.tmp_path, self.env, self.procs = tmp_path, env, []

    def start(self, name, argv, ready=None):
        log = self.tmp_path / f"{name}.log"
        p = subprocess.Popen(argv, env=self.env, cwd=self.tmp_path, stdout=subprocess.DEVNULL,
                             stderr=open(log, "w"))
        self.procs.append(p)
        if ready:
            wait_for(lambda: ready in log.read_text() or p.poll() is not None, WAIT, f"{name}: {ready!r}")
            assert p.poll() is None, f"{name} exited: {log.read_text()}"
        return p

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def procs(tmp_path, nats_url):
    ps = Procs(tmp_path, dict(os.environ, HWSCHED_NATS_URL=nats_url, HWSCHED_LOG="info,async_nats=warn"))
    yield ps
    ps.stop()


def start_alertmanager(procs, tmp_path, receiver_url, receiver="test-receiver"):
    # a missing Alertmanager fails the test: `make test` (scripts/setup-env.sh) installs it
    assert os.access(ALERTMANAGER, os.X_OK), f"{ALERTMANAGER} is not installed"
    port = free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text(AM_CONFIG.format(receiver=receiver, url=receiver_url))
    procs.start("alertmanager", [ALERTMANAGER, f"--config.file={config}", f"--storage.path={tmp_path / 'am-data'}",
                                 f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                                 "--log.level=warn"])
    url = f"http://127.0.0.1:{port}"

    def ready():
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    wait_for(ready, WAIT, "alertmanager ready")
    return url


def test_alerts_go_through_a_real_alertmanager_and_our_webhook_payload_has_its_shape(procs, tmp_path):
    receiver = Receiver()
    am = start_alertmanager(procs, tmp_path, receiver.url)
    now = datetime.datetime.now(datetime.timezone.utc)
    silence = http_json(f"{am}/api/v2/silences", {
        "matchers": [{"name": "alertname", "value": "CpuSeen", "isRegex": False, "isEqual": True},
                     {"name": "worker_id", "value": "m2", "isRegex": False, "isEqual": True}],
        "startsAt": now.isoformat(), "endsAt": (now + datetime.timedelta(hours=1)).isoformat(),
        "createdBy": "test_alertmanager", "comment": "m2 in maintenance"})["silenceID"]

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    procs.start("alerting", [HWSCHED, "alerting", "--rules", str(rules), "--alertmanager", am,
                             "--webhook", f"{receiver.url}/direct"], ready="alerting ready")
    monitor = lambda worker: procs.start(worker, [HWSCHED, "monitor", "--worker-id", worker, "--interval-ms", "200"],
                                         ready="monitor ready")
    m1 = monitor("m1")
    monitor("m2")

    # (a) m1's alert, through Alertmanager, with its labels and annotations
    am_firing, _ = receiver.wait("/am", has("CpuSeen", "m1", "firing"), "m1's CpuSeen from Alertmanager")
    a = alert_of(am_firing, "CpuSeen", "m1")
    assert {k: a["labels"].get(k) for k in ("alertname", "severity", "worker_id", "device", "metric", "team")} == {
        "alertname": "CpuSeen", "severity": "warning", "worker_id": "m1", "device": "cpu", "metric": "cpu.util_pct",
        "team": "infra"}, a
    assert a["annotations"]["summary"].startswith("m1 cpu at "), a
    assert a["annotations"]["threshold"] == "0" and float(a["annotations"]["value"]) >= 0, a
    assert am_firing["receiver"] == "test-receiver" and am_firing["groupLabels"] == {"alertname": "CpuSeen"}, am_firing

    # (c) m2's alert reached Alertmanager, which holds it silenced by our silence
    def m2_silenced():
        held = http_json(f"{am}/api/v2/alerts?filter=worker_id%3D%22m2%22")
        return any(x["status"]["state"] == "suppressed" and x["status"]["silencedBy"] == [silence] for x in held)

    wait_for(m2_silenced, WAIT, "m2's CpuSeen held silenced in Alertmanager")
    silenced_at = time.monotonic()
    # hwsched itself did send it (the silence is Alertmanager's, not ours)
    receiver.wait("/direct", has("CpuSeen", "m2", "firing"), "m2's CpuSeen on our webhook")
    direct_firing, _ = receiver.wait("/direct", has("CpuSeen", "m1", "firing"), "m1's CpuSeen on our webhook")

    # (b) a killed monitor raises WorkerOffline; the worker back resolves it, both through Alertmanager
    m1.send_signal(signal.SIGKILL)
    m1.wait()
    offline, _ = receiver.wait("/am", has("WorkerOffline", "m1", "firing"), "WorkerOffline firing")
    assert alert_of(offline, "WorkerOffline", "m1")["labels"]["severity"] == "critical", offline
    monitor("m1")
    am_resolved, resolved_at = receiver.wait("/am", has("WorkerOffline", "m1", "resolved"), "WorkerOffline resolved")
    assert am_resolved["status"] == "resolved", am_resolved
    check_times(alert_of(am_resolved, "WorkerOffline", "m1"))
    direct_resolved, _ = receiver.wait("/direct", has("WorkerOffline", "m1", "resolved"), "our resolution")

    # (c) by now Alertmanager has had many group intervals to send m2's alert: it never did
    assert resolved_at - silenced_at > 2, "too little time after the silence took to tell"
    for body, _ in receiver.bodies("/am"):
        assert all(worker != "m2" for _, worker, _ in alerts(body)), f"a silenced alert was delivered: {body}"
    assert receiver.bodies("/elsewhere") == []

    # (d) our --webhook payload has the shape of Alertmanager's, firing and resolved alike
    for golden, ours in ((am_firing, direct_firing), (am_resolved, direct_resolved)):
        assert shape(ours) == shape(golden), f"\nours:   {json.dumps(ours)}\ngolden: {json.dumps(golden)}"
        assert [ours[k] for k in ("version", "status", "groupKey", "groupLabels", "truncatedAlerts")] == [
            golden[k] for k in ("version", "status", "groupKey", "groupLabels", "truncatedAlerts")], (ours, golden)
        for x in ours["alerts"] + golden["alerts"]:
            check_times(x)
            assert re.fullmatch(r"[0-9a-f]{16}", x["fingerprint"]), x
    # same labels, same fingerprint: ours is computed the way Alertmanager computes it
    for golden, ours, name in ((am_firing, direct_firing, "CpuSeen"), (am_resolved, direct_resolved, "WorkerOffline")):
        g, o = alert_of(golden, name, "m1"), alert_of(ours, name, "m1")
        assert (o["labels"], o["fingerprint"]) == (g["labels"], g["fingerprint"]), (o, g)
        assert o["annotations"].keys() == g["annotations"].keys(), (o, g)
