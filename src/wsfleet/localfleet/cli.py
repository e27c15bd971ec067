"""`wsfleet up -f FLEET.yaml`: run a WebSocketFleet manifest on this machine.

Ctrl-C (or SIGTERM) stops everything it started; a second Ctrl-C stops the
gateways at once instead of letting them close their connections.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import structlog
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from wsfleet.localfleet.fleet import FleetOptions, LocalFleet, PortInUseError
from wsfleet.localfleet.load import LoadUnavailableError, check_load, run_load
from wsfleet.localfleet.manifest import ManifestError, Overrides, load_manifest
from wsfleet.localfleet.supervisor import GatewayStartError
from wsfleet.services import MissingBinaryError

log = structlog.get_logger("wsfleet.localfleet")


class UpSettings(BaseSettings):
    """Defaults of `wsfleet up` from ``WSFLEET_UP_*`` env (flags win)."""

    model_config = SettingsConfigDict(env_prefix="WSFLEET_UP_", extra="ignore")

    interval_s: float | None = Field(default=None, gt=0)
    """Autoscaler interval in seconds (manifest: behavior.intervalSeconds)."""
    scale_up_window_s: int | None = Field(default=None, ge=0)
    """Scale-up stabilization window in seconds."""
    scale_down_window_s: int | None = Field(default=None, ge=0)
    """Scale-down stabilization window in seconds."""
    drain_grace_s: int | None = Field(default=None, ge=1)
    """Drain grace period of each gateway in seconds."""
    scrape_interval_s: float = Field(default=1.0, gt=0)
    """Prometheus scrape interval in seconds."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "up",
        help="run a WebSocketFleet manifest on this machine (Redis, Prometheus, gateways)",
        description=__doc__,
    )
    parser.add_argument("-f", "--file", required=True, type=Path, help="WebSocketFleet YAML")
    parser.add_argument("--port", type=int, default=None, help="public port (default: manifest)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--replicas", type=int, default=None, help="gateways to start with")
    parser.add_argument("--load", default=None, help="drive a built-in load scenario")
    parser.add_argument(
        "--load-connections",
        type=int,
        default=None,
        help="base connections of the load (wedding-season: x10 at the evening peak)",
    )
    parser.add_argument("--no-autoscale", action="store_true", help="keep --replicas fixed")
    parser.add_argument("--interval", type=float, default=None, help="autoscaler interval, s")
    parser.add_argument("--scale-up-window", type=int, default=None, help="seconds")
    parser.add_argument("--scale-down-window", type=int, default=None, help="seconds")
    parser.add_argument("--drain-grace", type=int, default=None, help="seconds")
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs and data here")
    parser.add_argument(
        "--dashboard-port", type=int, default=8090, help="dashboard port (taken: any free one)"
    )
    parser.add_argument("--no-dashboard", action="store_true", help="do not serve the dashboard")
    parser.add_argument(
        "--no-auth", action="store_true", help="gateways accept anyone (development only)"
    )
    parser.set_defaults(func=run)


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


DEMO_TIMING = Overrides(interval_s=2.0, scale_up_window_s=0, scale_down_window_s=30)
"""With --load: timing short enough to watch a compressed day grow and shrink the fleet."""
LOAD_USER_CONNECTS_PER_MIN = 1_000_000
"""With --load: one process plays thousands of users with one identity, so the per-user
connection rate limit would stop it; it is lifted for that run (and the summary says so)."""


def options_from(args: argparse.Namespace, settings: UpSettings) -> FleetOptions:
    demo = DEMO_TIMING if args.load else Overrides()
    overrides = Overrides(
        interval_s=_first(args.interval, settings.interval_s, demo.interval_s),
        scale_up_window_s=_first(
            args.scale_up_window, settings.scale_up_window_s, demo.scale_up_window_s
        ),
        scale_down_window_s=_first(
            args.scale_down_window, settings.scale_down_window_s, demo.scale_down_window_s
        ),
        drain_grace_s=_first(args.drain_grace, settings.drain_grace_s),
        connections_per_user_per_minute=LOAD_USER_CONNECTS_PER_MIN if args.load else None,
    )
    return FleetOptions(
        host=args.host,
        port=args.port,
        replicas=args.replicas,
        autoscale=not args.no_autoscale,
        overrides=overrides,
        scrape_interval_s=settings.scrape_interval_s,
        workdir=args.workdir,
        dashboard_port=None if args.no_dashboard else args.dashboard_port,
        auth=not args.no_auth,
    )


def _configure_logging() -> None:
    if structlog.is_configured():
        return
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=_stderr_logger,
    )


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    """A logger on the current `sys.stderr` (looked up when a logger is made)."""
    return structlog.PrintLogger(sys.stderr)


def say(line: str) -> None:
    print(line, flush=True)


async def serve(args: argparse.Namespace, options: FleetOptions) -> int:
    manifest = load_manifest(args.file)
    fleet = LocalFleet(manifest, options, notify=say)
    stop = asyncio.Event()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            say("stopping: draining gateways, then Prometheus and Redis (Ctrl-C again: now)")
            stop.set()
        elif fleet.supervisor is not None:
            for gateway in fleet.gateways():
                fleet.supervisor.kill(gateway)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    load_task: asyncio.Task[int] | None = None
    try:
        starting = asyncio.create_task(fleet.start())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            return 130
        stopped.cancel()
        starting.result()
        say(fleet.summary())
        if args.load:
            load_overrides: dict[str, Any] = {"token": fleet.token("load-tool")}
            if args.load_connections is not None:
                load_overrides["connections"] = args.load_connections
            say(
                f"load: {args.load} as user 'load-tool'; the per-user connection rate limit "
                "is lifted for this run (one process plays every user)"
            )
            load_task = asyncio.create_task(
                run_load(args.load, fleet.ws_url, say, load_overrides), name="load"
            )
            load_task.add_done_callback(_report_load_end)
        say("Ready. Stop with Ctrl-C.")
        await stop.wait()
        return 0
    finally:
        if load_task is not None:
            load_task.cancel()
            await asyncio.gather(load_task, return_exceptions=True)
        await fleet.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        say("stopped: nothing left running")


def _report_load_end(task: asyncio.Task[int]) -> None:
    if not task.cancelled() and task.exception() is not None:
        say(f"load stopped: {task.exception()!r} (the fleet keeps running)")


def run(args: argparse.Namespace) -> int:
    _configure_logging()
    try:
        options = options_from(args, UpSettings())
        if args.load:
            check_load(args.load)
        return asyncio.run(serve(args, options))
    except (ManifestError, MissingBinaryError, LoadUnavailableError, PortInUseError) as exc:
        print(f"wsfleet up: {exc}", file=sys.stderr)
        return 2
    except GatewayStartError as exc:
        print(f"wsfleet up: a gateway did not start: {exc}", file=sys.stderr)
        return 1
