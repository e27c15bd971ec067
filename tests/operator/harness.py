"""Test harness: the operator (kopf) against kmock, for what a real API server cannot be
made to show (specs its CRD refuses), and a controllable /metrics. Everything else runs
against the real control plane of hack/cluster.sh (tests/cluster).

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
from wsfleet_operator.handlers import OperatorConfig, build_registry
from wsfleet_operator.kube import Connection, KubeClient
from wsfleet_operator.spec import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION

from tests.support.waiting import wait_until

FLEET_RESOURCE = f"{GROUP}/{VERSION}/{PLURAL}"
_rv = itertools.count(1000)


TEST_AGENT = "wsfleet-test-user"


def user_client(url: str) -> KubeClient:
    """A client acting as the user (kubectl): not bound by the operator's RBAC."""
    return KubeClient(Connection(url), enforce_rbac=False, user_agent=TEST_AGENT)


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
    api: kmock.KubernetesEmulator, url: str, peering_name: str | None = None, **config: Any
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
            # kmock cannot parse GET /api/v1/namespaces (what kopf's namespace
            # observer sends for namespaced runs): run cluster-wide instead
            clusterwide=True,
            standalone=peering_name is None,
            peering_name=peering_name,
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


TEST_AUTH: dict[str, Any] = {
    "jwtSecretRef": {"name": "fleet-jwt", "key": "secret"},
    "apiKeySecretRef": {"name": "fleet-jwt", "key": "api-key"},
}
"""The `auth` a test fleet gets unless its spec says otherwise (a fleet must have one)."""


def fleet_manifest(name: str, spec: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    spec = spec if "auth" in spec else {**spec, "auth": TEST_AUTH}
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


_VERBS = {
    kmock.action.LIST: "list",
    kmock.action.WATCH: "watch",
    kmock.action.FETCH: "get",
    kmock.action.CREATE: "create",
    kmock.action.UPDATE: "patch",
    kmock.action.DELETE: "delete",
}


def operator_calls(api: kmock.KubernetesEmulator) -> set[tuple[str, str, str]]:
    """(apiGroup, resource[/sub], verb) of every resource request not made by the test user."""
    calls: set[tuple[str, str, str]] = set()
    for r in list(api):
        if r.headers.get("User-Agent") == TEST_AGENT or r.resource is None:
            continue
        if r.action is None or r.resource.plural is None:
            continue
        resource = r.resource.plural + (f"/{r.subresource}" if r.subresource else "")
        calls.add((r.resource.group or "", resource, _VERBS.get(r.action, str(r.method))))
    return calls


def assert_rbac_covered(api: kmock.KubernetesEmulator) -> set[tuple[str, str, str]]:
    from wsfleet_operator.rbac import is_allowed

    calls = operator_calls(api)
    outside = sorted(c for c in calls if not is_allowed(*c))
    assert not outside, f"calls outside REQUIRED_RULES: {outside}"
    return calls
