"""`HistoryRings`: per-pod rings of each attached channel's most recent messages.

A ring is a contiguous suffix of a channel's history as this pod's ordered
delivery path (the pub/sub reader's dispatch, with its reconnect catch-up)
sees it. It starts from one history read (`seed`) and is then kept
continuous by every live delivery (`append`), so a history read for an
attached channel can be answered without a Redis round trip (`read`).

- Bounded per channel (``capacity``, at least the seed's limit) and across
  channels (``max_bytes``: least recently used rings are dropped first).
- Trimmed by age like the stream (``max_age_ms``), so `read` returns what a
  Redis read would.
- `read` answers only when the ring can vouch for the result: without
  ``since`` when it holds ``limit`` messages (or the whole stream); with
  ``since`` inside ``[oldest held, latest]``. Anything else returns None and
  the caller asks Redis.
- While a seed read is in flight, deliveries are buffered and applied after
  the seed (those after the seed's latest offset), so no message falls into
  the gap between the read and the live path.
- `invalidate` drops a ring whose continuity is in doubt; it is re-seeded by
  the next history read.

Pure: no I/O, the clock is passed in.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from wsfleet_gateway.broker import Delivery, History, format_offset, parse_offset

ENTRY_OVERHEAD = 96
"""Bytes counted per message besides its channel name and data."""


def _size(delivery: Delivery) -> int:
    return len(delivery.data_json) + len(delivery.channel) + ENTRY_OVERHEAD


@dataclass(slots=True)
class Ring:
    """One channel's recent messages, oldest first, contiguous up to `latest`."""

    capacity: int
    latest: tuple[int, int]
    whole: bool
    """True while the ring holds every message the stream still holds."""
    entries: deque[Delivery] = field(default_factory=deque)
    keys: deque[tuple[int, int]] = field(default_factory=deque)
    nbytes: int = 0
    published: tuple[int, int] = (0, 0)
    """The newest offset this pod published (reads wait for the ring to reach it)."""


@dataclass(slots=True)
class RingStats:
    """Counters for metrics and tests."""

    hits: int = 0
    misses: int = 0
    seeds: int = 0
    invalidations: int = 0
    evictions: int = 0


