"""Fixtures of the local-fleet tests: a gateway supervisor on real Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from wsfleet.localfleet.supervisor import GatewaySupervisor, SupervisorConfig
from wsfleet.services import RedisServer, free_port

API_KEY = "localfleet-test-key"
GATEWAY_ENV = {
    "WSFLEET_API_KEY": API_KEY,
    "WSFLEET_HISTORY_MAX_LEN": "100000",
    "WSFLEET_HISTORY_RECOVER_LIMIT": "100000",
    "WSFLEET_DRAIN_GRACE_S": "10",
    # these tests are about processes, not auth (test_e2e and test_up_cli run with JWT)
    "WSFLEET_AUTH": "disabled",
    "WSFLEET_USER_CONNECTS_PER_MIN": "1000000",
}


@pytest.fixture
async def supervisor(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[GatewaySupervisor]:
    """A running supervisor (no gateways yet) whose gateways share one free port and Redis."""
    async with aiohttp.ClientSession() as session:
        sup = GatewaySupervisor(
            SupervisorConfig(
                port=free_port(),
                workdir=tmp_path,
                redis_url=redis_server.url,
                env=GATEWAY_ENV,
                ready_timeout_s=90.0,
                drain_timeout_s=30.0,
                supervise_interval_s=0.1,
            ),
            session,
        )
        task = asyncio.create_task(sup.supervise(), name="supervise")
        try:
            yield sup
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await sup.stop_all()
