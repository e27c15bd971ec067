"""Per-connection inbound bandwidth cap: a token bucket plus a strike counter (pure).

Every frame a client sends costs its payload bytes. The bucket refills at
``rate`` bytes per second up to ``burst`` bytes (by default two seconds'
worth, never less than one maximal message, so a single message of the
allowed size always passes on a rested connection). A frame the bucket
cannot pay is *rejected* and costs nothing; the listener answers it with
``error rate_limited``.

A client that keeps pushing past the cap is *closed*: every rejection adds
a strike, strikes leak away at one per second, and the rejection that takes
them past ``max_strikes`` returns `CLOSE` (the listener closes with 4008).
A client that backs off after a rejection or two is never closed.

Clock-injected (``now`` in seconds, monotonic) so hypothesis can drive it.
"""

from __future__ import annotations

from typing import Final

ACCEPT: Final = 0
REJECT: Final = 1
CLOSE: Final = 2

BURST_SECONDS: Final = 2.0
"""Default burst: this many seconds of the rate."""
STRIKE_LEAK_PER_S: Final = 1.0
"""Strikes forgiven per second."""


def burst_bytes(rate: float, max_message_bytes: int, seconds: float = BURST_SECONDS) -> float:
    """Pure: the bucket size for `rate`: `seconds` worth, at least one maximal message."""
    return max(rate * seconds, float(max_message_bytes))


class TokenBucket:
    """Inbound byte budget of one connection (see the module docstring)."""

    __slots__ = ("burst", "max_strikes", "rate", "stamp", "strikes", "tokens")

    def __init__(self, rate: float, burst: float, max_strikes: int, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self.max_strikes = max_strikes
        self.tokens = burst
        self.stamp = now
        self.strikes = 0.0

    def take(self, size: int, now: float) -> int:
        """Pay `size` bytes at time `now`: `ACCEPT`, `REJECT` or `CLOSE`."""
        elapsed = now - self.stamp
        if elapsed > 0.0:
            self.stamp = now
            tokens = self.tokens + elapsed * self.rate
            self.tokens = tokens if tokens < self.burst else self.burst
            if self.strikes:
                strikes = self.strikes - elapsed * STRIKE_LEAK_PER_S
                self.strikes = strikes if strikes > 0.0 else 0.0
        if size <= self.tokens:
            self.tokens -= size
            return ACCEPT
        self.strikes += 1.0
        return CLOSE if self.strikes > self.max_strikes else REJECT
