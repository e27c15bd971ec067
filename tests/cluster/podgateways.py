"""Real gateways behind kwok's pods: what a kubelet would run, for the scaling tests.

kwok makes the pods of a fleet's Deployment Running and Ready but runs nothing. Here a
real `wsfleet gateway` process is started for every Ready pod and stopped (SIGTERM, so
it drains) when its pod goes; a real Prometheus scrapes them through file_sd, each
labelled as its pod (`namespace`, `service`/`fleet`, `pod`: the labels the operator's
default PromQL selects on). Real WebSocket clients then connect to the pod they choose.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from wsfleet_operator import kube
from wsfleet_operator.kube import KubeClient
from wsfleet_operator.resources import selector_labels

from wsfleet.gatewayproc import ServerProcess, gateway_process
from wsfleet.loadtest.engine import mint_token
from wsfleet.services import PrometheusServer


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


@dataclass
class PodGateways:
    """One gateway process per Ready pod of `fleet`, kept in step with the cluster."""

    client: KubeClient
    namespace: str
    fleet: str
    prometheus: PrometheusServer
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    gateways: dict[str, ServerProcess] = field(default_factory=dict)
    stopped: list[str] = field(default_factory=list)
    """Pods whose gateway was stopped because the pod went (in that order)."""
    _task: asyncio.Task[None] | None = None
    _sessions: dict[str, list[aiohttp.ClientWebSocketResponse]] = field(default_factory=dict)
    _http: aiohttp.ClientSession | None = None

    async def _sync(self) -> None:
        pods = await self.client.list(kube.PODS, self.namespace, selector_labels(self.fleet))
        live = {
            p["metadata"]["name"]
            for p in pods
            if is_ready(p) and not p["metadata"].get("deletionTimestamp")
        }
        for name in sorted(live - set(self.gateways)):
            proc = gateway_process(
                kind=f"gateway-{name}",
                env={
                    "WSFLEET_JWT_SECRET": self.secret,
                    "WSFLEET_NODE_NAME": name,
                    "WSFLEET_DRAIN_GRACE_S": "2",
                },
            )
            self.gateways[name] = await asyncio.to_thread(proc.start, 60.0)
        for name in sorted(set(self.gateways) - live):
            proc = self.gateways.pop(name)
            self.stopped.append(name)
            for ws in self._sessions.pop(name, []):
                await ws.close()
            await asyncio.to_thread(proc.stop)
        self._write_targets()

    def _write_targets(self) -> None:
        groups = []
        for name, proc in sorted(self.gateways.items()):
            admin = str(proc.admin_url).removeprefix("http://").rstrip("/")
            labels = {
                "namespace": self.namespace,
                "service": self.fleet,
                "fleet": self.fleet,
                "pod": name,
            }
            groups.append({"targets": [admin], "labels": labels})
        target = self.prometheus.targets_file
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(target)

    async def _loop(self) -> None:
        while True:
            await self._sync()
            await asyncio.sleep(0.2)  # the kubelet's own pace: a poll, not a test's wait

    async def connect(self, pod: str, count: int) -> None:
        """Open `count` more WebSocket connections to the gateway of `pod` (each its own user)."""
        assert self._http is not None
        proc = self.gateways[pod]
        for _ in range(count):
            token = mint_token(self.secret, f"user-{secrets.token_hex(4)}", "paid", 3600)
            ws = await self._http.ws_connect(f"{proc.ws_url}?token={token}", heartbeat=None)
            welcome = await ws.receive_json(timeout=10)
            assert welcome["type"] == "welcome", welcome
            self._sessions.setdefault(pod, []).append(ws)

    async def disconnect(self, pod: str, count: int | None = None) -> None:
        """Close `count` (default: all) of the connections held to `pod`."""
        held = self._sessions.get(pod, [])
        n = len(held) if count is None else count
        for ws in held[:n]:
            await ws.close()
        self._sessions[pod] = held[n:]

    def held(self) -> dict[str, int]:
        return {pod: len(ws) for pod, ws in self._sessions.items() if ws}

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[PodGateways]:
        self._http = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._loop(), name="pod-gateways")
        try:
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            for held in self._sessions.values():
                for ws in held:
                    await ws.close()
            self._sessions.clear()
            await self._http.close()
            for proc in self.gateways.values():
                await asyncio.to_thread(proc.stop)
            self.gateways.clear()
