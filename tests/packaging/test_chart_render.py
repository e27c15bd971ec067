"""helm lint/template of the wsfleet chart, every manifest validated offline."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from kubernetes_validate import utils as kv

from tests.packaging.chart import (
    CI_VALUES,
    CRD_SOURCE,
    KUBERNETES_VERSION,
    DuplicateKeyError,
    Helm,
    HelmError,
    Manifest,
    by_kind,
    load_yaml,
    one,
    split_manifests,
)
from tests.packaging.schemas import MONITORING_SCHEMAS, crd_validator, monitoring_validator

ALL_FEATURES = CI_VALUES / "all-features-values.yaml"
NAMESPACED = CI_VALUES / "namespaced-values.yaml"


def validate_manifest(manifest: Manifest, crds: list[Manifest]) -> None:
    """kubernetes-validate --strict for built-in kinds; CRD or monitoring schema otherwise."""
    kind = manifest["kind"]
    if kind in MONITORING_SCHEMAS:
        monitoring_validator(kind).validate(manifest)
        return
    group = manifest["apiVersion"].split("/")[0]
    owning = [c for c in crds if c["spec"]["group"] == group and c["spec"]["names"]["kind"] == kind]
    if owning:
        crd_validator(owning[0]).validate(manifest)
        return
    # Raises ValidationError on any schema violation, SchemaNotFoundError on unknown kinds.
    kv.validate(manifest, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    "values",
    [[], [ALL_FEATURES], [NAMESPACED]],
    ids=["defaults", "all-features", "namespaced"],
)
def test_helm_lint_strict_passes(helm: Helm, values: list[Path]) -> None:
    out = helm.lint(values=values)
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("render", ["default_render", "all_features_render", "namespaced_render"])
def test_every_rendered_manifest_is_valid(render: str, request: pytest.FixtureRequest) -> None:
    manifests: list[Manifest] = request.getfixturevalue(render)
    crds = by_kind(manifests, "CustomResourceDefinition")
    assert manifests
    for manifest in manifests:
        validate_manifest(manifest, crds)


def test_all_features_render_has_every_optional_object(all_features_render: list[Manifest]) -> None:
    kinds = {m["kind"] for m in all_features_render}
    assert {
        "ServiceMonitor",
        "PodMonitor",
        "PrometheusRule",
        "ConfigMap",
        "StatefulSet",
        "PodDisruptionBudget",
        "ClusterKopfPeering",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
    } <= kinds
    crd_names = {
        c["metadata"]["name"] for c in by_kind(all_features_render, "CustomResourceDefinition")
    }
    assert crd_names == {
        "websocketfleets.wsfleet.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }


def test_default_render_is_minimal(default_render: list[Manifest]) -> None:
    kinds = sorted(m["kind"] for m in default_render)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRoleBinding",
            "Service",
            "Deployment",
        ]
    )


def test_operator_deployment_is_hardened(all_features_render: list[Manifest]) -> None:
    deploy = one(all_features_render, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["port"] == "health"
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    args: list[str] = container["args"]
    assert args[:2] == ["operator", "--all-namespaces"]
    assert "--peering=wsfleet" in args
    # The image's entrypoint (`wsfleet`) runs directly: no shell wrapper; distinct kopf
    # priorities per pod come from the operator itself (test below).
    assert "command" not in container
    assert not any(a.startswith("--priority") for a in args)
    assert deploy["spec"]["replicas"] == 2


def test_without_peering_one_replica_and_recreate(default_render: list[Manifest]) -> None:
    deploy = one(default_render, "Deployment")
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert not any(a.startswith("--peering") for a in container["args"])
    assert "command" not in container  # the image's entrypoint: wsfleet


def test_replicas_without_peering_are_refused(helm: Helm) -> None:
    with pytest.raises(HelmError, match=r"needs operator\.peering\.enabled"):
        helm.template(sets=["operator.replicaCount=3"])


def test_namespaced_watch_uses_role_and_namespace_flag(namespaced_render: list[Manifest]) -> None:
    kinds = {m["kind"] for m in namespaced_render}
    assert "ClusterRole" not in kinds
    assert "ClusterRoleBinding" not in kinds
    role = one(namespaced_render, "Role")
    binding = one(namespaced_render, "RoleBinding")
    assert role["metadata"]["namespace"] == "weddings"
    assert binding["metadata"]["namespace"] == "weddings"
    assert binding["subjects"][0]["namespace"] == "wsfleet-system"
    args = one(namespaced_render, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=weddings" in args
    assert "--all-namespaces" not in args
    peering = one(namespaced_render, "KopfPeering")
    assert peering["metadata"]["namespace"] == "weddings"
    pod_monitor = one(namespaced_render, "PodMonitor")
    assert pod_monitor["spec"]["namespaceSelector"] == {"matchNames": ["weddings"]}


def test_crd_is_the_one_source_and_optional(helm: Helm, default_render: list[Manifest]) -> None:
    source: dict[str, Any] = load_yaml(CRD_SOURCE)
    rendered = one(default_render, "CustomResourceDefinition")
    assert rendered["spec"] == source["spec"]
    assert rendered["metadata"]["name"] == source["metadata"]["name"]
    assert rendered["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    without = helm.template(sets=["crds.install=false"])
    assert not by_kind(without, "CustomResourceDefinition")
    not_kept = one(helm.template(sets=["crds.keep=false"]), "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in not_kept["metadata"].get("annotations", {})


def test_monitoring_objects_need_the_monitoring_api(helm: Helm) -> None:
    manifests = helm.template(values=[ALL_FEATURES], monitoring_api=False)
    kinds = {m["kind"] for m in manifests}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    # The dashboard is a plain ConfigMap and does not depend on prometheus-operator.
    assert "ConfigMap" in kinds


def test_dashboard_configmap_holds_valid_dashboard(all_features_render: list[Manifest]) -> None:
    cm = one(all_features_render, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    (raw,) = cm["data"].values()
    dash = json.loads(raw)
    titles = {p["title"] for p in dash["panels"]}
    assert {
        "Connections",
        "Channel switch latency p95 / p99",
        "Message delivery latency p50 / p95 / p99",
        "Cache hit ratio",
        "Replicas: desired vs ready",
        "Forecast vs actual connections",
        "Scaling events",
    } <= titles
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert all(e.count("(") == e.count(")") for e in exprs)


BAD_VALUES = {
    "unknown-top-level-key": "operatorr:\n  replicaCount: 1\n",
    "unknown-nested-key": "operator:\n  replicas: 2\n",
    "wrong-type-int": "operator:\n  replicaCount: two\n",
    "wrong-type-bool": 'crds:\n  install: "yes"\n',
    "bad-enum": "operator:\n  logLevel: verbose\n",
    "bad-duration": "prometheus:\n  rules:\n    drainStuckFor: 15 minutes\n",
    "slo-out-of-range": "prometheus:\n  rules:\n    switchLatencySLO: 99\n",
    "bad-port": "operator:\n  metricsPort: 70000\n",
}


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_values_schema_rejects_bad_values_file(helm: Helm, name: str, tmp_path: Path) -> None:
    bad = tmp_path / f"{name}.yaml"
    bad.write_text(BAD_VALUES[name])
    with pytest.raises(HelmError, match="values don't meet the specifications of the schema"):
        helm.template(values=[bad])
    with pytest.raises(HelmError):
        helm.lint(values=[bad])


def test_kubernetes_validate_rejects_a_broken_manifest(default_render: list[Manifest]) -> None:
    """The validator itself is strict: an unknown field in a Deployment is an error."""
    deploy = copy.deepcopy(one(default_render, "Deployment"))
    deploy["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kv.ValidationError):
        validate_manifest(deploy, [])


@pytest.mark.parametrize("render", ["default_render", "all_features_render", "namespaced_render"])
def test_operator_args_parse_with_the_real_cli(render: str, request: pytest.FixtureRequest) -> None:
    """The chart's container args are accepted by `wsfleet operator`'s own parser."""
    from wsfleet.cli import build_parser

    manifests: list[Manifest] = request.getfixturevalue(render)
    container = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    args = build_parser().parse_args(container["args"])
    assert args.command == "operator"


def test_peering_gives_each_pod_its_own_priority(
    all_features_render: list[Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rendered args, parsed by the real `wsfleet` parser, give each pod (HOSTNAME) its
    own kopf priority: same-priority peers would all pause."""
    from wsfleet_operator import cli as operator_cli

    from wsfleet.cli import build_parser

    container = one(all_features_render, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container  # exec'd directly by the image's ENTRYPOINT
    args = build_parser().parse_args(container["args"])
    assert args.peering == "wsfleet"
    assert args.priority is None
    monkeypatch.delenv("WSFLEET_OPERATOR_PRIORITY", raising=False)
    priorities = set()
    for pod in ("wsfleet-operator-5d8c7-abcde", "wsfleet-operator-5d8c7-fghij"):
        monkeypatch.setenv("HOSTNAME", pod)
        kwargs = operator_cli.operator_kwargs(operator_cli.settings_from_args(args))
        assert kwargs["peering_name"] == "wsfleet"
        assert kwargs["standalone"] is False
        priorities.add(kwargs["priority"])
    assert len(priorities) == 2


def render_notes(helm: Helm, tmp_path: Path, values: list[Path], sets: list[str]) -> str:
    """NOTES.txt as `helm install` would print it (rendered through a scratch copy)."""
    chart = tmp_path / "chart"
    shutil.copytree(helm.chart, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "files" / "NOTES.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ tpl (.Files.Get "files/NOTES.txt") . | toJson }}\n'
    )
    manifests = Helm(binary=helm.binary, chart=chart).template(values=values, sets=sets)
    notes = [m for m in manifests if m["metadata"]["name"] == "notes"]
    return str(notes[0]["data"]["notes"])


def test_notes_tell_the_user_what_to_do_next(helm: Helm, tmp_path: Path) -> None:
    notes = render_notes(helm, tmp_path / "a", [ALL_FEATURES], [])
    assert "rollout status deployment/wsfleet-operator" in notes
    assert "kubectl apply -n weddings -f examples/01-minimal-fleet.yaml" in notes
    # the example's gateways refuse to start without the Secret it names: made first
    assert notes.index("create secret generic wsfleet-auth") < notes.index("kubectl apply")
    assert "redis://wsfleet-redis.wsfleet-system.svc:6379/0" in notes
    assert "2 replicas under kopf peering" in notes
    # rendered without the monitoring API: the notes warn that nothing was created
    assert "they were NOT created" in notes
    ns_notes = render_notes(helm, tmp_path / "b", [], ["operator.watchNamespace=shop"])
    assert 'watches namespace "shop" (namespaced Role)' in ns_notes
    assert "kubectl apply -n shop -f examples/01-minimal-fleet.yaml" in ns_notes
    assert "kubectl -n shop create secret generic wsfleet-auth" in ns_notes
    assert "create namespace" not in ns_notes
    assert "set prometheus.podMonitor.enabled=true" in ns_notes
    assert "NOT created" not in ns_notes


def test_chart_refuses_clusters_without_prestop_sleep(helm: Helm) -> None:
    """Gateway pods use the preStop `sleep` action: on by default from Kubernetes 1.30."""
    with pytest.raises(HelmError, match=r"incompatible with Kubernetes v1\.29"):
        helm.run(["template", "wsfleet", str(helm.chart), "--kube-version", "1.29.0"])
    helm.run(["template", "wsfleet", str(helm.chart), "--kube-version", "1.30.0"])


def test_duplicate_keys_are_caught() -> None:
    """The renders above are parsed strictly; make sure that parser does reject duplicates."""
    with pytest.raises(DuplicateKeyError):
        split_manifests("kind: A\nmetadata:\n  labels:\n    a: x\n    a: y\n")
