"""The dashboard served by kopf (the operator's way) against the kmock Kubernetes
API emulator over HTTP: fleets and their status appear, change and go away."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kopf
from wsfleet_operator import kube
from wsfleet_operator.dashboard import DashboardSettings
from wsfleet_operator.dashboard_kopf import KopfDashboard, register_dashboard
from wsfleet_operator.spec import PLURAL

from tests.operator.harness import fleet_manifest, kube_api, user_client, watched
from tests.support.waiting import wait_until

SPEC = {"prometheus": {"url": "http://127.0.0.1:1"}, "replicas": {"min": 2, "max": 6}}


@contextlib.asynccontextmanager
async def kopf_with_dashboard(api: Any, url: str) -> AsyncIterator[KopfDashboard]:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url)

    dashboard = register_dashboard(registry, DashboardSettings(port=0, interval_s=0.2))
    settings = kopf.OperatorSettings()
    settings.watching.connect_timeout = 5
    settings.watching.server_timeout = 60
    task = asyncio.create_task(
        kopf.operator(registry=registry, settings=settings, clusterwide=True, standalone=True),
        name="kopf-operator",
    )
    try:
        await wait_until(
            lambda: (watched(api, PLURAL) and dashboard.server is not None) or task.done(),
            timeout_s=30,
            message="kopf watching and the dashboard served",
        )
        if task.done():
            task.result()
        yield dashboard
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert dashboard.server is None  # the cleanup handler stopped it


async def test_operator_serves_fleets_from_the_cluster() -> None:
    async with (
        kube_api() as (api, url),
        user_client(url) as client,
        kopf_with_dashboard(api, url) as dashboard,
        aiohttp.ClientSession() as session,
    ):
        assert dashboard.server is not None
        fleets_url = dashboard.server.url + "api/fleets"

        async def fleets() -> dict[str, Any]:
            async with session.get(fleets_url) as resp:
                assert resp.status == 200
                body: dict[str, Any] = await resp.json()
            return {f"{f['namespace']}/{f['name']}": f for f in body["fleets"]}

        await client.create(kube.FLEETS, "shop", fleet_manifest("chat", SPEC, "shop"))

        async def listed() -> dict[str, Any] | None:
            return (await fleets()).get("shop/chat")

        fleet = await wait_until(listed, timeout_s=30, message="fleet on the dashboard")
        assert fleet["desired_replicas"] is None  # not reconciled yet
        assert (fleet["min_replicas"], fleet["max_replicas"]) == (2, 6)
        assert fleet["selector"] == 'namespace="shop",service="chat"'
        # its own Prometheus (spec.prometheus.url) is down: said so, per fleet
        await wait_until(
            lambda: listed_health(fleets), timeout_s=30, message="per-fleet Prometheus health"
        )

        status = {
            "desiredReplicas": 4,
            "readyReplicas": 3,
            "conditions": [{"type": "Capped", "status": "True", "reason": "MaxPodsPerMinute"}],
            "history": [{"at": 1_790_000_000.0, "from": 2, "to": 4, "reason": "load"}],
        }
        await client.patch(kube.FLEETS, "shop", "chat", {"status": status}, sub="status")

        async def reconciled() -> dict[str, Any] | None:
            f = await listed()
            return f if f and f["desired_replicas"] == 4 else None

        fleet = await wait_until(reconciled, timeout_s=30, message="status on the dashboard")
        assert fleet["ready_replicas"] == 3
        assert fleet["conditions"][0]["type"] == "Capped"
        assert fleet["events"][0]["reason"] == "load"

        await client.delete(kube.FLEETS, "shop", "chat")

        async def gone() -> bool:
            return "shop/chat" not in await fleets()

        await wait_until(gone, timeout_s=30, message="deleted fleet gone from the dashboard")


async def listed_health(fleets: Any) -> bool:
    fleet = (await fleets()).get("shop/chat")
    health = fleet["prometheus"] if fleet else {}
    return bool(health.get("configured")) and health.get("available") is False


def test_event_handler_ignores_the_listing_marker() -> None:
    dashboard = KopfDashboard(DashboardSettings(enabled=False))
    body = {"metadata": {"name": "a", "namespace": "n"}}
    dashboard.on_event(None, body)
    assert dashboard.source.fleets() == []
    dashboard.on_event("ADDED", body)
    assert [f.name for f in dashboard.source.fleets()] == ["a"]
    dashboard.on_event("MODIFIED", {"metadata": {**body["metadata"], "deletionTimestamp": "x"}})
    assert dashboard.source.fleets() == []


async def test_disabled_dashboard_serves_nothing() -> None:
    dashboard = KopfDashboard(DashboardSettings(enabled=False))
    await dashboard.start()
    assert dashboard.server is None
    await dashboard.stop()
