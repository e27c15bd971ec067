"""L1 of the channel cache: an in-process LRU with a TTL per kind and a byte bound.

Pure and clock-injected. A kind is a name with its own TTL; the gateway
uses one, ``meta`` (channel metadata, 15 min). Subscriber lists and routing
are deliberately not cached (see docs/cache.md: the `Hub`'s local dicts and
Redis pub/sub already are the authoritative, O(1) answers). Entries past
their TTL are misses, but stay (until evicted or swept) so a caller that
cannot reach L2 may still serve them *stale* (the breaker's degraded mode).

Invalidation races: a load that read L2 *before* a write may finish *after*
the write's invalidation arrived; storing its result would pin the old value
for a whole TTL. So a loader takes a `load_token` first and stores with
`put(..., token=...)`, which is dropped when the key was invalidated since.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

META: Final = "meta"
DEFAULT_TTLS: Final = {META: 900.0}
FALLBACK_TTL_S: Final = 60.0
"""TTL of a kind missing from the cache's ``ttls``."""
ENTRY_OVERHEAD_BYTES: Final = 240
"""Estimated bookkeeping bytes per entry (tuple key, entry object, dict slot)."""
_INVALIDATION_MEMORY_S: Final = 120.0

Key = tuple[str, str]
_MISSING: Final[Any] = object()


@dataclass(slots=True)
class _Entry:
    value: Any
    size: int
    expires_at: float


@dataclass(slots=True)
class L1Stats:
    hits: int = 0
    misses: int = 0
    stale_hits: int = 0
    evictions: int = 0
    expirations: int = 0
    invalidations: int = 0


class L1Cache:
    """See the module docstring."""

    def __init__(
        self,
        ttls: Mapping[str, float] | None = None,
        max_bytes: int = 64 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttls = dict(DEFAULT_TTLS if ttls is None else ttls)
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self._bytes = 0
        self._seq = 0
        self._invalidated: OrderedDict[Key, tuple[int, float]] = OrderedDict()
        self._cleared_seq = 0
        self.stats = L1Stats()
        self.on_evict: Callable[[str], None] | None = None
        """Called with the kind of every entry evicted for space."""

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, kind: str, key: str, *, allow_stale: bool = False) -> Any:
        """The value, or `MISSING` (expired entries only with `allow_stale`)."""
        k = (kind, key)
        entry = self._entries.get(k)
        if entry is None:
            self.stats.misses += 1
            return _MISSING
        if entry.expires_at <= self._clock():
            if allow_stale:
                self.stats.stale_hits += 1
                return entry.value
            self.stats.misses += 1
            return _MISSING
        self._entries.move_to_end(k)
        self.stats.hits += 1
        return entry.value

    def load_token(self) -> int:
        """Take before reading L2; pass to `put` so a raced invalidation wins."""
        self._seq += 1
        return self._seq

    def put(self, kind: str, key: str, value: Any, size: int, token: int | None = None) -> bool:
        """Store `value` (`size` estimated bytes); False when dropped (raced or too big)."""
        k = (kind, key)
        if token is not None:
            if token <= self._cleared_seq:
                return False
            seen = self._invalidated.get(k)
            if seen is not None and seen[0] >= token:
                return False
        size += ENTRY_OVERHEAD_BYTES
        if size > self.max_bytes:
            return False
        old = self._entries.pop(k, None)
        if old is not None:
            self._bytes -= old.size
        ttl = self.ttls.get(kind, FALLBACK_TTL_S)
        self._entries[k] = _Entry(value, size, self._clock() + ttl)
        self._bytes += size
        while self._bytes > self.max_bytes:
            (evicted_kind, _), evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.size
            self.stats.evictions += 1
            if self.on_evict is not None:
                self.on_evict(evicted_kind)
        return True

    def invalidate(self, kind: str, key: str) -> bool:
        """Drop one entry and fence out loads that started before; True when it was cached."""
        k = (kind, key)
        self._seq += 1
        now = self._clock()
        self._invalidated[k] = (self._seq, now)
        self._invalidated.move_to_end(k)
        while self._invalidated:
            first = next(iter(self._invalidated.values()))
            if now - first[1] <= _INVALIDATION_MEMORY_S:
                break
            self._invalidated.popitem(last=False)
        self.stats.invalidations += 1
        entry = self._entries.pop(k, None)
        if entry is None:
            return False
        self._bytes -= entry.size
        return True

    def clear(self) -> None:
        """Drop everything (invalidations may have been missed) and fence in-flight loads."""
        self._seq += 1
        self._cleared_seq = self._seq
        self._entries.clear()
        self._invalidated.clear()
        self._bytes = 0

    def sweep(self) -> int:
        """Remove expired entries; returns how many."""
        now = self._clock()
        expired = [k for k, e in self._entries.items() if e.expires_at <= now]
        for k in expired:
            self._bytes -= self._entries.pop(k).size
        self.stats.expirations += len(expired)
        return len(expired)

    def keys(self, kind: str) -> list[str]:
        return [key for k, key in self._entries if k == kind]


MISSING: Final = _MISSING
