"""Generate the WebSocketFleet CRD from the pydantic models in `spec.py`.

`python -m wsfleet_operator.crd > crds/wsfleet.io_websocketfleets.yaml`
(or `hack/verify-crd.sh`, which also diffs). The JSON schema pydantic emits
is rewritten into a Kubernetes *structural* OpenAPI v3 schema: `$ref`s
inlined, `anyOf [X, null]` → `X` + `nullable`, exclusive bounds in the
OpenAPI 3.0 form, defaults for nested objects (`{}`) so that Kubernetes
fills in every default, free-form maps marked `x-kubernetes-preserve-unknown-fields`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from wsfleet_operator import spec as s

CRD_FILENAME = f"{s.GROUP}_{s.PLURAL}.yaml"
CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / CRD_FILENAME

_DROP_KEYS = {"title"}

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas"},
    {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
    {"name": "Connections", "type": "number", "jsonPath": ".status.connections"},
    {
        "name": "P95-Switch-ms",
        "type": "number",
        "jsonPath": ".status.p95SwitchMs",
        "description": "p95 channel switch latency in milliseconds",
    },
    {"name": "Mode", "type": "string", "jsonPath": ".status.mode"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _field_defaults(model: type[BaseModel]) -> dict[str, Any]:
    """Wire name → CRD default for fields whose default comes from a factory."""
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        alias = info.alias or name
        if info.default_factory is not None:
            value = info.default_factory()  # type: ignore[call-arg]
            if isinstance(value, BaseModel):
                out[alias] = (
                    {}
                    if _is_class_default(value)
                    else value.model_dump(mode="json", by_alias=True, exclude_none=True)
                )
            elif isinstance(value, list):
                out[alias] = [
                    v.model_dump(mode="json", by_alias=True, exclude_none=True)
                    if isinstance(v, BaseModel)
                    else v
                    for v in value
                ]
            else:
                out[alias] = value
        elif info.default is PydanticUndefined or info.default is None:
            continue
    return out


def _is_class_default(value: BaseModel) -> bool:
    """True when `value` equals its class built with no arguments (so `{}` suffices)."""
    model = type(value)
    if any(f.is_required() for f in model.model_fields.values()):
        return False
    return model() == value


def _models(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every model reachable from `root`, by class name (as in `$defs`)."""
    found: dict[str, type[BaseModel]] = {}
    stack: list[type[BaseModel]] = [root]
    while stack:
        model = stack.pop()
        if model.__name__ in found:
            continue
        found[model.__name__] = model
        for info in model.model_fields.values():
            for arg in _type_args(info.annotation):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    stack.append(arg)
    return found


def _type_args(annotation: Any) -> list[Any]:
    args = list(getattr(annotation, "__args__", ()) or ())
    nested: list[Any] = [annotation]
    for arg in args:
        nested.extend(_type_args(arg))
    return nested


def _structural(
    node: Any, defs: dict[str, Any], models: dict[str, type[BaseModel]]
) -> dict[str, Any]:
    """Rewrite one pydantic JSON-schema node into a structural schema node."""
    assert isinstance(node, dict)
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        merged = {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
        out = _structural(merged, defs, models)
        if name in models:
            for key, value in _field_defaults(models[name]).items():
                prop = out.get("properties", {}).get(key)
                if prop is not None and "default" not in prop:
                    prop["default"] = value
        return out
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        nullable = len(branches) < len(node["anyOf"])
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(branches) != 1:
            raise ValueError(f"unsupported union in CRD schema: {node}")
        out = _structural({**branches[0], **rest}, defs, models)
        if nullable:
            out["nullable"] = True
            if out.get("default", 0) is None:
                del out["default"]
        return out
    out = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "properties":
            out[key] = {k: _structural(v, defs, models) for k, v in value.items()}
        elif key == "items":
            out[key] = _structural(value, defs, models)
        elif key == "additionalProperties":
            if value is False:
                continue  # structural schemas prune unknown fields instead
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            else:
                out[key] = _structural(value, defs, models)
        elif key == "exclusiveMinimum":
            out["minimum"] = value
            out["exclusiveMinimum"] = True
        elif key == "exclusiveMaximum":
            out["maximum"] = value
            out["exclusiveMaximum"] = True
        elif key == "default" and value is None:
            continue
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if (
        out.get("type") == "object"
        and "properties" not in out
        and "additionalProperties" not in out
    ):
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of `model` (wire names)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    models = _models(model)
    out = _structural(raw, defs, models)
    for key, value in _field_defaults(model).items():
        prop = out.get("properties", {}).get(key)
        if prop is not None and "default" not in prop:
            prop["default"] = value
    return out


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition manifest."""
    spec_schema = model_schema(s.FleetSpec)
    status_schema = model_schema(s.FleetStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{s.PLURAL}.{s.GROUP}"},
        "spec": {
            "group": s.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": s.KIND,
                "listKind": f"{s.KIND}List",
                "plural": s.PLURAL,
                "singular": s.SINGULAR,
                "shortNames": list(s.SHORT_NAMES),
                "categories": ["wsfleet"],
            },
            "versions": [
                {
                    "name": s.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A fleet of wsfleet WebSocket gateway pods, "
                            "autoscaled on live metrics and a seasonal forecast.",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                # `auth` has no safe default: a fleet must say how its
                                # gateways authenticate (or that they do not); a fleet with no
                                # spec at all is reported InvalidSpec by the operator
                                "spec": {**spec_schema, "required": ["auth"]},
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def to_json_schema(node: Any) -> Any:
    """An OpenAPI 3.0 (CRD) schema as JSON Schema draft 4 (`nullable` → `null` type).

    Validate manifests with `jsonschema.Draft4Validator(to_json_schema(openapi))`.
    """
    if isinstance(node, list):
        return [to_json_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {
        k: to_json_schema(v)
        for k, v in node.items()
        if k != "nullable" and not k.startswith("x-kubernetes-")
    }
    if "properties" in node:
        out["properties"] = {k: to_json_schema(v) for k, v in node["properties"].items()}
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def crd_schema() -> dict[str, Any]:
    """The `openAPIV3Schema` of the generated CRD."""
    schema: dict[str, Any] = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


HEADER = "# GENERATED by `python -m wsfleet_operator.crd` from spec.py: do not edit.\n"


def render_crd() -> str:
    """The CRD as YAML text (stable key order)."""
    return HEADER + yaml.dump(build_crd(), Dumper=_NoAliasDumper, sort_keys=False, width=100)


def main() -> int:
    sys.stdout.write(render_crd())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
