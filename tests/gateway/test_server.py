"""A live in-process gateway with real WebSocket clients."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from wsfleet_gateway.app import Gateway
from wsfleet_gateway.backends.memory import MemoryBroker
from wsfleet_gateway.broker import BrokerUnavailableError, Delivery
from wsfleet_gateway.protection.auth import Principal, Unauthorized

from tests.gateway.conftest import ClientFactory
from tests.gateway.helpers import make_settings
from tests.support.waiting import wait_until
from wsfleet.client import Client, ConnectionClosedError, HandshakeRefusedError, ServerError


async def test_welcome(gateway: Gateway, connect: ClientFactory) -> None:
    client = await connect()
    assert client.welcome is not None
    assert client.welcome.node == "test-node"
    assert client.welcome.connection_id.startswith("test-node-")
    assert client.welcome.version == 1
    assert client.welcome.limits["max_message_bytes"] == 65536
    assert client.welcome.limits["max_channels"] == 100
    await wait_until(lambda: gateway.connections == 1)
    other = await connect()
    assert other.welcome is not None
    assert other.welcome.connection_id != client.welcome.connection_id


async def test_publish_reaches_subscribers_once_in_order(connect: ClientFactory) -> None:
    alice, bob, carol = await connect(), await connect(), await connect()
    await alice.subscribe("wedding-1")
    await bob.subscribe("wedding-1")
    await carol.subscribe("wedding-2")
    offsets = [await alice.publish("wedding-1", {"n": i}) for i in range(20)]
    for client in (alice, bob):
        got = [await client.next_message() for _ in range(20)]
        assert [m.data for m in got] == [{"n": i} for i in range(20)]
        assert [m.offset for m in got] == offsets
        assert all(m.channel == "wedding-1" and m.ts > 0 for m in got)
        assert client.offsets["wedding-1"] == offsets[-1]
    await carol.ping()
    assert carol.pending_messages() == 0
    await bob.unsubscribe("wedding-1")
    await alice.publish("wedding-1", "after")
    assert (await alice.next_message()).data == "after"
    await bob.ping()
    assert bob.pending_messages() == 0


async def test_subscribe_reply_has_meta_and_recent_history(
    gateway: Gateway, connect: ClientFactory
) -> None:
    await gateway.broker.set_meta("w", {"title": "June"})
    publisher = await connect()
    for i in range(15):
        await publisher.publish("w", i)
    client = await connect()
    reply = await client.subscribe("w")
    assert reply.meta == {"title": "June"}
    assert [m.data for m in reply.history] == list(range(5, 15))  # history_recent = 10
    assert reply.offset == reply.history[-1].offset
    assert reply.recovered


async def test_switch_in_one_round_trip_and_no_old_message_after(
    gateway: Gateway, connect: ClientFactory
) -> None:
    await gateway.broker.set_meta("new", {"venue": "barn"})
    publisher = await connect()
    for i in range(3):
        await publisher.publish("new", f"n{i}")
    client = await connect(record_frames=True)
    await client.subscribe("old")
    stop = asyncio.Event()

    async def flood() -> None:
        i = 0
        while not stop.is_set():
            await publisher.publish("old", i)
            i += 1

    flooding = asyncio.create_task(flood())
    try:
        await wait_until(lambda: client.pending_messages() >= 5, message="old messages flow")
        reply = await client.switch("old", "new")
        await publisher.publish("new", "live")
        await wait_until(lambda: any(m.data == "live" for m in _drain(client)) or None)
    finally:
        stop.set()
        await flooding
    assert reply.channel == "new"
    assert reply.from_ == "old"
    assert reply.meta == {"venue": "barn"}
    assert [m.data for m in reply.history] == ["n0", "n1", "n2"]
    assert client.channels == {"new"}
    log = client.frame_log
    assert log is not None
    switched_at = next(i for i, f in enumerate(log) if f["type"] == "switched")
    assert any(f.get("channel") == "old" for f in log[:switched_at])
    after = [f for f in log[switched_at + 1 :] if f["type"] == "message"]
    assert after
    assert all(f["channel"] == "new" for f in after)


def _drain(client: Client) -> list[Any]:
    out = []
    while client.pending_messages():
        out.append(client._queue.get_nowait())
    return out


async def test_errors_keep_the_connection_working(connect: ClientFactory) -> None:
    client = await connect()
    cases: list[tuple[bytes | str, bool, str]] = [
        ("{not json", False, "bad_request"),
        ('{"id": 1, "op": "dance"}', False, "bad_request"),
        ('{"id": 2, "op": "subscribe"}', False, "bad_request"),
        ('{"op": "ping"}', False, "bad_request"),
        (b"\x00\x01binary", True, "bad_request"),
        ('{"id": 3, "op": "publish", "channel": "$system", "data": 1}', False, "forbidden"),
        ('{"id": 4, "op": "unsubscribe", "channel": "nope"}', False, "not_subscribed"),
        ('{"id": 5, "op": "switch", "from": "nope", "to": "x"}', False, "not_subscribed"),
    ]
    for payload, binary, code in cases:
        client.send_raw(payload, binary=binary)
        error = await asyncio.wait_for(client.errors.get(), 10)
        assert error.code == code, payload
        await client.ping()
    with pytest.raises(ServerError) as info:
        await client.publish("$system", "x")
    assert info.value.code == "forbidden"
    reply = await client.subscribe("$system")  # server-only: clients may listen
    assert reply.channel == "$system"


async def test_server_only_channel_gets_admin_publishes(
    gateway: Gateway, connect: ClientFactory
) -> None:
    client = await connect()
    await client.subscribe("$announcements")
    await gateway.broker.publish("$announcements", '"maintenance at 3"')
    assert (await client.next_message()).data == "maintenance at 3"


async def test_quota_per_connection() -> None:
    gw = Gateway(make_settings(max_channels_per_connection=2), broker=MemoryBroker())
    await gw.start()
    client = await Client.connect(gw.ws_url)
    try:
        await client.subscribe("a")
        await client.subscribe("b")
        await client.subscribe("b")  # again: no new slot used
        with pytest.raises(ServerError) as info:
            await client.subscribe("c")
        assert info.value.code == "quota_exceeded"
        await client.switch("a", "c")  # a switch frees its slot first
        assert client.channels == {"b", "c"}
    finally:
        await client.close()
        await gw.stop()


async def test_recovery_with_since_after_a_disconnect(connect: ClientFactory) -> None:
    reader, writer = await connect(), await connect()
    await reader.subscribe("r")
    first = await writer.publish("r", 0)
    assert (await reader.next_message()).offset == first
    await reader._drop_connection()  # the reader goes away for a while
    missed = [await writer.publish("r", i) for i in range(1, 6)]
    await reader.reconnect()
    got = [await reader.next_message() for _ in range(5)]
    assert [m.offset for m in got] == missed
    await writer.publish("r", 6)
    assert (await reader.next_message()).data == 6
    await reader.ping()
    assert reader.pending_messages() == 0
    assert reader.reconnects == 1
    # an explicit subscribe with since returns the missed messages in the reply
    late = await connect()
    reply = await late.subscribe("r", since=first)
    assert [m.data for m in reply.history] == [1, 2, 3, 4, 5, 6]
    assert reply.recovered


async def test_frame_over_limit_closes_1009() -> None:
    gw = Gateway(make_settings(max_message_bytes=1024), broker=MemoryBroker())
    await gw.start()
    client = await Client.connect(gw.ws_url)
    try:
        client.send_raw('{"id": 1, "op": "ping", "pad": "' + "x" * 2000 + '"}')
        await wait_until(lambda: not client.connected, message="closed")
        assert client.close_code == 1009
    finally:
        await client.close()
        await gw.stop()


async def test_fragmented_messages() -> None:
    gw = Gateway(make_settings(max_message_bytes=1024), broker=MemoryBroker())
    await gw.start()
    client = await Client.connect(gw.ws_url)
    try:
        assert client._conn is not None
        transport = client._conn.transport
        transport.send(WSMsgType.TEXT, b'{"id": 1, "op": ', fin=False)
        transport.send(WSMsgType.CONTINUATION, b'"subscribe", "channel": "frag"}', fin=True)
        await wait_until(lambda: gw.hub.subscriber_count("frag") == 1)
        transport.send(WSMsgType.BINARY, b"ab", fin=False)
        transport.send(WSMsgType.CONTINUATION, b"cd", fin=True)
        assert "binary" in (await asyncio.wait_for(client.errors.get(), 10)).message
        transport.send(WSMsgType.CONTINUATION, b"stray", fin=True)
        assert "continuation" in (await asyncio.wait_for(client.errors.get(), 10)).message
        transport.send(WSMsgType.TEXT, b"[", fin=False)
        transport.send(WSMsgType.TEXT, b"[", fin=False)
        assert "inside" in (await asyncio.wait_for(client.errors.get(), 10)).message
        await client.ping()
        transport.send(WSMsgType.TEXT, b"x" * 500, fin=False)
        for _ in range(2):
            transport.send(WSMsgType.CONTINUATION, b"x" * 500, fin=False)
        await wait_until(lambda: not client.connected, message="closed")
        assert client.close_code == 1009
    finally:
        await client.close()
        await gw.stop()


async def test_unauthorized_closes_4001() -> None:
    def authenticate(path: str, headers: Mapping[str, str]) -> Principal:
        if headers.get("authorization") != "Bearer good":
            raise Unauthorized("no token")
        return Principal("ann", "free", ("wedding-*",), max_channels=1)

    gw = Gateway(make_settings(), broker=MemoryBroker(), authenticator=authenticate)
    await gw.start()
    try:
        with pytest.raises(ConnectionClosedError) as info:
            await Client.connect(gw.ws_url, token="bad")
        assert info.value.code == 4001
        client = await Client.connect(gw.ws_url, token="good")
        await client.subscribe("wedding-7")
        with pytest.raises(ServerError) as err:
            await client.subscribe("funeral-1")
        assert err.value.code == "forbidden"
        with pytest.raises(ServerError) as err:
            await client.subscribe("wedding-8")  # the tier's quota: one channel
        assert err.value.code == "quota_exceeded"
        with pytest.raises(ServerError):
            await client.publish("other", 1)
        await client.close()
    finally:
        await gw.stop()


async def test_wrong_path_is_404(gateway: Gateway) -> None:
    with pytest.raises(HandshakeRefusedError) as info:
        await Client.connect(f"ws://127.0.0.1:{gateway.port}/nope")
    assert info.value.status == 404
    assert isinstance(info.value, ConnectionError)  # retry loops catch it like a reset


class _Silent(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        pass


async def test_heartbeat_drops_silent_clients_and_keeps_live_ones() -> None:
    gw = Gateway(make_settings(heartbeat_s=0.3, idle_timeout_s=1.5), broker=MemoryBroker())
    await gw.start()
    live = await Client.connect(gw.ws_url)  # picows answers pings automatically
    transport, _ = await ws_connect(_Silent, gw.ws_url, enable_auto_pong=False)
    try:
        await wait_until(lambda: transport.is_disconnected, timeout_s=20, message="silent dropped")
        await live.ping()
        assert live.connected
    finally:
        transport.disconnect()
        await live.close()
        await gw.stop()


class _BrokenBroker(MemoryBroker):
    def __init__(self, hang: bool) -> None:
        super().__init__()
        self.hang = hang

    async def publish(self, channel: str, data_json: str) -> Delivery:
        if self.hang:
            await asyncio.Event().wait()
        raise BrokerUnavailableError("redis down")


@pytest.mark.parametrize("hang", [False, True])
async def test_unavailable_broker_answers_unavailable(hang: bool) -> None:
    gw = Gateway(make_settings(redis_timeout_s=0.1), broker=_BrokenBroker(hang))
    await gw.start()
    client = await Client.connect(gw.ws_url)
    try:
        with pytest.raises(ServerError) as info:
            await client.publish("a", 1)
        assert info.value.code == "unavailable"
        await client.ping()
    finally:
        await client.close()
        await gw.stop()


async def test_stop_closes_clients_with_going_away() -> None:
    gw = Gateway(make_settings(), broker=MemoryBroker())
    await gw.start()
    client = await Client.connect(gw.ws_url)
    await client.subscribe("a")
    await gw.stop()
    await wait_until(lambda: not client.connected)
    assert client.close_code == 1001
    with pytest.raises(ConnectionClosedError):
        await client.next_message()
    await client.close()
    await gw.stop()  # idempotent


class _CrashingBroker(MemoryBroker):
    async def publish(self, channel: str, data_json: str) -> Delivery:
        raise RuntimeError("bug")


async def test_unexpected_broker_error_answers_unavailable_and_keeps_serving() -> None:
    gw = Gateway(make_settings(), broker=_CrashingBroker())
    await gw.start()
    client = await Client.connect(gw.ws_url)
    try:
        with pytest.raises(ServerError) as info:
            await client.publish("a", 1)
        assert (info.value.code, info.value.message) == ("unavailable", "internal error")
        await client.subscribe("a")
    finally:
        await client.close()
        await gw.stop()


async def test_start_failure_releases_everything() -> None:
    first = Gateway(make_settings(), broker=MemoryBroker())
    await first.start()
    clash = Gateway(make_settings(admin_port=first.admin_port), broker=MemoryBroker())
    try:
        with pytest.raises(OSError, match="address already in use"):
            await clash.start()
        assert clash.stopping
    finally:
        await first.stop()


async def test_gateway_on_redis(redis_server: Any) -> None:
    """The default broker choice: `redis_url` set → RedisBroker, end to end."""
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    gw = Gateway(make_settings(redis_url=url))
    assert type(gw.broker).__name__ == "RedisBroker"
    assert type(Gateway(make_settings()).broker) is MemoryBroker
    await gw.start()
    client = await Client.connect(gw.ws_url)
    try:
        await client.subscribe("redis-chan")
        offset = await client.publish("redis-chan", {"via": "redis"})
        message = await client.next_message()
        assert (message.offset, message.data) == (offset, {"via": "redis"})
        reply = await client.switch("redis-chan", "other")
        assert reply.channel == "other"
    finally:
        await client.close()
        await gw.stop()


async def test_pipelined_requests_are_answered_in_order(connect: ClientFactory) -> None:
    client = await connect(record_frames=True)
    frames = [
        '{"id": "s", "op": "subscribe", "channel": "p"}',
        '{"id": "u", "op": "unsubscribe", "channel": "p"}',
        '{"id": "x", "op": "ping"}',
        '{"id": "w", "op": "switch", "from": "p", "to": "q"}',
        '{"id": "s2", "op": "subscribe", "channel": "p"}',
        '{"id": "sw", "op": "switch", "from": "p", "to": "q"}',
        '{"id": "pub", "op": "publish", "channel": "q", "data": 1}',
    ]
    for frame in frames:
        client.send_raw(frame)
    log = client.frame_log
    assert log is not None
    await wait_until(lambda: sum(1 for f in log if f.get("id") == "pub") == 1)
    replies = [(f["type"], f.get("id")) for f in log if f["type"] not in ("welcome", "message")]
    assert replies == [
        ("subscribed", "s"),
        ("unsubscribed", "u"),
        ("pong", "x"),
        ("error", "w"),  # not subscribed to p any more
        ("subscribed", "s2"),
        ("switched", "sw"),
        ("published", "pub"),
    ]
