"""The NATS side of the deployment (deploy/nats), checked with the real nats-server.

Every NATS configuration the project ships or renders goes through `nats-server -t` (parse and check
the configuration, then exit: includes are read, $variables must resolve, unknown fields are errors),
with the environment the server would have:
  - deploy/nats/hwsched-auth.conf, with the pod's environment;
  - the nats.conf the NATS Helm chart (1.x) writes from deploy/nats/values.yaml, next to
    hwsched-auth.conf as the chart's ConfigMap mounts them, with the pod's environment: container.env
    of the values, each secretKeyRef read from the Secret template (its CHANGE-ME placeholders), and
    POD_NAME and SERVER_NAME as the chart's StatefulSet sets them;
  - the same for the three-node cluster, values.yaml with values-cluster.yaml layered on it as
    `helm -f values.yaml -f values-cluster.yaml` merges them: a `cluster` block with a route to each pod;
  - `hwsched nats-auth` with per-worker users, as tests/tests/permissions.rs renders it.
scripts/run.sh and libs/testkit write no configuration file (flags only: -a, -p, -js, -sd); the files
that Rust integration tests write are started by the real server in those tests.

helm is not run (not installed, and the chart is not vendored): `helm_nats_conf` below writes what the
chart's templates (files/config/config.yaml, files/config/jetstream.yaml, the nats.formatConfig helper)
make of the values, for the part of the values layout we use, and refuses values it does not know.
"""
import json
import os
import re
import subprocess

import pytest
import yaml

from conftest import HWSCHED, NATS_SERVER, ROOT
from deploy_render import NATS_ROLES, secret_templates

NATS = ROOT / "deploy" / "nats"
POD_NAME = "nats-0"  # the chart's StatefulSet gives the server its pod name in $POD_NAME
RELEASE = "nats"  # `helm install nats`: the chart's fullname, so StatefulSet nats, Service nats-headless


