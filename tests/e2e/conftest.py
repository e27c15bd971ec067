"""kind end-to-end tests: run by hack/e2e.sh against a kind cluster with wsfleet installed.

Everywhere else (this machine and CI have no container engine) every test here is
skipped, and the reason is printed at the end of the run.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.support.kube import Kube


def unavailable_reason() -> str | None:
    """Why the kind e2e suite cannot run here, or None when it can."""
    if os.environ.get("WSFLEET_E2E") != "1":
        return (
            "kind e2e tests run only through hack/e2e.sh (WSFLEET_E2E=1), which needs "
            "Docker with a running engine and kind"
        )
    if shutil.which("docker") is None:
        return "docker not found"
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        return "docker is installed but no engine answers (docker info failed)"
    if shutil.which("kind") is None:
        return "kind not found (go install sigs.k8s.io/kind@v0.30.0)"
    if shutil.which("kubectl") is None:
        return "kubectl not found (bash hack/helm.sh puts one in .venv/bin)"
    return None


REASON = unavailable_reason()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if REASON is None:
        return
    skip = pytest.mark.skip(reason=f"kind e2e skipped: {REASON}")
    for item in items:
        if item.get_closest_marker("e2e") is not None:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = [
        r
        for r in terminalreporter.stats.get("skipped", [])
        if "kind e2e skipped" in str(r.longrepr)
    ]
    if skipped and REASON is not None:
        terminalreporter.write_line(f"tests/e2e: {len(skipped)} kind e2e tests skipped: {REASON}")


@pytest.fixture(scope="session")
def kube() -> Kube:
    return Kube(context=os.environ.get("WSFLEET_E2E_CONTEXT", "kind-wsfleet"))
