"""A real in-process gateway (real Redis) for the cache pre-warm tests, with channel
metadata in L2 and popularity counts as gateways leave them."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from wsfleet_gateway import app
from wsfleet_gateway import settings as gw_settings
from wsfleet_operator.prewarm import HOT_KEY

API_KEY = "operator-prewarm-test-key"
JWT = "a-jwt-secret-for-the-prewarm-test-32b+"
# 17:30 UTC on a June day: the priors' evening peak (18:00-20:00) is inside 3 h
NOW = datetime.datetime(2026, 6, 10, 17, 30, tzinfo=datetime.UTC).timestamp()
CHANNELS = {"venue-0": 50, "venue-1": 40, "venue-2": 30, "venue-3": 2, "venue-4": 1}


@pytest.fixture
async def gateway(redis_server: Any) -> AsyncIterator[Any]:
    settings = gw_settings.GatewaySettings(
        port=0,
        admin_port=0,
        node_name="prewarm-gw",
        api_key=API_KEY,
        jwt_secret=JWT,
        redis_url=redis_server.url,
        prewarm_top=0,  # nothing warmed at start: only the operator's call fills L1
    )
    gw = app.Gateway(settings)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


async def seed(gw: Any, url: str) -> None:
    """Channel metadata in L2 (not L1) and popularity counts, as gateways leave them."""
    for channel in CHANNELS:
        await gw.store.set_meta(channel, {"name": channel})
    client = aioredis.Redis.from_url(url)
    try:
        await client.zadd(HOT_KEY, dict(CHANNELS))
    finally:
        await client.aclose()
    assert gw.protection.cache.l1.keys("meta") == []
