"""The "Failures by category and hardware class" panel of the Tasks dashboard, executed with known
rows on both engines (the real ClickHouse 18.16 of `make test` and chdb), expanded the way Grafana
and the plugin expand it (test_dashboards.py's emulation): failed, timed-out and errored attempts
counted once each (FINAL), by category and hardware class; successes, cancellations and attempts
outside the range left out; rows written without a category (before migration 6, or by an older
recorder) counted under the category their status implies (the column's DEFAULT).
"""
import json
import os
import time
import uuid

import pytest

from test_dashboards import (  # noqa: F401 - chdb_session is a fixture used by `engine`
    DASHBOARDS, OLD_URL_ENV, Chdb, OldServer, TimeRange, chdb_session, expand, load, queries, schema,
)

TITLE = "Failures by category and hardware class"
H100, A10 = "gpu:nvidia-h100", "gpu:nvidia-a10"


def panel_sql():
    (tasks,) = [p for p in DASHBOARDS if p.stem == "hwsched-tasks"]
    found = [t["rawSql"] for title, t in queries(load(tasks)) if title == TITLE]
    assert len(found) == 1, f"{TITLE} missing from {tasks.name} (or there twice)"
    return found[0]


@pytest.fixture(scope="module", params=["clickhouse-18.16", "chdb"])
def engine(request):
    if request.param == "clickhouse-18.16":
        url = os.environ.get(OLD_URL_ENV)
        if not url:
            pytest.fail(f"{OLD_URL_ENV} is not set: start ClickHouse 18.16 (scripts/clickhouse.sh) and export it",
                        pytrace=False)
        eng = OldServer(url)
    else:
        eng = Chdb(request.getfixturevalue("chdb_session"))
    database = "hwsched_fail_" + uuid.uuid4().hex[:10]
    try:
        for stmt in schema(eng.version(), database):
            eng.execute(stmt)
        eng.database = database
        if isinstance(eng, Chdb):
            eng.execute(f"USE {database}")
        yield eng
    finally:
        eng.execute(f"DROP DATABASE IF EXISTS {database}")


def run(task_id, attempt, worker, cls, status, finished, **extra):
    return dict(task_id=task_id, attempt=attempt, worker_id=worker, hardware_class=cls, status=status,
                finished_at=finished, **extra)


def insert(eng, rows):
    """JSONEachRow with the rows' own column list: the columns a row leaves out take their DEFAULT."""
    cols = ", ".join(rows[0])
    body = "\n".join(json.dumps(r) for r in rows) + "\n"
    if isinstance(eng, Chdb):
        eng.execute(f"INSERT INTO {eng.database}.task_runs ({cols}) FORMAT JSONEachRow\n{body}")
    else:
        eng._post(f"INSERT INTO {eng.database}.task_runs ({cols}) FORMAT JSONEachRow", body=body)


def test_the_panel_counts_failed_attempts_by_category_and_hardware_class(engine):
    now = int(time.time())
    t = now - 600
    oom = dict(category="out_of_memory", oom_kills=1, memory_limit_mb=64, cpu_time_s=2.5)
    recorded = [
        run("t1", 1, "h1", H100, "failed", t, **oom),
        run("t1", 2, "h1", H100, "failed", t + 60, **dict(oom, oom_kills=2, memory_limit_mb=96)),
        run("t2", 1, "h2", H100, "failed", t, **oom),
        run("t2", 1, "h2", H100, "failed", t, **oom),  # redelivered: FINAL counts it once
        run("t3", 1, "a1", A10, "failed", t, category="test_failed"),
        run("t4", 1, "a1", A10, "failed", t, category="test_failed"),
        run("t5", 1, "a1", A10, "error", t, category="gpu_fault"),
        run("t6", 1, "a1", A10, "succeeded", t, category=""),
        run("t7", 1, "h1", H100, "cancelled", t, category="cancelled"),
        run("t8", 1, "h1", H100, "failed", now - 3 * 86400, category="signaled"),  # before the range
    ]
    insert(engine, recorded)
    # written without the category: by a recorder older than it
    insert(engine, [run("t9", 1, "h2", H100, "timed_out", t), run("t10", 1, "a1", A10, "error", t)])

    values = {"worker": ["h1", "h2", "a1"], "hardware_class": [A10, H100]}
    sql = expand(panel_sql(), values, TimeRange(now - 6 * 3600, now + 30, 20))
    names, _, rows = engine.select(sql)
    assert names == ["category", "hardware_class", "failed_attempts", "tasks", "workers", "max_oom_kills"]
    assert rows == [
        ["out_of_memory", H100, "3", "2", "2", "2"],
        ["test_failed", A10, "2", "2", "1", "0"],
        ["gpu_fault", A10, "1", "1", "1", "0"],
        ["infrastructure", A10, "1", "1", "1", "0"],
        ["timeout", H100, "1", "1", "1", "0"],
    ], sql

    # one hardware class selected: only its rows
    sql = expand(panel_sql(), dict(values, hardware_class=[H100]), TimeRange(now - 6 * 3600, now + 30, 20))
    assert [r[0] for r in engine.select(sql)[2]] == ["out_of_memory", "timeout"]


def test_the_category_is_low_cardinality_where_the_server_has_it(engine):
    _, _, rows = engine.select(f"SELECT name, type, default_kind FROM system.columns WHERE database = "
                               f"'{engine.database}' AND table = 'task_runs' AND name IN "
                               f"('category', 'cpu_time_s', 'oom_kills', 'memory_limit_mb') ORDER BY name")
    text = "LowCardinality(String)" if isinstance(engine, Chdb) else "String"
    assert rows == [["category", text, "DEFAULT"], ["cpu_time_s", "Float64", ""],
                    ["memory_limit_mb", "UInt64", ""], ["oom_kills", "UInt32", ""]]
