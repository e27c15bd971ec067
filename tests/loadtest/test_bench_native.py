"""The bench's native (Go) receiver against real servers on loopback: the gateway with JWT
auth, the plain picows server and the Node peers; Python publishes, Go counts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import pytest
from wsfleet_gateway.settings import GatewaySettings

from tests.loadtest.conftest import JWT_SECRET, running
from wsfleet.bench import native, peers
from wsfleet.bench.figures import bench_options
from wsfleet.loadtest.engine import Engine, mint_token
from wsfleet.services import RedisServer, free_port

SUBSCRIBERS = 20
MESSAGES = 25
TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def binary() -> Path:
    reason = native.unavailable()
    if reason is not None:
        if os.environ.get("WSFLEET_CI") == "1":  # CI installs Go: never skip there
            pytest.fail(f"the native receiver is built with Go: {reason}")
        pytest.skip(f"the native receiver is built with Go: {reason}")
    return native.build()  # go build once into ~/.cache/wsfleet (seconds), then cached


async def publish(url: str, messages: int, jwt_secret: str | None = None) -> None:
    """`messages` publishes to ``fanout`` from one Python connection, each acknowledged."""
    engine = Engine(url, bench_options(jwt_secret=jwt_secret))
    try:
        publisher = await engine.open()
        assert publisher is not None, engine.stats.errors
        for seq in range(messages):
            reply = await engine.call(publisher, "publish", channel="fanout", data={"s": seq})
            assert reply is not None, engine.stats.errors
    finally:
        await engine.close_all()


def auth_gateway() -> GatewaySettings:
    return GatewaySettings(
        port=0, admin_port=0, log_json=True, log_level="warning", jwt_secret=JWT_SECRET
    )


async def test_counts_every_delivery_of_the_gateway_with_auth(binary: Path) -> None:
    expected = SUBSCRIBERS * MESSAGES
    async with running(auth_gateway()) as gw:
        tokens = [mint_token(JWT_SECRET, f"native-{i}", "paid", 3600.0) for i in range(7)]
        receiver = native.NativeReceiver(
            {"gateway": gw.ws_url}, SUBSCRIBERS, tokens={"gateway": tokens}, binary=binary
        )
        async with receiver as recv:
            assert recv.opened == {"gateway": SUBSCRIBERS}
            assert gw.connections == SUBSCRIBERS
            await publish(gw.ws_url, MESSAGES, JWT_SECRET)
            assert await recv.wait_for("gateway", expected, TIMEOUT_S) == expected
            assert await recv.count() == {"gateway": expected}
            assert recv.errors == {}
            proc = recv.proc
        assert proc is not None
        assert proc.returncode == 0  # quit: closed its connections and exited


async def test_counts_the_plain_picows_server_and_waits_no_longer_than_told(
    binary: Path, baseline_url: str
) -> None:
    expected = SUBSCRIBERS * MESSAGES
    async with native.NativeReceiver({"baseline": baseline_url}, SUBSCRIBERS, binary=binary) as r:
        await publish(baseline_url, MESSAGES)
        assert await r.wait_for("baseline", expected, TIMEOUT_S) == expected
        started = time.monotonic()
        assert await r.wait_for("baseline", expected + 1, 0.2) == expected  # nothing more came
        assert time.monotonic() - started < 5.0
        assert await r.count() == {"baseline": expected}
        with pytest.raises(native.NativeReceiverError, match="no contender nope"):
            await r.wait_for("nope", 1, 0.1)
        assert await r.count() == {"baseline": expected}  # still answering


@pytest.fixture(scope="module")
def node_root() -> Path:
    reason = peers.unavailable()
    if reason is not None:
        pytest.skip(f"the Node peers need node and npm: {reason}")
    return peers.install()


@pytest.mark.parametrize("kind", peers.PEER_KINDS)
async def test_counts_every_delivery_of_each_node_peer(
    kind: str, binary: Path, node_root: Path, redis_server: RedisServer
) -> None:
    server = await asyncio.to_thread(
        peers.peer_server(kind, node_root, None, redis_server.url).start
    )
    try:
        expected = SUBSCRIBERS * MESSAGES
        async with native.NativeReceiver({kind: server.ws_url}, SUBSCRIBERS, binary=binary) as r:
            assert r.opened == {kind: SUBSCRIBERS}
            await publish(server.ws_url, MESSAGES)  # socket.io framing for the socket.io URL
            assert await r.wait_for(kind, expected, TIMEOUT_S) == expected
            assert await r.count() == {kind: expected}
            assert r.errors == {}
    finally:
        await asyncio.to_thread(server.stop)


async def test_a_wrong_url_or_a_missing_token_is_a_clear_error(binary: Path) -> None:
    closed = f"ws://127.0.0.1:{free_port()}/ws"
    with pytest.raises(native.NativeReceiverError, match=r"nowhere: no connection.*refused"):
        await native.NativeReceiver({"nowhere": closed}, 3, binary=binary).start()
    with pytest.raises(native.NativeReceiverError, match=r"ws:// only"):
        await native.NativeReceiver({"http": "http://127.0.0.1:1/ws"}, 1, binary=binary).start()
    async with running(auth_gateway()) as gw:
        with pytest.raises(native.NativeReceiverError, match=r"gateway: .*closed by the server"):
            await native.NativeReceiver({"gateway": gw.ws_url}, 2, binary=binary).start()
        # one good token, one bad: short of subscribers is an error unless allowed
        tokens = {"gateway": [mint_token(JWT_SECRET, "native-ok", "paid", 3600.0), "bad"]}
        contenders = {"gateway": gw.ws_url}
        with pytest.raises(native.NativeReceiverError, match=r"opened \{'gateway': 1\} of 2"):
            await native.NativeReceiver(contenders, 2, tokens=tokens, binary=binary).start()
        short = native.NativeReceiver(
            contenders, 2, tokens=tokens, binary=binary, require_all=False
        )
        async with short as recv:
            assert recv.opened == {"gateway": 1}
            assert recv.errors == {"gateway": {"subscribe": 1}}


def test_the_build_is_cached_by_the_sources(binary: Path) -> None:
    assert binary.parent == native.cache_dir()
    assert native.build() == binary  # no second build
    assert all(p.suffix in (".go", ".mod", ".sum") for p in native.sources())


def test_the_go_unit_tests_pass(binary: Path) -> None:
    """The receiver's own tests (frames, dialects, the control loop) against a Go server."""
    go = native.go_binary()
    assert go is not None
    for argv in ([go, "vet", "./..."], [go, "test", "-count=1", "./..."]):
        done = subprocess.run(
            argv,
            cwd=native.SOURCE_DIR,
            env={**os.environ, "GOTOOLCHAIN": "local"},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
