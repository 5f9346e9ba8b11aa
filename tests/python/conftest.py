"""Real servers for the Python tests: a nats-server 2.15 per test and the hwsched binaries."""
import os
import pathlib
import socket
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
HWSCHED = os.environ.get("HWSCHED_BIN", str(ROOT / "target" / "debug" / "hwsched"))
NATS_SERVER = os.environ.get("HWSCHED_TEST_NATS_SERVER", str(ROOT / "build" / "venv" / "bin" / "nats-server"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def start_nats_server(store):
    """A nats-server 2.15 with JetStream on a free loopback port, its store under
    `store`, once it takes connections: (process, url)."""
    port = free_port()
    proc = subprocess.Popen([NATS_SERVER, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def answers():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    wait_for(answers, 15, "nats-server")
    return proc, f"nats://127.0.0.1:{port}"


@pytest.fixture
def nats_url(tmp_path):
    proc, url = start_nats_server(tmp_path / "js")
    yield url
    proc.kill()
    proc.wait()


@pytest.fixture
def hwsched(nats_url, tmp_path):
    """Starts `hwsched all` and a monitor; yields a function to read their logs."""
    procs = []
    env = dict(os.environ, HWSCHED_NATS_URL=nats_url, HWSCHED_LOG="info,async_nats=warn")

    def start(name, args, ready):
        log = tmp_path / f"{name}.log"
        p = subprocess.Popen([HWSCHED, *args], env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
        procs.append(p)
        wait_for(lambda: ready in log.read_text(), 30, f"{name}: {ready!r}")

    start("all", ["all"], "scheduler ready")
    start("monitor", ["monitor", "--worker-id", "py-worker", "--slots", "2"], "monitor ready")
    yield lambda name: (tmp_path / f"{name}.log").read_text()
    for p in reversed(procs):
        p.terminate()
        assert p.wait(timeout=30) == 0, "services exit 0 on SIGTERM"
