"""Bounded Redis access: one sized client per use, a local queue in front, single-flight reads.

A burst of requests (a thousand clients connecting at once) must not open
hundreds of Redis connections, nor hit the pool's cap and fail: that is local
congestion, not a Redis failure, and must never open the circuit breaker.

- `make_client`: a ``redis.asyncio.Redis`` with bounded timeouts, no retries and
  a pool of at most ``pool_size + POOL_HEADROOM`` connections (the headroom is for
  long-lived pub/sub listeners and background jobs that do not take a gate slot).
- `RedisGate`: at most ``pool_size`` commands in flight; the rest queue (FIFO)
  for up to ``queue_timeout_s``. The op timeout starts once a slot is held, so
  time spent queueing never looks like a slow Redis. A queue wait that runs out
  raises `RedisBusyError` (a `BrokerUnavailableError`: the client gets
  ``unavailable``), which `is_redis_failure` says the breaker must not count.
- `SingleFlight`: concurrent identical reads (the same channel's metadata or
  history) share one Redis round trip.

The message store's own commands (`RedisBroker`: publish, history, pub/sub) do not use
the client: they run on `redis_lane.CommandLane` connections (``resp.py``).
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from typing import Final, Generic, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.connection import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import MaxConnectionsError

from wsfleet_gateway.backends.redis.url import parse_url
from wsfleet_gateway.broker import BrokerUnavailableError

POOL_HEADROOM: Final = 8
"""Pool connections beyond the gate's slots (pub/sub listeners, background flushes)."""

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


class RedisBusyError(BrokerUnavailableError):
    """No Redis connection became free in time: local congestion, not a Redis failure."""


class ShardUnavailableError(BrokerUnavailableError):
    """One node of a Redis Cluster failed: its shard is out (until a replica takes over),
    the other shards serve. Not a failure of Redis as a whole: the breaker, which would
    refuse every channel, does not count it."""


_NOT_COUNTED = (RedisBusyError, MaxConnectionsError, ShardUnavailableError)


def is_redis_failure(exc: BaseException) -> bool:
    """Should the circuit breaker count `exc`? Not for local queueing, a full pool or one
    cluster node."""
    return not isinstance(exc, _NOT_COUNTED) and not isinstance(exc.__cause__, _NOT_COUNTED)


RedisClient = aioredis.Redis | aioredis.RedisCluster
"""What the cache, the rate limiter and the popularity tracker talk to Redis through."""


def make_client(
    url: str, timeout_s: float, pool_size: int, *, cluster: bool = False
) -> RedisClient:
    """A client on a pool of at most ``pool_size + POOL_HEADROOM`` connections (per node,
    a redis-py `RedisCluster` seeded at `url`, with `cluster`)."""
    if cluster:
        return aioredis.RedisCluster(
            **parse_url(url).redis_py_cluster_kwargs(),
            max_connections=pool_size + POOL_HEADROOM,
            decode_responses=True,
            protocol=2,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
    pool = ConnectionPool(
        **parse_url(url).redis_py_kwargs(),  # the same reading of the URL as the broker's
        max_connections=pool_size + POOL_HEADROOM,
        decode_responses=True,
        protocol=2,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
    client: aioredis.Redis = aioredis.Redis.from_pool(pool)  # owns and closes the pool
    return client


class RedisGate:
    """At most `size` Redis commands in flight; the others queue (see the module docstring).

    `acquire`/`release` for the hot path (a free slot is taken with no await
    suspension and no timeout), `slot` as a context manager for the rest.
    """

    def __init__(self, size: int, queue_timeout_s: float) -> None:
        if size < 1 or queue_timeout_s <= 0:
            raise ValueError("size >= 1 and queue_timeout_s > 0 are required")
        self.size = size
        self.queue_timeout_s = queue_timeout_s
        self._free = size
        self._queue: deque[asyncio.Future[None]] = deque()
        self.in_flight = 0
        self.peak_in_flight = 0
        self.waiting = 0
        self.peak_waiting = 0
        self.busy_total = 0
        """Requests that gave up queueing (`RedisBusyError`)."""

    async def acquire(self) -> None:
        """Take a slot: at once when one is free and nobody queues, else queue (FIFO) for
        at most `queue_timeout_s`, then `RedisBusyError`. Pair with `release`."""
        if self._free > 0 and not self._queue:
            self._free -= 1
        else:
            await self._wait_for_slot()
        self.in_flight += 1
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight

    def release(self) -> None:
        self.in_flight -= 1
        self._hand_on()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the body; `RedisBusyError` when none frees up in time."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    async def _wait_for_slot(self) -> None:
        handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(handed)
        self.waiting += 1
        self.peak_waiting = max(self.peak_waiting, self.waiting)
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await handed
        except BaseException as exc:
            if handed.done() and not handed.cancelled():
                self._hand_on()  # handed a slot as the wait ended: pass it on
            else:
                handed.cancel()  # `_hand_on` skips it
            if isinstance(exc, TimeoutError):
                self.busy_total += 1
                raise RedisBusyError(
                    f"redis busy: no connection free within {self.queue_timeout_s}s"
                ) from None
            raise
        finally:
            self.waiting -= 1

    def _hand_on(self) -> None:
        """A slot came free: to the longest queued request, else back to the free ones."""
        queue = self._queue
        while queue:
            handed = queue.popleft()
            if not handed.done():
                handed.set_result(None)
                return
        self._free += 1


class SingleFlight(Generic[K, T]):
    """Concurrent calls with the same key share one run of the work."""

    def __init__(self) -> None:
        self._running: dict[K, asyncio.Task[T]] = {}
        self.shared = 0
        """Calls answered by a run another caller started."""

    async def run(self, key: K, work: Callable[[], Awaitable[T]]) -> T:
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(work())
            self._running[key] = task
            task.add_done_callback(functools.partial(self._done, key))
        else:
            self.shared += 1
        # a cancelled caller must not cancel the run the others wait on
        return await asyncio.shield(task)

    def _done(self, key: K, task: asyncio.Task[T]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning when nobody waits

    def running(self, key: K) -> bool:
        """A run for `key` is under way (a call now would share it)."""
        return key in self._running

    def forget(self, key: K) -> None:
        """Later calls with `key` start a new run (the data changed since this one began)."""
        self._running.pop(key, None)

    def forget_all(self) -> None:
        self._running.clear()

    def cancel_all(self) -> None:
        """Cancel every run (shutdown)."""
        for task in list(self._running.values()):
            task.cancel()
        self._running.clear()

    def __len__(self) -> int:
        return len(self._running)
