"""Fixtures of the load-tool tests: real servers on loopback, in-process or as processes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest
from wsfleet_gateway.app import Gateway
from wsfleet_gateway.settings import GatewaySettings

from wsfleet.bench.reference_server import server_port, start_reference_server
from wsfleet.bench.servers import ServerProcess, reference_server


@pytest.fixture
async def baseline_url() -> AsyncIterator[str]:
    """The plain picows broadcast server, in-process, on a free port."""
    server, _hub = await start_reference_server()
    try:
        yield f"ws://127.0.0.1:{server_port(server)}/ws"
    finally:
        server.close()
        await server.wait_closed()


JWT_SECRET = "loadtest-test-secret-0123456789abcdef"
"""HS256 key of the test gateway; the load tool mints one token per connection with it."""


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    """A started in-process gateway (embedded broker, auth and protection on) on free ports."""
    settings = GatewaySettings(
        port=0, admin_port=0, log_json=True, log_level="warning", jwt_secret=JWT_SECRET
    )
    async with running(settings) as gw:
        yield gw


@contextlib.asynccontextmanager
async def running(settings: GatewaySettings) -> AsyncIterator[Gateway]:
    """A started in-process gateway, stopped when the block ends."""
    gw = Gateway(settings)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


@pytest.fixture
def baseline_process() -> Iterator[ServerProcess]:
    """The plain picows broadcast server as a child process."""
    with reference_server() as server:
        yield server
