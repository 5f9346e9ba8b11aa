"""The spans of one task reach a real OTLP receiver, rotel (`rotel-agent`, pinned in
requirements.txt), joined in one trace from the producer's `traceparent` on.

A producer (nats-py, as examples/python does) submits one task with a known W3C
`traceparent`. The scheduler and a monitor run as separate processes, so their spans carry
their own `service.name` (`hwsched all` would report `hwsched-all`), and export over
OTLP/HTTP to rotel. Rotel is the receiver: it prints what it received with
`--debug-log traces --debug-log-verbosity detailed` (its blackhole exporter drops the rest),
and the test reads that print-out. Checked: the trace holds exactly the scheduler's `assign`
span and the monitor's `task` span, each under its service name; `assign` is the child of
the producer's span, `task` the child of `assign`: the monitor continues the span that sent
the assignment, so every span's parent is in the trace but the root's, which is the
producer's span id."""
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import uuid

import nats

from conftest import HWSCHED, ROOT, free_port, wait_for

ROTEL = os.environ.get("HWSCHED_TEST_ROTEL", str(
    ROOT / "build" / "venv" / "lib" / "python3.11" / "site-packages" / "rotel" / "rotel-agent"))
WAIT = 30


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def plain(text):
    """Without terminal colours (rotel colours its own log lines even into a file)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def received_spans(text):
    """Spans in rotel's detailed debug log: dicts of service, trace, parent, id, name, attrs."""
    spans, service, span, section = [], None, None, None
    for line in plain(text).splitlines():
        stripped = line.strip()
        if stripped.startswith("ResourceSpans #"):
            service, span, section = None, None, "resource"
        elif stripped.startswith("Span #"):
            span = {"service": service, "attrs": {}}
            spans.append(span)
            section = "span"
        elif stripped in ("Attributes:", "Events:", "Links:"):
            section = {"Attributes:": "attrs"}.get(stripped, "other") if span else section
        elif m := re.fullmatch(r"-> ([\w.]+): \w+\((.*)\)", stripped):
            if section == "resource" and m[1] == "service.name":
                service = m[2]
            elif section == "attrs":
                span["attrs"][m[1]] = m[2]
        elif span is not None and (m := re.fullmatch(r"(Trace ID|Parent ID|ID|Name)\s*:\s*(\S*)", stripped)):
            span[{"Trace ID": "trace", "Parent ID": "parent", "ID": "id", "Name": "name"}[m[1]]] = m[2]
    return spans


async def submit(nats_url, task, traceparent):
    """Submits `task` as a producer does, with `traceparent`; returns the scheduler's final reply."""
    nc = await nats.connect(nats_url)
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.jetstream().publish("hws.tasks.submit", json.dumps(task).encode(), headers={
            "Content-Type": "application/json", "Nats-Msg-Id": task["task_id"], "Hws-Reply-To": inbox,
            "traceparent": traceparent})
        while True:
            reply = json.loads((await sub.next_msg(timeout=WAIT)).data)
            assert reply.get("accepted") or reply.get("finished"), reply
            if reply.get("finished"):
                return reply
    finally:
        await nc.close()


def test_one_tasks_spans_reach_rotel_as_one_trace(nats_url, tmp_path):
    procs = {}
    http_port, grpc_port = free_port(), free_port()
    rotel_log = tmp_path / "rotel.log"
    procs["rotel"] = subprocess.Popen(
        [ROTEL, "start", "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
         "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}", "--exporter", "blackhole",
         "--debug-log", "traces", "--debug-log-verbosity", "detailed",
         "--pid-file", str(tmp_path / "rotel.pid"), "--log-file", str(tmp_path / "rotel-agent.log")],
        stdout=open(rotel_log, "w"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: listening(http_port), WAIT, "rotel's OTLP/HTTP endpoint")
        env = dict(os.environ, HWSCHED_NATS_URL=nats_url, HWSCHED_LOG="info,async_nats=warn",
                   HWSCHED_OTLP_ENDPOINT=f"http://127.0.0.1:{http_port}")
        worker = f"otlp-{uuid.uuid4().hex[:8]}"

        def start(name, args, ready):
            log = tmp_path / f"{name}.log"
            procs[name] = subprocess.Popen([HWSCHED, *args], env=env, stdout=subprocess.DEVNULL,
                                           stderr=open(log, "w"))
            wait_for(lambda: ready in log.read_text(), WAIT, f"{name}: {ready!r}")

        # round-robin ignores the load of other processes, which on a busy test machine would
        # keep the worker "critically overloaded" for the hwsched policy
        start("scheduler", ["scheduler", "--policy", "round-robin"], "scheduler ready")
        start("monitor", ["monitor", "--worker-id", worker, "--slots", "1",
                          "--task-dir", str(tmp_path), "--bundle-cache-dir", str(tmp_path / "bundles"),
                          "--spool-dir", str(tmp_path / "spool")], "monitor ready")

        trace_id, producer_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
        task_id = f"otlp-{uuid.uuid4().hex[:8]}"
        task = {"task_id": task_id, "command": ["true"], "requirements": {"cpu_cores": 1, "memory_mb": 64}}
        reply = asyncio.run(submit(nats_url, task, f"00-{trace_id}-{producer_span}-01"))
        assert reply.get("status") == "TASK_STATUS_SUCCEEDED", reply

        def of_trace():
            return [s for s in received_spans(rotel_log.read_text()) if s.get("trace") == trace_id]

        def got_both():
            return {s["name"] for s in of_trace()} >= {"assign", "task"}

        try:
            # exported while the services run (batches leave every few seconds)
            wait_for(got_both, WAIT, "the assign and task spans at rotel")
        except AssertionError:
            got = [(s.get("trace"), s.get("name")) for s in received_spans(rotel_log.read_text())]
            raise AssertionError(f"rotel has no assign+task spans of trace {trace_id}; it received "
                                 f"{got or 'nothing'}; its log ends:\n{plain(rotel_log.read_text())[-2000:]}") from None
        # stopped, the services flush what is left; stopped, rotel prints what it has
        for name in ("scheduler", "monitor", "rotel"):
            procs[name].send_signal(signal.SIGTERM)
            assert procs.pop(name).wait(timeout=WAIT) == 0, f"{name} exits 0 on SIGTERM"

        spans = of_trace()
        summary = [(s["service"], s["name"], s.get("parent"), s.get("id")) for s in spans]
        assert sorted((s["service"], s["name"]) for s in spans) == [
            ("hwsched-monitor", "task"), ("hwsched-scheduler", "assign")], summary
        (assign,) = [s for s in spans if s["name"] == "assign"]
        (run,) = [s for s in spans if s["name"] == "task"]
        assert assign["attrs"].get("task_id") == run["attrs"].get("task_id") == task_id, summary
        assert assign["attrs"].get("worker_id") == worker, assign["attrs"]
        assert assign["parent"] == producer_span, f"the scheduler's span continues the producer's: {summary}"
        assert run["parent"] == assign["id"], f"the monitor's span is the child of the scheduler's: {summary}"
        ids = {s["id"] for s in spans}
        assert len(ids) == len(spans), summary
        orphans = [s for s in spans if s["parent"] not in ids]
        assert [s["name"] for s in orphans] == ["assign"], f"one root, under the producer's span: {summary}"
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
