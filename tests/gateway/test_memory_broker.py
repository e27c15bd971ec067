"""MemoryBroker beyond the shared conformance suite (test_broker_conformance.py): its
clock, exact trimming by length and age, immediate detach, a model of its history."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from wsfleet_gateway.backends.memory import MemoryBroker
from wsfleet_gateway.broker import Delivery, offset_after, parse_offset


class Clock:
    def __init__(self, ms: int = 1_000_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


async def test_offsets_are_redis_like_and_increasing() -> None:
    clock = Clock()
    broker = MemoryBroker(clock_ms=clock)
    first = await broker.publish("a", "1")
    second = await broker.publish("a", "2")
    clock.ms += 5
    third = await broker.publish("a", "3")
    clock.ms -= 100  # the wall clock stepped back: offsets must not
    fourth = await broker.publish("a", "4")
    assert [first.offset, second.offset, third.offset, fourth.offset] == [
        "1000000-0",
        "1000000-1",
        "1000005-0",
        "1000005-1",
    ]
    other = await broker.publish("b", "1")
    assert other.offset == "999905-0"  # offsets are per channel, like stream IDs
    assert third.ts_ms == 1000005


async def test_history_since_and_recovered() -> None:
    clock = Clock()
    broker = MemoryBroker(history_max_len=5, history_max_age_s=60, clock_ms=clock)
    offsets = [(await broker.publish("a", str(i))).offset for i in range(8)]
    # three trimmed by length: entries 3..7 remain
    ok = await broker.history("a", offsets[2], 100)
    assert [d.data for d in ok.messages] == [3, 4, 5, 6, 7]
    assert ok.recovered
    lost = await broker.history("a", offsets[1], 100)
    assert [d.data for d in lost.messages] == [3, 4, 5, 6, 7]
    assert not lost.recovered
    too_many = await broker.history("a", offsets[4], 2)
    assert [d.data for d in too_many.messages] == [6, 7]
    assert not too_many.recovered
    current = await broker.history("a", offsets[7], 10)
    assert (current.messages, current.recovered) == ([], True)
    future = await broker.history("a", "99999999-0", 10)
    assert not future.recovered  # an offset this history never had
    assert not (await broker.history("never", "5-0", 10)).recovered
    assert (await broker.history("never", "0-0", 10)).recovered
    clock.ms += 61_000  # everything ages out
    aged = await broker.history("a", offsets[6], 10)
    assert aged.messages == []
    assert not aged.recovered
    assert aged.offset == offsets[7]  # the channel offset survives trimming
    assert (await broker.history("a", offsets[7], 10)).recovered


async def test_fan_out_only_for_attached_channels_and_meta() -> None:
    broker = MemoryBroker()
    got: list[Delivery] = []
    await broker.start(got.append)
    assert broker.available
    await broker.publish("a", "1")
    await broker.attach("a")
    await broker.attach("a")
    await broker.publish("a", "2")
    broker.detach("a")
    await broker.publish("a", "3")
    broker.detach("a")
    broker.detach("a")  # extra detach is harmless
    await broker.publish("a", "4")
    assert [d.data for d in got] == [2, 3]
    assert broker.attached_channels() == {}
    assert await broker.get_meta("a") == {}
    meta = {"title": "June wedding"}
    await broker.set_meta("a", meta)
    meta["title"] = "changed"
    assert await broker.get_meta("a") == {"title": "June wedding"}
    await broker.close()
    await broker.attach("a")
    await broker.publish("a", "5")  # closed: no more deliveries
    assert len(got) == 2


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2)), min_size=1, max_size=40),
    max_len=st.integers(1, 8),
    since_index=st.integers(0, 40),
    limit=st.integers(1, 10),
)
async def test_history_model(
    steps: list[tuple[int, int]], max_len: int, since_index: int, limit: int
) -> None:
    """Against a plain list: history is every kept message after `since`, newest `limit`."""
    clock = Clock()
    broker = MemoryBroker(history_max_len=max_len, history_max_age_s=1000, clock_ms=clock)
    published: list[Delivery] = []
    for advance_ms, _ in steps:
        clock.ms += advance_ms
        published.append(await broker.publish("c", str(len(published))))
    keys = [parse_offset(d.offset) for d in published]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    since = published[min(since_index, len(published) - 1)].offset
    history = await broker.history("c", since, limit)
    kept = published[-max_len:]
    after = [d for d in kept if offset_after(d.offset, since)]
    assert history.messages == after[-limit:]
    missed = sum(1 for d in published if offset_after(d.offset, since))
    assert history.recovered == (missed <= len(after) and missed <= limit)
    assert history.offset == published[-1].offset
