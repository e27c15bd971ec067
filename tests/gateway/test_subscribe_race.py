"""Issue 17 §1: a subscribe with `since` racing a publish loses nothing ("never both, never
neither"), on a channel new to the gateway, across two real gateway processes.

Each round takes a channel no gateway has seen. Publishers on gateway 1 publish to it
flat out (several requests in flight per connection); once some messages are stored,
many clients of gateway 2 (which does not hold the channel yet) subscribe with the same
`since`, each at a random moment over a few tens of milliseconds, so their subscribes
land while the pod's first subscription is being confirmed, while history reads are in
flight and while live messages arrive. Every client must then hold every acknowledged
publish after `since` exactly once: in the reply's `history` or as a live `message`.

The frames are read as the server sent them (no client-side de-duplication).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from wsfleet_gateway.broker import parse_offset

from tests.support.waiting import wait_until
from wsfleet.client import Client
from wsfleet.gatewayproc import ServerProcess, gateway_process
from wsfleet.services import RedisServer

WAIT_S = 30.0
ROUNDS = 12
SUBSCRIBERS = 40
PUBLISHERS = 2
IN_FLIGHT = 4
"""Publish requests each publisher connection keeps in flight."""
SPREAD_S = 0.03
"""Subscribes of one round start at random moments within this window."""

RACE_ENV = {
    "WSFLEET_AUTH": "disabled",
    "WSFLEET_REDIS_TIMEOUT_S": "2.0",
    "WSFLEET_USER_CONNECTS_PER_MIN": "100000",
    "WSFLEET_HISTORY_RECOVER_LIMIT": "100000",
    "WSFLEET_HISTORY_MAX_LEN": "100000",
}


@pytest.fixture(scope="module")
def race_gateways() -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with RedisServer() as redis:
        pair = [gateway_process(redis_url=redis.url, env=RACE_ENV) for _ in range(2)]
        try:
            for gateway in pair:
                gateway.launch()
            for gateway in pair:
                gateway.wait_ready(WAIT_S)
            yield pair[0], pair[1]
            for gateway in pair:
                assert gateway.running, f"gateway died: {gateway.log_tail(5)}"
        finally:
            for gateway in pair:
                gateway.stop()


@pytest.fixture
async def opened() -> AsyncIterator[list[Client]]:
    clients: list[Client] = []
    yield clients
    for client in clients:
        await client.close()


async def open_client(opened: list[Client], url: str) -> Client:
    client = await Client.connect(url, timeout_s=WAIT_S, record_frames=True)
    opened.append(client)
    return client


def received(client: Client, channel: str) -> list[str]:
    """Offsets of `channel` as the server sent them: each reply's history, then live."""
    offsets: list[str] = []
    assert client.frame_log is not None
    for frame in client.frame_log:
        if frame.get("channel") != channel:
            continue
        if frame["type"] == "subscribed":
            assert frame["recovered"] is True, frame
            offsets += [m["offset"] for m in frame["history"]]
        elif frame["type"] == "message":
            offsets.append(frame["offset"])
    return offsets


async def publish_flat_out(
    publisher: Client, channel: str, acked: list[str], stop: asyncio.Event
) -> None:
    async def one_lane() -> None:
        n = 0
        while not stop.is_set():
            acked.append(await publisher.publish(channel, {"n": n}))
            n += 1

    await asyncio.gather(*(one_lane() for _ in range(IN_FLIGHT)))


async def run_round(
    channel: str, publishers: list[Client], subscribers: list[Client], rng: random.Random
) -> dict[str, Any]:
    acked: list[str] = []
    stop = asyncio.Event()
    publishing = [
        asyncio.create_task(publish_flat_out(p, channel, acked, stop)) for p in publishers
    ]
    try:
        await wait_until(lambda: len(acked) >= 40, WAIT_S, interval_s=0.001, message="publishes")
        since = max(acked[:20], key=parse_offset)

        async def subscribe_later(client: Client) -> None:
            await asyncio.sleep(rng.uniform(0.0, SPREAD_S))
            await client.subscribe(channel, since=since)

        await asyncio.gather(*(subscribe_later(c) for c in subscribers))
        marker = len(acked) + 60
        await wait_until(lambda: len(acked) >= marker, WAIT_S, interval_s=0.001, message="more")
    finally:
        stop.set()
        await asyncio.gather(*publishing)
    last = max(acked, key=parse_offset)
    for client in subscribers:
        await wait_until(
            lambda c=client: last in received(c, channel), WAIT_S, message="the last publish"
        )
    expected = {a for a in acked if parse_offset(a) > parse_offset(since)}
    lost: dict[int, list[str]] = {}
    duplicated: dict[int, list[str]] = {}
    for i, client in enumerate(subscribers):
        got = received(client, channel)
        if set(expected) - set(got):
            lost[i] = sorted(set(expected) - set(got), key=parse_offset)
        if len(got) != len(set(got)):
            duplicated[i] = [o for o in set(got) if got.count(o) > 1]
        assert got == sorted(got, key=parse_offset), f"out of order for subscriber {i}"
        assert set(got) <= expected, f"subscriber {i} got offsets nobody published"
    for client in subscribers:
        await client.unsubscribe(channel)
    return {"published": len(acked), "expected": len(expected), "lost": lost, "dup": duplicated}


async def test_subscribes_with_since_racing_a_flat_out_publisher_lose_nothing(
    race_gateways: tuple[ServerProcess, ServerProcess], opened: list[Client]
) -> None:
    g1, g2 = race_gateways
    publishers = [await open_client(opened, g1.ws_url) for _ in range(PUBLISHERS)]
    subscribers = [await open_client(opened, g2.ws_url) for _ in range(SUBSCRIBERS)]
    rng = random.Random(17)
    rounds = []
    for r in range(ROUNDS):
        result = await run_round(f"race-{r}-{rng.randrange(10**9)}", publishers, subscribers, rng)
        rounds.append(result)
        for client in subscribers:  # each round reads only its own frames
            assert client.frame_log is not None
            client.frame_log.clear()
    lost = {r: x["lost"] for r, x in enumerate(rounds) if x["lost"]}
    duplicated = {r: x["dup"] for r, x in enumerate(rounds) if x["dup"]}
    assert not lost, f"lost messages (round -> subscriber -> offsets): {lost}"
    assert not duplicated, f"duplicated messages: {duplicated}"
    assert all(x["expected"] >= 60 for x in rounds)  # every round raced real traffic
