"""kubectl against a real cluster: the local control plane (hack/cluster.sh) or kind.

Shared by the real-cluster suite (tests/cluster, a kubeconfig) and the kind e2e suite
(tests/e2e, a context), so that the test bodies both run are written once
(tests/support/fleet_checks.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

JSON = dict[str, Any]


class KubectlError(RuntimeError):
    """kubectl exited non-zero; `stderr` is what it said."""

    def __init__(self, args: Sequence[str], stderr: str) -> None:
        super().__init__(f"kubectl {' '.join(args)}: {stderr.strip()}")
        self.stderr = stderr


@dataclass(frozen=True)
class Kube:
    """kubectl with one kubeconfig and/or context."""

    kubeconfig: str | None = None
    context: str | None = None
    kubectl_path: str = "kubectl"
    env: dict[str, str] = field(default_factory=dict)

    def base(self) -> list[str]:
        argv = [self.kubectl_path]
        if self.kubeconfig:
            argv += ["--kubeconfig", self.kubeconfig]
        if self.context:
            argv += ["--context", self.context]
        return argv

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout_s: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*self.base(), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            env={**os.environ, **self.env},
        )
        if check and proc.returncode != 0:
            raise KubectlError(args, proc.stderr)
        return proc

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        return self.run(*args, stdin=stdin, check=check).stdout

    def apply(self, namespace: str, manifest: JSON, *extra: str) -> str:
        return self.kubectl(
            "apply", "-n", namespace, *extra, "-f", "-", stdin=yaml.safe_dump(manifest)
        )

    def get(self, namespace: str, kind: str, name: str) -> JSON | None:
        proc = self.run("get", "-n", namespace, kind, name, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr or "not found" in proc.stderr:
                return None
            raise KubectlError(("get", kind, name), proc.stderr)
        got: JSON = json.loads(proc.stdout)
        return got

    def items(self, namespace: str | None, kind: str, *selector: str) -> list[JSON]:
        scope = ["-n", namespace] if namespace else ["-A"]
        out = self.kubectl("get", *scope, kind, *selector, "-o", "json")
        items: list[JSON] = json.loads(out)["items"]
        return items

    def create_namespace(self, name: str) -> None:
        self.kubectl("create", "namespace", name)

    def delete_namespace(self, name: str) -> None:
        self.kubectl("delete", "namespace", name, "--wait=false", check=False)

    def logs(self, namespace: str, target: str) -> str:
        return self.kubectl("logs", "-n", namespace, target, "--tail=2000", check=False)

    def can_i(self, as_user: str, *what: str) -> bool:
        proc = self.run("auth", "can-i", *what, "--as", as_user, check=False)
        return proc.stdout.strip() == "yes"

    @contextlib.contextmanager
    def port_forward(self, namespace: str, target: str, port: int) -> Iterator[int]:
        """`kubectl port-forward` to a free local port; yields that port."""
        proc = subprocess.Popen(
            [
                *self.base(),
                "port-forward",
                "-n",
                namespace,
                target,
                f":{port}",
                "--address",
                "127.0.0.1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            match = re.search(r"127\.0\.0\.1:(\d+)", line)
            if match is None:
                raise RuntimeError(f"port-forward did not start: {line}")
            yield int(match.group(1))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
