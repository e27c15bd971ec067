"""The engine and its connections: replies, errors, timeouts and disconnects are counted."""

from __future__ import annotations

import json

import pytest

from tests.support.waiting import wait_until
from wsfleet.bench.reference_server import server_port, start_reference_server
from wsfleet.loadtest.connection import delivery_latency_s
from wsfleet.loadtest.engine import Engine, format_progress
from wsfleet.loadtest.options import ScenarioOptions


async def test_error_replies_and_unknown_ops_are_counted(baseline_url: str) -> None:
    engine = Engine(baseline_url, ScenarioOptions(duration_s=30.0))
    try:
        conn = await engine.open()
        assert conn is not None
        assert await engine.call(conn, "ping") == {"type": "pong", "id": 1}
        assert await engine.call(conn, "dance") is None
        assert engine.stats.errors["bad_request"] == 1
        assert engine.stats.replies == 2
        assert engine.stats.latency("ping").count == 1
        assert engine.stats.latency("dance").count == 0  # an error is not a timed success
    finally:
        await engine.close_all()
    assert engine.stats.open_now == 0
    assert engine.stats.closed_by_server == 0


async def test_a_late_reply_counts_as_a_timeout_and_is_not_timed() -> None:
    server, _hub = await start_reference_server(reply_delay_s=0.3)
    url = f"ws://127.0.0.1:{server_port(server)}/ws"
    engine = Engine(url, ScenarioOptions(duration_s=30.0, request_timeout_s=0.05))
    try:
        conn = await engine.open()
        assert conn is not None
        assert await engine.call(conn, "ping") is None
        assert engine.stats.request_timeouts == 1
        assert conn.in_flight == 0
        assert engine.stats.latency("ping").count == 0
    finally:
        await engine.close_all()
        if _hub.timer is not None:
            _hub.timer.close()
        server.close()
        await server.wait_closed()


async def test_a_server_side_close_is_counted_and_fails_pending_requests() -> None:
    server, hub = await start_reference_server(reply_delay_s=5.0)
    url = f"ws://127.0.0.1:{server_port(server)}/ws"
    engine = Engine(url, ScenarioOptions(duration_s=30.0))
    try:
        conn = await engine.open()
        assert conn is not None
        pending = conn.request("ping", {})
        await wait_until(lambda: len(hub.listeners) == 1, timeout_s=10, message="accepted")
        for listener in list(hub.listeners):
            assert listener.transport is not None
            listener.transport.disconnect()
        await wait_until(lambda: conn.disconnected, timeout_s=10, message="client sees close")
        with pytest.raises(ConnectionError):
            await pending
        assert engine.stats.closed_by_server == 1
        assert engine.stats.open_now == 0
        assert await engine.call(conn, "ping") is None
        assert engine.stats.errors["disconnected"] == 1
    finally:
        await engine.close_all()
        if hub.timer is not None:
            hub.timer.close()
        server.close()
        await server.wait_closed()


def test_delivery_latency_prefers_the_embedded_timestamp() -> None:
    frame = json.dumps(
        {"type": "message", "channel": "c", "offset": "1-1", "ts": 0, "data": {"t": 1_000}}
    ).encode()
    assert delivery_latency_s(frame, 1_000 + 2_000_000) == 0.002
    server_ts = json.dumps({"type": "message", "ts": 1000, "data": "x"}).encode()
    assert delivery_latency_s(server_ts, 1_003_000_000) == 0.003
    assert delivery_latency_s(b"not json", 0) is None
    assert delivery_latency_s(json.dumps({"type": "message", "data": 1}).encode(), 0) is None


def test_progress_line_shows_counts_rates_and_latency() -> None:
    snap = {
        "t": 3.0,
        "open": 10,
        "target": 12,
        "failed": 1,
        "sent": 300,
        "sent_per_s": 100.0,
        "delivered": 900,
        "delivered_per_s": 300.0,
        "errors": 2,
        "p50_ms": 1.25,
        "p99_ms": 4.5,
    }
    line = format_progress(snap, "switch")
    assert "open 10/12" in line
    assert "failed 1" in line
    assert "(300/s)" in line
    assert "switch p50 1.25 ms p99 4.50 ms" in line
    assert "switch -" in format_progress({**snap, "p50_ms": -1.0}, "switch")
