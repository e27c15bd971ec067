"""Every example WebSocketFleet validates against the CRD's openAPIV3Schema; bad ones fail.

Validation behaves like the API server with kubectl's default strict field validation:
unknown fields are rejected, as are wrong types, values out of bounds and enum misses.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.packaging.chart import CHART, CRD_SOURCE, EXAMPLES, load_yaml
from tests.packaging.schemas import crd_validator

CRD: dict[str, Any] = load_yaml(CRD_SOURCE)
VALIDATOR = crd_validator(CRD)
MINIMAL = next(p for p in EXAMPLES if p.name.startswith("01-"))


def test_the_three_numbered_examples_exist() -> None:
    names = [p.name for p in EXAMPLES]
    assert names[:3] == [
        "01-minimal-fleet.yaml",
        "02-wedding-season-fleet.yaml",
        "03-dry-run-fleet.yaml",
    ]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_validates_against_crd(path: Path) -> None:
    for doc in load_all(path):
        if doc.get("kind") == CRD["spec"]["names"]["kind"]:
            VALIDATOR.validate(doc)


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_chart_serves_the_same_schema() -> None:
    chart_copy = load_yaml(CHART / "files" / "crds" / CRD_SOURCE.name)
    assert chart_copy == CRD


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = doc
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value

    return mutate


INVALID: dict[str, Callable[[dict[str, Any]], None]] = {
    "unknown-spec-field": _set("spec.replicas.maximum", 5),
    "unknown-top-field": _set("spec.autoscale", True),
    "wrong-type": _set("spec.replicas.min", "two"),
    "below-minimum": _set("spec.replicas.max", 0),
    "above-maximum": _set("spec.replicas.max", 100000),
    "enum-miss": _set("spec.prometheus.fallback", "Sometimes"),
    "bad-pattern": _set("spec.prometheus.rateWindow", "one minute"),
    "exclusive-minimum": _set("spec.prometheus.timeoutSeconds", 0),
    "wrong-kind": _set("kind", "WebsocketFleet"),
    "wrong-api-version": _set("apiVersion", "wsfleet.io/v1"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_fleet_is_rejected(case: str) -> None:
    doc = copy.deepcopy(load_yaml(MINIMAL))
    VALIDATOR.validate(doc)  # the starting point is valid
    INVALID[case](doc)
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate(doc)
