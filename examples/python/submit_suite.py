#!/usr/bin/env python3
"""Submit every test_*.py file under a directory to hwsched, one task each, and wait for them.

A producer needs nothing but a NATS client: tasks go out in hwsched's JSON form on
`hws.tasks.submit` (header `Content-Type: application/json`), and the scheduler answers
on the inbox named in `Hws-Reply-To`, in JSON: once with its verdict (accepted,
duplicate or rejected with reasons), once more when the task has finished.

    pip install nats-py
    python3 submit_suite.py tests/ --nats-url nats://127.0.0.1:4222
"""
import argparse
import asyncio
import json
import os
import pathlib
import re
import sys
import time
import uuid

import nats


def task_for(path, root, python, run_id):
    rel = str(path.relative_to(root))
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", rel)[:80]
    return {
        "task_id": f"py-{run_id}-{slug}",
        "name": rel,
        "command": [python, "-m", "pytest", "-q", str(path.resolve())],
        "test_type": "pytest",
        "producer": "submit_suite.py",
        "expected_duration_s": 5,
        "requirements": {"cpu_cores": 1, "memory_mb": 256},
    }


async def run(args):
    root = pathlib.Path(args.directory)
    files = sorted(root.rglob("test_*.py"))
    if not files:
        print(f"no test_*.py under {root}", file=sys.stderr)
        return 2
    nc = await nats.connect(args.nats_url)
    js = nc.jetstream()
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    run_id = uuid.uuid4().hex[:8]
    names = {}
    for f in files:
        task = task_for(f, root, args.python, run_id)
        names[task["task_id"]] = task["name"]
        await js.publish(
            f"{args.subject_prefix}.tasks.submit",
            json.dumps(task).encode(),
            headers={"Content-Type": "application/json", "Nats-Msg-Id": task["task_id"], "Hws-Reply-To": inbox},
        )
    print(f"submitted {len(files)} test file(s)")

    outcome = {}
    deadline = time.monotonic() + args.timeout
    while len(outcome) < len(names):
        try:
            msg = await sub.next_msg(timeout=max(0.1, deadline - time.monotonic()))
        except nats.errors.TimeoutError:
            print(f"gave up after {args.timeout}s: {len(names) - len(outcome)} unfinished", file=sys.stderr)
            break
        reply = json.loads(msg.data)  # proto3 JSON: camelCase names, defaults omitted
        task_id = reply.get("taskId", "")
        if task_id not in names:
            continue
        if reply.get("finished"):
            outcome[task_id] = reply
            status = reply.get("status", "TASK_STATUS_UNSPECIFIED").removeprefix("TASK_STATUS_").lower()
            where = reply.get("workerId", "-")
            print(f"{names[task_id]:<40} {status:<10} on {where} in {reply.get('durationS', 0):.2f}s "
                  f"(exit {reply.get('exitCode', 0)}, attempts {reply.get('attempts', 0)})")
        elif not reply.get("accepted"):
            outcome[task_id] = reply
            kind = "duplicate" if reply.get("duplicate") else "rejected"
            print(f"{names[task_id]:<40} {kind}: {'; '.join(reply.get('reasons', []))}")
    await nc.drain()

    passed = sum(1 for r in outcome.values() if r.get("status") == "TASK_STATUS_SUCCEEDED")
    failed = len(names) - passed
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("directory")
    ap.add_argument("--nats-url", default=os.environ.get("HWSCHED_NATS_URL", "nats://127.0.0.1:4222"))
    ap.add_argument("--subject-prefix", default=os.environ.get("HWSCHED_SUBJECT_PREFIX", "hws"))
    ap.add_argument("--python", default="python3", help="interpreter the workers run pytest with")
    ap.add_argument("--timeout", type=float, default=600)
    sys.exit(asyncio.run(run(ap.parse_args())))


if __name__ == "__main__":
    main()
