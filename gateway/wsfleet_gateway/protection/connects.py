"""Connection attempts over a sliding minute: how many, and how concentrated.

The operator's flood detector (`wsfleet_operator.anomaly`) needs to tell a burst of
new connections from many clients (a venue's doors opening, a drained pod's clients
reconnecting) from one made by a few users or addresses (a script, a misbehaving
client, a credential-stuffing run). The gateway exports three gauges for that, with
no label per user or address (`ProtectionMetrics`):

- ``wsfleet_connects_per_minute``: connection attempts that reached admission in the
  last minute, accepted or refused;
- ``wsfleet_connects_top_user_share``: the share of them made by the single most
  frequent user (attempts without a user, failed logins and auth-disabled ones, count
  in the total only);
- ``wsfleet_connects_top_ip_share``: the same for the most frequent client address.

Memory stays bounded whatever the traffic: the minute is `BUCKETS` buckets, each
holding a Space-Saving summary (Metwally et al., 2005) of at most `CAPACITY` keys per
kind. A key with more than 1/`CAPACITY` of a bucket's attempts is always kept, and
its count is over-estimated by at most 1/`CAPACITY` of the bucket: the shares are
exact for a flood and within about 1.6 points for the rest. Pure: the clock is passed
in. Not thread-safe: recorded and read on the gateway's event loop.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

WINDOW_S: Final = 60.0
BUCKETS: Final = 6
CAPACITY: Final = 64


class HeavyHitters:
    """Space-Saving: the most frequent keys of a stream in `capacity` counters."""

    __slots__ = ("capacity", "counts")

    def __init__(self, capacity: int = CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.counts: dict[str, int] = {}

    def add(self, key: str) -> None:
        counts = self.counts
        count = counts.get(key)
        if count is not None:
            counts[key] = count + 1
        elif len(counts) < self.capacity:
            counts[key] = 1
        else:  # replace the smallest counter; the newcomer inherits its count (an upper bound)
            victim = min(counts, key=counts.__getitem__)
            counts[key] = counts.pop(victim) + 1


@dataclass(slots=True)
class _Bucket:
    index: int
    attempts: int
    users: HeavyHitters
    ips: HeavyHitters


@dataclass(frozen=True, slots=True)
class ConnectStats:
    """What the last minute looked like."""

    attempts: int
    """connection attempts in the window"""
    top_user_share: float
    """share of `attempts` by the most frequent user (0 with no attempts)"""
    top_ip_share: float
    """share of `attempts` from the most frequent client address"""


def _top(summaries: list[HeavyHitters]) -> int:
    merged: dict[str, int] = {}
    for summary in summaries:
        for key, count in summary.counts.items():
            merged[key] = merged.get(key, 0) + count
    return max(merged.values(), default=0)


class ConnectWindow:
    """Connection attempts of the last `window_s` seconds, in `buckets` buckets."""

    def __init__(
        self,
        window_s: float = WINDOW_S,
        buckets: int = BUCKETS,
        capacity: int = CAPACITY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_s <= 0 or buckets < 1:
            raise ValueError("window_s must be positive and buckets at least 1")
        self.bucket_s = window_s / buckets
        self.buckets = buckets
        self.capacity = capacity
        self.clock = clock
        self._window: deque[_Bucket] = deque()

    def _expire(self, index: int) -> None:
        window = self._window
        while window and window[0].index <= index - self.buckets:
            window.popleft()

    def record(self, user: str | None, ip: str) -> None:
        """One attempt by `user` (None: unknown or anonymous) from address `ip`."""
        index = int(self.clock() // self.bucket_s)
        window = self._window
        if not window or window[-1].index != index:
            self._expire(index)
            window.append(
                _Bucket(index, 0, HeavyHitters(self.capacity), HeavyHitters(self.capacity))
            )
        bucket = window[-1]
        bucket.attempts += 1
        if user is not None:
            bucket.users.add(user)
        bucket.ips.add(ip)

    def stats(self) -> ConnectStats:
        """The window's attempts and the shares of its top user and top address."""
        self._expire(int(self.clock() // self.bucket_s))
        buckets = list(self._window)
        attempts = sum(b.attempts for b in buckets)
        if attempts == 0:
            return ConnectStats(0, 0.0, 0.0)
        top_user = min(_top([b.users for b in buckets]), attempts)
        top_ip = min(_top([b.ips for b in buckets]), attempts)
        return ConnectStats(attempts, top_user / attempts, top_ip / attempts)
