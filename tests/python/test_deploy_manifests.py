"""The Kubernetes deployment (deploy/kubernetes, deploy/nats/values.yaml, Dockerfile), checked offline.

Rendering. kustomize is not installed here, so `render` below is a small kustomize of our own. It
is a SUBSET, implementing exactly what the kustomizations of deploy/kubernetes use, and it refuses
anything else (an unknown field fails the test rather than being ignored):
  - resources: YAML files inside the kustomization's directory (as kustomize's default load
    restrictor demands), and directories holding a kustomization.yaml, rendered recursively;
  - namespace: set on every document (all of ours are namespaced kinds);
  - images: `name` matched against the image name without tag or digest, replaced by
    `newName` / `newTag` / `digest`, in containers and initContainers of pod templates;
  - patches, inline (`patch`) or from a file (`path`):
      a YAML list is a JSON6902 patch (ops add, replace, remove), applied to the one document its
      `target` names (kind and name, optionally group and version);
      a mapping is a strategic merge patch of a whole document, found by apiVersion, kind and
      name: mappings merge, null deletes a key, the lists below merge by their key (containers,
      initContainers, env, volumes by name; volumeMounts by mountPath; container ports by
      containerPort), every other list is replaced; no `$patch` directives.
  Duplicate documents (same apiVersion, kind, namespace, name) are an error, as in kustomize.
Not implemented (and not used): generators, name prefixes/suffixes, label/annotation transformers,
replacements, components, helm charts, patch targets by label selector.

Validation. Every rendered document of base, base/secrets and each overlay is validated against
the Kubernetes OpenAPI schemas, strict (unknown fields are errors), by kubernetes-validate (pinned
in requirements.txt), which bundles the JSON schemas of Kubernetes 1.25-1.37: no network. Versions:
1.29 and 1.37 (the newest it bundles). The one kind it cannot know, the Prometheus Operator's
ServiceMonitor (a CRD), gets a structural check instead; any other kind without a schema fails.

Then what the schemas cannot say: probes on the port of HWSCHED_METRICS_LISTEN, requests, the
control plane's securityContext, every secretKeyRef/configMapKeyRef resolving, replica counts per
overlay, the GPU monitor, the alert rules ConfigMap equal to the built-in rules, the NATS Helm values
against the Secret and hwsched-auth.conf, and the Dockerfile's user against runAsUser.
"""
import copy
import pathlib
import re

import kubernetes_validate
import pytest
import yaml

from conftest import ROOT

K8S = ROOT / "deploy" / "kubernetes"
KUSTOMIZATIONS = ["base", "base/secrets", "overlays/dev", "overlays/gpu"]
DEPLOYABLE = ["base", "overlays/dev", "overlays/gpu"]  # what `kubectl apply -k` is meant for
KUBERNETES_VERSIONS = ["1.29.0", "1.37.0"]
CONTROL_PLANE = ["scheduler", "learner", "alerting", "recorder"]
NATS_ROLES = ["scheduler", "learner", "alerting", "recorder", "monitor", "producer", "operator"]
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
GPU_NODE_LABEL = "nvidia.com/gpu.present"


# --------------------------------------------------------------------------------------------
# The renderer (a subset of kustomize, see the module docstring)
# --------------------------------------------------------------------------------------------

class KustomizeSubsetError(Exception):
    pass


KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
# strategic merge: lists merged by a key (field name -> key); every other list is replaced
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}


def load_docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def doc_id(d):
    m = d.get("metadata", {})
    return (d.get("apiVersion"), d.get("kind"), m.get("namespace"), m.get("name"))


