"""Pure builders of the objects a WebSocketFleet owns.

Deployment (gateway pods), Service, PodDisruptionBudget and ConfigMap
(gateway settings as `WSFLEET_*` env). No I/O: (name, namespace, uid, spec)
in, manifests out. Secrets are never inlined: a Redis URL, the HS256 JWT
secret and the admin API key are referenced with `valueFrom.secretKeyRef`; an
RS256 public key is mounted read-only from its Secret as a file.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from wsfleet_operator.spec import API_VERSION, KIND, FleetSpec

JSON = dict[str, Any]

MANAGED_BY = "wsfleet-operator"
FLEET_LABEL = "wsfleet.io/fleet"
CONFIG_HASH_ANNOTATION = "wsfleet.io/config-hash"
DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
REPLICAS_ANNOTATION = "wsfleet.io/replicas"
"""On the Deployment: the replica count the operator set last. A different `spec.replicas`
is a hand edit (drift), put back at the next tick."""
SCALE_CHANGES_ANNOTATION = "wsfleet.io/scale-changes"
"""On the Deployment: the operator's recent replica changes, `[[at, from, to], ...]` (unix
seconds). Written in the same PATCH as `spec.replicas`, so a restarted operator knows every
change its rate limits and cost guard must count: none is lost, none is made twice."""
PRE_STOP_SLEEP_S = 5
RUN_AS_USER = 10001
JWT_KEY_VOLUME = "jwt-public-key"
JWT_KEY_DIR = "/etc/wsfleet/jwt"
JWT_KEY_FILE = "public.pem"


def object_name(fleet: str) -> str:
    """Name of the Deployment, Service and PDB of `fleet`."""
    return f"{fleet}-gateway"


def config_name(fleet: str) -> str:
    return f"{fleet}-gateway-config"


def selector_labels(fleet: str) -> dict[str, str]:
    """Labels selecting the gateway pods of `fleet`."""
    return {"app.kubernetes.io/name": "wsfleet-gateway", "app.kubernetes.io/instance": fleet}


def common_labels(fleet: str) -> dict[str, str]:
    return {
        **selector_labels(fleet),
        "app.kubernetes.io/component": "gateway",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        FLEET_LABEL: fleet,
    }


def owner_reference(fleet: str, uid: str) -> JSON:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": fleet,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(name: str, fleet: str, namespace: str, uid: str) -> JSON:
    return {
        "name": name,
        "namespace": namespace,
        "labels": common_labels(fleet),
        "ownerReferences": [owner_reference(fleet, uid)],
    }


def limits_env(spec: FleetSpec) -> dict[str, str]:
    """The spec's limits, drain, features and log level as `WSFLEET_*` env: the one mapping.

    Shared by the operator's ConfigMap (`gateway_env`) and the local fleet
    (`wsfleet up`), so the two cannot drift. Every name is a field of the gateway's
    own settings (`wsfleet_gateway.settings.GatewaySettings` and its
    `ProtectionSettings` base); tests load this env into them.
    """
    limits, drain = spec.limits, spec.drain
    tiers = {"free": limits.free_tier_channels, "paid": limits.paid_tier_channels}
    return {
        "WSFLEET_LOG_LEVEL": spec.gateway.log_level,
        "WSFLEET_MAX_MESSAGE_BYTES": str(limits.max_message_bytes),
        "WSFLEET_HEARTBEAT_S": str(limits.heartbeat_seconds),
        "WSFLEET_IDLE_TIMEOUT_S": str(limits.idle_timeout_seconds),
        "WSFLEET_MAX_CONNECTIONS": str(limits.max_connections_per_pod),
        "WSFLEET_USER_CONNECTS_PER_MIN": str(limits.connections_per_user_per_minute),
        "WSFLEET_TIER_CHANNELS": json.dumps(tiers, separators=(",", ":")),
        "WSFLEET_BANDWIDTH_BYTES_PER_S": str(limits.bandwidth_bytes_per_second),
        "WSFLEET_DRAIN_GRACE_S": str(drain.grace_period_seconds),
        "WSFLEET_DRAIN_RECONNECT_PER_S": str(drain.reconnect_per_second),
        **features_env(spec),
    }


def features_env(spec: FleetSpec) -> dict[str, str]:
    presence, prefetch = spec.features.presence, spec.features.prefetch
    return {
        "WSFLEET_PRESENCE": str(presence.enabled).lower(),
        "WSFLEET_PRESENCE_TTL_S": str(presence.ttl_seconds),
        "WSFLEET_PRESENCE_EVENTS_CHANNELS": json.dumps(
            presence.events_channels, separators=(",", ":")
        ),
        "WSFLEET_PREFETCH": str(prefetch.enabled).lower(),
        "WSFLEET_PREFETCH_PER_CONNECTION": str(prefetch.per_connection),
        "WSFLEET_PREFETCH_MAX_CHANNELS": str(prefetch.max_channels_per_pod),
        "WSFLEET_PREFETCH_PER_S": str(prefetch.per_second),
        "WSFLEET_PREFETCH_HOLD_S": str(prefetch.hold_seconds),
        "WSFLEET_PREFETCH_HALF_LIFE_S": str(prefetch.half_life_seconds),
    }


def auth_env(spec: FleetSpec) -> dict[str, str]:
    """Plain auth settings (mode, key file path); the keys themselves come from Secrets."""
    auth = spec.auth
    if auth is None:
        return {}
    if auth.disabled:
        return {"WSFLEET_AUTH": "disabled"}
    env = {"WSFLEET_AUTH": "enabled"}
    if auth.jwt_public_key_secret_ref is not None:
        env["WSFLEET_JWT_PUBLIC_KEY_FILE"] = f"{JWT_KEY_DIR}/{JWT_KEY_FILE}"
    return env


def gateway_env(spec: FleetSpec) -> dict[str, str]:
    """Plain (non-secret) `WSFLEET_*` settings of every gateway (the ConfigMap)."""
    env = {
        "WSFLEET_HOST": "0.0.0.0",
        "WSFLEET_PORT": str(spec.gateway.port),
        "WSFLEET_ADMIN_HOST": "0.0.0.0",
        "WSFLEET_ADMIN_PORT": str(spec.gateway.admin_port),
        "WSFLEET_LOG_JSON": "true",
        **limits_env(spec),
        **auth_env(spec),
    }
    url = spec.redis.effective_url()
    if url is not None:
        env["WSFLEET_REDIS_URL"] = url
    env.update(spec.gateway.extra_env)
    return env


def gateway_args(spec: FleetSpec) -> list[str]:
    """`wsfleet gateway` flags of the container (what `wsfleet gateway --help` accepts).

    Listening on every interface is what a pod needs; the gateway's own default is
    loopback. The ConfigMap carries the same values as `WSFLEET_*` env; flags win.
    """
    return [
        "gateway",
        "--host",
        "0.0.0.0",
        "--port",
        str(spec.gateway.port),
        "--admin-host",
        "0.0.0.0",
        "--admin-port",
        str(spec.gateway.admin_port),
    ]


def build_configmap(fleet: str, namespace: str, uid: str, spec: FleetSpec) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(config_name(fleet), fleet, namespace, uid),
        "data": gateway_env(spec),
    }


def config_hash(spec: FleetSpec) -> str:
    """Changes when the gateway settings change (rolls the pods)."""
    raw = json.dumps(gateway_env(spec), sort_keys=True).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def _from_secret(env: str, name: str, key: str) -> JSON:
    return {"name": env, "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}


def secret_env(spec: FleetSpec) -> list[JSON]:
    """Env vars whose values live in Secrets (`valueFrom.secretKeyRef`, never inline)."""
    env: list[JSON] = []
    redis = spec.redis.secret_ref
    if redis is not None:
        env.append(_from_secret("WSFLEET_REDIS_URL", redis.name, redis.key))
    auth = spec.auth
    if auth is not None and not auth.disabled and auth.jwt_secret_ref is not None:
        env.append(
            _from_secret("WSFLEET_JWT_SECRET", auth.jwt_secret_ref.name, auth.jwt_secret_ref.key)
        )
    if auth is not None and auth.api_key_secret_ref is not None:
        ref = auth.api_key_secret_ref
        env.append(_from_secret("WSFLEET_API_KEY", ref.name, ref.key))
    return env


def _volumes(spec: FleetSpec) -> tuple[list[JSON], list[JSON]]:
    """(pod volumes, container mounts): /tmp, and the RS256 public key when configured."""
    volumes: list[JSON] = [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    mounts: list[JSON] = [{"name": "tmp", "mountPath": "/tmp"}]
    auth = spec.auth
    if auth is not None and not auth.disabled and auth.jwt_public_key_secret_ref is not None:
        ref = auth.jwt_public_key_secret_ref
        volumes.append(
            {
                "name": JWT_KEY_VOLUME,
                "secret": {
                    "secretName": ref.name,
                    "items": [{"key": ref.key, "path": JWT_KEY_FILE}],
                    "defaultMode": 0o444,
                },
            }
        )
        mounts.append({"name": JWT_KEY_VOLUME, "mountPath": JWT_KEY_DIR, "readOnly": True})
    return volumes, mounts


def _container(fleet: str, spec: FleetSpec) -> JSON:
    gw = spec.gateway
    env: list[JSON] = [
        {"name": "WSFLEET_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    env += secret_env(spec)

    def probe(path: str, period: int, failures: int) -> JSON:
        return {
            "httpGet": {"path": path, "port": "admin"},
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": failures,
        }

    return {
        "name": "gateway",
        "image": gw.image,
        "imagePullPolicy": gw.image_pull_policy.value,
        # explicit, not the image's default CMD: any image with `wsfleet` on PATH works
        "command": ["wsfleet"],
        "args": gateway_args(spec),
        "ports": [
            {"name": "ws", "containerPort": gw.port, "protocol": "TCP"},
            {"name": "admin", "containerPort": gw.admin_port, "protocol": "TCP"},
        ],
        "envFrom": [{"configMapRef": {"name": config_name(fleet)}}],
        "env": env,
        "resources": {
            "requests": gw.resources.requests.to_wire(),
            "limits": gw.resources.limits.to_wire(),
        },
        "readinessProbe": probe("/readyz", 5, 2),
        "livenessProbe": probe("/healthz", 10, 3),
        "startupProbe": probe("/healthz", 2, 30),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SLEEP_S}}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": _volumes(spec)[1],
    }


def termination_grace_seconds(spec: FleetSpec) -> int:
    """preStop sleep + the gateway's drain + a margin to close the last sockets."""
    return PRE_STOP_SLEEP_S + spec.drain.grace_period_seconds + 10


