"""Graceful drain: paced reconnect frames with resume offsets, zero loss, 1001 at the deadline."""

from __future__ import annotations

import asyncio
import math
import random
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsfleet_gateway.app import Gateway
from wsfleet_gateway.backends.memory import MemoryBroker
from wsfleet_gateway.broker import (
    Delivery,
    History,
    JoinByParts,
    JSONValue,
    OnDelivery,
    parse_offset,
)
from wsfleet_gateway.drain import SEND_WINDOW, jitter_ms, plan_drain

from tests.gateway.helpers import make_settings
from tests.support.waiting import wait_until
from wsfleet.client import Client, HandshakeRefusedError


@given(
    connections=st.integers(0, 100_000),
    grace_s=st.floats(0.0, 600.0),
    budget=st.floats(0.1, 10_000.0),
    tick_s=st.sampled_from([0.05, 0.1, 0.5]),
)
def test_plan_reaches_everyone_within_the_window(
    connections: int, grace_s: float, budget: float, tick_s: float
) -> None:
    plan = plan_drain(connections, grace_s, budget, tick_s)
    assert plan.batch_size >= 1
    assert plan.rate_per_s >= budget
    ticks = math.ceil(connections / plan.batch_size)
    assert ticks * plan.batch_size >= connections
    if grace_s > 0:
        assert plan.send_s <= grace_s * SEND_WINDOW + 1e-6
    else:
        assert plan.send_s == 0  # no grace: everyone at once
    if connections / (grace_s * SEND_WINDOW or 1e-9) <= budget:
        # the budget suffices: never faster than it (up to one frame per tick of rounding)
        assert plan.batch_size <= math.ceil(budget * tick_s)


def test_jitter_spreads_over_one_tick() -> None:
    rng = random.Random(7)
    delays = [jitter_ms(rng, 0.2) for _ in range(500)]
    assert min(delays) >= 0
    assert max(delays) <= 200
    assert len(set(delays)) > 50


class Bus:
    """One MemoryBroker shared by several in-process gateways (a stand-in for Redis)."""

    def __init__(self) -> None:
        self.store = MemoryBroker()
        self.ports: list[BusPort] = []

    async def start(self) -> None:
        await self.store.start(self.dispatch)

    def dispatch(self, delivery: Delivery) -> None:
        for port in self.ports:
            if port.on_delivery is not None and port.attached.get(delivery.channel):
                port.on_delivery(delivery)

    def port(self) -> BusPort:
        port = BusPort(self)
        self.ports.append(port)
        return port


class BusPort(JoinByParts):
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.on_delivery: OnDelivery | None = None
        self.attached: dict[str, int] = {}

    async def start(self, on_delivery: OnDelivery) -> None:
        self.on_delivery = on_delivery

    async def close(self) -> None:
        self.on_delivery = None

    @property
    def available(self) -> bool:
        return True

    async def publish(self, channel: str, data_json: str) -> Delivery:
        return await self.bus.store.publish(channel, data_json)

    async def attach(self, channel: str) -> None:
        self.attached[channel] = self.attached.get(channel, 0) + 1
        await self.bus.store.attach(channel)

    def detach(self, channel: str) -> None:
        self.attached[channel] -= 1
        self.bus.store.detach(channel)

    async def history(self, channel: str, since: str | None, limit: int) -> History:
        return await self.bus.store.history(channel, since, limit)

    async def get_meta(self, channel: str) -> dict[str, JSONValue]:
        return await self.bus.store.get_meta(channel)

    async def set_meta(self, channel: str, meta: dict[str, JSONValue]) -> None:
        await self.bus.store.set_meta(channel, meta)


