"""`wsfleet up -f FLEET.yaml`: run a WebSocketFleet manifest on this machine.

Ctrl-C (or SIGTERM) stops everything it started: the load first, then the
gateways, Prometheus and Redis; nothing is started or replaced meanwhile. A
second Ctrl-C kills the load and the gateways at once instead of letting
them close their connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

import structlog
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from wsfleet.localfleet.fleet import FleetOptions, LocalFleet, PortInUseError
from wsfleet.localfleet.load import (
    DEMO_CONNECTIONS_PER_POD,
    LoadProcess,
    LoadUnavailableError,
    check_load,
)
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
    parser.add_argument(
        "--load-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a load-tool option (repeatable), e.g. compress=960 for a day in 90 s",
    )
    parser.add_argument(
        "--connections-per-pod",
        type=int,
        default=None,
        help=f"one gateway's capacity for the autoscaler (with --load: {DEMO_CONNECTIONS_PER_POD})",
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
    parser.add_argument(
        "--redis-cluster",
        type=cluster_primaries,
        default=0,
        metavar="PRIMARIES",
        help="a local Redis Cluster of PRIMARIES shards, one replica each (3: 6 nodes)",
    )
    parser.set_defaults(func=run)


def cluster_primaries(text: str) -> int:
    """``--redis-cluster``: 0 (one Redis) or at least 3 primaries (Redis Cluster's minimum)."""
    value = int(text)
    if value != 0 and value < 3:
        raise argparse.ArgumentTypeError("a Redis Cluster needs at least 3 primaries")
    return value


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


DEMO_TIMING = Overrides(
    interval_s=2.0,
    scale_up_window_s=0,
    scale_down_window_s=15,
    scale_down_pods_per_minute=10,
    cost_guard_window_s=60,
    connections_per_pod=DEMO_CONNECTIONS_PER_POD,
)
"""With --load: sizing and timing to watch a compressed day grow and shrink the fleet on a
small machine. A demo minute is 8 hours of the day, so scale-down is not held to the
production pace (one pod a minute), the cost guard counts the pods added per minute, not
per hour (else it would cap the third demo day), and a gateway's capacity fits the demo
load (see `wsfleet.localfleet.load.LOCAL_DEFAULTS`)."""
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
        connections_per_pod=_first(args.connections_per_pod, demo.connections_per_pod),
        scale_down_pods_per_minute=demo.scale_down_pods_per_minute,
        cost_guard_window_s=demo.cost_guard_window_s,
    )
    return FleetOptions(
        stop_timeout_s=GATEWAY_STOP_S,
        host=args.host,
        port=args.port,
        replicas=args.replicas,
        autoscale=not args.no_autoscale,
        overrides=overrides,
        scrape_interval_s=settings.scrape_interval_s,
        workdir=args.workdir,
        dashboard_port=None if args.no_dashboard else args.dashboard_port,
        auth=not args.no_auth,
        redis_cluster=args.redis_cluster,
    )


GATEWAY_STOP_S = 5.0
"""On Ctrl-C, how long the gateways get to exit after SIGTERM before SIGKILL (the load is
stopped before, so they have no load to drain)."""


def parse_load_options(values: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs as load options; a VALUE that is JSON (a number) is decoded."""
    options: dict[str, Any] = {}
    for item in values:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise LoadUnavailableError(f"--load-option {item!r}: expected NAME=VALUE")
        try:
            options[name] = json.loads(raw)
        except ValueError:
            options[name] = raw
    from wsfleet.loadtest.options import ScenarioOptions

    try:
        ScenarioOptions.from_mapping(options)
    except (TypeError, ValueError) as exc:
        raise LoadUnavailableError(f"--load-option: {exc}") from exc
    return options


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


async def serve(
    args: argparse.Namespace, options: FleetOptions, load_overrides: dict[str, Any] | None = None
) -> int:
    manifest = load_manifest(args.file)
    fleet = LocalFleet(manifest, options, notify=say)
    stop = asyncio.Event()
    signals = 0
    load: LoadProcess | None = None
    stop_began: float | None = None

    def on_signal() -> None:
        nonlocal signals, stop_began
        signals += 1
        if signals == 1:
            stop_began = time.monotonic()
            say("stopping: the load, then the gateways, Prometheus and Redis (Ctrl-C again: now)")
            fleet.begin_stop()  # from now on nothing scales, starts or respawns
            stop.set()
            return
        if load is not None:
            load.kill()
        if fleet.supervisor is not None:
            for gateway in fleet.gateways():
                fleet.supervisor.kill(gateway)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
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
            say(
                f"load: {args.load} as user 'load-tool', in its own process; the per-user "
                "connection rate limit is lifted for this run (one process plays every user)"
            )
            load = LoadProcess(
                args.load, fleet.ws_url, say, load_overrides or {}, token=fleet.token("load-tool")
            )
            await load.start()
        say("Ready. Stop with Ctrl-C.")
        await stop.wait()
        return 0
    finally:
        fleet.begin_stop()
        if load is not None:
            await load.stop()  # first: the gateways then have nothing left to drain
        await fleet.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        took = f" ({time.monotonic() - stop_began:.1f} s)" if stop_began is not None else ""
        say(f"stopped: nothing left running{took}")


def run(args: argparse.Namespace) -> int:
    _configure_logging()
    try:
        options = options_from(args, UpSettings())
        load_overrides: dict[str, Any] = {}
        if args.load:
            check_load(args.load)
            load_overrides = parse_load_options(args.load_option)
            if args.load_connections is not None:
                load_overrides["connections"] = args.load_connections
        return asyncio.run(serve(args, options, load_overrides))
    except (ManifestError, MissingBinaryError, LoadUnavailableError, PortInUseError) as exc:
        print(f"wsfleet up: {exc}", file=sys.stderr)
        return 2
    except GatewayStartError as exc:
        print(f"wsfleet up: a gateway did not start: {exc}", file=sys.stderr)
        return 1
