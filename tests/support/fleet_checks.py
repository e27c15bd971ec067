"""Test bodies both real-cluster suites run: the local control plane (tests/cluster) and
kind (tests/e2e). Each takes a `Kube` and a namespace and waits on conditions."""

from __future__ import annotations

from typing import Any

from tests.support.kube import JSON, Kube
from tests.support.waiting import wait_until

OWNED = (
    ("deployment", "{}-gateway"),
    ("service", "{}-gateway"),
    ("poddisruptionbudget", "{}-gateway"),
    ("configmap", "{}-gateway-config"),
)


async def eventually(cond: Any, timeout_s: float = 120.0, message: str = "condition") -> Any:
    return await wait_until(cond, timeout_s=timeout_s, interval_s=0.25, message=message)


def owned_objects(kube: Kube, namespace: str, fleet: str) -> dict[str, JSON] | None:
    """kind -> object of every object the fleet owns, or None while one is missing."""
    got = {kind: kube.get(namespace, kind, name.format(fleet)) for kind, name in OWNED}
    if not all(got.values()):
        return None
    return {k: v for k, v in got.items() if v is not None}


async def assert_fleet_runs(kube: Kube, namespace: str, fleet: JSON) -> dict[str, JSON]:
    """The fleet's Deployment reaches its minimum of ready pods (through a ReplicaSet the
    real controller made); every owned object has the fleet as its controlling owner; the
    operator reported a status. Returns the owned objects."""
    name = fleet["metadata"]["name"]
    want = fleet["spec"]["replicas"]["min"]

    def ready() -> bool:
        dep = kube.get(namespace, "deployment", f"{name}-gateway")
        return dep is not None and (dep.get("status") or {}).get("readyReplicas", 0) >= want

    await eventually(ready, message=f"{want} ready gateway pods of {name}")
    owned = await eventually(lambda: owned_objects(kube, namespace, name), message="owned objects")
    cr = kube.get(namespace, "websocketfleet", name)
    assert cr is not None
    for obj in owned.values():
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner["kind"] == "WebSocketFleet"
        assert owner["name"] == name
        assert owner["uid"] == cr["metadata"]["uid"]
        assert owner["controller"] is True
    selector = ",".join(
        f"{k}={v}" for k, v in owned["deployment"]["spec"]["selector"]["matchLabels"].items()
    )
    pods = kube.items(namespace, "pods", "-l", selector)
    ready_pods = [
        p
        for p in pods
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (p.get("status") or {}).get("conditions") or []
        )
    ]
    assert len(ready_pods) >= want
    for pod in ready_pods:  # created by the ReplicaSet controller, not by the operator
        (owner,) = pod["metadata"]["ownerReferences"]
        assert owner["kind"] == "ReplicaSet"

    def reported() -> bool:
        got = kube.get(namespace, "websocketfleet", name)
        return got is not None and "desiredReplicas" in (got.get("status") or {})

    await eventually(reported, message="status reported")
    return owned


async def assert_deleted_with_owned(kube: Kube, namespace: str, fleet: str) -> None:
    """`kubectl delete` of the fleet: it goes (its finalizer released), and the garbage
    collector removes every object it owned, the gateway pods included."""
    kube.kubectl(
        "delete", "-n", namespace, "websocketfleet", fleet, "--wait=true", "--timeout=120s"
    )

    def all_gone() -> bool:
        return kube.get(namespace, "websocketfleet", fleet) is None and not any(
            kube.get(namespace, kind, name.format(fleet)) for kind, name in OWNED
        )

    await eventually(all_gone, message="fleet and owned objects gone")
    await eventually(
        lambda: not kube.items(namespace, "pods", "-l", f"app.kubernetes.io/instance={fleet}"),
        message="gateway pods gone",
    )


async def assert_dry_run_never_scales(kube: Kube, namespace: str, fleet: JSON) -> None:
    """A dry-run fleet decides (status.lastDecision) but its Deployment keeps min replicas."""
    name = fleet["metadata"]["name"]

    def decided() -> bool:
        got = kube.get(namespace, "websocketfleet", name)
        return got is not None and (got.get("status") or {}).get("lastDecision") is not None

    await eventually(decided, message="a dry-run decision")
    dep = kube.get(namespace, "deployment", f"{name}-gateway")
    assert dep is not None
    assert dep["spec"]["replicas"] == fleet["spec"]["replicas"]["min"]
