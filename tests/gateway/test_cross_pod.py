"""Issue 2's acceptance across pods: two real gateway processes sharing one real Redis.

Each gateway is ``python -m wsfleet gateway ... --redis-url URL``, a separate
process with its own Redis connections; clients are `wsfleet.client.Client`
over real WebSockets. The clients below record every `message` frame the
server sends (before the client's own offset de-duplication), so a message a
gateway delivered twice would show.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from wsfleet_gateway.broker import parse_offset

from tests.support.waiting import wait_until, wait_until_sync
from wsfleet.client import Client, Message, ServerError
from wsfleet.services import RedisServer, free_port, stop_process

WAIT_S = 30.0  # generous: gateway processes share two busy cores


@dataclass
class GatewayProcess:
    """One ``wsfleet gateway`` child process and its JSON log lines."""

    proc: subprocess.Popen[bytes]
    lines: list[dict[str, Any]] = field(default_factory=list)
    ws_url: str = ""

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == name]


def _read_lines(gateway: GatewayProcess) -> None:
    assert gateway.proc.stdout is not None
    for raw in gateway.proc.stdout:
        try:
            gateway.lines.append(json.loads(raw))
        except ValueError:
            gateway.lines.append({"event": "non_json", "text": raw.decode(errors="replace")})


def start_gateway(redis_url: str) -> GatewayProcess:
    env = {
        **os.environ,
        "WSFLEET_REDIS_TIMEOUT_S": "0.5",
        "WSFLEET_DRAIN_GRACE_S": "0.5",
        "WSFLEET_LOG_JSON": "true",
        "WSFLEET_AUTH": "disabled",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wsfleet",
            "gateway",
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
            "--admin-port",
            str(free_port()),
            "--redis-url",
            redis_url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    gateway = GatewayProcess(proc)
    threading.Thread(target=_read_lines, args=(gateway,), daemon=True).start()
    return gateway


@contextlib.contextmanager
def gateway_pair(redis_url: str) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """Two gateway processes on `redis_url`, ready; stopped (SIGTERM) afterwards."""
    pair = (start_gateway(redis_url), start_gateway(redis_url))
    try:
        for gateway in pair:

            def ready(gw: GatewayProcess = gateway) -> bool:
                if gw.proc.poll() is not None:
                    raise RuntimeError(f"gateway exited early: {gw.lines}")
                return bool(gw.events("gateway_ready"))

            wait_until_sync(ready, WAIT_S, message="gateway_ready")
            gateway.ws_url = gateway.events("gateway_ready")[0]["ws"]
            assert gateway.events("gateway_ready")[0]["broker"] == "RedisBroker"
        yield pair
        for gateway in pair:
            assert gateway.proc.poll() is None, f"gateway died: {gateway.lines[-5:]}"
    finally:
        for gateway in pair:
            stop_process(gateway.proc)
            if gateway.proc.stdout is not None:
                gateway.proc.stdout.close()


@pytest.fixture(scope="module")
def shared_gateways() -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """One Redis and two gateways for the tests that leave Redis running."""
    with RedisServer() as server, gateway_pair(server.url) as pair:
        yield pair


@pytest.fixture
def gateways(redis_server: RedisServer) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """Two gateways on this test's own Redis (which the test may stop)."""
    with gateway_pair(redis_server.url) as pair:
        yield pair


