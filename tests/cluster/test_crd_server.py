"""The CRD on a real API server: strict apply of every example, server-side rejection
(structural schema and every CEL rule, with their messages), printer columns."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from wsfleet_operator import crd, spec
from wsfleet_operator.reconcile import validate

from tests.support.kube import Kube, KubectlError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def minimal(name: str = "probe") -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "01-minimal-fleet.yaml").read_text())
    doc["metadata"]["name"] = name
    return doc


def rejected(kube: Kube, shared_namespace: str, manifest: dict[str, Any]) -> str:
    """What the API server says when it refuses `manifest` (fails if it accepts it)."""
    proc = kube.run(
        "apply", "--validate=strict", "-n", shared_namespace, "-f", "-",
        stdin=yaml.safe_dump(manifest), check=False,
    )  # fmt: skip
    assert proc.returncode != 0, f"the API server accepted {manifest['spec']}"
    return proc.stderr


def with_spec(**changes: Any) -> dict[str, Any]:
    doc = minimal()
    for path, value in changes.items():
        node = doc["spec"]
        *parents, leaf = path.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return doc


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_applies_strictly(kube: Kube, shared_namespace: str, example: Path) -> None:
    out = kube.kubectl("apply", "--validate=strict", "-n", shared_namespace, "-f", str(example))
    name = yaml.safe_load(example.read_text())["metadata"]["name"]
    assert f"websocketfleet.wsfleet.io/{name} created" in out
    stored = kube.get(shared_namespace, "websocketfleet", name)
    assert stored is not None
    # the API server's defaulting (from the generated schema) fills in exactly what the
    # spec model does: the operator and `kubectl get -o yaml` see the same fleet
    written = yaml.safe_load(example.read_text())["spec"]
    assert stored["spec"] == spec.parse_spec(written).to_wire()


def test_unknown_field_is_refused_by_name(kube: Kube, shared_namespace: str) -> None:
    doc = with_spec(replicas__mni=3)
    err = rejected(kube, shared_namespace, doc)
    assert 'unknown field "spec.replicas.mni"' in err


def test_wrong_type_is_refused(kube: Kube, shared_namespace: str) -> None:
    err = rejected(kube, shared_namespace, with_spec(replicas__min="two"))
    assert "spec.replicas.min" in err
    assert 'Invalid value: "string": spec.replicas.min in body must be of type integer' in err


def test_out_of_range_is_refused(kube: Kube, shared_namespace: str) -> None:
    err = rejected(kube, shared_namespace, with_spec(replicas__max=5000))
    assert "spec.replicas.max" in err
    assert "should be less than or equal to 1000" in err
    err = rejected(kube, shared_namespace, with_spec(targets__targetUtilization=0))
    assert "spec.targets.targetUtilization" in err


def cel_rules() -> list[tuple[str, str, str]]:
    """(schema path, rule, message) of every CEL rule in the generated CRD."""
    found: list[tuple[str, str, str]] = []

    def walk(node: Any, path: str) -> None:
        if not isinstance(node, dict):
            return
        for rule in node.get("x-kubernetes-validations") or []:
            found.append((path, rule["rule"], rule["message"]))
        for key, child in (node.get("properties") or {}).items():
            walk(child, f"{path}.{key}" if path else key)

    walk(crd.crd_schema(), "")
    return found


# A manifest that breaks each rule, keyed by its message (the test below fails when a rule
# is added without a case here).
CEL_CASES: dict[str, dict[str, Any]] = {
    spec.AUTH_ONE_OF_MESSAGE: {
        "auth": {"disabled": True, "jwtSecretRef": {"name": "a", "key": "b"}}
    },
    spec.PORTS_DIFFER: {"gateway": {"port": 8080, "adminPort": 8080}},
    spec.REPLICAS_ORDER: {"replicas": {"min": 5, "max": 3}},
    spec.UTILIZATION_ORDER: {"targets": {"targetUtilization": 0.5, "scaleDownUtilization": 0.6}},
    spec.IDLE_AFTER_HEARTBEAT: {"limits": {"heartbeatSeconds": 60, "idleTimeoutSeconds": 30}},
    spec.REDIS_ONE_SOURCE: {"redis": {"url": "redis://r:6379/0", "secretRef": {"name": "r"}}},
    spec.REDIS_NO_CREDENTIALS: {"redis": {"url": "redis://:hunter2@r:6379/0"}},
    spec.FALLBACK_NEEDS_REPLICAS: {"prometheus": {"url": "http://p:9090", "fallback": "Replicas"}},
}


def test_every_cel_rule_has_a_case() -> None:
    messages = {message for _, _, message in cel_rules()}
    assert messages == set(CEL_CASES), "a CEL rule without a server-side test case (or a stale one)"


@pytest.mark.parametrize("message", sorted(CEL_CASES))
def test_each_cel_rule_is_enforced_by_the_server_with_its_message(
    kube: Kube, shared_namespace: str, message: str
) -> None:
    doc = minimal()
    doc["spec"].update(copy.deepcopy(CEL_CASES[message]))
    err = rejected(kube, shared_namespace, doc)
    assert message in err, err
    # the operator reports the same words where CEL does not run (one source of truth)
    _, problems = validate(doc["spec"])
    assert any(message in p for p in problems), problems


def test_printer_columns(kube: Kube, shared_namespace: str) -> None:
    kube.apply(shared_namespace, minimal("columns"))
    status = {
        "desiredReplicas": 4,
        "readyReplicas": 3,
        "connections": 1234,
        "p95SwitchMs": 4.5,
        "mode": "Metrics",
    }
    kube.kubectl(
        "patch", "-n", shared_namespace, "websocketfleet", "columns", "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": status}),
    )  # fmt: skip
    out = kube.kubectl("get", "wsf", "-n", shared_namespace)
    header, *rows = out.strip().splitlines()
    (row,) = [r for r in rows if r.split()[0] == "columns"]
    assert header.split() == [
        "NAME", "DESIRED", "READY", "CONNECTIONS", "P95-SWITCH-MS", "MODE", "AGE",
    ]  # fmt: skip
    assert row.split()[:6] == ["columns", "4", "3", "1234", "4.5", "Metrics"]
    # the short name and the category the CRD declares work too
    assert "columns" in kube.kubectl("get", "websocketfleets.wsfleet.io", "-n", shared_namespace)
    assert "columns" in kube.kubectl("get", "wsfleet", "-n", shared_namespace)


def test_status_is_a_subresource(kube: Kube, shared_namespace: str) -> None:
    """A spec write cannot change status, and a status write cannot change the spec."""
    kube.apply(shared_namespace, minimal("sub"))
    kube.kubectl(
        "patch", "-n", shared_namespace, "websocketfleet", "sub", "--type=merge",
        "-p", json.dumps({"status": {"desiredReplicas": 9}}),
    )  # fmt: skip
    got = kube.get(shared_namespace, "websocketfleet", "sub")
    assert got is not None
    assert "desiredReplicas" not in (got.get("status") or {})
    with pytest.raises(KubectlError):
        kube.kubectl(
            "patch", "-n", shared_namespace, "websocketfleet", "sub", "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": {"desiredReplicas": "nine"}}),
        )  # fmt: skip
