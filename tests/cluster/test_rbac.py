"""RBAC for real: the operator runs with a token of the chart's own ServiceAccount; the API
server's authorizer allows every call it makes, every rule of the chart is used, and
`kubectl auth can-i` shows it can do nothing else."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import yaml
from wsfleet_operator import rbac
from wsfleet_operator.kube import Connection, KubeClient
from wsfleet_operator.prewarm import read_secret_key
from wsfleet_operator.spec import SecretKeySelector
from wsfleet_operator.targets import KubernetesTarget

from tests.cluster.conftest import AUTH_SECRET
from tests.cluster.fleets import fleet
from tests.cluster.harness import (
    OPERATOR_USER,
    LocalCluster,
    OperatorProcess,
    audit_now,
    denied,
    describe,
)
from tests.support.fleet_checks import assert_deleted_with_owned, assert_fleet_runs, eventually
from tests.support.kube import Kube


def operator_client(cluster: LocalCluster, kubeconfig: Path) -> KubeClient:
    """Our own client with the operator's token (RBAC-checked on both sides)."""
    doc = yaml.safe_load(kubeconfig.read_text())
    token = doc["users"][0]["user"]["token"]
    context = ssl.create_default_context(cafile=str(cluster.dir / "pki" / "ca.crt"))
    conn = Connection(cluster.server, (("Authorization", f"Bearer {token}"),), context)
    return KubeClient(conn, user_agent="wsfleet-operator/test (rbac)")


def test_the_service_account_can_do_only_what_it_needs(kube: Kube) -> None:
    sa = OPERATOR_USER
    # what it needs
    assert kube.can_i(sa, "patch", "deployments", "-n", "anywhere")
    assert kube.can_i(sa, "patch", "websocketfleets.wsfleet.io", "--subresource=status", "-A")
    assert kube.can_i(sa, "get", "secrets", "-n", "anywhere")  # by name: pre-warm
    # what it must not do
    for what in (
        ("delete", "nodes"),
        ("list", "secrets", "-A"),
        ("watch", "secrets", "-A"),
        ("list", "secrets", "-n", "default"),
        ("create", "pods", "-n", "default"),
        ("delete", "deployments", "-n", "default"),
        ("delete", "websocketfleets.wsfleet.io", "-A"),
        ("create", "clusterrolebindings"),
        ("escalate", "clusterroles"),
        ("impersonate", "serviceaccounts"),
        ("*", "*"),
        ("get", "*", "-A"),
    ):
        assert not kube.can_i(sa, *what), f"the operator can {' '.join(what)}"
    listed = kube.kubectl("auth", "can-i", "--list", "--as", sa, "-n", "default")
    for line in listed.splitlines()[1:]:
        resource, *_rest = line.split()
        assert not resource.startswith("*"), line
    role = json.loads(kube.kubectl("get", "clusterrole", "wsfleet", "-o", "json"))
    for rule in role["rules"]:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(key, []), rule


async def test_every_rule_is_used_and_every_call_allowed(
    chart: LocalCluster, kube: Kube, operator_kubeconfig: Path, namespace: str
) -> None:
    """Cluster-wide with peering, as the chart runs it: reconcile, drift repair, scale-down
    calls and the pre-warm's Secret read, all with the ServiceAccount's token. The set of
    (group, resource, verb) the API server saw equals REQUIRED_RULES of this mode."""
    ns = namespace
    since = audit_now()
    with_peering = ["--no-forecast", "--peering", "wsfleet", "--priority", "500"]
    op = OperatorProcess(operator_kubeconfig, identity="op-rbac", extra_args=with_peering)
    op.start()
    try:
        manifest = fleet("rbac")
        kube.apply(ns, manifest)
        await assert_fleet_runs(kube, ns, manifest)
        owned = ("deployment/rbac-gateway", "service/rbac-gateway",
                 "poddisruptionbudget/rbac-gateway", "configmap/rbac-gateway-config")  # fmt: skip
        for obj in owned:  # drift on each: watched, then patched back
            kube.kubectl("label", "-n", ns, obj, "app.kubernetes.io/component=x", "--overwrite")
        kube.kubectl("delete", "-n", ns, "service/rbac-gateway", "--wait=true")  # recreated

        def repaired() -> bool:
            for obj in owned:
                kind, name = obj.split("/")
                got = kube.get(ns, kind, name)
                if got is None or got["metadata"]["labels"]["app.kubernetes.io/component"] == "x":
                    return False
            return True

        await eventually(repaired, message="drift repaired on every owned object")
        async with operator_client(chart, operator_kubeconfig) as client:
            pods = {p["metadata"]["name"]: i for i, p in enumerate(kube.items(ns, "pods"))}

            class Connections:
                async def pod_connections(self) -> dict[str, int]:
                    return pods

            target = KubernetesTarget(client, ns, "rbac", Connections())  # type: ignore[arg-type]
            await target.set_deletion_costs(await target.pod_connections())
            ref = SecretKeySelector(name=AUTH_SECRET, key="api-key")
            assert await read_secret_key(client, ns, ref)
        await assert_deleted_with_owned(kube, ns, "rbac")
    finally:
        op.close()

    seen = [
        e
        for e in chart.audit()
        if e["user"]["username"] == OPERATOR_USER
        and e["requestReceivedTimestamp"] > since
        and (e.get("objectRef") or {}).get("namespace") in (None, ns)
        and e.get("objectRef")
    ]
    assert denied(seen) == [], describe(denied(seen))
    calls = set()
    for e in seen:
        ref = e["objectRef"]
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        calls.add((ref.get("apiGroup", ""), resource, e["verb"]))
    outside = sorted(c for c in calls if not rbac.is_allowed(*c))
    assert outside == [], f"calls outside REQUIRED_RULES: {outside}"
    required = {
        (r.api_group, r.resource, verb)
        for r in rbac.REQUIRED_RULES
        if (r.api_group, r.resource) not in rbac.NAMESPACE_PATTERN_ONLY | rbac.NAMESPACED_ONLY
        for verb in r.verbs
    }
    unused = sorted(required - calls)
    assert unused == [], f"in REQUIRED_RULES (and the chart) but never sent: {unused}"
