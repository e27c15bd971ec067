"""The real operator (kopf) against the kmock Kubernetes API emulator over HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from tests.operator.harness import fleet_manifest, kube_api, running_operator
from tests.support.waiting import wait_until
from wsfleet_operator import kube
from wsfleet_operator.kube import Connection, KubeClient

pytestmark = pytest.mark.asyncio

MINIMAL = {"redis": {"url": "redis://redis:6379/0"}, "prometheus": {"url": "http://127.0.0.1:1"}}


async def test_cr_created_makes_owned_objects_and_delete_cleans() -> None:
    async with kube_api() as (api, url), KubeClient(Connection(url)) as client:
        async with running_operator(api, url):
            body = fleet_manifest("chat", MINIMAL)
            await client.create(kube.FLEETS, "default", body)
            uid = body["metadata"]["uid"]

            async def owned() -> dict[str, Any] | None:
                objs = {
                    "dep": await client.get(kube.DEPLOYMENTS, "default", "chat-gateway"),
                    "svc": await client.get(kube.SERVICES, "default", "chat-gateway"),
                    "pdb": await client.get(kube.PDBS, "default", "chat-gateway"),
                    "cm": await client.get(kube.CONFIGMAPS, "default", "chat-gateway-config"),
                }
                return objs if all(objs.values()) else None

            objs = await wait_until(owned, timeout_s=30, message="owned objects")
            assert objs is not None
            for obj in objs.values():
                (ref,) = obj["metadata"]["ownerReferences"]
                assert ref["uid"] == uid
                assert ref["kind"] == "WebSocketFleet"
                assert ref["controller"] is True
            assert objs["dep"]["spec"]["replicas"] == 2

            await client.delete(kube.FLEETS, "default", "chat")

            async def gone() -> bool:
                return (
                    await client.get(kube.DEPLOYMENTS, "default", "chat-gateway") is None
                    and await client.get(kube.SERVICES, "default", "chat-gateway") is None
                    and await client.get(kube.PDBS, "default", "chat-gateway") is None
                    and await client.get(kube.FLEETS, "default", "chat") is None
                )

            await wait_until(gone, timeout_s=30, message="owned objects deleted")
