"""A real test job end to end, as a CI job runs it: the example pytest project
(examples/pytest-project) shipped as a bundle to real services, its suite run in
3 shards, the logs streamed back, one JUnit report for CI read by the third-party
junitparser, the per-shard reports and the plot brought back as artifacts, and the
stored log of a shard read after the fact. Nothing of the project is on the worker
beforehand: the monitor runs in an empty task directory."""
import pathlib
import subprocess
import sys

import junitparser

from conftest import HWSCHED, ROOT

PROJECT = ROOT / "examples" / "pytest-project"


def cli(nats_url, *args, timeout=180):
    return subprocess.run([HWSCHED, *args], env={"HWSCHED_NATS_URL": nats_url, "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=timeout)


def submit(nats_url, task_id, report):
    return cli(nats_url, "submit", "--bundle", str(PROJECT), "--shards", "3", "--id", task_id, "--wait", "--logs",
               "--no-progress", "--junit-xml", "report.xml", "--outputs", "out/*.svg", "--junit", str(report),
               "--", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml=report.xml")


def test_the_example_project_runs_as_a_bundle_and_reports_every_test(hwsched, nats_url, tmp_path):
    report = tmp_path / "junit.xml"
    out = submit(nats_url, "rj", report)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "uploaded" in out.stderr, out.stderr
    # --logs: pytest's own summary lines, prefixed by the shard that printed them
    assert any(line.startswith("[rj--s") and "passed" in line for line in out.stdout.splitlines()), out.stdout

    xml = junitparser.JUnitXml.fromfile(str(report))
    xml.update_statistics()
    # 12 test cases in the project (one skipped without a GPU), each run by exactly one shard
    assert (xml.tests, xml.failures, xml.errors, xml.skipped) == (12, 0, 0, 1), report.read_text()
    names = sorted(c.name for s in xml for c in s)
    assert len(names) == len(set(names)) == 12, names
    assert "test_draws_the_softmax_plot" in names and "test_matmul_identity[32]" in names, names
    workers = {p.value for s in xml for p in s.properties() if p.name == "worker"}
    assert workers == {"py-worker"}, workers

    # artifacts: each shard's JUnit report, and the plot from the shard that drew it
    got = tmp_path / "artifacts"
    for shard in range(3):
        listing = cli(nats_url, "artifacts", f"rj--s{shard}", "--get", str(got / f"s{shard}"))
        assert listing.returncode == 0, listing.stdout + listing.stderr
        assert (got / f"s{shard}" / "report.xml").is_file(), listing.stdout + listing.stderr
    plots = list(got.glob("s*/out/softmax.svg"))
    assert len(plots) == 1 and plots[0].read_text().startswith("<svg"), plots

    # the whole stored output of a shard, after the task ended
    log = cli(nats_url, "logs", "rj--s0")
    assert log.returncode == 0 and "passed" in log.stdout, log.stdout + log.stderr

    # the same tree again: same digest, nothing uploaded
    again = submit(nats_url, "rj-again", tmp_path / "again.xml")
    assert again.returncode == 0 and "already stored" in again.stderr, again.stderr


def test_a_failing_test_in_the_bundle_fails_the_job_with_its_case_in_the_report(hwsched, nats_url, tmp_path):
    broken = tmp_path / "project"
    subprocess.run(["cp", "-r", str(PROJECT), str(broken)], check=True)
    kernels = broken / "src" / "tinyml" / "kernels.py"
    kernels.write_text(kernels.read_text().replace("return [e / total for e in exps]", "return exps"))
    report = tmp_path / "junit.xml"
    out = cli(nats_url, "submit", "--bundle", str(broken), "--id", "rj-broken", "--wait", "--no-progress",
              "--junit-xml", "report.xml", "--junit", str(report), "--", sys.executable, "-m", "pytest", "-q",
              "-p", "no:cacheprovider", "--junitxml=report.xml")
    assert out.returncode == 1, out.stdout + out.stderr
    xml = junitparser.JUnitXml.fromfile(str(report))
    xml.update_statistics()
    failed = sorted(c.name for s in xml for c in s if c.result and isinstance(c.result[0], junitparser.Failure))
    assert "test_softmax_sums_to_one" in failed, report.read_text()
    assert pathlib.Path(report).stat().st_size > 0
