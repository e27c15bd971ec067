"""The benchmark suite: every figure for every server kind, several runs, medians.

Server processes run pinned to one CPU and this (load) process to another, so
the server's figures are not bent by the load tool competing for its core.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsfleet.bench import figures, native, peers, probes
from wsfleet.bench.interleave import Target, interleaved_switch, window_order
from wsfleet.bench.servers import (
    BASELINE,
    GATEWAY,
    GATEWAY_OFF,
    ServerProcess,
    gateway_server,
    reference_server,
    usable_cpus,
)
from wsfleet.bench.versus import Contender, interleaved_fanout
from wsfleet.bench.wedding import wedding_messages
from wsfleet.services import RedisServer

KINDS = (BASELINE, GATEWAY_OFF, GATEWAY)
BENCH_API_KEY = "bench-api-key"
BENCH_JWT_SECRET = "wsfleet-bench-jwt-secret-0123456789"
"""HS256 key of the features-on gateway; the load mints one token per connection."""
BENCH_LIMITS = {"WSFLEET_MAX_CONNECTIONS": "50000"}
"""Admission limit above the suite's connection counts (it measures, it does not admit)."""

Log = Callable[[str], None]


@dataclass
class SuiteConfig:
    """Sizes of every figure (full suite by default; `quick()` for a smoke run)."""

    idle_connections: int = 10_000
    background_dps: float = 20_000.0
    switchers: int = 20
    switch_duration_s: float = 6.0
    fanout_subscribers: int = 1_000
    fanout_messages: int = 400
    fanout_timeout_s: float = 30.0
    latency_subscribers: int = 100
    latency_rate: float = 50.0
    latency_duration_s: float = 3.0
    photographer_users: int = 200
    photographer_duration_s: float = 6.0
    runs: int = 3
    kinds: tuple[str, ...] = KINDS
    load_gc_tune: bool = True
    """Freeze the load process's long-lived objects after opening the fleet (all kinds)."""
    background_process: bool = True
    """Background traffic of the switch figure in its own load process (all kinds)."""
    ab_windows: int = 40
    """Window pairs of the interleaved on/off switch figure (``interleave.py``): 20 s of
    switching per kind, so a few stalls of the machine land on both kinds alike."""
    ab_window_s: float = 0.5
    versus_rounds: int = 12
    versus_messages: int = 100
    """The interleaved fan-out of every server (``versus.py``): rounds, publishes a burst."""
    versus_native: bool = True
    """Also run it with the native (Go) receiver as the subscribers (``native.py``;
    needs Go): the targets are judged on that run when it was measured."""
    peers: tuple[str, ...] = peers.PEER_KINDS
    """Node peers measured beside the gateway (``peers.py``; needs node and npm)."""
    compression_subscribers: int = 200
    compression_messages: int = 200
    """Wedding messages (0.2-8 KB) fanned out plain and compressed (``wedding.py``)."""

    @classmethod
    def quick(cls) -> SuiteConfig:
        """A < 1 minute smoke of the whole suite (numbers indicative only)."""
        return cls(
            idle_connections=1_000,
            background_dps=2_000.0,
            switchers=5,
            switch_duration_s=2.0,
            fanout_subscribers=200,
            fanout_messages=100,
            fanout_timeout_s=8.0,
            latency_subscribers=20,
            latency_rate=20.0,
            latency_duration_s=1.5,
            photographer_users=20,
            photographer_duration_s=2.0,
            runs=1,
            ab_windows=4,
            ab_window_s=0.25,
            compression_subscribers=50,
            compression_messages=60,
            versus_rounds=4,
            versus_messages=40,
        )

    @classmethod
    def tiny(cls) -> SuiteConfig:
        """The smallest sizes that still exercise every figure (used by the tests)."""
        return dataclasses.replace(
            cls.quick(),
            idle_connections=100,
            background_dps=500.0,
            switch_duration_s=1.0,
            fanout_subscribers=50,
            fanout_messages=20,
            fanout_timeout_s=5.0,
            latency_subscribers=5,
            latency_duration_s=0.5,
            photographer_users=5,
            photographer_duration_s=1.0,
            compression_subscribers=10,
            compression_messages=12,
            versus_rounds=2,
            versus_messages=10,
        )


def cpu_plan() -> tuple[int | None, int | None]:
    """(server CPU, load CPU): the first two usable CPUs, or no pinning on one CPU."""
    cpus = usable_cpus()
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


def gateway_env(kind: str) -> dict[str, str]:
    """The environment of a gateway kind: its features off, or on (with a JWT key)."""
    if kind == GATEWAY_OFF:
        return {**BENCH_LIMITS, "WSFLEET_AUTH": "disabled", "WSFLEET_PROTECTION": "false"}
    return {**BENCH_LIMITS, "WSFLEET_JWT_SECRET": BENCH_JWT_SECRET}


