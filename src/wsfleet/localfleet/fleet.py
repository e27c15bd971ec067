"""The local fleet: Redis, Prometheus, gateways and the autoscaler loop, as one unit.

`LocalFleet` starts everything in order, keeps Prometheus' file_sd target list
in step with the gateways, runs the operator's autoscaler on its interval and
stops everything it started, in reverse order, whatever happens.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import aiohttp
import structlog

from wsfleet.localfleet import procs
from wsfleet.localfleet.autoscale import (
    AutoscalerUnavailableError,
    Autoscaling,
    build_autoscaler,
    run_autoscaler,
)
from wsfleet.localfleet.dashboard import LocalDashboard
from wsfleet.localfleet.manifest import (
    FleetManifest,
    Overrides,
    gateway_env,
    localize,
    target_labels,
)
from wsfleet.localfleet.supervisor import Gateway, GatewaySupervisor, SupervisorConfig
from wsfleet.localfleet.target import LocalProcessTarget
from wsfleet.services import (
    PrometheusServer,
    RedisCluster,
    RedisServer,
    find_binary,
    free_port,
)

log = structlog.get_logger("wsfleet.localfleet")


@dataclass(frozen=True)
class FleetOptions:
    """How to run a manifest locally. Times in seconds."""

    host: str = "127.0.0.1"
    port: int | None = None
    """Public port; None: the manifest's gateway.port; 0: any free port."""
    replicas: int | None = None
    """Gateways to start with (clamped to the manifest's min/max); None: min."""
    autoscale: bool = True
    overrides: Overrides = field(default_factory=Overrides)
    scrape_interval_s: float = 1.0
    workdir: Path | None = None
    """Where logs and data go; None: a temporary directory removed on stop."""
    ready_timeout_s: float = 60.0
    stop_timeout_s: float = 10.0
    api_key: str | None = None
    """Admin API key of the gateways; None: a random one."""
    dashboard_port: int | None = 8090
    """Where to serve the dashboard (taken: any free port); None: no dashboard."""
    auth: bool = True
    """JWT auth on the gateways with a secret made for this run (False: anyone connects)."""
    redis_cluster: int = 0
    """Run a Redis Cluster of this many primaries (each with one replica) instead of one
    Redis; the gateways get ``WSFLEET_REDIS_CLUSTER=true``. 0: one Redis."""


class PortInUseError(RuntimeError):
    """The public port is taken (by another program, or another local fleet)."""


