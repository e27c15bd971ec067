"""`wsfleet loadtest SCENARIO --url ws://...`: the command line of the load tool."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from wsfleet.loadtest.engine import format_progress
from wsfleet.loadtest.options import ScenarioOptions
from wsfleet.loadtest.report import Report, write_chart
from wsfleet.loadtest.scenarios import SCENARIOS
from wsfleet.loadtest.shape import RemoteTargetError, check_target

# (flag, option field, type, help)
_NUMERIC: tuple[tuple[str, str, type, str], ...] = (
    ("--connections", "connections", int, "users (wedding-season: base connections)"),
    ("--max-requests", "max_requests", int, "stop after this many requests in total"),
    ("--channels", "channels", int, "wedding-channel pool size"),
    ("--channels-per-user", "channels_per_user", int, "channels each photographer cycles"),
    ("--habit", "habit", float, "photographer: share of switches to the next in the round"),
    ("--zipf", "zipf_s", float, "channel popularity skew (0 = uniform)"),
    ("--think-time", "think_time_s", float, "mean think time between actions, seconds"),
    ("--publish-probability", "publish_probability", float, "photographer: share of publishes"),
    ("--coordinators", "coordinators", int, "venue-broadcast: publishing coordinators"),
    ("--subscribers", "subscribers_per_channel", int, "venue-broadcast: subscribers per venue"),
    ("--publish-rate", "publish_rate", float, "publishes/s per coordinator"),
    ("--coordinator-share", "coordinator_share", float, "wedding-season: coordinator share"),
    ("--payload-bytes", "payload_bytes", int, "padding of published data"),
    ("--compress", "compress", float, "wedding-season: simulated seconds per real second"),
    ("--start-hour", "start_hour", float, "wedding-season: hour the day starts at"),
    ("--peak-factor", "peak_factor", float, "wedding-season: evening peak / base"),
    ("--connect-concurrency", "connect_concurrency", int, "handshakes in flight"),
    ("--connect-timeout", "connect_timeout_s", float, "seconds per connection attempt"),
    ("--request-timeout", "request_timeout_s", float, "seconds per request"),
    ("--drain", "drain_s", float, "seconds to wait for in-flight deliveries at the end"),
    ("--seed", "seed", int, "random seed (runs repeat)"),
    ("--progress-interval", "progress_interval_s", float, "seconds between progress lines"),
)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "loadtest",
        help="run a load scenario against a wsfleet endpoint",
        description=(
            "Run a realistic load scenario (photographer, venue-broadcast, wedding-season) "
            "against a wsfleet WebSocket endpoint and report connections, messages, latency "
            "percentiles and throughput. Loopback targets only unless --allow-remote."
        ),
    )
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--url", default="ws://127.0.0.1:8080/ws", help="WebSocket endpoint")
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds (default 10; wedding-season: one compressed day, 86400/compress)",
    )
    for flag, name, kind, text in _NUMERIC:
        parser.add_argument(flag, dest=name, type=kind, default=None, help=text)
    parser.add_argument("--processes", type=int, default=1, help="load processes (each <20k fds)")
    parser.add_argument("--token", default=None, help="JWT sent as Authorization: Bearer")
    parser.add_argument(
        "--jwt-secret",
        default=os.environ.get("WSFLEET_LOADTEST_JWT_SECRET"),
        help="HS256 secret: mint a token per connection, one load user each "
        "(env WSFLEET_LOADTEST_JWT_SECRET)",
    )
    parser.add_argument("--jwt-tier", default=None, help="tier claim of minted tokens")
    parser.add_argument("--channel-prefix", default=None, help="prefix of every channel name")
    parser.add_argument(
        "--allow-remote", action="store_true", help="permit a non-loopback target (be careful)"
    )
    parser.add_argument("--json", dest="json_path", default=None, help="write the JSON report")
    parser.add_argument("--chart", default=None, help="write a PNG chart (needs matplotlib)")
    parser.add_argument("--quiet", action="store_true", help="no live progress line")
    parser.set_defaults(func=run_cli)


def options_from_args(args: argparse.Namespace) -> ScenarioOptions:
    values: dict[str, Any] = {}
    for _flag, name, _kind, _text in _NUMERIC:
        value = getattr(args, name)
        if value is not None:
            values[name] = value
    if args.duration is not None:
        values["duration_s"] = args.duration
    if args.token is not None:
        values["token"] = args.token
    if args.jwt_secret:
        values["jwt_secret"] = args.jwt_secret
    if args.jwt_tier is not None:
        values["jwt_tier"] = args.jwt_tier
    if args.channel_prefix is not None:
        values["channel_prefix"] = args.channel_prefix
    values["allow_remote"] = bool(args.allow_remote)
    return ScenarioOptions.from_mapping(values)


def _progress_printer(op: str) -> Any:
    def show(snap: dict[str, float]) -> None:
        sys.stderr.write("\r" + format_progress(snap, op) + "\x1b[K")
        sys.stderr.flush()

    return show


def _run_here(name: str, url: str, opts: ScenarioOptions) -> Report:
    import uvloop

    from wsfleet.loadtest.runner import run_scenario

    async def main() -> Report:
        stop = asyncio.Event()
        opts.stop = stop
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        try:
            return await run_scenario(name, url, opts)
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)

    return uvloop.run(main())


def run_cli(args: argparse.Namespace) -> int:
    try:
        opts = options_from_args(args)
        check_target(args.url, opts.allow_remote)
    except RemoteTargetError as exc:
        print(f"wsfleet loadtest: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"wsfleet loadtest: {exc}", file=sys.stderr)
        return 2
    if args.processes < 1:
        print("wsfleet loadtest: --processes must be >= 1", file=sys.stderr)
        return 2
    op = "delivery" if args.scenario == "venue-broadcast" else "switch"
    if not args.quiet:
        opts.progress = _progress_printer(op)
    if args.processes == 1:
        report = _run_here(args.scenario, args.url, opts)
    else:
        from wsfleet.loadtest.multiproc import run_processes

        report = run_processes(args.scenario, args.url, opts, args.processes)
    if not args.quiet:
        sys.stderr.write("\n")
    print(report.summary_text())
    if args.json_path:
        if args.json_path == "-":
            print(report.to_json())
        else:
            Path(args.json_path).write_text(report.to_json() + "\n")
    if args.chart:
        write_chart(report, Path(args.chart))
    return 0 if report.stats.opened > 0 else 1
