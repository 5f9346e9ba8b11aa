"""What `make run` shows, as a test: two kinds of worker on one machine, placed
by hardware. A browser worker (headless Chromium with WebGPU, on SwiftShader
where there is no GPU) held to one core by an affinity mask, and a full-size
CPU worker. The WebGPU test of examples/webgpu runs in the browser and passes;
the test asking for 2 cores runs only on the full-size worker."""
import json
import os
import pathlib
import subprocess

import pytest

from conftest import HWSCHED, ROOT, wait_for

WEBGPU = ROOT / "examples" / "webgpu"


def test_the_webgpu_example_passes_in_headless_chromium():
    run = subprocess.run(["python3", str(WEBGPU / "webgpu_test.py")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("PASS 64x64 matmul on WebGPU adapter: "), run.stdout


def test_the_webgpu_example_fails_when_the_page_gets_a_wrong_product(tmp_path):
    # the check in the page is real: a shader that adds one to every element is caught
    broken = tmp_path / "webgpu"
    broken.mkdir()
    page = (WEBGPU / "matmul.html").read_text()
    assert "c[id.y * n + id.x] = sum;" in page
    (broken / "matmul.html").write_text(page.replace("c[id.y * n + id.x] = sum;", "c[id.y * n + id.x] = sum + 1.0;"))
    (broken / "webgpu_test.py").write_text((WEBGPU / "webgpu_test.py").read_text())
    run = subprocess.run(["python3", str(broken / "webgpu_test.py")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and run.stdout.startswith("FAIL 4096 of 4096 elements wrong"), run.stdout + run.stderr


@pytest.mark.skipif(os.cpu_count() < 2, reason="two kinds of worker need 2 cores")
def test_tests_are_placed_by_hardware_on_two_kinds_of_worker(nats_url, tmp_path):
    env = dict(os.environ, HWSCHED_NATS_URL=nats_url, HWSCHED_LOG="info,async_nats=warn")
    procs = []

    def start(name, args, ready):
        log = tmp_path / f"{name}.log"
        procs.append(subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(log, "w")))
        wait_for(lambda: ready in log.read_text(), 30, f"{name}: {ready!r}")

    try:
        start("all", [HWSCHED, "all"], "scheduler ready")
        start("cpu", [HWSCHED, "monitor", "--worker-id", "cpu-worker"], "monitor ready")
        start("browser", ["taskset", "-c", "0", HWSCHED, "monitor", "--worker-id", "browser-worker",
                          "--accelerator", "webgpu=1", "--backend", "webgpu"], "monitor ready")
        out = subprocess.run([HWSCHED, "submit", "-f", str(WEBGPU / "suite.json"), "--id-suffix", "-t", "--wait",
                              "--no-progress", "-o", "json"], env=env, cwd=ROOT, capture_output=True, text=True,
                             timeout=180)
        assert out.returncode == 0, out.stdout + out.stderr
        finished = [u for u in map(json.loads, out.stdout.splitlines()) if u["update"] == "finished"]
        placed = {u["taskId"]: u["workerId"] for u in finished if u["succeeded"]}
        assert placed == {"demo-webgpu-matmul-t": "browser-worker", "demo-two-cores-t": "cpu-worker"}, out.stdout
        webgpu = next(u["result"] for u in finished if u["taskId"] == "demo-webgpu-matmul-t")
        assert webgpu["stdoutTail"].startswith("PASS"), webgpu
        # Chromium's dozens of threads are not each counted with the whole process's memory
        # (they were: 12-14 GB for under 1 GB of processes)
        assert 50 < int(webgpu["resources"]["memoryPeakMb"]) < 4096, webgpu["resources"]
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=30)