def start_server(kind: str, cpu: int | None, redis_url: str | None) -> ServerProcess:
    return start_server_process(kind, cpu, redis_url).start()


def start_server_process(kind: str, cpu: int | None, redis_url: str | None) -> ServerProcess:
    """A server kind's process, not started yet."""
    if kind == BASELINE:
        return reference_server(cpu=cpu)
    if kind == GATEWAY_OFF:
        return gateway_server(cpu=cpu, kind=GATEWAY_OFF, env=gateway_env(kind))
    return gateway_server(
        cpu=cpu, redis_url=redis_url, api_key=BENCH_API_KEY, env=gateway_env(kind)
    )


def secret_for(kind: str) -> str | None:
    return BENCH_JWT_SECRET if kind == GATEWAY else None


def start_redis(cpu: int | None) -> RedisServer:
    redis = RedisServer().start()
    if cpu is not None and redis.proc is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(redis.proc.pid, {cpu})
    return redis


async def measure_server(
    kind: str, config: SuiteConfig, cpu: int | None, redis_url: str | None, log: Log
) -> dict[str, float | str]:
    """All single-server figures of one kind, in one server process."""
    server = await asyncio.to_thread(start_server, kind, cpu, redis_url)
    out: dict[str, float | str] = {}
    secret = secret_for(kind)
    try:
        log(f"  {kind}: {config.idle_connections} idle connections")
        idle, fleet = await figures.open_idle(
            server.ws_url, config.idle_connections, server.rss, secret
        )
        out.update(idle)
        saved_gc = probes.calm_gc() if config.load_gc_tune else None
        try:
            log(f"  {kind}: switch latency with {config.idle_connections} connections open")
            out.update(
                await figures.switch_idle(
                    fleet, config.switchers, config.switch_duration_s, server_cpu=server.cpu_s
                )
            )
            log(f"  {kind}: switch latency under {config.background_dps:.0f} deliveries/s")
            out.update(
                await figures.switch_under_load(
                    fleet,
                    config.background_dps,
                    config.switchers,
                    config.switch_duration_s,
                    separate_process=config.background_process,
                    jwt_secret=secret,
                )
            )
        finally:
            await fleet.engine.close_all()
            if saved_gc is not None:
                probes.release_gc(saved_gc)
        log(f"  {kind}: fan-out to {config.fanout_subscribers} subscribers")
        out.update(
            await figures.fanout(
                server.ws_url,
                config.fanout_subscribers,
                config.fanout_messages,
                config.fanout_timeout_s,
                jwt_secret=secret,
                server_cpu=server.cpu_s,
            )
        )
        log(f"  {kind}: same-node delivery latency")
        out.update(
            await figures.delivery_latency(
                server.ws_url,
                server.ws_url,
                config.latency_subscribers,
                config.latency_rate,
                config.latency_duration_s,
                secret,
            )
        )
        if kind == GATEWAY:
            log(f"  {kind}: photographer cache hit ratio")
            cache = await figures.photographer_cache_ratio(
                server.ws_url,
                server.admin_url,
                config.photographer_users,
                config.photographer_duration_s,
                secret,
            )
            out["cache_status"] = str(cache["status"])
            if "hit_ratio" in cache:
                out["cache_hit_ratio"] = float(cache["hit_ratio"])
                out["cache_l1_hit_ratio"] = float(cache["l1_hit_ratio"])
    finally:
        await asyncio.to_thread(server.stop)
    return out


async def measure_cross_pod(
    config: SuiteConfig, cpu: int | None, redis_url: str, log: Log
) -> dict[str, float | str]:
    """Publish on gateway A, deliver on gateway B, through one real Redis."""
    log("  cross-pod: two gateways through Redis")
    a = await asyncio.to_thread(start_server, GATEWAY, cpu, redis_url)
    try:
        b = await asyncio.to_thread(start_server, GATEWAY, cpu, redis_url)
        try:
            result = await figures.delivery_latency(
                a.ws_url,
                b.ws_url,
                config.latency_subscribers,
                config.latency_rate,
                config.latency_duration_s,
                BENCH_JWT_SECRET,
            )
        finally:
            await asyncio.to_thread(b.stop)
    finally:
        await asyncio.to_thread(a.stop)
    return {f"crosspod_{k}": v for k, v in result.items()}


