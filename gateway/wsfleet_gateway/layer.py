"""`ProtectionLayer`: the protection and cache parts of one gateway, built from settings.

One Redis client (bounded timeouts, no retries, a bounded pool behind a
`RedisGate` so bursts queue instead of failing) serves the rate limiter, the
L2 cache, the invalidation listener and the popularity tracker; one
`CircuitBreaker` guards all of them and the broker. Off entirely with
``WSFLEET_PROTECTION=false`` (benchmarks compare both).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from wsfleet_gateway.backends.redis.pool import RedisClient, RedisGate, make_client
from wsfleet_gateway.broker import Broker
from wsfleet_gateway.cache.broker import ProtectedBroker
from wsfleet_gateway.cache.l1 import META, L1Cache
from wsfleet_gateway.cache.layers import ChannelCache
from wsfleet_gateway.cache.prewarm import HotTracker
from wsfleet_gateway.metrics import GatewayMetrics
from wsfleet_gateway.protection.admission import Admission, ready_for_more
from wsfleet_gateway.protection.audit import AuditLog
from wsfleet_gateway.protection.breaker import CircuitBreaker
from wsfleet_gateway.protection.metrics import ProtectionMetrics
from wsfleet_gateway.protection.ratelimit import RateLimiter
from wsfleet_gateway.server import Protection
from wsfleet_gateway.settings import GatewaySettings

log = structlog.get_logger("wsfleet_gateway.layer")

LISTENER_WAIT_S = 2.0
"""Most seconds start() waits for the invalidation listener before pre-warming."""


class ProtectionLayer:
    """See the module docstring."""

    def __init__(self, settings: GatewaySettings, metrics: GatewayMetrics, broker: Broker) -> None:
        s = settings
        self.settings = settings
        self.metrics = ProtectionMetrics(metrics)
        self.audit = AuditLog(s.node_name)
        self.breaker = CircuitBreaker(
            s.breaker_failures, s.breaker_reset_s, failure_window_s=s.breaker_window_s
        )
        self.breaker.on_change(self._breaker_changed)
        self.redis: RedisClient | None = None
        if s.redis_url:
            self.redis = make_client(
                s.redis_url, s.redis_timeout_s, s.redis_pool_size, cluster=s.redis_cluster
            )
        self.gate = RedisGate(s.redis_pool_size, s.redis_queue_timeout_s)
        """Shared by the rate limiter and the L2 cache: a burst queues here."""
        ttls = {META: s.cache_meta_ttl_s}
        self.hot = HotTracker(self.redis, self.breaker)
        self.cache = ChannelCache(
            L1Cache(ttls, s.cache_max_bytes),
            self.metrics,
            redis=self.redis,
            breaker=self.breaker,
            origin=broker.get_meta,
            origin_write=broker.set_meta,
            hot=self.hot,
            op_timeout_s=s.redis_timeout_s,
            gate=self.gate,
        )
        self.broker = ProtectedBroker(broker, self.cache, self.breaker)
        self.limiter = RateLimiter(self.redis, self.breaker, gate=self.gate)
        self.admission = Admission(s, self.limiter, self.audit, self.metrics)
        self.protection = Protection(self.admission, self.audit, self.metrics)
        self.warm = False
        self.prewarmed = 0

    def _breaker_changed(self, old: str, new: str) -> None:
        self.metrics.breaker_changed(old, new)
        self.audit.breaker(old, new)

    async def start(self) -> None:
        """Start the cache's tasks; pre-warm the hottest channels (bounded) before readiness."""
        s = self.settings
        await self.cache.start(s.cache_cleanup_s, s.hot_flush_s)
        if self.redis is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LISTENER_WAIT_S):
                    await self.cache.listening.wait()
        try:
            async with asyncio.timeout(max(2.0, s.redis_timeout_s * 4)):
                self.prewarmed = await self.cache.prewarm_hottest(s.prewarm_top)
        except TimeoutError:
            log.warning("prewarm_timeout", node=s.node_name)
        self.warm = True
        log.info("cache_prewarmed", node=s.node_name, channels=self.prewarmed)

    async def close(self) -> None:
        await self.cache.close()
        if self.redis is not None:
            await self.redis.aclose()

    def readiness(self, connections: int) -> dict[str, bool]:
        s = self.settings
        return {
            "capacity": ready_for_more(connections, s.max_connections, s.ready_below_fraction),
            "cache_warm": self.warm,
        }

    def detail(self, connections: int) -> dict[str, Any]:
        return {
            "redis_breaker": self.breaker.state,
            "connections": connections,
            "max_connections": self.settings.max_connections,
            "cache_entries": len(self.cache.l1),
            "cache_bytes": self.cache.l1.bytes,
            "invalidations_live": self.cache.listening.is_set() if self.redis else None,
        }
