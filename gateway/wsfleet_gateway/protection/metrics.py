"""Prometheus metrics of the protection layer and the channel cache.

Registered in the gateway's own registry next to `GatewayMetrics`; cache
lookups count in the contract's ``wsfleet_cache_requests_total``, which
`GatewayMetrics` owns. The connect-rate gauges (`CONNECT_METRIC_NAMES`) are read by
the operator's flood detector: a count and two shares over a sliding minute, never a
label per user or address (`connects.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from wsfleet_gateway.metrics import GatewayMetrics, LabelledCounter
from wsfleet_gateway.protection.breaker import CLOSED, HALF_OPEN, OPEN
from wsfleet_gateway.protection.connects import ConnectWindow

CACHE_BUCKETS_S = (0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0)
BREAKER_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}

CONNECT_METRIC_NAMES: Final = (
    "wsfleet_connects_per_minute",
    "wsfleet_connects_top_user_share",
    "wsfleet_connects_top_ip_share",
)
"""The flood signal of the metrics contract (served with the protection layer on)."""


class ConnectRateCollector(Collector):
    """Exports a `ConnectWindow` as three gauges, computed when scraped."""

    def __init__(self, window: ConnectWindow) -> None:
        self.window = window

    def collect(self) -> Iterator[Metric]:
        stats = self.window.stats()
        rate, user, ip = CONNECT_METRIC_NAMES
        yield GaugeMetricFamily(
            rate,
            "Connection attempts that reached admission (accepted or refused) in the last "
            "minute, sliding in 10 s steps.",
            value=stats.attempts,
        )
        yield GaugeMetricFamily(
            user,
            "Share of the last minute's connection attempts made by its most frequent user.",
            value=stats.top_user_share,
        )
        yield GaugeMetricFamily(
            ip,
            "Share of the last minute's connection attempts from its most frequent client address.",
            value=stats.top_ip_share,
        )


class ProtectionMetrics:
    """Cache, breaker, slow-consumer and admission metrics."""

    def __init__(self, gateway: GatewayMetrics) -> None:
        r = gateway.registry
        self.cache_requests = gateway.cache_requests
        self.cache = gateway.cache_requests.inc
        """Count one cache lookup: ``cache(layer, result)``."""
        self.cache_lookup_seconds = Histogram(
            "wsfleet_cache_lookup_seconds",
            "Time of one channel cache lookup through L1 (and L2 on a miss), seconds.",
            ["layer"],
            buckets=CACHE_BUCKETS_S,
            registry=r,
        )
        self.cache_invalidation_seconds = Histogram(
            "wsfleet_cache_invalidation_delay_seconds",
            "From a metadata write on any pod to this pod's L1 invalidation (seconds).",
            buckets=CACHE_BUCKETS_S,
            registry=r,
        )
        self.cache_bytes = Gauge(
            "wsfleet_cache_l1_bytes", "Estimated bytes held by the L1 cache.", registry=r
        )
        self.breaker_state = Gauge(
            "wsfleet_redis_breaker_state",
            "Circuit breaker around Redis: 0 closed, 1 half-open, 2 open.",
            registry=r,
        )
        self.breaker_opened = Counter(
            "wsfleet_redis_breaker_opened", "Times the Redis circuit breaker opened.", registry=r
        )
        self.slow_consumers = Counter(
            "wsfleet_slow_consumer_drops",
            "Connections closed with 4010 because their send buffer passed the cap.",
            registry=r,
        )
        self.admissions = Counter(
            "wsfleet_admissions",
            "Connection admission decisions by result (accepted, or the rejection reason).",
            ["result"],
            registry=r,
        )
        self.admission_results = LabelledCounter(self.admissions)
        self.connects = ConnectWindow()
        """Every connection attempt that reaches admission is recorded here (`admission.py`)."""
        r.register(ConnectRateCollector(self.connects))

    def breaker_changed(self, old: str, new: str) -> None:
        self.breaker_state.set(BREAKER_VALUES.get(new, 0))
        if new == OPEN:
            self.breaker_opened.inc()
