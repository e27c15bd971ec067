"""`wsfleet operator`: run the kopf operator (in-cluster config or KUBECONFIG).

    wsfleet operator --all-namespaces
    wsfleet operator --namespace shop --namespace chat --peering wsfleet

Settings come from `WSFLEET_OPERATOR_*` env (flags win): the liveness
endpoint (kopf's `/healthz`), the operator's own Prometheus metrics port,
and kopf peering for HA (several replicas, one active). If one of kopf's essential tasks
dies (a watch stream on an ERROR event), the process exits 1: see `watchdog`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import socket
import threading
import zlib

import kopf
import structlog
from prometheus_client import start_http_server
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from wsfleet_operator import opmetrics, watchdog
from wsfleet_operator.handlers import OperatorConfig, build_registry

log = structlog.get_logger("wsfleet.operator.cli")


class OperatorSettings(BaseSettings):
    """The operator process (env `WSFLEET_OPERATOR_<NAME>`)."""

    model_config = SettingsConfigDict(env_prefix="WSFLEET_OPERATOR_", extra="ignore")

    namespaces: list[str] = Field(default_factory=list)
    """Namespaces to watch; empty with all_namespaces=False means the pod's namespace."""
    all_namespaces: bool = False
    liveness_host: str = "0.0.0.0"
    liveness_port: int = Field(default=8080, ge=0, le=65535)
    """kopf liveness endpoint `/healthz` (0 = off)."""
    metrics_port: int = Field(default=9100, ge=0, le=65535)
    """The operator's Prometheus metrics (0 = off)."""
    peering: str | None = None
    """kopf peering name (needs kopf's KopfPeering CRDs); None = standalone."""
    priority: int | None = None
    """Peering priority: the highest alive replica is the active one. Unset: derived from
    the pod name (`HOSTNAME`), so replicas of one Deployment differ (`own_priority`)."""
    forecast: bool = True
    """Use the seasonal forecast floor for fleets with `forecast.enabled`."""
    dashboard: bool = True
    """Serve the dashboard from the operator (its own `WSFLEET_DASHBOARD_*` settings apply)."""
    log_level: str = "info"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "operator",
        help="run the WebSocketFleet Kubernetes operator",
        description="Run the WebSocketFleet operator (kopf). Settings: WSFLEET_OPERATOR_* env.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace", "-n", action="append", dest="namespaces", help="watch this namespace"
    )
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", default=None, help="watch every namespace"
    )
    parser.add_argument("--liveness-port", type=int, help="kopf /healthz port (0 = off)")
    parser.add_argument("--metrics-port", type=int, help="operator metrics port (0 = off)")
    parser.add_argument("--peering", help="kopf peering name for HA (default: standalone)")
    parser.add_argument("--priority", type=int, help="peering priority")
    parser.add_argument("--no-forecast", action="store_true", help="ignore forecast floors")
    parser.add_argument("--no-dashboard", action="store_true", help="do not serve the dashboard")
    parser.add_argument("--log-level", help="debug, info, warning, error")
    parser.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> OperatorSettings:
    overrides: dict[str, object] = {}
    for name in ("namespaces", "all_namespaces", "liveness_port", "metrics_port", "peering"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "priority", None) is not None:
        overrides["priority"] = args.priority
    if getattr(args, "log_level", None):
        overrides["log_level"] = args.log_level
    if getattr(args, "no_forecast", False):
        overrides["forecast"] = False
    if getattr(args, "no_dashboard", False):
        overrides["dashboard"] = False
    return OperatorSettings(**overrides)  # type: ignore[arg-type]


def _configure_logging(level: str) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    logging.basicConfig(level=numeric, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
    )


PRIORITY_RANGE = 1_000_000


def own_priority(hostname: str | None = None) -> int:
    """A stable kopf peering priority from the pod name (Kubernetes sets `HOSTNAME` to it).

    kopf pauses every replica that sees a live peer of the same priority, so each replica
    needs its own: a CRC32 of the pod name (collision odds ~1e-6 per pair).
    """
    name = hostname or os.environ.get("HOSTNAME") or socket.gethostname()
    return zlib.crc32(name.encode()) % PRIORITY_RANGE


