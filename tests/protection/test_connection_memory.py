"""What an idle connection costs with every feature on (regression guards, not timings).

* Per-connection objects keep ``__slots__``: none may grow a ``__dict__``.
* Bytes per idle connection (tracemalloc, gateway in this process, clients in a
  subprocess so their allocations are not counted) stay under a generous bound.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import tracemalloc

from wsfleet_gateway.protection.admission import Decision
from wsfleet_gateway.protection.auth import Principal
from wsfleet_gateway.protection.bandwidth import TokenBucket
from wsfleet_gateway.protection.jwt_auth import JwtAuthenticator
from wsfleet_gateway.protection.quotas import TierQuotas
from wsfleet_gateway.server import ConnectionListener, WsServer
from wsfleet_gateway.session import Session

from tests.protection.support import SECRET, protected_settings, running, token
from tests.support.waiting import wait_until
from wsfleet.services import RedisServer

CONNECTIONS = 300
WARMUP = 200
"""Warm-up connections also grow the Redis pools to their working size before measuring."""
MAX_BYTES_PER_CONNECTION = 24_000
"""Measured ~14 KB (picows transport and protocol ~8.5 KB of it); generous for noise."""

CLIENT = r"""
import base64, os, socket, sys
port, tokens = int(sys.argv[1]), sys.argv[2].split()
n = len(tokens)
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {tokens[i]}\r\n\r\n"
    ).encode())
    buf = b""
    while b"welcome" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("closed before welcome")
        buf += chunk
    socks.append(s)
print("ready", flush=True)
sys.stdin.read()  # hold the connections until the parent closes our stdin (or kills us)
"""


def _has_dict(obj: object) -> bool:
    return hasattr(obj, "__dict__")


def test_per_connection_objects_have_no_dict() -> None:
    principal = Principal(user="u", tier="paid", channels=("room.*",), max_channels=3)
    quotas = TierQuotas({"free": 3, "paid": 10}, "free")
    jwt_principal = JwtAuthenticator(SECRET, "HS256", quotas).verify(token("u2", ["a.*"]))
    ws = WsServer.__new__(WsServer)
    listener = ConnectionListener(ws, principal)
    objects: list[object] = [
        principal,
        jwt_principal,
        TokenBucket(100.0, 200.0, 3, 0.0),
        Decision.__new__(Decision),
        listener,
        Session.__new__(Session),
    ]
    grown = [type(obj).__name__ for obj in objects if _has_dict(obj)]
    assert grown == [], f"per-connection objects with a __dict__: {grown}"


def test_jwt_principals_share_patterns_and_tier() -> None:
    quotas = TierQuotas({"free": 3, "paid": 10}, "free")
    auth = JwtAuthenticator(SECRET, "HS256", quotas)
    a = auth.verify(token("alice", ["room.*", "lobby"], tier="paid"))
    b = auth.verify(token("bob", ["room.*", "lobby"], tier="paid"))
    c = auth.verify(token("carol", ["other"], tier="paid"))
    assert a.channels == ("room.*", "lobby")
    assert a.channels is b.channels
    assert a.tier is b.tier is c.tier
    assert c.channels == ("other",)
    assert c.channels is not a.channels
    assert (a.user, b.user, a.max_channels) == ("alice", "bob", 10)


def test_session_allocates_subscriptions_on_first_use() -> None:
    session = Session.__new__(Session)
    session._subscriptions = None
    subs = session.subscriptions
    assert subs == {}
    assert session.subscriptions is subs


async def _open_clients(port: int, tokens: list[str]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLIENT,
        str(port),
        " ".join(tokens),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=120)
    assert line.startswith(b"ready"), f"client process failed: {line!r}"
    return proc


async def test_idle_connection_bytes_with_features_on(redis_server: RedisServer) -> None:
    settings = protected_settings(
        redis_url=redis_server.url, heartbeat_s=600, idle_timeout_s=1200, max_connections=5000
    )
    tokens = [token(f"user-{i}", ["room.*", "lobby"]) for i in range(WARMUP + CONNECTIONS)]
    procs: list[asyncio.subprocess.Process] = []
    async with running(settings) as gw:
        try:
            procs.append(await _open_clients(gw.port, tokens[:WARMUP]))
            await wait_until(lambda: gw.connections == WARMUP, timeout_s=60)
            gc.collect()
            tracemalloc.start(1)
            try:
                before = tracemalloc.get_traced_memory()[0]
                procs.append(await _open_clients(gw.port, tokens[WARMUP:]))
                await wait_until(lambda: gw.connections == WARMUP + CONNECTIONS, timeout_s=120)
                await wait_until(lambda: not gw.ctx.workers and not gw.ws.admitting, timeout_s=60)
                gc.collect()
                after = tracemalloc.get_traced_memory()[0]
            finally:
                tracemalloc.stop()
            per_connection = (after - before) / CONNECTIONS
            print(f"idle connection, features on: {per_connection:.0f} B (tracemalloc)")
            assert 0 < per_connection < MAX_BYTES_PER_CONNECTION, per_connection
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()
