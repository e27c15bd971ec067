"""The operator against the real API server and controllers: reconcile, status, events,
no writes while nothing changes, drift repair, deletion by the garbage collector."""

from __future__ import annotations

import json

from wsfleet_operator.resources import REPLICAS_ANNOTATION

from tests.cluster.fleets import ROOT, condition, example, fleet
from tests.cluster.harness import (
    OPERATOR_USER,
    LocalCluster,
    OperatorProcess,
    audit_now,
    denied,
    describe,
)
from tests.support.fleet_checks import (
    assert_deleted_with_owned,
    assert_dry_run_never_scales,
    assert_fleet_runs,
    eventually,
)
from tests.support.kube import Kube

QUIET_TICKS = 60
"""Decisions (one a second) the quiet fleet is watched for: the issue's 60 seconds."""


def versions(kube: Kube, namespace: str) -> dict[str, str]:
    """kind/name -> resourceVersion of everything in the namespace the test looks at."""
    out = {}
    for kind in ("websocketfleets", "deployments", "replicasets", "services", "configmaps",
                 "poddisruptionbudgets", "pods", "events"):  # fmt: skip
        for item in kube.items(namespace, kind):
            out[f"{kind}/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
    return out


async def test_fleet_becomes_ready_pods_with_status_and_events(
    chart: LocalCluster, kube: Kube, operator: OperatorProcess, managed_namespace: str
) -> None:
    ns = managed_namespace
    manifest = fleet("chat")
    kube.apply(ns, manifest)
    owned = await assert_fleet_runs(kube, ns, manifest)
    assert owned["deployment"]["spec"]["replicas"] == 2
    assert owned["deployment"]["metadata"]["annotations"][REPLICAS_ANNOTATION] == "2"

    # status goes through the /status subresource, never through the main resource
    writes = chart.operator_writes(ns)
    fleet_writes = [w for w in writes if w["objectRef"]["resource"] == "websocketfleets"]
    assert any(w["objectRef"].get("subresource") == "status" for w in fleet_writes)
    assert all(w["responseStatus"]["code"] < 400 for w in writes), describe(writes)

    def described() -> str | None:
        out = kube.kubectl("describe", "wsf", "chat", "-n", ns)
        return out if "Created" in out and "wsfleet-operator" in out else None

    out = await eventually(described, message="events in kubectl describe")
    assert "Deployment/chat-gateway" in out
    await eventually(lambda: condition(kube, ns, "chat", "Ready") == "True", message="Ready")
    await eventually(
        lambda: condition(kube, ns, "chat", "MetricsAvailable") == "False",
        message="MetricsAvailable=False (no Prometheus)",
    )


async def test_a_quiet_fleet_costs_no_writes(
    chart: LocalCluster, kube: Kube, operator: OperatorProcess, managed_namespace: str
) -> None:
    """60 decisions in which nothing changes: not one write by the operator, checked three
    ways (resourceVersions, the API server's audit log, the operator's own counter)."""
    ns = managed_namespace
    manifest = fleet("quiet")
    kube.apply(ns, manifest)
    await assert_fleet_runs(kube, ns, manifest)
    await eventually(lambda: condition(kube, ns, "quiet", "Ready") == "True", message="Ready")

    ticks = lambda: operator.metric(  # noqa: E731
        "wsfleet_operator_decisions_total", namespace=ns, fleet="quiet"
    )
    writes = lambda: operator.metric("wsfleet_operator_kube_writes_total")  # noqa: E731

    # settled: three decisions in a row without a write
    state = {"writes": writes(), "ticks": ticks()}

    def settled() -> bool:
        now_writes, now_ticks = writes(), ticks()
        if now_writes != state["writes"]:
            state.update(writes=now_writes, ticks=now_ticks)
            return False
        return now_ticks - state["ticks"] >= 3

    await eventually(settled, message="the operator settles")
    before_versions = versions(kube, ns)
    before_writes = writes()
    before_ticks = ticks()
    since = audit_now()

    await eventually(
        lambda: ticks() - before_ticks >= QUIET_TICKS,
        timeout_s=QUIET_TICKS * 3,
        message=f"{QUIET_TICKS} decisions",
    )
    assert versions(kube, ns) == before_versions
    assert writes() == before_writes
    audited = chart.operator_writes(ns, since=since)
    assert audited == [], describe(audited)


async def test_hand_edits_are_put_back(
    chart: LocalCluster, kube: Kube, operator: OperatorProcess, managed_namespace: str
) -> None:
    ns = managed_namespace
    manifest = fleet("drift")
    kube.apply(ns, manifest)
    owned = await assert_fleet_runs(kube, ns, manifest)
    image = owned["deployment"]["spec"]["template"]["spec"]["containers"][0]["image"]
    dep = "deployment/drift-gateway"

    kube.kubectl("set", "image", "-n", ns, dep, "gateway=evil:1")
    kube.kubectl("label", "-n", ns, dep, "app.kubernetes.io/component=hacked", "--overwrite")
    kube.kubectl("scale", "-n", ns, dep, "--replicas=5")

    def repaired() -> bool:
        got = kube.get(ns, "deployment", "drift-gateway") or {}
        spec = got.get("spec") or {}
        return (
            spec.get("template", {}).get("spec", {}).get("containers", [{}])[0].get("image")
            == image
            and got["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway"
            and spec.get("replicas") == 2
        )

    await eventually(repaired, message="image, label and replicas put back")

    kube.kubectl("delete", "service", "-n", ns, "drift-gateway", "--wait=true")
    await eventually(
        lambda: kube.get(ns, "service", "drift-gateway") is not None, message="Service recreated"
    )
    kube.kubectl("delete", "configmap", "-n", ns, "drift-gateway-config", "--wait=true")
    await eventually(
        lambda: kube.get(ns, "configmap", "drift-gateway-config") is not None,
        message="ConfigMap recreated",
    )

    def events() -> list[str]:
        items = kube.items(ns, "events", "--field-selector", "involvedObject.name=drift")
        return [f"{e['reason']}: {e['message']}" for e in items]

    await eventually(
        lambda: sum("DriftRepaired" in e for e in events()) >= 2, message="DriftRepaired events"
    )
    assert any("spec.replicas was set to 5 by hand" in e for e in events()), events()
    assert any("Created: created Service/drift-gateway" in e for e in events()), events()
    writes = chart.operator_writes(ns)
    assert all(w["responseStatus"]["code"] < 400 for w in writes), describe(writes)


async def test_delete_lets_the_garbage_collector_clean_up(
    chart: LocalCluster, kube: Kube, operator: OperatorProcess, managed_namespace: str
) -> None:
    ns = managed_namespace
    manifest = fleet("gone")
    kube.apply(ns, manifest)
    await assert_fleet_runs(kube, ns, manifest)
    cr = kube.get(ns, "websocketfleet", "gone")
    assert cr is not None
    assert cr["metadata"]["finalizers"]  # kopf's, so that the daemon is stopped first
    await assert_deleted_with_owned(kube, ns, "gone")
    # the operator deleted nothing itself: the garbage collector did
    deletes = [w for w in chart.operator_writes(ns) if w["verb"] == "delete"]
    assert deletes == [], describe(deletes)
    # and a namespace with a live fleet in it deletes too (finalizers released)
    kube.apply(ns, fleet("last"))
    await eventually(
        lambda: kube.get(ns, "deployment", "last-gateway") is not None, message="last fleet runs"
    )
    kube.delete_namespace(ns)
    await eventually(lambda: kube.get("", "namespace", ns) is None, message="namespace deleted")


async def test_examples_are_reconciled(
    chart: LocalCluster, kube: Kube, operator: OperatorProcess, managed_namespace: str
) -> None:
    """`kubectl apply -f examples/...` as the README says; each becomes a running fleet."""
    ns = managed_namespace
    for filename in ("01-minimal-fleet.yaml", "02-wedding-season-fleet.yaml"):
        doc = example(filename)
        kube.kubectl(
            "apply", "--validate=strict", "-n", ns, "-f", str(ROOT / "examples" / filename)
        )
        await assert_fleet_runs(kube, ns, doc)
    dry = example("03-dry-run-fleet.yaml")
    kube.kubectl(
        "apply",
        "--validate=strict",
        "-n",
        ns,
        "-f",
        str(ROOT / "examples" / "03-dry-run-fleet.yaml"),
    )
    await assert_dry_run_never_scales(kube, ns, dry)
    config = kube.get(ns, "configmap", "weddings-gateway-config")
    assert config is not None
    # secrets by reference only: nothing secret in the ConfigMap or the Deployment
    dep = kube.get(ns, "deployment", "weddings-gateway")
    text = json.dumps([config, dep])
    assert "secretKeyRef" in text
    assert "password" not in text.lower()
    audited = [e for e in chart.audit() if e["user"]["username"] == OPERATOR_USER]
    assert denied(audited) == [], describe(denied(audited))
