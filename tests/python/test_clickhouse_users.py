"""hwsched's least-privilege ClickHouse users (deploy/clickhouse), checked on both engines.

ClickHouse 18.16, the real server `make test` starts (HTTP, HWSCHED_TEST_CLICKHOUSE_URL), with
deploy/clickhouse-local/users.xml: it holds `hwsched_writer` and `hwsched_reader` with the profiles
and databases of the example deploy/clickhouse/users.d/hwsched.xml (compared below) and public
loopback-only test passwords. Every request is a POST (a GET is read-only by itself on 18.16) and
authenticates with the X-ClickHouse-User/Key headers (as the recorder's client does) or HTTP Basic
(as the Grafana plugin does), so each refusal is the user's own.

Which database: the users may use `hwsched` only (<allow_databases>, exact names on 18.16: no
pattern could let them into a per-run database). The loopback users have the example's very
restriction, so the test works in `hwsched` with table names unique to the run (`users_<random>`,
dropped at the end; the database too when this module created it) and uses a fresh database
`hwsched_users_<random>`, created and dropped by `default`, to prove that both users are kept out of
every other database.

Modern ClickHouse (chdb, 26.9 in-process; in subprocesses, as chdb holds one configuration per
process): the example users.d file loads (users, profiles); deploy/clickhouse/users.sql parses
(EXPLAIN AST: syntax and privilege names). chdb cannot execute CREATE USER/ROLE/SETTINGS PROFILE
(no writable access storage) nor switch users (always `default`), so the privileges users.sql
grants each role and the settings of each profile are given to chdb's `default` user through
users.xml, and the real migrations, inserts and a partition drop run as the writer, the reader's
refusals are checked. users.sql as a whole is not executed anywhere.
"""
import base64
import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE_XML = ROOT / "deploy" / "clickhouse" / "users.d" / "hwsched.xml"
USERS_SQL = ROOT / "deploy" / "clickhouse" / "users.sql"
LOOPBACK_XML = ROOT / "deploy" / "clickhouse-local" / "users.xml"
DATASOURCE = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "clickhouse.yaml"
HWSCHED = os.environ.get("HWSCHED_BIN", str(ROOT / "target" / "debug" / "hwsched"))
URL_ENV = "HWSCHED_TEST_CLICKHOUSE_URL"
URL = os.environ.get(URL_ENV)

# The loopback-only development passwords of deploy/clickhouse-local/users.xml.
WRITER = ("hwsched_writer", "hwsched-writer-test")
READER = ("hwsched_reader", "hwsched-reader-test")
DB = "hwsched"  # the users' one database
RUN = uuid.uuid4().hex[:12]

needs_server = pytest.mark.skipif(
    not URL,
    reason=f"{URL_ENV} is not set: these tests need the ClickHouse 18.16 server that `make test` starts "
           f"(or: scripts/clickhouse.sh start build/ch 18123 19000; {URL_ENV}=http://127.0.0.1:18123)")


# ---------------------------------------------------------------------------------------------
# HTTP

def ch(sql, user=None, params=None, basic=False):
    """POSTs `sql` as `user` ((name, password); None = `default`); returns (status, body)."""
    url = URL.rstrip("/") + "/"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    req = urllib.request.Request(url, data=sql.encode(), method="POST")
    if user and basic:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode())
    elif user:
        req.add_header("X-ClickHouse-User", user[0])
        req.add_header("X-ClickHouse-Key", user[1])
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def ok(sql, user=None, **kw):
    status, body = ch(sql, user, **kw)
    assert status == 200, f"{(user or ('default',))[0]}: {sql!r} answered {status}: {body}"
    return body


