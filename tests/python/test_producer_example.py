"""examples/python/submit_suite.py against a real nats-server and real hwsched services."""
import subprocess
import sys

from conftest import ROOT


def test_suite_of_pytest_files_is_run_and_summarised(hwsched, nats_url, tmp_path):
    suite = tmp_path / "suite"
    (suite / "pkg").mkdir(parents=True)
    (suite / "test_ok.py").write_text("def test_math():\n    assert 1 + 1 == 2\n")
    (suite / "pkg" / "test_broken.py").write_text("def test_bug():\n    assert 'a' == 'b'\n")
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "python" / "submit_suite.py"), str(suite),
         "--nats-url", nats_url, "--python", sys.executable, "--timeout", "60"],
        capture_output=True, text=True, timeout=90,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert any(l.startswith("test_ok.py") and " succeeded " in l and "on py-worker" in l for l in lines), out.stdout
    assert any(l.startswith("pkg/test_broken.py") and " failed " in l and "exit 1" in l for l in lines), out.stdout
    assert lines[-1] == "1 passed, 1 failed"
    # the scheduler saw them too
    assert "task finished" in hwsched("all")