def _is_pattern(namespace: str) -> bool:
    """kopf's own test for a namespace glob/negation/list (references.select_specific_...)."""
    return any(ch in namespace for ch in "!*?,")


def kopf_settings(settings: OperatorSettings) -> kopf.OperatorSettings:
    """kopf's settings for this run.

    Namespaced with exact names only: kopf's cluster scanning (listing/watching namespaces
    and CRDs, both cluster-scoped) is turned off, so a namespaced Role suffices and kopf
    logs no permission warnings. With glob patterns kopf must list namespaces (the
    `namespaces` rule in `rbac.REQUIRED_RULES`); cluster-wide it never does.
    """
    out = kopf.OperatorSettings()
    namespaced = not settings.all_namespaces
    if namespaced and not any(_is_pattern(ns) for ns in settings.namespaces):
        out.scanning.disabled = True
    return out


def operator_kwargs(settings: OperatorSettings) -> dict[str, object]:
    """Keyword arguments of `kopf.operator` for these settings."""
    kwargs: dict[str, object] = {}
    if settings.all_namespaces:
        kwargs["clusterwide"] = True
    elif settings.namespaces:
        kwargs["namespaces"] = list(settings.namespaces)
    else:
        kwargs["namespaces"] = [_own_namespace()]
    if settings.liveness_port:
        kwargs["liveness_endpoint"] = (
            f"http://{settings.liveness_host}:{settings.liveness_port}/healthz"
        )
    if settings.peering:
        kwargs["peering_name"] = settings.peering
        kwargs["priority"] = settings.priority if settings.priority is not None else own_priority()
        kwargs["standalone"] = False
    else:
        kwargs["standalone"] = True
    return kwargs


def _own_namespace() -> str:
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


async def run_operator(
    settings: OperatorSettings,
    config: OperatorConfig | None = None,
    stop_flag: asyncio.Event | threading.Event | None = None,
) -> None:
    """Run until cancelled or `stop_flag` is set; raise `KopfTaskFailed` if one of kopf's
    essential tasks (a watch stream, …) dies (`watchdog`: never stay deaf)."""
    if config is None:
        factory = None
        if settings.forecast:
            from wsfleet_operator.forecast.provider import default_forecaster_factory

            factory = default_forecaster_factory
        config = OperatorConfig(forecaster_factory=factory)
    registry = _with_dashboard(config) if settings.dashboard else build_registry(config)
    log.info("operator.starting", **{k: str(v) for k, v in operator_kwargs(settings).items()})
    kwargs = operator_kwargs(settings)

    async def run_kopf(stop: asyncio.Event) -> None:
        await kopf.operator(
            registry=registry,
            settings=kopf_settings(settings),
            stop_flag=stop,
            **kwargs,  # type: ignore[arg-type]
        )

    await watchdog.supervise(run_kopf, stop_flag)


def _with_dashboard(config: OperatorConfig) -> kopf.OperatorRegistry:
    """The operator's handlers and, when it is built and enabled, the dashboard's: it
    draws the forecast from the very models the operator's forecasters fit."""
    try:
        from wsfleet_operator.dashboard.app import DashboardSettings
        from wsfleet_operator.dashboard.forecasts import ForecastModels
        from wsfleet_operator.dashboard.kopf import register_dashboard
    except ModuleNotFoundError as exc:  # pragma: no cover - shipped together
        log.warning("operator.dashboard_unavailable", error=str(exc))
        return build_registry(config)
    dashboard_settings = DashboardSettings()
    if not dashboard_settings.enabled:
        return build_registry(config)
    models = ForecastModels()
    factory = models.remembering(config.forecaster_factory)
    registry = build_registry(dataclasses.replace(config, forecaster_factory=factory))
    register_dashboard(registry, dashboard_settings, models)
    return registry


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    _configure_logging(settings.log_level)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, registry=opmetrics.REGISTRY)
    try:
        asyncio.run(run_operator(settings))
    except KeyboardInterrupt:
        return 130
    except watchdog.KopfTaskFailed:
        return 1  # logged (`operator.kopf_task_failed`); Kubernetes restarts the pod
    return 0
