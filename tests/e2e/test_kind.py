"""End to end on kind: the chart's operator runs fleets with real controllers.

Run with `bash hack/e2e.sh` (Docker + kind). Skipped elsewhere with the reason.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.support.fleet_checks import (
    assert_deleted_with_owned,
    assert_dry_run_never_scales,
    assert_fleet_runs,
)
from tests.support.kube import Kube

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_NS = "wsfleet-system"
REDIS_URL = f"redis://wsfleet-redis.{OPERATOR_NS}.svc:6379/0"
PROMETHEUS_URL = "http://prometheus.monitoring.svc:9090"


def example(name: str, namespace: str) -> dict[str, Any]:
    """An example fleet pointed at the kind cluster's images, Redis and Prometheus."""
    fleet: dict[str, Any] = yaml.safe_load((ROOT / "examples" / name).read_text())
    spec = fleet["spec"]
    spec.setdefault("gateway", {})
    spec["gateway"]["image"] = "wsfleet/gateway:dev"
    spec["gateway"]["imagePullPolicy"] = "Never"
    spec["gateway"].pop("resources", None)
    spec["redis"] = {"url": REDIS_URL}
    spec.setdefault("prometheus", {})["url"] = PROMETHEUS_URL
    fleet["metadata"]["namespace"] = namespace
    return fleet


def auth_secret() -> dict[str, Any]:
    """The Secret the examples reference (`auth.jwtSecretRef`, `auth.apiKeySecretRef`)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "wsfleet-auth"},
        "type": "Opaque",
        "stringData": {"jwt-secret": secrets.token_urlsafe(48), "api-key": secrets.token_hex(32)},
    }


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    kube.create_namespace(name)
    kube.apply(name, auth_secret())
    try:
        yield name
    finally:
        kube.delete_namespace(name)


async def test_operator_is_available(kube: Kube) -> None:
    deploy = kube.get(OPERATOR_NS, "deployment", "wsfleet-operator")
    assert deploy is not None
    assert deploy["status"].get("availableReplicas", 0) >= 1


async def test_minimal_fleet_runs_serves_and_is_garbage_collected(
    kube: Kube, namespace: str
) -> None:
    """The same checks as tests/cluster (shared bodies), plus a real WebSocket through the
    Service: here the gateway pods run the image, not kwok."""
    fleet = example("01-minimal-fleet.yaml", namespace)
    name = fleet["metadata"]["name"]
    kube.apply(namespace, fleet)
    await assert_fleet_runs(kube, namespace, fleet)

    with kube.port_forward(namespace, f"service/{name}-gateway", 8080) as port:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"ws://127.0.0.1:{port}/ws") as ws,
        ):
            welcome = json.loads((await ws.receive(timeout=30)).data)
            assert welcome["type"] == "welcome"

    await assert_deleted_with_owned(kube, namespace, name)


async def test_dry_run_fleet_decides_but_never_scales(kube: Kube, namespace: str) -> None:
    fleet = example("03-dry-run-fleet.yaml", namespace)
    kube.apply(namespace, fleet)
    await assert_dry_run_never_scales(kube, namespace, fleet)


async def test_operator_never_hits_forbidden(kube: Kube, namespace: str) -> None:
    """The chart's least-privilege RBAC covers every call the operator made so far."""
    fleet = example("01-minimal-fleet.yaml", namespace)
    kube.apply(namespace, fleet)
    await assert_fleet_runs(kube, namespace, fleet)
    logs = kube.logs(OPERATOR_NS, "deployment/wsfleet-operator")
    assert "Forbidden" not in logs
    assert " 403" not in logs
