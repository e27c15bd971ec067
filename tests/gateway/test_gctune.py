"""GC tuning of the gateway process: settings, freezing, and the real entry point."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsfleet_gateway.cli import serve
from wsfleet_gateway.gctune import Decision, GcSettings, GcTuner, decide
from wsfleet_gateway.server import ConnectionListener
from wsfleet_gateway.session import Session
from wsfleet_gateway.settings import GatewaySettings

from tests.gateway.test_cli import GatewayProcess
from tests.protection.support import protected_settings, running, token
from tests.support.waiting import wait_until
from wsfleet.client import Client
from wsfleet.services import RedisServer, free_port


@pytest.fixture
def restore_gc() -> Iterator[None]:
    """Tuning in this (test) process is undone afterwards."""
    saved = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*saved)


@given(
    frozen_at=st.integers(0, 100_000),
    now=st.integers(0, 100_000),
    burst=st.integers(1, 5_000),
)
def test_decide_refreezes_after_a_burst_and_collects_only_when_empty(
    frozen_at: int, now: int, burst: int
) -> None:
    decision = decide(frozen_at, now, burst)
    assert sum((decision.refreeze, decision.refresh, decision.rebase)) <= 1
    assert decision.refreeze == (now >= frozen_at + burst)
    # the full collection (a pause for every open connection) only with none open
    assert decision.refresh == (now == 0 and frozen_at >= burst)
    if decision.rebase:
        assert 0 < now <= frozen_at // 2
        assert frozen_at >= 2 * burst
    if frozen_at >= 2 * burst and 0 < now <= frozen_at // 2:
        assert decision == Decision(rebase=True)


def test_settings_read_wsfleet_gc_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert GcSettings().freeze is True  # default on
    monkeypatch.setenv("WSFLEET_GC_FREEZE", "false")
    monkeypatch.setenv("WSFLEET_GC_GEN0_THRESHOLD", "12345")
    settings = GcSettings()
    assert settings.freeze is False
    assert settings.gen0_threshold == 12345


def test_apply_sets_threshold_and_freezes(restore_gc: None) -> None:
    gc.unfreeze()
    tuner = GcTuner(GcSettings(gen0_threshold=4321), lambda: 7)
    tuner.apply()
    assert gc.get_threshold()[0] == 4321
    assert gc.get_freeze_count() > 0
    assert (tuner.frozen_at, tuner.freezes) == (7, 1)


def test_freeze_off_leaves_the_collector_alone(restore_gc: None) -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    tuner = GcTuner(GcSettings(freeze=False), lambda: 0)
    tuner.apply()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    assert tuner.freezes == 0


async def test_run_refreezes_after_accept_bursts_and_refreshes(restore_gc: None) -> None:
    connections = [0]
    settings = GcSettings(burst_connections=100, check_interval_s=0.01)
    tuner = GcTuner(settings, lambda: connections[0])
    tuner.apply()
    task = asyncio.create_task(tuner.run())
    try:
        connections[0] = 250  # a burst of accepts
        await wait_until(lambda: tuner.frozen_at == 250, timeout_s=30, message="refreeze")
        assert tuner.freezes == 2
        connections[0] = 100  # the fleet shrank below half: rebased, no collection
        await wait_until(lambda: tuner.frozen_at == 100, timeout_s=30, message="rebase")
        assert tuner.freezes == 2
        connections[0] = 250  # grew again by a burst from there: frozen again
        await wait_until(lambda: tuner.frozen_at == 250, timeout_s=30, message="refreeze")
        assert tuner.freezes == 3
        connections[0] = 0  # nobody left to stall: the full collection
        await wait_until(lambda: tuner.freezes == 4, timeout_s=30, message="refresh")
        assert tuner.frozen_at == 0
        assert tuner.check() == Decision()  # nothing more to do
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_run_returns_at_once_when_off() -> None:
    await asyncio.wait_for(GcTuner(GcSettings(freeze=False), lambda: 0).run(), timeout=30)


@pytest.mark.parametrize(("freeze", "event"), [("true", "gc_frozen"), ("false", "gc_tuning_off")])
async def test_gateway_process_applies_the_setting(freeze: str, event: str) -> None:
    process = GatewayProcess(
        "--port",
        str(free_port()),
        "--admin-port",
        str(free_port()),
        env={"WSFLEET_GC_FREEZE": freeze, "WSFLEET_GC_GEN0_THRESHOLD": "30000"},
    )
    try:
        await wait_until(
            lambda: process.events("gateway_ready") or process.proc.poll() is not None,
            timeout_s=60,
            message="gateway_ready log line",
        )
        assert process.events("gateway_ready"), "".join(process.lines)
        seen = process.events(event)
        assert len(seen) == 1, "".join(process.lines)
        if freeze == "true":
            assert seen[0]["reason"] == "startup"
            assert seen[0]["pause_ms"] >= 0
        else:
            assert not process.events("gc_frozen")
    finally:
        process.stop()


SNIPPET = """
import gc, json
from wsfleet_gateway.gctune import GcSettings, GcTuner
GcTuner(GcSettings(), lambda: 0).apply()
print(json.dumps({"gen0": gc.get_threshold()[0], "frozen": gc.get_freeze_count()}))
"""


@pytest.mark.parametrize("freeze", ["true", "false"])
def test_a_fresh_process_gets_the_env_settings_applied(freeze: str) -> None:
    env = {**os.environ, "WSFLEET_GC_FREEZE": freeze, "WSFLEET_GC_GEN0_THRESHOLD": "30000"}
    proc = subprocess.run(
        [sys.executable, "-c", SNIPPET],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    if freeze == "true":
        assert seen["gen0"] == 30000
        assert seen["frozen"] > 1000
    else:
        assert seen["gen0"] == 700  # CPython's default, untouched
        assert seen["frozen"] == 0


async def test_serve_tunes_the_collector_and_stops_the_tuner(restore_gc: None) -> None:
    gc.unfreeze()
    settings = GatewaySettings(port=0, admin_port=0, auth="disabled", protection=False)
    task = asyncio.create_task(serve(settings, GcSettings(check_interval_s=0.01)))
    await wait_until(lambda: gc.get_freeze_count() > 0, timeout_s=60, message="frozen")
    assert gc.get_threshold()[0] == GcSettings().gen0_threshold
    os.kill(os.getpid(), signal.SIGTERM)  # serve's own handler stops it
    assert await asyncio.wait_for(task, timeout=60) == 0


async def test_a_closed_connection_leaves_no_cyclic_garbage(
    redis_server: RedisServer, restore_gc: None
) -> None:
    """What `GcTuner` relies on to collect only when empty: a connection's objects (with
    every feature on: JWT, protection, Redis, compression) are freed by reference
    counting when it closes, never left in a cycle for the collector."""
    settings = protected_settings(redis_url=redis_server.url, redis_timeout_s=2.0)
    async with running(settings) as gw:
        clients = [
            await Client.connect(gw.ws_url, token(f"user-{i}"), compression=i % 2 == 0)
            for i in range(12)
        ]
        for i, client in enumerate(clients):
            await client.subscribe(f"wedding-{i % 3}")
        await clients[0].publish("wedding-0", {"note": "cake at 9 " * 60})
        await clients[1].switch("wedding-1", "wedding-2")
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for client in clients:
                await client.close()
            await wait_until(lambda: gw.connections == 0, timeout_s=30, message="all closed")
            gc.collect()
            ours = [
                type(o).__qualname__
                for o in gc.garbage
                if type(o).__module__.startswith(("wsfleet_gateway", "picows"))
            ]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        assert ours == []
        # and nothing of theirs is kept alive (a leak the collector could not even see)
        alive = [o for o in gc.get_objects() if isinstance(o, ConnectionListener | Session)]
        assert alive == []
