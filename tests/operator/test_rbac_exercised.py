"""Least privilege, checked from both sides against the kmock API emulator.

`assert_rbac_covered` (harness) fails on a call outside `rbac.REQUIRED_RULES`; these tests
fail on the opposite: a rule in REQUIRED_RULES that nothing (kopf or our code) sends, so an
unused grant cannot linger in the constant or in the chart's (Cluster)Role.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import kmock
import kopf
import pytest
from wsfleet_operator import cli, kube, rbac
from wsfleet_operator.handlers import OperatorConfig, build_registry
from wsfleet_operator.kube import Connection, KubeClient
from wsfleet_operator.prewarm import read_secret_key
from wsfleet_operator.resources import config_name, object_name
from wsfleet_operator.spec import SecretKeySelector
from wsfleet_operator.targets import KubernetesTarget

from tests.operator.harness import (
    assert_rbac_covered,
    fleet_manifest,
    kube_api,
    pod_manifest,
    running_operator,
    user_client,
    watched,
)
from tests.support.waiting import wait_until

MINIMAL = {"redis": {"url": "redis://redis:6379/0"}, "prometheus": {"url": "http://127.0.0.1:1"}}
CLUSTER_PEERINGS = kube.Kind("kopf.dev", "v1", "clusterkopfpeerings", False)
PEERINGS = kube.Kind("kopf.dev", "v1", "kopfpeerings")


def required(excluded: frozenset[tuple[str, str]]) -> set[tuple[str, str, str]]:
    return {
        (r.api_group, r.resource, verb)
        for r in rbac.REQUIRED_RULES
        if (r.api_group, r.resource) not in excluded
        for verb in r.verbs
    }


class _NoMetrics:
    async def pod_connections(self) -> dict[str, int] | None:
        return None


def _peering_resource(api: kmock.KubernetesEmulator, namespaced: bool) -> None:
    plural = "kopfpeerings" if namespaced else "clusterkopfpeerings"
    api.resources[f"kopf.dev/v1/{plural}"] = kmock.ResourceInfo(
        kind="KopfPeering" if namespaced else "ClusterKopfPeering",
        singular=plural[:-1],
        namespaced=namespaced,
        verbs={"get", "list", "watch", "patch", "create"},
    )


async def test_every_cluster_wide_rule_is_exercised() -> None:
    """Cluster-wide with peering: every rule of that mode is really sent by someone."""
    async with kube_api(api_server_like=True) as (api, url), user_client(url) as client:
        _peering_resource(api, namespaced=False)
        peering = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering"}
        await client.create(CLUSTER_PEERINGS, "", {**peering, "metadata": {"name": "wsfleet"}})
        async with running_operator(api, url, peering_name="wsfleet"):
            await client.create(kube.FLEETS, "default", fleet_manifest("chat", MINIMAL))
            dep = await wait_until(
                lambda: client.get(kube.DEPLOYMENTS, "default", object_name("chat")),
                timeout_s=60,
                message="deployment",
            )
            assert dep is not None
            for pod in ("chat-gw-0", "chat-gw-1"):
                await client.create(kube.PODS, "default", pod_manifest(pod, "chat"))
            # drift on every owned object; the Deployment's event makes the operator repair all
            tamper = {"metadata": {"labels": {"app.kubernetes.io/managed-by": "someone"}}}
            for kind, name in (
                (kube.SERVICES, object_name("chat")),
                (kube.PDBS, object_name("chat")),
                (kube.CONFIGMAPS, config_name("chat")),
            ):
                await client.patch(kind, "default", name, tamper)
            await client.patch(
                kube.DEPLOYMENTS,
                "default",
                object_name("chat"),
                {"metadata": {"generation": 2}, "spec": {"minReadySeconds": 99}},
            )

            async def repaired() -> bool:
                svc = await client.get(kube.SERVICES, "default", object_name("chat"))
                labels = (svc or {}).get("metadata", {}).get("labels") or {}
                return labels.get("app.kubernetes.io/managed-by") == "wsfleet-operator"

            await wait_until(repaired, timeout_s=60, message="drift repaired")
            # the autoscaler's scale-down calls, as the operator (its client, its RBAC check)
            async with KubeClient(Connection(url)) as op_client:
                target = KubernetesTarget(op_client, "default", "chat", _NoMetrics())
                await target.set_deletion_costs({"chat-gw-0": 3, "chat-gw-1": 1})
                await target.set_replicas(2, "test")
                # the cache pre-warm reads the admin API key from the Secret the spec names
                ref = SecretKeySelector(name="chat-admin", key="api-key")
                assert await read_secret_key(op_client, "default", ref) is None

            async def announced() -> bool:
                got = await client.get(CLUSTER_PEERINGS, "", "wsfleet")
                return bool((got or {}).get("status"))

            await wait_until(announced, timeout_s=60, message="peering announcement")
            await client.delete(kube.FLEETS, "default", "chat")
            await wait_until(
                lambda: _gone(client, kube.CONFIGMAPS, config_name("chat")),
                timeout_s=60,
                message="owned objects deleted",
            )
        calls = assert_rbac_covered(api)
    unused = required(rbac.NAMESPACE_PATTERN_ONLY | rbac.NAMESPACED_ONLY) - calls
    assert not unused, f"in REQUIRED_RULES but never sent: {sorted(unused)}"


async def _gone(client: KubeClient, kind: kube.Kind, name: str) -> bool:
    return await client.get(kind, "default", name) is None


@contextlib.asynccontextmanager
async def namespaced_operator(
    api: kmock.KubernetesEmulator, url: str, settings: cli.OperatorSettings
) -> AsyncIterator[asyncio.Task[None]]:
    """kopf as `wsfleet operator` starts it (cli.kopf_settings + cli.operator_kwargs)."""
    registry = build_registry(OperatorConfig(connection_info=kopf.ConnectionInfo(server=url)))
    kwargs: dict[str, Any] = cli.operator_kwargs(settings)
    task = asyncio.create_task(
        kopf.operator(registry=registry, settings=cli.kopf_settings(settings), **kwargs)
    )
    try:
        await wait_until(
            lambda: watched(api, "websocketfleets") or task.done(), timeout_s=30, message="watch"
        )
        if task.done():
            task.result()
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_namespaced_run_never_asks_for_cluster_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    """`wsfleet operator --namespace default --peering wsfleet`, as the chart's namespaced mode:
    no namespaces or CRD calls (a Role cannot grant them), and the replica announces the
    priority derived from its pod name."""
    monkeypatch.setenv("HOSTNAME", "wsfleet-operator-7c9d-x2kfq")
    settings = cli.OperatorSettings(namespaces=["default"], peering="wsfleet", liveness_port=0)
    async with kube_api(api_server_like=True) as (api, url), user_client(url) as client:
        _peering_resource(api, namespaced=True)
        peering = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering"}
        await client.create(
            PEERINGS,
            "default",
            {**peering, "metadata": {"name": "wsfleet", "namespace": "default"}},
        )
        async with namespaced_operator(api, url, settings) as task:
            await client.create(kube.FLEETS, "default", fleet_manifest("ns", MINIMAL))
            await wait_until(
                lambda: client.get(kube.DEPLOYMENTS, "default", object_name("ns")),
                timeout_s=60,
                message="deployment in namespaced mode",
            )

            async def announced() -> dict[str, Any] | None:
                got = await client.get(PEERINGS, "default", "wsfleet")
                status: dict[str, Any] = (got or {}).get("status") or {}
                return status or None

            status = await wait_until(announced, timeout_s=60, message="peering announcement")
            assert not task.done()
        calls = assert_rbac_covered(api)
    assert not {c for c in calls if c[1] in ("namespaces", "customresourcedefinitions")}, calls
    assert ("kopf.dev", "kopfpeerings", "patch") in calls
    (peer,) = status.values()
    assert peer["priority"] == cli.own_priority("wsfleet-operator-7c9d-x2kfq")
