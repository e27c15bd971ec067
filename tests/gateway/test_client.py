"""The typed client: iteration, closing, reconnect frames, errors."""

from __future__ import annotations

import asyncio

import pytest
from wsfleet_gateway.app import Gateway
from wsfleet_gateway.memory_broker import MemoryBroker
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