@pytest.fixture(scope="module")
def server():
    """The server's major version; `hwsched` and a foreign database, cleaned up at the end."""
    version = ok("SELECT version()").strip()
    existed = DB in ok("SHOW DATABASES").split()
    foreign = f"hwsched_users_{RUN}"
    ok(f"CREATE DATABASE {foreign}")
    ok(f"CREATE TABLE {foreign}.t (x UInt32) ENGINE = MergeTree ORDER BY x")
    ok(f"INSERT INTO {foreign}.t VALUES (7)")
    yield {"major": int(version.split(".")[0]), "existed": existed, "foreign": foreign}
    for db in (foreign, f"{foreign}_w", f"{foreign}_byreader"):  # the last two only if a refusal failed
        ok(f"DROP DATABASE IF EXISTS {db}")
    for t in ok(f"SELECT name FROM system.tables WHERE database = '{DB}' AND name LIKE 'users\\\\_{RUN}%'").split():
        ok(f"DROP TABLE IF EXISTS {DB}.{t}")
    if not existed:
        ok(f"DROP DATABASE IF EXISTS {DB}")


def expect_refused(server, status, body, code, text):
    """18.16 answers 500 to a refused query (tested); modern servers 403 (not tested here)."""
    assert status != 200, f"expected a refusal ({text}), got 200: {body}"
    assert status == (500 if server["major"] < 19 else 403), f"HTTP {status}: {body}"
    assert f"Code: {code}" in body and re.search(text, body), f"expected code {code} and /{text}/, got: {body}"


READONLY = 164  # READONLY
DENIED_OLD = 291  # DATABASE_ACCESS_DENIED (18.16); modern: 497 ACCESS_DENIED


def denied(server):
    return (DENIED_OLD, "Access denied to database") if server["major"] < 19 else (497, "Not enough privileges")


@pytest.fixture(scope="module")
def table(server):
    """A table the writer made in `hwsched`: (d Date, x UInt32, s String), two days of rows."""
    name = f"users_{RUN}_t"
    ok(f"CREATE DATABASE IF NOT EXISTS {DB}", WRITER)  # as the recorder's first migration step
    ok(f"CREATE TABLE {DB}.{name} (d Date, x UInt32, s String) ENGINE = MergeTree PARTITION BY d ORDER BY x",
       WRITER)
    ok(f"INSERT INTO {DB}.{name} VALUES ('2020-01-01', 1, 'a'), ('2020-01-01', 2, 'b'), ('2020-01-02', 3, 'c')",
       WRITER)
    return f"{DB}.{name}"


# ---------------------------------------------------------------------------------------------
# 18.16: the writer

@needs_server
def test_writer_creates_inserts_and_selects(server, table):
    assert ok(f"SELECT x, s FROM {table} ORDER BY x FORMAT TSV", WRITER) == "1\ta\n2\tb\n3\tc\n"
    # a migration that alters, and one that adds a materialized view (as migration 4 does)
    ok(f"ALTER TABLE {table} ADD COLUMN y UInt8", WRITER)
    mv_target = f"{DB}.users_{RUN}_rollup"
    ok(f"CREATE TABLE {mv_target} (d Date, n UInt64) ENGINE = SummingMergeTree ORDER BY d", WRITER)
    ok(f"CREATE MATERIALIZED VIEW {DB}.users_{RUN}_mv TO {mv_target} AS SELECT d, count() AS n FROM {table} GROUP BY d",
       WRITER)
    ok(f"INSERT INTO {table} (d, x, s) VALUES ('2020-01-03', 4, 'd')", WRITER)
    assert ok(f"SELECT d, sum(n) FROM {mv_target} GROUP BY d FORMAT TSV", WRITER) == "2020-01-03\t1\n"


