"""Fixtures of the gateway tests: an in-process gateway and real clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from wsfleet_gateway.app import Gateway
from wsfleet_gateway.backends.memory import MemoryBroker
from wsfleet_gateway.backends.redis.broker import RedisBroker

from tests.gateway.helpers import Pod, PodFactory, make_settings
from wsfleet.client import Client
from wsfleet.services import RedisServer


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    """A started in-process gateway (MemoryBroker) on free ports."""
    gw = Gateway(make_settings(), broker=MemoryBroker())
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


ClientFactory = Callable[..., Awaitable[Client]]


@pytest.fixture
async def connect(gateway: Gateway) -> AsyncIterator[ClientFactory]:
    """`await connect()` → a `Client` on `gateway`; all closed at teardown."""
    clients: list[Client] = []

    async def factory(**kwargs: object) -> Client:
        client = await Client.connect(gateway.ws_url, **kwargs)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    """Append the `Client`s a test opens; all closed at teardown."""
    opened: list[Client] = []
    yield opened
    for client in opened:
        await client.close()


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def redis_gateways(redis_server: RedisServer) -> AsyncIterator[GatewayFactory]:
    """`await redis_gateways(**settings)` → a started in-process gateway on the test's
    Redis (a channel left is unsubscribed at once: ``linger_s`` 0); all stopped after."""
    started: list[Gateway] = []

    async def factory(**overrides: Any) -> Gateway:
        values: dict[str, Any] = {
            "redis_url": redis_server.url,
            "linger_s": 0.0,
            "node_name": f"gw-{len(started)}",
            **overrides,
        }
        gateway = Gateway(make_settings(**values))
        await gateway.start()
        started.append(gateway)
        return gateway

    yield factory
    for gateway in started:
        await gateway.stop()


@pytest.fixture
async def make_pod() -> AsyncIterator[PodFactory]:
    """`RedisBroker` pods (started unless ``start=False``), closed after the test."""
    pods: list[Pod] = []

    async def factory(url: str, *, start: bool = True, **kwargs: Any) -> Pod:
        kwargs.setdefault("op_timeout_s", 2.0)
        pod = Pod(RedisBroker(url, **kwargs))
        pods.append(pod)
        if start:
            await pod.broker.start(pod.on_delivery)
        return pod

    yield factory
    for pod in pods:
        await pod.broker.close()
