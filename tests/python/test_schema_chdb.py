"""The modern ClickHouse schema, executed in the real ClickHouse engine (chdb, in-process).

`make test` runs the legacy variant against the real 18.16 server (Rust tests);
this file proves the DDL we render for modern servers (23.8+) is valid and
behaves: it creates the tables, inserts rows and reads them back.
"""
import os
import subprocess
import time

import pytest
from chdb import session as chs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HWSCHED = os.environ.get("HWSCHED_BIN", os.path.join(ROOT, "target", "debug", "hwsched"))


def modern_ddl(version, database):
    out = subprocess.run(
        [HWSCHED, "schema", "print", "--server-version", version, "--clickhouse-database", database],
        check=True, capture_output=True, text=True,
    ).stdout
    return [s.strip() for s in out.split(";") if s.strip()]


@pytest.fixture(scope="module")
def sess(tmp_path_factory):
    # chdb allows one embedded server (one data path) per process.
    return chs.Session(str(tmp_path_factory.mktemp("chdb")))


def version(sess):
    return sess.query("SELECT version()", "CSV").data().strip().strip('"')


def test_engine_is_modern(sess):
    assert int(version(sess).split(".")[0]) >= 23


def test_modern_ddl_runs_and_uses_modern_types(sess):
    for stmt in modern_ddl(version(sess), "types"):
        sess.query(stmt)
    cols = sess.query(
        "SELECT table, name, type, compression_codec FROM system.columns "
        "WHERE database = 'types' ORDER BY table, name", "CSV").data()
    assert '"hw_metrics","time","DateTime64(3)","CODEC(DoubleDelta, ZSTD(1))"' in cols
    assert '"hw_metrics","worker_id","LowCardinality(String)"' in cols
    assert '"hw_metrics","value","Float64","CODEC(ZSTD(3))"' in cols
    assert '"task_runs","status","LowCardinality(String)"' in cols
    assert '"scheduler_decisions","policy","LowCardinality(String)"' in cols
    assert '"scheduler_decisions","completion_s","Float64"' in cols
    assert '"alerts","state","LowCardinality(String)"' in cols
    assert '"alerts","starts_at","DateTime64(3)"' in cols
    assert '"alerts","label_keys","Array(String)"' in cols
    assert '"test_cases","status","LowCardinality(String)"' in cols
    assert '"test_cases","time","DateTime64(3)"' in cols
    assert '"test_cases","case_index","UInt32"' in cols
    create = sess.query("SHOW CREATE TABLE types.hw_metrics", "TSVRaw").data()
    assert "TTL" in create
    create = sess.query("SHOW CREATE TABLE types.scheduler_decisions", "TSVRaw").data()
    assert "ReplacingMergeTree" in create and "TTL" in create
    create = sess.query("SHOW CREATE TABLE types.alerts", "TSVRaw").data()
    assert "ReplacingMergeTree" in create and "TTL" in create
    create = sess.query("SHOW CREATE TABLE types.test_cases", "TSVRaw").data()
    assert "ReplacingMergeTree" in create and "TTL" in create


