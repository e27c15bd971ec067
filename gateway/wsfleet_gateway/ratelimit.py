"""Rate limits counted in Redis so they hold across pods (memory when Redis is out).

A sliding-window counter: the count of the current fixed window plus the
previous window's count weighted by how much of it still overlaps the
sliding window (rounded up, so a burst across a window boundary is not
under-counted). `decide` is the pure rule; `MemoryCounter` and the Redis
Lua script (`RATE_LUA`) both apply it. Keys: ``wsf:rl:{<name>}:<window>``
(hash tag: both windows of a name in one cluster slot).

`RateLimiter.hit` counts one event; with ``count_rejected=False`` only allowed
events count (a connection flood does not lock a user out longer than the
window), with True every attempt counts (failed authentications). When Redis
fails or the breaker is open, the pod's `MemoryCounter` decides alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from wsfleet_gateway.breaker import CircuitBreaker
from wsfleet_gateway.redis_pool import RedisBusyError, RedisGate, is_redis_failure

KEY_PREFIX: Final = "wsf:rl:"

# KEYS[1] current window, KEYS[2] previous window; ARGV: increment, limit,
# overlap of the previous window in 1/1000, window ms, count rejected (0/1)
RATE_LUA: Final = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
local inc = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local weight = tonumber(ARGV[3])
local estimate = math.ceil(prev * weight / 1000) + cur
local allowed = 0
if estimate + inc <= limit then allowed = 1 end
if inc > 0 and (allowed == 1 or ARGV[5] == '1') then
  cur = redis.call('INCRBY', KEYS[1], inc)
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) * 2)
  estimate = math.ceil(prev * weight / 1000) + cur
else
  estimate = estimate + inc
end
return {allowed, estimate}
"""


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    count: int
    """The sliding-window count including this event (when it counted)."""
    limit: int
    source: str
    """``redis`` or ``memory``."""


def window_position(now_s: float, window_s: float) -> tuple[int, int]:
    """``(window index, overlap weight of the previous window in 1/1000)``."""
    index, offset = divmod(now_s, window_s)
    weight = int(1000 * (1.0 - offset / window_s))
    return int(index), max(0, min(1000, weight))


def decide(prev: int, cur: int, weight: int, inc: int, limit: int) -> tuple[bool, int]:
    """The sliding-window rule: ``(allowed, estimate before counting this event)``."""
    estimate = -(-prev * weight // 1000) + cur  # rounded up: never under-counts
    return estimate + inc <= limit, estimate


class MemoryCounter:
    """The same sliding-window counters in process memory (one pod's view)."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._counts: dict[tuple[str, int], int] = {}
        self.max_keys = max_keys

    def hit(
        self, name: str, limit: int, window_s: float, now_s: float, inc: int, count_rejected: bool
    ) -> RateDecision:
        index, weight = window_position(now_s, window_s)
        cur = self._counts.get((name, index), 0)
        prev = self._counts.get((name, index - 1), 0)
        allowed, estimate = decide(prev, cur, weight, inc, limit)
        if inc and (allowed or count_rejected):
            if len(self._counts) >= self.max_keys:
                self._purge(index)
            self._counts[(name, index)] = cur + inc
        return RateDecision(allowed, estimate + inc, limit, "memory")

    def _purge(self, index: int) -> None:
        for key in [k for k in self._counts if k[1] < index - 1]:
            del self._counts[key]
        while len(self._counts) >= self.max_keys:  # still full: drop the oldest entries
            del self._counts[next(iter(self._counts))]


class RateLimiter:
    """Sliding-window limits in Redis, with the memory counter as the fallback."""

    def __init__(
        self,
        redis: aioredis.Redis | None,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.time,
        gate: RedisGate | None = None,
    ) -> None:
        self._redis = redis
        self.gate = gate if gate is not None else RedisGate(32, 5.0)
        """Bounds the Redis commands in flight; a burst queues (not counted as failures)."""
        self._script: Any = redis.register_script(RATE_LUA) if redis is not None else None
        self.breaker = breaker
        self.memory = MemoryCounter()
        self._clock = clock

    async def hit(
        self,
        name: str,
        limit: int,
        window_s: float,
        *,
        inc: int = 1,
        count_rejected: bool = False,
    ) -> RateDecision:
        """Count `inc` events of `name` (``inc=0`` only looks) and decide."""
        now = self._clock()
        local = self.memory.hit(name, limit, window_s, now, inc, count_rejected)
        breaker = self.breaker
        if self._script is None or (breaker is not None and not breaker.allow()):
            return local
        index, weight = window_position(now, window_s)
        keys = [f"{KEY_PREFIX}{{{name}}}:{index}", f"{KEY_PREFIX}{{{name}}}:{index - 1}"]
        args = [inc, limit, weight, int(window_s * 1000), 1 if count_rejected else 0]
        try:
            async with self.gate.slot():
                allowed, count = await self._script(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError, RedisBusyError) as exc:
            if breaker is not None and is_redis_failure(exc):
                breaker.record_failure()
            return local
        if breaker is not None:
            breaker.record_success()
        return RateDecision(bool(allowed), int(count), limit, "redis")
