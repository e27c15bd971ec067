"""Fan-out of every server at once, in alternating rounds: the ratios against the peers.

Measured one after the other, minutes apart, two servers' fan-out rates compare two
states of a shared machine as much as two servers: in one suite here the per-run
ratio of the gateway to the plain picows server went 0.85, 0.65, 1.49 while other work
came and went on both cores. So every server runs at once on the server CPU (each idle
while not measured), each with its subscribers and publisher open, and the client
fans out a burst of `messages` to each in turn, the order reversed every round (A B C,
C B A, ...). A round's ratio compares bursts seconds apart; the median over the rounds
is the figure the targets are judged on.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

from wsfleet.bench.figures import CpuClock, bench_options, error_summary
from wsfleet.bench.interleave import window_order
from wsfleet.bench.probes import calm_gc, release_gc
from wsfleet.loadtest.connection import LoadConnection
from wsfleet.loadtest.engine import Engine


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


async def _burst(c: Contender, messages: int, window: int, timeout_s: float) -> None:
    assert c.engine is not None
    assert c.publisher is not None
    stats = c.engine.stats
    expected = messages * len(c.subs)
    base = stats.delivered
    cpu_before = c.cpu() if c.cpu is not None else 0.0
    started = time.perf_counter()
    in_flight: set[asyncio.Future[dict[str, object]]] = set()
    for seq in range(messages):
        while len(in_flight) >= window:
            _done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        in_flight.add(c.publisher.request("publish", {"channel": "fanout", "data": {"s": seq}}))
    deadline = started + timeout_s
    while stats.delivered - base < expected and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    span = time.perf_counter() - started
    got = stats.delivered - base
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
) -> dict[str, dict[str, float | str]]:
    """Per server: median deliveries/s and CPU per delivery over the rounds, and the
    median over rounds of `reference`'s rate ÷ its rate in the same round."""
    try:
        for c in contenders.values():
            c.engine = Engine(c.url, bench_options(jwt_secret=c.jwt_secret))
            c.subs = await c.engine.open_many(subscribers)
            await asyncio.gather(*(c.engine.call(s, "subscribe", channel="fanout") for s in c.subs))
            c.publisher = await c.engine.open()
        saved = calm_gc()
        try:
            kinds = tuple(contenders)
            for c in contenders.values():  # one untimed burst each: warm paths and JITs
                await _burst(c, max(1, messages // 4), window, timeout_s)
                c.rates.clear()
                c.cpu_us.clear()
                c.short = 0
            for r in range(rounds):
                for kind in window_order(kinds, r):
                    await _burst(contenders[kind], messages, window, timeout_s)
        finally:
            release_gc(saved)
        ref = contenders[reference].rates
        out: dict[str, dict[str, float | str]] = {}
        for kind, c in contenders.items():
            ratios = [a / b for a, b in zip(ref, c.rates, strict=True) if b > 0]
            assert c.engine is not None
            out[kind] = {
                "vs_deliveries_per_s": statistics.median(c.rates) if c.rates else float("nan"),
                "vs_fanout_cpu_us": statistics.median(c.cpu_us) if c.cpu_us else float("nan"),
                "vs_gateway_ratio": statistics.median(ratios) if ratios else float("nan"),
                "vs_rounds": float(len(c.rates)),
                "vs_errors": ",".join(
                    e
                    for e in (
                        error_summary(c.engine),
                        f"short_bursts={c.short}" if c.short else "",
                    )
                    if e
                ),
            }
        return out
    finally:
        for c in contenders.values():
            if c.engine is not None:
                await c.engine.close_all()
