"""The shared test services really start and serve."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
import redis.asyncio as aioredis

from wsfleet.services import MissingBinaryError, PrometheusServer, RedisServer, find_binary


async def test_redis_server_serves(redis_server: RedisServer) -> None:
    client = aioredis.from_url(redis_server.url)
    try:
        await client.set("k", "v")
        assert await client.get("k") == b"v"
    finally:
        await client.aclose()


def test_prometheus_server_reads_targets(prometheus_server: PrometheusServer) -> None:
    prometheus_server.set_targets(["127.0.0.1:1"])
    with urllib.request.urlopen(f"{prometheus_server.url}/api/v1/status/config") as resp:
        body = json.load(resp)
    assert "file_sd_configs" in body["data"]["yaml"]


def test_missing_binary_is_actionable() -> None:
    with pytest.raises(MissingBinaryError, match="apt-get install"):
        find_binary("wsfleet-no-such-binary", "nothing")


async def test_leak_check_sees_tasks() -> None:
    task = asyncio.create_task(asyncio.sleep(0))
    await task
    assert task.done()