def helm_merge(base, over):
    """What helm makes of `-f base -f over`: maps merged key by key (recursively), anything else from
    `over` replaces what `base` had, and a null in `over` deletes the key."""
    out = dict(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = helm_merge(out[k], v)
        else:
            out[k] = v
    return out


def nats_values(*layers):
    """values.yaml, with each of `layers` (file names in deploy/nats) merged on top in order."""
    values = yaml.safe_load((NATS / "values.yaml").read_text())
    for name in layers:
        values = helm_merge(values, yaml.safe_load((NATS / name).read_text()))
    return values


def cluster_values():
    return nats_values("values-cluster.yaml")


def nats_conf_variables(text):
    """The $VARIABLES a nats-server config references (outside comments and quoted strings)."""
    out = set()
    for line in text.splitlines():
        line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
        line = re.split(r"#|//", line, maxsplit=1)[0]
        out |= set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", line))
    return out


def nats_check(conf, env):
    """`nats-server -t -c conf` with exactly `env` (and PATH): (passed, what the server said)."""
    out = subprocess.run([NATS_SERVER, "-t", "-c", str(conf)], env={"PATH": os.environ["PATH"], **env},
                         capture_output=True, text=True, timeout=30)
    said = (out.stdout + out.stderr).strip()
    assert ("is valid" in said) == (out.returncode == 0), said
    return out.returncode == 0, said


def nats_pod_env(values):
    """The NATS container's environment from container.env: plain values, and secretKeyRefs read from
    the Secret templates of deploy/kubernetes/base/secrets (their placeholder values)."""
    secrets = secret_templates()
    env = {"POD_NAME": POD_NAME, "SERVER_NAME": values["config"].get("serverNamePrefix", "") + POD_NAME}
    for name, v in values["container"]["env"].items():
        if isinstance(v, str):
            env[name] = v
        else:
            ref = v["valueFrom"]["secretKeyRef"]
            env[name] = secrets[ref["name"]]["stringData"][ref["key"]]
    return env


CHART_CONFIG_VALUES = {"nats", "jetstream", "cluster", "monitor", "merge", "serverNamePrefix"}
CHART_CLUSTER_VALUES = {"enabled", "port", "replicas", "routeURLs", "tls", "merge"}


def helm_cluster_conf(cluster):
    """files/config/cluster.yaml: the cluster named after the StatefulSet, one route per pod through
    the headless Service (its short name unless routeURLs.useFQDN), route credentials if both given."""
    unknown = set(cluster) - CHART_CLUSTER_VALUES
    assert not unknown, f"values config.cluster.{sorted(unknown)}: extend helm_cluster_conf to render them"
    assert not cluster.get("tls", {}).get("enabled"), "config.cluster.tls: extend helm_cluster_conf"
    cluster = {"port": 6222, "replicas": 3, **cluster}
    urls = {"useFQDN": False, "k8sClusterDomain": "cluster.local", **cluster.get("routeURLs", {})}
    domain = f"{RELEASE}-headless"
    if urls["useFQDN"]:
        domain += f".hwsched.svc.{urls['k8sClusterDomain']}"
    auth = f"{urls['user']}:{urls['password']}@" if urls.get("user") and urls.get("password") else ""
    conf = {"name": RELEASE, "port": cluster["port"], "no_advertise": True,
            "routes": [f"nats://{auth}{RELEASE}-{i}.{domain}:{cluster['port']}" for i in range(int(cluster["replicas"]))]}
    if auth:
        conf["authorization"] = {"user": urls["user"], "password": urls["password"]}
    return helm_merge(conf, cluster.get("merge", {}))


def helm_nats_conf(values):
    """The nats.conf the chart renders from `values` (see the module docstring)."""
    config = values["config"]
    unknown = set(config) - CHART_CONFIG_VALUES
    assert not unknown, f"values config.{sorted(unknown)}: extend helm_nats_conf to render them"
    assert not config.get("nats", {}).get("tls", {}).get("enabled"), "config.nats.tls: extend helm_nats_conf"
    # files/config/config.yaml, with the chart's defaults (nats.port 4222, monitor on 8222, reloader on)
    conf = {"server_name": "<< $SERVER_NAME >>", "lame_duck_grace_period": "10s", "lame_duck_duration": "30s",
            "pid_file": "/var/run/nats/nats.pid", "port": config.get("nats", {}).get("port", 4222)}
    if config.get("cluster", {}).get("enabled"):
        conf["cluster"] = helm_cluster_conf(config["cluster"])
    monitor = {"enabled": True, "port": 8222, **config.get("monitor", {})}
    if monitor["enabled"]:
        conf["http_port"] = monitor["port"]
    js = config.get("jetstream", {})
    if js.get("enabled"):  # files/config/jetstream.yaml
        mem = {"enabled": False, **js.get("memoryStore", {})}
        fs = {"enabled": True, "dir": "/data", **js.get("fileStore", {})}
        conf["jetstream"] = {}
        if mem["enabled"]:
            if mem.get("maxSize"):
                conf["jetstream"]["max_memory_store"] = f"<< {mem['maxSize']} >>"
        else:
            conf["jetstream"]["max_memory_store"] = 0
        if fs["enabled"]:
            conf["jetstream"]["store_dir"] = fs["dir"]
            if fs.get("maxSize"):
                conf["jetstream"]["max_file_store"] = f"<< {fs['maxSize']} >>"
            elif fs.get("pvc", {}).get("enabled", True):
                conf["jetstream"]["max_file_store"] = f"<< {fs.get('pvc', {}).get('size', '10Gi')} >>"
        else:
            conf["jetstream"]["max_file_store"] = 0
    conf.update(config.get("merge", {}))  # mergeOverwrite of config.merge
    # nats.formatConfig: pretty JSON (sorted keys); "..$include": "f" becomes `include f;`, "<< x >>" is x raw
    text = json.dumps(conf, indent=2, sort_keys=True)
    text = re.sub(r'".*\$include": "(.*)",?', r"include \1;", text)
    return re.sub(r'"<<\s+(.*?)\s+>>"', r"\1", text)


def chart_config_dir(tmp_path, values):
    """/etc/nats-config as the chart mounts it: nats.conf and the merged-in hwsched-auth.conf."""
    (tmp_path / "nats.conf").write_text(helm_nats_conf(values))
    (tmp_path / "hwsched-auth.conf").write_text((NATS / "hwsched-auth.conf").read_text())
    return tmp_path / "nats.conf"


# --------------------------------------------------------------------------------------------
# Helm values against the Secret and hwsched-auth.conf
# --------------------------------------------------------------------------------------------

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
    text = (NATS / "values.yaml").read_text()
    assert re.search(r"^\s*#\s*nats:\n\s*#\s*tls:\n\s*#\s*enabled: true", text, re.M), "the TLS section, commented"


def test_nats_auth_conf_has_a_user_per_role():
    # the pods (HWSCHED_NATS_USER), CI and operators log in as these users; that every password
    # variable is set is nats-server's to say (test_the_chart_config_passes_nats_server_t)
    users = set(re.findall(r"\buser\s*[:=]\s*\"?([A-Za-z0-9_-]+)", (NATS / "hwsched-auth.conf").read_text()))
    assert not set(NATS_ROLES) - users, f"roles with a password in the Secret hwsched-nats but no user: {users}"


def test_nats_conf_variables_parser():
    conf = 'users = [ {user: "a", password: $HWSCHED_NATS_PASSWORD_A} # $NOT_THIS\n {user: b, password: "$2a$11$x"} ]'
    assert nats_conf_variables(conf) == {"HWSCHED_NATS_PASSWORD_A"}


# --------------------------------------------------------------------------------------------
# nats-server -t
# --------------------------------------------------------------------------------------------

def test_the_shipped_auth_conf_passes_nats_server_t():
    ok, said = nats_check(NATS / "hwsched-auth.conf", nats_pod_env(nats_values()))
    assert ok, said


def test_the_chart_config_passes_nats_server_t(tmp_path):
    values = nats_values()
    conf = chart_config_dir(tmp_path, values)
    ok, said = nats_check(conf, nats_pod_env(values))
    assert ok, f"{said}\n--- nats.conf as the chart renders it:\n{conf.read_text()}"
    text = conf.read_text()
    assert re.search(r"^\s*include hwsched-auth\.conf;$", text, re.M) and '"store_dir": "/data"' in text


def test_the_cluster_chart_config_passes_nats_server_t(tmp_path):
    """values.yaml + values-cluster.yaml: three servers, each with a route to every pod of the
    StatefulSet, JetStream on its own PVC, the users of values.yaml."""
    values = cluster_values()
    conf = chart_config_dir(tmp_path, values)
    ok, said = nats_check(conf, nats_pod_env(values))
    assert ok, f"{said}\n--- nats.conf as the chart renders it:\n{conf.read_text()}"
    rendered = json.loads(re.sub(r"^\s*include .*;$", "", re.sub(r"\$SERVER_NAME|\d+Gi", '""', conf.read_text()), flags=re.M))
    cluster = rendered["cluster"]
    assert cluster["name"] == RELEASE and cluster["port"] == 6222
    assert cluster["routes"] == [f"nats://{RELEASE}-{i}.{RELEASE}-headless:6222" for i in range(3)]
    assert rendered["jetstream"]["store_dir"] == "/data"
    assert re.search(r"^\s*include hwsched-auth\.conf;$", conf.read_text(), re.M)
    assert re.search(r'^\s*"server_name": \$SERVER_NAME,?$', conf.read_text(), re.M)  # one name per pod


def test_cluster_values_spread_three_servers_over_nodes_with_a_budget():
    v = cluster_values()
    single = nats_values()
    cluster = v["config"]["cluster"]
    assert cluster["enabled"] is True and cluster["replicas"] == 3  # odd: an even count adds no fault tolerance
    assert single["config"]["cluster"]["enabled"] is False  # values.yaml alone stays one server
    # what values.yaml set is kept: the users, the passwords, JetStream on a PVC per pod
    assert v["config"]["merge"] == single["config"]["merge"]
    assert set(single["container"]["env"]) <= set(v["container"]["env"])
    js = v["config"]["jetstream"]
    assert js["enabled"] and js["fileStore"]["enabled"] and js["fileStore"]["pvc"]["enabled"]
    # each pod holds a full copy of every 3-replica stream: no smaller than the one server's PVC
    assert gib(js["fileStore"]["pvc"]["size"]) >= gib(single["config"]["jetstream"]["fileStore"]["pvc"]["size"])
    # one server per node, required: the chart's own pods, selected by its selector labels
    (term,) = v["podTemplate"]["merge"]["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": RELEASE,
                                                     "app.kubernetes.io/component": "nats"}
    for key, c in v["podTemplate"]["topologySpreadConstraints"].items():
        assert "labelSelector" not in c and c["whenUnsatisfiable"] in ("ScheduleAnyway", "DoNotSchedule"), key
    assert v["podDisruptionBudget"]["enabled"] is True
    # Go's soft limit below the container's memory limit
    resources = v["container"]["merge"]["resources"]
    assert gib(v["container"]["env"]["GOMEMLIMIT"]) < gib(resources["limits"]["memory"])
    assert gib(resources["requests"]["memory"]) <= gib(resources["limits"]["memory"])


def gib(quantity):
    """A size such as 10Gi, 1800MiB or 512Mi, in GiB."""
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]i)B?", str(quantity)).groups()
    return float(number) * 1024 ** "KMGT".index(unit[0]) / 1024 ** 3


