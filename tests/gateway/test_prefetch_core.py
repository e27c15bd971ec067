"""The prefetch decision core (issue 22): what to prefetch, how much, and for how long.

`choose`, `outcome` and `PrefetchBudget` are pure and checked with hypothesis. The
`Prefetcher`'s bookkeeping (the per-pod cap, the budget, holding and releasing, close)
runs here against an in-process habit store and broker that record what they are
asked; tests/gateway/test_prefetch.py runs it on real Redis and real gateways.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsfleet_gateway.broker import BrokerUnavailableError, History, Snapshot
from wsfleet_gateway.prefetch import (
    MISSED,
    PREFETCHED,
    UNPREDICTED,
    PrefetchBudget,
    Prefetcher,
    choose,
    outcome,
)

from tests.support.waiting import wait_until

names = st.sampled_from([f"ch-{i}" for i in range(8)])


@given(
    predicted=st.lists(names, max_size=10),
    current=st.none() | names,
    joined=st.sets(names, max_size=4),
    forbidden=st.sets(names, max_size=4),
    k=st.integers(0, 5),
)
def test_choose_takes_the_likeliest_allowed_channels_not_held(
    predicted: list[str], current: str | None, joined: set[str], forbidden: set[str], k: int
) -> None:
    chosen = choose(predicted, current, joined, lambda c: c not in forbidden, k)
    eligible = [
        c
        for i, c in enumerate(predicted)
        if c != current and c not in joined and c not in forbidden and c not in predicted[:i]
    ]
    assert chosen == eligible[:k]  # in order, no repeats, nothing excluded, no more than k
    assert len(chosen) <= k


@given(predicted=st.none() | st.lists(names, max_size=3), to=names)
def test_outcome_names_where_a_join_landed(predicted: list[str] | None, to: str) -> None:
    got = outcome(predicted, to)
    if not predicted:
        assert got == UNPREDICTED
    else:
        assert got == (PREFETCHED if to in predicted else MISSED)


@given(
    rate=st.floats(0.5, 1000),
    burst=st.floats(1, 50),
    steps=st.lists(st.floats(0, 2), max_size=200),
)
def test_the_budget_never_grants_more_than_its_rate_and_burst(
    rate: float, burst: float, steps: list[float]
) -> None:
    now = [0.0]
    budget = PrefetchBudget(rate, burst, clock=lambda: now[0])
    granted = 0
    for step in steps:
        now[0] += step
        granted += budget.take()
    assert granted <= burst + rate * now[0] + 1e-6


def test_the_budget_refills_with_time() -> None:
    now = [0.0]
    budget = PrefetchBudget(2.0, 2.0, clock=lambda: now[0])
    assert [budget.take() for _ in range(3)] == [True, True, False]
    now[0] += 0.5
    assert [budget.take() for _ in range(2)] == [True, False]


# --- the Prefetcher's bookkeeping ------------------------------------------------------


@dataclass
class Habits:
    """A habit store answering from a table (the real one: test_prefetch.py)."""

    table: dict[str | None, list[str]] = field(default_factory=dict)
    steps: list[tuple[str, str | None, str | None, int]] = field(default_factory=list)
    fail: bool = False
    gate: asyncio.Event | None = None

    async def habit_step(
        self, user: str, came_from: str | None, to: str | None, n: int
    ) -> list[str]:
        self.steps.append((user, came_from, to, n))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise BrokerUnavailableError("redis unavailable during habits")
        return self.table.get(to, [])[:n]


@dataclass
class Joins:
    """A broker recording joins and detaches (only what the prefetcher calls)."""

    joined: list[str] = field(default_factory=list)
    detached: list[str] = field(default_factory=list)
    fail: set[str] = field(default_factory=set)

    async def join(self, channel: str, since: str | None, limit: int) -> Snapshot:
        if channel in self.fail:
            raise BrokerUnavailableError("join failed")
        self.joined.append(channel)
        return Snapshot(History([], "0-0", True), None)

    def detach(self, channel: str) -> None:
        self.detached.append(channel)


@dataclass
class Conn:
    habit: tuple[str | None, tuple[str, ...]] | None = None
    closed: bool = False
    subscriptions: set[str] = field(default_factory=set)
    forbidden: set[str] = field(default_factory=set)

    def may_join(self, channel: str) -> bool:
        return channel not in self.forbidden


class Counted:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def inc(self, *labels: str) -> None:
        self.counts[labels[0]] = self.counts.get(labels[0], 0) + 1


def prefetcher(habits: Habits, joins: Joins, **kwargs: object) -> tuple[Prefetcher, Counted]:
    results = Counted()
    return Prefetcher(habits, joins, results=results, **kwargs), results  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_a_join_learns_the_move_and_holds_the_likeliest_next_channels() -> None:
    habits = Habits({"a": ["b", "c", "d"]})
    joins = Joins()
    pre, results = prefetcher(habits, joins, per_connection=2, hold_s=60)
    conn = Conn(habit=("z", ()), subscriptions={"a", "c"})
    pre.joined(conn, "ann", "z", "a")
    await wait_until(lambda: results.counts.get("fetched") == 2)
    assert habits.steps == [("ann", "z", "a", 4)]
    assert joins.joined == ["b", "d"]  # c: the connection is on it already
    assert conn.habit == ("a", ("b", "d"))
    assert set(pre.held) == {"b", "d"}
    await pre.close()
    assert sorted(joins.detached) == ["b", "d"]
    assert not pre.held


@pytest.mark.asyncio
async def test_a_subscribe_counts_as_a_move_from_the_channel_joined_last() -> None:
    habits = Habits()
    pre, results = prefetcher(habits, Joins())
    conn = Conn(habit=("x", ("y",)))
    outcomes = Counted()
    pre._outcomes = outcomes
    pre.joined(conn, "ann", None, "y")
    await wait_until(lambda: results.counts.get("stepped") == 1)
    assert habits.steps[0][:3] == ("ann", "x", "y")
    assert outcomes.counts == {PREFETCHED: 1}
    await pre.close()


@pytest.mark.asyncio
async def test_the_pod_cap_bounds_what_is_held_however_many_users_ask() -> None:
    habits = Habits({f"from-{i}": [f"to-{i}"] for i in range(10)})
    joins = Joins()
    pre, results = prefetcher(habits, joins, max_channels=3, rate_per_s=1000)
    for i in range(10):
        pre.joined(Conn(), f"user-{i}", None, f"from-{i}")
    await wait_until(lambda: results.counts.get("stepped") == 10)
    assert len(pre.held) == 3
    assert len(joins.joined) == 3
    assert results.counts["capped"] == 7
    await pre.close()


@pytest.mark.asyncio
async def test_the_rate_budget_throttles_a_burst_of_prefetches() -> None:
    habits = Habits({f"from-{i}": [f"to-{i}"] for i in range(10)})
    pre, results = prefetcher(habits, Joins(), rate_per_s=4, clock=lambda: 0.0)
    for i in range(10):
        pre.joined(Conn(), f"user-{i}", None, f"from-{i}")
    await wait_until(lambda: results.counts.get("stepped") == 10)
    assert results.counts["fetched"] == 4
    assert results.counts["throttled"] == 6
    await pre.close()


@pytest.mark.asyncio
async def test_a_held_channel_asked_again_is_kept_longer_not_joined_again() -> None:
    now = [100.0]
    habits = Habits({"a": ["b"]})
    joins = Joins()
    pre, results = prefetcher(habits, joins, hold_s=10, clock=lambda: now[0])
    pre.joined(Conn(), "ann", None, "a")
    await wait_until(lambda: results.counts.get("fetched") == 1)
    now[0] = 105.0
    pre.joined(Conn(), "bob", None, "a")
    await wait_until(lambda: results.counts.get("extended") == 1)
    assert joins.joined == ["b"]
    assert pre.held == {"b": 115.0}
    await pre.close()


@pytest.mark.asyncio
async def test_held_channels_are_released_when_their_hold_ends() -> None:
    habits = Habits({"a": ["b", "c"]})
    joins = Joins()
    pre, results = prefetcher(habits, joins, hold_s=0.05)
    pre.joined(Conn(), "ann", None, "a")
    await wait_until(lambda: results.counts.get("released") == 2)
    assert sorted(joins.detached) == ["b", "c"]
    assert not pre.held
    await pre.close()
    assert sorted(joins.detached) == ["b", "c"]  # nothing released twice


@pytest.mark.asyncio
async def test_forbidden_channels_are_never_prefetched() -> None:
    habits = Habits({"a": ["secret", "b"]})
    joins = Joins()
    pre, results = prefetcher(habits, joins)
    pre.joined(Conn(forbidden={"secret"}), "ann", None, "a")
    await wait_until(lambda: results.counts.get("stepped") == 1)
    await wait_until(lambda: results.counts.get("fetched") == 1)
    assert joins.joined == ["b"]
    await pre.close()


@pytest.mark.asyncio
async def test_failures_are_counted_and_change_nothing_else() -> None:
    habits = Habits({"a": ["b", "c"]})
    joins = Joins(fail={"b"})
    pre, results = prefetcher(habits, joins)
    pre.joined(Conn(), "ann", None, "a")
    await wait_until(lambda: results.counts.get("failed") == 1 and results.counts.get("fetched"))
    assert set(pre.held) == {"c"}
    habits.fail = True
    pre.joined(Conn(), "ann", None, "a")
    await wait_until(lambda: results.counts.get("failed") == 2)
    assert set(pre.held) == {"c"}
    await pre.close()


@pytest.mark.asyncio
async def test_nothing_is_asked_while_the_store_is_out_or_steps_pile_up() -> None:
    habits = Habits({"a": ["b"]}, gate=asyncio.Event())
    up = [False]
    pre, results = prefetcher(habits, Joins(), max_steps=2, allowed=lambda: up[0])
    pre.joined(Conn(), "ann", None, "a")
    assert results.counts == {"paused": 1}
    assert not habits.steps
    up[0] = True
    for _ in range(3):
        pre.joined(Conn(), "ann", None, "a")
    assert results.counts["busy"] == 1
    await wait_until(lambda: len(habits.steps) == 2)
    await pre.close()  # cancels the steps waiting on the store
    assert not pre.held


@pytest.mark.asyncio
async def test_a_connection_that_moved_on_or_closed_gets_no_prefetch() -> None:
    habits = Habits({"a": ["b"]}, gate=asyncio.Event())
    joins = Joins()
    pre, results = prefetcher(habits, joins)
    moved, gone = Conn(), Conn()
    pre.joined(moved, "ann", None, "a")
    pre.joined(gone, "bob", None, "a")
    await wait_until(lambda: len(habits.steps) == 2)
    moved.habit = ("elsewhere", ())
    gone.closed = True
    assert habits.gate is not None
    habits.gate.set()
    await wait_until(lambda: results.counts.get("stepped") == 2)
    assert not joins.joined
    assert moved.habit == ("elsewhere", ())
    await pre.close()


@pytest.mark.asyncio
async def test_at_connect_the_likeliest_first_channels_are_held() -> None:
    habits = Habits({None: ["first", "second", "third"]})
    joins = Joins()
    pre, results = prefetcher(habits, joins, per_connection=2)
    conn = Conn()
    pre.connected(conn, "ann")
    await wait_until(lambda: results.counts.get("fetched") == 2)
    assert habits.steps == [("ann", None, None, 4)]
    assert conn.habit == (None, ("first", "second"))
    pre.per_connection = 0
    pre.connected(Conn(), "bob")  # prefetch off for connections: not even a read
    assert len(habits.steps) == 1
    await pre.close()


@pytest.mark.asyncio
async def test_close_while_a_join_is_in_flight_holds_nothing() -> None:
    gate = asyncio.Event()

    class Slow(Joins):
        async def join(self, channel: str, since: str | None, limit: int) -> Snapshot:
            await gate.wait()
            return await super().join(channel, since, limit)

    joins = Slow()
    pre, _ = prefetcher(Habits({"a": ["b"]}), joins)
    pre.joined(Conn(), "ann", None, "a")
    await wait_until(lambda: "b" in pre.held)
    await pre.close()
    assert not pre.held
    assert joins.detached == []
