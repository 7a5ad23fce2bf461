"""Rules and dashboards: generated files current, promtool-checked, structurally sound."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from syncmon import metric_names
from syncmon.mixin.__main__ import render_all

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy/prometheus/syncmon-rules.yml"
EXPORTED = {
    v
    for k, v in vars(metric_names).items()
    if k.isupper() and isinstance(v, str) and v.startswith("syncmon_")
}


def test_generated_files_are_current() -> None:
    for rel, text in render_all().items():
        assert (ROOT / rel).read_text() == text, f"{rel} is stale: run python -m syncmon.mixin"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool missing: run scripts/setup.sh"
    return subprocess.run([exe, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_promtool_check_rules() -> None:
    p = promtool("check", "rules", str(RULES))
    assert p.returncode == 0, p.stdout + p.stderr
    from syncmon.mixin.rules import rule_file

    # every rule the mixin generates is in the file and passes (not a count written by hand)
    count = sum(len(g["rules"]) for g in rule_file()["groups"])
    assert f"SUCCESS: {count} rules found" in p.stdout, p.stdout


def test_promtool_unit_tests_fire_and_stay_quiet() -> None:
    p = promtool("test", "rules", "deploy/prometheus/tests/syncmon-rules.test.yml")
    assert p.returncode == 0, p.stdout + p.stderr


def rule_groups() -> list[dict]:  # type: ignore[type-arg]
    return list(yaml.safe_load(RULES.read_text())["groups"])


def test_every_alert_has_for_severity_summary_description_runbook() -> None:
    alerts = [r for g in rule_groups() for r in g["rules"] if "alert" in r]
    assert {a["alert"] for a in alerts} >= {
        "SyncmonLipSyncWarning",
        "SyncmonLipSyncCritical",
        "SyncmonLipSyncDriftGrowing",
        "SyncmonVideoFreezing",
        "SyncmonFrameDrops",
        "SyncmonNoVideoFrames",
        "SyncmonMonitorDown",
    }
    for a in alerts:
        assert a["for"] and a["labels"]["severity"] in ("warning", "critical")
        ann = a["annotations"]
        assert (
            ann["summary"]
            and "{{" in ann["description"]
            and ann["runbook_url"].startswith("https://")
        )


def metric_names_in(expr: str) -> set[str]:
    return set(re.findall(r"\b(syncmon_[a-z0-9_]+?)(?:_bucket|_sum|_count)?\b", expr))


def dashboards() -> dict[str, dict]:  # type: ignore[type-arg]
    return {p.name: json.loads(p.read_text()) for p in sorted((ROOT / "dashboards").glob("*.json"))}


def test_rules_and_dashboards_name_only_exported_metrics() -> None:
    recorded = {r["record"] for g in rule_groups() for r in g["rules"] if "record" in r}
    exprs = [r["expr"] for g in rule_groups() for r in g["rules"]]
    for d in dashboards().values():
        exprs += [t["expr"] for p in d["panels"] for t in p["targets"]]
        exprs += [v["definition"] for v in d["templating"]["list"] if "definition" in v]
    used = set().union(*(metric_names_in(e) for e in exprs))
    assert used - EXPORTED == set()
    for e in exprs:
        for rec in re.findall(r"\bsyncmon:[a-z0-9_:]+", e):
            assert rec in recorded, rec


@pytest.mark.parametrize("name", ["syncmon-overview.json", "syncmon-room.json"])
def test_dashboard_structure(name: str) -> None:
    d = dashboards()[name]
    assert d["schemaVersion"] >= 36 and d["uid"] and d["title"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in d["templating"]["list"]}
    for p in d["panels"]:
        assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
        for t in p["targets"]:
            assert t["expr"] and t["refId"] and t["datasource"]
            # ($1 is a label_replace group reference, not a variable)
            for used in re.findall(r"\$([A-Za-z_]\w*)", t["expr"]):
                assert used in variables, f"{p['title']}: ${used} undefined"
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0
    for a, b in itertools.combinations(d["panels"], 2):
        ga, gb = a["gridPos"], b["gridPos"]
        overlap = (
            ga["x"] < gb["x"] + gb["w"]
            and gb["x"] < ga["x"] + ga["w"]
            and ga["y"] < gb["y"] + gb["h"]
            and gb["y"] < ga["y"] + ga["h"]
        )
        assert not overlap, (a["title"], b["title"])


def test_offset_panels_draw_the_atsc_and_itu_bands() -> None:
    room = dashboards()["syncmon-room.json"]
    panel = next(p for p in room["panels"] if p["title"].startswith("Lip-sync offset"))
    steps = [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert steps == [None, -0.185, -0.125, -0.045, 0.015, 0.045, 0.09]


def test_every_runbook_url_has_its_section() -> None:
    text = (ROOT / "docs/runbooks.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9-]", "", h.strip().lower().replace(" ", "-"))
        for h in re.findall(r"^## (.+)$", text, flags=re.M)
    }
    for g in rule_groups():
        for r in g["rules"]:
            if "alert" in r:
                assert r["annotations"]["runbook_url"].split("#")[1] in anchors, r["alert"]
