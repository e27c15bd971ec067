"""The three scenarios: photographer, venue-broadcast, wedding-season.

Each is ``async def scenario(engine) -> None``: it opens what it needs through
the engine, stops at `engine.should_stop()`, and may be cancelled at any await
(the runner then closes every connection).
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from wsfleet.loadtest.connection import LoadConnection, delivery_latency_s, now_ns
from wsfleet.loadtest.engine import Engine
from wsfleet.loadtest.shape import ZipfSampler, target_connections, think_time_s

Scenario = Callable[[Engine], Coroutine[Any, Any, None]]


def wedding_channel(engine: Engine, rank: int) -> str:
    """Channel of the rank-th most popular wedding (shared by every process)."""
    return f"{engine.options.channel_prefix}wedding-{rank}"


def venue_channel(engine: Engine, index: int) -> str:
    """A venue channel owned by one coordinator of one process."""
    opts = engine.options
    return f"{opts.channel_prefix}venue-{opts.process_index}-{index}"


def payload(engine: Engine, seq: int, sender: int) -> dict[str, Any]:
    """Published data: the send timestamp `t` (ns), a sequence number, padding."""
    return {"t": now_ns(), "seq": seq, "from": sender, "pad": "x" * engine.options.payload_bytes}


def record_delivery(engine: Engine) -> Callable[[LoadConnection, bytes], None]:
    """An on_message hook timing each delivery from its embedded send timestamp."""
    recorder = engine.stats.latency("delivery")

    def on_message(_conn: LoadConnection, frame: bytes) -> None:
        latency = delivery_latency_s(frame, now_ns())
        if latency is not None:
            recorder.record(max(0.0, latency))

    return on_message


async def reopen_after_move(
    engine: Engine, conn: LoadConnection, user: str | None = None
) -> LoadConnection | None:
    """A new connection for a user whose gateway asked it to move (a drain); else None.

    Like a real client, the user waits the frame's ``after_ms`` and connects
    again; the kernel hands the new connection to a gateway still listening.
    """
    if not conn.moved or engine.should_stop():
        return None
    await engine.pause(conn.move_after_s)
    return await engine.open(user)


@dataclass
class Photographer:
    """One photographer's state, kept across the connections it uses."""

    index: int
    rng: random.Random
    channels: list[str]
    preference: ZipfSampler
    current: str
    seq: int = 0
    visited: set[str] = field(default_factory=set)
    """Channels visited on the current connection (a switch elsewhere: a first visit)."""


async def run_photographer_user(
    engine: Engine, index: int, pool: ZipfSampler, conn: LoadConnection | None = None
) -> None:
    opts = engine.options
    rng = random.Random(opts.seed * 1_000_003 + index)
    channels = [wedding_channel(engine, r) for r in pool.distinct(rng, opts.channels_per_user)]
    user = Photographer(index, rng, channels, ZipfSampler(len(channels), opts.zipf_s), channels[0])
    who = f"photographer-{index}"  # one user on every connection: their habits carry
    if conn is None:
        conn = await engine.open(who)
    while conn is not None:
        conn.on_message = record_delivery(engine)
        user.visited = {user.current}
        try:
            if await engine.call(conn, "subscribe", channel=user.current) is not None:
                await photograph(engine, conn, user)
        finally:
            engine.close(conn)
        conn = await reopen_after_move(engine, conn, who)


async def photograph(engine: Engine, conn: LoadConnection, user: Photographer) -> None:
    """Switch (now and then publish) on `conn` until the run or the connection ends."""
    opts = engine.options
    rng = user.rng
    while not engine.should_stop() and not conn.disconnected and not conn.moved:
        await engine.pause(think_time_s(rng, opts.think_time_s))
        if engine.should_stop() or conn.moved:
            break
        if rng.random() < opts.publish_probability:
            user.seq += 1
            data = payload(engine, user.seq, user.index)
            await engine.call(conn, "publish", channel=user.current, data=data)
            continue
        target = next_channel(user, opts.habit)
        first = target not in user.visited
        started = time.perf_counter()
        if await engine.call(conn, "switch", **{"from": user.current, "to": target}) is not None:
            if first:
                engine.stats.latency("switch-first").record(time.perf_counter() - started)
                user.visited.add(target)
            user.current = target


def next_channel(user: Photographer, habit: float) -> str:
    """Where `user` switches next: with probability `habit` the channel after the current
    one in their round, else one of theirs by popularity (never the current one)."""
    channels = user.channels
    if len(channels) < 2:
        return user.current
    if habit > 0 and user.rng.random() < habit and user.current in channels:
        return channels[(channels.index(user.current) + 1) % len(channels)]
    target = user.current
    while target == user.current:
        target = channels[user.preference.sample(user.rng)]
    return target


async def photographer(engine: Engine) -> None:
    """Users each cycling through ~15 wedding channels with think time; times `switch`."""
    opts = engine.options
    engine.main_op = "switch"
    engine.target = opts.connections
    pool = ZipfSampler(max(1, opts.channels), opts.zipf_s)
    base = opts.process_index * 10_000_000
    async with asyncio.TaskGroup() as group:
        for i in range(opts.connections):
            group.create_task(run_photographer_user(engine, base + i, pool))


