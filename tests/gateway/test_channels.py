"""The hub: subscribe sequence without loss or duplicates, dedupe, fan-out."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsfleet_gateway.backends.memory import MemoryBroker
from wsfleet_gateway.broker import BrokerUnavailableError, Delivery, History
from wsfleet_gateway.channels import Hub
from wsfleet_gateway.metrics import GatewayMetrics
from wsfleet_gateway.protocol import encode_subscribed

from tests.gateway.helpers import HubConn
from tests.support.waiting import wait_until


def reply_for(channel: str) -> Any:
    def encode(history: History, meta_json: str) -> bytes:
        return encode_subscribed(1, channel, history, meta_json)

    return encode


class InterleavingBroker(MemoryBroker):
    """Publishes messages *during* attach and history reads (the race to survive)."""

    def __init__(self, during_attach: int, during_history: int) -> None:
        super().__init__()
        self.during_attach = during_attach
        self.during_history = during_history
        self.counter = 0

    def _burst(self, channel: str, n: int) -> None:
        for _ in range(n):
            self.publish_now(channel, str(self.counter))
            self.counter += 1

    async def attach(self, channel: str) -> None:
        await super().attach(channel)
        self._burst(channel, self.during_attach)
        await asyncio.sleep(0)

    async def history(self, channel: str, since: str | None, limit: int) -> History:
        result = await super().history(channel, since, limit)
        self._burst(channel, self.during_history)
        await asyncio.sleep(0)
        return result


@settings(max_examples=40, deadline=None)
@given(
    before=st.integers(0, 5),
    during_attach=st.integers(0, 5),
    during_history=st.integers(0, 5),
    after=st.integers(0, 5),
)
async def test_subscribe_never_loses_or_duplicates(
    before: int, during_attach: int, during_history: int, after: int
) -> None:
    broker = InterleavingBroker(during_attach, during_history)
    hub = Hub(broker, GatewayMetrics())
    await broker.start(hub.on_delivery)
    watcher = HubConn()  # subscribed from the start: sees everything
    await hub.subscribe(watcher, "c", None, 0, reply_for("c"))
    watched_from = broker.counter
    broker._burst("c", before)
    conn = HubConn()
    done = await hub.subscribe(conn, "c", None, 100, reply_for("c"))
    assert done
    broker._burst("c", after)
    reply = conn.frames[0]
    assert reply["type"] == "subscribed"
    seen = [m["data"] for m in reply["history"]] + conn.data("c")
    everything = list(range(broker.counter))
    assert seen == everything  # in order, none lost, none twice
    live = watcher.data("c")  # a gap-free suffix of everything, at least since its reply
    assert live == everything[len(everything) - len(live) :]
    assert len(live) >= len(everything) - watched_from


async def test_live_deliveries_dedupe_by_offset() -> None:
    broker = MemoryBroker()
    metrics = GatewayMetrics()
    hub = Hub(broker, metrics)
    await broker.start(hub.on_delivery)
    conn = HubConn()
    await hub.subscribe(conn, "c", None, 10, reply_for("c"))
    delivery = broker.publish_now("c", '"x"')
    hub.on_delivery(delivery)  # a broker redelivery
    hub.on_delivery(Delivery("c", "1-0", '"old"', 1))  # an older offset
    hub.on_delivery(Delivery("other", "9-0", '"y"', 9))  # nobody subscribed
    assert conn.data("c") == ["x"]
    assert metrics.deliveries._value.get() == 1
    assert hub.offsets(conn) == {"c": delivery.offset}


async def test_unsubscribe_and_drop_detach() -> None:
    broker = MemoryBroker()
    hub = Hub(broker, GatewayMetrics())
    await broker.start(hub.on_delivery)
    a, b = HubConn(), HubConn()
    for conn in (a, b):
        await hub.subscribe(conn, "x", None, 10, reply_for("x"))
        await hub.subscribe(conn, "y", None, 10, reply_for("y"))
    assert broker.attached_channels() == {"x": 2, "y": 2}
    assert hub.channel_count() == 2
    assert hub.subscriber_count("x") == 2
    assert hub.unsubscribe(a, "x")
    assert not hub.unsubscribe(a, "x")
    broker.publish_now("x", "1")
    assert a.data("x") == []
    assert b.data("x") == [1]
    hub.drop(b)
    hub.drop(a)
    assert broker.attached_channels() == {}
    assert hub.channel_count() == 0
    assert hub.subscriber_count("x") == 0


async def test_resubscribe_answers_with_history_and_keeps_one_subscription() -> None:
    broker = MemoryBroker()
    hub = Hub(broker, GatewayMetrics())
    await broker.start(hub.on_delivery)
    conn = HubConn()
    await hub.subscribe(conn, "c", None, 10, reply_for("c"))
    first = broker.publish_now("c", "1")
    await hub.subscribe(conn, "c", "0-0", 10, reply_for("c"))
    assert [m["data"] for m in conn.frames[-1]["history"]] == [1]
    assert broker.attached_channels() == {"c": 1}
    broker.publish_now("c", "2")
    assert conn.data("c") == [1, 2]
    assert hub.offsets(conn)["c"] > first.offset


class FailingBroker(MemoryBroker):
    def __init__(self, fail_in: str) -> None:
        super().__init__()
        self.fail_in = fail_in

    async def attach(self, channel: str) -> None:
        if self.fail_in == "attach":
            raise BrokerUnavailableError("down")
        await super().attach(channel)

    async def history(self, channel: str, since: str | None, limit: int) -> History:
        if self.fail_in == "history":
            raise BrokerUnavailableError("down")
        return await super().history(channel, since, limit)


@pytest.mark.parametrize("fail_in", ["attach", "history"])
async def test_failed_subscribe_rolls_back(fail_in: str) -> None:
    broker = FailingBroker(fail_in)
    hub = Hub(broker, GatewayMetrics())
    conn = HubConn()
    with pytest.raises(BrokerUnavailableError):
        await hub.subscribe(conn, "c", None, 10, reply_for("c"))
    assert conn.subscriptions == {}
    assert hub.channel_count() == 0
    assert broker.attached_channels() == {}
    assert conn.frames == []


class SlowAttachBroker(MemoryBroker):
    """Attach (or the history read after it) waits until `gate` is set."""

    def __init__(self, pause_in: str) -> None:
        super().__init__()
        self.pause_in = pause_in
        self.gate = asyncio.Event()
        self.waiting = False

    async def _pause(self, stage: str) -> None:
        if stage == self.pause_in:
            self.waiting = True
            await self.gate.wait()

    async def attach(self, channel: str) -> None:
        await self._pause("attach")
        await super().attach(channel)

    async def history(self, channel: str, since: str | None, limit: int) -> History:
        await self._pause("history")
        return await super().history(channel, since, limit)


@pytest.mark.parametrize("drop_during", ["attach", "history"])
async def test_connection_dropped_mid_subscribe(drop_during: str) -> None:
    broker = SlowAttachBroker(pause_in=drop_during)
    hub = Hub(broker, GatewayMetrics())
    conn = HubConn()
    task = asyncio.create_task(hub.subscribe(conn, "c", None, 10, reply_for("c")))
    await wait_until(lambda: broker.waiting, 5.0, message=f"waiting inside {drop_during}")
    conn.closed = True
    hub.drop(conn)
    broker.gate.set()
    assert await task is False
    assert conn.frames == []
    assert broker.attached_channels() == {}


async def test_a_moved_connection_gets_no_live_message_after_its_resume_offsets() -> None:
    """Issue 17 §4 (`Hub.move`, the drain's `reconnect`): the resume offsets are the last
    delivered, nothing live follows; a subscribe joining meanwhile still gets its reply
    (with the offset to resume from) but nothing live either. Others are unaffected."""
    broker = InterleavingBroker(during_attach=0, during_history=0)  # joins take a loop pass
    hub = Hub(broker, GatewayMetrics())
    await broker.start(hub.on_delivery)
    moved, other = HubConn(), HubConn()
    for conn in (moved, other):
        await hub.subscribe(conn, "a", None, 10, reply_for("a"))
    last = broker.publish_now("a", '"before"')
    joining = asyncio.create_task(hub.subscribe(moved, "b", None, 10, reply_for("b")))
    await asyncio.sleep(0)  # the subscribe to "b" is joining: its deliveries are held
    assert hub.move(moved) == {"a": last.offset}
    moved.moved = True
    broker.publish_now("a", '"after"')
    broker.publish_now("b", '"held"')  # while joining: held, then in the reply's history
    assert await joining
    broker.publish_now("b", '"after"')
    assert moved.data("a") == ["before"]
    assert moved.data("b") == []
    reply_b = moved.frames[-1]
    assert reply_b["type"] == "subscribed"
    assert [m["data"] for m in reply_b["history"]] == ["held"]
    assert hub.offsets(moved) == {}  # nothing delivered after the move to resume from
    assert other.data("a") == ["before", "after"]
