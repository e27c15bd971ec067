"""The typed client: iteration, closing, reconnect frames, errors."""

from __future__ import annotations

import asyncio

import pytest
from wsfleet_gateway.app import Gateway
from wsfleet_gateway.backends.memory import MemoryBroker
from wsfleet_gateway.broker import parse_offset
from wsfleet_gateway.protocol import encode_reconnect

from tests.gateway.conftest import ClientFactory
from tests.gateway.helpers import make_settings
from tests.support.waiting import wait_until
from wsfleet.client import Client, ConnectionClosedError, Message


async def test_messages_iterates_until_close(connect: ClientFactory) -> None:
    reader, writer = await connect(), await connect()
    await reader.subscribe("it")
    for i in range(3):
        await writer.publish("it", i)
    got: list[Message] = []

    async def consume() -> None:
        async for message in reader.messages():
            got.append(message)
            if len(got) == 3:
                await reader.close()

    await asyncio.wait_for(consume(), 10)
    assert [m.data for m in got] == [0, 1, 2]
    assert not reader.connected
    with pytest.raises(ConnectionClosedError):
        await reader.ping()


async def test_messages_raises_when_the_server_goes_away() -> None:
    gw = Gateway(make_settings(), broker=MemoryBroker())
    await gw.start()
    client = await Client.connect(gw.ws_url, follow_reconnect=False)
    try:
        await gw.stop()
        with pytest.raises(ConnectionClosedError) as info:
            async for _ in client.messages():
                pass
        assert info.value.code == 1001
        with pytest.raises(ConnectionClosedError):
            client.send_raw("{}")
    finally:
        await client.close()


async def test_server_reconnect_frame_is_followed(gateway: Gateway, connect: ClientFactory) -> None:
    client = await connect(record_frames=True)
    writer = await connect()
    await client.subscribe("follow")
    await client.subscribe("other")
    first = await writer.publish("follow", "a")
    assert (await client.next_message()).offset == first
    sessions = [
        listener.session
        for listener in gateway.ws.listeners.values()
        if listener.session is not None and "follow" in listener.session.subscriptions
    ]
    assert len(sessions) == 1
    session = sessions[0]
    # the server asks this client to move; a message lands in between
    session.send(encode_reconnect(30, gateway.hub.offsets(session)))
    await writer.publish("follow", "b")
    await wait_until(lambda: client.reconnects == 1, message="client reconnected")
    assert (await client.next_message()).data == "b"
    await writer.publish("follow", "c")
    assert (await client.next_message()).data == "c"
    await client.ping()
    assert client.pending_messages() == 0  # "b" arrived once, not again from history
    assert client.channels == {"follow", "other"}


async def test_reconnect_resume_for_a_channel_without_offset(
    gateway: Gateway, connect: ClientFactory
) -> None:
    writer = await connect()
    early = await writer.publish("resume", 1)
    await writer.publish("resume", 2)
    client = await connect()
    client.channels.add("resume")  # known channel, no offset yet: use the server's resume
    await client.reconnect(resume={"resume": early})
    assert (await client.next_message()).data == 2
    assert client.offsets["resume"] > early


async def test_a_resume_keeps_its_history_when_live_messages_follow_in_the_same_read() -> None:
    """The server writes a resubscribe's reply and the live messages after it together; the
    client reads them all before `reconnect` resumes. The reply's history must still count
    (it was dropped as older than those live messages: a gap in `messages()`), and the
    reply's offset must not move the client's offset back behind them (a duplicate later)."""
    gw = Gateway(make_settings(user_connects_per_min=10_000), broker=MemoryBroker())
    await gw.start()
    reader = await Client.connect(gw.ws_url)
    writer = await Client.connect(gw.ws_url)
    try:
        await _resume_under_load(reader, writer)
    finally:
        await reader.close()
        await writer.close()
        await gw.stop()


async def _resume_under_load(reader: Client, writer: Client) -> None:
    await reader.subscribe("resume-race")
    sent: list[str] = []
    stop = asyncio.Event()

    async def publish_flat_out() -> None:
        n = 0
        while not stop.is_set():
            sent.append(await writer.publish("resume-race", n))
            n += 1

    publishing = [asyncio.create_task(publish_flat_out()) for _ in range(4)]
    try:
        for _ in range(25):
            await wait_until(lambda: len(sent) >= 10, message="publishes")
            await reader.reconnect()
    finally:
        stop.set()
        await asyncio.gather(*publishing)
    last = await writer.publish("resume-race", "end")
    got: list[str] = []
    while not got or got[-1] != last:
        got.append((await reader.next_message()).offset)
    assert got == sorted({*sent, last}, key=parse_offset)


async def test_a_value_that_is_no_json_is_refused_before_sending(connect: ClientFactory) -> None:
    client = await connect()
    for value in (float("inf"), [float("nan")]):
        with pytest.raises(ValueError, match="JSON"):
            await client.publish("no-json", value)
    assert await client.publish("no-json", 1.5)


async def test_a_cancelled_connect_leaves_no_connection_behind() -> None:
    """picows finishes a shielded handshake after a cancel: the client hangs up itself.

    Cancels land 0..24 loop passes into connect (before, during and after the handshake);
    on the old client a cancel during the handshake left the connection open on the server.
    """
    gateway = Gateway(make_settings(user_connects_per_min=1000), broker=MemoryBroker())
    await gateway.start()
    try:
        await cancel_connects(gateway)
    finally:
        await gateway.stop()


async def cancel_connects(gateway: Gateway) -> None:
    for passes in range(25):
        task = asyncio.create_task(Client.connect(gateway.ws_url))
        for _ in range(passes):
            await asyncio.sleep(0)  # one loop pass: where the cancel lands, not a wait
        task.cancel()
        try:
            client = await task
        except asyncio.CancelledError:
            continue
        await client.close()  # the connect won the race: an ordinary client
    await wait_until(lambda: gateway.connections == 0, timeout_s=5, message="no connection left")