def inside(root, path):
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def strategic_merge(base, patch, field=None):
    if isinstance(base, dict) and isinstance(patch, dict):
        if any(isinstance(k, str) and k.startswith("$") for k in patch):
            raise KustomizeSubsetError(f"$-directives are not supported: {sorted(patch)}")
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = strategic_merge(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        out = [copy.deepcopy(x) for x in base]
        for item in patch:
            if not isinstance(item, dict) or key not in item:
                raise KustomizeSubsetError(f"list {field}: every item needs its merge key {key}")
            for i, existing in enumerate(out):
                if existing.get(key) == item[key]:
                    out[i] = strategic_merge(existing, item, None)
                    break
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def pointer(path):
    if not path.startswith("/"):
        raise KustomizeSubsetError(f"JSON pointer {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json6902(doc, ops):
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = pointer(op["path"])
        node = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        kind = op["op"]
        if kind not in ("add", "replace", "remove"):
            raise KustomizeSubsetError(f"JSON6902 op {kind!r} is not supported")
        if isinstance(node, list):
            idx = len(node) if (last == "-" and kind == "add") else int(last)
            if kind == "add":
                node.insert(idx, op["value"])
            elif kind == "replace":
                node[idx] = op["value"]
            else:
                del node[idx]
        else:
            if kind in ("replace", "remove") and last not in node:
                raise KustomizeSubsetError(f"JSON6902 {kind} of missing path {op['path']}")
            if kind == "remove":
                del node[last]
            else:
                node[last] = op["value"]
    return doc


def pod_templates(d):
    spec = d.get("spec", {})
    if "template" in spec:
        yield spec["template"]["spec"]


def set_image(image, rule):
    name = re.split(r"[@]", image)[0]
    name = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
    if name != rule["name"]:
        return image
    new = rule.get("newName", name)
    if "digest" in rule:
        return f"{new}@{rule['digest']}"
    if "newTag" in rule:
        return f"{new}:{rule['newTag']}"
    rest = image[len(name):]
    return new + rest


def render(directory):
    """Renders the kustomization in `directory` (a subset of kustomize: see the module docstring)."""
    directory = pathlib.Path(directory)
    kfile = directory / "kustomization.yaml"
    if not kfile.is_file():
        raise KustomizeSubsetError(f"{directory}: no kustomization.yaml")
    k = yaml.safe_load(kfile.read_text())
    unknown = set(k) - KUSTOMIZATION_FIELDS
    if unknown:
        raise KustomizeSubsetError(f"{kfile}: unsupported fields {sorted(unknown)}")
    if (k.get("apiVersion"), k.get("kind")) != ("kustomize.config.k8s.io/v1beta1", "Kustomization"):
        raise KustomizeSubsetError(f"{kfile}: not a kustomize.config.k8s.io/v1beta1 Kustomization")

    docs = []
    for res in k.get("resources", []):
        path = directory / res
        if path.is_dir():
            docs += render(path)
        elif path.is_file():
            if not inside(directory, path):
                raise KustomizeSubsetError(f"{kfile}: file {res} is outside the kustomization's directory")
            docs += load_docs(path)
        else:
            raise KustomizeSubsetError(f"{kfile}: resource {res} does not exist")

    for entry in k.get("patches", []):
        extra = set(entry) - {"path", "patch", "target"}
        if extra or (("path" in entry) == ("patch" in entry)):
            raise KustomizeSubsetError(f"{kfile}: a patch is `path` or `patch` (+ `target`), got {sorted(entry)}")
        if "path" in entry:
            ppath = directory / entry["path"]
            if not inside(directory, ppath):
                raise KustomizeSubsetError(f"{kfile}: patch {entry['path']} is outside the kustomization's directory")
            patch = yaml.safe_load(ppath.read_text())
        else:
            patch = yaml.safe_load(entry["patch"])
        if isinstance(patch, list):
            target = entry.get("target") or {}
            if set(target) - {"group", "version", "kind", "name"} or not {"kind", "name"} <= set(target):
                raise KustomizeSubsetError(f"{kfile}: a JSON6902 patch needs target kind and name only, got {target}")

            def matches(d):
                group, _, version = d["apiVersion"].rpartition("/")
                return (d["kind"] == target["kind"] and d["metadata"]["name"] == target["name"]
                        and target.get("group", group) == group and target.get("version", version) == version)
            hits = [i for i, d in enumerate(docs) if matches(d)]
            if len(hits) != 1:
                raise KustomizeSubsetError(f"{kfile}: JSON6902 target {target} matches {len(hits)} documents")
            docs[hits[0]] = json6902(docs[hits[0]], patch)
        elif isinstance(patch, dict):
            if "target" in entry:
                raise KustomizeSubsetError(f"{kfile}: strategic merge patches are found by their own name, no target")
            want = (patch["apiVersion"], patch["kind"], patch["metadata"]["name"])
            hits = [i for i, d in enumerate(docs) if (d["apiVersion"], d["kind"], d["metadata"]["name"]) == want]
            if len(hits) != 1:
                raise KustomizeSubsetError(f"{kfile}: strategic merge patch {want} matches {len(hits)} documents")
            docs[hits[0]] = strategic_merge(docs[hits[0]], patch)
        else:
            raise KustomizeSubsetError(f"{kfile}: a patch is a JSON6902 list or one document")

    for rule in k.get("images", []):
        if set(rule) - {"name", "newName", "newTag", "digest"} or "name" not in rule:
            raise KustomizeSubsetError(f"{kfile}: unsupported image rule {rule}")
        for d in docs:
            for spec in pod_templates(d):
                for c in spec.get("containers", []) + spec.get("initContainers", []):
                    c["image"] = set_image(c["image"], rule)

    if "namespace" in k:
        for d in docs:
            d.setdefault("metadata", {})["namespace"] = k["namespace"]

    seen = set()
    for d in docs:
        if doc_id(d) in seen:
            raise KustomizeSubsetError(f"{kfile}: duplicate resource {doc_id(d)}")
        seen.add(doc_id(d))
    return docs


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_kustomization_renders(name):
    assert render(K8S / name)


@pytest.fixture(scope="module")
def rendered():
    return {name: render(K8S / name) for name in KUSTOMIZATIONS}


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
    docs = load_docs(K8S / "base" / "secrets" / "secrets.template.yaml")
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}


# --------------------------------------------------------------------------------------------
# The renderer itself
# --------------------------------------------------------------------------------------------

def test_renderer_implements_its_subset_and_refuses_the_rest(tmp_path):
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a"},
              "spec": {"replicas": 2, "template": {"spec": {"containers": [
                  {"name": "c", "image": "reg.example/hwsched:1", "env": [{"name": "A", "value": "1"}],
                   "args": ["x"]}]}}}}
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "d.yaml").write_text(yaml.safe_dump(deploy))
    (tmp_path / "base" / "kustomization.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": ["d.yaml"]}))
    over = tmp_path / "over"
    over.mkdir()
    k = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "ns",
         "resources": ["../base"], "images": [{"name": "reg.example/hwsched", "newTag": "dev"}],
         "patches": [
             {"target": {"kind": "Deployment", "name": "a"}, "patch": "- {op: replace, path: /spec/replicas, value: 1}"},
             {"patch": yaml.safe_dump({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a"},
                                       "spec": {"template": {"spec": {"containers": [
                                           {"name": "c", "env": [{"name": "B", "value": "2"}], "args": ["y"]}]}}}})}]}
    (over / "kustomization.yaml").write_text(yaml.safe_dump(k))
    (d,) = render(over)
    c = d["spec"]["template"]["spec"]["containers"][0]
    assert d["metadata"]["namespace"] == "ns" and d["spec"]["replicas"] == 1
    assert c["image"] == "reg.example/hwsched:dev"
    assert [e["name"] for e in c["env"]] == ["A", "B"]  # merged by name
    assert c["args"] == ["y"]  # other lists replaced
    # what it does not implement, it refuses
    for bad in ({"commonLabels": {"a": "b"}}, {"namePrefix": "x-"}, {"resources": ["../base/d.yaml"]},
                {"patches": [{"target": {"kind": "Deployment", "name": "a"}, "patch": "- {op: copy, from: /a, path: /b}"}]}):
        (over / "kustomization.yaml").write_text(yaml.safe_dump({**k, **bad}))
        with pytest.raises(KustomizeSubsetError):
            render(over)


