"""The two-layer channel cache: L1 in process (`L1Cache`), L2 in Redis.

- Reads: L1; on a miss L2 (the channel's metadata key ``wsf:{ch}:m``, the
  same key the broker writes), then L1 is filled. Every lookup is counted in
  ``wsfleet_cache_requests_total{layer,result}`` and timed in
  ``wsfleet_cache_lookup_seconds{layer}`` (L1 hits: one in `L1_TIMING_EVERY`).
- Writes go to L2 and publish an invalidation on ``wsf:cache:inv`` in one
  Lua script (atomic: no write without its invalidation); every pod's
  listener drops its L1 entry. A listener that (re)connects clears L1, since
  it may have missed invalidations.
- With the breaker open (or L2 failing) lookups are served from L1, stale
  entries included; a channel never seen gives ``{}``. Writes fail fast with
  `BrokerUnavailableError`.
- Without Redis (embedded broker) L1 sits in front of `origin` and is
  invalidated locally.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, NamedTuple, cast

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from wsfleet_gateway.backends.redis.pool import (
    RedisBusyError,
    RedisClient,
    RedisGate,
    SingleFlight,
    is_redis_failure,
)
from wsfleet_gateway.backends.redis.streams import decode_meta, meta_key
from wsfleet_gateway.broker import BrokerUnavailableError, JSONValue, encode_data, encode_json
from wsfleet_gateway.cache.l1 import META, MISSING, L1Cache
from wsfleet_gateway.cache.prewarm import HotTracker
from wsfleet_gateway.protection.breaker import CircuitBreaker
from wsfleet_gateway.protection.metrics import ProtectionMetrics

log = structlog.get_logger("wsfleet_gateway.cache.l1")

INVALIDATION_CHANNEL: Final = "wsf:cache:inv"
PREWARM_CHUNK: Final = 200
L1_TIMING_EVERY: Final = 16
"""One L1 lookup in this many is timed into ``wsfleet_cache_lookup_seconds{layer="l1"}``."""
_ERRORS = (RedisError, OSError, TimeoutError)

# KEYS[1] meta key; ARGV: value, invalidation channel, invalidation message
SET_AND_INVALIDATE_LUA: Final = """
redis.call('SET', KEYS[1], ARGV[1])
return redis.call('PUBLISH', ARGV[2], ARGV[3])
"""

Origin = Callable[[str], Awaitable[dict[str, JSONValue]]]
OriginWrite = Callable[[str, dict[str, JSONValue]], Awaitable[None]]
OnInvalidate = Callable[[str, str, float], None]
"""``(kind, key, delay seconds since the write)``."""


class MetaEntry(NamedTuple):
    """One channel's metadata in L1: the object and its compact JSON text.

    Replies carry the text, so a subscribe answered from L1 encodes nothing.
    """

    value: dict[str, JSONValue]
    text: str


EMPTY_META: Final = MetaEntry({}, "{}")


def meta_entry(value: dict[str, JSONValue]) -> MetaEntry:
    return MetaEntry(value, encode_json(value))


class ChannelCache:
    """See the module docstring."""

    def __init__(
        self,
        l1: L1Cache,
        metrics: ProtectionMetrics,
        *,
        redis: RedisClient | None = None,
        breaker: CircuitBreaker | None = None,
        origin: Origin | None = None,
        origin_write: OriginWrite | None = None,
        hot: HotTracker | None = None,
        op_timeout_s: float = 1.0,
        gate: RedisGate | None = None,
    ) -> None:
        self.l1 = l1
        self.metrics = metrics
        self._redis = redis
        self.breaker = breaker or CircuitBreaker()
        self._origin = origin
        self._origin_write = origin_write
        self.hot = hot
        self.op_timeout_s = op_timeout_s
        self.gate = gate if gate is not None else RedisGate(32, max(5.0, op_timeout_s))
        """Bounds the L2 commands in flight; a burst queues here (not counted as failures)."""
        self.loads: SingleFlight[str, tuple[MetaEntry, bool] | None] = SingleFlight()
        """Concurrent L1 misses of one channel share one L2 read (forgotten on invalidation)."""
        self._set_script: Any = (
            redis.register_script(SET_AND_INVALIDATE_LUA) if redis is not None else None
        )
        self.instance = secrets.token_hex(8)
        """Tags this cache's own invalidations (applied locally at once, skipped on arrival)."""
        self.listening = asyncio.Event()
        """Set while the invalidation listener is subscribed."""
        self.invalidation_listeners: list[OnInvalidate] = []
        self._tasks: list[asyncio.Task[None]] = []
        l1.on_evict = lambda kind: metrics.cache("l1", "eviction")
        self._l1_seconds = metrics.cache_lookup_seconds.labels(layer="l1")
        self._l1_lookups = 0
        self._l2_seconds = metrics.cache_lookup_seconds.labels(layer="l2")

    # --- lifecycle -----------------------------------------------------------------

    async def start(self, cleanup_s: float = 300.0, hot_flush_s: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._sweep(cleanup_s), name="wsfleet-cache-sweep"))
        if self._redis is not None:
            self._tasks.append(loop.create_task(self._listen(), name="wsfleet-cache-invalidate"))
            if self.hot is not None:
                self._tasks.append(
                    loop.create_task(self.hot.run(hot_flush_s), name="wsfleet-hot-flush")
                )

    async def close(self, grace_s: float = 3.0) -> None:
        """Stop the background tasks: the popularity flush finishes its last flush (bounded
        by `grace_s`), the others are cancelled; none is waited for longer than that."""
        self.loads.cancel_all()
        if self.hot is not None:
            self.hot.stop()
            flushing = [t for t in self._tasks if t.get_name() == "wsfleet-hot-flush"]
            if flushing:
                await asyncio.wait(flushing, timeout=grace_s)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _done, stuck = await asyncio.wait(self._tasks, timeout=grace_s)
            for task in stuck:
                log.warning("cache_task_stuck_at_close", task=task.get_name())
        self._tasks.clear()

    # --- reads ---------------------------------------------------------------------

    async def get_meta(self, channel: str) -> dict[str, JSONValue]:
        """A channel's metadata through L1, then L2."""
        return (await self.lookup(channel)).value

    async def lookup(self, channel: str) -> MetaEntry:
        """A channel's metadata (object and JSON text) through L1, then L2."""
        started = time.perf_counter()
        entry = self.peek(channel)
        if entry is None:
            entry = await self.load(channel)
            self._l2_seconds.observe(time.perf_counter() - started)
        return entry

    def peek(self, channel: str) -> MetaEntry | None:
        """L1 alone (counted as an L1 hit or miss); None on a miss.

        One hit in `L1_TIMING_EVERY` is timed into the lookup histogram (the first,
        then every N-th): a hit takes about a microsecond, and timing every one
        cost more than the lookup. The counter counts them all.
        """
        self._l1_lookups += 1
        timed = self._l1_lookups % L1_TIMING_EVERY == 1
        started = time.perf_counter() if timed else 0.0
        if self.hot is not None:
            self.hot.touch(channel)
        value = self.l1.get(META, channel)
        if value is MISSING:
            self.metrics.cache("l1", "miss")
            return None
        self.metrics.cache("l1", "hit")
        if timed:
            self._l1_seconds.observe(time.perf_counter() - started)
        entry: MetaEntry = value
        return entry

    def load_token(self) -> int:
        """Taken before a read whose result goes to `fill` (see `L1Cache.load_token`)."""
        return self.l1.load_token()

    def fill(self, channel: str, text: str, stored: bool, token: int) -> MetaEntry:
        """Metadata the broker read along with history (after an L1 miss) into L1.

        `text`: the compact JSON text of an object; `stored`: L2 held it (a hit).
        """
        entry = MetaEntry(decode_meta(text), text)
        self.l1.put(META, channel, entry, len(text), token)
        if self._redis is not None:
            self.metrics.cache("l2", "hit" if stored else "miss")
        return entry

    async def load(self, channel: str) -> MetaEntry:
        """After an L1 miss: L2 (or the origin), shared by concurrent misses."""
        token = self.l1.load_token()
        if self._redis is None:
            meta = await self._origin(channel) if self._origin is not None else {}
            entry = meta_entry(meta)
            self.l1.put(META, channel, entry, len(entry.text), token)
            return entry
        if not self.breaker.allow():
            return self._degraded(channel)
        found = await self.loads.run(channel, lambda: self._load_l2(channel, token))
        if found is None:
            return self._degraded(channel)
        entry, hit = found
        self.metrics.cache("l2", "hit" if hit else "miss")  # per lookup, shared reads too
        return entry

    async def _load_l2(self, channel: str, token: int) -> tuple[MetaEntry, bool] | None:
        """One L2 read (shared by concurrent misses): ``(entry, found)``, None when it failed."""
        assert self._redis is not None
        try:
            async with self.gate.slot(), asyncio.timeout(self.op_timeout_s):
                raw = await self._redis.get(meta_key(channel))
        except (*_ERRORS, RedisBusyError) as exc:
            self._failed(exc)
            return None
        self.breaker.record_success()
        text = raw.decode() if isinstance(raw, bytes) else raw
        entry = meta_entry(decode_meta(text))
        self.l1.put(META, channel, entry, len(text or ""), token)
        return entry, raw is not None

    def _failed(self, exc: BaseException) -> None:
        if is_redis_failure(exc):
            self.breaker.record_failure()

    def _degraded(self, channel: str) -> MetaEntry:
        """Redis is out: a stale L1 entry, else no metadata."""
        stale = self.l1.get(META, channel, allow_stale=True)
        if stale is not MISSING:
            self.metrics.cache("l1", "stale")
            entry: MetaEntry = stale
            return entry
        self.metrics.cache("l2", "unavailable")
        return EMPTY_META

    # --- writes ----------------------------------------------------------------------

    async def set_meta(self, channel: str, meta: dict[str, JSONValue]) -> None:
        """Write to L2 and invalidate every pod's L1 (this pod's at once).

        `BadRequestError` (before any Redis call) for metadata that is not sendable JSON.
        """
        encode_data(meta, "the metadata")
        encoded = json.dumps(meta, separators=(",", ":"))
        if self._redis is None:
            if self._origin_write is not None:
                await self._origin_write(channel, meta)
            self._invalidate(META, channel)
            return
        if not self.breaker.allow():
            raise BrokerUnavailableError("redis circuit breaker is open: retry later")
        message = f"{META}\n{channel}\n{time.time() * 1000:.3f}\n{self.instance}"
        try:
            async with self.gate.slot(), asyncio.timeout(self.op_timeout_s):
                await self._set_script(
                    keys=[meta_key(channel)], args=[encoded, INVALIDATION_CHANNEL, message]
                )
        except RedisBusyError:
            raise
        except _ERRORS as exc:
            self._failed(exc)
            raise BrokerUnavailableError(f"metadata write failed: {type(exc).__name__}") from exc
        self.breaker.record_success()
        self._invalidate(META, channel)

    def _invalidate(self, kind: str, key: str) -> None:
        """Drop the L1 entry; a load already running for it no longer serves new readers."""
        self.l1.invalidate(kind, key)
        if kind == META:
            self.loads.forget(key)

    # --- pre-warm ----------------------------------------------------------------------

    async def prewarm(self, channels: Sequence[str]) -> int:
        """Load `channels`' metadata into L1; returns how many were loaded."""
        loaded = 0
        for start in range(0, len(channels), PREWARM_CHUNK):
            chunk = list(channels[start : start + PREWARM_CHUNK])
            if self._redis is None:
                for channel in chunk:
                    await self.load(channel)
                loaded += len(chunk)
                continue
            if not self.breaker.allow():
                break
            token = self.l1.load_token()
            try:
                async with self.gate.slot(), asyncio.timeout(self.op_timeout_s * 2):
                    rows = await self._mget([meta_key(c) for c in chunk])
            except (*_ERRORS, RedisBusyError) as exc:
                self._failed(exc)
                break
            self.breaker.record_success()
            for channel, raw in zip(chunk, rows, strict=True):
                text = raw.decode() if isinstance(raw, bytes) else raw
                if self.l1.put(
                    META, channel, meta_entry(decode_meta(text)), len(text or ""), token
                ):
                    loaded += 1
        self.metrics.cache_bytes.set(self.l1.bytes)
        return loaded

    async def _mget(self, keys: list[str]) -> list[Any]:
        """``MGET``; on a cluster one per slot (``mget_nonatomic``): the keys of many
        channels live on many shards."""
        redis = self._redis
        assert redis is not None
        if isinstance(redis, aioredis.RedisCluster):
            return await redis.mget_nonatomic(keys)
        return await redis.mget(keys)

    async def prewarm_hottest(self, n: int) -> int:
        """Pre-warm the `n` hottest channels of the fleet (tracked in Redis)."""
        if self.hot is None or n <= 0:
            return 0
        return await self.prewarm(await self.hot.top(n))

    # --- background ----------------------------------------------------------------------

    async def _sweep(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.l1.sweep()
            self.metrics.cache_bytes.set(self.l1.bytes)

    def on_invalidation(self, payload: str) -> None:
        """Apply one invalidation message (``kind\\nkey\\nwrite ms\\nwriter``)."""
        kind, key, ts, writer = [*payload.split("\n", 3), "", "", ""][:4]
        if writer == self.instance:
            return
        self._invalidate(kind, key)
        try:
            delay_s = max(0.0, time.time() - float(ts) / 1000)
        except ValueError:
            delay_s = 0.0
        self.metrics.cache_invalidation_seconds.observe(delay_s)
        for listener in self.invalidation_listeners:
            listener(kind, key, delay_s)

    async def _listen(self) -> None:
        assert self._redis is not None
        backoff = 0.05
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(INVALIDATION_CHANNEL)
                self.l1.clear()  # invalidations may have been missed while unsubscribed
                self.loads.forget_all()
                self.listening.set()
                backoff = 0.05
                while True:
                    message = await pubsub.get_message(timeout=0.5)
                    if message is not None and message.get("type") == "message":
                        data = message["data"]
                        self.on_invalidation(data.decode() if isinstance(data, bytes) else data)
            except _ERRORS as exc:
                if self.listening.is_set():
                    log.warning("cache_invalidation_lost", error=type(exc).__name__)
                self.listening.clear()
            finally:
                with contextlib.suppress(Exception):
                    await cast(Any, pubsub).aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)