@needs_server
def test_writer_drops_expired_partitions(server):
    """What the recorder's retention does on servers without TTL (Store::drop_expired_partitions)."""
    t = f"users_{RUN}_retention"
    ok(f"CREATE TABLE {DB}.{t} (time DateTime, v Float64) ENGINE = MergeTree PARTITION BY toDate(time) ORDER BY time",
       WRITER)
    ok(f"INSERT INTO {DB}.{t} VALUES ('2020-01-01 10:00:00', 1), ('2020-01-02 10:00:00', 2)", WRITER)
    parts = ok(f"SELECT DISTINCT table, partition FROM system.parts WHERE database = '{DB}' AND table = '{t}' "
               "AND active ORDER BY partition FORMAT TSV", WRITER).split("\n")
    assert parts[0] == f"{t}\t2020-01-01", parts
    ok(f"ALTER TABLE {DB}.{t} DROP PARTITION '2020-01-01'", WRITER)
    assert ok(f"SELECT v FROM {DB}.{t}", WRITER) == "2\n"


@needs_server
def test_writer_is_kept_out_of_other_databases(server):
    code, text = denied(server)
    foreign = server["foreign"]
    for sql in [f"SELECT * FROM {foreign}.t", f"INSERT INTO {foreign}.t VALUES (1)",
                f"CREATE TABLE {foreign}.w (x UInt8) ENGINE = Memory", f"DROP TABLE {foreign}.t",
                f"CREATE DATABASE hwsched_users_{RUN}_w", f"DROP DATABASE {foreign}"]:
        expect_refused(server, *ch(sql, WRITER), code, text)
    assert ok(f"SELECT x FROM {foreign}.t") == "7\n"
    assert f"hwsched_users_{RUN}_w" not in ok("SHOW DATABASES").split()


# ---------------------------------------------------------------------------------------------
# 18.16: the reader

@needs_server
def test_reader_selects(server, table):
    rows = ok(f"SELECT x, s FROM {table} ORDER BY x FORMAT TSV", READER)
    assert rows.startswith("1\ta\n2\tb\n3\tc\n") and rows == ok(f"SELECT x, s FROM {table} ORDER BY x FORMAT TSV")
    # `hwsched report` reads system.tables; Grafana's query builder lists tables the same way
    name = table.split(".")[1]
    assert ok(f"SELECT engine FROM system.tables WHERE database = '{DB}' AND name = '{name}'", READER) == "MergeTree\n"


@needs_server
def test_reader_sends_settings_like_grafana(server, table):
    """The plugin sends max_execution_time (its query timeout) and compression settings with every
    query, over HTTP Basic: readonly = 2 lets them through; readonly itself stays."""
    params = {"max_execution_time": "60", "enable_http_compression": "1", "database": DB}
    body = ok(f"SELECT count() FROM {table.split('.')[1]}", READER, params=params, basic=True)
    assert int(body) >= 3
    assert ok(f"SELECT count() FROM {table} SETTINGS max_threads = 1", READER).strip() == body.strip()
    assert ok("SELECT value FROM system.settings WHERE name = 'max_execution_time'", READER,
              params={"max_execution_time": "60"}) == "60\n"
    expect_refused(server, *ch("SELECT 1", READER, params={"readonly": "0"}), READONLY, "readonly")
    expect_refused(server, *ch(f"SELECT count() FROM {table} SETTINGS readonly = 0", READER), READONLY, "readonly")
    expect_refused(server, *ch("SET readonly = 0", READER), READONLY, "readonly")


WRITES = {
    "insert": "INSERT INTO {t} (d, x, s) VALUES ('2020-02-01', 9, 'z')",
    "insert-select": "INSERT INTO {t} SELECT d, x + 100, s FROM {t}",
    "create-table": "CREATE TABLE {db}.users_{run}_byreader (x UInt8) ENGINE = Memory",
    "create-table-as": "CREATE TABLE {db}.users_{run}_byreader2 ENGINE = MergeTree ORDER BY x AS SELECT * FROM {t}",
    "create-database": "CREATE DATABASE hwsched_users_{run}_byreader",
    "drop-table": "DROP TABLE {t}",
    "truncate": "TRUNCATE TABLE {t}",
    "alter-add-column": "ALTER TABLE {t} ADD COLUMN z String",
    "alter-drop-partition": "ALTER TABLE {t} DROP PARTITION '2020-01-01'",
    "alter-delete": "ALTER TABLE {t} DELETE WHERE x = 1",
    "rename": "RENAME TABLE {t} TO {db}.users_{run}_byreader3",
    "optimize": "OPTIMIZE TABLE {t} FINAL",
}


