"""Test harness: the real operator (kopf) against kmock, and a controllable /metrics.

Known kmock gaps handled here: bundled resources loaded and the CR resource
registered (else kopf never opens a watch); uid/namespace/resourceVersion
supplied by the test on objects it creates; CRs created only after kopf's
WATCH request on them arrived; kopf stopped with `task.cancel()`; a fresh
registry per test (`build_registry`); no PUT anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import kmock
import kopf
from aiohttp import web

from tests.support.waiting import wait_until
from wsfleet_operator.handlers import OperatorConfig, build_registry
from wsfleet_operator.spec import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION

FLEET_RESOURCE = f"{GROUP}/{VERSION}/{PLURAL}"
_rv = itertools.count(1000)


def new_emulator() -> kmock.KubernetesEmulator:
    api = kmock.KubernetesEmulator()
    api.resources.load_bundled()
    api.resources[FLEET_RESOURCE] = kmock.ResourceInfo(
        kind=KIND,
        singular=SINGULAR,
        namespaced=True,
        verbs={"get", "list", "watch", "create", "patch", "delete"},
        shortnames=set(SHORT_NAMES),
        subresources={"status"},
    )
    return api


@contextlib.asynccontextmanager
async def kube_api() -> AsyncIterator[tuple[kmock.KubernetesEmulator, str]]:
    """A kmock Kubernetes emulator listening on loopback; yields (emulator, url)."""
    api = new_emulator()
    async with api, kmock.Server(api) as server:
        yield api, str(server.url).rstrip("/")


def watched(api: kmock.KubernetesEmulator, plural: str) -> bool:
    return any(
        r.action == kmock.action.WATCH and r.resource is not None and r.resource.plural == plural
        for r in list(api)
    )


@contextlib.asynccontextmanager
async def running_operator(
    api: kmock.KubernetesEmulator, url: str, namespace: str = "default", **config: Any
) -> AsyncIterator[asyncio.Task[None]]:
    """kopf with the wsfleet handlers, until the block ends (then cancelled)."""
    registry = build_registry(
        OperatorConfig(connection_info=kopf.ConnectionInfo(server=url), **config)
    )
    settings = kopf.OperatorSettings()
    settings.watching.connect_timeout = 5
    settings.watching.server_timeout = 60
    task = asyncio.create_task(
        kopf.operator(
            registry=registry,
            settings=settings,
            namespaces=[namespace],
            standalone=True,
        ),
        name="kopf-operator",
    )
    try:
        await wait_until(
            lambda: watched(api, PLURAL) or task.done(), timeout_s=30, message="kopf watch"
        )
        if task.done():
            task.result()
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def fleet_manifest(name: str, spec: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "resourceVersion": str(next(_rv)),
            "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": spec,
    }


def pod_manifest(name: str, fleet: str, namespace: str = "default") -> dict[str, Any]:
    from wsfleet_operator.resources import common_labels

    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "resourceVersion": str(next(_rv)),
            "labels": common_labels(fleet),
        },
        "spec": {"containers": [{"name": "gateway", "image": "x"}]},
    }


@dataclass
class FakeGatewayMetrics:
    """A real HTTP /metrics endpoint whose values the test controls."""

    connections: dict[str, int] = field(default_factory=dict)
    """pod name -> open connections"""
    switch_p95_s: float | None = None
    runner: web.AppRunner | None = None
    port: int = 0

    def exposition(self) -> str:
        lines = ["# TYPE wsfleet_connections gauge"]
        for pod, n in sorted(self.connections.items()):
            lines.append(f'wsfleet_connections{{pod="{pod}"}} {n}')
        lines.append("# TYPE wsfleet_drain_in_progress gauge")
        for pod in sorted(self.connections):
            lines.append(f'wsfleet_drain_in_progress{{pod="{pod}"}} 0')
        return "\n".join(lines) + "\n"

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.exposition(), content_type="text/plain")

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
