"""values.yaml is fully documented (helm-docs `# --` comments) and matches its schema."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from tests.packaging.chart import CHART, ROOT

VALUES_TEXT = (CHART / "values.yaml").read_text()
VALUES: dict[str, Any] = yaml.safe_load(VALUES_TEXT)
SCHEMA: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())


def chart_readme() -> ModuleType:
    path = ROOT / "hack" / "chart_readme.py"
    spec = importlib.util.spec_from_file_location("chart_readme", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def leaves(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        return [p for k, v in node.items() for p in leaves(v, f"{prefix}{k}.")]
    return [prefix.rstrip(".")]


def test_every_value_is_documented() -> None:
    documented = {key for key, desc in chart_readme().documented_keys(VALUES_TEXT) if desc}
    undocumented = [
        leaf
        for leaf in leaves(VALUES)
        if not any(leaf == d or leaf.startswith(d + ".") for d in documented)
    ]
    assert not undocumented, f"values without a `# --` comment: {undocumented}"


def schema_at(path: str) -> dict[str, Any] | None:
    node: dict[str, Any] = SCHEMA
    for part in path.split("."):
        props = node.get("properties")
        if props is None:
            return None  # a free-form object (resources, affinity...): no deeper schema
        assert part in props, f"{path}: `{part}` is not in values.schema.json"
        node = props[part]
    return node


def test_every_value_is_in_the_schema_and_closed() -> None:
    for leaf in leaves(VALUES):
        schema_at(leaf)

    def walk(node: dict[str, Any], where: str) -> None:
        if "properties" in node:
            assert node.get("additionalProperties") is False, f"{where} accepts unknown keys"
            for key, child in node["properties"].items():
                walk(child, f"{where}.{key}")

    walk(SCHEMA, "values")


def test_every_schema_key_has_a_default() -> None:
    def walk(node: dict[str, Any], value: Any, where: str) -> None:
        for key, child in node.get("properties", {}).items():
            if key == "global":
                continue
            assert isinstance(value, dict)
            assert key in value, f"{where}.{key} is in the schema but has no default"
            walk(child, value[key], f"{where}.{key}")

    walk(SCHEMA, VALUES, "values")


def test_readme_mentions_every_documented_value(tmp_path: Path) -> None:
    readme = (CHART / "README.md").read_text()
    for key, _ in chart_readme().documented_keys(VALUES_TEXT):
        assert f"| `{key}` |" in readme
