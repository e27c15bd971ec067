"""The CRD is generated from spec.py, structural, current, and accepts the examples."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from wsfleet_operator import crd
from wsfleet_operator.spec import FleetSpec, FleetStatus, parse_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def schema() -> dict[str, Any]:
    return crd.crd_schema()


def test_committed_crd_is_current() -> None:
    assert crd.CRD_PATH.read_text() == crd.render_crd(), (
        "crds/ is stale: run hack/verify-crd.sh --update"
    )


def test_verify_script_passes_and_detects_staleness(tmp_path: Path) -> None:
    script = ROOT / "hack" / "verify-crd.sh"
    ok = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    # a copy of the repo layout with a stale CRD must fail
    (tmp_path / "hack").mkdir()
    (tmp_path / "crds").mkdir()
    shutil.copy(script, tmp_path / "hack" / "verify-crd.sh")
    (tmp_path / "operator").symlink_to(ROOT / "operator")
    (tmp_path / "crds" / crd.CRD_FILENAME).write_text(crd.render_crd() + "# drift\n")
    stale = subprocess.run(
        ["bash", str(tmp_path / "hack" / "verify-crd.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHON": str(ROOT / ".venv" / "bin" / "python"), "PATH": "/usr/bin:/bin"},
    )
    assert stale.returncode == 1
    assert "stale" in stale.stderr


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, value in node.get("properties", {}).items():
            out.extend(_walk(value, f"{path}.{key}"))
        if "items" in node:
            out.extend(_walk(node["items"], f"{path}[]"))
        if isinstance(node.get("additionalProperties"), dict):
            out.extend(_walk(node["additionalProperties"], f"{path}{{}}"))
    return out


def test_schema_is_structural() -> None:
    for path, node in _walk(schema()):
        for banned in ("$ref", "anyOf", "oneOf", "allOf", "$defs", "title", "const"):
            assert banned not in node, f"{banned} at {path}"
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        if "properties" in node:
            assert node["type"] == "object", path
            assert "additionalProperties" not in node, path
        if isinstance(node.get("exclusiveMinimum"), float | int) and not isinstance(
            node.get("exclusiveMinimum"), bool
        ):
            pytest.fail(f"JSON-schema style exclusiveMinimum at {path}")


def test_crd_metadata() -> None:
    doc = crd.build_crd()
    spec = doc["spec"]
    assert spec["group"] == "wsfleet.io"
    assert spec["names"]["kind"] == "WebSocketFleet"
    assert spec["names"]["plural"] == "websocketfleets"
    assert spec["names"]["shortNames"] == ["wsf"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert set(columns) == {"Desired", "Ready", "Connections", "P95-Switch-ms", "Mode", "Age"}
    status_props = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    for path in columns.values():
        if path.startswith(".status."):
            assert path.removeprefix(".status.") in status_props


def apply_defaults(node: dict[str, Any], value: Any) -> Any:
    """Kubernetes-style defaulting (top-down, defaults applied to absent fields)."""
    if not isinstance(value, dict) or "properties" not in node:
        return value
    out = dict(value)
    for key, prop in node["properties"].items():
        if key not in out and "default" in prop:
            out[key] = copy.deepcopy(prop["default"])
        if key in out:
            if prop.get("type") == "array" and isinstance(out[key], list):
                out[key] = [apply_defaults(prop["items"], v) for v in out[key]]
            else:
                out[key] = apply_defaults(prop, out[key])
    return out


def test_crd_defaults_equal_model_defaults() -> None:
    spec_schema = schema()["properties"]["spec"]
    defaulted = apply_defaults(spec_schema, {})
    assert defaulted == FleetSpec().to_wire()
    # a partly given section gets the rest of its defaults from the CRD, like the model
    partial = {"behavior": {"scaleDown": {"maxPodsPerMinute": 3}}}
    assert apply_defaults(spec_schema, partial) == parse_spec(partial).to_wire()


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_validate_against_crd_and_model(example: Path) -> None:
    doc = yaml.safe_load(example.read_text())
    jsonschema.Draft4Validator(crd.to_json_schema(schema())).validate(doc)
    spec = parse_spec(doc["spec"])
    assert spec.semantic_errors() == []


def test_schema_rejects_bad_values() -> None:
    validator = jsonschema.Draft4Validator(crd.to_json_schema(schema()))
    bad = [
        {"spec": {"replicas": {"min": 0}}},
        {"spec": {"behavior": {"tolerance": 1.5}}},
        {"spec": {"behavior": {"scaleUp": {"selectPolicy": "Sometimes"}}}},
        {"spec": {"gateway": {"port": 70000}}},
        {"spec": {"targets": {"targetUtilization": 0}}},
        {"spec": {"forecast": {"seasonPriors": [{"month": 13, "multiplier": 2}]}}},
    ]
    for doc in bad:
        assert list(validator.iter_errors(doc)), doc


def test_status_model_output_validates() -> None:
    from wsfleet_operator.spec import Condition, ConditionType, Mode, ScalingEvent

    status = FleetStatus(
        desired_replicas=3,
        mode=Mode.METRICS,
        conditions=[Condition(type=ConditionType.READY, status="True")],
        history=[ScalingEvent(at=1.0, from_replicas=2, to_replicas=3, reason="x")],
        forecast={"accuracy": 0.9, "anything": {"nested": True}},
    )
    doc = {"status": status.to_wire()}
    jsonschema.Draft4Validator(crd.to_json_schema(schema())).validate(doc)
    assert doc["status"]["history"][0]["from"] == 2


@pytest.mark.skipif(
    not (ROOT / ".venv" / "bin" / "kubernetes-validate").exists(),
    reason="kubernetes-validate not installed in .venv",
)
def test_crd_passes_kubernetes_validate() -> None:
    result = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "kubernetes-validate"), "--strict", str(crd.CRD_PATH)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_main_prints_the_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert crd.main() == 0
    assert capsys.readouterr().out == crd.render_crd()
