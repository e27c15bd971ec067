"""Redis commands counted from the server's side, for benches that report them."""

from __future__ import annotations

import asyncio
import contextlib

import redis.asyncio as aioredis


async def redis_commands(redis_url: str) -> dict[str, int]:
    """Calls so far by command (``INFO commandstats``; INFO itself left out)."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return {
        name.removeprefix("cmdstat_"): int(v["calls"])
        for name, v in stats.items()
        if "info" not in name
    }


class SentCommands:
    """Commands clients send to Redis, by name, from ``MONITOR`` (what runs inside a
    script is left out: ``INFO commandstats`` counts those too, and the script once)."""

    def __init__(self, redis_url: str) -> None:
        self.client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        self.counts: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    async def _listen(self) -> None:
        async with self.client.monitor() as monitor:
            self._listening.set()
            async for command in monitor.listen():
                if command["client_type"] != "lua":
                    name = command["command"].split(" ", 1)[0].lower()
                    self.counts[name] = self.counts.get(name, 0) + 1

    async def __aenter__(self) -> SentCommands:
        self._task = asyncio.create_task(self._listen())
        await asyncio.wait_for(self._listening.wait(), 10.0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.client.aclose()