async def test_drain_moves_clients_with_zero_loss() -> None:
    bus = Bus()
    await bus.start()
    draining = Gateway(
        make_settings(node_name="a", drain_grace_s=5.0, drain_reconnect_per_s=20),
        broker=bus.port(),
    )
    survivor = Gateway(make_settings(node_name="b"), broker=bus.port())
    await draining.start()
    await survivor.start()
    clients: list[Client] = []
    try:
        for i in range(8):
            client = await Client.connect(draining.ws_url)
            await client.subscribe(f"ch-{i % 3}")
            client.url = survivor.ws_url  # where "the Service" sends it next
            clients.append(client)
        publisher = await Client.connect(survivor.ws_url)
        clients.append(publisher)
        sent: dict[str, list[int]] = {f"ch-{i}": [] for i in range(3)}
        stop = asyncio.Event()

        async def publish_all_along() -> None:
            n = 0
            while not stop.is_set():
                channel = f"ch-{n % 3}"
                await publisher.publish(channel, n)
                sent[channel].append(n)
                n += 1
                await asyncio.sleep(0.002)

        publishing = asyncio.create_task(publish_all_along())
        try:
            await wait_until(lambda: sum(map(len, sent.values())) > 30)
            result = await draining.shutdown()
            await wait_until(lambda: all(c.reconnects == 1 for c in clients[:8]), timeout_s=20)
            await wait_until(lambda: survivor.connections == 9)
        finally:
            stop.set()
            await publishing
        assert result is not None
        assert (result.connections, result.reconnects_sent, result.forced) == (8, 8, 0)
        for i, client in enumerate(clients[:8]):
            channel = f"ch-{i % 3}"
            await wait_until(lambda c=client, ch=channel: c.offsets.get(ch) == _last(bus, ch))
            got: list[Any] = []
            while client.pending_messages():
                got.append((await client.next_message()).data)
            first = sent[channel].index(got[0])
            assert got == sent[channel][first:], f"client {i} lost or duplicated messages"
            assert client.welcome is not None
            assert client.welcome.node == "b"
        metrics = draining.metrics
        assert metrics.drained_connections._value.get() == 8
        assert metrics.drain_forced_closes._value.get() == 0
        assert metrics.drain_in_progress._value.get() == 1
    finally:
        for client in clients:
            await client.close()
        await draining.stop()
        await survivor.stop()


def _last(bus: Bus, channel: str) -> str:
    stream = bus.store._streams.get(channel)
    assert stream is not None
    return f"{stream.last[0]}-{stream.last[1]}"


async def test_drain_refuses_newcomers_and_forces_stragglers_at_the_deadline() -> None:
    gw = Gateway(
        make_settings(drain_grace_s=1.0, drain_reconnect_per_s=1000), broker=MemoryBroker()
    )
    await gw.start()
    stubborn = [
        await Client.connect(gw.ws_url, follow_reconnect=False, record_frames=True)
        for _ in range(3)
    ]
    try:
        await stubborn[0].subscribe("x")
        offset = await stubborn[1].publish("x", 1)
        await stubborn[0].next_message()
        drain = asyncio.create_task(gw.shutdown())
        await wait_until(lambda: gw.draining)
        async with (
            aiohttp.ClientSession() as http,
            http.get(gw.admin_url + "/readyz") as response,
        ):
            assert response.status == 503
        with pytest.raises(HandshakeRefusedError) as refused:
            await Client.connect(gw.ws_url)
        assert refused.value.status == 503
        result = await drain
        assert (result.connections, result.reconnects_sent, result.forced) == (3, 3, 3)
        for client in stubborn:
            assert client.close_code == 1001
            log = client.frame_log
            assert log is not None
            hints = [f for f in log if f["type"] == "reconnect"]
            assert len(hints) == 1
            assert 0 <= hints[0]["after_ms"] <= 100
        assert stubborn[0].frame_log is not None
        hint = next(f for f in stubborn[0].frame_log if f["type"] == "reconnect")
        assert hint["resume"] == {"x": offset}
        assert gw.metrics.drain_forced_closes._value.get() == 3
    finally:
        for client in stubborn:
            await client.close()
        await gw.stop()


async def test_drain_of_an_empty_gateway_is_immediate() -> None:
    gw = Gateway(make_settings(drain_grace_s=60.0, reuse_port=True), broker=MemoryBroker())
    await gw.start()
    try:
        result = await asyncio.wait_for(gw.shutdown(), timeout=30)
        assert result is not None
        assert (result.connections, result.forced) == (0, 0)
        assert await gw.shutdown() is None  # already stopped
    finally:
        await gw.stop()


