"""Issue 17 §2 and §3 on a live gateway with Redis: one client's bad request is refused alone
(`bad_request`), never failing the other requests pipelined with it, and numbers and
offsets that are no JSON or no offset are refused on input, on the WebSocket and the
admin API alike."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from wsfleet_gateway.app import Gateway
from wsfleet_gateway.backends.memory import MemoryBroker
from wsfleet_gateway.broker import BadRequestError, Delivery, encode_data, is_text

from tests.gateway.helpers import API_KEY, make_settings
from tests.support.waiting import wait_until
from wsfleet.client import Client, ServerError
from wsfleet.services import RedisServer

AUTH = {"Authorization": f"Bearer {API_KEY}"}
WAIT_S = 20.0
CLIENTS = 15
LONE_SURROGATE = b'{"id": 1, "op": "publish", "channel": "iso", "data": "\\ud800"}'


@pytest.fixture
async def redis_gateway(shared_redis: RedisServer) -> AsyncIterator[Gateway]:
    settings = make_settings(
        redis_url=shared_redis.url, redis_timeout_s=0.5, user_connects_per_min=100_000
    )
    gw = Gateway(settings)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


@pytest.fixture
async def clients(redis_gateway: Gateway) -> AsyncIterator[list[Client]]:
    opened = [
        await Client.connect(redis_gateway.ws_url, timeout_s=WAIT_S, record_frames=True)
        for _ in range(CLIENTS)
    ]
    yield opened
    for client in opened:
        await client.close()


async def reply_to(client: Client, rid: int) -> dict[str, Any]:
    """The frame answering request `rid` (sent raw)."""

    def found() -> dict[str, Any] | None:
        assert client.frame_log is not None
        return next((f for f in client.frame_log if f.get("id") == rid), None)

    return await wait_until(found, WAIT_S, interval_s=0.005, message=f"the reply to {rid}")


async def test_a_lone_surrogate_publish_fails_alone(
    redis_gateway: Gateway, clients: list[Client]
) -> None:
    """The bad publish and 14 good ones reach the gateway in one loop pass, so the good ones
    are pipelined to Redis in one batch: each good one is stored and acknowledged."""
    bad, good = clients[0], clients[1:]
    subscriber = await Client.connect(redis_gateway.ws_url, timeout_s=WAIT_S)
    try:
        await subscriber.subscribe("iso")
        for round_ in range(3):
            rid = 100 + round_
            bad.send_raw(LONE_SURROGATE.replace(b'"id": 1', b'"id": %d' % rid))
            for i, client in enumerate(good):
                client.send_raw(
                    json.dumps({"id": rid, "op": "publish", "channel": "iso", "data": i})
                )
            assert (await reply_to(bad, rid))["code"] == "bad_request"
            replies = [await reply_to(client, rid) for client in good]
            assert [r["type"] for r in replies] == ["published"] * len(good), replies
        history = await subscriber.subscribe("iso", since="0-0")
        assert len(history.history) == 3 * len(good)
        assert "\ud800" not in json.dumps([m.data for m in history.history])
        assert await bad.ping() >= 0  # the bad client's later requests are served at once
        assert await bad.publish("iso", "fine") != ""
    finally:
        await subscriber.close()


@pytest.mark.parametrize(
    "since",
    [
        "18446744073709551616-0",
        "0-18446744073709551616",
        "99999999999999999999999-0",
        "\u00b2-0",  # a digit to str.isdigit, not to int()
        "\u0661-0",  # an Arabic-Indic digit: int() takes it, Redis does not
    ],
)
async def test_an_offset_beyond_redis_ids_is_a_bad_request(
    redis_gateway: Gateway, clients: list[Client], since: str
) -> None:
    client = clients[0]
    for op in ({"op": "subscribe", "channel": "iso"}, {"op": "switch", "from": "x", "to": "y"}):
        with pytest.raises(ServerError) as refused:
            await client._request({**op, "since": since})
        assert refused.value.code == "bad_request"
        assert "offset" in refused.value.message
    assert await client.ping() >= 0


@pytest.mark.parametrize("number", [b"1e999", b"-1e999", b"[1, 2e400]", b'{"x": -9e999}'])
async def test_a_non_finite_number_is_refused_on_the_websocket(
    redis_gateway: Gateway, clients: list[Client], number: bytes
) -> None:
    client = clients[0]
    client.send_raw(b'{"id": 7, "op": "publish", "channel": "iso-inf", "data": ' + number + b"}")
    reply = await reply_to(client, 7)
    assert reply["code"] == "bad_request", reply
    assert "finite" in reply["message"]
    subscriber = await Client.connect(redis_gateway.ws_url, timeout_s=WAIT_S)
    try:
        assert (await subscriber.subscribe("iso-inf", since="0-0")).history == []
    finally:
        await subscriber.close()


async def _admin(gw: Gateway, method: str, path: str, body: bytes) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, gw.admin_url + path, headers=AUTH, data=body) as response,
    ):
        return response.status, await response.json()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/publish", b'{"channel": "iso-admin", "data": 1e999}'),
        ("POST", "/api/publish", b'{"channel": "iso-admin", "data": [NaN]}'),
        ("POST", "/api/publish", b'{"channel": "iso-admin", "data": "\\udc00"}'),
        ("POST", "/api/publish", b'{"channel": "iso-admin", "data": "\xed\xa0\x80"}'),
        ("POST", "/api/publish", b'{"channel": "iso-admin", "data": ' + b"[" * 60_000 + b"}"),
        ("PUT", "/api/channels/iso-admin/meta", b'{"capacity": Infinity}'),
        ("PUT", "/api/channels/iso-admin/meta", b'{"capacity": 1e999}'),
        ("PUT", "/api/channels/iso-admin/meta", b'{"name": "\\ud83d"}'),
    ],
)
async def test_the_admin_api_refuses_what_is_no_json(
    redis_gateway: Gateway, method: str, path: str, body: bytes
) -> None:
    status, reply = await _admin(redis_gateway, method, path, body)
    assert (status, reply["error"]) == (400, "bad_request"), reply
    subscriber = await Client.connect(redis_gateway.ws_url, timeout_s=WAIT_S)
    try:
        joined = await subscriber.subscribe("iso-admin", since="0-0")
        assert (joined.history, joined.meta) == ([], {})
    finally:
        await subscriber.close()


class RefusingStore(MemoryBroker):
    """A store that refuses a publish on its own (the Redis broker's lane does for an
    argument with no UTF-8 form, should anything ever get past the protocol)."""

    async def publish(self, channel: str, data_json: str) -> Delivery:
        if channel == "refused":
            raise BadRequestError("refused by the store")
        return await super().publish(channel, data_json)


async def test_a_request_the_store_refuses_alone_is_a_bad_request() -> None:
    gw = Gateway(make_settings(), broker=RefusingStore())
    await gw.start()
    client = await Client.connect(gw.ws_url)
    try:
        with pytest.raises(ServerError) as refused:
            await client.publish("refused", 1)
        assert (refused.value.code, refused.value.message) == (
            "bad_request",
            "refused by the store",
        )
        assert await client.publish("fine", 1)
    finally:
        await client.close()
        await gw.stop()


def test_text_and_data_checks() -> None:
    assert is_text("plain")
    assert is_text("café ☕ \U0001f600")
    assert not is_text("caf\udce9")
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(BadRequestError, match="nested too deeply"):
        encode_data(deep)
    with pytest.raises(BadRequestError, match="the metadata holds a number that is not finite"):
        encode_data({"x": float("nan")}, "the metadata")
    assert encode_data({"x": "é"}) == '{"x":"é"}'
