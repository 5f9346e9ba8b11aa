"""The NATS version check: a service started against a nats-server older than
the oldest hwsched supports (Debian's 2.9, installed by `make test`) stops at
once with one line naming both versions, before it creates any JetStream
stream, bucket or object store. (The end-to-end tests also run on the oldest
supported server: scripts/test.sh.)"""
import asyncio
import os
import pathlib
import re
import subprocess

import nats
import pytest

from conftest import HWSCHED, free_port, wait_for

OLD_SERVER = pathlib.Path(os.environ.get("HWSCHED_TEST_NATS_SERVER_OLD", "/usr/sbin/nats-server"))
MINIMUM = "2.11.0"  # libs/bus/src/version.rs


def server_version(binary):
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout
    return re.search(r"v(\d+\.\d+\.\d+)", out).group(1)


@pytest.fixture
def old_nats(tmp_path):
    assert OLD_SERVER.is_file(), f"{OLD_SERVER} missing: `make test` installs Debian's nats-server (2.9)"
    version = server_version(OLD_SERVER)
    assert tuple(map(int, version.split("."))) < (2, 11, 0), f"{OLD_SERVER} is {version}, not older than {MINIMUM}"
    port = free_port()
    proc = subprocess.Popen([str(OLD_SERVER), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp_path / "js")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"nats://127.0.0.1:{port}"

    def answers():
        return asyncio.run(stream_names(url, quiet=True)) is not None

    wait_for(answers, 15, "nats-server 2.9")
    yield url, version
    proc.kill()
    proc.wait()


async def stream_names(url, quiet=False):
    """Every JetStream stream on the server (KV buckets and object stores are streams too)."""
    try:
        nc = await nats.connect(url, connect_timeout=1, max_reconnect_attempts=0)
    except Exception:
        if quiet:
            return None
        raise
    try:
        return [s.config.name for s in await nc.jetstream().streams_info()]
    finally:
        await nc.close()


@pytest.mark.parametrize("service", [["scheduler"], ["all"], ["monitor", "--worker-id", "old"], ["recorder"]])
def test_a_service_refuses_an_older_server_in_one_line_before_creating_anything(old_nats, service):
    url, version = old_nats
    run = subprocess.run([HWSCHED, *service], env=dict(os.environ, HWSCHED_NATS_URL=url, HWSCHED_LOG="warn"),
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0, f"{service[0]} ran on nats-server {version}: {run.stderr}"
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, run.stderr
    assert f"nats-server {version}" in errors[0] and f"older than {MINIMUM}" in errors[0], errors[0]
    assert asyncio.run(stream_names(url)) == [], "nothing is created on a server that is refused"


def test_the_cli_refuses_an_older_server_as_unavailable(old_nats):
    url, version = old_nats
    run = subprocess.run([HWSCHED, "submit", "--", "true"], env=dict(os.environ, HWSCHED_NATS_URL=url),
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 3, run.stderr  # exit::UNAVAILABLE
    assert f"nats-server {version}" in run.stderr and MINIMUM in run.stderr, run.stderr
