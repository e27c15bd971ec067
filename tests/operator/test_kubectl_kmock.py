"""`kubectl apply -f examples/...` against the kmock emulator, with the operator running.

kmock gaps met here (kmock 0.8): it serves no /openapi (so `--validate=false`),
its list responses carry no `kind` (so `kubectl get` of a list fails: we get
objects by name), and it assigns no uid or resourceVersion (kopf's finalizer
patch tests resourceVersion: the reconcile test adds both, as a real API
server would, and pipes the example to `kubectl apply -f -`).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from wsfleet_operator import kube

from tests.operator.harness import kube_api, running_operator, user_client
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"


def kubeconfig(tmp: Path, url: str) -> Path:
    path = tmp / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f'clusters: [{{name: kmock, cluster: {{server: "{url}"}}}}]\n'
        "users: [{name: u, user: {token: test}}]\n"
        "contexts: [{name: c, context: {cluster: kmock, user: u, namespace: default}}]\n"
        "current-context: c\n"
    )
    return path


async def kubectl(config: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    env = dict(os.environ, KUBECONFIG=str(config), HOME=str(config.parent))
    proc = await asyncio.create_subprocess_exec(
        KUBECTL,
        *args,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    data = stdin.encode() if stdin is not None else b""
    out, err = await asyncio.wait_for(proc.communicate(data), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


needs_kubectl = pytest.mark.skipif(not Path(KUBECTL).exists(), reason="kubectl not installed")
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def example_name(path: Path) -> str:
    return str(yaml.safe_load(path.read_text())["metadata"]["name"])


@needs_kubectl
async def test_kubectl_apply_examples_files(tmp_path: Path) -> None:
    """`kubectl apply -f examples/NN-*.yaml` exactly as a user types it."""
    async with kube_api() as (_api, url), user_client(url) as client:
        config = kubeconfig(tmp_path, url)
        for example in EXAMPLES:
            code, out, err = await kubectl(config, "apply", "--validate=false", "-f", str(example))
            assert code == 0, err
            assert out.strip() == f"websocketfleet.wsfleet.io/{example_name(example)} created"
            cr = await client.get(kube.FLEETS, "default", example_name(example))
            assert cr is not None
            assert cr["spec"] == yaml.safe_load(example.read_text())["spec"]
            code, out, err = await kubectl(
                config, "get", f"websocketfleets.wsfleet.io/{example_name(example)}", "-o", "json"
            )
            assert code == 0, err
            assert json.loads(out)["kind"] == "WebSocketFleet"
            code, out, err = await kubectl(config, "apply", "--validate=false", "-f", str(example))
            assert code == 0, err
            assert "unchanged" in out


@needs_kubectl
async def test_kubectl_applied_examples_are_reconciled(tmp_path: Path) -> None:
    """The operator reconciles kubectl-applied examples and cleans up on `kubectl delete`.

    kopf adds its finalizer with a JSON patch that tests `metadata.resourceVersion`,
    which plain kmock does not assign: this emulator assigns uid and resourceVersion
    on create, as the API server does (`ApiServerLikeEmulator`).
    """
    async with kube_api(api_server_like=True) as (_api, url), user_client(url) as client:
        config = kubeconfig(tmp_path, url)
        async with running_operator(_api, url):
            for example in EXAMPLES:
                code, _out, err = await kubectl(
                    config, "apply", "--validate=false", "-f", str(example)
                )
                assert code == 0, err
                name = example_name(example)
                dep = await wait_until(
                    lambda name=name: client.get(kube.DEPLOYMENTS, "default", f"{name}-gateway"),
                    timeout_s=30,
                    message=f"deployment of {name}",
                )
                cr = await client.get(kube.FLEETS, "default", name)
                assert cr is not None
                assert dep["metadata"]["ownerReferences"][0]["uid"] == cr["metadata"]["uid"]

            first = EXAMPLES[0]
            code, _out, err = await kubectl(config, "delete", "-f", str(first), "--wait=false")
            assert code == 0, err
            await wait_until(
                lambda: _gone(client, example_name(first)), timeout_s=30, message="deleted"
            )


async def _gone(client: kube.KubeClient, name: str) -> bool:
    return (
        await client.get(kube.FLEETS, "default", name) is None
        and await client.get(kube.DEPLOYMENTS, "default", f"{name}-gateway") is None
    )
