"""The real operator (kopf) against the kmock Kubernetes API emulator over HTTP."""

from __future__ import annotations

from typing import Any

import kmock
from wsfleet_operator import kube

from tests.operator.harness import (
    assert_rbac_covered,
    fleet_manifest,
    kube_api,
    running_operator,
    user_client,
)
from tests.support.waiting import wait_until

MINIMAL = {"redis": {"url": "redis://redis:6379/0"}, "prometheus": {"url": "http://127.0.0.1:1"}}


async def test_cr_created_makes_owned_objects_and_delete_cleans() -> None:
    async with kube_api() as (api, url), user_client(url) as client, running_operator(api, url):
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
        calls = assert_rbac_covered(api)
        assert ("apps", "deployments", "create") in calls
        assert ("apps", "deployments", "delete") in calls
        assert ("wsfleet.io", "websocketfleets", "watch") in calls
        assert ("wsfleet.io", "websocketfleets/status", "patch") in calls


async def test_invalid_spec_is_reported_not_crash_looped() -> None:
    async with kube_api() as (api, url), user_client(url) as client:
        async with running_operator(api, url) as task:
            bad = dict(MINIMAL, replicas={"min": 5, "max": 3})
            await client.create(kube.FLEETS, "default", fleet_manifest("broken", bad))

            async def degraded() -> dict[str, Any] | None:
                cr = await client.get(kube.FLEETS, "default", "broken")
                status = (cr or {}).get("status") or {}
                conds = {c["type"]: c for c in status.get("conditions") or []}
                return conds if conds.get("Degraded", {}).get("status") == "True" else None

            conds = await wait_until(degraded, timeout_s=30, message="Degraded condition")
            assert conds["Degraded"]["reason"] == "InvalidSpec"
            assert "replicas.min (5) > replicas.max (3)" in conds["Degraded"]["message"]
            assert conds["Ready"]["status"] == "False"
            events = await client.list(kube.EVENTS, "default", {})
            assert any(
                e["reason"] == "InvalidSpec" and e["involvedObject"]["name"] == "broken"
                for e in events
            )
            assert await client.get(kube.DEPLOYMENTS, "default", "broken-gateway") is None
            assert not task.done()

            # fixing the spec recovers without a restart
            await client.patch(kube.FLEETS, "default", "broken", {"spec": {"replicas": {"max": 6}}})
            await wait_until(
                lambda: client.get(kube.DEPLOYMENTS, "default", "broken-gateway"),
                timeout_s=30,
                message="deployment after the fix",
            )
        assert_rbac_covered(api)


async def test_missing_or_conflicting_auth_is_invalid_spec() -> None:
    """No gateway that would crash-loop: no auth, or two kinds at once, creates nothing."""
    async with kube_api() as (api, url), user_client(url) as client:
        async with running_operator(api, url) as task:
            none = fleet_manifest("no-auth", MINIMAL)
            del none["spec"]["auth"]
            both = fleet_manifest(
                "two-auth",
                dict(MINIMAL, auth={"disabled": True, "jwtSecretRef": {"name": "s", "key": "k"}}),
            )
            for manifest in (none, both):
                await client.create(kube.FLEETS, "default", manifest)

            async def reason(name: str) -> str | None:
                cr = await client.get(kube.FLEETS, "default", name)
                conds = {
                    c["type"]: c for c in ((cr or {}).get("status") or {}).get("conditions") or []
                }
                degraded = conds.get("Degraded", {})
                return degraded.get("message") if degraded.get("reason") == "InvalidSpec" else None

            for name, text in (("no-auth", "auth is required"), ("two-auth", "exactly one of")):
                message = await wait_until(lambda n=name: reason(n), timeout_s=30, message=name)
                assert text in message
                assert await client.get(kube.DEPLOYMENTS, "default", f"{name}-gateway") is None
            assert not task.done()
        assert_rbac_covered(api)


async def test_drift_on_owned_deployment_is_repaired() -> None:
    async with kube_api() as (api, url), user_client(url) as client:
        async with running_operator(api, url):
            await client.create(kube.FLEETS, "default", fleet_manifest("chat", MINIMAL))
            dep = await wait_until(
                lambda: client.get(kube.DEPLOYMENTS, "default", "chat-gateway"), timeout_s=30
            )
            assert dep is not None
            image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
            tampered = [dict(dep["spec"]["template"]["spec"]["containers"][0], image="evil:1")]
            await client.patch(
                kube.DEPLOYMENTS,
                "default",
                "chat-gateway",
                {
                    "metadata": {"generation": 2},
                    "spec": {"template": {"spec": {"containers": tampered}}},
                },
            )

            async def repaired() -> bool:
                got = await client.get(kube.DEPLOYMENTS, "default", "chat-gateway")
                return (
                    bool(got) and got["spec"]["template"]["spec"]["containers"][0]["image"] == image
                )

            await wait_until(repaired, timeout_s=30, message="drift repaired")

            async def drift_event() -> bool:
                events = await client.list(kube.EVENTS, "default", {})
                return any(e["reason"] == "DriftRepaired" for e in events)

            await wait_until(drift_event, timeout_s=30, message="DriftRepaired event")
        assert_rbac_covered(api)


async def test_peering_for_ha() -> None:
    """With kopf peering (HA), the operator announces itself and still reconciles."""
    async with kube_api(api_server_like=True) as (api, url), user_client(url) as client:
        api.resources["kopf.dev/v1/clusterkopfpeerings"] = kmock.ResourceInfo(
            kind="ClusterKopfPeering",
            singular="clusterkopfpeering",
            namespaced=False,
            verbs={"get", "list", "watch", "patch", "create"},
        )
        peering = {
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": "wsfleet"},
        }
        await client.create(kube.Kind("kopf.dev", "v1", "clusterkopfpeerings", False), "", peering)
        async with running_operator(api, url, peering_name="wsfleet"):
            await client.create(kube.FLEETS, "default", fleet_manifest("ha", MINIMAL))
            await wait_until(
                lambda: client.get(kube.DEPLOYMENTS, "default", "ha-gateway"),
                timeout_s=60,
                message="deployment with peering on",
            )

            async def announced() -> bool:
                got = await client.get(
                    kube.Kind("kopf.dev", "v1", "clusterkopfpeerings", False), "", "wsfleet"
                )
                return bool((got or {}).get("status"))

            await wait_until(announced, timeout_s=60, message="peering announcement")
        calls = assert_rbac_covered(api)
        assert ("kopf.dev", "clusterkopfpeerings", "patch") in calls
