"""Static validation of deploy/ (no Docker engine or cluster runs here).

Core Kubernetes objects go through kubernetes-validate's bundled schemas (strict), the compose
file through the compose-spec schema vendored by check-jsonschema; the Prometheus Operator
objects have no schema there, so the PrometheusRule's rules go through promtool and the
ServiceMonitor is checked against the Service it must select.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from syncmon import metric_names as n

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy/kubernetes"


def load_all(path: Path) -> list[dict]:  # type: ignore[type-arg]
    import yaml

    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_core_kubernetes_objects_validate_strictly() -> None:
    p = run(
        sys.executable,
        "-m",
        "kubernetes_validate",
        "--strict",
        str(K8S / "sidecar-deployment.yaml"),
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("passed") == 2


def test_compose_file_validates_against_compose_spec() -> None:
    p = run(
        sys.executable,
        "-m",
        "check_jsonschema",
        "--builtin-schema",
        "vendor.compose-spec",
        "deploy/compose/compose.yaml",
    )
    assert p.returncode == 0, p.stdout + p.stderr
    compose = load_all(ROOT / "deploy/compose/compose.yaml")[0]
    assert set(compose["services"]) == {
        "livekit",
        "avatar",
        "syncmon",
        "prometheus",
        "alertmanager",
        "grafana",
    }
    for svc in compose["services"].values():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            assert (ROOT / "deploy/compose" / src).resolve().exists(), src


def test_prometheusrule_holds_the_checked_rules(tmp_path: Path) -> None:
    (rule,) = load_all(K8S / "prometheusrule.yaml")
    assert rule["kind"] == "PrometheusRule"
    f = tmp_path / "rules.yml"
    f.write_text(json.dumps(rule["spec"]))
    exe = shutil.which("promtool")
    assert exe
    p = run(exe, "check", "rules", str(f))
    from syncmon.mixin.rules import rule_file

    count = sum(len(g["rules"]) for g in rule_file()["groups"])
    assert p.returncode == 0 and f"SUCCESS: {count} rules found" in p.stdout, p.stdout + p.stderr


def test_servicemonitor_selects_the_syncmon_service_port() -> None:
    (sm,) = load_all(K8S / "servicemonitor.yaml")
    objs = load_all(K8S / "sidecar-deployment.yaml")
    svc = next(o for o in objs if o["kind"] == "Service")
    dep = next(o for o in objs if o["kind"] == "Deployment")
    want = sm["spec"]["selector"]["matchLabels"]
    assert want.items() <= svc["metadata"]["labels"].items()
    ports = {p["name"] for p in svc["spec"]["ports"]}
    assert {e["port"] for e in sm["spec"]["endpoints"]} <= ports
    syncmon = next(
        c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "syncmon"
    )
    assert syncmon["args"][0] == "watch" and "0.0.0.0:9464" in syncmon["args"]
    assert {
        p["path"]
        for p in (syncmon["readinessProbe"]["httpGet"], syncmon["livenessProbe"]["httpGet"])
    } == {"/readyz", "/healthz"}


def test_dockerfile_installs_the_package_and_runs_syncmon() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src
    assert 'ENTRYPOINT ["syncmon"]' in text and "EXPOSE 9464" in text and "USER syncmon" in text


@pytest.mark.parametrize("name", ["dashboards.yaml", "datasources.yaml"])
def test_grafana_provisioning_files(name: str) -> None:
    (doc,) = load_all(ROOT / "dashboards/provisioning" / name)
    assert doc["apiVersion"] == 1
    if name == "datasources.yaml":
        assert doc["datasources"][0]["type"] == "prometheus"
    else:
        assert doc["providers"][0]["options"]["path"].endswith("/syncmon")


# -- the worker at scale: Helm chart, its rendered manifest, the autoscaler's metric ----------
CHART = ROOT / "deploy/helm/syncmon-worker"


def helm() -> str:
    exe = shutil.which("helm") or str(
        Path(os.environ.get("GOBIN", Path.home() / "go/bin")) / "helm"
    )
    assert Path(exe).is_file(), "helm not installed (scripts/setup.sh builds it)"
    return exe


def render(tmp_path: Path, *sets: str) -> tuple[Path, list[dict]]:  # type: ignore[type-arg]
    args = [helm(), "template", "syncmon-worker", str(CHART), "--kube-version", "1.30.0"]
    for s in sets:
        args += ["--set", s]
    p = run(*args)
    assert p.returncode == 0, p.stderr
    out = tmp_path / "rendered.yaml"
    out.write_text(p.stdout)
    return out, load_all(out)


def test_helm_chart_lints_strictly() -> None:
    p = run(helm(), "lint", "--strict", str(CHART), "--kube-version", "1.30.0")
    assert p.returncode == 0 and "1 chart(s) linted, 0 chart(s) failed" in p.stdout, p.stdout


def test_helm_chart_renders_valid_objects_that_fit_together(tmp_path: Path) -> None:
    path, docs = render(tmp_path)
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"Deployment", "HorizontalPodAutoscaler", "PodMonitor"}
    p = run(sys.executable, "-m", "kubernetes_validate", "--strict", "--no-warn", str(path))
    assert p.returncode == 0 and p.stdout.count("passed") == 2, p.stdout + p.stderr
    dep, hpa, pm = kinds["Deployment"], kinds["HorizontalPodAutoscaler"], kinds["PodMonitor"]
    pod = dep["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    assert c["args"][0] == "worker"
    assert c["args"][c["args"].index("--max-rooms") + 1] == "8"
    # the rooms in two processes (a pod's CPUs: the worker does not guess them from the node)
    assert c["args"][c["args"].index("--processes") + 1] == "2"
    assert c["resources"]["requests"]["cpu"] == "2"
    # no secret in the manifest: every credential is a reference to the Secret
    env = {e["name"]: e for e in c["env"]}
    for k in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        assert env[k]["valueFrom"]["secretKeyRef"]["name"] == "livekit-credentials"
        assert "value" not in env[k]
    # the PodMonitor finds these pods and their metrics port
    assert pm["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert {e["port"] for e in pm["spec"]["podMetricsEndpoints"]} <= {p["name"] for p in c["ports"]}
    # the HPA scales this Deployment on the adapter's metric, made of what the code exports
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    (rule,) = load_all(K8S / "prometheus-adapter-rules.yaml")[0]["rules"]
    assert metric["pods"]["metric"]["name"] == rule["name"]["as"] == n.LOAD_RATIO
    assert all(f"{m}{{" in rule["metricsQuery"] for m in (n.ROOMS, n.ROOMS_MAX, n.OVERLOADED))
    assert rule["seriesQuery"].startswith(n.ROOMS + "{")
    assert "replicas" not in dep["spec"]  # the HPA owns the replica count


def test_adapter_rule_query_is_a_workers_load(tmp_path: Path) -> None:
    """The autoscaler's metric, evaluated by promtool on series as the workers export them:
    each pod's rooms over its cap, or 1 while it is overloaded (as it tells dispatch)."""
    (rule,) = load_all(K8S / "prometheus-adapter-rules.yaml")[0]["rules"]
    expr = (
        rule["metricsQuery"]
        .replace("<<.LabelMatchers>>", 'namespace="ns",pod=~"syncmon-worker-.*"')
        .replace("<<.GroupBy>>", "pod")
    )
    rules = tmp_path / "rules.yml"
    rules.write_text(
        json.dumps({"groups": [{"name": "g", "rules": [{"record": "load", "expr": expr}]}]})
    )
    # pod: (rooms, cap, overloaded) -> its load
    pods = {"a": (2, 4, 0, 0.5), "b": (1, 4, 1, 1.0), "c": (4, 4, 1, 1.0), "d": (0, 4, 0, 0.0)}
    series = []
    for pod, (rooms, cap, over, _) in pods.items():
        for name, v in ((n.ROOMS, rooms), (n.ROOMS_MAX, cap), (n.OVERLOADED, over)):
            lv = f'namespace="ns",pod="syncmon-worker-{pod}"'
            series.append({"series": f"{name}{{{lv}}}", "values": f"{v}x5"})
    tests = tmp_path / "tests.yml"
    tests.write_text(
        json.dumps(
            {
                "rule_files": [str(rules)],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": series,
                        "promql_expr_test": [
                            {
                                "expr": "load",
                                "eval_time": "2m",
                                "exp_samples": [
                                    {
                                        "labels": f'load{{pod="syncmon-worker-{pod}"}}',
                                        "value": want,
                                    }
                                    for pod, (*_, want) in pods.items()
                                ],
                            }
                        ],
                    }
                ],
            }
        )
    )
    exe = shutil.which("promtool")
    assert exe
    p = run(exe, "check", "rules", str(rules))
    assert p.returncode == 0 and "SUCCESS: 1 rules found" in p.stdout, p.stdout + p.stderr
    p = run(exe, "test", "rules", str(tests))
    assert p.returncode == 0, p.stdout + p.stderr


def test_helm_values_switch_autoscaling_and_podmonitor_off(tmp_path: Path) -> None:
    _, docs = render(
        tmp_path, "autoscaling.enabled=false", "replicaCount=3", "podMonitor.enabled=false"
    )
    (dep,) = docs
    assert dep["kind"] == "Deployment" and dep["spec"]["replicas"] == 3


def test_helm_processes_left_empty_lets_the_worker_size_itself(tmp_path: Path) -> None:
    _, docs = render(tmp_path, "processes=")
    dep = next(d for d in docs if d["kind"] == "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert "--processes" not in c["args"]


def test_worker_manifest_is_the_chart_rendered(tmp_path: Path) -> None:
    _, docs = render(tmp_path)
    assert load_all(K8S / "worker.yaml") == docs
