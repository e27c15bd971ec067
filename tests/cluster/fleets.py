"""WebSocketFleet manifests for the real-cluster tests (the examples, made quick)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from tests.support.kube import Kube

ROOT = Path(__file__).resolve().parents[2]
NO_PROMETHEUS = "http://127.0.0.1:9"
"""Nothing listens there: metrics are unavailable, so the fleet holds its size."""


def example(filename: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "examples" / filename).read_text())
    return doc


def deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def fleet(name: str, **spec: Any) -> dict[str, Any]:
    """The minimal example with a one-second decision timer and `spec` merged in."""
    doc = example("01-minimal-fleet.yaml")
    doc["metadata"] = {"name": name}
    quick = {
        "prometheus": {"url": NO_PROMETHEUS, "timeoutSeconds": 1, "staleAfterSeconds": 0},
        "behavior": {"intervalSeconds": 1},
    }
    doc["spec"] = deep_merge(deep_merge(doc["spec"], quick), spec)
    return doc


CAPACITY = 10
"""Connections per pod; the fleet wants connections / (CAPACITY x 0.8) pods."""


def scaling_fleet(name: str, prometheus_url: str, **spec: Any) -> dict[str, Any]:
    return fleet(
        name,
        replicas={"min": 2, "max": 6},
        prometheus={"url": prometheus_url, "timeoutSeconds": 2, "staleAfterSeconds": 0},
        targets={
            "connectionsPerPod": CAPACITY,
            "targetUtilization": 0.8,
            "scaleDownUtilization": 0.4,
            "switchLatencyP95Ms": None,
        },
        behavior={
            "intervalSeconds": 1,
            "scaleUp": {"stabilizationWindowSeconds": 0, "maxPodsPerMinute": 4},
            "scaleDown": {
                "stabilizationWindowSeconds": 3,
                "maxPodsPerMinute": 10,
                "maxPercentPerMinute": 100,
            },
        },
        **spec,
    )


def replicas(kube: Kube, ns: str, name: str) -> int:
    dep = kube.get(ns, "deployment", f"{name}-gateway") or {}
    return int((dep.get("spec") or {}).get("replicas", -1))


def condition(kube: Kube, ns: str, name: str, type_: str) -> str | None:
    got = kube.get(ns, "websocketfleet", name) or {}
    for c in (got.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return str(c["status"])
    return None
