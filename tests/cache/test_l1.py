"""The L1 cache: LRU, TTL per kind, byte bound, stale reads, invalidation fencing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from wsfleet_gateway.cache.l1 import (
    DEFAULT_TTLS,
    ENTRY_OVERHEAD_BYTES,
    FALLBACK_TTL_S,
    META,
    MISSING,
    L1Cache,
)

SHORT = "short"
MID = "mid"
TTLS = {META: 900.0, MID: 300.0, SHORT: 60.0}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_default_ttls_are_the_briefs() -> None:
    assert DEFAULT_TTLS == {META: 900.0}  # the only kind the gateway caches


def test_a_kind_without_a_ttl_gets_the_fallback() -> None:
    clock = Clock()
    c = L1Cache(clock=clock)
    c.put("other", "a", 1, 10)
    clock.now = FALLBACK_TTL_S - 1
    assert c.get("other", "a") == 1
    clock.now = FALLBACK_TTL_S + 1
    assert c.get("other", "a") is MISSING


def test_ttl_per_kind_and_stale_reads() -> None:
    clock = Clock()
    c = L1Cache(TTLS, clock=clock)
    c.put(META, "a", {"t": 1}, 10)
    c.put(MID, "a", ["u1"], 10)
    c.put(SHORT, "a", "node-1", 10)
    clock.now = 61.0
    assert c.get(SHORT, "a") is MISSING
    assert c.get(SHORT, "a", allow_stale=True) == "node-1"
    assert c.get(MID, "a") == ["u1"]
    clock.now = 301.0
    assert c.get(MID, "a") is MISSING
    assert c.get(META, "a") == {"t": 1}
    clock.now = 901.0
    assert c.get(META, "a") is MISSING
    assert c.stats.stale_hits == 1
    assert c.stats.hits == 2
    assert c.stats.misses == 3
    assert c.sweep() == 3
    assert len(c) == 0
    assert c.bytes == 0


def test_lru_eviction_by_bytes() -> None:
    size = 100
    c = L1Cache(max_bytes=3 * (size + ENTRY_OVERHEAD_BYTES))
    evicted: list[str] = []
    c.on_evict = evicted.append
    for key in "abc":
        c.put(META, key, key, size)
    assert c.get(META, "a") == "a"  # a is now the most recent
    c.put(META, "d", "d", size)
    assert c.get(META, "b") is MISSING
    assert c.get(META, "a") == "a"
    assert evicted == [META]
    assert c.stats.evictions == 1
    assert not c.put(META, "huge", "x", 10_000)  # bigger than the whole cache
    c.put(META, "a", "a2", size)  # replacing keeps the byte count right
    assert c.bytes == 3 * (size + ENTRY_OVERHEAD_BYTES)
    assert sorted(c.keys(META)) == ["a", "c", "d"]


def test_a_load_older_than_an_invalidation_is_not_stored() -> None:
    c = L1Cache()
    token = c.load_token()  # a reader starts loading from L2 ...
    assert not c.invalidate(META, "a")  # ... a write's invalidation arrives ...
    assert not c.put(META, "a", "old", 1, token)  # ... the old value is not pinned
    assert c.get(META, "a") is MISSING
    fresh = c.load_token()
    assert c.put(META, "a", "new", 1, fresh)
    assert c.invalidate(META, "a")
    assert c.get(META, "a") is MISSING
    token = c.load_token()
    c.clear()
    assert not c.put(META, "b", "old", 1, token)
    assert c.put(META, "b", "new", 1, c.load_token())


def test_invalidation_memory_is_bounded_in_time() -> None:
    clock = Clock()
    c = L1Cache(clock=clock)
    for i in range(100):
        c.invalidate(META, str(i))
    clock.now = 1000.0
    c.invalidate(META, "last")
    assert len(c._invalidated) == 1


@given(
    st.lists(
        st.tuples(st.sampled_from([META, MID, SHORT]), st.text(max_size=3)),
        max_size=200,
    ),
    st.integers(0, 2000),
)
def test_byte_bound_always_holds(ops: list[tuple[str, str]], size: int) -> None:
    c = L1Cache(max_bytes=4096)
    for kind, key in ops:
        c.put(kind, key, key, size)
        assert c.bytes <= 4096
        assert c.bytes == sum(e.size for e in c._entries.values())