def test_modern_tables_accept_and_return_rows(sess):
    for stmt in modern_ddl(version(sess), "rows"):
        sess.query(stmt)
    sess.query(
        "INSERT INTO rows.hw_metrics SELECT now64(3) - number, 'w1', 'cpu', 'cpu.util_pct', number % 100 "
        "FROM numbers(1000)")
    sess.query(
        "INSERT INTO rows.task_runs (task_id, attempt, status, worker_id, finished_at, duration_s) "
        "VALUES ('t1', 1, 'succeeded', 'w1', now64(3), 1.5)")
    n = sess.query("SELECT count() FROM rows.hw_metrics WHERE worker_id = 'w1'", "CSV").data().strip()
    assert n == "1000"
    row = sess.query("SELECT status, duration_s FROM rows.task_runs WHERE task_id = 't1'", "CSV").data().strip()
    assert row == '"succeeded",1.5'
    # a redelivered transition (same key, its own insert) collapses with its first copy
    at = int(time.time())
    for _ in range(2):
        sess.query(
            "INSERT INTO rows.alerts (time, fingerprint, rule, severity, state, value, starts_at, "
            f"label_keys, label_values, muted_by) VALUES (toDateTime64({at}, 3), 'f1', 'gpu_hot', 'critical', "
            f"'firing', 91.5, toDateTime64({at}, 3), ['alertname'], ['gpu_hot'], 'silence:s1')")
    row = sess.query(
        "SELECT count(), any(state), any(label_values), any(muted_by) FROM rows.alerts FINAL "
        "WHERE fingerprint = 'f1'", "CSV").data().strip()
    assert row == '1,"firing","[\'gpu_hot\']","silence:s1"'
    # a redelivered result's test cases collapse too; two cases of one name do not
    for _ in range(2):
        sess.query(
            "INSERT INTO rows.test_cases (time, task_id, attempt, worker_id, hardware_class, suite, classname, "
            "name, case_index, status, duration_s, message) VALUES "
            f"(toDateTime64({at}, 3), 't1', 1, 'w1', 'gpu:h100', 'pytest', 'tests.t', 'test_a', 0, 'passed', 0.5, ''),"
            f"(toDateTime64({at}, 3), 't1', 1, 'w1', 'gpu:h100', 'pytest', 'tests.t', 'test_a', 1, 'failed', 0.1, 'x')")
    row = sess.query("SELECT count(), countIf(status = 'failed') FROM rows.test_cases FINAL", "CSV").data().strip()
    assert row == "2,1"


def test_ddl_is_idempotent(sess):
    ddl = modern_ddl(version(sess), "again")
    for _ in range(2):
        for stmt in ddl:
            sess.query(stmt)


# One hour of a fleet's telemetry at 1 s: 100 workers x 20 series of the kinds a
# monitor sends (noisy utilisation and power with one decimal, slow integer
# temperatures, rare throttle flags, slowly drifting usage, constant clocks,
# noisy network rates).
FLEET_HOUR = """SELECT
  toDateTime64('2026-11-25 00:00:00', 3) + toIntervalMillisecond(i * 1000) AS time,
  concat('worker-', toString(w)) AS worker_id,
  concat('dev', toString(k % 4)) AS device,
  concat('metric.', toString(k)) AS metric,
  multiIf(
    k < 4, round(greatest(0, least(100, 50 + 40 * sin(i / 600.0 + w) + (cityHash64(number) % 100) / 10.0 - 5)), 1),
    k < 8, round(60 + 15 * sin(i / 1800.0 + w)),
    k < 10, round(300 + 100 * sin(i / 900.0 + w) + (cityHash64(number) % 200) / 10.0, 1),
    k < 12, if((cityHash64(intDiv(i, 120), w) % 20) = 0, 1, 0),
    k < 14, round(40 + i / 3600.0, 2),
    k < 16, 1410,
    round((cityHash64(number) % 10000) / 10.0, 1)) AS value
FROM (SELECT number, number % 3600 AS i, intDiv(number, 72000) AS w, intDiv(number % 72000, 3600) AS k
      FROM numbers(7200000))"""


def test_bytes_per_stored_sample(sess):
    """The issue's storage target: <= 2 bytes per metric value, measured from
    system.parts_columns after the parts are merged."""
    for stmt in modern_ddl(version(sess), "density"):
        sess.query(stmt)
    sess.query(f"INSERT INTO density.hw_metrics {FLEET_HOUR}")
    sess.query("OPTIMIZE TABLE density.hw_metrics FINAL")
    rows = int(sess.query("SELECT count() FROM density.hw_metrics", "CSV").data())
    assert rows == 7_200_000
    stored = int(sess.query(
        "SELECT sum(column_data_compressed_bytes) FROM system.parts_columns "
        "WHERE database = 'density' AND table = 'hw_metrics' AND active", "CSV").data())
    per_sample = stored / rows
    print(f"hw_metrics: {per_sample:.3f} bytes per stored sample ({stored} bytes, {rows} rows)")
    assert per_sample <= 2.0, per_sample
