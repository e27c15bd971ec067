"""hack/verify-chart.sh passes on the tree and fails on a stale chart copy of the CRD."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.packaging.chart import ROOT


def run(script: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, timeout=120, check=False
    )


def test_verify_chart_passes_on_the_repository() -> None:
    proc = run(ROOT / "hack" / "verify-chart.sh")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok: chart copies are current" in proc.stdout


def make_tree(tmp_path: Path) -> Path:
    """A copy of the files verify-chart.sh and sync-chart.sh read (no verify-crd.sh)."""
    (tmp_path / "hack").mkdir()
    for name in ("verify-chart.sh", "sync-chart.sh"):
        shutil.copy(ROOT / "hack" / name, tmp_path / "hack" / name)
    shutil.copytree(ROOT / "crds", tmp_path / "crds")
    shutil.copytree(
        ROOT / "charts" / "wsfleet" / "files" / "crds",
        tmp_path / "charts" / "wsfleet" / "files" / "crds",
    )
    return tmp_path


def test_verify_chart_fails_on_a_stale_copy_and_sync_fixes_it(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    assert run(tree / "hack" / "verify-chart.sh").returncode == 0
    crd = next((tree / "crds").glob("*.yaml"))
    crd.write_text(crd.read_text().replace("shortNames:\n", "shortNames:\n    - wsfx\n", 1))
    stale = run(tree / "hack" / "verify-chart.sh")
    assert stale.returncode == 1
    assert "is stale; run hack/sync-chart.sh" in stale.stderr
    synced = run(tree / "hack" / "sync-chart.sh")
    assert synced.returncode == 0, synced.stderr
    assert run(tree / "hack" / "verify-chart.sh").returncode == 0


def test_verify_chart_fails_on_missing_or_orphan_copy(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    copy = tree / "charts" / "wsfleet" / "files" / "crds" / "wsfleet.io_websocketfleets.yaml"
    orphan = copy.with_name("wsfleet.io_oldfleets.yaml")
    shutil.copy(copy, orphan)
    proc = run(tree / "hack" / "verify-chart.sh")
    assert proc.returncode == 1
    assert "has no source in crds/" in proc.stderr
    orphan.unlink()
    copy.unlink()
    proc = run(tree / "hack" / "verify-chart.sh")
    assert proc.returncode == 1
    assert "is missing; run hack/sync-chart.sh" in proc.stderr


def test_verify_chart_fails_on_a_stale_values_table(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    shutil.copy(ROOT / "hack" / "chart_readme.py", tree / "hack" / "chart_readme.py")
    for name in ("README.md", "values.yaml"):
        shutil.copy(ROOT / "charts" / "wsfleet" / name, tree / "charts" / "wsfleet" / name)
    assert run(tree / "hack" / "verify-chart.sh").returncode == 0
    values = tree / "charts" / "wsfleet" / "values.yaml"
    values.write_text(values.read_text().replace("replicaCount: 1", "replicaCount: 3", 1))
    stale = run(tree / "hack" / "verify-chart.sh")
    assert stale.returncode == 1
    assert "values table is stale" in stale.stderr
    assert run(tree / "hack" / "sync-chart.sh").returncode == 0
    assert run(tree / "hack" / "verify-chart.sh").returncode == 0
    assert (
        "| `operator.replicaCount` | int | `3` |"
        in (tree / "charts" / "wsfleet" / "README.md").read_text()
    )
