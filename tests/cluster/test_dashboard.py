"""The dashboard served by kopf (the operator's way) against the real API server: fleets
and their status (anomalies included) appear, change and go away.

kopf runs in this process with its watch bounded as the operator bounds it (a stream is
ended by the server and reopened: a silent one cannot hold events back for long), and
every kopf log line is kept: if a fleet never shows up, the failure says what kopf did
(once, in a full run, a fleet did not appear within 120 s with no kopf warning logged;
never reproduced in isolation or under CPU load)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import kopf
from wsfleet_operator.dashboard.app import DashboardSettings
from wsfleet_operator.dashboard.kopf import KopfDashboard, register_dashboard

from tests.cluster.fleets import fleet
from tests.cluster.harness import LocalCluster
from tests.support.fleet_checks import eventually
from tests.support.kube import Kube


class KopfLog(logging.Handler):
    """The last kopf log lines, every level (for a failure's message)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: collections.deque[str] = collections.deque(maxlen=80)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}"[:300])


@dataclass
class Running:
    dashboard: KopfDashboard
    task: asyncio.Task[None]
    log: KopfLog = field(default_factory=KopfLog)

    def explain(self, kube: Kube) -> str:
        state = "running" if not self.task.done() else f"ended: {self.task!r}"
        listed = kube.run("get", "websocketfleets", "-A", check=False)
        lines = "\n".join(self.log.lines)
        return f"kopf {state}\nkubectl get websocketfleets -A:\n{listed.stdout}\nkopf log:\n{lines}"


async def eventually_or_explain(
    running: Running, kube: Kube, cond: Callable[[], Awaitable[Any]], message: str
) -> Any:
    try:
        return await eventually(cond, message=message)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{running.explain(kube)}") from exc


@contextlib.asynccontextmanager
async def kopf_with_dashboard(cluster: LocalCluster) -> AsyncIterator[Running]:
    """kopf in this process, as the cluster admin, with only the dashboard's handlers (no
    finalizers: nothing here blocks a fleet's deletion)."""
    registry = kopf.OperatorRegistry()
    pki = cluster.dir / "pki"

    @kopf.on.startup(registry=registry)
    def bounded_watch(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.watching.server_timeout = 20
        settings.watching.client_timeout = 30

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(
            server=cluster.server,
            ca_path=str(pki / "ca.crt"),
            certificate_path=str(pki / "admin.crt"),
            private_key_path=str(pki / "admin.key"),
        )

    dashboard = register_dashboard(registry, DashboardSettings(port=0, interval_s=0.2))
    kopf_logger = logging.getLogger("kopf")
    level = kopf_logger.level
    kopf_logger.setLevel(logging.DEBUG)
    log = KopfLog()
    kopf_logger.addHandler(log)
    task = asyncio.create_task(
        kopf.operator(registry=registry, clusterwide=True, standalone=True), name="kopf-dashboard"
    )
    try:
        await eventually(
            lambda: dashboard.server is not None or task.done(), message="the dashboard served"
        )
        if task.done():
            task.result()
        yield Running(dashboard, task, log)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        kopf_logger.removeHandler(log)
        kopf_logger.setLevel(level)
    assert dashboard.server is None  # the cleanup handler stopped it


async def test_operator_serves_fleets_from_the_cluster(
    chart: LocalCluster, kube: Kube, namespace: str
) -> None:
    async with kopf_with_dashboard(chart) as running, aiohttp.ClientSession() as session:
        dashboard = running.dashboard
        assert dashboard.server is not None
        fleets_url = dashboard.server.url + "api/fleets"
        key = f"{namespace}/chat"

        async def fleets() -> dict[str, Any]:
            async with session.get(fleets_url) as resp:
                assert resp.status == 200
                body: dict[str, Any] = await resp.json()
            return {f"{f['namespace']}/{f['name']}": f for f in body["fleets"]}

        async def listed() -> dict[str, Any] | None:
            return (await fleets()).get(key)

        kube.apply(namespace, fleet("chat", replicas={"min": 2, "max": 6}))
        shown = await eventually_or_explain(running, kube, listed, "fleet on the dashboard")
        assert shown["desired_replicas"] is None  # no operator here: never reconciled
        assert (shown["min_replicas"], shown["max_replicas"]) == (2, 6)
        assert shown["selector"] == f'namespace="{namespace}",service="chat"'

        async def prometheus_down() -> bool:  # its own Prometheus is down: said so, per fleet
            health = ((await listed()) or {}).get("prometheus") or {}
            return bool(health.get("configured")) and health.get("available") is False

        await eventually(prometheus_down, message="per-fleet Prometheus health")

        status = {
            "desiredReplicas": 4,
            "readyReplicas": 3,
            "conditions": [{"type": "Capped", "status": "True", "reason": "MaxPodsPerMinute"}],
            "history": [{"at": 1_790_000_000.0, "from": 2, "to": 4, "reason": "load"}],
            "anomalies": [
                {
                    "signal": "MemoryLeak",
                    "subject": "chat-0",
                    "size": 12.5,
                    "threshold": 4.0,
                    "unit": "MiB/h",
                    "message": "pod chat-0: memory its connections do not explain grows",
                    "at": 1_790_000_000.0,
                }
            ],
        }
        kube.kubectl(
            "patch", "websocketfleet", "chat", "-n", namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": status}),
        )  # fmt: skip

        async def reconciled() -> dict[str, Any] | None:
            f = await listed()
            return f if f and f["desired_replicas"] == 4 else None

        shown = await eventually(reconciled, message="status on the dashboard")
        assert shown["ready_replicas"] == 3
        assert shown["conditions"][0]["type"] == "Capped"
        assert shown["events"][0]["reason"] == "load"
        # anomalies as the status schema takes them: on the page's timeline
        assert [(a["signal"], a["subject"]) for a in shown["anomalies"]] == [
            ("MemoryLeak", "chat-0")
        ]
        assert shown["anomalies"][0]["resolved_at"] is None

        kube.kubectl("delete", "websocketfleet", "chat", "-n", namespace, "--wait=true")

        async def gone() -> bool:
            return key not in await fleets()

        await eventually(gone, message="deleted fleet gone from the dashboard")
