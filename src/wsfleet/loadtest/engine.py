"""The engine: opens connections within bounds, sends requests, reports progress.

Scenarios drive it; it owns every connection it opened and closes them all in
`close_all`, also when the run is cancelled.

Cancellation must stop a run at once (issue 23), so every wait here is
cancel-safe on Python 3.11:

- Timeouts use ``asyncio.timeout``, never ``asyncio.wait_for``: on 3.11 a
  cancel that arrives in the loop pass in which the awaited reply completes
  is swallowed by ``wait_for``, which returns the reply instead (CPython
  gh-86296, fixed only by 3.12's rewrite of ``wait_for`` on top of
  ``asyncio.timeout``). The user loop then ran on until the run's end.
- A connection is owned from the moment picows makes its listener, not from
  when ``ws_connect`` returns: picows shields the handshake, so a cancelled
  ``ws_connect`` leaves the connection to finish its handshake unseen. The
  listener of an abandoned attempt closes itself as soon as it connects.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from picows import WSError, ws_connect

from wsfleet.loadtest.connection import (
    DEFLATE_OFFER,
    JSONDict,
    LoadConnection,
    RequestError,
    connection_class,
)
from wsfleet.loadtest.options import ScenarioOptions
from wsfleet.loadtest.stats import RunStats, percentile

CLIENT_READ_BUFFER_BYTES = 2048


class Engine:
    """Connections and requests of one load run in one process."""

    def __init__(self, url: str, options: ScenarioOptions, stats: RunStats | None = None) -> None:
        self.url = url
        self.options = options
        self.stats = stats if stats is not None else RunStats()
        self.connections: set[LoadConnection] = set()
        self.target = 0
        """Connections the scenario wants open now (for the timeline)."""
        self.main_op = "switch"
        """Operation shown in the progress line."""
        self.started = time.perf_counter()
        self.deadline = (
            self.started + options.duration_s if options.duration_s is not None else float("inf")
        )
        self._connect_slots = asyncio.Semaphore(max(1, options.connect_concurrency))
        self._headers = (
            {"Authorization": f"Bearer {options.token}"} if options.token is not None else None
        )
        if options.compression:
            self._headers = {**(self._headers or {}), "Sec-WebSocket-Extensions": DEFLATE_OFFER}
        self._connection = connection_class(url)
        """`LoadConnection`, or `SocketIOConnection` for a socket.io URL."""
        self._run_tag = f"{secrets.token_hex(3)}-{options.process_index}"
        self.halted = False
        """True once the run is being torn down: nothing new starts, late connections close."""

    # bounds ------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.perf_counter())

    def should_stop(self) -> bool:
        return (
            self.halted
            or time.perf_counter() >= self.deadline
            or self.stats.sent >= self.options.max_requests
            or (self.options.stop is not None and self.options.stop.is_set())
        )

    async def pause(self, seconds: float) -> None:
        """Sleep, but never past the deadline."""
        await asyncio.sleep(max(0.0, min(seconds, self.remaining())))

    # connections -------------------------------------------------------------

    def headers_for(self, attempt: int, user: str | None = None) -> dict[str, str] | None:
        """Upgrade headers of one connection: a minted per-user token, the shared one, or none.

        `user`: who connects (the same on every connection of one simulated user, so the
        gateway sees their habits); None: a user of its own per attempt."""
        if self.options.jwt_secret is None:
            return self._headers
        token = mint_token(
            self.options.jwt_secret,
            f"loadtest-{self._run_tag}-{attempt if user is None else user}",
            self.options.jwt_tier,
            ttl_s=self.remaining() + 3600.0 if self.remaining() < 1e9 else 86_400.0,
        )
        return {**(self._headers or {}), "Authorization": f"Bearer {token}"}

    async def open(self, user: str | None = None) -> LoadConnection | None:
        """Open one connection and wait for `welcome`; None (counted) on failure.

        `user`: see `headers_for`."""
        async with self._connect_slots:
            if self.should_stop():
                return None
            self.stats.attempted += 1
            headers = self.headers_for(self.stats.attempted, user)
            started = time.perf_counter()
            made: list[LoadConnection] = []
            abandoned = False

            def make_listener() -> LoadConnection:
                # picows calls this when the handshake completes, which may be after a
                # cancelled ws_connect gave up on it: own the connection from here on
                conn = self._connection(self.stats)
                made.append(conn)
                self.connections.add(conn)
                if abandoned or self.halted:
                    conn.close()  # disconnects in on_ws_connected, right after the handshake
                return conn

            try:
                async with asyncio.timeout(self.options.connect_timeout_s):
                    _transport, listener = await ws_connect(
                        make_listener,
                        self.url,
                        websocket_handshake_timeout=self.options.connect_timeout_s,
                        extra_headers=headers,
                        read_buffer_init_size=CLIENT_READ_BUFFER_BYTES,
                        max_redirects=0,
                    )
                    assert isinstance(listener, LoadConnection)
                    await listener.welcome
            except asyncio.CancelledError:
                abandoned = True
                for conn in made:
                    self.close(conn)
                raise
            except (OSError, WSError, TimeoutError, ConnectionError, ValueError) as exc:
                abandoned = True
                self.stats.failed += 1
                self.stats.errors[f"connect:{type(exc).__name__}"] += 1
                for conn in made:
                    self.close(conn)
                return None
            self.stats.latency("connect").record(time.perf_counter() - started)
            listener.counted = True
            self.stats.connection_opened()
            if listener.disconnected:  # closed between welcome and now
                self.stats.connection_closed(by_server=True)
                return None
            return listener

    async def open_many(self, count: int) -> list[LoadConnection]:
        """Open `count` connections concurrently (bounded); the ones that opened."""
        results = await asyncio.gather(*(self.open() for _ in range(count)))
        return [conn for conn in results if conn is not None]

    def close(self, conn: LoadConnection) -> None:
        conn.close()
        self.connections.discard(conn)

    def halt(self) -> None:
        """Stop the run: `should_stop()` from now on, and close every connection now."""
        self.halted = True
        for conn in list(self.connections):
            self.close(conn)

    async def close_all(self, timeout_s: float = 5.0) -> None:
        """Close every connection and wait (bounded) until picows saw them go.

        The engine stays usable (the benchmarks open more afterwards); `halt` ends a run.
        """
        conns = list(self.connections)
        for conn in conns:
            self.close(conn)
        deadline = time.monotonic() + timeout_s
        while any(not c.disconnected for c in conns) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    # requests ----------------------------------------------------------------

    async def call(self, conn: LoadConnection, op: str, **fields: Any) -> JSONDict | None:
        """One request and its reply; None (counted) on error, timeout or disconnect.

        ``asyncio.timeout``, not ``asyncio.wait_for``: see the module docstring.
        """
        future = conn.request(op, fields)
        try:
            async with asyncio.timeout(self.options.request_timeout_s):
                return await future
        except TimeoutError:
            conn.forget(future)
            self.stats.request_timeouts += 1
            self.stats.errors["timeout"] += 1
        except RequestError:
            pass  # counted by the connection
        except ConnectionError:
            self.stats.errors["disconnected"] += 1
        return None

    # progress ----------------------------------------------------------------

    def snapshot(self, last: dict[str, float] | None) -> dict[str, float]:
        stats = self.stats
        now = self.elapsed()
        recent = sorted(stats.latency(self.main_op).take_recent())
        snap: dict[str, float] = {
            "t": round(now, 3),
            "open": stats.open_now,
            "target": self.target,
            "attempted": stats.attempted,
            "failed": stats.failed,
            "sent": stats.sent,
            "delivered": stats.delivered,
            "errors": sum(stats.errors.values()),
            "p50_ms": round(percentile(recent, 50) * 1e3, 3) if recent else -1.0,
            "p99_ms": round(percentile(recent, 99) * 1e3, 3) if recent else -1.0,
        }
        span = now - last["t"] if last else now
        if span > 0:
            prev_sent = last["sent"] if last else 0.0
            prev_delivered = last["delivered"] if last else 0.0
            snap["sent_per_s"] = round((stats.sent - prev_sent) / span, 1)
            snap["delivered_per_s"] = round((stats.delivered - prev_delivered) / span, 1)
        return snap

    async def progress_loop(self) -> None:
        """Every interval: one timeline point, and the progress callback."""
        last: dict[str, float] | None = None
        interval = max(0.05, self.options.progress_interval_s)
        while True:
            await asyncio.sleep(interval)
            snap = self.snapshot(last)
            last = snap
            self.stats.timeline.append(
                {
                    "t": snap["t"],
                    "open": snap["open"],
                    "target": snap["target"],
                    "sent": snap["sent"],
                    "delivered": snap["delivered"],
                }
            )
            if self.options.progress is not None:
                self.options.progress(snap)


def mint_token(secret: str, user: str, tier: str, ttl_s: float) -> str:
    """An HS256 JWT for a load user: may join and publish to every channel."""
    import jwt  # only load runs against authenticated fleets need it

    claims = {"sub": user, "tier": tier, "channels": ["*"], "exp": int(time.time() + ttl_s)}
    token: str = jwt.encode(claims, secret, algorithm="HS256")
    return token


def format_progress(snap: dict[str, float], op: str = "switch") -> str:
    """The live progress line printed on stderr."""
    latency = (
        f"{op} p50 {snap['p50_ms']:.2f} ms p99 {snap['p99_ms']:.2f} ms"
        if snap.get("p50_ms", -1.0) >= 0
        else f"{op} -"
    )
    return (
        f"[{snap['t']:7.1f}s] open {int(snap['open'])}/{int(snap['target'])} "
        f"failed {int(snap['failed'])} | sent {int(snap['sent'])} "
        f"({snap.get('sent_per_s', 0.0):.0f}/s) delivered {int(snap['delivered'])} "
        f"({snap.get('delivered_per_s', 0.0):.0f}/s) errors {int(snap['errors'])} | {latency}"
    )
