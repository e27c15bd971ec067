"""promtool on the PrometheusRule the chart renders: syntax check and alert unit tests."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.packaging.chart import Manifest, one

PROMTOOL_TESTS = Path(__file__).parent / "promtool"
METRIC = re.compile(r"\b(wsfleet_[a-z0-9_]+)")
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        raise RuntimeError(
            "promtool not found: `apt-get install -y --no-install-recommends prometheus` "
            "or `bash hack/install-deps.sh`"
        )
    return path


@pytest.fixture
def rules_dir(all_features_render: list[Manifest], tmp_path: Path) -> Path:
    rule = one(all_features_render, "PrometheusRule")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    for test_file in PROMTOOL_TESTS.glob("*_test.yaml"):
        shutil.copy(test_file, tmp_path / test_file.name)
    return tmp_path


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_check_rules(rules_dir: Path) -> None:
    proc = run_promtool("check", "rules", "rules.yaml", cwd=rules_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 15 rules found" in proc.stdout


def test_promtool_unit_tests_of_alerts(rules_dir: Path) -> None:
    proc = run_promtool("test", "rules", "alerts_test.yaml", cwd=rules_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_unit_tests_catch_a_broken_alert(rules_dir: Path) -> None:
    """The unit tests can fail: loosen one alert's `for` and they must notice."""
    rules = (rules_dir / "rules.yaml").read_text()
    broken = rules.replace("for: 15m", "for: 1m", 1)
    assert broken != rules
    (rules_dir / "rules.yaml").write_text(broken)
    proc = run_promtool("test", "rules", "alerts_test.yaml", cwd=rules_dir)
    assert proc.returncode != 0


def test_every_alert_the_issue_asks_for_exists(all_features_render: list[Manifest]) -> None:
    rule = one(all_features_render, "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert {
        "WsfleetSwitchLatencySLOBurnFast",
        "WsfleetSwitchLatencySLOBurnSlow",
        "WsfleetConnectionsNearNodeCap",
        "WsfleetMetricsUnavailable",
        "WsfleetFleetCapped",
        "WsfleetDrainStuck",
        "WsfleetForecastAccuracyLow",
        "WsfleetLatencyAnomaly",
        "WsfleetConnectionFlood",
        "WsfleetMemoryLeak",
    } <= alerts
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            if "alert" in r:
                assert r["labels"]["severity"] in {"critical", "warning", "info"}
                assert r["annotations"]["runbook_url"].endswith(r["alert"].lower()) or (
                    "sloburn" in r["annotations"]["runbook_url"]
                    or "metricsunavailable" in r["annotations"]["runbook_url"]
                )


def test_switch_slo_threshold_is_a_gateway_bucket(all_features_render: list[Manifest]) -> None:
    """`le="0.3"` only works if the gateway's histogram has a 0.3 s bucket."""
    from wsfleet_gateway import metrics

    rule = one(all_features_render, "PrometheusRule")
    text = "\n".join(r["expr"] for g in rule["spec"]["groups"] for r in g["rules"])
    (le,) = set(re.findall(r'le="([0-9.]+)"', text))
    assert float(le) == 0.3
    assert float(le) in metrics.LATENCY_BUCKETS_S


def referenced_metrics(all_features_render: list[Manifest]) -> set[str]:
    rule = one(all_features_render, "PrometheusRule")
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    cm = one(all_features_render, "ConfigMap")
    exprs += list(cm["data"].values())
    names = set()
    for expr in exprs:
        for name in METRIC.findall(expr):
            for suffix in HISTOGRAM_SUFFIXES:
                if name.endswith(suffix) and not name.startswith("wsfleet_operator_"):
                    name = name.removesuffix(suffix)
            names.add(name)
    return names


# Names the rules and dashboard use that their exporter does not serve yet. The test
# fails as soon as one of them appears (then delete it here) or a new unknown name shows up.
PENDING_GATEWAY = {"wsfleet_connections_limit"}
PENDING_OPERATOR: set[str] = set()


def test_gateway_metrics_used_by_rules_and_dashboard_exist(
    all_features_render: list[Manifest],
) -> None:
    from wsfleet_gateway import metrics

    served = set(metrics.METRIC_NAMES)
    used = {n for n in referenced_metrics(all_features_render) if not n.startswith("wsfleet_op")}
    assert used - served == PENDING_GATEWAY, f"unknown gateway metrics: {used - served}"
    assert not PENDING_GATEWAY & served, "a pending metric is now served: drop it from PENDING"


def test_operator_metrics_used_by_rules_and_dashboard_exist(
    all_features_render: list[Manifest],
) -> None:
    from wsfleet_operator import opmetrics

    served: set[str] = set()
    for family in opmetrics.REGISTRY.collect():
        # Labelled families with no child yet have no samples: name them from the family.
        served.add(family.name + ("_total" if family.type == "counter" else ""))
    used = {n for n in referenced_metrics(all_features_render) if n.startswith("wsfleet_op")}
    assert used - served == PENDING_OPERATOR, f"unknown operator metrics: {used - served}"
    assert not PENDING_OPERATOR & served, "a pending metric is now served: drop it from PENDING"


def test_every_runbook_url_has_a_section_in_operate_md(all_features_render: list[Manifest]) -> None:
    operate = (Path(__file__).resolve().parents[2] / "docs" / "operate.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in operate.splitlines()
        if line.startswith("#")
    }
    rule = one(all_features_render, "PrometheusRule")
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            if "alert" in r:
                anchor = r["annotations"]["runbook_url"].split("#", 1)[1]
                assert anchor in anchors, f"{r['alert']}: docs/operate.md has no #{anchor}"