async def measure_peer(
    kind: str, config: SuiteConfig, cpu: int | None, redis_url: str, root: Path, log: Log
) -> dict[str, float | str]:
    """A Node peer: idle memory per connection and fan-out, as `measure_server` measures
    them (the same client, sizes and order)."""
    server = await asyncio.to_thread(peers.peer_server(kind, root, cpu, redis_url).start)
    out: dict[str, float | str] = {}
    try:
        log(f"  {kind}: {config.idle_connections} idle connections")
        idle, fleet = await figures.open_idle(server.ws_url, config.idle_connections, server.rss)
        await fleet.engine.close_all()
        out.update(idle)
        log(f"  {kind}: fan-out to {config.fanout_subscribers} subscribers")
        out.update(
            await figures.fanout(
                server.ws_url,
                config.fanout_subscribers,
                config.fanout_messages,
                config.fanout_timeout_s,
                server_cpu=server.cpu_s,
            )
        )
    finally:
        await asyncio.to_thread(server.stop)
    return out


async def measure_compression(
    config: SuiteConfig, cpu: int | None, redis_url: str, run: int, log: Log
) -> dict[str, float | str]:
    """The features-on gateway fanning wedding messages out to subscribers without and
    with permessage-deflate (in turn, the order alternating by run)."""
    log(f"  compression: {config.compression_messages} wedding messages, plain and deflated")
    messages = wedding_messages(config.compression_messages)
    server = await asyncio.to_thread(start_server, GATEWAY, cpu, redis_url)
    out: dict[str, float | str] = {}
    try:
        modes = ("plain", "deflate") if run % 2 == 0 else ("deflate", "plain")
        for mode in modes:
            result = await figures.wedding_fanout(
                server.ws_url,
                config.compression_subscribers,
                messages,
                compression=mode == "deflate",
                timeout_s=config.fanout_timeout_s * 2,
                jwt_secret=BENCH_JWT_SECRET,
                server_cpu=server.cpu_s,
            )
            out.update({f"compression_{mode}_{k}": v for k, v in result.items()})
    finally:
        await asyncio.to_thread(server.stop)
    return out


async def measure_versus(
    config: SuiteConfig,
    cpu: int | None,
    load_cpu: int | None,
    redis_url: str,
    peer_kinds: tuple[str, ...],
    peer_root: Path | None,
    log: Log,
) -> dict[str, dict[str, float | str]]:
    """Every server at once, fan-out bursts in alternating rounds (``versus.py``)."""
    kinds = (*config.kinds, *peer_kinds)
    log(f"  versus: fan-out of {', '.join(kinds)} in {config.versus_rounds} alternating rounds")
    servers: dict[str, ServerProcess] = {}
    try:
        for kind in kinds:
            if kind in peer_kinds:
                assert peer_root is not None
                process = peers.peer_server(kind, peer_root, cpu, redis_url)
            else:
                process = start_server_process(kind, cpu, redis_url)
            servers[kind] = process.launch()
        for process in servers.values():
            await asyncio.to_thread(process.wait_ready)
        out: dict[str, dict[str, float | str]] = {kind: {} for kind in kinds}
        clients = [False]
        why_not = native.unavailable() if config.versus_native else "off (SuiteConfig)"
        if why_not is None:
            clients.append(True)
        else:
            log(f"  versus: no native receiver: {why_not}")
            out[GATEWAY]["nv_errors"] = f"not measured: {why_not}"
        for use_native in clients:
            contenders = {
                kind: Contender(servers[kind].ws_url, secret_for(kind), servers[kind].cpu_s)
                for kind in kinds
            }
            log(f"  versus: {'native (Go)' if use_native else 'Python'} subscribers")
            figures = await interleaved_fanout(
                contenders,
                config.fanout_subscribers,
                config.versus_messages,
                config.versus_rounds,
                reference=GATEWAY,
                timeout_s=config.fanout_timeout_s,
                native_cpu=load_cpu,
                native=use_native,
            )
            for kind, values in figures.items():
                out[kind].update(values)
        return out
    finally:
        for server in servers.values():
            await asyncio.to_thread(server.stop)


AB = (GATEWAY_OFF, GATEWAY)


async def measure_interleaved(
    config: SuiteConfig, cpu: int | None, redis_url: str, log: Log
) -> dict[str, dict[str, float | str]]:
    """Both gateways at once, their switches in alternating windows (``interleave.py``)."""
    log(f"  interleaved: both gateways, {config.idle_connections} connections open on each")
    servers: dict[str, ServerProcess] = {}
    try:
        for kind in AB:
            servers[kind] = await asyncio.to_thread(start_server, kind, cpu, redis_url)
        targets = {kind: Target(servers[kind].ws_url, secret_for(kind)) for kind in AB}
        return await interleaved_switch(
            targets,
            config.idle_connections,
            config.switchers,
            config.ab_windows,
            config.ab_window_s,
        )
    finally:
        for server in servers.values():
            await asyncio.to_thread(server.stop)