async def test_raw_clients_resuming_from_the_reconnect_frame_get_no_duplicates() -> None:
    """Issue 17 §4: once a connection's `reconnect` frame is out it gets no more `message`
    frames, so the frame's `resume` offsets are exact. Raw clients (frames as sent, no
    client-side de-duplication) keep the old connection open while they move, as real
    ones do, and resume each channel from the frame's offset on the other gateway."""
    bus = Bus()
    await bus.start()
    many = {"user_connects_per_min": 10_000}
    draining = Gateway(
        make_settings(node_name="a", drain_grace_s=3.0, drain_reconnect_per_s=40, **many),
        broker=bus.port(),
    )
    survivor = Gateway(make_settings(node_name="b", **many), broker=bus.port())
    await draining.start()
    await survivor.start()
    channels = [f"raw-{i}" for i in range(3)]
    olds: list[Client] = []
    news: list[Client] = []
    sent: dict[str, list[str]] = {ch: [] for ch in channels}
    stop = asyncio.Event()
    try:
        publisher = await Client.connect(survivor.ws_url)
        news.append(publisher)
        for _ in range(12):
            olds.append(
                await Client.connect(draining.ws_url, follow_reconnect=False, record_frames=True)
            )
        for i, client in enumerate(olds):
            for channel in channels[: 1 + i % 3]:
                await client.subscribe(channel)

        async def publish_all_along() -> None:
            n = 0
            while not stop.is_set():
                channel = channels[n % 3]
                sent[channel].append(await publisher.publish(channel, n))
                n += 1

        async def move(old: Client) -> Client:
            log = old.frame_log
            assert log is not None
            hint = await wait_until(
                lambda: next((f for f in log if f["type"] == "reconnect"), None), 20
            )
            await asyncio.sleep(hint["after_ms"] / 1000)  # as told; the old link stays open
            new = await Client.connect(survivor.ws_url, follow_reconnect=False, record_frames=True)
            news.append(new)
            for channel, since in sorted(hint["resume"].items()):
                await new.subscribe(channel, since=since)
            await old.close()
            return new

        publishing = asyncio.create_task(publish_all_along())
        try:
            await wait_until(lambda: sum(map(len, sent.values())) > 30)
            moving = [asyncio.create_task(move(old)) for old in olds]
            await draining.shutdown()
            moved = await asyncio.gather(*moving)
            await wait_until(lambda: sum(map(len, sent.values())) > 300)
        finally:
            stop.set()
            await publishing
        counts = {"duplicated": 0, "lost": 0, "out of order": 0}
        for i, (old, new) in enumerate(zip(olds, moved, strict=True)):
            for channel in channels[: 1 + i % 3]:
                last = sent[channel][-1]
                await wait_until(lambda n=new, c=channel, x=last: x in offsets_of(n, c), 20)
                got = offsets_of(old, channel) + offsets_of(new, channel)
                first = sent[channel].index(got[0])
                for key, value in stream_faults(sent[channel][first:], got).items():
                    counts[key] += value
        assert counts == {"duplicated": 0, "lost": 0, "out of order": 0}
    finally:
        for client in [*olds, *news]:
            await client.close()
        await draining.stop()
        await survivor.stop()


def offsets_of(client: Client, channel: str) -> list[str]:
    """Offsets of `channel` in the frames the server sent: replies' history and messages."""
    out: list[str] = []
    for frame in client.frame_log or ():
        if frame.get("channel") != channel:
            continue
        if frame["type"] in ("subscribed", "switched"):
            out += [m["offset"] for m in frame["history"]]
        elif frame["type"] == "message":
            out.append(frame["offset"])
    return out


def stream_faults(expected: list[str], got: list[str]) -> dict[str, int]:
    """How `got` (offsets as received) differs from `expected` (offsets in order)."""
    seen: set[str] = set()
    top: tuple[int, int] = (-1, -1)
    duplicated = disordered = 0
    for offset in got:
        key = parse_offset(offset)
        if offset in seen:
            duplicated += 1
            continue
        seen.add(offset)
        if key < top:
            disordered += 1
        top = max(top, key)
    return {
        "duplicated": duplicated,
        "lost": len(set(expected) - seen),
        "out of order": disordered,
    }
