"""Every Kubernetes (apiGroup, resource, verb) the operator uses, in one place.

The Helm chart renders its ClusterRole from `REQUIRED_RULES`
(`python -m wsfleet_operator.rbac` prints them as RBAC rules YAML), the
operator's own client refuses any call outside them (`check_allowed`), and a
test records every request that reaches the API emulator (kopf's and ours)
and asserts each is covered.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import yaml

from wsfleet_operator.spec import GROUP, PLURAL


@dataclass(frozen=True, order=True)
class Rule:
    api_group: str
    resource: str
    verbs: tuple[str, ...]
    why: str = ""


REQUIRED_RULES: tuple[Rule, ...] = (
    # Exactly what kopf and this package send (tests/operator/test_rbac_exercised.py runs the
    # operator against the API emulator and fails on a rule nobody exercises). Never "get" on
    # pods or on the status subresource, never events.k8s.io: kopf posts core/v1 Events only.
    # the custom resource: kopf lists/watches and patches (finalizers, progress annotations);
    # our handlers get a fleet by name when its Deployment drifts
    Rule(GROUP, PLURAL, ("get", "list", "watch", "patch"), "watch and annotate fleets"),
    # status: merge-patched by the autoscaler and by kopf; never read through /status
    Rule(GROUP, f"{PLURAL}/status", ("patch",), "status of each fleet"),
    # owned objects: reconcile gets, creates and patches drift; kopf watches them (drift
    # repair, recreation). Never delete: the garbage collector removes them with their fleet
    Rule("apps", "deployments", ("get", "list", "watch", "create", "patch"), "gateways"),
    Rule("", "services", ("get", "list", "watch", "create", "patch"), "gateway Service"),
    Rule("", "configmaps", ("get", "list", "watch", "create", "patch"), "gateway settings"),
    Rule(
        "policy", "poddisruptionbudgets", ("get", "list", "watch", "create", "patch"), "gateway PDB"
    ),
    # connection-aware scale-down: list the fleet's pods, patch pod-deletion-cost
    Rule("", "pods", ("list", "patch"), "pod-deletion-cost"),
    # cache pre-warm before a forecast peak: read the admin API key (auth.apiKeySecretRef)
    # and a Redis URL from redis.secretRef, by name. `get` only: no list or watch, so the
    # operator can never enumerate Secrets, only read those a fleet's spec names (names
    # differ per fleet, so resourceNames cannot narrow it further in a ClusterRole).
    Rule("", "secrets", ("get",), "pre-warm: Secrets a fleet names"),
    # Kubernetes Events for every action (kopf's and ours are both core/v1)
    Rule("", "events", ("create",), "events"),
    # kopf: notice CRDs created or removed while running (cluster-wide mode; in namespaced
    # mode `cli.kopf_settings` turns kopf's scanning off, so it never asks)
    Rule("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch"), "kopf scan"),
    # kopf lists/watches namespaces only when run namespaced with glob patterns
    # (`--namespace 'shop-*'`); for exact names `cli.kopf_settings` turns scanning off, and
    # cluster-wide kopf never asks. The chart passes one exact name and never grants this.
    Rule("", "namespaces", ("list", "watch"), "kopf --namespace PATTERN only"),
    # kopf peering (HA): watch the peering object and patch its own heartbeat into it
    Rule("kopf.dev", "clusterkopfpeerings", ("list", "watch", "patch"), "peering"),
    Rule("kopf.dev", "kopfpeerings", ("list", "watch", "patch"), "peering"),
)

# Rules the code above uses only in some modes (the exercise test and the chart skip them).
NAMESPACE_PATTERN_ONLY: frozenset[tuple[str, str]] = frozenset({("", "namespaces")})
CLUSTER_WIDE_ONLY: frozenset[tuple[str, str]] = frozenset(
    {("apiextensions.k8s.io", "customresourcedefinitions"), ("kopf.dev", "clusterkopfpeerings")}
)
NAMESPACED_ONLY: frozenset[tuple[str, str]] = frozenset({("kopf.dev", "kopfpeerings")})


class ForbiddenCallError(RuntimeError):
    """The operator tried a Kubernetes call that is not in REQUIRED_RULES."""


def is_allowed(api_group: str, resource: str, verb: str) -> bool:
    return any(
        r.api_group == api_group and r.resource == resource and verb in r.verbs
        for r in REQUIRED_RULES
    )


def check_allowed(api_group: str, resource: str, verb: str) -> None:
    if not is_allowed(api_group, resource, verb):
        raise ForbiddenCallError(
            f"{verb} {api_group or 'core'}/{resource} is not in REQUIRED_RULES"
        )


def as_rbac_rules() -> list[dict[str, list[str]]]:
    """The rules in `rbac.authorization.k8s.io/v1` form (for a ClusterRole)."""
    return [
        {"apiGroups": [r.api_group], "resources": [r.resource], "verbs": list(r.verbs)}
        for r in REQUIRED_RULES
    ]


def main() -> int:
    sys.stdout.write(yaml.safe_dump({"rules": as_rbac_rules()}, sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
