"""The kind/Tilt assets: manifests valid, Prometheus config valid, scripts parse."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from kubernetes_validate import utils as kv

from tests.packaging.chart import KUBERNETES_VERSION, ROOT
from tests.packaging.test_images import STAGES, TARGETS

SCRIPTS = sorted((ROOT / "hack").glob("*.sh"))


def test_kind_prometheus_manifests_are_valid(tmp_path: Path) -> None:
    docs = [
        d for d in yaml.safe_load_all((ROOT / "hack" / "kind" / "prometheus.yaml").read_text()) if d
    ]
    assert {d["kind"] for d in docs} >= {"Deployment", "ConfigMap", "Service", "ClusterRole"}
    for doc in docs:
        kv.validate(doc, KUBERNETES_VERSION, strict=True)
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    prom = yaml.safe_load(config["data"]["prometheus.yml"])
    # Debian's promtool is built without Kubernetes service discovery: check everything
    # else (globals, relabelling) with a static target in place of kubernetes_sd_configs.
    for job in prom["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
        job["static_configs"] = [{"targets": ["127.0.0.1:9090"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prom))
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool missing: bash hack/install-deps.sh"
    proc = subprocess.run(
        [promtool, "check", "config", "--syntax-only", "prometheus.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_kind_cluster_config_parses() -> None:
    cfg = yaml.safe_load((ROOT / "hack" / "kind" / "cluster.yaml").read_text())
    assert cfg["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert [n["role"] for n in cfg["nodes"]].count("control-plane") == 1


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_hack_script_is_strict_bash(script: Path) -> None:
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_tiltfile_parses_and_deploys_the_pieces() -> None:
    text = (ROOT / "Tiltfile").read_text()
    ast.parse(text)  # Starlark is a Python subset: a syntax error shows here
    for needle in (
        "charts/wsfleet",
        "examples/01-minimal-fleet.yaml",
        'k8s_kind("WebSocketFleet"',
        "port-forward svc/prometheus",
        "live_update",
    ):
        assert needle in text


def test_kind_up_installs_what_the_e2e_tests_expect() -> None:
    text = (ROOT / "hack" / "kind-up.sh").read_text()
    assert "--set redis.enabled=true" in text
    assert "hack/kind/prometheus.yaml" in text
    e2e = (ROOT / "tests" / "e2e" / "test_kind.py").read_text()
    assert 'OPERATOR_NS = "wsfleet-system"' in e2e
    assert 'NAMESPACE="wsfleet-system"' in text


def tilt_image_builds() -> dict[str, dict[str, str]]:
    """The Tiltfile's image builds: image ref -> their string keyword arguments."""
    builds: dict[str, dict[str, str]] = {}
    for node in ast.walk(ast.parse((ROOT / "Tiltfile").read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "").startswith("docker_build"):
            ref = node.args[0]
            assert isinstance(ref, ast.Constant)
            builds[str(ref.value)] = {
                str(kw.arg): str(kw.value.value)
                for kw in node.keywords
                if isinstance(kw.value, ast.Constant)
            }
    return builds


def test_tiltfile_builds_each_image_from_its_target_of_the_root_dockerfile() -> None:
    builds = tilt_image_builds()
    assert set(builds) == {f"wsfleet/{target}" for target in TARGETS}
    for target in TARGETS:
        kwargs = builds[f"wsfleet/{target}"]
        assert kwargs["dockerfile"] == "Dockerfile"
        assert kwargs["target"] == target
        assert target in STAGES
        assert (ROOT / kwargs["dockerfile"]).is_file()


def test_kind_up_builds_each_image_from_its_target_of_the_root_dockerfile() -> None:
    text = (ROOT / "hack" / "kind-up.sh").read_text()
    builds = re.findall(r"^\s*docker build (.+)$", text, flags=re.M)
    assert len(builds) == len(TARGETS)
    for target in TARGETS:
        (build,) = [b for b in builds if f"--target {target} " in b]
        assert build.startswith('-f "$ROOT/Dockerfile" ')
        assert f'-t "${target.upper()}_IMAGE" "$ROOT"' in build
        assert f'{target.upper()}_IMAGE="wsfleet/{target}:${{TAG}}"' in text
        assert f'"${target.upper()}_IMAGE"' in text.split("kind load docker-image", 1)[1]
