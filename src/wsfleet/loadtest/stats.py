"""Counters and latency recorders of one load run: pure, picklable, mergeable.

A run's numbers live in one `RunStats`. Each process of a multi-process run
fills its own and the parent merges them (`merge_stats`), so percentiles are
computed over every process's samples, never averaged.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field

SAMPLE_CAP = 200_000
"""Latency samples kept per operation; beyond it a uniform reservoir is kept."""


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 100]) of an ascending list."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q={q} outside [0, 100]")
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class LatencyRecorder:
    """Latencies of one operation, in seconds.

    `count`, `total` and `maximum` are exact; `samples` is every value up to
    `SAMPLE_CAP`, then a uniform reservoir of that size.
    """

    count: int = 0
    total: float = 0.0
    maximum: float = 0.0
    samples: list[float] = field(default_factory=list)
    recent: list[float] = field(default_factory=list)
    cap: int = SAMPLE_CAP

    def record(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        if seconds > self.maximum:
            self.maximum = seconds
        if len(self.samples) < self.cap:
            self.samples.append(seconds)
        else:
            slot = random.randrange(self.count)
            if slot < self.cap:
                self.samples[slot] = seconds
        if len(self.recent) < 10_000:
            self.recent.append(seconds)

    def take_recent(self) -> list[float]:
        """Values recorded since the last call (at most 10,000): for progress lines."""
        recent, self.recent = self.recent, []
        return recent

    def merged(self, other: LatencyRecorder) -> LatencyRecorder:
        """One recorder holding both; the reservoir keeps each side's share."""
        out = LatencyRecorder(
            count=self.count + other.count,
            total=self.total + other.total,
            maximum=max(self.maximum, other.maximum),
            cap=self.cap,
        )
        if len(self.samples) + len(other.samples) <= self.cap:
            out.samples = self.samples + other.samples
            return out
        share = self.count / out.count if out.count else 0.5
        take_self = min(len(self.samples), round(self.cap * share))
        take_other = min(len(other.samples), self.cap - take_self)
        rng = random.Random(out.count)
        out.samples = rng.sample(self.samples, take_self) + rng.sample(other.samples, take_other)
        return out

    def summary(self) -> dict[str, float | int | None]:
        """count, mean/p50/p95/p99/max in milliseconds (None without samples)."""
        if not self.samples:
            return {
                "count": self.count,
                "mean_ms": None,
                "p50_ms": None,
                "p95_ms": None,
                "p99_ms": None,
                "max_ms": None,
            }
        ordered = sorted(self.samples)
        return {
            "count": self.count,
            "mean_ms": round(self.total / self.count * 1000.0, 4),
            "p50_ms": round(percentile(ordered, 50) * 1000.0, 4),
            "p95_ms": round(percentile(ordered, 95) * 1000.0, 4),
            "p99_ms": round(percentile(ordered, 99) * 1000.0, 4),
            "max_ms": round(self.maximum * 1000.0, 4),
        }


@dataclass
class RunStats:
    """Everything one load run counts."""

    attempted: int = 0
    opened: int = 0
    failed: int = 0
    closed_by_server: int = 0
    open_now: int = 0
    peak_open: int = 0
    sent: int = 0
    """Requests (frames) the load tool sent."""
    replies: int = 0
    published: int = 0
    """Publishes the server acknowledged (`published`)."""
    expected_deliveries: int = 0
    """Deliveries owed for acknowledged publishes, when the scenario can know it."""
    loss_measured: bool = False
    delivered: int = 0
    """`message` frames received, all connections together."""
    request_timeouts: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, LatencyRecorder] = field(default_factory=dict)
    timeline: list[dict[str, float]] = field(default_factory=list)

    def latency(self, op: str) -> LatencyRecorder:
        recorder = self.latencies.get(op)
        if recorder is None:
            recorder = self.latencies[op] = LatencyRecorder()
        return recorder

    def connection_opened(self) -> None:
        self.opened += 1
        self.open_now += 1
        self.peak_open = max(self.peak_open, self.open_now)

    def connection_closed(self, by_server: bool) -> None:
        self.open_now -= 1
        if by_server:
            self.closed_by_server += 1

    @property
    def lost(self) -> int | None:
        if not self.loss_measured:
            return None
        return max(0, self.expected_deliveries - self.delivered)


def merge_stats(parts: list[RunStats]) -> RunStats:
    """The stats of several processes as one run (timelines summed by index)."""
    out = RunStats()
    for part in parts:
        for name in (
            "attempted",
            "opened",
            "failed",
            "closed_by_server",
            "open_now",
            "sent",
            "replies",
            "published",
            "expected_deliveries",
            "delivered",
            "request_timeouts",
        ):
            setattr(out, name, getattr(out, name) + getattr(part, name))
        out.peak_open += part.peak_open
        out.loss_measured = out.loss_measured or part.loss_measured
        out.errors.update(part.errors)
        for op, recorder in part.latencies.items():
            mine = out.latencies.get(op)
            out.latencies[op] = recorder if mine is None else mine.merged(recorder)
    out.timeline = _sum_timelines([p.timeline for p in parts])
    return out


def _sum_timelines(timelines: list[list[dict[str, float]]]) -> list[dict[str, float]]:
    length = max((len(t) for t in timelines), default=0)
    out: list[dict[str, float]] = []
    for i in range(length):
        point: dict[str, float] = {}
        for timeline in timelines:
            if i >= len(timeline):
                continue
            for key, value in timeline[i].items():
                point[key] = (
                    max(point.get(key, 0.0), value) if key == "t" else (point.get(key, 0.0) + value)
                )
        out.append(point)
    return out