async def run_suite(config: SuiteConfig, log: Log | None = None) -> dict[str, Any]:
    """Every run of every figure: ``{"runs": [{kind: {figure: value}}], ...}``."""
    say: Log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    server_cpu, load_cpu = cpu_plan()
    if load_cpu is not None:
        os.sched_setaffinity(0, {load_cpu})
    redis = await asyncio.to_thread(start_redis, server_cpu)
    runs: list[dict[str, dict[str, float | str]]] = []
    started = time.perf_counter()
    peer_kinds, peer_root, peers_status = await prepare_peers(config, say)
    try:
        for run in range(config.runs):
            say(f"run {run + 1}/{config.runs}")
            figures_by_kind: dict[str, dict[str, float | str]] = {}
            for kind in run_order(config.kinds + peer_kinds, run):
                try:
                    if kind in peer_kinds:
                        assert peer_root is not None
                        figures_by_kind[kind] = await measure_peer(
                            kind, config, server_cpu, redis.url, peer_root, say
                        )
                    else:
                        figures_by_kind[kind] = await measure_server(
                            kind, config, server_cpu, redis.url, say
                        )
                except Exception as exc:  # one broken server must not hide the others
                    say(f"  {kind}: failed: {exc!r}")
                    figures_by_kind[kind] = {"suite_errors": f"{type(exc).__name__}: {exc}"}
            if GATEWAY in config.kinds and GATEWAY_OFF in config.kinds:
                both: dict[str, dict[str, float | str]]
                try:
                    both = await measure_interleaved(config, server_cpu, redis.url, say)
                except Exception as exc:
                    say(f"  interleaved: failed: {exc!r}")
                    both = {kind: {"ab_errors": f"{type(exc).__name__}: {exc}"} for kind in AB}
                for kind in AB:
                    figures_by_kind[kind].update(both[kind])
            if GATEWAY in config.kinds:
                try:
                    cross = await measure_cross_pod(config, server_cpu, redis.url, say)
                except Exception as exc:
                    say(f"  cross-pod: failed: {exc!r}")
                    cross = {"crosspod_errors": f"{type(exc).__name__}: {exc}"}
                figures_by_kind[GATEWAY].update(cross)
                try:
                    squeezed = await measure_compression(config, server_cpu, redis.url, run, say)
                except Exception as exc:
                    say(f"  compression: failed: {exc!r}")
                    squeezed = {"compression_errors": f"{type(exc).__name__}: {exc}"}
                figures_by_kind[GATEWAY].update(squeezed)
                try:
                    versus = await measure_versus(
                        config, server_cpu, load_cpu, redis.url, peer_kinds, peer_root, say
                    )
                except Exception as exc:
                    say(f"  versus: failed: {exc!r}")
                    versus = {GATEWAY: {"vs_errors": f"{type(exc).__name__}: {exc}"}}
                for kind, values in versus.items():
                    figures_by_kind.setdefault(kind, {}).update(values)
            runs.append(figures_by_kind)
    finally:
        await asyncio.to_thread(redis.stop)
    return {
        "runs": runs,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "pinning": {"server_cpu": server_cpu, "load_cpu": load_cpu},
        "peers": peers_status,
    }


async def prepare_peers(config: SuiteConfig, log: Log) -> tuple[tuple[str, ...], Path | None, str]:
    """Install the Node peers (``peers.install``): the kinds to measure, their folder and
    what happened (the results say why peers are missing, if they are)."""
    if not config.peers:
        return (), None, "not asked for"
    reason = peers.unavailable()
    if reason is not None:
        log(f"  peers: not measured: {reason}")
        return (), None, f"not measured: {reason}"
    try:
        root = await asyncio.to_thread(peers.install, log)
    except (OSError, subprocess.SubprocessError) as exc:
        log(f"  peers: npm failed: {exc!r}")
        return (), None, f"not measured: npm failed: {exc}"
    return config.peers, root, f"measured: node peers from {root}"


def run_order(kinds: tuple[str, ...], run: int) -> tuple[str, ...]:
    """The kinds in the order run `run` (from 0) measures them: every other run reversed.

    The machine drifts (other tenants, CPU state) over a suite; alternating the order
    gives each kind early and late slots alike, so a drift does not favour one of them
    in the per-run comparisons.
    """
    return window_order(kinds, run)


def median_of(values: list[float]) -> float:
    clean = [v for v in values if isinstance(v, int | float) and not math.isnan(v)]
    return statistics.median(clean) if clean else float("nan")
