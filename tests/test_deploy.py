"""Static validation of deploy/ (no Docker engine or cluster runs here).

Core Kubernetes objects go through kubernetes-validate's bundled schemas (strict), the compose
file through the compose-spec schema vendored by check-jsonschema; the Prometheus Operator
objects have no schema there, so the PrometheusRule's rules go through promtool and the
ServiceMonitor is checked against the Service it must select.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
