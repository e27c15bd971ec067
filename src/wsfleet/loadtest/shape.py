"""The shape of realistic load: Zipf channel choice, human think time, a wedding day.

Pure functions of their inputs and a seeded `random.Random`, so runs repeat.
"""

from __future__ import annotations

import bisect
import ipaddress
import itertools
import math
import random
from urllib.parse import urlsplit


class ZipfSampler:
    """Ranks 0..n-1 drawn with probability proportional to 1 / (rank + 1) ** s."""

    def __init__(self, n: int, s: float = 1.1) -> None:
        if n < 1:
            raise ValueError("ZipfSampler needs n >= 1")
        if s < 0:
            raise ValueError("ZipfSampler needs s >= 0")
        weights = [1.0 / (rank + 1) ** s for rank in range(n)]
        total = sum(weights)
        running = 0.0
        self._cdf: list[float] = []
        for weight in weights:
            running += weight / total
            self._cdf.append(running)
        self._cdf[-1] = 1.0
        self.n = n

    def sample(self, rng: random.Random) -> int:
        return min(bisect.bisect_left(self._cdf, rng.random()), self.n - 1)

    def distinct(self, rng: random.Random, k: int) -> list[int]:
        """`k` distinct ranks (all of them when k >= n), most likely ones first on average."""
        k = min(k, self.n)
        chosen: list[int] = []
        seen: set[int] = set()
        attempts = 0
        while len(chosen) < k and attempts < 50 * k:
            attempts += 1
            rank = self.sample(rng)
            if rank not in seen:
                seen.add(rank)
                chosen.append(rank)
        for rank in range(self.n):  # fill deterministically if the tail was too thin
            if len(chosen) >= k:
                break
            if rank not in seen:
                seen.add(rank)
                chosen.append(rank)
        return chosen


THINK_SIGMA = 0.8
"""Log-normal shape of human think time (a long right tail)."""


def think_time_s(rng: random.Random, mean_s: float, cap_factor: float = 10.0) -> float:
    """A log-normal pause with the given mean, capped at `cap_factor` x mean."""
    if mean_s <= 0:
        return 0.0
    mu = math.log(mean_s) - THINK_SIGMA**2 / 2.0
    return min(rng.lognormvariate(mu, THINK_SIGMA), mean_s * cap_factor)


# (hour of day, fraction of the way from base load to peak load): night at base,
# suppliers' working day at a third, the couples' evening peak 18:00-20:00 at peak.
DAY_PROFILE: tuple[tuple[float, float], ...] = (
    (0.0, 0.0),
    (6.0, 0.0),
    (9.0, 1.0 / 3.0),
    (17.0, 1.0 / 3.0),
    (18.0, 1.0),
    (20.0, 1.0),
    (23.0, 1.0 / 9.0),
    (24.0, 0.0),
)


def day_multiplier(hour: float, peak_factor: float = 10.0) -> float:
    """Load multiplier at `hour` (mod 24): 1 at night, `peak_factor` 18:00-20:00."""
    hour = hour % 24.0
    for (h0, f0), (h1, f1) in itertools.pairwise(DAY_PROFILE):
        if h0 <= hour <= h1:
            frac = f0 + (f1 - f0) * (hour - h0) / (h1 - h0)
            return 1.0 + frac * (peak_factor - 1.0)
    return 1.0  # unreachable: the profile covers [0, 24]


def simulated_hour(elapsed_s: float, compress: float, start_hour: float = 0.0) -> float:
    """Hour of the compressed day after `elapsed_s` real seconds (`compress` x real time)."""
    return (start_hour + elapsed_s * compress / 3600.0) % 24.0


def target_connections(
    elapsed_s: float, base: int, compress: float, start_hour: float = 0.0, peak_factor: float = 10.0
) -> int:
    """Connections the wedding-season scenario wants open `elapsed_s` into the run."""
    hour = simulated_hour(elapsed_s, compress, start_hour)
    return max(0, round(base * day_multiplier(hour, peak_factor)))


class RemoteTargetError(ValueError):
    """A non-loopback target without an explicit `allow_remote`."""


def is_loopback_host(host: str) -> bool:
    """True for loopback IP literals and ``localhost`` names (no DNS lookup)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_target(url: str, allow_remote: bool) -> str:
    """Validate a ``ws://`` / ``wss://`` URL; refuse non-loopback hosts unless allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"target {url!r} is not a ws:// or wss:// URL")
    if not parts.hostname:
        raise ValueError(f"target {url!r} has no host")
    if not allow_remote and not is_loopback_host(parts.hostname):
        raise RemoteTargetError(
            f"refusing non-loopback target {parts.hostname!r}: load tests against other "
            "machines need --allow-remote (allow_remote=True) explicitly"
        )
    return url
