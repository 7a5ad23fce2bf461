"""A real Prometheus (Debian's package) on loopback, scraping given targets every second."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from syncmon import metric_names
from syncmon.reference.localserver import free_port

from .conftest import wait_for


class Prometheus:
    def __init__(
        self,
        targets: list[str],
        *,
        rule_files: list[str] | None = None,
        alertmanager: str | None = None,
        jobs: dict[str, list[str]] | None = None,
    ) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus not installed (run scripts/setup.sh)")
        self.dir = Path(tempfile.mkdtemp(prefix="syncmon-prom-"))
        self.port = free_port()
        cfg: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "syncmon", "static_configs": [{"targets": targets}]}],
        }
        for job, more in (jobs or {}).items():
            cfg["scrape_configs"].append({"job_name": job, "static_configs": [{"targets": more}]})
        if rule_files:
            cfg["rule_files"] = rule_files
        if alertmanager:
            cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
        (self.dir / "prometheus.yml").write_text(json.dumps(cfg))
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "log", "wb"),  # noqa: SIM115
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("prometheus did not become ready")

    def query(self, expr: str) -> list[dict[str, Any]]:
        q = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{q}", timeout=5) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list[Any]:
        q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
        with urllib.request.urlopen(f"{self.url}/api/v1/query_range?{q}", timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


ROOT = Path(__file__).resolve().parents[2]
TURN_METRICS = (
    metric_names.TURN_RESPONSE,
    metric_names.INTERRUPTIONS,
    metric_names.INTERRUPTION_STOP,
)


def dashboard_queries(room: str, participant: str, *, turns: bool) -> list[tuple[str, str]]:
    """Every query of the generated dashboards (panels and variables) for one avatar: those of
    the turn panels (``turns``) or all the others."""
    out = []
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        d = json.loads(path.read_text())
        for p in d["panels"]:
            for t in p["targets"]:
                expr = t["expr"].replace("$room", room).replace("$participant", participant)
                out.append((f"{path.name}: {p['title']}", expr))
        for v in d["templating"]["list"]:
            if v["type"] == "query":
                out.append((f"{path.name}: ${v['name']}", v["definition"].replace("$room", room)))
    return [(t, e) for t, e in out if any(m in e for m in TURN_METRICS) == turns]


def await_dashboard_data(
    prom: Prometheus, queries: list[tuple[str, str]], since: float, timeout: float
) -> None:
    """Until every query has data somewhere between ``since`` (wall clock) and now, as a
    Grafana panel over that time range shows it (a gauge may be absent for a while, and its
    panel then shows a gap); fails naming those that never had."""
    missing: list[str] = []

    def all_seen() -> bool:
        missing.clear()
        now = time.time()
        for title, expr in queries:
            if expr.startswith("label_values("):
                m = re.match(r"label_values\((.*), (\w+)\)$", expr)
                assert m, expr
                expr = f"count by ({m.group(2)}) ({m.group(1)})"
            if not prom.query_range(expr, since, now):
                missing.append(f"{title}: {expr}")
        return not missing

    try:
        wait_for(all_seen, timeout=timeout, every=3)
    except AssertionError:
        raise AssertionError("queries without data:\n" + "\n".join(missing)) from None