@pytest.mark.parametrize("shared_monitor", [False, True])
def test_nats_auth_with_per_worker_users_passes_nats_server_t(tmp_path, shared_monitor):
    args = ["nats-auth", "--worker", "w-a", "--worker", "ip-10-0-1-7-ec2-internal"]
    out = subprocess.run([HWSCHED, *args, *(["--shared-monitor"] if shared_monitor else [])],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    conf = tmp_path / "auth.conf"
    conf.write_text(out.stdout)
    variables = nats_conf_variables(out.stdout)
    assert {"HWSCHED_NATS_PASSWORD_W_A", "HWSCHED_NATS_PASSWORD_IP_10_0_1_7_EC2_INTERNAL"} <= variables
    ok, said = nats_check(conf, {v: f"pw-{v.lower()}" for v in variables})
    assert ok, said


def broken_unknown_field(tmp_path, values):
    conf = tmp_path / "hwsched-auth.conf"
    conf.write_text((NATS / "hwsched-auth.conf").read_text().replace("allow_responses", "allow_responsez", 1))
    return conf, nats_pod_env(values)


def broken_syntax(tmp_path, values):
    conf = tmp_path / "hwsched-auth.conf"
    conf.write_text((NATS / "hwsched-auth.conf").read_text().rstrip().removesuffix("}"))
    return conf, nats_pod_env(values)


def broken_password_not_in_the_pod(tmp_path, values):
    env = nats_pod_env(values)
    del env["HWSCHED_NATS_PASSWORD_MONITOR"]
    return chart_config_dir(tmp_path, values), env


def broken_include(tmp_path, values):
    conf = chart_config_dir(tmp_path, {**values, "config": {**values["config"], "merge": {"00$include": "users.conf"}}})
    return conf, nats_pod_env(values)


def broken_cluster_field(tmp_path, values):
    values = cluster_values()
    values["config"]["cluster"]["merge"] = {"no_advertize": True}
    return chart_config_dir(tmp_path, values), nats_pod_env(values)


def broken_cluster_without_server_name(tmp_path, values):
    values = cluster_values()
    env = nats_pod_env(values)
    del env["SERVER_NAME"]
    return chart_config_dir(tmp_path, values), env


@pytest.mark.parametrize("broken, says", [
    (broken_unknown_field, 'Unknown field "allow_responsez"'),
    (broken_syntax, "Unexpected EOF"),
    (broken_password_not_in_the_pod, "'HWSCHED_NATS_PASSWORD_MONITOR'"),
    (broken_include, "users.conf"),
    (broken_cluster_field, 'unknown field "no_advertize"'),
    (broken_cluster_without_server_name, "'SERVER_NAME'"),
])
def test_nats_server_t_refuses_a_broken_config(tmp_path, broken, says):
    """The check bites: each of these breaks the shipped configuration in one way, and nats-server says so."""
    conf, env = broken(tmp_path, nats_values())
    ok, said = nats_check(conf, env)
    assert not ok and says in said, said
