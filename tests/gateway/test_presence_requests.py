"""The presence requests of the wire protocol (issue 22): parsed, or refused with
``bad_request`` as every other request is; answered by one gateway without Redis;
refused while presence is off."""

from __future__ import annotations

import aiohttp
import pytest
from wsfleet_gateway.app import Gateway
from wsfleet_gateway.backends.memory import MemoryBroker
from wsfleet_gateway.protocol import Presence, ProtocolError, parse_request

from tests.gateway.helpers import API_KEY, make_settings
from wsfleet.client import Client, ServerError


def test_presence_requests_parse() -> None:
    assert parse_request('{"id": 1, "op": "presence", "channel": "a"}') == Presence(1, "a")
    assert parse_request('{"id": "x", "op": "presence_stats", "channel": "a"}') == Presence(
        "x", "a", stats=True
    )
    for frame, message in [
        ('{"id": 1, "op": "presence"}', "missing field `channel`"),
        ('{"id": 1, "op": "presence_stats", "channel": "a b"}', "`channel` must be"),
        ('{"id": 1, "op": "presence", "channel": 5}', "`channel` must be a string"),
    ]:
        with pytest.raises(ProtocolError) as refused:
            parse_request(frame)
        assert refused.value.code == "bad_request"
        assert refused.value.request_id == 1
        assert message in refused.value.message


async def test_with_presence_off_both_requests_and_the_admin_api_say_so() -> None:
    gw = Gateway(make_settings(presence=False), broker=MemoryBroker())
    await gw.start()
    client = await Client.connect(gw.ws_url)
    try:
        await client.subscribe("wedding-1")
        for ask in (client.presence, client.presence_stats):
            with pytest.raises(ServerError) as refused:
                await ask("wedding-1")
            assert (refused.value.code, refused.value.message) == (
                "bad_request",
                "presence is off on this server",
            )
        assert gw.presence is None
        assert await gw.broker.presence_read("wedding-1") == []
        url = f"{gw.admin_url}/api/channels/wedding-1/presence"
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {API_KEY}"}
            async with http.get(url, headers=headers) as response:
                assert response.status == 409
                assert (await response.json())["error"] == "bad_request"
    finally:
        await client.close()
        await gw.stop()


async def test_presence_on_one_gateway_without_redis() -> None:
    """The embedded broker keeps presence too: the request and the admin API agree."""
    gw = Gateway(make_settings(node_name="solo"), broker=MemoryBroker())
    await gw.start()
    a, b = await Client.connect(gw.ws_url), await Client.connect(gw.ws_url)
    try:
        await a.subscribe("wedding-1")
        await b.subscribe("wedding-1")
        members = await a.presence("wedding-1")
        assert [m.connection_id for m in members] == [
            c.welcome.connection_id for c in (a, b) if c.welcome is not None
        ]
        assert {m.node for m in members} == {"solo"}
        stats = await b.presence_stats("wedding-1")
        assert (stats.connections, stats.users) == (2, 1)  # both anonymous
        url = f"{gw.admin_url}/api/channels/wedding-1/presence"
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {API_KEY}"}
            async with http.get(url, headers=headers) as response:
                body = await response.json()
        assert [m["connection_id"] for m in body["members"]] == [m.connection_id for m in members]
        assert (body["connections"], body["users"]) == (2, 1)
        await b.close()
        assert [m.connection_id for m in await a.presence("wedding-1")] == [
            members[0].connection_id
        ]
    finally:
        await a.close()
        await b.close()
        await gw.stop()
