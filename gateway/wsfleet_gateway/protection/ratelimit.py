"""Rate limits counted in Redis so they hold across pods (memory when Redis is out).

A sliding-window counter: the count of the current fixed window plus the
previous window's count weighted by how much of it still overlaps the
sliding window (rounded up, so a burst across a window boundary is not
under-counted). `decide` is the pure rule; `MemoryCounter` and the Redis
Lua script (`RATE_LUA`) both apply it. Keys: ``wsf:rl:{<name>}:<window>``
(hash tag: both windows of a name in one cluster slot).

A name with no UTF-8 form (a lone surrogate) is never sent to Redis: the memory
counter decides for it alone, so it cannot fail a batch of other connects.

`RateLimiter.hit` counts one event; with ``count_rejected=False`` only allowed
events count (a connection flood does not lock a user out longer than the
window), with True every attempt counts (failed authentications). When Redis
fails or the breaker is open, the pod's `MemoryCounter` decides alone.

`RateLimiter.connect` is the accepted-token path of admission in one Redis call:
it *reads* the client IP's failed-auth counter (refused above its limit, the user
not counted) and counts the user's new connection. Concurrent connects are
batched: the connects decided in one event-loop pass share one ``EVALSHA`` of
`CONNECT_LUA` (atomic, items applied in arrival order), at most `MAX_BATCHES`
batches in flight, so under a burst batches grow instead of round trips.
A batch touches keys of several names, so it needs one Redis server: on a Redis
Cluster (keys of different hash tags live on different shards) each connect runs
`RATE_LUA` twice instead, the address's read and then the user's count, each on the
shard of its name (two round trips per connect, several connects in flight at once).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from wsfleet_gateway.backends.redis.pool import (
    RedisBusyError,
    RedisClient,
    RedisGate,
    is_redis_failure,
)
from wsfleet_gateway.broker import is_text
from wsfleet_gateway.protection.breaker import CircuitBreaker

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

# One connect per 4 keys and 5 args: KEYS ip current, ip previous, user current, user
# previous window; ARGV ip limit, ip overlap (1/1000), user limit, user overlap, user
# window ms. Per connect 4 numbers: ip allowed, ip estimate, user allowed, user count
# (user 0, 0 when the address is refused: the user's connection is not counted).
CONNECT_LUA: Final = """
local out = {}
for i = 0, #KEYS / 4 - 1 do
  local k, a = 4 * i, 5 * i
  local ip = math.ceil(tonumber(redis.call('GET', KEYS[k + 2]) or '0')
    * tonumber(ARGV[a + 2]) / 1000) + tonumber(redis.call('GET', KEYS[k + 1]) or '0')
  if ip > tonumber(ARGV[a + 1]) then
    out[#out + 1] = 0; out[#out + 1] = ip; out[#out + 1] = 0; out[#out + 1] = 0
  else
    local cur = tonumber(redis.call('GET', KEYS[k + 3]) or '0')
    local prev = math.ceil(tonumber(redis.call('GET', KEYS[k + 4]) or '0')
      * tonumber(ARGV[a + 4]) / 1000)
    local allowed = 0
    if prev + cur + 1 <= tonumber(ARGV[a + 3]) then
      allowed = 1
      cur = redis.call('INCRBY', KEYS[k + 3], 1)
      redis.call('PEXPIRE', KEYS[k + 3], tonumber(ARGV[a + 5]) * 2)
    else
      cur = cur + 1
    end
    out[#out + 1] = 1; out[#out + 1] = ip; out[#out + 1] = allowed; out[#out + 1] = prev + cur
  end
end
return out
"""
MAX_BATCH: Final = 256
"""Most connects in one `CONNECT_LUA` call."""
MAX_BATCHES: Final = 2
"""`CONNECT_LUA` calls in flight at once; later connects wait and join the next batch."""

_Pending = tuple[
    tuple[str, str, str, str], tuple[int, int, int, int, int], "asyncio.Future[list[int] | None]"
]
"""One waiting connect: its 4 keys, 5 args and the future of its 4 reply numbers."""


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


def window_keys(name: str, index: int) -> list[str]:
    """The Redis keys of `name`'s current and previous windows (one hash tag)."""
    prefix = f"{KEY_PREFIX}{{{name}}}:"
    return [f"{prefix}{index}", f"{prefix}{index - 1}"]


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
        redis: RedisClient | None,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.time,
        gate: RedisGate | None = None,
    ) -> None:
        self._redis = redis
        self.gate = gate if gate is not None else RedisGate(32, 5.0)
        """Bounds the Redis commands in flight; a burst queues (not counted as failures)."""
        self._script: Any = redis.register_script(RATE_LUA) if redis is not None else None
        self._connect_script: Any = (
            redis.register_script(CONNECT_LUA) if redis is not None else None
        )
        self.cluster = isinstance(redis, aioredis.RedisCluster)
        """On a Redis Cluster a connect's two names live on two shards: no batch script."""
        self.breaker = breaker
        self.memory = MemoryCounter()
        self._clock = clock
        self._pending: list[_Pending] = []
        """Connects waiting for the next `CONNECT_LUA` batch."""
        self._batches = 0
        """`CONNECT_LUA` calls in flight."""
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches_total = 0
        """`CONNECT_LUA` calls made (each answers one or more connects)."""

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
        if not is_text(name):
            return local
        index, weight = window_position(now, window_s)
        args = [inc, limit, weight, int(window_s * 1000), 1 if count_rejected else 0]
        reply = await self._guarded(self._script, window_keys(name, index), args)
        if reply is None:
            return local
        allowed, count = reply
        return RateDecision(bool(allowed), int(count), limit, "redis")

    async def _guarded(self, script: Any, keys: list[str], args: list[int]) -> Any:
        """One script call through the gate, told to the breaker; None when it failed."""
        breaker = self.breaker
        try:
            async with self.gate.slot():
                reply = await script(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError, RedisBusyError) as exc:
            if breaker is not None and is_redis_failure(exc):
                breaker.record_failure()
            return None
        if breaker is not None:
            breaker.record_success()
        return reply

    async def connect(
        self, ip_name: str, ip_limit: int, user_name: str, user_limit: int, window_s: float
    ) -> tuple[RateDecision, RateDecision | None]:
        """One accepted-token connect: ``(address decision, user decision)``.

        The address's counter `ip_name` is only read (refused when over `ip_limit`, as
        ``hit(ip_name, ip_limit, window_s, inc=0)``); when it passes, the user's new
        connection is counted as ``hit(user_name, user_limit, window_s)``. The user
        decision is None when the address was refused (nothing counted). One Redis call
        shared with the other connects of the same event-loop pass; the memory counters
        decide when Redis fails or the breaker is open.
        """
        now = self._clock()
        reply: list[int] | None = None
        breaker = self.breaker
        sendable = is_text(ip_name) and is_text(user_name)  # else: never joins a batch
        if (
            self._connect_script is not None
            and sendable
            and (breaker is None or not breaker.is_open)
        ):
            index, weight = window_position(now, window_s)
            ip_keys, user_keys = window_keys(ip_name, index), window_keys(user_name, index)
            future = self._enqueue(
                (ip_keys[0], ip_keys[1], user_keys[0], user_keys[1]),
                (ip_limit, weight, user_limit, weight, int(window_s * 1000)),
            )
            reply = await future
        memory = self.memory
        if reply is None:
            local_ip = memory.hit(ip_name, ip_limit, window_s, now, 0, False)
            if not local_ip.allowed:
                return local_ip, None
            return local_ip, memory.hit(user_name, user_limit, window_s, now, 1, False)
        ip = RateDecision(bool(reply[0]), reply[1], ip_limit, "redis")
        if not ip.allowed:
            return ip, None
        memory.hit(user_name, user_limit, window_s, now, 1, False)  # the pod's own view
        return ip, RateDecision(bool(reply[2]), reply[3], user_limit, "redis")

    def _enqueue(
        self, keys: tuple[str, str, str, str], args: tuple[int, int, int, int, int]
    ) -> asyncio.Future[list[int] | None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[int] | None] = loop.create_future()
        self._pending.append((keys, args, future))
        if not self._flush_scheduled and self._batches < MAX_BATCHES:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        """Send the waiting connects (at most `MAX_BATCHES` calls in flight)."""
        self._flush_scheduled = False
        loop = asyncio.get_running_loop()
        while self._pending and self._batches < MAX_BATCHES:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            self._batches += 1
            task = loop.create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        replies: list[list[int] | None] | None = None
        try:
            replies = await self._call_batch(batch)
        finally:
            self._batches -= 1
            for i, (_keys, _args, future) in enumerate(batch):
                if not future.done():  # done: a cancelled waiter (its connection went away)
                    future.set_result(replies[i] if replies is not None else None)
            if self._pending and not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)

    async def _call_batch(self, batch: list[_Pending]) -> list[list[int] | None] | None:
        """One `CONNECT_LUA` call for `batch`; None: the memory counters decide."""
        breaker = self.breaker
        if breaker is not None and not breaker.allow():
            return None
        if self.cluster:
            self.batches_total += 1
            return list(await asyncio.gather(*(self._connect_one(k, a) for k, a, _ in batch)))
        keys = [key for item in batch for key in item[0]]
        args = [arg for item in batch for arg in item[1]]
        self.batches_total += 1
        flat = await self._guarded(self._connect_script, keys, args)
        if flat is None:
            return None
        values = [int(v) for v in flat]
        return [values[i : i + 4] for i in range(0, len(values), 4)]

    async def _connect_one(
        self, keys: tuple[str, str, str, str], args: tuple[int, int, int, int, int]
    ) -> list[int] | None:
        """`CONNECT_LUA`'s rule for one connect on a cluster: the address's counter read
        (`RATE_LUA`, nothing counted), then, when it passes, the user's connection
        counted, each on the shard of its own name. None: the memory counters decide."""
        ip_limit, ip_weight, user_limit, user_weight, window_ms = args
        ip = await self._guarded(
            self._script, [keys[0], keys[1]], [0, ip_limit, ip_weight, window_ms, 0]
        )
        if ip is None:
            return None
        if not int(ip[0]):
            return [0, int(ip[1]), 0, 0]
        user = await self._guarded(
            self._script, [keys[2], keys[3]], [1, user_limit, user_weight, window_ms, 0]
        )
        if user is None:
            return None
        return [1, int(ip[1]), int(user[0]), int(user[1])]