def build_deployment(fleet: str, namespace: str, uid: str, spec: FleetSpec) -> JSON:
    """The gateway Deployment (replicas = min; the autoscaler changes it afterwards)."""
    metadata = _metadata(object_name(fleet), fleet, namespace, uid)
    # operator state, not desired state: drift_patch never compares annotations
    metadata["annotations"] = {REPLICAS_ANNOTATION: str(spec.replicas.min)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": spec.replicas.min,
            "selector": {"matchLabels": selector_labels(fleet)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": common_labels(fleet),
                    "annotations": {
                        CONFIG_HASH_ANNOTATION: config_hash(spec),
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(spec.gateway.admin_port),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "terminationGracePeriodSeconds": termination_grace_seconds(spec),
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS_USER,
                        "runAsGroup": RUN_AS_USER,
                        "fsGroup": RUN_AS_USER,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [_container(fleet, spec)],
                    "volumes": _volumes(spec)[0],
                },
            },
        },
    }


def build_service(fleet: str, namespace: str, uid: str, spec: FleetSpec) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(object_name(fleet), fleet, namespace, uid),
        "spec": {
            "type": spec.gateway.service_type,
            "selector": selector_labels(fleet),
            "ports": [
                {"name": "ws", "port": spec.gateway.port, "targetPort": "ws", "protocol": "TCP"},
                {
                    "name": "admin",
                    "port": spec.gateway.admin_port,
                    "targetPort": "admin",
                    "protocol": "TCP",
                },
            ],
        },
    }


