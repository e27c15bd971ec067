"""Server processes under test: started pinned to a CPU, measured, stopped.

Three kinds, started the same way (`wsfleet.gatewayproc.ServerProcess`) so their
figures compare:

- ``baseline``: the plain picows broadcast server (`reference_server`);
- ``gateway-off``: the gateway with its features off (embedded in-memory
  broker, no Redis, no API key);
- ``gateway``: the gateway with its features on (Redis broker, API key).

Each prints one JSON "ready" line; its output goes to a file, not a pipe, so a
chatty server never blocks and nothing in the load process has to drain it.
"""

from __future__ import annotations

import os
import sys

from wsfleet.gatewayproc import ServerProcess, gateway_process, pin_to, rss_bytes

__all__ = [
    "BASELINE",
    "GATEWAY",
    "GATEWAY_OFF",
    "ServerProcess",
    "gateway_server",
    "pin_to",
    "reference_server",
    "rss_bytes",
    "usable_cpus",
]

BASELINE = "baseline"
GATEWAY_OFF = "gateway-off"
GATEWAY = "gateway"


def usable_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def reference_server(cpu: int | None = None, reply_delay_ms: float = 0.0) -> ServerProcess:
    """The plain picows broadcast server (or, with a delay, the delay server)."""
    argv = [sys.executable, "-m", "wsfleet.bench.reference_server", "--port", "0"]
    if reply_delay_ms:
        argv += ["--reply-delay-ms", str(reply_delay_ms)]
    return ServerProcess(BASELINE, argv, "reference_server_ready", cpu=cpu)


def gateway_server(
    cpu: int | None = None,
    redis_url: str | None = None,
    api_key: str | None = None,
    env: dict[str, str] | None = None,
    kind: str = GATEWAY,
) -> ServerProcess:
    """A `wsfleet gateway` process on free ports (features on when given Redis)."""
    return gateway_process(kind=kind, redis_url=redis_url, api_key=api_key, env=env, cpu=cpu)
