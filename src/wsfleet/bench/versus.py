"""Fan-out of every server at once, in alternating rounds: the ratios against the peers.

Measured one after the other, minutes apart, two servers' fan-out rates compare two
states of a shared machine as much as two servers: in one suite here the per-run
ratio of the gateway to the plain picows server went 0.85, 0.65, 1.49 while other work
came and went on both cores. So every server runs at once on the server CPU (each idle
while not measured), each with its subscribers and publisher open, and the client
fans out a burst of `messages` to each in turn, the order reversed every round (A B C,
C B A, ...). A round's ratio compares bursts seconds apart; the median over the rounds
is the figure the targets are judged on.

Who subscribes: the load tool's Python connections (``native=False``), or the Go
receiver (``native.py``: one process, a goroutine per connection, on the client CPU)
for all servers at once. The Python client reaches about 80k deliveries/s on one
core, near what the peers serve, so a server faster than that is only seen through
the native one; the publisher is the load tool's in both.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

from wsfleet.bench.figures import CpuClock, bench_options, error_summary
from wsfleet.bench.interleave import window_order
from wsfleet.bench.native import NativeReceiver
from wsfleet.bench.probes import calm_gc, release_gc
from wsfleet.loadtest.connection import LoadConnection
from wsfleet.loadtest.engine import Engine, mint_token

PYTHON = "vs_"
"""Key prefix of the figures measured with the load tool's Python subscribers."""
NATIVE = "nv_"
"""Key prefix of the figures measured with the native (Go) receiver."""
NAN = float("nan")


@dataclass
class Contender:
    """One server of the interleaved fan-out: its URL, JWT key and CPU clock."""

    url: str
    jwt_secret: str | None = None
    cpu: CpuClock | None = None
    engine: Engine | None = None
    subs: list[LoadConnection] = field(default_factory=list)
    publisher: LoadConnection | None = None
    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    short: int = 0
    """Bursts whose deliveries did not all arrive in time."""
    name: str = ""
    subscribed: int = 0
    """Subscribers of its fan-out channel (the Python ones, or the native receiver's)."""


class Counting:
    """Where a burst's deliveries are counted: the load tool's own subscribers."""

    async def count(self, c: Contender) -> int:
        assert c.engine is not None
        return c.engine.stats.delivered

    async def wait(self, c: Contender, target: int, deadline: float) -> int:
        assert c.engine is not None
        stats = c.engine.stats
        while stats.delivered < target and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        return stats.delivered


class NativeCounting(Counting):
    """The native receiver's subscribers (one Go process for every server)."""

    def __init__(self, receiver: NativeReceiver) -> None:
        self.receiver = receiver

    async def count(self, c: Contender) -> int:
        return (await self.receiver.count())[c.name]

    async def wait(self, c: Contender, target: int, deadline: float) -> int:
        return await self.receiver.wait_for(
            c.name, target, max(0.0, deadline - time.perf_counter())
        )


async def _burst(
    c: Contender, counting: Counting, messages: int, window: int, timeout_s: float
) -> None:
    assert c.publisher is not None
    expected = messages * c.subscribed
    base = await counting.count(c)
    cpu_before = c.cpu() if c.cpu is not None else 0.0
    started = time.perf_counter()
    in_flight: set[asyncio.Future[dict[str, object]]] = set()
    for seq in range(messages):
        while len(in_flight) >= window:
            _done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        in_flight.add(c.publisher.request("publish", {"channel": "fanout", "data": {"s": seq}}))
    deadline = started + timeout_s
    got = await counting.wait(c, base + expected, deadline) - base
    span = time.perf_counter() - started
    if in_flight:
        await asyncio.wait(in_flight, timeout=max(0.0, deadline - time.perf_counter()))
    if got < expected:
        c.short += 1
    c.rates.append(got / span if span > 0 else 0.0)
    if c.cpu is not None and got:
        c.cpu_us.append((c.cpu() - cpu_before) / got * 1e6)


async def interleaved_fanout(
    contenders: dict[str, Contender],
    subscribers: int,
    messages: int,
    rounds: int,
    reference: str,
    timeout_s: float = 30.0,
    window: int = 8,
    native_cpu: int | None = None,
    native: bool = False,
) -> dict[str, dict[str, float | str]]:
    """Per server: median deliveries/s and CPU per delivery over the rounds, and the
    median over rounds of `reference`'s rate ÷ its rate in the same round. `native`:
    the subscribers are the Go receiver's (pinned to `native_cpu`)."""
    receiver: NativeReceiver | None = None
    counting = Counting()
    try:
        for name, c in contenders.items():
            c.name = name
            c.engine = Engine(c.url, bench_options(jwt_secret=c.jwt_secret))
            if not native:
                c.subs = await c.engine.open_many(subscribers)
                subscribed = c.engine.call
                await asyncio.gather(
                    *(subscribed(s, "subscribe", channel="fanout") for s in c.subs)
                )
                c.subscribed = len(c.subs)
            c.publisher = await c.engine.open()
        if native:
            receiver = NativeReceiver(
                {name: c.url for name, c in contenders.items()},
                subscribers,
                tokens={
                    name: tokens(c.jwt_secret, subscribers)
                    for name, c in contenders.items()
                    if c.jwt_secret is not None
                },
                cpu=native_cpu,
            )
            await receiver.start()
            counting = NativeCounting(receiver)
            for name, c in contenders.items():
                c.subscribed = receiver.opened[name]
        saved = calm_gc()
        try:
            kinds = tuple(contenders)
            for c in contenders.values():  # one untimed burst each: warm paths and JITs
                await _burst(c, counting, max(1, messages // 4), window, timeout_s)
                c.rates.clear()
                c.cpu_us.clear()
                c.short = 0
            for r in range(rounds):
                for kind in window_order(kinds, r):
                    await _burst(contenders[kind], counting, messages, window, timeout_s)
        finally:
            release_gc(saved)
        ref = contenders[reference].rates
        prefix = NATIVE if native else PYTHON
        out: dict[str, dict[str, float | str]] = {}
        for kind, c in contenders.items():
            ratios = [a / b for a, b in zip(ref, c.rates, strict=True) if b > 0]
            assert c.engine is not None
            lost = receiver.errors.get(kind, {}) if receiver is not None else {}
            errors = (
                error_summary(c.engine),
                ",".join(f"{k}={v}" for k, v in sorted(lost.items())),
                f"short_bursts={c.short}" if c.short else "",
            )
            out[kind] = {
                f"{prefix}deliveries_per_s": statistics.median(c.rates) if c.rates else NAN,
                f"{prefix}fanout_cpu_us": statistics.median(c.cpu_us) if c.cpu_us else NAN,
                f"{prefix}gateway_ratio": statistics.median(ratios) if ratios else NAN,
                f"{prefix}rounds": float(len(c.rates)),
                f"{prefix}subscribers": float(c.subscribed),
                f"{prefix}errors": ",".join(e for e in errors if e),
            }
        return out
    finally:
        if receiver is not None:
            await receiver.close()
        for c in contenders.values():
            if c.engine is not None:
                await c.engine.close_all()


def tokens(secret: str, count: int) -> list[str]:
    """A bearer token per native subscriber, each its own user (as the load tool's)."""
    tag = f"native-{time.time_ns():x}"
    return [mint_token(secret, f"{tag}-{i}", "paid", 86_400.0) for i in range(count)]
