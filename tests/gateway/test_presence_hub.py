"""The hub's presence bookkeeping (issue 22), on the memory broker: a member is kept
exactly while its subscription is, whatever happens to the join; events reach the
other completed subscriptions of matching channels only."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from wsfleet_gateway.backends.memory import MemoryBroker
from wsfleet_gateway.broker import BrokerUnavailableError, History, PresenceOp
from wsfleet_gateway.channels import Hub
from wsfleet_gateway.metrics import GatewayMetrics
from wsfleet_gateway.presence import Member, encode_member, event_matcher, live_members
from wsfleet_gateway.protocol import encode_subscribed

from tests.gateway.helpers import HubConn
from tests.support.waiting import wait_until


class Conn(HubConn):
    def __init__(self, conn_id: str) -> None:
        super().__init__()
        self.id = conn_id

    def events(self) -> list[tuple[str, str, str]]:
        return [
            (f["type"], f["channel"], f["member"]["connection_id"])
            for f in self.frames
            if f["type"] in ("join", "leave")
        ]


def reply_for(channel: str) -> Any:
    def encode(history: History, meta_json: str) -> bytes:
        return encode_subscribed(1, channel, history, meta_json)

    return encode


def record(conn_id: str, user: str = "ann") -> str:
    return encode_member(Member(1, conn_id, user, "gw-a"))


async def members(broker: MemoryBroker, channel: str) -> list[str]:
    return [m.connection_id for m in live_members(await broker.presence_read(channel))]


def make_hub(broker: MemoryBroker, events: list[str] | None = None) -> Hub:
    hub = Hub(broker, GatewayMetrics(), broker, event_matcher(events) if events else None)
    broker.on_presence_event(hub.on_presence_event)
    return hub


async def test_a_member_is_kept_while_subscribed() -> None:
    broker = MemoryBroker()
    hub = make_hub(broker)
    a, b = Conn("c-1"), Conn("c-2")
    await hub.subscribe(a, "x", None, 10, reply_for("x"), record("c-1"))
    await hub.subscribe(b, "x", None, 10, reply_for("x"), record("c-2", "bo"))
    assert await members(broker, "x") == ["c-1", "c-2"]
    assert dict(hub.presence_records()) == {"x": [record("c-1"), record("c-2", "bo")]}
    # a switch: the leave travels with the join that follows
    leaving: list[PresenceOp] = []
    hub.unsubscribe(a, "x", leaving)
    assert leaving == [PresenceOp("x", record("c-1"), False)]
    assert await members(broker, "x") == ["c-1", "c-2"]  # not written yet
    await hub.subscribe(a, "y", None, 10, reply_for("y"), record("c-1"), leaving)
    assert (await members(broker, "x"), await members(broker, "y")) == (["c-2"], ["c-1"])
    hub.drop(b)
    hub.drop(a)
    assert (await members(broker, "x"), await members(broker, "y")) == ([], [])
    assert list(hub.presence_records()) == []


async def test_without_a_store_nothing_is_kept() -> None:
    broker = MemoryBroker()
    hub = Hub(broker, GatewayMetrics())
    conn = Conn("c-1")
    await hub.subscribe(conn, "x", None, 10, reply_for("x"), record("c-1"))
    assert conn.subscriptions["x"].member is None
    assert await broker.presence_read("x") == []


class FailingBroker(MemoryBroker):
    async def attach(self, channel: str) -> None:
        raise BrokerUnavailableError("down")


async def test_a_failed_join_leaves_no_member_and_still_writes_the_switchs_leave() -> None:
    broker = FailingBroker()
    hub = make_hub(broker)
    conn = Conn("c-1")
    broker.presence_write([PresenceOp("old", record("c-1"), True)])
    with pytest.raises(BrokerUnavailableError):
        await hub.subscribe(
            conn,
            "x",
            None,
            10,
            reply_for("x"),
            record("c-1"),
            [PresenceOp("old", record("c-1"), False)],
        )
    assert (await members(broker, "x"), await members(broker, "old")) == ([], [])


class SlowBroker(MemoryBroker):
    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = False

    async def attach(self, channel: str) -> None:
        self.waiting = True
        await self.gate.wait()
        await super().attach(channel)


async def test_a_connection_dropped_while_joining_leaves_no_member() -> None:
    broker = SlowBroker()
    hub = make_hub(broker)
    conn = Conn("c-1")
    task = asyncio.create_task(hub.subscribe(conn, "x", None, 10, reply_for("x"), record("c-1")))
    await wait_until(lambda: broker.waiting, 5.0, message="inside the join")
    conn.closed = True
    hub.drop(conn)
    broker.gate.set()
    assert await task is False
    assert await members(broker, "x") == []


async def test_events_go_to_the_other_completed_subscribers_of_matching_channels() -> None:
    broker = MemoryBroker()
    hub = make_hub(broker, ["wedding-*"])
    ann, bo, cy = Conn("c-1"), Conn("c-2"), Conn("c-3")
    for conn in (ann, bo):
        await hub.subscribe(conn, "wedding-1", None, 10, reply_for("wedding-1"), record(conn.id))
        await hub.subscribe(conn, "lobby", None, 10, reply_for("lobby"), record(conn.id))
    await hub.subscribe(cy, "wedding-1", None, 10, reply_for("wedding-1"), record("c-3"))
    hub.unsubscribe(cy, "wedding-1")
    hub.unsubscribe(cy, "lobby")  # not subscribed: nothing
    await hub.subscribe(cy, "lobby", None, 10, reply_for("lobby"), record("c-3"))
    hub.drop(cy)
    await wait_until(lambda: len(ann.events()) >= 3, 5.0, message="events")
    await asyncio.sleep(0)  # the memory broker hands events over on the next loop pass
    assert ann.events() == [
        ("join", "wedding-1", "c-2"),
        ("join", "wedding-1", "c-3"),
        ("leave", "wedding-1", "c-3"),
    ]
    # ann's own join reached bo too: the memory broker hands it over a loop pass later
    assert bo.events() == [
        ("join", "wedding-1", "c-1"),
        ("join", "wedding-1", "c-3"),
        ("leave", "wedding-1", "c-3"),
    ]
    assert cy.events() == []  # never its own
    frame = next(f for f in bo.frames if f["type"] == "join")
    assert frame["member"] == {
        "user": "ann",
        "connection_id": "c-1",
        "node": "gw-a",
        "joined_at": 1,
    }
    assert json.dumps(frame)  # a plain JSON frame
    ann.moved = True  # told to reconnect elsewhere: no more events
    await hub.subscribe(cy, "wedding-1", None, 10, reply_for("wedding-1"), record("c-3"))
    await wait_until(lambda: len(bo.events()) >= 4, 5.0, message="a later join")
    assert len(ann.events()) == 3
