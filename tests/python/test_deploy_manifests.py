"""The Kubernetes deployment (deploy/kubernetes), rendered by the real kustomize and checked offline.

Rendering: `kubectl kustomize` (deploy_render.py) on base, base/secrets and each overlay (dev, gpu, ha),
exactly what `kubectl apply -k` would apply. A kustomization kustomize rejects fails here with kustomize's error.

Validation. Every rendered document is validated against the Kubernetes OpenAPI schemas, strict
(unknown fields are errors), by kubernetes-validate (pinned in requirements.txt), which bundles the JSON
schemas of Kubernetes 1.25-1.37: no network. Versions: 1.29 and 1.37 (the newest it bundles). The one
kind it cannot know, the Prometheus Operator's ServiceMonitor (a CRD), gets a structural check instead;
any other kind without a schema fails.

Then what the schemas cannot say: probes on the port of HWSCHED_METRICS_LISTEN, requests, the control
plane's securityContext, every secretKeyRef/configMapKeyRef resolving, replica counts per overlay, the
GPU monitor, the alert rules ConfigMap equal to the built-in rules, and HWSCHED_JS_REPLICAS: one value
for every pod, 3 in the ha overlay, whose NATS URL names the pods of deploy/nats/values-cluster.yaml. The NATS side is
test_deploy_nats.py, the image test_dockerfile.py.
"""
import copy
import pathlib
import re
import shutil

import pytest
import yaml

from conftest import ROOT
from deploy_render import (CONTROL_PLANE, DEPLOYABLE, K8S, KUSTOMIZATIONS, NATS_ROLES, KustomizeError, by_kind,
                           component, env_of, load_docs, one, render, rendered_all, schema_errors, secret_templates,
                           workloads)

KUBERNETES_VERSIONS = ["1.29.0", "1.37.0"]
GPU_NODE_LABEL = "nvidia.com/gpu.present"
HA = "overlays/ha"
ALL = KUSTOMIZATIONS
DEPLOY = DEPLOYABLE
# HWSCHED_JS_REPLICAS every pod of a kustomization reads: the NATS server of deploy/nats/values.yaml
# refuses more than 1; the ha overlay runs on the three-node cluster of values-cluster.yaml
JS_REPLICAS = {"base": "1", "overlays/dev": "1", "overlays/gpu": "1", HA: "3"}


@pytest.fixture(scope="module")
def rendered():
    return rendered_all()


@pytest.mark.parametrize("name", ALL)
def test_every_kustomization_renders(name):
    assert render(K8S / name)


def overlay(tmp_path, kustomization):
    """A copy of deploy/kubernetes with one more overlay, overlays/probe, holding `kustomization`."""
    root = tmp_path / "kubernetes"
    shutil.copytree(K8S, root)
    (root / "overlays" / "probe").mkdir()
    (root / "overlays" / "probe" / "kustomization.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", **kustomization}))
    return root / "overlays" / "probe"


def test_kustomize_and_the_schemas_refuse_a_broken_overlay(tmp_path):
    """The checks bite: kustomize rejects what it cannot build (a missing file, a strategic merge patch
    of nothing), and what it builds blindly (a misspelt field in a patch) the strict schema validation
    rejects. (A JSON6902 patch whose target matches nothing kustomize skips silently: what such a patch
    is for is asserted on the output, e.g. the dev scheduler's one replica.)"""
    with pytest.raises(KustomizeError, match="missing.yaml"):
        render(overlay(tmp_path / "a", {"resources": ["../../base", "missing.yaml"]}))
    with pytest.raises(KustomizeError, match="no-such-deployment"):
        render(overlay(tmp_path / "b", {"resources": ["../../base"], "patches": [{"patch": yaml.safe_dump(
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "no-such-deployment"}})}]}))
    typo = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "hwsched-learner"},
            "spec": {"template": {"spec": {"containers": [{"name": "learner", "imagePullPolicyy": "Always"}]}}}}
    docs = render(overlay(tmp_path / "c", {"resources": ["../../base"], "patches": [{"patch": yaml.safe_dump(typo)}]}))
    (error,) = schema_errors(docs, KUBERNETES_VERSIONS[-1])
    assert error.startswith("Deployment/hwsched-learner") and "imagePullPolicyy" in error


