"""A connection flood against real gateway processes (real Redis, real JWT auth, real
admission), scraped by a real Prometheus, raised by the operator's autoscaler tick.

A crowd of 40 users, each from its own address, connects: many attempts, none
concentrated, no flood. Then one user hammers both gateways from one address (refused
with 4008 after the per-user limit, and still counted): `ConnectFlood`. The gateways
trust `X-Forwarded-For` here, as behind an ingress, so each client has an address.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator

import aiohttp
import pytest
from wsfleet_operator.prometheus import PrometheusClient
from wsfleet_operator.spec import AnomalySignal

from tests.operator.anomaly_support import (
    LABELS,
    NAME,
    NAMESPACE,
    anomaly_of,
    anomaly_spec,
    operator_metric,
    raised,
    watched,
)
from tests.support.waiting import wait_until
from wsfleet.gatewayproc import ServerProcess, gateway_process
from wsfleet.loadtest.engine import mint_token
from wsfleet.services import PrometheusServer, RedisServer

FLOOD = AnomalySignal.CONNECT_FLOOD.value
SECRET = secrets.token_urlsafe(32)
CROWD = 40
HAMMER = 120


@pytest.fixture
async def gateways(
    redis_server: RedisServer, prometheus_server: PrometheusServer
) -> AsyncIterator[dict[str, ServerProcess]]:
    procs = {
        pod: gateway_process(
            kind=f"gateway-{pod}",
            redis_url=redis_server.url,
            env={
                "WSFLEET_JWT_SECRET": SECRET,
                "WSFLEET_NODE_NAME": pod,
                "WSFLEET_TRUST_FORWARDED_FOR": "true",
            },
        )
        for pod in ("gw-a", "gw-b")
    }
    started = await asyncio.gather(*(asyncio.to_thread(p.start, 60.0) for p in procs.values()))
    try:
        groups = [
            {
                "targets": [str(p.admin_url).removeprefix("http://").rstrip("/")],
                "labels": {**LABELS, "pod": pod},
            }
            for pod, p in zip(procs, started, strict=True)
        ]
        target = prometheus_server.targets_file
        target.with_suffix(".tmp").write_text(json.dumps(groups))
        target.with_suffix(".tmp").replace(target)
        yield procs
    finally:
        for p in procs.values():
            await asyncio.to_thread(p.stop)


async def attempt(
    http: aiohttp.ClientSession, gateway: ServerProcess, user: str, address: str
) -> str:
    """One connection: its first frame's type, or the close code when it was refused."""
    headers = {
        "Authorization": f"Bearer {mint_token(SECRET, user, 'paid', 600)}",
        "X-Forwarded-For": address,
    }
    async with http.ws_connect(gateway.ws_url, headers=headers, heartbeat=None) as ws:
        msg = await ws.receive(timeout=10)
        if msg.type == aiohttp.WSMsgType.TEXT:
            return str(json.loads(msg.data)["type"])
        return f"closed {ws.close_code}"


async def test_one_user_hammering_the_fleet_is_a_flood_and_a_crowd_is_not(
    prometheus_server: PrometheusServer, gateways: dict[str, ServerProcess]
) -> None:
    spec = anomaly_spec(
        prometheus_server.url,
        {
            "flood": {
                "minConnectsPerMinute": 30,
                "burstFactor": 3,
                "topShare": 0.5,
                "baselineSeconds": 60,
            },
        },
    )
    w = watched(spec)
    gws = list(gateways.values())
    total = f'sum(wsfleet_connects_per_minute{{namespace="{NAMESPACE}",service="{NAME}"}})'
    async with aiohttp.ClientSession() as http, PrometheusClient(prometheus_server.url) as prom:

        async def scraped_attempts(at_least: int) -> bool:
            await w.tick()
            samples = await prom.query(total)
            return bool(samples) and samples[0].value >= at_least

        # 1. a crowd: 40 users from 40 addresses, each connecting once
        kinds = await asyncio.gather(
            *(attempt(http, gws[i % 2], f"guest-{i}", f"203.0.113.{i + 1}") for i in range(CROWD))
        )
        assert set(kinds) == {"welcome"}
        await wait_until(
            lambda: scraped_attempts(CROWD), timeout_s=30, interval_s=0.2, message="the crowd"
        )
        for _ in range(5):
            result = await w.tick()
            assert not raised(result, FLOOD)
        assert anomaly_of(result)["reason"] == "NoAnomaly"  # type: ignore[index]

        # 2. one user, one address, 120 attempts on both gateways: refused after the
        #    per-user limit, counted all the same
        kinds = [await attempt(http, gws[i % 2], "mallory", "198.51.100.7") for i in range(HAMMER)]
        assert kinds.count("closed 4008") >= HAMMER - 10
        result = await w.tick_until(lambda r: raised(r, FLOOD), message="ConnectFlood raised")

    try:
        condition = anomaly_of(result)
        assert condition is not None
        assert (condition["status"], condition["reason"]) == ("True", FLOOD)
        (record,) = result.status_patch()["anomalies"]
        assert record["subject"] == "fleet"
        assert record["unit"] == "share"
        assert record["size"] >= 0.5
        assert "from its top user per pod" in record["message"]
        (event,) = w.events
        assert (event.reason, event.type) == ("AnomalyDetected", "Warning")
        assert event.message.startswith("ConnectFlood: ")
        labels = {"namespace": NAMESPACE, "fleet": NAME}
        assert operator_metric("wsfleet_operator_anomaly", **labels, signal=FLOOD) == 1
        # the gateways' own signals: no label names a user or an address
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{gws[0].admin_url}/metrics") as resp,
        ):
            text = await resp.text()
        assert "mallory" not in text
        assert "198.51.100.7" not in text
        shares = [line for line in text.splitlines() if line.startswith("wsfleet_connects_top")]
        assert len(shares) == 2
    finally:
        await w.close()
