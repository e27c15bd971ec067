"""The chart's RBAC against the Kubernetes calls the operator makes.

`wsfleet_operator.rbac.REQUIRED_RULES` lists every (apiGroup, resource, verbs) the
operator's code and kopf use (the operator's client refuses anything else). The chart
must grant each of them that applies to the install mode, nothing else, never a wildcard.
"""

from __future__ import annotations

import pytest
from wsfleet_operator import rbac

from tests.packaging.chart import Helm, Manifest, by_kind, one

Triple = tuple[str, str, str]

# Rules in REQUIRED_RULES the chart deliberately does not grant in a mode, and why.
# `namespaces` is in neither chart mode: kopf lists namespaces only when it is namespaced AND
# scanning is on, and the operator turns scanning off for exact names (the chart always passes
# one exact --namespace); cluster-wide kopf never lists them (kopf/_core/reactor/observation.py).
NOT_IN_CLUSTER_MODE: dict[tuple[str, str], str] = {
    ("", "namespaces"): "cluster-wide kopf never lists namespaces",
    ("kopf.dev", "kopfpeerings"): "a cluster-wide kopf peers on ClusterKopfPeering",
}
NOT_IN_NAMESPACED_MODE: dict[tuple[str, str], str] = {
    ("", "namespaces"): "cluster-scoped; the operator turns kopf's scanning off for the one "
    "exact namespace the chart passes (wsfleet_operator.cli.kopf_settings)",
    ("apiextensions.k8s.io", "customresourcedefinitions"): "cluster-scoped; with scanning off "
    "kopf only discovers CRDs at start",
    ("kopf.dev", "clusterkopfpeerings"): "a namespaced kopf peers on KopfPeering",
}
PEERING = {("kopf.dev", "clusterkopfpeerings"), ("kopf.dev", "kopfpeerings")}


def required_triples() -> set[Triple]:
    return {(r.api_group, r.resource, v) for r in rbac.REQUIRED_RULES for v in r.verbs}


def expected(excluded: set[tuple[str, str]]) -> set[Triple]:
    return {t for t in required_triples() if (t[0], t[1]) not in excluded}


def granted(role: Manifest) -> set[Triple]:
    out: set[Triple] = set()
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule
        assert "resourceNames" not in rule
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {field}: {rule}"
            assert all("*" not in item for item in rule[field]), f"wildcard in {field}: {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    triple = (group, resource, verb)
                    assert triple not in out, f"granted twice: {triple}"
                    out.add(triple)
    return out


def assert_exact(role: Manifest, excluded: set[tuple[str, str]]) -> None:
    got = granted(role)
    want = expected(excluded)
    missing = sorted(want - got)
    extra = sorted(got - want)
    assert not missing, f"{role['kind']} lacks verbs the operator uses: {missing}"
    assert not extra, f"{role['kind']} grants what the operator never uses: {extra}"


def test_exceptions_name_real_rules() -> None:
    pairs = {(r.api_group, r.resource) for r in rbac.REQUIRED_RULES}
    assert set(NOT_IN_CLUSTER_MODE) <= pairs
    assert set(NOT_IN_NAMESPACED_MODE) <= pairs
    assert pairs >= PEERING
    # the same mode split as the operator's own (REQUIRED_RULES' comments)
    assert set(NOT_IN_CLUSTER_MODE) == set(rbac.NAMESPACE_PATTERN_ONLY | rbac.NAMESPACED_ONLY)
    assert set(NOT_IN_NAMESPACED_MODE) == set(rbac.NAMESPACE_PATTERN_ONLY | rbac.CLUSTER_WIDE_ONLY)


def test_no_unused_grants() -> None:
    """What no code path sends is neither required nor granted (least privilege)."""
    triples = required_triples()
    assert ("", "pods", "get") not in triples
    assert ("wsfleet.io", "websocketfleets/status", "get") not in triples
    assert not any(group == "events.k8s.io" for group, _, _ in triples)
    assert not any(group == "kopf.dev" and verb == "get" for group, _, verb in triples)


def test_cluster_mode_with_peering(all_features_render: list[Manifest]) -> None:
    role = one(all_features_render, "ClusterRole")
    assert not by_kind(all_features_render, "Role")
    assert_exact(role, set(NOT_IN_CLUSTER_MODE))


def test_cluster_mode_without_peering_grants_no_peering(default_render: list[Manifest]) -> None:
    role = one(default_render, "ClusterRole")
    assert_exact(role, set(NOT_IN_CLUSTER_MODE) | PEERING)


def test_namespaced_mode_is_a_role_with_peering(namespaced_render: list[Manifest]) -> None:
    assert not by_kind(namespaced_render, "ClusterRole")
    assert not by_kind(namespaced_render, "ClusterRoleBinding")
    role = one(namespaced_render, "Role")
    assert_exact(role, set(NOT_IN_NAMESPACED_MODE))


def test_namespaced_mode_without_peering(helm: Helm) -> None:
    manifests = helm.template(sets=["operator.watchNamespace=weddings"])
    assert not by_kind(manifests, "ClusterRole")
    assert_exact(one(manifests, "Role"), set(NOT_IN_NAMESPACED_MODE) | PEERING)


@pytest.mark.parametrize("render", ["default_render", "namespaced_render"])
def test_binding_targets_the_operator_service_account(
    render: str, request: pytest.FixtureRequest
) -> None:
    manifests: list[Manifest] = request.getfixturevalue(render)
    sa = one(manifests, "ServiceAccount")
    bindings = by_kind(manifests, "ClusterRoleBinding") + by_kind(manifests, "RoleBinding")
    (binding,) = bindings
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": sa["metadata"]["name"],
            "namespace": sa["metadata"]["namespace"],
        }
    ]
    deploy = one(manifests, "Deployment")
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_rbac_create_false_renders_no_rbac(helm: Helm) -> None:
    manifests = helm.template(sets=["rbac.create=false"])
    kinds = {m["kind"] for m in manifests}
    assert not kinds & {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