# --------------------------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", ALL)
def test_every_rendered_document_is_valid_kubernetes(rendered, name, version):
    docs = rendered[name]
    assert docs
    errors = schema_errors(docs, version)
    assert not errors, f"{name} against Kubernetes {version}:\n" + "\n".join(errors)


@pytest.mark.parametrize("name", DEPLOY)
def test_service_monitor_is_well_formed(rendered, name):
    """ServiceMonitor (monitoring.coreos.com/v1) is a CRD the validator has no schema for."""
    docs = rendered[name]
    (sm,) = by_kind(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(sm["spec"]) <= {"selector", "endpoints", "podTargetLabels", "namespaceSelector", "jobLabel"}
    (svc,) = [s for s in by_kind(docs, "Service")
              if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"].get("labels", {}).items()]
    (ep,) = sm["spec"]["endpoints"]
    assert set(ep) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
    assert ep["path"] == "/metrics"
    assert ep["port"] in [p["name"] for p in svc["spec"]["ports"]]
    assert re.fullmatch(r"\d+[sm]", ep["interval"])
    for label in sm["spec"].get("podTargetLabels", []):
        assert all(label in w["spec"]["template"]["metadata"]["labels"] for w in workloads(docs))


@pytest.mark.parametrize("name", DEPLOY)
def test_metrics_service_reaches_every_pod_on_its_metrics_port(rendered, name):
    docs = rendered[name]
    (svc,) = [s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "hwsched-metrics"]
    (port,) = svc["spec"]["ports"]
    for w in workloads(docs):
        assert svc["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items(), w["metadata"]["name"]
        for c in w["spec"]["template"]["spec"]["containers"]:
            assert port["targetPort"] in [p["name"] for p in c["ports"]], w["metadata"]["name"]


# --------------------------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------------------------

def test_monitor_daemonset_runs_the_monitor_as_the_node():
    docs = load_docs(K8S / "base" / "monitor-daemonset.yaml")
    assert len(docs) == 1
    ds = docs[0]
    assert (ds["apiVersion"], ds["kind"]) == ("apps/v1", "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    assert spec["hostPID"] is True
    (c,) = spec["containers"]
    assert c["args"] == ["monitor"]
    env = {e["name"]: e for e in c["env"]}
    assert env["HWSCHED_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert "HWSCHED_WORKER_ID" not in env  # node names may hold dots; the monitor makes them subject-safe
    # probes hit the endpoint the monitor serves
    port = env["HWSCHED_METRICS_LISTEN"]["value"].rsplit(":", 1)[1]
    assert int(port) == c["ports"][0]["containerPort"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert all(m["readOnly"] for m in c["volumeMounts"])
    # the drain (20 s) fits in the grace period
    assert spec["terminationGracePeriodSeconds"] > 20
    # what was added is safe: no Kubernetes API token, never privileged
    assert spec["automountServiceAccountToken"] is False
    assert c["securityContext"].get("privileged") is False


@pytest.mark.parametrize("name", DEPLOY)
def test_every_container_has_probes_on_its_metrics_port_and_requests(rendered, name):
    ws = workloads(rendered[name])
    assert {component(w) for w in ws} >= set(CONTROL_PLANE) | {"monitor"}
    for w in ws:
        for c in w["spec"]["template"]["spec"]["containers"]:
            where = f"{name}: {w['metadata']['name']}/{c['name']}"
            listen = env_of(c)["HWSCHED_METRICS_LISTEN"]["value"]
            port = int(listen.rsplit(":", 1)[1])
            named = {p["name"]: p["containerPort"] for p in c["ports"]}
            for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")):
                if probe == "startupProbe" and probe not in c:
                    continue
                get = c[probe]["httpGet"]
                assert get["path"] == path, where
                assert named.get(get["port"], get["port"]) == port, f"{where}: {probe} port is not {listen}"
            req = c["resources"]["requests"]
            assert req.get("cpu") and req.get("memory"), where
            if component(w) in CONTROL_PLANE:
                assert c["resources"]["limits"].get("memory"), where


def effective(pod_sc, c_sc, key):
    return c_sc.get(key, pod_sc.get(key))


@pytest.mark.parametrize("name", DEPLOY)
def test_control_plane_runs_non_root_read_only_without_capabilities(rendered, name):
    deployments = by_kind(rendered[name], "Deployment")
    assert sorted(component(d) for d in deployments) == sorted(CONTROL_PLANE)
    for d in deployments:
        spec = d["spec"]["template"]["spec"]
        pod_sc = spec.get("securityContext", {})
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            where = f"{name}: {d['metadata']['name']}/{c['name']}"
            assert effective(pod_sc, sc, "runAsNonRoot") is True, where
            assert effective(pod_sc, sc, "runAsUser") != 0, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where
            assert not sc.get("privileged"), where
            assert effective(pod_sc, sc, "seccompProfile") == {"type": "RuntimeDefault"}, where
        assert spec.get("automountServiceAccountToken") is False, where
        assert not spec.get("hostPID") and not spec.get("hostNetwork"), where


@pytest.mark.parametrize("name", DEPLOY)
def test_each_service_runs_the_one_binary_with_its_name(rendered, name):
    for w in workloads(rendered[name]):
        (c,) = w["spec"]["template"]["spec"]["containers"]
        assert c["args"] == [component(w).removesuffix("-gpu")], w["metadata"]["name"]
        assert "command" not in c  # the image's ENTRYPOINT is hwsched
        assert re.fullmatch(r"hwsched:[\w.-]+", c["image"]), c["image"]


@pytest.mark.parametrize("name", DEPLOY)
def test_every_secret_and_config_reference_resolves(rendered, name):
    docs = rendered[name]
    secrets = {n: set(s["stringData"]) for n, s in secret_templates().items()}
    config = {d["metadata"]["name"]: set(d["data"]) for d in by_kind(docs, "ConfigMap")}
    refs = 0
    for w in workloads(docs):
        spec = w["spec"]["template"]["spec"]
        for c in spec["containers"]:
            where = f"{name}: {w['metadata']['name']}/{c['name']}"
            env = env_of(c)
            for e in env.values():
                src = e.get("valueFrom", {})
                if "secretKeyRef" in src:
                    ref = src["secretKeyRef"]
                    assert ref["key"] in secrets.get(ref["name"], ()), f"{where}: {e['name']} -> {ref}"
                    refs += 1
                if "configMapKeyRef" in src:
                    ref = src["configMapKeyRef"]
                    assert ref["key"] in config.get(ref["name"], ()), f"{where}: {e['name']} -> {ref}"
            # each NATS user reads its own password
            user = env["HWSCHED_NATS_USER"]["value"]
            assert user in NATS_ROLES, where
            assert env["HWSCHED_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "hwsched-nats", "key": f"{user}-password"}
            if "HWSCHED_CLICKHOUSE_URL" in env:
                assert {"HWSCHED_CLICKHOUSE_USER", "HWSCHED_CLICKHOUSE_PASSWORD"} <= set(env), where
        for v in spec.get("volumes", []):
            if "configMap" in v:
                assert v["configMap"]["name"] in config, f"{name}: volume {v}"
    assert refs >= 7  # 4 control plane NATS + monitor + 2 ClickHouse


def test_secret_templates_hold_one_password_per_nats_role_and_only_placeholders(rendered):
    secrets = secret_templates()
    assert sorted(secrets) == ["hwsched-clickhouse", "hwsched-nats"]
    assert sorted(secrets["hwsched-nats"]["stringData"]) == sorted(f"{r}-password" for r in NATS_ROLES)
    assert sorted(secrets["hwsched-clickhouse"]["stringData"]) == ["reader-password", "writer-password"]
    for s in secrets.values():
        assert "data" not in s
        for key, value in s["stringData"].items():
            assert value.startswith("CHANGE-ME"), f"{s['metadata']['name']}/{key} is not a placeholder"
    # applying base never overwrites real Secrets; dev brings the templates along
    assert not by_kind(rendered["base"], "Secret")
    assert not by_kind(rendered["overlays/gpu"], "Secret")
    assert not by_kind(rendered[HA], "Secret")
    assert len(by_kind(rendered["overlays/dev"], "Secret")) == 2


def test_scheduler_is_active_standby_in_base_and_alone_in_dev(rendered):
    def replicas(name, component_name):
        return one(rendered[name], "Deployment", f"hwsched-{component_name}")["spec"]["replicas"]
    assert replicas("base", "scheduler") == 2
    assert replicas("overlays/gpu", "scheduler") == 2
    assert replicas("overlays/dev", "scheduler") == 1
    assert replicas(HA, "scheduler") == 2
    for other in ("learner", "alerting", "recorder"):
        assert replicas("base", other) == 1  # two would publish, notify or record twice
        assert replicas(HA, other) == 1


def test_dev_overlay_uses_dev_images_and_smaller_requests(rendered):
    base = {w["metadata"]["name"]: w for w in workloads(rendered["base"])}
    for w in workloads(rendered["overlays/dev"]):
        (c,) = w["spec"]["template"]["spec"]["containers"]
        (b,) = base[w["metadata"]["name"]]["spec"]["template"]["spec"]["containers"]
        assert c["image"] == "hwsched:dev"
        assert w["metadata"]["namespace"] == "hwsched"
        if component(w) in CONTROL_PLANE:
            assert quantity(c["resources"]["requests"]["cpu"]) < quantity(b["resources"]["requests"]["cpu"])
            assert quantity(c["resources"]["requests"]["memory"]) < quantity(b["resources"]["requests"]["memory"])
            assert c["resources"]["limits"] == b["resources"]["limits"]


def quantity(q):
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for u, f in units.items():
        if str(q).endswith(u):
            return float(q[: -len(u)]) * f
    return float(q)


def test_gpu_overlay_gives_every_node_exactly_one_monitor(rendered):
    docs = rendered["overlays/gpu"]
    cpu = one(docs, "DaemonSet", "hwsched-monitor")["spec"]["template"]["spec"]
    gpu = one(docs, "DaemonSet", "hwsched-monitor-gpu")["spec"]["template"]["spec"]
    assert gpu["runtimeClassName"] == "nvidia"
    assert gpu["nodeSelector"] == {GPU_NODE_LABEL: "true"}
    assert "runtimeClassName" not in cpu
    (term,) = cpu["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    # NotIn also selects nodes without the label: the complement of the GPU monitor's nodes
    assert term["matchExpressions"] == [{"key": GPU_NODE_LABEL, "operator": "NotIn", "values": ["true"]}]
    # the two DaemonSets never select each other's pods
    sel = [one(docs, "DaemonSet", n)["spec"]["selector"]["matchLabels"] for n in ("hwsched-monitor", "hwsched-monitor-gpu")]
    assert sel[0] != sel[1]
    for s, n in zip(sel, ("hwsched-monitor-gpu", "hwsched-monitor")):
        assert not s.items() <= one(docs, "DaemonSet", n)["spec"]["template"]["metadata"]["labels"].items()
    # base has no GPU settings
    base = one(rendered["base"], "DaemonSet", "hwsched-monitor")["spec"]["template"]["spec"]
    assert "runtimeClassName" not in base and "affinity" not in base


def test_gpu_monitor_is_the_base_monitor_with_only_the_gpu_settings():
    """overlays/gpu/monitor-gpu-daemonset.yaml is a copy: it must not drift from base."""
    (base,) = load_docs(K8S / "base" / "monitor-daemonset.yaml")
    (gpu,) = load_docs(K8S / "overlays" / "gpu" / "monitor-gpu-daemonset.yaml")

    def strip(d):
        d = copy.deepcopy(d)
        d["metadata"].pop("name")
        for labels in (d["metadata"]["labels"], d["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"]):
            labels.pop("app.kubernetes.io/component")
        for k in ("runtimeClassName", "nodeSelector", "tolerations"):
            d["spec"]["template"]["spec"].pop(k, None)
        return d
    assert strip(gpu) == strip(base)
    assert gpu["metadata"]["name"] == "hwsched-monitor-gpu"


def test_alert_rules_configmap_is_the_built_in_rules_file(rendered):
    docs = rendered["base"]
    cm = one(docs, "ConfigMap", "hwsched-alert-rules")
    assert cm["data"]["rules.yaml"] == (ROOT / "services" / "alerting" / "rules" / "defaults.yaml").read_text()
    d = one(docs, "Deployment", "hwsched-alerting")
    spec = d["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    rules = pathlib.PurePosixPath(env_of(c)["HWSCHED_ALERT_RULES"]["value"])
    (vol,) = [v for v in spec["volumes"] if v.get("configMap", {}).get("name") == "hwsched-alert-rules"]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == vol["name"]]
    assert "subPath" not in mount  # a subPath mount never sees ConfigMap updates
    assert rules.parent == pathlib.PurePosixPath(mount["mountPath"]) and rules.name in cm["data"]

# --------------------------------------------------------------------------------------------
# JetStream replicas and the ha overlay
# --------------------------------------------------------------------------------------------

def pod_env_value(docs, c, name):
    """The value container `c` gets for env var `name`: its value, or the key of the rendered ConfigMap
    it references (None when the container does not have it)."""
    e = env_of(c).get(name)
    if e is None:
        return None
    if "value" in e:
        return e["value"]
    ref = e["valueFrom"]["configMapKeyRef"]
    return one(docs, "ConfigMap", ref["name"])["data"][ref["key"]]


@pytest.mark.parametrize("name", DEPLOY)
def test_every_hwsched_pod_reads_the_same_js_replicas(rendered, name):
    """Every service provisions the streams, buckets and Object Stores at start with its
    HWSCHED_JS_REPLICAS, so all of them read it, from the one key of the shared ConfigMap."""
    docs = rendered[name]
    seen = {}
    for w in workloads(docs):
        for c in w["spec"]["template"]["spec"]["containers"]:
            where = f"{w['metadata']['name']}/{c['name']}"
            seen[where] = pod_env_value(docs, c, "HWSCHED_JS_REPLICAS")
            assert env_of(c).get("HWSCHED_JS_REPLICAS", {}).get("valueFrom", {}).get("configMapKeyRef") == \
                {"name": "hwsched-config", "key": "js-replicas"}, where
    assert {component(w) for w in workloads(docs)} >= set(CONTROL_PLANE) | {"monitor"}
    assert set(seen.values()) == {JS_REPLICAS[name]}, f"{name}: {seen}"


def nats_cluster_values():
    return yaml.safe_load((ROOT / "deploy" / "nats" / "values-cluster.yaml").read_text())


def test_ha_overlay_matches_the_nats_cluster(rendered):
    """The ha overlay's replicas are those of the cluster's servers, and its NATS URL names each of
    them: pod <release>-<i> of the chart's StatefulSet, through its headless Service."""
    docs = rendered[HA]
    config = one(docs, "ConfigMap", "hwsched-config")["data"]
    cluster = nats_cluster_values()["config"]["cluster"]
    assert cluster["enabled"] is True
    assert int(config["js-replicas"]) == cluster["replicas"] == 3
    urls = config["nats-url"].split(",")
    assert urls == [f"nats://nats-{i}.nats-headless:4222" for i in range(cluster["replicas"])]
    # what base says of the rest stays
    base = one(rendered["base"], "ConfigMap", "hwsched-config")["data"]
    assert {k: v for k, v in config.items() if k not in ("js-replicas", "nats-url")} == \
        {k: v for k, v in base.items() if k not in ("js-replicas", "nats-url")}


def test_ha_overlay_keeps_a_scheduler_through_node_drains(rendered):
    docs = rendered[HA]
    scheduler = one(docs, "Deployment", "hwsched-scheduler")
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    assert pdb["metadata"]["namespace"] == scheduler["metadata"]["namespace"] == "hwsched"
    assert pdb["spec"]["selector"]["matchLabels"] == scheduler["spec"]["selector"]["matchLabels"]
    # selects the scheduler's pods and nothing else
    for w in workloads(docs):
        selected = pdb["spec"]["selector"]["matchLabels"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
        assert selected == (w is scheduler), w["metadata"]["name"]
    # one of the two may be evicted at a time, never both
    assert 1 <= pdb["spec"]["minAvailable"] < scheduler["spec"]["replicas"]
    assert not by_kind(rendered["base"], "PodDisruptionBudget")
