"""A thin kubectl wrapper for the kind e2e tests (real cluster, real controllers)."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

JSON = dict[str, Any]


@dataclass(frozen=True)
class Kube:
    context: str

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        proc = subprocess.run(
            ["kubectl", "--context", self.context, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr}")
        return proc.stdout

    def apply(self, namespace: str, manifest: JSON) -> None:
        self.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest))

    def get(self, namespace: str, kind: str, name: str) -> JSON | None:
        out = self.kubectl("get", "-n", namespace, kind, name, "-o", "json", check=False)
        return json.loads(out) if out.strip() else None

    def create_namespace(self, name: str) -> None:
        self.kubectl("create", "namespace", name)

    def delete_namespace(self, name: str) -> None:
        self.kubectl("delete", "namespace", name, "--wait=false", check=False)

    def logs(self, namespace: str, target: str) -> str:
        return self.kubectl("logs", "-n", namespace, target, "--tail=2000", check=False)

    @contextlib.contextmanager
    def port_forward(self, namespace: str, target: str, port: int) -> Iterator[int]:
        """`kubectl port-forward` to a free local port; yields that port."""
        proc = subprocess.Popen(
            [
                "kubectl",
                "--context",
                self.context,
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