async def run_coordinator(
    engine: Engine,
    channel: str,
    sender: int,
    subscribers: Callable[[], int],
    phase: float = 0.0,
) -> None:
    """Publish to `channel` at the configured rate without waiting for each reply.

    `phase` (0..1) delays the first publish by that share of one interval, so
    coordinators started together spread their publishes instead of bursting.
    """
    opts = engine.options
    stats = engine.stats

    def account(future: asyncio.Future[dict[str, Any]]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        stats.expected_deliveries += subscribers()

    interval = 1.0 / opts.publish_rate if opts.publish_rate > 0 else float("inf")
    conn = await engine.open()
    if conn is not None and phase > 0 and interval != float("inf"):
        await engine.pause(phase * interval)
    seq = 0
    while conn is not None:
        try:
            seq = await publish_paced(engine, conn, channel, sender, account, interval, seq)
        finally:
            engine.close(conn)
        conn = await reopen_after_move(engine, conn)


async def publish_paced(
    engine: Engine,
    conn: LoadConnection,
    channel: str,
    sender: int,
    account: Callable[[asyncio.Future[dict[str, Any]]], None],
    interval: float,
    seq: int,
) -> int:
    """Publish on `conn` every `interval` until the run or the connection ends; last seq."""
    opts = engine.options
    next_at = time.perf_counter()
    pending: list[asyncio.Future[dict[str, Any]]] = []
    while not engine.should_stop() and not conn.disconnected and not conn.moved:
        seq += 1
        future = conn.request("publish", {"channel": channel, "data": payload(engine, seq, sender)})
        future.add_done_callback(account)
        pending.append(future)
        if len(pending) >= 1000:
            pending = [f for f in pending if not f.done()]
            if pending:
                await asyncio.wait(pending[:1], timeout=opts.request_timeout_s)
        next_at += interval
        delay = next_at - time.perf_counter()
        await engine.pause(delay) if delay > 0 else await asyncio.sleep(0)
    pending = [f for f in pending if not f.done()]
    if pending:
        await asyncio.wait(pending, timeout=opts.request_timeout_s)
    for future in pending:
        if not future.done():
            conn.forget(future)
            future.cancel()
            engine.stats.request_timeouts += 1
    return seq


async def drain_deliveries(engine: Engine) -> None:
    """Wait (bounded by `drain_s`) until every owed delivery arrived."""
    stats = engine.stats
    deadline = time.perf_counter() + engine.options.drain_s
    while stats.delivered < stats.expected_deliveries and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


async def venue_broadcast(engine: Engine) -> None:
    """Coordinators publish to venue channels with many subscribers; times each delivery."""
    opts = engine.options
    engine.main_op = "delivery"
    channels = [venue_channel(engine, i) for i in range(opts.coordinators)]
    subscribed = dict.fromkeys(channels, 0)
    on_message = record_delivery(engine)
    engine.target = opts.coordinators * (opts.subscribers_per_channel + 1)

    async def subscriber(channel: str) -> None:
        conn = await engine.open()
        if conn is None:
            return
        conn.on_message = on_message
        if await engine.call(conn, "subscribe", channel=channel) is not None:
            subscribed[channel] += 1

    await asyncio.gather(
        *(subscriber(ch) for ch in channels for _ in range(opts.subscribers_per_channel))
    )
    engine.stats.loss_measured = True
    base = opts.process_index * 10_000_000
    async with asyncio.TaskGroup() as group:
        for i, channel in enumerate(channels):
            group.create_task(
                run_coordinator(
                    engine, channel, base + i, functools.partial(subscribed.__getitem__, channel)
                )
            )
    await drain_deliveries(engine)


async def wedding_season(engine: Engine) -> None:
    """Connections follow a compressed wedding day: night base, 10x evening peak."""
    opts = engine.options
    engine.main_op = "switch"
    pool = ZipfSampler(max(1, opts.channels), opts.zipf_s)
    every = round(1.0 / opts.coordinator_share) if opts.coordinator_share > 0 else 0
    rng = random.Random(opts.seed)
    users: list[asyncio.Task[None]] = []
    retired: list[asyncio.Task[None]] = []
    """Users cancelled as the day winds down, until they have finished."""
    next_index = opts.process_index * 10_000_000

    def spawn(index: int) -> asyncio.Task[None]:
        if every and index % every == 0:
            channel = wedding_channel(engine, pool.sample(rng))
            coro = run_coordinator(engine, channel, index, lambda: 0)
        else:
            coro = run_photographer_user(engine, index, pool)
        return asyncio.create_task(coro, name=f"wedding-season-user-{index}")

    try:
        while not engine.should_stop():
            target = target_connections(
                engine.elapsed(), opts.connections, opts.compress, opts.start_hour, opts.peak_factor
            )
            engine.target = target
            users = [u for u in users if not u.done()]
            retired = [u for u in retired if not u.done()]
            while len(users) < target:
                users.append(spawn(next_index))
                next_index += 1
            while len(users) > target:
                user = users.pop()
                user.cancel()
                retired.append(user)
            await engine.pause(0.2)
    finally:
        for user in users:
            user.cancel()
        await asyncio.gather(*users, *retired, return_exceptions=True)


SCENARIOS: dict[str, Scenario] = {
    "photographer": photographer,
    "venue-broadcast": venue_broadcast,
    "wedding-season": wedding_season,
}