def build_pdb(fleet: str, namespace: str, uid: str, spec: FleetSpec) -> JSON:
    """At most one gateway drains at a time through voluntary disruptions."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(object_name(fleet), fleet, namespace, uid),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(fleet)}},
    }


def build_all(fleet: str, namespace: str, uid: str, spec: FleetSpec) -> list[JSON]:
    """Every owned object, in creation order (ConfigMap before the Deployment)."""
    return [
        build_configmap(fleet, namespace, uid, spec),
        build_deployment(fleet, namespace, uid, spec),
        build_service(fleet, namespace, uid, spec),
        build_pdb(fleet, namespace, uid, spec),
    ]


def drift_patch(desired: JSON, actual: JSON) -> JSON | None:
    """A merge-patch bringing `actual` back to `desired`, or None when nothing drifted.

    Only fields the operator sets are compared (defaults the API server adds
    are ignored); lists are compared element-wise the same way and replaced
    whole when they differ. The Deployment's replica count belongs to the
    autoscaler and is never part of the patch.
    """
    patch: JSON = {}
    for key, want in desired.items():
        if key in ("apiVersion", "kind", "status"):
            continue
        have = actual.get(key)
        if key == "spec" and desired.get("kind") == "Deployment" and isinstance(want, dict):
            want = {k: v for k, v in want.items() if k != "replicas"}
        if isinstance(want, dict) and isinstance(have, dict):
            if key == "metadata":
                want = {k: v for k, v in want.items() if k in ("labels", "ownerReferences")}
            sub = drift_patch(want, have)
            if sub is not None:
                patch[key] = sub
        elif not _covers(have, want):
            patch[key] = want
    return patch or None


def _covers(have: Any, want: Any) -> bool:
    """True when `have` contains everything `want` says (server defaults allowed)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(_covers(have.get(k), v) for k, v in want.items())
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(have) == len(want)
            and all(_covers(h, w) for h, w in zip(have, want, strict=True))
        )
    if isinstance(want, int) and isinstance(have, str):  # e.g. intOrString
        return str(want) == have
    if isinstance(want, str) and isinstance(have, str) and want != have:
        a, b = parse_quantity(want), parse_quantity(have)
        return a is not None and a == b  # "0.5" == "500m", "1Gi" == "1024Mi"
    return bool(have == want)


_SUFFIXES = {
    "m": 1e-3,
    "": 1.0,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")


def parse_quantity(text: str) -> float | None:
    """A Kubernetes resource quantity as a number (None when it is not one)."""
    match = _QUANTITY.match(text)
    if match is None:
        return None
    return float(match.group(1)) * _SUFFIXES[match.group(2) or ""]
