"""Publishes queued on one connection go to Redis as one pipeline, and what a turn of the
event loop sends a connection goes out in one socket write (`session.publish_run`,
`RedisBroker.publish_many`, `outbox.py`). Nothing a client can see changes but the
speed: every publish answered in order, offsets in publish order, every subscriber
gets every message once and in order, Redis vanishing answers every publish."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable
from typing import Any

import pytest
from wsfleet_gateway.app import Gateway
from wsfleet_gateway.broker import parse_offset

from tests.gateway.conftest import GatewayFactory
from tests.support.waiting import wait_until
from wsfleet.client import Client, Message, ServerError
from wsfleet.services import RedisServer


@pytest.fixture
def start(redis_gateways: GatewayFactory) -> GatewayFactory:
    """Gateways on the test's Redis that admit the tests' many connections at once."""

    def factory(**overrides: Any) -> Awaitable[Gateway]:
        return redis_gateways(**{"user_connects_per_min": 10_000, **overrides})

    return factory


def socket_writes(gateway: Gateway) -> float:
    value = gateway.metrics.registry.get_sample_value("wsfleet_socket_writes_total")
    assert value is not None
    return value


async def connect(gateway: Gateway, clients: list[Client]) -> Client:
    client = await Client.connect(gateway.ws_url)
    clients.append(client)
    return client


async def receive(client: Client, count: int) -> list[Message]:
    return [await client.next_message(10.0) for _ in range(count)]


def increasing(offsets: list[str]) -> bool:
    keys = [parse_offset(o) for o in offsets]
    return all(a < b for a, b in itertools.pairwise(keys))


async def test_a_burst_from_one_connection_is_one_pipeline_and_few_writes(
    start: GatewayFactory, clients: list[Client]
) -> None:
    gateway = await start()
    subscriber, publisher = await connect(gateway, clients), await connect(gateway, clients)
    await subscriber.subscribe("burst")
    before = socket_writes(gateway)
    sent = 50
    offsets = await asyncio.gather(*(publisher.publish("burst", {"n": i}) for i in range(sent)))
    got = await receive(subscriber, sent)
    assert increasing(offsets)  # run in the order sent
    assert [m.data["n"] for m in got] == list(range(sent))
    assert [m.offset for m in got] == offsets
    # 100 frames (50 replies, 50 messages): a write each without pipelining and batching
    assert socket_writes(gateway) - before <= 20


async def test_publishers_racing_one_channel_each_keep_their_order(
    start: GatewayFactory, clients: list[Client]
) -> None:
    gateway = await start()
    subscribers = [await connect(gateway, clients) for _ in range(10)]
    for subscriber in subscribers:
        await subscriber.subscribe("race")
    publishers = [await connect(gateway, clients) for _ in range(8)]
    each = 40

    async def burst(publisher: Client, who: int) -> list[str]:
        return list(
            await asyncio.gather(
                *(publisher.publish("race", {"p": who, "n": n}) for n in range(each))
            )
        )

    replies = await asyncio.gather(*(burst(p, who) for who, p in enumerate(publishers)))
    for offsets in replies:
        assert increasing(offsets)
    everything = sorted((o for offsets in replies for o in offsets), key=parse_offset)
    assert len(set(everything)) == len(publishers) * each
    for subscriber in subscribers:
        got = await receive(subscriber, len(everything))
        assert [m.offset for m in got] == everything  # each once, in offset order
        for who in range(len(publishers)):
            assert [m.data["n"] for m in got if m.data["p"] == who] == list(range(each))
        assert subscriber.pending_messages() == 0


async def test_a_forbidden_run_is_refused_request_by_request(
    start: GatewayFactory, clients: list[Client]
) -> None:
    gateway = await start()
    publisher = await connect(gateway, clients)
    results = await asyncio.gather(
        *(publisher.publish("$announcements", n) for n in range(10)), return_exceptions=True
    )
    assert all(isinstance(r, ServerError) and r.code == "forbidden" for r in results)
    assert await publisher.publish("open", "still served") is not None


async def test_redis_gone_every_queued_publish_is_answered_then_served_again(
    start: GatewayFactory, redis_server: RedisServer, clients: list[Client]
) -> None:
    gateway = await start(redis_timeout_s=0.5)
    subscriber, publisher = await connect(gateway, clients), await connect(gateway, clients)
    await subscriber.subscribe("gone")
    first = await asyncio.gather(*(publisher.publish("gone", {"n": n}) for n in range(20)))
    assert [m.offset for m in await receive(subscriber, 20)] == first
    await asyncio.to_thread(redis_server.stop)
    results = await asyncio.gather(
        *(publisher.publish("gone", {"n": n}) for n in range(30)), return_exceptions=True
    )
    assert all(isinstance(r, ServerError) and r.code == "unavailable" for r in results)
    await asyncio.to_thread(redis_server.start)

    async def served() -> list[str] | None:
        results = await asyncio.gather(
            *(publisher.publish("back", n) for n in range(30)), return_exceptions=True
        )
        for r in results:  # until the breaker lets a probe through: unavailable
            if isinstance(r, BaseException) and not (
                isinstance(r, ServerError) and r.code == "unavailable"
            ):
                raise r
        offsets = [r for r in results if isinstance(r, str)]
        return offsets if len(offsets) == len(results) else None

    offsets = await wait_until(served, timeout_s=30.0, interval_s=0.1, message="publishes")
    assert increasing(offsets)
