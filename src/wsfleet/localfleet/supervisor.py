"""A supervisor for N gateway processes sharing one public port.

Every gateway binds the same public port with ``SO_REUSEPORT`` (the kernel
balances new connections among the listeners) and its own admin port
(health, readiness, metrics). The supervisor keeps `desired` gateways
serving like a ReplicaSet would: a gateway that dies unexpectedly is
replaced; one sent SIGTERM drains and is reaped when it exits, or killed at
its drain deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import structlog

from wsfleet.localfleet import procs
from wsfleet.localfleet.scrape import CONNECTIONS_METRIC, fetch_metric, probe
from wsfleet.services import free_port

log = structlog.get_logger("wsfleet.localfleet")


class GatewayState(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    EXITED = "exited"


class GatewayStartError(RuntimeError):
    """A gateway process exited or never became ready."""


@dataclass
class Gateway:
    """One gateway process and what the supervisor knows about it."""

    name: str
    host: str
    admin_port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    state: GatewayState = GatewayState.STARTING
    started_at: float = field(default_factory=time.monotonic)
    drain_deadline: float | None = None
    exit_code: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self.admin_port}"

    @property
    def admin_address(self) -> str:
        return f"{self.host}:{self.admin_port}"


@dataclass(frozen=True)
class SupervisorConfig:
    """How to start gateways. Times in seconds."""

    port: int
    workdir: Path
    host: str = "127.0.0.1"
    redis_url: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    python: str = sys.executable
    ready_timeout_s: float = 60.0
    drain_timeout_s: float = 60.0
    stop_timeout_s: float = 10.0
    supervise_interval_s: float = 0.25


OnChange = Callable[[list[Gateway]], None]


class GatewaySupervisor:
    """Starts, drains, kills and reaps gateway processes."""

    def __init__(
        self,
        config: SupervisorConfig,
        session: aiohttp.ClientSession,
        on_change: OnChange | None = None,
    ) -> None:
        self.config = config
        self.session = session
        self.on_change = on_change
        self.gateways: dict[str, Gateway] = {}
        self.exited: list[Gateway] = []
        self.desired = 0
        self._names = (f"gw-{n}" for n in itertools.count(1))
        self._starting = 0
        self._stopping = False
        self._replacements: set[asyncio.Task[None]] = set()

    # -- views -------------------------------------------------------------
    def serving(self) -> list[Gateway]:
        """Ready gateways that are not draining."""
        return [g for g in self.gateways.values() if g.state is GatewayState.READY]

    def active(self) -> list[Gateway]:
        """Starting or ready gateways: what counts as a replica."""
        return [
            g
            for g in self.gateways.values()
            if g.state in (GatewayState.STARTING, GatewayState.READY)
        ]

    def draining(self) -> list[Gateway]:
        return [g for g in self.gateways.values() if g.state is GatewayState.DRAINING]

    def pids(self) -> set[int]:
        return {g.pid for g in self.gateways.values()}

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(list(self.gateways.values()))

    # -- starting ----------------------------------------------------------
    def _argv(self, admin_port: int) -> list[str]:
        argv = [
            self.config.python,
            "-m",
            "wsfleet",
            "gateway",
            "--host",
            self.config.host,
            "--port",
            str(self.config.port),
            "--admin-port",
            str(admin_port),
            "--reuse-port",
        ]
        if self.config.redis_url:
            argv += ["--redis-url", self.config.redis_url]
        return argv

    def _env(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.config.env)
        env.setdefault("WSFLEET_NODE_NAME", name)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    async def start_gateway(self, attempts: int = 2) -> Gateway:
        """Start one gateway and wait until its /readyz answers 200."""
        return await self._reserved_start(attempts)

    def _reserved_start(self, attempts: int = 2) -> asyncio.Task[Gateway]:
        """A task starting one gateway, counted in `_starting` from now, not from when the
        task first runs: `supervise` must not start the same replica again meanwhile."""
        self._starting += 1
        task = asyncio.ensure_future(self._start(attempts))
        task.add_done_callback(self._start_done)
        return task

    def _start_done(self, _task: asyncio.Task[Gateway]) -> None:
        self._starting -= 1

    async def _start(self, attempts: int) -> Gateway:
        for attempt in range(1, attempts + 1):
            if self._stopping:
                raise GatewayStartError("the fleet is stopping: no new gateway")
            gateway = self._spawn()
            try:
                await self._wait_ready(gateway)
            except GatewayStartError:
                if attempt == attempts or self._stopping:
                    raise
                log.warning("gateway_start_retry", gateway=gateway.name)
                continue
            return gateway
        raise AssertionError("unreachable")

    def _spawn(self) -> Gateway:
        name = next(self._names)
        admin_port = free_port(self.config.host)
        log_path = self.config.workdir / f"{name}.log"
        proc = procs.spawn(self._argv(admin_port), env=self._env(name), log_path=log_path)
        gateway = Gateway(
            name=name,
            host=self.config.host,
            admin_port=admin_port,
            proc=proc,
            log_path=log_path,
        )
        self.gateways[name] = gateway
        log.info("gateway_spawned", gateway=name, pid=proc.pid, admin_port=admin_port)
        return gateway

    async def _wait_ready(self, gateway: Gateway) -> None:
        deadline = time.monotonic() + self.config.ready_timeout_s
        while time.monotonic() < deadline:
            if gateway.proc.poll() is not None:
                self._forget(gateway)
                tail = _tail(gateway.log_path)
                raise GatewayStartError(
                    f"{gateway.name} exited with {gateway.proc.returncode} before ready "
                    f"(log {gateway.log_path}):\n{tail}"
                )
            if gateway.state is not GatewayState.STARTING:
                return  # told to drain (or stopped) while starting: not an error
            if await probe(self.session, f"{gateway.admin_url}/readyz"):
                gateway.state = GatewayState.READY
                log.info(
                    "gateway_ready",
                    gateway=gateway.name,
                    pid=gateway.pid,
                    startup_s=round(time.monotonic() - gateway.started_at, 3),
                )
                self._changed()
                return
            await asyncio.sleep(0.05)
        procs.send_signal(gateway.proc, signal.SIGKILL)
        await self._wait_exit(gateway, self.config.stop_timeout_s)
        raise GatewayStartError(
            f"{gateway.name} not ready after {self.config.ready_timeout_s}s "
            f"(log {gateway.log_path}):\n{_tail(gateway.log_path)}"
        )

    async def scale_up_to(self, count: int) -> list[Gateway]:
        """Start gateways (concurrently) until `count` are active; wait until ready."""
        if self._stopping:
            return []
        self.desired = max(self.desired, count)
        missing = count - len(self.active()) - self._starting
        if missing <= 0:
            return []
        return list(await asyncio.gather(*(self._reserved_start() for _ in range(missing))))

    # -- stopping ----------------------------------------------------------
    def begin_drain(self, gateway: Gateway, timeout_s: float | None = None) -> None:
        """SIGTERM `gateway`: it drains and exits; killed at the deadline."""
        if gateway.state in (GatewayState.DRAINING, GatewayState.EXITED):
            return
        timeout = self.config.drain_timeout_s if timeout_s is None else timeout_s
        gateway.state = GatewayState.DRAINING
        gateway.drain_deadline = time.monotonic() + timeout
        procs.send_signal(gateway.proc, signal.SIGTERM)
        log.info("gateway_drain_started", gateway=gateway.name, pid=gateway.pid, timeout_s=timeout)
        self._changed()

    def kill(self, gateway: Gateway) -> None:
        """SIGKILL `gateway` (chaos); the supervise loop replaces it."""
        procs.send_signal(gateway.proc, signal.SIGKILL)
        log.info("gateway_killed", gateway=gateway.name, pid=gateway.pid)

    def _forget(self, gateway: Gateway) -> None:
        gateway.exit_code = gateway.proc.poll()
        gateway.state = GatewayState.EXITED
        if self.gateways.pop(gateway.name, None) is not None:
            self.exited.append(gateway)
            self._changed()

    def reap(self) -> list[Gateway]:
        """Forget exited gateways; kill drains past their deadline."""
        gone: list[Gateway] = []
        now = time.monotonic()
        for gateway in list(self.gateways.values()):
            code = gateway.proc.poll()
            if code is not None:
                expected = gateway.state is GatewayState.DRAINING or self._stopping
                self._forget(gateway)
                gone.append(gateway)
                event = "gateway_exited" if expected else "gateway_died"
                log.info(event, gateway=gateway.name, pid=gateway.pid, exit_code=code)
            elif gateway.drain_deadline is not None and now > gateway.drain_deadline:
                log.warning("gateway_drain_deadline", gateway=gateway.name, pid=gateway.pid)
                procs.send_signal(gateway.proc, signal.SIGKILL)
        return gone

    async def _wait_exit(self, gateway: Gateway, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while gateway.proc.poll() is None:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        self._forget(gateway)
        return True

    async def wait_exited(self, gateway: Gateway, timeout_s: float) -> bool:
        """Wait until `gateway` exits; True when it did within `timeout_s`."""
        return await self._wait_exit(gateway, timeout_s)

    async def supervise(self) -> None:
        """Reap exits and replace gateways that died, until cancelled."""
        while True:
            self.reap()
            missing = self.desired - len(self.active()) - self._starting
            if missing > 0 and not self._stopping:
                log.info("gateway_replacing", missing=missing, desired=self.desired)
                for _ in range(missing):
                    task = asyncio.create_task(self._replace())
                    self._replacements.add(task)
                    task.add_done_callback(self._replacements.discard)
            await asyncio.sleep(self.config.supervise_interval_s)

    async def _replace(self) -> None:
        try:
            await self.start_gateway()
        except GatewayStartError as exc:
            log.error("gateway_replace_failed", error=str(exc))

    def stop_starting(self) -> None:
        """Start nothing from now on, replace nothing: the fleet is stopping.

        The first thing a stop does, so that gateways that die or are killed
        while the rest stops (a second Ctrl-C) are not started again.
        """
        self._stopping = True
        for task in list(self._replacements):
            task.cancel()

    async def stop_all(self) -> None:
        """Stop every gateway: SIGTERM, then SIGKILL after `stop_timeout_s`."""
        self.stop_starting()
        self.desired = 0
        for gateway in list(self.gateways.values()):
            procs.send_signal(gateway.proc, signal.SIGTERM)
            gateway.state = GatewayState.DRAINING
        results = await asyncio.gather(
            *(self._wait_exit(g, self.config.stop_timeout_s) for g in list(self.gateways.values()))
        )
        if not all(results):
            for gateway in list(self.gateways.values()):
                procs.send_signal(gateway.proc, signal.SIGKILL)
            await asyncio.gather(
                *(
                    self._wait_exit(g, self.config.stop_timeout_s)
                    for g in list(self.gateways.values())
                )
            )
        for gateway in list(self.gateways.values()):  # unkillable: still forget, say so
            log.error("gateway_not_stopped", gateway=gateway.name, pid=gateway.pid)

    # -- live numbers ------------------------------------------------------
    async def connection_counts(
        self, gateways: list[Gateway] | None = None
    ) -> dict[str, float | None]:
        """Live `wsfleet_connections` of each gateway, from its admin /metrics."""
        chosen = self.active() if gateways is None else gateways
        values = await asyncio.gather(
            *(fetch_metric(self.session, g.admin_url, CONNECTIONS_METRIC) for g in chosen)
        )
        return {g.name: v for g, v in zip(chosen, values, strict=True)}


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""
