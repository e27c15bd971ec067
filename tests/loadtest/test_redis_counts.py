"""The benches' Redis command counters, on a real redis-server: what a client sends
(``MONITOR``, script internals left out) and what Redis runs (``INFO commandstats``)."""

from __future__ import annotations

import redis.asyncio as aioredis

from tests.support.waiting import wait_until
from wsfleet.bench.redis_counts import SentCommands, redis_commands
from wsfleet.services import RedisServer

SCRIPT = "redis.call('SET', KEYS[1], '1'); redis.call('GET', KEYS[1]); return 1"


async def test_sent_leaves_out_what_runs_inside_a_script(redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    before = await redis_commands(redis_server.url)
    async with SentCommands(redis_server.url) as sent:
        await client.eval(SCRIPT, 1, "k")
        await client.get("k")
        await client.get("k")
        await wait_until(lambda: sent.counts.get("get") == 2, message="MONITOR lines")
    after = await redis_commands(redis_server.url)
    await client.aclose()
    setup = {"hello", "client", "info"}  # connection handshakes and the counters' own reads
    assert {k: n for k, n in sent.counts.items() if k not in setup} == {"eval": 1, "get": 2}
    ran = {name: n - before.get(name, 0) for name, n in after.items() if n > before.get(name, 0)}
    assert ran["eval"] == 1
    assert ran["get"] == 3  # the script's GET too
    assert ran["set"] == 1
