"""compose/monitoring: every alert and dashboard expression names a metric that really exists.

The daemon's metrics come from its own registry (prometheus-client); LiteLLM's from the installed
proxy's source when it is there (make test installs it). A renamed metric fails here, not at 2 AM.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from watchdog.ops.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "compose" / "monitoring"
FUNCTIONS = {"increase", "rate", "histogram_quantile", "sum", "by", "le", "time", "and", "or", "up", "job", "absent"}
SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def our_metric_names() -> set[str]:
    names = set()
    for family in Metrics(hostname="test").registry.collect():
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES)
    return names


def metric_names(expr: str) -> set[str]:
    """Identifiers outside label matchers, strings and durations."""
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\bby\s*\([^)]*\)", "", expr)
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return {w for w in words if w not in FUNCTIONS}


def expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    found = [(r["alert"], str(r["expr"])) for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    found += [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
    return found


def test_rules_are_well_formed() -> None:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    assert len({r["alert"] for r in alerts}) == len(alerts)
    for rule in alerts:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule
    names = {r["alert"] for r in alerts}
    # seed 001's table: restart rate, health checks, VRAM > 70%, latency p50/p95; plus GPU and watchdog faults
    assert {"ContainerRestartRateHigh", "HealthCheckFailing", "GpuVramHigh", "InferenceLatencyP95High"} <= names
    assert {"GpuQuarantined", "NvidiaDriverNotAnswering", "WatchdogDown"} <= names
    assert any("> 5" in r["expr"] for r in alerts if r["alert"] == "ContainerRestartRateHigh")
    assert any("0.70" in r["expr"] for r in alerts if r["alert"] == "GpuVramHigh")


@pytest.mark.parametrize(("where", "expr"), expressions())
def test_every_metric_exists(where: str, expr: str) -> None:
    ours = our_metric_names()
    litellm_source = next(
        (ROOT / ".venv-litellm" / "lib").glob("python3*/site-packages/litellm/integrations/prometheus.py"), None
    )
    for name in metric_names(expr):
        if name.startswith("gpu_watchdog_"):
            assert name in ours, f"{where}: {name} is not a metric gpu-watchdog exports"
        elif name.startswith("litellm_"):
            assert litellm_source is not None, (
                "run scripts/ensure-litellm.sh (make test does) to check LiteLLM's metrics"
            )
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            assert f'"{base}"' in litellm_source.read_text(), f"{where}: {name} is not a LiteLLM metric"
        else:
            pytest.fail(f"{where}: unexpected identifier {name!r} in {expr!r}")


def test_dashboard_is_grafana_json() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) >= 8
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and panel["targets"]


def test_promtool_accepts_the_rules() -> None:
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: run scripts/ensure-promtool.sh (make test does)"
    done = subprocess.run(
        [promtool, "check", "rules", str(MONITORING / "alerts.yml")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 10 rules found" in done.stdout
