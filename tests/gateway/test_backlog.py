"""The public port's listen backlog (``WSFLEET_LISTEN_BACKLOG``): bursts of connects."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsfleet_gateway.app import Gateway
from wsfleet_gateway.backends.memory import MemoryBroker
from wsfleet_gateway.settings import effective_backlog, read_somaxconn

from tests.gateway.helpers import make_settings
from wsfleet.client import Client

BURST = 500
RAW_BURST = 300
"""More than asyncio's default backlog (100), well under the configured one."""


@given(st.integers(1, 1 << 20), st.one_of(st.none(), st.integers(-1, 1 << 20)))
def test_effective_backlog_is_bounded_by_somaxconn(requested: int, somaxconn: int | None) -> None:
    got = effective_backlog(requested, somaxconn)
    assert 1 <= got <= requested
    if somaxconn is not None and somaxconn > 0:
        assert got == min(requested, somaxconn)
    else:
        assert got == requested


def test_read_somaxconn(tmp_path: Path) -> None:
    f = tmp_path / "somaxconn"
    f.write_text("4096\n")
    assert read_somaxconn(str(f)) == 4096
    f.write_text("junk")
    assert read_somaxconn(str(f)) is None
    assert read_somaxconn(str(tmp_path / "missing")) is None


def test_backlog_setting_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSFLEET_LISTEN_BACKLOG", "1000")
    s = make_settings()
    assert s.listen_backlog == 1000
    assert s.effective_backlog == effective_backlog(1000, read_somaxconn())
    assert make_settings(listen_backlog=4096).listen_backlog == 4096


async def test_accept_queue_holds_a_burst_while_the_loop_is_busy() -> None:
    """The kernel completes 300 handshakes while the gateway's loop cannot accept.

    The loop is blocked (blocking connects on the test's own loop thread), so
    nothing is accepted: every connect beyond the backlog would wait for a slot
    that never frees (asyncio's default of 100 fails here at connect 102).
    """
    somaxconn = read_somaxconn()
    if somaxconn is not None and somaxconn < RAW_BURST + 10:
        pytest.skip(f"net.core.somaxconn={somaxconn} is below the burst of {RAW_BURST}")
    gw = Gateway(make_settings(protection=False), broker=MemoryBroker())
    await gw.start()
    socks: list[socket.socket] = []
    connected = 0
    try:
        for _ in range(RAW_BURST):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.settimeout(3.0)
            try:
                sock.connect(("127.0.0.1", gw.port))
            except OSError:
                break
            connected += 1
    finally:
        for sock in socks:
            sock.close()
        await gw.stop()
    assert connected == RAW_BURST


async def test_burst_of_websocket_connects_all_succeed() -> None:
    gw = Gateway(
        make_settings(user_connects_per_min=10 * BURST, max_connections=2 * BURST),
        broker=MemoryBroker(),
    )
    await gw.start()
    clients: list[Client] = []
    try:
        results = await asyncio.gather(
            *(Client.connect(gw.ws_url, timeout_s=60.0) for _ in range(BURST)),
            return_exceptions=True,
        )
        clients = [r for r in results if isinstance(r, Client)]
        errors = [r for r in results if not isinstance(r, Client)]
        assert not errors, f"{len(errors)} connects failed, first: {errors[0]!r}"
        assert len(clients) == BURST
        assert all(c.welcome is not None for c in clients)
        assert gw.connections == BURST
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()
        await gw.stop()
