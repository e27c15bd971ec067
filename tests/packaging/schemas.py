"""JSON-schema validators for the kinds kubernetes-validate does not ship.

- A CRD's `openAPIV3Schema` turned into a jsonschema validator that behaves like the
  API server with kubectl's default strict field validation: unknown fields are errors
  (unless `x-kubernetes-preserve-unknown-fields`), `nullable` allows null,
  `x-kubernetes-int-or-string` allows both.
- A subset of prometheus-operator's monitoring.coreos.com/v1 schemas: the fields the
  chart renders, each one checked for type, unknown keys rejected.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema

Schema = dict[str, Any]

_OBJECT_META: Schema = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _strict(value) for key, value in node.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if out.get(bound) is True:  # OpenAPI 3.0 boolean form -> JSON Schema 2020-12 number
            out[bound] = out.pop(limit)
        elif out.get(bound) is False:
            del out[bound]
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


def crd_validator(crd: Schema, version: str | None = None) -> jsonschema.Draft202012Validator:
    """A validator for objects of `crd` at `version` (default: the storage version)."""
    versions = crd["spec"]["versions"]
    chosen = next(
        v for v in versions if (v["name"] == version if version else v.get("storage", False))
    )
    schema = _strict(copy.deepcopy(chosen["schema"]["openAPIV3Schema"]))
    group = crd["spec"]["group"]
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"const": f"{group}/{chosen['name']}"}
    props["kind"] = {"const": crd["spec"]["names"]["kind"]}
    props["metadata"] = _OBJECT_META
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    schema["additionalProperties"] = False
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _obj(props: Schema, required: list[str] | None = None) -> Schema:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": props,
        "required": required or [],
    }


_STR: Schema = {"type": "string"}
_DURATION: Schema = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?"
    r"(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
_STRMAP: Schema = {"type": "object", "additionalProperties": {"type": "string"}}
_LABEL_SELECTOR: Schema = _obj({"matchLabels": _STRMAP, "matchExpressions": {"type": "array"}})
_NS_SELECTOR: Schema = _obj(
    {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": _STR}}
)
_RELABEL: Schema = _obj(
    {
        "sourceLabels": {"type": "array", "items": _STR},
        "targetLabel": _STR,
        "action": _STR,
        "regex": _STR,
        "replacement": _STR,
        "separator": _STR,
    }
)
_ENDPOINT: Schema = _obj(
    {
        "port": _STR,
        "path": _STR,
        "interval": _DURATION,
        "scrapeTimeout": _DURATION,
        "honorLabels": {"type": "boolean"},
        "relabelings": {"type": "array", "items": _RELABEL},
    }
)
_RULE: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "record": _STR,
        "alert": _STR,
        "expr": _STR,
        "for": _DURATION,
        "labels": _STRMAP,
        "annotations": _STRMAP,
    },
    "required": ["expr"],
    "oneOf": [{"required": ["record"]}, {"required": ["alert"]}],
}


def _kind(kind: str, spec: Schema) -> Schema:
    return _obj(
        {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": _OBJECT_META,
            "spec": spec,
        },
        ["apiVersion", "kind", "metadata", "spec"],
    )


MONITORING_SCHEMAS: dict[str, Schema] = {
    "ServiceMonitor": _kind(
        "ServiceMonitor",
        _obj(
            {
                "selector": _LABEL_SELECTOR,
                "namespaceSelector": _NS_SELECTOR,
                "endpoints": {"type": "array", "minItems": 1, "items": _ENDPOINT},
            },
            ["selector", "endpoints"],
        ),
    ),
    "PodMonitor": _kind(
        "PodMonitor",
        _obj(
            {
                "selector": _LABEL_SELECTOR,
                "namespaceSelector": _NS_SELECTOR,
                "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": _ENDPOINT},
            },
            ["selector", "podMetricsEndpoints"],
        ),
    ),
    "PrometheusRule": _kind(
        "PrometheusRule",
        _obj(
            {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": _obj(
                        {
                            "name": _STR,
                            "interval": _DURATION,
                            "rules": {"type": "array", "minItems": 1, "items": _RULE},
                        },
                        ["name", "rules"],
                    ),
                }
            },
            ["groups"],
        ),
    ),
}


def monitoring_validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = MONITORING_SCHEMAS[kind]
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)
