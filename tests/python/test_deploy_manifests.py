"""Structural checks of the Kubernetes manifests (full schema validation comes with the deployment issue)."""
import yaml

from conftest import ROOT


def test_monitor_daemonset_runs_the_monitor_as_the_node():
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "monitor-daemonset.yaml").read_text()))
    assert len(docs) == 1
    ds = docs[0]
    assert (ds["apiVersion"], ds["kind"]) == ("apps/v1", "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    assert spec["hostPID"] is True
    (c,) = spec["containers"]
    assert c["args"] == ["monitor"]
    env = {e["name"]: e for e in c["env"]}
    assert env["HWSCHED_WORKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    # probes hit the endpoint the monitor serves
    port = env["HWSCHED_METRICS_LISTEN"]["value"].rsplit(":", 1)[1]
    assert int(port) == c["ports"][0]["containerPort"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert all(m["readOnly"] for m in c["volumeMounts"])
    # the drain (20 s) fits in the grace period
    assert spec["terminationGracePeriodSeconds"] > 20
