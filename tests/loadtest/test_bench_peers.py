"""The bench's Node peers (socket.io, socket.io on Redis, `ws`) and wedding messages: the
same load client drives each peer (socket.io framing included) and counts deliveries."""

from __future__ import annotations

import asyncio
import json
import zlib
from pathlib import Path

import pytest

from wsfleet.bench import figures, peers
from wsfleet.bench.results import compression_summary, peer_summary
from wsfleet.bench.wedding import MAX_BYTES, MIN_BYTES, wedding_messages
from wsfleet.loadtest.connection import LoadConnection, SocketIOConnection, connection_class
from wsfleet.services import RedisServer


def test_wedding_messages_are_realistic_sizes_and_repeatable() -> None:
    messages = wedding_messages(120)
    assert messages == wedding_messages(120)  # seeded: every run and server alike
    sizes = [len(json.dumps(m, separators=(",", ":"))) for m in messages]
    assert min(sizes) >= MIN_BYTES * 0.8
    assert max(sizes) <= MAX_BYTES * 1.5
    assert {m["kind"] for m in messages} == {
        "timeline.update",
        "vendor.note",
        "seating.update",
        "guest.rsvp",
    }
    big = [json.dumps(m).encode() for m in messages if len(json.dumps(m)) >= 1024]
    packed = sum(len(zlib.compress(b, 6)) for b in big)
    assert packed < 0.4 * sum(len(b) for b in big)  # text, not random bytes


def test_the_connection_follows_the_url() -> None:
    assert connection_class("ws://127.0.0.1:1/ws") is LoadConnection
    url = "ws://127.0.0.1:1/socket.io/?EIO=4&transport=websocket"
    assert connection_class(url) is SocketIOConnection


def test_summaries_pair_the_gateway_with_each_peer_per_run() -> None:
    runs = [
        {
            "gateway": {"deliveries_per_s": 150.0, "fanout_cpu_us": 5.0},
            "node-ws": {"deliveries_per_s": 100.0, "fanout_cpu_us": 10.0},
            "socketio-redis": {"deliveries_per_s": 120.0, "fanout_cpu_us": 20.0},
            "baseline": {"deliveries_per_s": 160.0, "fanout_cpu_us": 4.0},
        }
    ]
    found = peer_summary(runs)
    assert found["node-ws"]["gateway_fanout_ratio"]["median"] == 1.5
    assert found["node-ws"]["gateway_fanout_ratio"]["meets_target"] is True  # >= 1.3
    assert found["socketio-redis"]["gateway_fanout_ratio"]["meets_target"] is False  # 1.25
    assert found["baseline"]["gateway_fanout_ratio"]["meets_target"] is True  # 0.94 >= 0.9
    assert found["node-ws"]["cpu_ratio"]["median"] == 2.0
    assert "socketio" not in found  # not measured: not invented
    assert found["node-ws"]["gateway_fanout_ratio"]["how"] == "sequential"
    # the interleaved rounds decide when they were measured
    runs[0]["node-ws"]["vs_gateway_ratio"] = 1.35
    runs[0]["node-ws"]["vs_deliveries_per_s"] = 90.0
    interleaved = peer_summary(runs)["node-ws"]["gateway_fanout_ratio"]
    assert interleaved == {
        "runs": [1.35],
        "median": 1.35,
        "how": "interleaved, Python client",
        "target": 1.3,
        "meets_target": True,
    }
    # and the native receiver's rounds before the Python client's
    runs[0]["node-ws"]["nv_gateway_ratio"] = 2.5
    runs[0]["node-ws"]["nv_deliveries_per_s"] = 60.0
    native = peer_summary(runs)["node-ws"]
    assert native["gateway_fanout_ratio"]["how"] == "interleaved, native receiver"
    assert native["gateway_fanout_ratio"]["median"] == 2.5
    assert native["python_ratio"]["median"] == 1.35
    squeezed = compression_summary(
        [
            {
                "gateway": {
                    "compression_plain_cpu_us": 10.0,
                    "compression_deflate_cpu_us": 12.0,
                    "compression_deflate_saved_1k": 0.7,
                }
            }
        ]
    )
    assert squeezed["cpu_deflate_over_plain"]["median"] == 1.2
    assert squeezed["meets_target"] is True


@pytest.fixture(scope="module")
def node_root() -> Path:
    reason = peers.unavailable()
    if reason is not None:
        pytest.skip(f"the Node peers need node and npm: {reason}")
    return peers.install()  # npm ci once into ~/.cache/wsfleet (seconds), then cached


@pytest.mark.parametrize("kind", peers.PEER_KINDS)
async def test_each_peer_fans_out_to_the_same_client(
    kind: str, node_root: Path, redis_server: RedisServer
) -> None:
    server = await asyncio.to_thread(
        peers.peer_server(kind, node_root, None, redis_server.url).start
    )
    try:
        result = await figures.fanout(
            server.ws_url, 20, 10, timeout_s=30.0, server_cpu=server.cpu_s
        )
        assert result["delivered_share"] == 1.0, result
        assert result["fanout_errors"] == ""
        assert float(result["fanout_cpu_us"]) > 0
        idle, fleet = await figures.open_idle(server.ws_url, 30, server.rss)
        await fleet.engine.close_all()
        assert idle["opened"] == 30
    finally:
        await asyncio.to_thread(server.stop)