# --------------------------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_rendered_document_is_valid_kubernetes(rendered, name, version):
    docs = rendered[name]
    assert docs
    errors = []
    for d in docs:
        if (d["apiVersion"], d["kind"]) in CRD_KINDS:
            continue  # test_service_monitor_is_well_formed
        try:
            kubernetes_validate.validate(d, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{d['kind']}/{d['metadata']['name']}: {'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{d['kind']}/{d['metadata']['name']}: {e.message}")
    assert not errors, f"{name} against Kubernetes {version}:\n" + "\n".join(errors)


@pytest.mark.parametrize("name", DEPLOYABLE)
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


@pytest.mark.parametrize("name", DEPLOYABLE)
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


@pytest.mark.parametrize("name", DEPLOYABLE)
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


@pytest.mark.parametrize("name", DEPLOYABLE)
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


@pytest.mark.parametrize("name", DEPLOYABLE)
def test_each_service_runs_the_one_binary_with_its_name(rendered, name):
    for w in workloads(rendered[name]):
        (c,) = w["spec"]["template"]["spec"]["containers"]
        assert c["args"] == [component(w).removesuffix("-gpu")], w["metadata"]["name"]
        assert "command" not in c  # the image's ENTRYPOINT is hwsched
        assert re.fullmatch(r"hwsched:[\w.-]+", c["image"]), c["image"]


@pytest.mark.parametrize("name", DEPLOYABLE)
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
    assert len(by_kind(rendered["overlays/dev"], "Secret")) == 2


def test_scheduler_is_active_standby_in_base_and_alone_in_dev(rendered):
    def replicas(name, component_name):
        return one(rendered[name], "Deployment", f"hwsched-{component_name}")["spec"]["replicas"]
    assert replicas("base", "scheduler") == 2
    assert replicas("overlays/gpu", "scheduler") == 2
    assert replicas("overlays/dev", "scheduler") == 1
    for other in ("learner", "alerting", "recorder"):
        assert replicas("base", other) == 1  # two would publish, notify or record twice


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
# NATS Helm values, Dockerfile
# --------------------------------------------------------------------------------------------

def nats_values():
    return yaml.safe_load((ROOT / "deploy" / "nats" / "values.yaml").read_text())


def test_nats_values_enable_jetstream_on_a_pvc_and_give_the_server_every_password():
    v = nats_values()
    js = v["config"]["jetstream"]
    assert js["enabled"] is True and js["fileStore"]["enabled"] is True
    assert js["fileStore"]["pvc"]["enabled"] is True and js["fileStore"]["pvc"]["size"]
    assert v["config"]["merge"]["00$include"] == "hwsched-auth.conf"
    env = v["container"]["env"]
    nats_secret = set(secret_templates()["hwsched-nats"]["stringData"])
    for role in NATS_ROLES:
        ref = env[f"HWSCHED_NATS_PASSWORD_{role.upper()}"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "hwsched-nats", "key": f"{role}-password"}
        assert ref["key"] in nats_secret
    text = (ROOT / "deploy" / "nats" / "values.yaml").read_text()
    assert re.search(r"^\s*#\s*nats:\n\s*#\s*tls:\n\s*#\s*enabled: true", text, re.M), "the TLS section, commented"


def nats_conf_variables(text):
    """The $VARIABLES a nats-server config references (outside comments and quoted strings)."""
    out = set()
    for line in text.splitlines():
        line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
        line = re.split(r"#|//", line, maxsplit=1)[0]
        out |= set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", line))
    return out


def test_nats_auth_conf_gets_every_password_it_references_from_the_values():
    conf = ROOT / "deploy" / "nats" / "hwsched-auth.conf"
    if not conf.exists():
        pytest.skip("deploy/nats/hwsched-auth.conf is not written yet")
    text = conf.read_text()
    problems = []
    # nats-server refuses to start on a variable its environment lacks
    missing = nats_conf_variables(text) - set(nats_values()["container"]["env"])
    if missing:
        problems.append(f"variables the NATS pod does not get (deploy/nats/values.yaml container.env): {sorted(missing)}")
    # the pods (HWSCHED_NATS_USER), CI and operators log in as these users
    users = set(re.findall(r"\buser\s*[:=]\s*\"?([A-Za-z0-9_-]+)", text))
    if set(NATS_ROLES) - users:
        problems.append(f"roles with a password in the Secret hwsched-nats but no user: {sorted(set(NATS_ROLES) - users)}")
    assert not problems, "deploy/nats/hwsched-auth.conf and the Kubernetes deployment disagree:\n" + "\n".join(problems)


def test_nats_conf_variables_parser():
    conf = 'users = [ {user: "a", password: $HWSCHED_NATS_PASSWORD_A} # $NOT_THIS\n {user: b, password: "$2a$11$x"} ]'
    assert nats_conf_variables(conf) == {"HWSCHED_NATS_PASSWORD_A"}


def test_dockerfile_builds_hwsched_and_runs_as_the_manifests_user(rendered):
    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms[0].startswith("rust:") and froms[0].endswith("-bookworm") and froms[-1] == "debian:bookworm-slim"
    assert "cargo build --release --locked -p hwsched" in text
    assert re.search(r'^ENTRYPOINT \["hwsched"\]$', text, re.M)
    (user,) = re.findall(r"^USER\s+(\d+):(\d+)$", text, re.M)
    for d in by_kind(rendered["base"], "Deployment"):
        sc = d["spec"]["template"]["spec"]["securityContext"]
        assert (str(sc["runAsUser"]), str(sc["runAsGroup"])) == user, d["metadata"]["name"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"target/", "build/", ".git"} <= set(ignored)