@needs_server
@pytest.mark.parametrize("what", sorted(WRITES))
def test_reader_cannot_write(server, table, what):
    before = ok(f"SELECT count(), sum(x) FROM {table}")
    columns = ok(f"SELECT name FROM system.columns WHERE database = '{DB}' AND table = '{table.split('.')[1]}'")
    sql = WRITES[what].format(t=table, db=DB, run=RUN)
    expect_refused(server, *ch(sql, READER), READONLY, r"(Cannot|cannot) .*in readonly mode")
    assert ok(f"SELECT count(), sum(x) FROM {table}") == before, f"{what} changed the rows"
    assert ok(f"SELECT name FROM system.columns WHERE database = '{DB}' AND table = '{table.split('.')[1]}'") == columns
    assert not ok(f"SELECT name FROM system.tables WHERE database = '{DB}' AND name LIKE 'users\\\\_{RUN}\\\\_byreader%'")
    assert f"hwsched_users_{RUN}_byreader" not in ok("SHOW DATABASES").split()


@needs_server
def test_reader_is_kept_out_of_other_databases(server):
    code, text = denied(server)
    expect_refused(server, *ch(f"SELECT * FROM {server['foreign']}.t", READER), code, text)
    expect_refused(server, *ch("SELECT 1", READER, params={"database": server["foreign"]}), code, text)


# ---------------------------------------------------------------------------------------------
# 18.16: passwords

@needs_server
@pytest.mark.parametrize("basic", [False, True], ids=["headers", "basic-auth"])
def test_wrong_password_is_refused(server, basic):
    wrong = [(WRITER[0], "wrong"), (READER[0], "wrong"), (WRITER[0], READER[1]), (READER[0], WRITER[1]),
             (READER[0], "")]
    for user in wrong:
        status, body = ch("SELECT 1", user, basic=basic)
        assert status == 401 if server["major"] < 19 else status in (401, 403), f"{user}: HTTP {status}: {body}"
        assert re.search(r"Wrong password|Password required|password is incorrect|Authentication failed", body), f"{user}: {body}"
    status, body = ch("SELECT 1", ("hwsched_nobody", "x"), basic=basic)
    assert status != 200 and "nobody" in body, body
    for user in (WRITER, READER):
        assert ok("SELECT 1", user, basic=basic) == "1\n"


# ---------------------------------------------------------------------------------------------
# 18.16: the hwsched binary itself (its ClickHouse client sends the user in headers)

