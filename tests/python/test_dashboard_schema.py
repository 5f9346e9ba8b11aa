"""The Grafana dashboards of deploy/grafana/dashboards are valid by Grafana's own published types.

tests/js/dashboard-schema.cjs writes each dashboard as a TypeScript object literal typed with
`Dashboard` from npm `@grafana/schema` (pinned in tests/js/package.json, the 11.2 line that
describes schemaVersion 39) and runs `tsc --noEmit --strict` (npm `typescript`, pinned) on it:
wrong types, missing required fields and unknown fields fail, with tsc's message and the JSON path.
Only the keys on the checker's short allow-list (what Grafana writes but its types lack) are removed
first. The queries themselves are run by test_dashboards.py.
"""
import copy
import json
import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
MODULES = ROOT / "build" / "js" / "node_modules"
CHECKER = ROOT / "tests" / "js" / "dashboard-schema.cjs"


def check(*paths):
    """Runs the checker once over `paths`: (exit status, {path: its problems, tsc's words}), with
    anything tsc said that is not about one of the files under None."""
    node = shutil.which("node")
    assert node, "node is needed to run tsc (scripts/setup-env.sh installs the npm packages)"
    for package in ("typescript", "@grafana/schema"):
        assert (MODULES / package).is_dir(), f"{package} missing from {MODULES}: run make env"
    r = subprocess.run(
        [node, str(CHECKER), *map(str, paths)],
        env=dict(os.environ, HWSCHED_JS_MODULES=str(MODULES)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    problems, current = {}, None
    for line in r.stdout.splitlines():
        if not line.startswith(" "):  # a problem starts unindented, with its file; more lines follow indented
            current = next((str(p) for p in paths if line.startswith(f"{p}: ")), None)
        problems.setdefault(current, []).append(line)
    if r.stderr:
        problems.setdefault(None, []).append(r.stderr)
    return r.returncode, {k: "\n".join(v) for k, v in problems.items()}


@pytest.fixture(scope="module")
def real():
    """One tsc run over every dashboard (tsc takes seconds to start)."""
    return check(*DASHBOARDS)


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_matches_grafana_schema(dashboard, real):
    status, problems = real
    assert None not in problems, f"tsc failed:\n{problems[None]}"
    assert str(dashboard) not in problems, f"{dashboard.name} is not a valid Grafana dashboard:\n{problems[str(dashboard)]}"
    assert status == 0 or problems, "tsc failed without a word"


def first_panel(dashboard):
    """Index of the first panel that is not a row."""
    return next(i for i, p in enumerate(dashboard["panels"]) if p["type"] != "row")


# Breakages of a real dashboard, each returning what the check must say: the JSON path and tsc's
# error first, then any further words of the message.

def gridpos_as_string(d):
    i = first_panel(d)
    d["panels"][i]["gridPos"] = "0,0,12,8"
    return f"panels[{i}].gridPos: error TS2322: Type 'string' is not assignable",


def unknown_top_level_field(d):
    d["refreshInterval"] = "1m"
    return "refreshInterval: error TS2353: Object literal may only specify known properties",


def unknown_panel_field(d):
    i = first_panel(d)
    d["panels"][i]["definition"] = "allowed on a variable only, not on a panel"
    return f"panels[{i}].definition: error TS2353",


def misspelt_enum_value(d):
    d["templating"]["list"][0]["type"] = "querry"
    return "templating.list[0].type: error TS2820: Type '\"querry\"' is not assignable to type 'VariableType'",


def misspelt_string_enum_value(d):
    """Grafana's types make threshold modes a TypeScript enum: the JSON string must still be one."""
    i, p = next((i, p) for i, p in enumerate(d["panels"]) if "thresholds" in p.get("fieldConfig", {}).get("defaults", {}))
    p["fieldConfig"]["defaults"]["thresholds"]["mode"] = "absolut"
    return (f"panels[{i}].fieldConfig.defaults.thresholds.mode: error TS2820: "
            "Type '\"absolut\"' is not assignable to type '\"absolute\" | \"percentage\"'")


def errors_in_two_places(d):
    """tsc reports one error per literal: one in a panel must not hide one elsewhere."""
    i = first_panel(d)
    d["panels"][i]["gridPos"]["w"] = "12"
    d["panels"][i + 1]["gridPos"]["h"] = "8"
    d["refreshInterval"] = "1m"
    return (f"panels[{i}].gridPos.w: error TS2322", f"panels[{i + 1}].gridPos.h: error TS2322",
            "refreshInterval: error TS2353")


def missing_required_field(d):
    del d["schemaVersion"]
    return "(top level): error TS2322", "Property 'schemaVersion' is missing"


def newer_schema_version(d):
    d["schemaVersion"] = 41
    return "schemaVersion: error TS2322: Type '41' is not assignable to type '39'",


BREAKAGES = [gridpos_as_string, unknown_top_level_field, unknown_panel_field, misspelt_enum_value,
             misspelt_string_enum_value, errors_in_two_places, missing_required_field, newer_schema_version]


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """Each breakage applied to its own copy of the first dashboard, checked in one tsc run."""
    tmp = tmp_path_factory.mktemp("broken")
    files, expected = {}, {}
    for breakage in BREAKAGES:
        dashboard = json.loads(DASHBOARDS[0].read_text())
        copied = copy.deepcopy(dashboard)
        expected[breakage.__name__] = breakage(copied)
        assert copied != dashboard
        files[breakage.__name__] = tmp / f"{breakage.__name__}.json"
        files[breakage.__name__].write_text(json.dumps(copied, indent=2))
    status, problems = check(*files.values())
    return status, problems, files, expected


@pytest.mark.parametrize("breakage", [b.__name__ for b in BREAKAGES])
def test_check_finds_a_broken_dashboard(breakage, broken):
    status, problems, files, expected = broken
    f = str(files[breakage])
    said = problems.get(f, "")
    first, *more = expected[breakage]
    assert status == 1 and f"{f}: {first}" in said and all(m in said for m in more), \
        f"expected {expected[breakage]} for {f}, the check said:\n" + "\n".join(problems.values())
