"""Issue 2's acceptance across pods: two real gateway processes sharing one real Redis.

Each gateway is ``python -m wsfleet gateway ... --redis-url URL``, a separate
process with its own Redis connections (started by `wsfleet.gatewayproc`, the
launcher the benchmark uses too); clients are `wsfleet.client.Client`
over real WebSockets. The clients below record every `message` frame the
server sends (before the client's own offset de-duplication), so a message a
gateway delivered twice would show.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from wsfleet_gateway.broker import parse_offset

from tests.support.waiting import wait_until
from wsfleet.client import Client, Message, ServerError
from wsfleet.gatewayproc import ServerProcess, gateway_process
from wsfleet.services import RedisServer

WAIT_S = 30.0  # generous: gateway processes share two busy cores


GATEWAY_ENV = {
    "WSFLEET_REDIS_TIMEOUT_S": "0.5",
    "WSFLEET_DRAIN_GRACE_S": "0.5",
    "WSFLEET_AUTH": "disabled",
}


@contextlib.contextmanager
def gateway_pair(redis_url: str) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two gateway processes on `redis_url`, ready; stopped (SIGTERM) afterwards.

    The shared launcher keeps the inherited ``COVERAGE_*`` env: the children are measured.
    """
    pair = tuple(gateway_process(redis_url=redis_url, env=GATEWAY_ENV) for _ in range(2))
    g1, g2 = pair
    try:
        for gateway in pair:
            gateway.launch()  # both start at once, then each is waited for
        for gateway in pair:
            gateway.wait_ready(WAIT_S)
            assert gateway.ready["broker"] == "RedisBroker"
        yield g1, g2
        for gateway in pair:
            assert gateway.running, f"gateway died: {gateway.log_tail(5)}"
    finally:
        for gateway in pair:
            gateway.stop()


def test_launcher_stops_and_reports_a_gateway_that_exits_before_ready() -> None:
    """No JWT key, auth on (inherited WSFLEET_* dropped): the gateway refuses to start."""
    gateway = gateway_process(env_drop=("WSFLEET_",))
    with pytest.raises(RuntimeError, match="did not become ready") as failure:
        gateway.start(timeout_s=WAIT_S)
    assert "WSFLEET_JWT_SECRET" in str(failure.value)  # the child's own output, kept
    assert gateway.proc is None
    assert gateway.log_path is None  # its output file removed
    assert not gateway.ready


@pytest.fixture(scope="module")
def shared_gateways() -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """One Redis and two gateways for the tests that leave Redis running."""
    with RedisServer() as server, gateway_pair(server.url) as pair:
        yield pair


@pytest.fixture
def gateways(redis_server: RedisServer) -> Iterator[tuple[ServerProcess, ServerProcess]]:
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


async def connect(opened: list[Client], url: str) -> RecordingClient:
    client = await RecordingClient.connect(url, timeout_s=WAIT_S)
    opened.append(client)
    assert isinstance(client, RecordingClient)
    return client


def in_order(offsets: list[str]) -> list[str]:
    return sorted(offsets, key=parse_offset)


async def test_publish_on_either_gateway_reaches_subscribers_on_both_once_in_order(
    shared_gateways: tuple[ServerProcess, ServerProcess], clients: list[Client]
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
    shared_gateways: tuple[ServerProcess, ServerProcess], clients: list[Client]
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
    gateways: tuple[ServerProcess, ServerProcess],
    clients: list[Client],
) -> None:
    g1, g2 = gateways
    pids = [g1.pid, g2.pid]
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
    assert [g1.pid, g2.pid] == pids
    assert all(gw.running for gw in (g1, g2))
