"""Measurements of one server, driven by the load tool's engine.

Each function measures one figure against a running server and returns plain
numbers; the suite repeats them, takes medians and compares servers.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wsfleet.bench.background import BackgroundPlan, BackgroundTraffic
from wsfleet.bench.probes import GcPauses, LoopLag, percentile, probe_figures
from wsfleet.loadtest.connection import LoadConnection
from wsfleet.loadtest.engine import Engine
from wsfleet.loadtest.options import ScenarioOptions
from wsfleet.loadtest.runner import run_scenario
from wsfleet.loadtest.scenarios import record_delivery, run_coordinator

LONG = 3600.0

CpuClock = Callable[[], float]
"""CPU seconds the server under test has used so far (`gatewayproc.cpu_seconds`)."""


def cpu_per_op_us(clock: CpuClock | None, before: float, ops: float) -> float:
    """Server CPU µs per operation since `before` (NaN without a clock or operations)."""
    if clock is None or ops <= 0:
        return float("nan")
    return (clock() - before) / ops * 1e6


def error_summary(engine: Engine, since: dict[str, int] | None = None) -> str:
    """Errors the server answered (or connections that failed), ``code=n`` joined by commas."""
    since = since or {}
    parts = [
        f"{code}={n - since.get(code, 0)}"
        for code, n in sorted(engine.stats.errors.items())
        if n - since.get(code, 0) > 0
    ]
    return ",".join(parts)


def bench_options(**values: object) -> ScenarioOptions:
    opts = ScenarioOptions(duration_s=LONG, max_requests=10**12, connect_concurrency=64)
    for key, value in values.items():
        setattr(opts, key, value)
    return opts


async def settled_rss(read_rss: Callable[[], int], timeout_s: float = 5.0) -> int:
    """RSS once it stops moving (two reads 0.25 s apart within 1 %), bounded."""
    deadline = time.monotonic() + timeout_s
    last = read_rss()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        now = read_rss()
        if abs(now - last) <= 0.01 * max(last, 1):
            return now
        last = now
    return last


@dataclass
class IdleFleet:
    """Connections left open after `open_idle`, reused by the switch figure."""

    engine: Engine
    conns: list[LoadConnection] = field(default_factory=list)


async def open_idle(
    url: str, count: int, read_rss: Callable[[], int], jwt_secret: str | None = None
) -> tuple[dict[str, float | str], IdleFleet]:
    """Open `count` idle connections: connect rate and server memory per connection."""
    engine = Engine(url, bench_options(jwt_secret=jwt_secret))
    warm = await engine.open_many(20)  # first connections load code paths, not per-conn memory
    for conn in warm:
        engine.close(conn)
    await engine.close_all()
    before = await settled_rss(read_rss)
    started = time.perf_counter()
    conns = await engine.open_many(count)
    span = time.perf_counter() - started
    after = await settled_rss(read_rss)
    opened = len(conns)
    figures: dict[str, float | str] = {
        "opened": float(opened),
        "connect_per_s": opened / span if span > 0 else 0.0,
        "idle_kb_per_conn": (after - before) / opened / 1024.0 if opened else float("nan"),
    }
    errors = error_summary(engine)
    if errors:
        figures["connect_errors"] = errors
    return figures, IdleFleet(engine, conns)


async def _switch_run(
    engine: Engine,
    movers: list[LoadConnection],
    channel_prefix: str,
    duration_s: float,
    think_s: float,
    coordinators: int = 0,
    server_cpu: CpuClock | None = None,
) -> tuple[dict[str, float], float, LoopLag, GcPauses]:
    """Movers switch round 15 channels (coordinators publish meanwhile); latency figures.

    Two figures, measured apart because they cost different things: the first
    visit to each channel (a channel new to the server: a gateway with Redis
    subscribes it and reads its history there) and the steady state that
    follows for `duration_s` (every channel already held by the server). The
    first cycle of all movers runs at once, so its figure is the worst case of
    many clients reaching new channels together. With `server_cpu`, the
    server's CPU per steady-state switch too (everything it did meanwhile).
    """
    cycle = 15
    for index, conn in enumerate(movers):
        await engine.call(conn, "subscribe", channel=f"{channel_prefix}-{index}-0")
    first_visits: list[float] = []

    async def first_cycle(index: int, conn: LoadConnection) -> None:
        for nxt in range(1, cycle):
            started = time.perf_counter()
            reply = await engine.call(
                conn,
                "switch",
                **{
                    "from": f"{channel_prefix}-{index}-{nxt - 1}",
                    "to": f"{channel_prefix}-{index}-{nxt}",
                },
            )
            if reply is not None:
                first_visits.append(time.perf_counter() - started)
            await engine.pause(think_s)

    await asyncio.gather(*(first_cycle(i, conn) for i, conn in enumerate(movers)))
    engine.deadline = time.perf_counter() + duration_s
    switch = engine.stats.latency("switch")
    switch_before = switch.count

    async def mover(index: int, conn: LoadConnection) -> None:
        current = cycle - 1
        while not engine.should_stop():
            nxt = (current + 1) % cycle
            await engine.call(
                conn,
                "switch",
                **{
                    "from": f"{channel_prefix}-{index}-{current}",
                    "to": f"{channel_prefix}-{index}-{nxt}",
                },
            )
            current = nxt
            await engine.pause(think_s)

    started = time.perf_counter()
    cpu_before = server_cpu() if server_cpu is not None else 0.0
    with GcPauses() as pauses:
        async with LoopLag() as lag, asyncio.TaskGroup() as group:
            for i in range(coordinators):
                group.create_task(
                    run_coordinator(engine, f"bg-{i}", i, lambda: 0, phase=i / coordinators)
                )
            for i, conn in enumerate(movers):
                group.create_task(mover(i, conn))
    span = time.perf_counter() - started
    done = switch.count - switch_before
    cpu_us = cpu_per_op_us(server_cpu, cpu_before, done)
    fresh = switch.samples[switch_before:] if switch.count <= switch.cap else switch.samples
    return (
        {
            "p50_ms": percentile(fresh, 0.5) * 1e3,
            "p99_ms": percentile(fresh, 0.99) * 1e3,
            "switches": float(len(fresh)),
            "first_p50_ms": percentile(first_visits, 0.5) * 1e3,
            "first_p99_ms": percentile(first_visits, 0.99) * 1e3,
            "first_switches": float(len(first_visits)),
            "cpu_us": cpu_us,
        },
        span,
        lag,
        pauses,
    )


async def switch_idle(
    fleet: IdleFleet,
    switchers: int,
    duration_s: float,
    think_s: float = 0.01,
    server_cpu: CpuClock | None = None,
) -> dict[str, float | str]:
    """Switch latency of `switchers` clients with the fleet open and no other traffic."""
    engine = fleet.engine
    errors_before = dict(engine.stats.errors)
    movers = fleet.conns[-switchers:] if switchers else []
    result, _span, lag, pauses = await _switch_run(
        engine, movers, "swi", duration_s, think_s, server_cpu=server_cpu
    )
    return {
        "idle_switch_cpu_us": result["cpu_us"],
        "idle_switch_p50_ms": result["p50_ms"],
        "idle_switch_p99_ms": result["p99_ms"],
        "idle_switches": result["switches"],
        "idle_first_switch_p50_ms": result["first_p50_ms"],
        "idle_first_switch_p99_ms": result["first_p99_ms"],
        "idle_first_switches": result["first_switches"],
        **probe_figures("idle_switch", lag, pauses),
        "idle_switch_errors": error_summary(engine, errors_before),
    }


async def switch_under_load(
    fleet: IdleFleet,
    background_dps: float,
    switchers: int,
    duration_s: float,
    subscribers_per_channel: int = 100,
    think_s: float = 0.01,
    separate_process: bool = True,
    jwt_secret: str | None = None,
) -> dict[str, float | str]:
    """Switch latency of `switchers` clients while `background_dps` deliveries/s flow.

    With `separate_process` the subscribers and publishers of the background
    live in a child process (replacing as many idle connections, so the count
    open stays the same); otherwise they are idle connections of this process.
    """
    engine = fleet.engine
    stats = engine.stats
    errors_before = dict(stats.errors)
    pool = list(fleet.conns)
    channels = max(1, min(20, len(pool) // (2 * subscribers_per_channel)))
    subs = min(subscribers_per_channel, max(1, (len(pool) - switchers) // channels))
    rate = background_dps / (channels * subs)
    if not separate_process:
        subscribers = pool[: channels * subs]
        movers = pool[channels * subs : channels * subs + switchers]
        await asyncio.gather(
            *(
                engine.call(conn, "subscribe", channel=f"bg-{i % channels}")
                for i, conn in enumerate(subscribers)
            )
        )
        engine.options.publish_rate = rate
        delivered_before = stats.delivered
        result, span, lag, pauses = await _switch_run(
            engine, movers, "sw", duration_s, think_s, coordinators=channels
        )
        achieved = (stats.delivered - delivered_before) / span if span > 0 else 0.0
        background_errors = ""
    else:
        plan = BackgroundPlan(engine.url, channels, subs, rate, jwt_secret)
        replaced = pool[: plan.connections]
        movers = pool[plan.connections : plan.connections + switchers]
        for conn in replaced:
            engine.close(conn)
        fleet.conns = pool[plan.connections :]
        background = BackgroundTraffic(plan)
        try:
            await background.ready()
            background.start()
            result, span, lag, pauses = await _switch_run(engine, movers, "sw", duration_s, think_s)
            achieved, background_errors = await background.finish()
        finally:
            await asyncio.to_thread(background.close)
    return {
        "switch_p50_ms": result["p50_ms"],
        "switch_p99_ms": result["p99_ms"],
        "switches": result["switches"],
        "first_switch_p50_ms": result["first_p50_ms"],
        "first_switch_p99_ms": result["first_p99_ms"],
        "first_switches": result["first_switches"],
        "background_dps": achieved,
        **probe_figures("switch", lag, pauses),
        "switch_errors": ",".join(
            e for e in (error_summary(engine, errors_before), background_errors) if e
        ),
    }


async def fanout(
    url: str,
    subscribers: int,
    messages: int,
    timeout_s: float,
    window: int = 8,
    jwt_secret: str | None = None,
    server_cpu: CpuClock | None = None,
) -> dict[str, float | str]:
    """Deliveries per second of one channel to `subscribers` (publishes pipelined).

    With `server_cpu`, the server's CPU per delivery over the same span too.
    """
    engine = Engine(url, bench_options(jwt_secret=jwt_secret))
    try:
        subs = await engine.open_many(subscribers)
        await asyncio.gather(*(engine.call(c, "subscribe", channel="fanout") for c in subs))
        publisher = await engine.open()
        if publisher is None or not subs:
            return {"deliveries_per_s": float("nan"), "fanout_errors": error_summary(engine)}
        expected = messages * len(subs)
        stats = engine.stats
        base = stats.delivered
        cpu_before = server_cpu() if server_cpu is not None else 0.0
        started = time.perf_counter()
        in_flight: set[asyncio.Future[dict[str, object]]] = set()
        for seq in range(messages):
            while len(in_flight) >= window:
                _done, in_flight = await asyncio.wait(
                    in_flight, return_when=asyncio.FIRST_COMPLETED
                )
            in_flight.add(publisher.request("publish", {"channel": "fanout", "data": {"s": seq}}))
        deadline = time.perf_counter() + timeout_s
        while stats.delivered - base < expected and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        span = time.perf_counter() - started
        got = stats.delivered - base
        return {
            "deliveries_per_s": got / span if span > 0 else 0.0,
            "fanout_cpu_us": cpu_per_op_us(server_cpu, cpu_before, got),
            "delivered_share": got / expected if expected else 0.0,
            "fanout_errors": error_summary(engine),
        }
    finally:
        await engine.close_all()


async def delivery_latency(
    publish_url: str,
    subscribe_url: str,
    subscribers: int,
    rate: float,
    duration_s: float,
    jwt_secret: str | None = None,
) -> dict[str, float | str]:
    """Publish-to-delivery latency per recipient (publisher and subscribers may differ)."""
    sub_engine = Engine(subscribe_url, bench_options(jwt_secret=jwt_secret))
    pub_engine = Engine(publish_url, bench_options(publish_rate=rate, jwt_secret=jwt_secret))
    try:
        subs = await sub_engine.open_many(subscribers)
        on_message = record_delivery(sub_engine)
        for conn in subs:
            conn.on_message = on_message
        await asyncio.gather(*(sub_engine.call(c, "subscribe", channel="latency") for c in subs))
        pub_engine.deadline = time.perf_counter() + duration_s
        with GcPauses() as pauses:
            async with LoopLag() as lag:
                await run_coordinator(pub_engine, "latency", 0, lambda: 0)
                deadline = time.perf_counter() + 5.0
                expected = pub_engine.stats.published * len(subs)
                while sub_engine.stats.delivered < expected and time.perf_counter() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
        summary = sub_engine.stats.latency("delivery").summary()
        return {
            **probe_figures("delivery", lag, pauses),
            "delivery_p50_ms": float(summary["p50_ms"] or float("nan")),
            "delivery_p99_ms": float(summary["p99_ms"] or float("nan")),
            "lost": float(max(0, expected - sub_engine.stats.delivered)),
            "latency_errors": ",".join(
                e for e in (error_summary(sub_engine), error_summary(pub_engine)) if e
            ),
        }
    finally:
        await sub_engine.close_all()
        await pub_engine.close_all()


async def wedding_fanout(
    url: str,
    subscribers: int,
    messages: list[dict[str, Any]],
    compression: bool,
    timeout_s: float,
    jwt_secret: str | None = None,
    server_cpu: CpuClock | None = None,
    publishers: int = 25,
    window: int = 8,
) -> dict[str, float | str]:
    """Fan-out of realistic wedding messages (``wedding.py``) to `subscribers` that offer
    permessage-deflate (`compression`) or not: deliveries/s, server CPU per delivery and
    the bytes on the wire against the same messages plain, overall and for those of 1 KB
    and up (counted by the subscribers, per delivered frame).

    The messages are spread over `publishers` connections, so that no publisher passes
    the features-on gateway's inbound bandwidth cap (a realistic backend would publish
    them over HTTP or from many clients alike).
    """
    engine = Engine(url, bench_options(jwt_secret=jwt_secret, compression=compression))
    try:
        subs = await engine.open_many(subscribers)
        await asyncio.gather(*(engine.call(c, "subscribe", channel="wedding") for c in subs))
        pubs = await engine.open_many(publishers)
        if not subs or not pubs:
            return {"wedding_errors": error_summary(engine) or "no connections"}
        totals = dict.fromkeys(("wire", "plain", "wire_1k", "plain_1k"), 0)
        seen = {conn: conn.wire_bytes for conn in subs}

        def on_message(conn: LoadConnection, payload: bytes) -> None:
            wire = conn.wire_bytes - seen[conn]  # this frame's, when it came compressed
            seen[conn] = conn.wire_bytes
            plain = len(payload)
            wire = wire or plain
            totals["wire"] += wire
            totals["plain"] += plain
            if plain >= 1024:
                totals["wire_1k"] += wire
                totals["plain_1k"] += plain

        for conn in subs:
            conn.on_message = on_message
        stats = engine.stats
        base = stats.delivered
        expected = len(messages) * len(subs)
        cpu_before = server_cpu() if server_cpu is not None else 0.0
        started = time.perf_counter()
        in_flight: set[asyncio.Future[dict[str, object]]] = set()
        for seq, data in enumerate(messages):
            while len(in_flight) >= window:
                _done, in_flight = await asyncio.wait(
                    in_flight, return_when=asyncio.FIRST_COMPLETED
                )
            publisher = pubs[seq % len(pubs)]
            in_flight.add(publisher.request("publish", {"channel": "wedding", "data": data}))
        deadline = time.perf_counter() + timeout_s
        while stats.delivered - base < expected and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        span = time.perf_counter() - started
        got = stats.delivered - base
        return {
            "deliveries_per_s": got / span if span > 0 else 0.0,
            "cpu_us": cpu_per_op_us(server_cpu, cpu_before, got),
            "wire_bytes_per_delivery": totals["wire"] / got if got else float("nan"),
            "plain_bytes_per_delivery": totals["plain"] / got if got else float("nan"),
            "saved": 1 - totals["wire"] / totals["plain"] if totals["plain"] else float("nan"),
            "saved_1k": (
                1 - totals["wire_1k"] / totals["plain_1k"] if totals["plain_1k"] else float("nan")
            ),
            "delivered_share": got / expected if expected else 0.0,
            "wedding_errors": error_summary(engine),
        }
    finally:
        await engine.close_all()


_CACHE_LINE = re.compile(r"^wsfleet_cache_requests_total\{([^}]*)\}\s+([0-9.eE+-]+)", re.M)


_LABEL = re.compile(r'(\w+)="([^"]*)"')


def cache_counts(metrics_text: str) -> dict[str, float] | None:
    """``<layer>_hit`` / ``<layer>_total`` from `wsfleet_cache_requests_total`; None when absent."""
    counts: dict[str, float] = {}
    found = False
    for labels, value in _CACHE_LINE.findall(metrics_text):
        found = True
        label = dict(_LABEL.findall(labels))
        layer = label.get("layer", "all")
        counts[f"{layer}_total"] = counts.get(f"{layer}_total", 0.0) + float(value)
        if label.get("result") == "hit":
            counts[f"{layer}_hit"] = counts.get(f"{layer}_hit", 0.0) + float(value)
    return counts if found else None


def fetch_metrics(admin_url: str) -> str:
    with urllib.request.urlopen(f"{admin_url}/metrics", timeout=5) as resp:
        body: bytes = resp.read()
    return body.decode()


async def photographer_cache_ratio(
    url: str, admin_url: str | None, users: int, duration_s: float, jwt_secret: str | None = None
) -> dict[str, float | str]:
    """Cache hit ratio of the photographer scenario (from the gateway's metrics)."""
    if admin_url is None:
        return {"status": "not measured: no admin endpoint"}
    before = cache_counts(await asyncio.to_thread(fetch_metrics, admin_url))
    await run_scenario(
        "photographer",
        url,
        ScenarioOptions(
            connections=users,
            duration_s=duration_s,
            think_time_s=0.05,
            seed=7,
            jwt_secret=jwt_secret,
        ),
    )
    after = cache_counts(await asyncio.to_thread(fetch_metrics, admin_url))
    if before is None or after is None:
        return {"status": "not measured: the gateway serves no wsfleet_cache_requests_total"}

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    lookups = delta("l1_total")  # every lookup asks L1 first; L2 only on an L1 miss
    if lookups <= 0:
        return {"status": "not measured: no cache lookups during the scenario"}
    return {
        "status": "measured",
        "hit_ratio": (delta("l1_hit") + delta("l2_hit")) / lookups,
        "l1_hit_ratio": delta("l1_hit") / lookups,
    }
