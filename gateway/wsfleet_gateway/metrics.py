"""Prometheus metrics of one gateway: the metrics contract of the architecture note.

Each `Gateway` owns a `GatewayMetrics` with its own `CollectorRegistry`, so
several gateways in one process (tests) never share counters. The operator's
default PromQL reads these names; `METRIC_NAMES` lists them for that check. The
registry also carries prometheus_client's process collector (``process_*``:
``process_resident_memory_bytes`` beside ``wsfleet_connections`` is the operator's
memory-per-connection signal, its leak detector).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

# Sub-millisecond resolution at the bottom, the brief's 200 ms / 300 ms / 500 ms
# thresholds in the middle, seconds at the top.
LATENCY_BUCKETS_S: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.2,
    0.3,
    0.5,
    1.0,
    2.5,
    5.0,
)

# Exposed sample family names (counters without their ``_total`` suffix in the
# registry, with it on the wire).
METRIC_NAMES: Final = (
    "wsfleet_connections",
    "wsfleet_channel_switch_seconds",
    "wsfleet_subscribe_seconds",
    "wsfleet_message_delivery_seconds",
    "wsfleet_messages_total",
    "wsfleet_deliveries_total",
    "wsfleet_socket_writes_total",
    "wsfleet_cache_requests_total",
    "wsfleet_rejections_total",
    "wsfleet_drain_in_progress",
    "wsfleet_drained_connections_total",
    "wsfleet_drain_forced_closes_total",
)


class LabelledCounter:
    """A labelled counter whose children are looked up once per label set.

    ``counter.labels(...)`` costs a lock and a dict lookup; hot paths count
    through this instead.
    """

    __slots__ = ("_children", "counter")

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self._children: dict[tuple[str, ...], Counter] = {}

    def inc(self, *labels: str) -> None:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self.counter.labels(*labels)
        child.inc()


class CountsByLabels(Collector):
    """A labelled counter kept as plain ints, exported when scraped.

    For counts made on every request of the hot path (a cache lookup per switch):
    `inc` is a dict update, where a `Counter` child takes a lock and several calls.
    Not thread-safe: counted and scraped on the gateway's event loop (`render`).
    """

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.counts: dict[tuple[str, ...], int] = {}

    def inc(self, *labels: str) -> None:
        counts = self.counts
        counts[labels] = counts.get(labels, 0) + 1

    def value(self, *labels: str) -> int:
        return self.counts.get(labels, 0)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, count in sorted(self.counts.items()):
            family.add_metric(list(labels), count)
        yield family


class GatewayMetrics:
    """All metrics of one gateway, registered in `registry`."""

    def __init__(self, node: str = "") -> None:
        self.node = node
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, CPU, open fds
        self.connections = Gauge("wsfleet_connections", "Open WebSocket connections.", registry=r)
        self.channel_switch_seconds = Histogram(
            "wsfleet_channel_switch_seconds",
            "Time from a switch request to its reply (seconds).",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.subscribe_seconds = Histogram(
            "wsfleet_subscribe_seconds",
            "Time from a subscribe request to its reply (seconds).",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.message_delivery_seconds = Histogram(
            "wsfleet_message_delivery_seconds",
            "Time from publish to the last local socket write of a message (seconds).",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.messages = Counter(
            "wsfleet_messages", "Messages published through this gateway.", registry=r
        )
        self.deliveries = Counter(
            "wsfleet_deliveries", "Message frames written to client sockets.", registry=r
        )
        self.socket_writes = Counter(
            "wsfleet_socket_writes",
            "Socket writes of data frames: the frames a connection gets in one turn of the"
            " event loop go out in one write.",
            registry=r,
        )
        self.cache_requests = CountsByLabels(
            "wsfleet_cache_requests",
            "Channel cache lookups by layer (l1, l2) and result (hit, miss).",
            ("layer", "result"),
        )
        r.register(self.cache_requests)
        self.rejections = Counter(
            "wsfleet_rejections",
            "Refused requests and connections by reason (an error code or close reason).",
            ["reason"],
            registry=r,
        )
        self.drain_in_progress = Gauge(
            "wsfleet_drain_in_progress", "1 while this gateway drains, else 0.", registry=r
        )
        self.drained_connections = Counter(
            "wsfleet_drained_connections",
            "Connections that moved away by themselves during a drain.",
            registry=r,
        )
        self.drain_forced_closes = Counter(
            "wsfleet_drain_forced_closes",
            "Connections closed with 1001 at the end of a drain's grace period.",
            registry=r,
        )
        self._rejections = LabelledCounter(self.rejections)
        self.prefetch = CountsByLabels(
            "wsfleet_prefetch",
            "Next-channel prefetch by result: stepped (a model step answered), fetched,"
            " extended, released, capped, throttled, busy, paused, failed.",
            ("result",),
        )
        r.register(self.prefetch)
        self.prefetch_joins = CountsByLabels(
            "wsfleet_prefetch_joins",
            "Joins of authenticated users by outcome: prefetched (landed on a channel"
            " prefetched for the connection), missed, unpredicted.",
            ("outcome",),
        )
        r.register(self.prefetch_joins)
        self.prefetch_held = Gauge(
            "wsfleet_prefetch_held_channels",
            "Channels this gateway holds for prefetch.",
            registry=r,
        )

    def reject(self, reason: str) -> None:
        """Count one rejection (children cached: no label lookup per call)."""
        self._rejections.inc(reason)

    def render(self) -> bytes:
        """The text exposition format of every metric."""
        return generate_latest(self.registry)