def check_port_free(host: str, port: int) -> None:
    """Raise `PortInUseError` unless `port` can be bound exclusively right now.

    A bind without SO_REUSEPORT also fails when another local fleet's
    gateways listen there, so two fleets never share one port by accident;
    SO_REUSEADDR lets connections of a fleet just stopped (TIME_WAIT) pass.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PortInUseError(
                f"port {port} on {host} is in use ({exc.strerror}): stop what holds it "
                "(another `wsfleet up`?) or pick another one with --port"
            ) from exc


def _known_gateway_settings() -> set[str]:
    from wsfleet_gateway.settings import GatewaySettings

    return set(GatewaySettings.model_fields)


class LocalFleet:
    """A WebSocketFleet manifest running on this machine."""

    def __init__(
        self,
        manifest: FleetManifest,
        options: FleetOptions | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.manifest = manifest
        self.options = options or FleetOptions()
        self.notify = notify or (lambda _line: None)
        self.api_key = self.options.api_key or secrets.token_urlsafe(16)
        self.jwt_secret = secrets.token_urlsafe(32)
        self.redis: RedisServer | None = None
        self.redis_cluster: RedisCluster | None = None
        self.prometheus: PrometheusServer | None = None
        self.supervisor: GatewaySupervisor | None = None
        self.target: LocalProcessTarget | None = None
        self.autoscaling: Autoscaling | None = None
        self.dashboard: LocalDashboard | None = None
        self.port = 0
        self._session: aiohttp.ClientSession | None = None
        self._reaper: subprocess.Popen[bytes] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._own_workdir = self.options.workdir is None
        self.workdir = self.options.workdir or Path(tempfile.mkdtemp(prefix="wsfleet-up-"))
        self.spec = localize(manifest, "http://unset", "redis://unset", self.options.overrides)

    # -- addresses ---------------------------------------------------------
    @property
    def ws_url(self) -> str:
        return f"ws://{self.options.host}:{self.port}/ws"

    @property
    def prometheus_url(self) -> str:
        return self.prometheus.url if self.prometheus else ""

    def token(
        self, user: str, tier: str = "paid", channels: list[str] | None = None, ttl_s: float = 86400
    ) -> str | None:
        """A JWT the gateways accept (None when auth is off): development and the load tool."""
        if not self.options.auth:
            return None
        from wsfleet_gateway.protection.jwt_auth import issue_token

        return issue_token(
            self.jwt_secret, user, channels=channels or ["*"], tier=tier, ttl_s=ttl_s
        )

    def gateways(self) -> list[Gateway]:
        return list(self.supervisor.gateways.values()) if self.supervisor else []

    # -- lifecycle ---------------------------------------------------------
    async def start(self) -> None:
        """Start Redis, Prometheus, the initial gateways and the loops."""
        find_binary("redis-server", "redis-server")  # fail fast, before anything starts
        find_binary("prometheus", "prometheus")
        requested = self.manifest.spec.gateway.port if self.options.port is None else None
        self.port = self.options.port or requested or free_port(self.options.host)
        check_port_free(self.options.host, self.port)
        try:
            await self._start()
        except BaseException:
            self._own_workdir = False  # keep the logs of a failed start
            await self.stop()
            raise

    async def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        redis_dir = self.workdir / "redis"
        redis_dir.mkdir(exist_ok=True)
        if self.options.redis_cluster:
            self.redis_cluster = RedisCluster(
                primaries=self.options.redis_cluster, replicas=1, workdir=redis_dir
            )
            await asyncio.to_thread(self.redis_cluster.start)
            redis_url = self.redis_cluster.url
        else:
            self.redis = RedisServer(workdir=redis_dir)
            self.redis.start()
            redis_url = self.redis.url
        prom_dir = self.workdir / "prometheus"
        prom_dir.mkdir(exist_ok=True)
        self.prometheus = PrometheusServer(
            workdir=prom_dir, scrape_interval_s=self.options.scrape_interval_s
        )
        self.prometheus.start()
        self._start_reaper()
        self.spec = localize(self.manifest, self.prometheus.url, redis_url, self.options.overrides)
        self._session = aiohttp.ClientSession()
        env = gateway_env(self.spec, _known_gateway_settings())
        env["WSFLEET_API_KEY"] = self.api_key
        if self.redis_cluster is not None:
            env["WSFLEET_REDIS_CLUSTER"] = "true"
        if self.options.auth:
            env.update(WSFLEET_AUTH="enabled", WSFLEET_JWT_SECRET=self.jwt_secret)
        else:
            env["WSFLEET_AUTH"] = "disabled"
        config = SupervisorConfig(
            port=self.port,
            host=self.options.host,
            workdir=self.workdir / "logs",
            redis_url=redis_url,
            env=env,
            ready_timeout_s=self.options.ready_timeout_s,
            drain_timeout_s=self.spec.drain.grace_period_seconds + 15.0,
            stop_timeout_s=self.options.stop_timeout_s,
        )
        self.supervisor = GatewaySupervisor(config, self._session, on_change=self._write_targets)
        self.target = LocalProcessTarget(
            self.supervisor, config.drain_timeout_s, notify=self.notify
        )
        replicas = self.options.replicas or self.spec.replicas.min
        replicas = max(self.spec.replicas.min, min(self.spec.replicas.max, replicas))
        await self.supervisor.scale_up_to(replicas)
        self._tasks.append(asyncio.create_task(self.supervisor.supervise(), name="supervise"))
        if self.options.dashboard_port is not None:
            self.dashboard = LocalDashboard(
                self.manifest, self.spec, self.options.host, self.options.dashboard_port
            )
            await self.dashboard.start()
        if self.options.autoscale:
            try:
                self.autoscaling = build_autoscaler(self.spec, self.target, self.manifest)
            except AutoscalerUnavailableError as exc:
                log.warning("autoscaler_unavailable", error=str(exc))
                self.notify(f"autoscaler unavailable ({exc}): the fleet stays at {replicas}")
                return
            if self.dashboard is not None:
                autoscaler = getattr(self.autoscaling, "autoscaler", None)
                self.dashboard.watch_forecaster(getattr(autoscaler, "forecaster", None))
            self._tasks.append(
                asyncio.create_task(
                    run_autoscaler(
                        self.autoscaling,
                        self.spec.behavior.interval_seconds,
                        self.notify,
                        self._on_tick,
                    ),
                    name="autoscale",
                )
            )

    def _start_reaper(self) -> None:
        """A watchdog that stops Redis and Prometheus should we be SIGKILLed (see reaper.py)."""
        servers: list[tuple[RedisServer | PrometheusServer | None, str]] = [
            (self.redis, "redis-server"),
            (self.prometheus, "prometheus"),
        ]
        if self.redis_cluster is not None:
            servers += [(node, "redis-server") for node in self.redis_cluster.nodes]
        targets = [
            f"{server.proc.pid}:{name}"
            for server, name in servers
            if server is not None and server.proc is not None
        ]
        argv = [sys.executable, "-m", "wsfleet.localfleet.reaper", "--parent", str(os.getpid())]
        self._reaper = procs.spawn(
            [*argv, *targets],
            env=os.environ,
            log_path=self.workdir / "logs" / "reaper.log",
            tie=False,  # it ties itself, race-free
        )

    def _on_tick(self, result: object) -> None:
        if self.dashboard is not None:
            self.dashboard.update(getattr(result, "status", None))

    def _write_targets(self, gateways: list[Gateway]) -> None:
        """Rewrite Prometheus' file_sd list: every live gateway, draining included."""
        if self.prometheus is None or self.prometheus.workdir is None:
            return
        groups = [
            {"targets": [g.admin_address], "labels": target_labels(self.manifest, g.name)}
            for g in gateways
            if g.state.value in ("ready", "draining")
        ]
        path = self.prometheus.targets_file
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(path)

    def begin_stop(self) -> None:
        """The first moment of a stop: no more scaling decisions, no gateway started or
        replaced from now on (so none respawns while the rest stops). Safe to call twice."""
        if self.supervisor is not None:
            self.supervisor.stop_starting()
        for task in self._tasks:
            if task.get_name() == "autoscale":
                task.cancel()

    async def stop(self) -> None:
        """Stop everything started, in reverse order; safe to call twice."""
        self.begin_stop()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:  # not suppress(CancelledError): a cancel of stop() itself must not vanish
            await asyncio.wait(tasks)
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                log.error("fleet_task_failed", task=task.get_name(), error=repr(task.exception()))
        if self.autoscaling is not None:
            await self.autoscaling.close()
            self.autoscaling = None
        if self.dashboard is not None:
            await self.dashboard.stop()
            self.dashboard = None
        if self.supervisor is not None:
            await self.supervisor.stop_all()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._reaper is not None:  # a normal stop: the watchdog has nothing to do
            procs.send_signal(self._reaper, signal.SIGKILL)
            await asyncio.to_thread(self._reaper.wait)
            self._reaper = None
        if self.prometheus is not None:
            await asyncio.to_thread(self.prometheus.stop)
        if self.redis is not None:
            await asyncio.to_thread(self.redis.stop)
        if self.redis_cluster is not None:
            await asyncio.to_thread(self.redis_cluster.stop)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- reporting ---------------------------------------------------------
    def _auth_line(self) -> str:
        token = self.token("dev")
        if token is None:
            return "  Auth        OFF: anyone can connect (development only)"
        return f"  Dev token   {token}  (user 'dev', tier paid, all channels, 24 h; ?token=...)"

    def _redis_line(self) -> str:
        cluster = self.redis_cluster
        if cluster is not None and cluster.nodes:
            return (
                f"{cluster.url}  (Redis Cluster: {cluster.primaries} primaries,"
                f" {cluster.primaries * cluster.replicas} replicas; ports {cluster.ports})"
            )
        return self.redis.url if self.redis else "-"

    def summary(self) -> str:
        spec = self.spec
        lines = [
            f"wsfleet local fleet {self.manifest.name!r}"
            + (f" from {self.manifest.path}" if self.manifest.path else ""),
            f"  WebSocket   {self.ws_url}  (gateways share the port with SO_REUSEPORT)",
            f"  Dashboard   {self.dashboard.url if self.dashboard else '-'}",
            f"  Prometheus  {self.prometheus_url}",
            f"  Redis       {self._redis_line()}",
            f"  Admin API   POST /api/publish with 'Authorization: Bearer {self.api_key}'",
            self._auth_line(),
            "  Gateways:",
        ]
        for g in self.gateways():
            lines.append(
                f"    {g.name}  pid {g.pid}  {g.state.value:<8}  admin {g.admin_url}"
                "  (/metrics /healthz /readyz)"
            )
        manifest_capacity = self.manifest.spec.targets.connections_per_pod
        capacity = f"{spec.targets.connections_per_pod} connections/pod" + (
            f" (the manifest says {manifest_capacity})"
            if spec.targets.connections_per_pod != manifest_capacity
            else ""
        )
        scaler = (
            f"replicas {spec.replicas.min}..{spec.replicas.max}, {capacity} at "
            f"{spec.targets.target_utilization:.0%}, every {spec.behavior.interval_seconds:g}s"
            if self.options.autoscale
            else "off (fixed replica count)"
        )
        lines += [f"  Autoscaler  {scaler}", f"  Logs        {self.workdir / 'logs'}"]
        return "\n".join(lines)
