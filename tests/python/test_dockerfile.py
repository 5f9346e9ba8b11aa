"""The image (Dockerfile): linted by the real hadolint (pinned in requirements.txt; it runs ShellCheck
on every RUN), and built to run as the user the Kubernetes manifests expect. A rule that must be
ignored is ignored inline in the Dockerfile, with a comment saying why."""
import json
import os
import re
import subprocess

import pytest

from conftest import ROOT
from deploy_render import by_kind, rendered_all

HADOLINT = ROOT / "build" / "venv" / "bin" / "hadolint"
DOCKERFILE = ROOT / "Dockerfile"
FAILING_LEVELS = {"error", "warning"}


def hadolint(path, home):
    """hadolint's findings on `path` at warning level or above, as 'line CODE level: message'.
    HOME points at an empty directory so that no personal hadolint config can ignore anything."""
    out = subprocess.run([str(HADOLINT), "--format", "json", "--failure-threshold", "warning", str(path)],
                         cwd=ROOT, env={"PATH": os.environ["PATH"], "HOME": str(home), "XDG_CONFIG_HOME": str(home)},
                         capture_output=True, text=True, timeout=60)
    findings = [f"{f['line']} {f['code']} {f['level']}: {f['message']}"
                for f in json.loads(out.stdout) if f["level"] in FAILING_LEVELS]
    assert (out.returncode != 0) == bool(findings), f"exit {out.returncode} {out.stderr} {findings}"
    return findings


def test_hadolint_finds_nothing_at_warning_or_above(tmp_path):
    findings = hadolint(DOCKERFILE, tmp_path)
    assert not findings, "hadolint on Dockerfile:\n" + "\n".join(findings)


@pytest.mark.parametrize("old, new, code", [
    ("# hadolint ignore=DL3008\n", "", "DL3008"),                    # apt packages not pinned
    ("FROM debian:bookworm-slim", "FROM debian:latest", "DL3007"),  # a moving tag
    ("WORKDIR /home/hwsched\n", "WORKDIR /home/hwsched\nRUN cd /tmp && ls\n", "DL3003"),  # cd instead of WORKDIR
])
def test_hadolint_refuses_a_broken_dockerfile(tmp_path, old, new, code):
    """The check bites: the Dockerfile broken in one way gets that finding."""
    text = DOCKERFILE.read_text()
    assert old in text
    broken = tmp_path / "Dockerfile"
    broken.write_text(text.replace(old, new, 1))
    findings = hadolint(broken, tmp_path)
    assert any(f" {code} " in f for f in findings), findings


def test_dockerfile_builds_hwsched_and_runs_as_the_manifests_user():
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms[0].startswith("rust:") and froms[0].endswith("-bookworm") and froms[-1] == "debian:bookworm-slim"
    assert "cargo build --release --locked -p hwsched" in text
    assert re.search(r'^ENTRYPOINT \["hwsched"\]$', text, re.M)
    (user,) = re.findall(r"^USER\s+(\d+):(\d+)$", text, re.M)
    for d in by_kind(rendered_all()["base"], "Deployment"):
        sc = d["spec"]["template"]["spec"]["securityContext"]
        assert (str(sc["runAsUser"]), str(sc["runAsGroup"])) == user, d["metadata"]["name"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"target/", "build/", ".git"} <= set(ignored)