def hwsched(user, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HWSCHED_CLICKHOUSE_")}
    env["HWSCHED_LOG"] = "warn"
    return subprocess.run([HWSCHED, "--clickhouse-url", URL, "--clickhouse-database", DB,
                           "--clickhouse-user", user[0], "--clickhouse-password", user[1], *args],
                          env=env, capture_output=True, text=True, timeout=120)


@needs_server
def test_binary_migrates_as_writer_and_reports_as_reader(server, tmp_path):
    if not os.access(HWSCHED, os.X_OK):
        pytest.skip(f"{HWSCHED} is not built (make test builds it)")
    if server["existed"]:
        pytest.skip(f"database {DB} already existed on {URL}: not running migrations on someone's data")
    denied_run = hwsched(READER, "schema", "migrate")
    assert denied_run.returncode != 0 and "readonly" in denied_run.stderr, denied_run.stderr
    run = hwsched(WRITER, "schema", "migrate")
    assert run.returncode == 0, run.stderr + run.stdout
    assert "applied now" in run.stdout and f"database {DB}" in run.stdout, run.stdout
    tables = ok(f"SELECT name FROM system.tables WHERE database = '{DB}'").split()
    assert {"schema_migrations", "hw_metrics", "task_runs", "hw_metrics_1m"} <= set(tables), tables
    again = hwsched(WRITER, "schema", "migrate")
    assert again.returncode == 0 and "nothing to apply" in again.stdout, again.stderr + again.stdout
    report = hwsched(READER, "report", "--since", "1h", "--json", str(tmp_path / "r.json"))
    assert report.returncode == 0, report.stderr + report.stdout
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["tasks_run"] == 0


# ---------------------------------------------------------------------------------------------
# The example file and the loopback users: the same users, apart from passwords and networks

def xml_users(path):
    root = ET.parse(path).getroot()
    profiles = {p.tag: {s.tag: s.text for s in p} for p in root.find("profiles")}
    users = {u.tag: u for u in root.find("users")}
    return root, profiles, users


def user_shape(u):
    return {"profile": u.findtext("profile"), "quota": u.findtext("quota"),
            "allow_databases": [d.text for d in u.find("allow_databases")]}


def test_example_file_and_loopback_users_agree():
    ex_root, ex_profiles, ex_users = xml_users(EXAMPLE_XML)
    lo_root, lo_profiles, lo_users = xml_users(LOOPBACK_XML)
    assert ex_root.tag == lo_root.tag == "yandex", "18.16 merges users.d only under the same root element"
    for name, password in (WRITER, READER):
        ex, lo = ex_users[name], lo_users[name]
        assert user_shape(ex) == user_shape(lo), name
        assert user_shape(ex)["allow_databases"] == [DB]
        profile = ex.findtext("profile")
        assert ex_profiles[profile] == lo_profiles[profile], profile
        # placeholders in the example, the documented test passwords in the loopback file
        assert not re.fullmatch(r"[0-9a-f]{64}", ex.findtext("password_sha256_hex")), "a real hash in the example"
        assert ex.find("password") is None and lo.find("password") is None
        assert lo.findtext("password_sha256_hex") == hashlib.sha256(password.encode()).hexdigest()
        assert [ip.text for ip in lo.find("networks")] == ["127.0.0.1", "::1"], "loopback-only test users"
        assert ex.find("networks") is not None and len(ex.find("networks"))
    assert ex_profiles["hwsched_reader"]["readonly"] == "2", "1 breaks the Grafana plugin (deploy/grafana/README.md)"
    assert ex_profiles["hwsched_writer"]["readonly"] == "0"
    # `default` of the loopback server, which every other test uses: no password, loopback, full rights
    default = lo_users["default"]
    assert default.findtext("password") in (None, "") and default.find("allow_databases") is None
    assert "readonly" not in lo_profiles["default"]
    # the Grafana data source logs in as the reader, into the reader's database
    ds = yaml.safe_load(DATASOURCE.read_text())["datasources"][0]["jsonData"]
    assert (ds["username"], ds["defaultDatabase"]) == (READER[0], DB)


# ---------------------------------------------------------------------------------------------
# Modern ClickHouse: chdb in subprocesses

CHDB_RUNNER = textwrap.dedent("""
    import json, sys
    args = json.load(sys.stdin)
    from chdb import session
    path = args["path"] + ("?config-file=" + args["config"] if args.get("config") else "")
    s = session.Session(path)
    out = []
    for q in args["queries"]:
        try:
            out.append([True, str(s.query(q, "TSV"))])
        except Exception as e:
            out.append([False, str(e)])
    s.close()
    print(json.dumps(out))
""")


def chdb_run(tmp_path, queries, users_xml=None, data="data"):
    """Runs `queries` in chdb (a fresh process; data kept under tmp_path/data); with users_xml as
    its users.xml (and tmp_path/users.d/ merged into it). Returns [(ok, text)] in order."""
    args = {"path": str(tmp_path / data), "queries": queries}
    if users_xml is not None:
        (tmp_path / "users.xml").write_text(users_xml)
        (tmp_path / "config.xml").write_text(
            f"<clickhouse><users_config>{tmp_path / 'users.xml'}</users_config></clickhouse>")
        args["config"] = str(tmp_path / "config.xml")
    r = subprocess.run([sys.executable, "-c", CHDB_RUNNER], input=json.dumps(args), capture_output=True,
                       text=True, timeout=300)
    if r.returncode != 0 and "No module named 'chdb'" in r.stderr:
        pytest.skip("chdb is not installed (build/venv, tests/python/requirements.txt)")
    assert r.returncode == 0, r.stderr
    return [tuple(x) for x in json.loads(r.stdout.strip().splitlines()[-1])]


def sql_statements():
    text = re.sub(r"--[^\n]*", "", USERS_SQL.read_text())
    return [" ".join(s.split()) for s in text.split(";") if s.strip()]


def test_users_sql_parses_on_modern(tmp_path):
    stmts = sql_statements()
    kinds = {re.match(r"(CREATE (?:SETTINGS PROFILE|ROLE|USER)|GRANT)", s).group(1) for s in stmts}
    assert kinds == {"CREATE SETTINGS PROFILE", "CREATE ROLE", "CREATE USER", "GRANT"}, kinds
    results = chdb_run(tmp_path, ["SELECT version()"] + [f"EXPLAIN AST {s}" for s in stmts])
    assert int(results[0][1].split(".")[0]) >= 23
    for stmt, (good, text) in zip(stmts, results[1:]):
        assert good, f"ClickHouse {results[0][1].strip()} does not parse {stmt!r}: {text}"
    # the passwords are given by hash, as placeholders
    users = [s for s in stmts if s.startswith("CREATE USER")]
    assert len(users) == 2 and all("IDENTIFIED WITH sha256_hash BY '<sha256 hex" in s for s in users), users


def test_example_file_loads_on_modern(tmp_path):
    """deploy/clickhouse/users.d/hwsched.xml merged into a modern users.xml (root <clickhouse>)."""
    (tmp_path / "users.d").mkdir()
    example = EXAMPLE_XML.read_text()
    for name, password in (WRITER, READER):
        kind = "WRITER" if name == WRITER[0] else "READER"
        example = example.replace(f"REPLACE_WITH_SHA256_HEX_OF_THE_{kind}_PASSWORD",
                                  hashlib.sha256(password.encode()).hexdigest())
    (tmp_path / "users.d" / "hwsched.xml").write_text(example)
    base = ("<clickhouse><profiles><default/></profiles><users><default><password></password>"
            "<networks><ip>::/0</ip></networks><profile>default</profile><quota>default</quota>"
            "<access_management>1</access_management></default></users><quotas><default/></quotas></clickhouse>")
    res = chdb_run(tmp_path, [
        "SELECT name, auth_type FROM system.users WHERE name LIKE 'hwsched%' ORDER BY name",
        "SELECT profile_name, setting_name, value FROM system.settings_profile_elements "
        "WHERE profile_name LIKE 'hwsched%' ORDER BY profile_name, setting_name",
        "SHOW CREATE USER hwsched_reader",
        "SHOW GRANTS FOR hwsched_reader",
    ], users_xml=base)
    assert all(good for good, _ in res), res
    assert res[0][1] == "hwsched_reader\t['sha256_password']\nhwsched_writer\t['sha256_password']\n"
    rows = set(res[1][1].splitlines())
    assert {"hwsched_reader\treadonly\t2", "hwsched_reader\tmax_execution_time\t300",
            "hwsched_writer\treadonly\t0", "hwsched_writer\tallow_ddl\t1"} <= rows, rows
    assert "SETTINGS PROFILE `hwsched_reader`" in res[2][1]
    assert "ON hwsched.* TO hwsched_reader" in res[3][1] and "ON default" not in res[3][1]


def modern_grants_xml(user):
    """chdb's users.xml whose `default` user has what users.sql gives `user`: the grants of its
    roles and the settings (and constraints) of its profile."""
    profiles, role_grants, user_profile, user_roles = {}, {}, {}, {}
    for s in sql_statements():
        if m := re.fullmatch(r"CREATE SETTINGS PROFILE (?:IF NOT EXISTS )?(\w+) SETTINGS (.+)", s):
            profiles[m.group(1)] = [i.strip() for i in m.group(2).split(",")]
        elif m := re.fullmatch(r"GRANT (.+) ON (\S+) TO (\w+)", s):
            role_grants.setdefault(m.group(3), []).append(f"GRANT {m.group(1)} ON {m.group(2)}")
        elif m := re.fullmatch(r"GRANT (\w+) TO (\w+)", s):
            user_roles.setdefault(m.group(2), []).append(m.group(1))
        elif m := re.fullmatch(r"CREATE USER (?:IF NOT EXISTS )?(\w+) .* SETTINGS PROFILE '(\w+)'", s):
            user_profile[m.group(1)] = m.group(2)
        elif not re.fullmatch(r"CREATE ROLE (?:IF NOT EXISTS )?\w+", s):
            raise AssertionError(f"this test cannot map {s!r} onto chdb's users.xml: extend modern_grants_xml")
    settings, constraints = [], []
    for item in profiles[user_profile[user]]:
        item = re.sub(r"\s*=\s*", " = ", item)
        m = re.fullmatch(r"(\w+)(?: = (\S+))?(?: MIN (\S+))?(?: MAX (\S+))?(?: (CONST|READONLY|WRITABLE|"
                         r"CHANGEABLE_IN_READONLY))?", item)
        assert m, f"profile setting {item!r}: not understood by this test"
        name, value, lo, hi, kind = m.groups()
        if value is not None:
            settings.append(f"<{name}>{value}</{name}>")
        c = (f"<min>{lo}</min>" if lo else "") + (f"<max>{hi}</max>" if hi else "")
        c += {"CONST": "<readonly/>", "READONLY": "<readonly/>", "CHANGEABLE_IN_READONLY": "<changeable_in_readonly/>",
              "WRITABLE": "", None: ""}[kind]
        if c:
            constraints.append(f"<{name}>{c}</{name}>")
    grants = [g for role in user_roles[user] for g in role_grants[role]]
    assert grants, f"users.sql grants {user} nothing"
    return ("<clickhouse><profiles><default>" + "".join(settings) + "<constraints>" + "".join(constraints)
            + "</constraints></default></profiles><users><default><password></password>"
            "<networks><ip>::/0</ip></networks><profile>default</profile><quota>default</quota><grants>"
            + "".join(f"<query>{g}</query>" for g in grants)
            + "</grants></default></users><quotas><default/></quotas></clickhouse>")


def modern_ddl(version):
    if not os.access(HWSCHED, os.X_OK):
        pytest.skip(f"{HWSCHED} is not built (make test builds it): the migrations come from `hwsched schema print`")
    out = subprocess.run([HWSCHED, "schema", "print", "--server-version", version, "--clickhouse-database", DB],
                         check=True, capture_output=True, text=True).stdout
    return [s.strip() for s in out.split(";") if s.strip()]


def test_users_sql_privileges_on_modern(tmp_path):
    """The writer's grants run the real migrations, inserts and retention; the reader reads only."""
    version = chdb_run(tmp_path, ["SELECT version()"], data="v")[0][1].strip()
    ddl = modern_ddl(version)
    writer = [
        "SHOW GRANTS",
        *ddl,
        "INSERT INTO hwsched.hw_metrics (time, worker_id, device, metric, value) "
        "VALUES (now64(3), 'w1', 'cpu', 'cpu.util_pct', 42)",
        "INSERT INTO hwsched.task_runs (task_id, attempt, status, finished_at) VALUES ('t1', 1, 'succeeded', "
        "'2020-01-15 00:00:00'), ('t2', 1, 'failed', now64(3))",
        "SELECT count() FROM hwsched.hw_metrics_1m",  # filled by the materialized view
        "SELECT DISTINCT partition FROM system.parts WHERE database = 'hwsched' AND table = 'task_runs' AND active "
        "ORDER BY partition LIMIT 1",
        "ALTER TABLE hwsched.task_runs DROP PARTITION 202001",
        "SELECT task_id FROM hwsched.task_runs",
        "ALTER TABLE hwsched.workers ADD COLUMN IF NOT EXISTS zone String",
    ]
    res = chdb_run(tmp_path, writer, users_xml=modern_grants_xml(WRITER[0]))
    for q, (good, text) in zip(writer, res):
        assert good, f"writer: {q!r}: {text}"
    assert "TO default" in res[0][1] and "GRANT ALL" not in res[0][1], res[0][1]
    n = len(ddl) + 1
    assert res[n + 2][1] == "1\n" and res[n + 3][1] == "202001\n" and res[n + 5][1] == "t2\n", res[n:]
    refused = ["DROP TABLE hwsched.hw_metrics", "TRUNCATE TABLE hwsched.task_runs", "DROP VIEW hwsched.hw_metrics_1m_mv",
               "CREATE DATABASE hwsched_other", "SELECT * FROM url('http://127.0.0.1:9/', 'TSV', 'x String')",
               "SELECT * FROM file('x.tsv', 'TSV', 'x String')"]
    for q, (good, text) in zip(refused, chdb_run(tmp_path, refused, users_xml=modern_grants_xml(WRITER[0]))):
        assert not good and "ACCESS_DENIED" in text, f"writer: {q!r} was not refused: {text}"

    reader = ["SELECT count() FROM hwsched.hw_metrics FINAL",
              "SELECT count() FROM hwsched.hw_metrics SETTINGS max_execution_time = 60, max_threads = 1",
              "SELECT engine FROM system.tables WHERE database = 'hwsched' AND name = 'hw_metrics'",
              "SELECT getSetting('readonly')"]
    res = chdb_run(tmp_path, reader, users_xml=modern_grants_xml(READER[0]))
    assert [x for x in res] == [(True, "1\n"), (True, "1\n"), (True, "ReplacingMergeTree\n"), (True, "2\n")], res
    refused = {
        "INSERT INTO hwsched.hw_metrics (time, worker_id, device, metric, value) VALUES (now64(3), 'w', 'c', 'm', 1)":
            "ACCESS_DENIED",
        "CREATE TABLE hwsched.r (x UInt8) ENGINE = Memory": "ACCESS_DENIED",
        "DROP TABLE hwsched.hw_metrics": "ACCESS_DENIED",
        "ALTER TABLE hwsched.hw_metrics ADD COLUMN r String": "ACCESS_DENIED",
        "ALTER TABLE hwsched.task_runs DROP PARTITION 202612": "ACCESS_DENIED",
        "TRUNCATE TABLE hwsched.task_runs": "ACCESS_DENIED",
        "SELECT * FROM url('http://127.0.0.1:9/', 'TSV', 'x String')": "ACCESS_DENIED",
        "SELECT 1 SETTINGS readonly = 0": "READONLY",
        "SELECT 1 SETTINGS max_execution_time = 3600": "SETTING_CONSTRAINT_VIOLATION",
    }
    res = chdb_run(tmp_path, list(refused), users_xml=modern_grants_xml(READER[0]))
    for (q, why), (good, text) in zip(refused.items(), res):
        assert not good and why in text, f"reader: {q!r} was not refused ({why}): {text}"
