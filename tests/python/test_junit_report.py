"""`hwsched submit --wait --junit FILE` against real services, read back by a third-party JUnit parser
(junitparser), not by our own code: the counts of tests, failures, errors and skips, the properties
(worker, hardware class) and the failure's output tail must be what the tasks did."""
import subprocess

import junitparser

from conftest import HWSCHED

SUITE = """
tasks:
  - task_id: j-ok
    name: quick
    command: [sh, -c, "echo all good"]
  - task_id: j-bad
    name: broken
    command: [sh, -c, "echo partial output; echo 'boom: <bad> & \\"worse\\"' >&2; exit 3"]
    max_attempts: 1
  - task_id: j-shard
    name: sharded
    command: [sh, -c, "echo shard $HWSCHED_SHARD_INDEX"]
    placement: {strategy: sharded, shards: 2}
"""


def submit(nats_url, suite, report):
    return subprocess.run([HWSCHED, "submit", "-f", str(suite), "--wait", "--no-progress", "--junit", str(report)],
                          env={"HWSCHED_NATS_URL": nats_url, "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)


def cases(xml):
    """(suite, case) of every test case, with junitparser's own reading of each."""
    return [(s, c) for s in xml for c in s]


def test_submission_report_is_read_by_junitparser_with_the_right_counts(hwsched, nats_url, tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    report = tmp_path / "report.xml"
    out = submit(nats_url, suite, report)
    assert out.returncode == 1, out.stdout + out.stderr

    xml = junitparser.JUnitXml.fromfile(str(report))
    xml.update_statistics()
    # one case per task without a JUnit report of its own; a sharded task gives one per shard
    assert (xml.tests, xml.failures, xml.errors, xml.skipped) == (4, 1, 0, 0), report.read_text()
    by_name = {c.name: (s, c) for s, c in cases(xml)}
    assert len(by_name) == 4, by_name
    s, bad = by_name["broken"]
    (failure,) = bad.result
    assert isinstance(failure, junitparser.Failure)
    assert "exit code 3" in failure.message
    assert "boom: <bad> & \"worse\"" in bad.system_err
    assert "partial output" in bad.system_out
    props = {p.name: p.value for p in s.properties()}
    assert props["worker"] == "py-worker" and props["task_id"] == "j-bad" and props["hardware_class"], props
    s, ok = by_name["quick"]
    assert ok.is_passed and not ok.result
    shards = [c for _, c in cases(xml) if c.name not in ("quick", "broken")]
    assert len(shards) == 2 and all(c.is_passed for c in shards), report.read_text()

    # the same suite again: duplicates, not run, reported as skipped
    again = tmp_path / "again.xml"
    out = submit(nats_url, suite, again)
    assert out.returncode == 0, out.stdout + out.stderr
    xml = junitparser.JUnitXml.fromfile(str(again))
    xml.update_statistics()
    assert (xml.tests, xml.failures, xml.errors, xml.skipped) == (3, 0, 0, 3), again.read_text()


def test_a_wait_that_gives_up_still_writes_the_report_with_the_unfinished_tasks(hwsched, nats_url, tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text("""
tasks:
  - {task_id: g-quick, name: quick, command: [sh, -c, "echo done"]}
  - {task_id: g-slow, name: slow, command: [sleep, "60"]}
""")
    report = tmp_path / "report.xml"
    out = subprocess.run([HWSCHED, "submit", "-f", str(suite), "--wait", "--no-progress", "--wait-timeout-s", "4",
                          "--junit", str(report)],
                         env={"HWSCHED_NATS_URL": nats_url, "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "gave up waiting after 4s" in out.stderr, out.stdout + out.stderr
    xml = junitparser.JUnitXml.fromfile(str(report))
    xml.update_statistics()
    assert (xml.tests, xml.failures, xml.errors) == (2, 0, 1), report.read_text()
    by_name = {c.name: c for s in xml for c in s}
    assert by_name["quick"].is_passed, report.read_text()
    (error,) = by_name["slow"].result
    assert isinstance(error, junitparser.Error) and "did not finish: gave up waiting after 4s" in error.message
