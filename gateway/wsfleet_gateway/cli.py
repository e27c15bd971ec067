"""``wsfleet gateway``: run one gateway process until SIGINT/SIGTERM.

Flags override the ``WSFLEET_*`` env vars. When listening, the process logs
one JSON line ``{"event": "gateway_ready", "ws": ..., "admin": ...}``. On
SIGTERM/SIGINT it drains (``reconnect`` frames, then 1001 going away) and
exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

import structlog
import uvloop

from wsfleet_gateway.app import Gateway
from wsfleet_gateway.gctune import GcSettings, GcTuner
from wsfleet_gateway.logs import configure_logging
from wsfleet_gateway.protection.jwt_auth import AuthConfigError
from wsfleet_gateway.settings import GatewaySettings
from wsfleet_gateway.tasks import cancel_and_wait, wait_ended

log = structlog.get_logger("wsfleet_gateway.cli")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "gateway",
        help="run a WebSocket channel gateway",
        description="Run one gateway process (settings from WSFLEET_* env; flags override).",
    )
    parser.add_argument("--host", help="WebSocket interface (WSFLEET_HOST)")
    parser.add_argument("--port", type=int, help="WebSocket port, 0 = any (WSFLEET_PORT)")
    parser.add_argument("--admin-host", help="admin HTTP interface (WSFLEET_ADMIN_HOST)")
    parser.add_argument("--admin-port", type=int, help="admin HTTP port (WSFLEET_ADMIN_PORT)")
    parser.add_argument("--redis-url", help="Redis URL; unset = in-memory (WSFLEET_REDIS_URL)")
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        default=None,
        help="--redis-url is a seed node of a Redis Cluster (WSFLEET_REDIS_CLUSTER=true)",
    )
    parser.add_argument("--node-name", help="node name (WSFLEET_NODE_NAME)")
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        default=None,
        help="bind with SO_REUSEPORT (WSFLEET_REUSE_PORT)",
    )
    parser.add_argument(
        "--no-auth",
        action="store_true",
        default=None,
        help="run WITHOUT authentication, development only (WSFLEET_AUTH=disabled)",
    )
    parser.add_argument(
        "--no-protection",
        action="store_true",
        default=None,
        help="turn off rate limits, cache, breaker, audit (benchmarks; WSFLEET_PROTECTION=false)",
    )
    parser.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> GatewaySettings:
    """Env settings with every given flag applied on top."""
    overrides: dict[str, Any] = {
        name: getattr(args, name)
        for name in ("host", "port", "admin_host", "admin_port", "redis_url", "node_name")
        if getattr(args, name, None) is not None
    }
    if getattr(args, "redis_cluster", None):
        overrides["redis_cluster"] = True
    if getattr(args, "reuse_port", None):
        overrides["reuse_port"] = True
    if getattr(args, "no_auth", None):
        overrides["auth"] = "disabled"
    if getattr(args, "no_protection", None):
        overrides["protection"] = False
    return GatewaySettings(**overrides)


async def serve(settings: GatewaySettings, gc_settings: GcSettings | None = None) -> int:
    """Run a gateway until SIGTERM/SIGINT, drain, stop; returns the exit code.

    A second signal during the drain cuts it short (clients closed with 1001).
    `gc_settings` (the process entry point passes them; None = leave the GC
    alone) tune this process's garbage collector once the gateway listens.
    """
    gateway = Gateway(settings)
    await gateway.start()
    loop = asyncio.get_running_loop()
    tuning: asyncio.Task[None] | None = None
    if gc_settings is not None:
        tuner = GcTuner(gc_settings, lambda: gateway.connections)
        tuner.apply()
        tuning = loop.create_task(tuner.run(), name="gc-tuning")
    stop = asyncio.Event()
    drain: asyncio.Task[object] | None = None

    def on_signal() -> None:
        if stop.is_set() and drain is not None:
            drain.cancel()
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    log.info(
        "gateway_ready",
        node=settings.node_name,
        ws=gateway.ws_url,
        admin=gateway.admin_url,
        broker=type(gateway.broker).__name__,
    )
    try:
        await stop.wait()
        log.info("gateway_stopping", node=settings.node_name, connections=gateway.connections)
        drain = loop.create_task(gateway.shutdown())
        await wait_ended(drain)  # a second signal cancels it (on_signal)
    finally:
        await cancel_and_wait(tuning)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await gateway.stop()
    log.info("gateway_stopped", node=settings.node_name)
    return 0


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    configure_logging(settings.log_level, settings.log_json)
    try:
        return uvloop.run(serve(settings, GcSettings()))
    except AuthConfigError as exc:
        log.error("gateway_refused_to_start", reason=str(exc))
        print(f"wsfleet gateway: refusing to start: {exc}", file=sys.stderr, flush=True)
        return 2
