"""Channel popularity in Redis, and pre-warming L1 with the hottest channels.

Every subscribe/switch `touch`es its channel in a local counter; `flush`
(every ``hot_flush_s``) adds the counts to one Redis sorted set
(``wsf:hot``) with a pipeline of ``ZINCRBY`` and keeps its top `MAX_TRACKED`.
A starting pod reads the top of that set and loads those channels into L1
before it reports ready; the admin ``POST /api/prewarm`` loads a given list
(the operator calls it before a forecast peak).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Final

import structlog
from redis.exceptions import RedisError

from wsfleet_gateway.backends.redis.pool import RedisClient, is_redis_failure
from wsfleet_gateway.broker import is_text
from wsfleet_gateway.protection.breaker import CircuitBreaker

log = structlog.get_logger("wsfleet_gateway.cache.prewarm")

HOT_KEY: Final = "wsf:hot"
MAX_TRACKED: Final = 10_000
DECAY_EVERY: Final = 720
"""Flushes between halvings of every score (hourly at the 5 s default)."""


class HotTracker:
    """Counts channel use locally and flushes the counts to Redis."""

    def __init__(self, redis: RedisClient | None, breaker: CircuitBreaker | None = None) -> None:
        self._redis = redis
        self.breaker = breaker
        self.pending: Counter[str] = Counter()
        self._flushes = 0
        self._stopping: asyncio.Event | None = None

    def touch(self, channel: str) -> None:
        self.pending[channel] += 1

    async def flush(self) -> int:
        """Send pending counts to Redis; returns how many channels were flushed."""
        if self._redis is None or not self.pending:
            return 0
        if self.breaker is not None and not self.breaker.allow():
            return 0
        batch, self.pending = self.pending, Counter()
        for name in [name for name in batch if not is_text(name)]:
            del batch[name]  # no UTF-8 form: it would fail the whole pipeline
        self._flushes += 1
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for channel, count in batch.items():
                    pipe.zincrby(HOT_KEY, count, channel)
                pipe.zremrangebyrank(HOT_KEY, 0, -(MAX_TRACKED + 1))
                await pipe.execute()
            if self._flushes % DECAY_EVERY == 0:
                await self._redis.eval(_DECAY_LUA, 1, HOT_KEY)
        except (RedisError, OSError, TimeoutError) as exc:
            self.pending.update(batch)  # keep the counts for the next flush
            if self.breaker is not None and is_redis_failure(exc):
                self.breaker.record_failure()
            return 0
        if self.breaker is not None:
            self.breaker.record_success()
        return len(batch)

    async def top(self, n: int) -> list[str]:
        """The `n` hottest channels fleet-wide ([] without Redis or on errors)."""
        if self._redis is None or n <= 0:
            return []
        try:
            rows = await self._redis.zrevrange(HOT_KEY, 0, n - 1)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("prewarm_top_failed", error=type(exc).__name__)
            return []
        return [r.decode() if isinstance(r, bytes) else str(r) for r in rows]

    async def run(self, interval_s: float) -> None:
        """Flush every `interval_s` until `stop` (then one last flush) or cancelled.

        `stop` lets a flush in progress finish instead of cancelling it: a pipeline
        cancelled mid-command leaves its connection's return to the pool to a
        shielded task, which shutdown would then have to wait for.
        """
        stopping = self._stopping = asyncio.Event()
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await stopping.wait()
            await self.flush()

    def stop(self) -> None:
        """End `run` after its current (and one last) flush."""
        if self._stopping is not None:
            self._stopping.set()


_DECAY_LUA: Final = """
local rows = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #rows, 2 do
  local score = tonumber(rows[i + 1]) / 2
  if score < 1 then redis.call('ZREM', KEYS[1], rows[i])
  else redis.call('ZADD', KEYS[1], score, rows[i]) end
end
return #rows / 2
"""
