"""The operator never stays deaf (kmock: a real API server cannot be made to send a given
watch ERROR event on demand). A watch stream of WebSocketFleets that gets a 429 "storage
is (re)initializing" makes kopf's watcher die: the operator must go not-alive and stop
with `KopfTaskFailed` (the CLI exits 1), whether kopf stops by itself (kopf 1.45: its
orchestrator re-raises the watcher's error) or lets the watcher die alone, the process
alive and deaf (kopf #787; emulated by silencing that re-raise). A 410 is routine: kopf
re-opens the stream."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import types
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kmock
import kopf
import pytest
from kopf._cogs.aiokits import aiotasks
from kopf._core.reactor import orchestration
from wsfleet_operator import cli, handlers
from wsfleet_operator.spec import GROUP, PLURAL, VERSION
from wsfleet_operator.watchdog import KopfTaskFailed

from tests.operator.harness import kube_api
from tests.support.waiting import wait_until

FLEETS = kmock.resource(GROUP, VERSION, PLURAL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _alive(url: str) -> bool:
    """What a liveness probe sees: 200 or not (refused, 5xx, timeout)."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response,
        ):
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


def _fleet_watches(api: kmock.KubernetesEmulator) -> int:
    return sum(
        1
        for r in list(api)
        if r.action == kmock.action.WATCH and r.resource is not None and r.resource.plural == PLURAL
    )


@contextlib.asynccontextmanager
async def operator_with_live_fleet_watch() -> AsyncIterator[
    tuple[kmock.KubernetesEmulator, asyncio.Task[None], str]
]:
    """`run_operator` (the CLI's) whose fleet watch streams are live: the test feeds them.
    Yields once the stream is open and `/healthz` says alive."""
    async with kube_api() as (api, url):
        api[kmock.action.WATCH, FLEETS] << (...,)
        port = _free_port()
        settings = cli.OperatorSettings(
            all_namespaces=True,
            liveness_host="127.0.0.1",
            liveness_port=port,
            dashboard=False,
            forecast=False,
        )
        config = handlers.OperatorConfig(connection_info=kopf.ConnectionInfo(server=url))
        task = asyncio.create_task(cli.run_operator(settings, config), name="operator")
        healthz = f"http://127.0.0.1:{port}/healthz"

        async def ready() -> bool:
            return task.done() or (_fleet_watches(api) > 0 and await _alive(healthz))

        try:
            await wait_until(ready, timeout_s=30, message="fleet watch open and /healthz alive")
            assert not task.done(), task
            yield api, task, healthz
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, KopfTaskFailed):
                await task


def _error(code: int, message: str) -> dict[str, Any]:
    return {"type": "ERROR", "object": {"kind": "Status", "code": code, "message": message}}


@pytest.fixture(params=["kopf-stops", "kopf-stays-deaf"])
def kopf_on_watcher_failure(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Either the installed kopf as is, or one whose orchestrator forgets a failed watcher."""
    if request.param == "kopf-stays-deaf":
        assert orchestration.aiotasks is aiotasks  # what this emulation replaces

        async def forget(tasks: object) -> None:
            return None

        silenced = types.SimpleNamespace(**{**vars(aiotasks), "reraise": forget})
        monkeypatch.setattr(orchestration, "aiotasks", silenced)
    return str(request.param)


async def test_watch_error_429_makes_the_operator_not_alive_and_exit(
    kopf_on_watcher_failure: str,
) -> None:
    async with operator_with_live_fleet_watch() as (api, task, healthz):
        api[kmock.action.WATCH, FLEETS][...] << _error(429, "storage is (re)initializing")

        async def not_alive() -> bool:
            return not await _alive(healthz)

        await wait_until(not_alive, timeout_s=30, message="/healthz not alive")
        await wait_until(task.done, timeout_s=30, message="operator stopped")
        with pytest.raises(KopfTaskFailed) as failed:
            task.result()
        assert PLURAL in failed.value.failure.task
        assert "storage is (re)initializing" in failed.value.failure.error


async def test_watch_error_410_is_not_fatal() -> None:
    async with operator_with_live_fleet_watch() as (api, task, healthz):
        watches = _fleet_watches(api)
        api[kmock.action.WATCH, FLEETS][...] << _error(410, "too old resource version")
        await wait_until(
            lambda: _fleet_watches(api) > watches, timeout_s=30, message="the stream re-opened"
        )
        assert await _alive(healthz)
        assert not task.done()
