"""Next-channel prefetch: learn where each user goes next, and be there first.

A photographer cycles through the same 8 to 15 wedding channels in habits. After every
join (a switch, or a subscribe), the `Prefetcher` sends the store one step of the
user's model (`HabitStore.habit_step`: learn ``from → to`` and read the likeliest
channels after ``to``, one command, not awaited by the switch), and pulls the first
`per_connection` of them into this pod: a join with no subscriber behind it, which
reads the channel's metadata into L1, seeds its history ring, and holds its pub/sub
subscription for `hold_s`. When the user switches there, the switch finds the channel
held and answers without a Redis round trip. At connect it does the same with the
user's likeliest first channels.

What is never prefetched: a channel the user may not join, one this connection is on,
or anything while the breaker is not closed. Anonymous connections share one user,
so they have no habits to learn: prefetch is for authenticated users.

Bounds, so prefetch never becomes a load amplifier: at most `max_channels` channels
held for prefetch per pod, at most `rate_per_s` prefetch joins per second
(`PrefetchBudget`), at most `max_steps` model steps in flight (a burst beyond that is
neither learned nor prefetched, and counted). A channel already held for prefetch is
kept longer rather than joined again; one the pod holds anyway costs no Redis command.

Counted in ``wsfleet_prefetch_total{result}`` and, for every join,
``wsfleet_prefetch_joins_total{outcome}``: ``prefetched`` (it landed on a channel
prefetched for that connection), ``missed`` (there was a prediction, elsewhere),
``unpredicted`` (no prediction yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Container, Sequence
from typing import Protocol

import structlog

from wsfleet_gateway.broker import Broker, HabitStore

log = structlog.get_logger("wsfleet_gateway.prefetch")

PREFETCHED = "prefetched"
MISSED = "missed"
UNPREDICTED = "unpredicted"


class PrefetchBudget:
    """A token bucket: `rate_per_s` takes per second, bursts of up to `burst`."""

    __slots__ = ("_clock", "_stamp", "_tokens", "burst", "rate_per_s")

    def __init__(
        self, rate_per_s: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._stamp = clock()

    def take(self) -> bool:
        now = self._clock()
        tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate_per_s)
        self._stamp = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True


def choose(
    predicted: Sequence[str],
    current: str | None,
    joined: Container[str],
    may_join: Callable[[str], bool],
    k: int,
) -> list[str]:
    """The first `k` of `predicted` (likeliest first) worth prefetching for a connection
    on `current` holding `joined`: not those, not one it may not join, no repeats."""
    chosen: list[str] = []
    for channel in predicted:
        if len(chosen) >= k:
            break
        if channel == current or channel in joined or channel in chosen:
            continue
        if may_join(channel):
            chosen.append(channel)
    return chosen


def outcome(predicted: Sequence[str] | None, to: str) -> str:
    """How a join to `to` relates to what was prefetched for its connection."""
    if not predicted:
        return UNPREDICTED
    return PREFETCHED if to in predicted else MISSED


class Counts(Protocol):
    def inc(self, *labels: str) -> None: ...


class Level(Protocol):
    def set(self, value: float) -> None: ...


class Habitual(Protocol):
    """What the prefetcher needs of a connection (`session.Session`)."""

    habit: tuple[str | None, tuple[str, ...]] | None
    """The channel last joined and the channels prefetched for the next join."""
    closed: bool

    @property
    def subscriptions(self) -> Container[str]: ...

    def may_join(self, channel: str) -> bool: ...


class Prefetcher:
    """See the module docstring."""

    def __init__(
        self,
        habits: HabitStore,
        broker: Broker,
        *,
        per_connection: int = 2,
        max_channels: int = 2000,
        rate_per_s: float = 200.0,
        hold_s: float = 60.0,
        max_steps: int = 256,
        history_limit: int = 10,
        allowed: Callable[[], bool] = lambda: True,
        results: Counts | None = None,
        outcomes: Counts | None = None,
        held_gauge: Level | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.habits = habits
        self.broker = broker
        self.per_connection = per_connection
        self.max_channels = max_channels
        self.hold_s = hold_s
        self.max_steps = max_steps
        self.history_limit = history_limit
        self.allowed = allowed
        """False while prefetch must stay away from Redis (the breaker is not closed)."""
        self.budget = PrefetchBudget(rate_per_s, max(1.0, rate_per_s), clock)
        self.held: dict[str, float] = {}
        """Channel held for prefetch → when it is released (`clock` seconds)."""
        self._results = results
        self._outcomes = outcomes
        self._held_gauge = held_gauge
        self._clock = clock
        self._steps: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    # --- what sessions call -------------------------------------------------------

    def connected(self, conn: Habitual, user: str) -> None:
        """A connection of `user` opened: prefetch their likeliest first channels."""
        if self.per_connection <= 0:
            return
        if self.budget.take():
            self._spawn(conn, user, None, None)
        else:
            self._count("throttled")

    def joined(self, conn: Habitual, user: str, came_from: str | None, to: str) -> None:
        """`conn` of `user` joined `to` (from `came_from`, by a switch; None: a subscribe,
        which counts as a move from the channel the connection joined last)."""
        state = conn.habit
        if self._outcomes is not None:
            self._outcomes.inc(outcome(state[1] if state else None, to))
        if came_from is None and state is not None:
            came_from = state[0]
        conn.habit = (to, ())
        self._spawn(conn, user, came_from, to)

    # --- steps ----------------------------------------------------------------------

    def _spawn(self, conn: Habitual, user: str, came_from: str | None, to: str | None) -> None:
        if not self.allowed():
            self._count("paused")
            return
        if len(self._steps) >= self.max_steps:
            self._count("busy")
            return
        task = asyncio.get_running_loop().create_task(self._step(conn, user, came_from, to))
        self._steps.add(task)
        task.add_done_callback(self._steps.discard)

    async def _step(self, conn: Habitual, user: str, came_from: str | None, to: str | None) -> None:
        n = self.per_connection + 2  # room for the ones `choose` leaves out
        try:
            predicted = await self.habits.habit_step(user, came_from, to, n)
        except Exception as exc:  # Redis out or busy, a name with no UTF-8 form
            self._count("failed")
            log.debug("prefetch_step_failed", error=type(exc).__name__)
            return
        self._count("stepped")
        state = conn.habit
        current = state[0] if state is not None else None
        if conn.closed or current != to:  # gone, or joined elsewhere meanwhile
            return
        chosen = choose(predicted, to, conn.subscriptions, conn.may_join, self.per_connection)
        conn.habit = (to, tuple(chosen))
        for channel in chosen:
            await self._hold(channel)

    async def _hold(self, channel: str) -> None:
        """Hold `channel` on this pod for `hold_s` more (joining it when not held yet)."""
        until = self._clock() + self.hold_s
        if channel in self.held:
            self.held[channel] = until
            self._count("extended")
            return
        if len(self.held) >= self.max_channels:
            self._count("capped")
            return
        if not self.budget.take():
            self._count("throttled")
            return
        if not self.allowed():
            self._count("paused")
            return
        self.held[channel] = until  # taken first: a concurrent step extends, not joins
        try:
            await self.broker.join(channel, None, self.history_limit)
        except asyncio.CancelledError:
            del self.held[channel]  # the join let go of the channel itself
            raise
        except Exception as exc:  # a prefetch never fails anything else
            del self.held[channel]
            self._count("failed")
            log.debug("prefetch_join_failed", channel=channel[:200], error=type(exc).__name__)
            return
        self._count("fetched")
        self._gauge()
        self._wake()

    # --- release ----------------------------------------------------------------------

    def _wake(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(
                self._sweep(), name="wsfleet-prefetch-sweep"
            )

    async def _sweep(self) -> None:
        """Release held channels as they expire; ends once none is held."""
        while self.held:
            now = self._clock()
            due = min(self.held.values())
            if due > now:
                await asyncio.sleep(due - now)
                continue
            for channel in [c for c, until in self.held.items() if until <= now]:
                del self.held[channel]
                self.broker.detach(channel)
                self._count("released")
            self._gauge()

    async def close(self) -> None:
        """Stop every step and release every held channel."""
        tasks = [*self._steps, *([self._sweeper] if self._sweeper is not None else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for channel in list(self.held):
            del self.held[channel]
            self.broker.detach(channel)
        self._gauge()

    def _count(self, result: str) -> None:
        if self._results is not None:
            self._results.inc(result)

    def _gauge(self) -> None:
        if self._held_gauge is not None:
            self._held_gauge.set(len(self.held))
