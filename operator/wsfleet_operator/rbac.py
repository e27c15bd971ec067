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
    # the custom resource: kopf watches, patches (finalizers, progress) and writes status
    Rule(GROUP, PLURAL, ("get", "list", "watch", "patch"), "watch and annotate fleets"),
    # "get" on status and pods, and events.k8s.io, are not exercised today (see the report /
    # the chart's RBAC test): kept until the chart drops them in the same change
    Rule(GROUP, f"{PLURAL}/status", ("get", "patch"), "status of each fleet"),
    # owned objects
    Rule("apps", "deployments", ("get", "list", "watch", "create", "patch", "delete"), "gateways"),
    Rule("", "services", ("get", "create", "patch", "delete"), "gateway Service"),
    Rule("", "configmaps", ("get", "create", "patch", "delete"), "gateway settings"),
    Rule("policy", "poddisruptionbudgets", ("get", "create", "patch", "delete"), "gateway PDB"),
    # connection-aware scale-down: pod-deletion-cost annotations
    Rule("", "pods", ("get", "list", "patch"), "pod-deletion-cost"),
    # Kubernetes Events for every action (kopf and us)
    Rule("", "events", ("create",), "events"),
    Rule("events.k8s.io", "events", ("create",), "events"),
    # kopf's own needs: cluster scanning and peering (HA)
    Rule("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch"), "kopf scan"),
    Rule("", "namespaces", ("list", "watch"), "kopf --all-namespaces"),
    Rule("kopf.dev", "clusterkopfpeerings", ("get", "list", "watch", "patch"), "peering"),
    Rule("kopf.dev", "kopfpeerings", ("get", "list", "watch", "patch"), "peering"),
)


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
