"""The admin HTTP API: publish and meta (API key), health, readiness, metrics."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from wsfleet_gateway.app import Gateway
from wsfleet_gateway.backends.memory import MemoryBroker
from wsfleet_gateway.broker import BrokerUnavailableError, Delivery
from wsfleet_gateway.metrics import METRIC_NAMES

from tests.gateway.conftest import ClientFactory
from tests.gateway.helpers import API_KEY, make_settings

AUTH = {"Authorization": f"Bearer {API_KEY}"}


async def _call(
    gw: Gateway, method: str, path: str, headers: dict[str, str] | None = None, **kw: Any
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, gw.admin_url + path, headers=headers, **kw) as response,
    ):
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


async def test_publish_and_meta_reach_clients(gateway: Gateway, connect: ClientFactory) -> None:
    client = await connect()
    await client.subscribe("wedding-9")
    status, body = await _call(
        gateway, "POST", "/api/publish", AUTH, json={"channel": "wedding-9", "data": {"a": 1}}
    )
    assert status == 200
    message = await client.next_message()
    assert (message.channel, message.offset, message.data) == (
        "wedding-9",
        body["offset"],
        {"a": 1},
    )
    status, body = await _call(
        gateway, "PUT", "/api/channels/wedding-9/meta", AUTH, json={"couple": "A & B"}
    )
    assert (status, body) == (200, {"channel": "wedding-9", "meta": {"couple": "A & B"}})
    other = await connect()
    reply = await other.subscribe("wedding-9")
    assert reply.meta == {"couple": "A & B"}
    assert [m.data for m in reply.history] == [{"a": 1}]


@pytest.mark.parametrize(
    "headers",
    [None, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}, {"X-Api-Key": API_KEY}],
)
async def test_writes_need_the_api_key(gateway: Gateway, headers: dict[str, str] | None) -> None:
    status, body = await _call(
        gateway, "POST", "/api/publish", headers, json={"channel": "a", "data": 1}
    )
    assert status == 401
    assert body["error"] == "unauthorized"
    status, _ = await _call(gateway, "PUT", "/api/channels/a/meta", headers, json={})
    assert status == 401


async def test_no_api_key_configured_refuses_every_write() -> None:
    gw = Gateway(make_settings(api_key=None), broker=MemoryBroker())
    await gw.start()
    try:
        for headers in (None, {"Authorization": "Bearer "}, {"Authorization": "Bearer None"}):
            status, _ = await _call(gw, "POST", "/api/publish", headers, json={"channel": "a"})
            assert status == 401
    finally:
        await gw.stop()


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("POST", "/api/publish", {"data": b"{nope"}, 400, "bad_request"),
        ("POST", "/api/publish", {"json": {"channel": "a"}}, 400, "bad_request"),
        ("POST", "/api/publish", {"json": {"channel": "a b", "data": 1}}, 400, "bad_request"),
        ("POST", "/api/publish", {"json": [1]}, 400, "bad_request"),
        ("POST", "/api/publish", {"json": {"channel": "a", "data": "x" * 70000}}, 413, "too_large"),
        ("PUT", "/api/channels/a/meta", {"json": [1, 2]}, 400, "bad_request"),
        ("PUT", "/api/channels/bad%20name/meta", {"json": {}}, 400, "bad_request"),
    ],
)
async def test_bad_admin_requests(
    gateway: Gateway, method: str, path: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    got_status, body = await _call(gateway, method, path, AUTH, **kwargs)
    assert got_status == status
    assert body["error"] == code


async def test_server_only_channel_publish_over_http(
    gateway: Gateway, connect: ClientFactory
) -> None:
    client = await connect()
    await client.subscribe("$system")
    status, _ = await _call(
        gateway, "POST", "/api/publish", AUTH, json={"channel": "$system", "data": "hi"}
    )
    assert status == 200
    assert (await client.next_message()).data == "hi"


class _DownBroker(MemoryBroker):
    def __init__(self) -> None:
        super().__init__()
        self.down = False

    @property
    def available(self) -> bool:
        return not self.down

    async def publish(self, channel: str, data_json: str) -> Delivery:
        if self.down:
            raise BrokerUnavailableError("redis down")
        return await super().publish(channel, data_json)

    async def set_meta(self, channel: str, meta: dict[str, Any]) -> None:
        if self.down:
            raise BrokerUnavailableError("redis down")
        await super().set_meta(channel, meta)


async def test_health_readiness_and_unavailable() -> None:
    broker = _DownBroker()
    gw = Gateway(make_settings(), broker=broker)
    await gw.start()
    try:
        status, body = await _call(gw, "GET", "/healthz")
        assert (status, body["status"], body["node"]) == (200, "ok", "test-node")
        status, body = await _call(gw, "GET", "/readyz")
        assert (status, body["ready"]) == (200, True)
        broker.down = True
        status, body = await _call(gw, "GET", "/readyz")
        assert status == 503
        assert {k: body["checks"][k] for k in ("broker", "accepting")} == {
            "broker": False,
            "accepting": True,
        }
        status, body = await _call(
            gw, "POST", "/api/publish", AUTH, json={"channel": "a", "data": 1}
        )
        assert (status, body["error"]) == (503, "unavailable")
        status, body = await _call(gw, "PUT", "/api/channels/a/meta", AUTH, json={})
        assert (status, body["error"]) == (503, "unavailable")
        broker.down = False
        status, _ = await _call(gw, "POST", "/api/publish", AUTH, json={"channel": "a", "data": 1})
        assert status == 200
        gw.draining = True
        status, body = await _call(gw, "GET", "/readyz")
        assert status == 503
        assert body["checks"]["accepting"] is False
    finally:
        await gw.stop()


async def test_metrics_contract(gateway: Gateway, connect: ClientFactory) -> None:
    a, b = await connect(), await connect()
    await a.subscribe("m1")
    await b.subscribe("m1")
    await a.switch("m1", "m2")
    await b.publish("m1", 1)
    await b.next_message()
    await _call(gateway, "POST", "/api/publish", None, json={})  # one 401 rejection
    status, text = await _call(gateway, "GET", "/metrics")
    assert status == 200
    samples = _samples(text)
    for name in METRIC_NAMES:
        assert f"# TYPE {name.removesuffix('_total')}" in text, name
    assert samples["wsfleet_connections"] == 2
    assert samples["wsfleet_messages_total"] == 1
    assert samples["wsfleet_deliveries_total"] == 1
    assert samples["wsfleet_subscribe_seconds_count"] == 2
    assert samples["wsfleet_channel_switch_seconds_count"] == 1
    assert samples["wsfleet_message_delivery_seconds_count"] == 1
    assert samples['wsfleet_rejections_total{reason="unauthorized"}'] == 1
    assert samples["wsfleet_drain_in_progress"] == 0
    assert 'wsfleet_subscribe_seconds_bucket{le="0.0001"}' in samples  # sub-ms buckets
    # a second gateway in the same process has its own registry
    other = Gateway(make_settings(), broker=MemoryBroker())
    assert other.metrics.registry is not gateway.metrics.registry


def _samples(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out
