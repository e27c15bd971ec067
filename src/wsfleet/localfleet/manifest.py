"""Load a WebSocketFleet manifest and adapt it to run on this machine.

The manifest is the very object `kubectl apply` takes (examples/*.yaml). The
local fleet keeps its spec (replicas, targets, behavior, limits, drain) and
replaces what only makes sense in a cluster: Redis and Prometheus are ours,
and the Prometheus selector matches the labels we give local targets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from wsfleet_operator.resources import limits_env
from wsfleet_operator.spec import API_VERSION, DEFAULT_SELECTOR, KIND, FleetSpec


class ManifestError(ValueError):
    """The file is not a usable WebSocketFleet manifest."""


@dataclass(frozen=True)
class FleetManifest:
    """A parsed manifest: identity and spec."""

    name: str
    namespace: str
    spec: FleetSpec
    path: Path | None = None


def parse_manifest(document: Any, path: Path | None = None) -> FleetManifest:
    """Validate one YAML document as a WebSocketFleet (raises `ManifestError`)."""
    where = str(path) if path else "manifest"
    if not isinstance(document, dict):
        raise ManifestError(f"{where}: expected a mapping, got {type(document).__name__}")
    kind = document.get("kind")
    if kind != KIND:
        raise ManifestError(f"{where}: kind is {kind!r}, expected {KIND!r}")
    api_version = document.get("apiVersion")
    if api_version != API_VERSION:
        raise ManifestError(f"{where}: apiVersion is {api_version!r}, expected {API_VERSION!r}")
    metadata = document.get("metadata") or {}
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name:
        raise ManifestError(f"{where}: metadata.name is required")
    namespace = metadata.get("namespace") or "default"
    try:
        spec = FleetSpec.model_validate(document.get("spec") or {})
    except ValidationError as exc:
        raise ManifestError(f"{where}: invalid spec:\n{exc}") from exc
    # Redis and auth are always ours locally, so only replica/target rules can be wrong here.
    errors = [e for e in spec.semantic_errors() if not e.startswith(("redis", "auth"))]
    if errors:
        raise ManifestError(f"{where}: " + "; ".join(errors))
    return FleetManifest(name=name, namespace=str(namespace), spec=spec, path=path)


def load_manifest(path: Path) -> FleetManifest:
    """Read the first WebSocketFleet in a YAML file (other kinds are skipped)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from exc
    fleets = [d for d in documents if isinstance(d, dict) and d.get("kind") == KIND]
    if not fleets:
        raise ManifestError(f"{path}: no {KIND} document found")
    return parse_manifest(fleets[0], path)


@dataclass(frozen=True)
class Overrides:
    """Local knobs for demos and tests (None = keep the manifest's value)."""

    interval_s: float | None = None
    scale_up_window_s: int | None = None
    scale_down_window_s: int | None = None
    drain_grace_s: int | None = None
    connections_per_user_per_minute: int | None = None
    connections_per_pod: int | None = None
    """Connection capacity of one gateway (targets.connectionsPerPod)."""
    scale_down_pods_per_minute: int | None = None
    """behavior.scaleDown.maxPodsPerMinute."""
    cost_guard_window_s: int | None = None
    """costGuard.windowSeconds: the span in which at most maxSurgePerWindow pods are added."""


def localize(
    manifest: FleetManifest, prometheus_url: str, redis_url: str, overrides: Overrides
) -> FleetSpec:
    """The spec the local autoscaler runs with: our Prometheus and Redis, local overrides."""
    spec = manifest.spec.model_copy(deep=True)
    spec.redis.url = redis_url
    spec.redis.secret_ref = None
    spec.prometheus.url = prometheus_url
    spec.prometheus.selector = DEFAULT_SELECTOR
    spec.dry_run = False
    if overrides.interval_s is not None:
        spec.behavior.interval_seconds = overrides.interval_s
    if overrides.scale_up_window_s is not None:
        spec.behavior.scale_up.stabilization_window_seconds = overrides.scale_up_window_s
    if overrides.scale_down_window_s is not None:
        spec.behavior.scale_down.stabilization_window_seconds = overrides.scale_down_window_s
    if overrides.drain_grace_s is not None:
        spec.drain.grace_period_seconds = overrides.drain_grace_s
    if overrides.connections_per_user_per_minute is not None:
        spec.limits.connections_per_user_per_minute = overrides.connections_per_user_per_minute
    if overrides.connections_per_pod is not None:
        spec.targets.connections_per_pod = overrides.connections_per_pod
    if overrides.scale_down_pods_per_minute is not None:
        spec.behavior.scale_down.max_pods_per_minute = overrides.scale_down_pods_per_minute
    if overrides.cost_guard_window_s is not None:
        spec.cost_guard.window_seconds = overrides.cost_guard_window_s
    return FleetSpec.model_validate(spec.model_dump())


def target_labels(manifest: FleetManifest, pod: str) -> dict[str, str]:
    """file_sd labels of one local gateway, so the default selector matches it."""
    return {"namespace": manifest.namespace, "service": manifest.name, "pod": pod}


def gateway_env(spec: FleetSpec, known: Iterable[str] | None = None) -> dict[str, str]:
    """``WSFLEET_*`` env for every gateway, from the spec's limits and drain.

    The mapping is the operator's own (`wsfleet_operator.resources.limits_env`, which
    also fills the ConfigMap of cluster gateways), so a local and a cluster gateway of
    one manifest get the same settings. `known`: the gateway settings' field names;
    when given, variables the gateway does not read are left out. The spec's
    ``gateway.extraEnv`` is applied last, unchanged.
    """
    names = None if known is None else {name.upper() for name in known}
    env = {
        name: value
        for name, value in limits_env(spec).items()
        if names is None or name.removeprefix("WSFLEET_") in names
    }
    env.update(spec.gateway.extra_env)
    return env
