"""The operator (kopf) against the kmock API emulator: only what a real API server cannot
be made to show. A fleet the CRD's schema and CEL rules refuse never reaches a real
operator; an older CRD (or none) lets one through, and the operator must report it, not
crash-loop. Everything else runs against the real control plane (tests/cluster)."""

from __future__ import annotations

from typing import Any

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
            assert (
                "replicas.min must not exceed replicas.max (5 > 3)" in conds["Degraded"]["message"]
            )
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