class HistoryRings:
    """The rings of one pod (see the module docstring)."""

    def __init__(
        self,
        capacity: int = 64,
        max_bytes: int = 16 << 20,
        max_age_ms: int = 0,
        max_len: int | None = None,
    ) -> None:
        self.max_len = max_len
        """The stream's length bound: a ring never holds more (so it stays a suffix of it)."""
        self.capacity = max(1, capacity if max_len is None else min(capacity, max_len))
        self.max_bytes = max(1, max_bytes)
        self.max_age_ms = max_age_ms
        """Messages older than this are dropped (0: no age bound)."""
        self.stats = RingStats()
        self._rings: OrderedDict[str, Ring] = OrderedDict()
        self._seeding: dict[str, list[Delivery]] = {}
        self._nbytes = 0

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def __contains__(self, channel: str) -> bool:
        return channel in self._rings

    def ring(self, channel: str) -> Ring | None:
        return self._rings.get(channel)

    # -- feeding -----------------------------------------------------------

    def begin_seed(self, channel: str) -> object:
        """A seed read starts: buffer deliveries of `channel` until `seed`.

        Returns the token to pass to `seed`: a seed whose channel was
        invalidated meanwhile (even if a new seed started since) does nothing.
        """
        return self._seeding.setdefault(channel, [])

    def abort_seed(self, channel: str, token: object) -> None:
        if self._seeding.get(channel) is token:
            del self._seeding[channel]

    def seed(self, channel: str, history: History, limit: int, read: int, token: object) -> None:
        """Install a ring from a history read without ``since``.

        `read`: how many entries the read asked for (the ring holds the whole
        stream when it got fewer). Applies deliveries buffered since
        `begin_seed`. Does nothing when the seed was aborted meanwhile.
        """
        buffered = self._seeding.get(channel)
        if buffered is None or buffered is not token:
            return
        del self._seeding[channel]
        self.drop(channel)
        ring = Ring(
            capacity=self._capacity_for(limit),
            latest=parse_offset(history.offset),
            whole=len(history.messages) < read,
        )
        self._rings[channel] = ring
        self.stats.seeds += 1
        for delivery in history.messages:
            self._push(ring, delivery, parse_offset(delivery.offset))
        for delivery in buffered:
            self.append(delivery)
        self._bound(channel)

    def _capacity_for(self, limit: int) -> int:
        wanted = max(self.capacity, limit)
        return wanted if self.max_len is None else max(1, min(wanted, self.max_len))

    def append(self, delivery: Delivery) -> None:
        """One delivery from the ordered path (each channel in offset order)."""
        channel = delivery.channel
        buffered = self._seeding.get(channel)
        if buffered is not None:
            buffered.append(delivery)
            return
        ring = self._rings.get(channel)
        if ring is None:
            return
        key = parse_offset(delivery.offset)
        if key <= ring.latest:
            return  # already held (a seed read saw it first)
        ring.latest = key
        self._push(ring, delivery, key)
        self._bound(channel)

    def _push(self, ring: Ring, delivery: Delivery, key: tuple[int, int]) -> None:
        ring.entries.append(delivery)
        ring.keys.append(key)
        size = _size(delivery)
        ring.nbytes += size
        self._nbytes += size
        while len(ring.entries) > ring.capacity:
            self._pop_oldest(ring)
            ring.whole = False

    def _pop_oldest(self, ring: Ring) -> None:
        size = _size(ring.entries.popleft())
        ring.keys.popleft()
        ring.nbytes -= size
        self._nbytes -= size

    def _bound(self, keep: str) -> None:
        """Drop least recently used rings (then trim `keep`) until under `max_bytes`."""
        while self._nbytes > self.max_bytes:
            oldest = next(iter(self._rings))
            if oldest == keep:
                ring = self._rings[keep]
                if len(self._rings) == 1:
                    if not ring.entries:
                        return
                    self._pop_oldest(ring)
                    ring.whole = False
                    continue
                self._rings.move_to_end(keep)
                continue
            self.drop(oldest)
            self.stats.evictions += 1

    def published(self, channel: str, key: tuple[int, int]) -> None:
        """This pod published `key`: until the ring reaches it, reads go to Redis.

        Keeps read-your-writes on one pod although the ring lags the stream by
        the pub/sub delivery time.
        """
        if self._seeding.pop(channel, None) is not None:
            return  # a seed read in flight may predate it: seed again later
        ring = self._rings.get(channel)
        if ring is not None and key > ring.published:
            ring.published = key

    def drop(self, channel: str) -> None:
        ring = self._rings.pop(channel, None)
        if ring is not None:
            self._nbytes -= ring.nbytes

    def invalidate(self, channel: str) -> None:
        """Continuity is in doubt: forget the ring (and any seed in flight)."""
        if channel in self._rings or channel in self._seeding:
            self.stats.invalidations += 1
        self._seeding.pop(channel, None)
        self.drop(channel)

    def clear(self) -> None:
        self._rings.clear()
        self._seeding.clear()
        self._nbytes = 0

    # -- reading -----------------------------------------------------------

    def _trim_age(self, ring: Ring, now_ms: int) -> None:
        if self.max_age_ms <= 0:
            return
        oldest_ms = now_ms - self.max_age_ms
        while ring.keys and ring.keys[0][0] < oldest_ms:
            self._pop_oldest(ring)

    def read(
        self, channel: str, since: tuple[int, int] | None, limit: int, now_ms: int
    ) -> History | None:
        """The history a Redis read would give, or None when the ring cannot vouch."""
        ring = self._rings.get(channel)
        if ring is None or channel in self._seeding or ring.published > ring.latest:
            self.stats.misses += 1
            return None
        expired = now_ms - ring.latest[0] >= 2 * self.max_age_ms
        if self.max_age_ms > 0 and ring.latest != (0, 0) and expired:
            self.drop(channel)  # the stream key has expired by now
            self.stats.misses += 1
            return None
        self._trim_age(ring, now_ms)
        entries, keys = ring.entries, ring.keys
        latest = format_offset(*ring.latest)
        if since is None:
            if len(entries) < limit and not ring.whole:
                self.stats.misses += 1
                return None
            result = History(_tail(entries, limit), latest, True)
        else:
            if not (since == ring.latest or (keys and keys[0] <= since <= ring.latest)):
                self.stats.misses += 1
                return None
            first = len(keys)
            while first > 0 and keys[first - 1] > since:
                first -= 1
            missed = len(keys) - first
            start = max(first, len(keys) - limit)
            messages = [entries[i] for i in range(start, len(entries))] if limit > 0 else []
            result = History(messages, latest, missed <= limit)
        self._rings.move_to_end(channel)
        self.stats.hits += 1
        return result


def _tail(entries: Sequence[Delivery], limit: int) -> list[Delivery]:
    if limit <= 0:
        return []
    start = max(0, len(entries) - limit)
    return [entries[i] for i in range(start, len(entries))]