class RecordingClient(Client):
    """A `Client` that also keeps every message frame as the server sent it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frames: list[Message] = []

    def _accept(self, message: Message) -> None:
        self.frames.append(message)
        super()._accept(message)

    def offsets_of(self, channel: str) -> list[str]:
        return [m.offset for m in self.frames if m.channel == channel]


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    opened: list[Client] = []
    yield opened
    for client in opened:
        await client.close()


async def connect(opened: list[Client], url: str) -> RecordingClient:
    client = await RecordingClient.connect(url, timeout_s=WAIT_S)
    opened.append(client)
    assert isinstance(client, RecordingClient)
    return client


def in_order(offsets: list[str]) -> list[str]:
    return sorted(offsets, key=parse_offset)


async def test_publish_on_either_gateway_reaches_subscribers_on_both_once_in_order(
    shared_gateways: tuple[GatewayProcess, GatewayProcess], clients: list[Client]
) -> None:
    g1, g2 = shared_gateways
    channel = "wedding-cross-pod"
    subscribers = [
        await connect(clients, g1.ws_url),
        await connect(clients, g1.ws_url),
        await connect(clients, g2.ws_url),
        await connect(clients, g2.ws_url),
    ]
    for subscriber in subscribers:
        await subscriber.subscribe(channel)
    p1, p2 = await connect(clients, g1.ws_url), await connect(clients, g2.ws_url)

    async def publish_many(publisher: Client, tag: str) -> list[str]:
        return [await publisher.publish(channel, {"from": tag, "i": i}) for i in range(20)]

    sent_1, sent_2 = await asyncio.gather(publish_many(p1, "g1"), publish_many(p2, "g2"))
    expected = in_order(sent_1 + sent_2)
    assert len(set(expected)) == 40
    for subscriber in subscribers:
        await wait_until(lambda s=subscriber: len(s.frames) >= 40, WAIT_S, message="every message")
        assert subscriber.offsets_of(channel) == expected  # once each, in offset order
        by_tag: dict[str, list[int]] = {"g1": [], "g2": []}
        for message in subscriber.frames:
            by_tag[message.data["from"]].append(message.data["i"])
        assert by_tag == {"g1": list(range(20)), "g2": list(range(20))}
    # nothing further trickles in (a late duplicate would land here)
    marker = await p1.publish(channel, "end")
    for subscriber in subscribers:
        await wait_until(lambda s=subscriber: len(s.frames) >= 41, WAIT_S, message="marker")
        assert subscriber.offsets_of(channel) == [*expected, marker]


async def test_reconnect_with_since_gets_every_missed_message_once(
    shared_gateways: tuple[GatewayProcess, GatewayProcess], clients: list[Client]
) -> None:
    g1, g2 = shared_gateways
    channel = "venue-updates"
    publisher = await connect(clients, g1.ws_url)
    subscriber = await connect(clients, g2.ws_url)
    await subscriber.subscribe(channel)
    seen = [await publisher.publish(channel, i) for i in range(5)]
    await wait_until(lambda: subscriber.offsets_of(channel) == seen, WAIT_S, message="live")
    since = subscriber.offsets[channel]
    await subscriber.close()

    missed = [await publisher.publish(channel, i) for i in range(5, 15)]
    back = await connect(clients, g1.ws_url)  # resumes on the other pod
    reply = await back.subscribe(channel, since=since)
    assert reply.recovered
    assert [m.offset for m in reply.history] == missed
    assert [m.data for m in reply.history] == list(range(5, 15))
    assert reply.offset == missed[-1]
    live = [await publisher.publish(channel, i) for i in range(15, 18)]
    await wait_until(lambda: len(back.frames) >= 3, WAIT_S, message="live after resume")
    assert back.offsets_of(channel) == live  # no history message again

    # the client's own reconnect (to the first pod again) resumes from its offsets
    await back.reconnect(g2.ws_url)
    more = [await publisher.publish(channel, i) for i in range(18, 20)]
    await wait_until(lambda: len(back.frames) >= 5, WAIT_S, message="live after reconnect")
    assert back.offsets_of(channel) == [*live, *more]


async def test_redis_outage_gives_unavailable_and_gateways_recover_without_restart(
    redis_server: RedisServer,
    gateways: tuple[GatewayProcess, GatewayProcess],
    clients: list[Client],
) -> None:
    g1, g2 = gateways
    pids = [g1.proc.pid, g2.proc.pid]
    channel = "outage"
    c1, c2 = await connect(clients, g1.ws_url), await connect(clients, g2.ws_url)
    for client in (c1, c2):
        await client.subscribe(channel)
    before = await c1.publish(channel, "before")
    await wait_until(lambda: c2.offsets_of(channel) == [before], WAIT_S, message="delivery")

    redis_server.stop()
    for client in (c1, c2):
        # bounded: a hang ends in TimeoutError, not in the expected ServerError
        async with asyncio.timeout(WAIT_S):
            with pytest.raises(ServerError) as failure:
                await client.publish(channel, "during")
        assert failure.value.code == "unavailable"
    assert await c1.ping() >= 0  # the connections stay up

    redis_server.start()  # same port, empty: no persistence

    async def publish_works() -> str | None:
        try:
            return await c2.publish(channel, "after")
        except ServerError as exc:
            if exc.code != "unavailable":
                raise
            return None

    after = await wait_until(publish_works, WAIT_S, interval_s=0.1, message="recovery")
    for client in (c1, c2):
        await wait_until(
            lambda c=client: after in c.offsets_of(channel), WAIT_S, message="live again"
        )
        offsets = client.offsets_of(channel)
        # once each, in order (a publish whose reply was lost mid-restart may add one)
        assert offsets == sorted(set(offsets), key=parse_offset)
        assert offsets[0] == before
    assert [g1.proc.pid, g2.proc.pid] == pids
    assert all(gw.proc.poll() is None for gw in (g1, g2))
