"""REQUIRED_RULES is the one list of Kubernetes calls; the client refuses others."""

from __future__ import annotations

import pytest
import yaml
from wsfleet_operator import kube, rbac
from wsfleet_operator.kube import Connection, KubeClient


def test_rules_cover_what_the_operator_needs() -> None:
    assert rbac.is_allowed("apps", "deployments", "patch")
    assert rbac.is_allowed("", "pods", "patch")
    assert rbac.is_allowed("wsfleet.io", "websocketfleets/status", "patch")
    # Secrets: get by name only (pre-warm API key), never enumerated or changed
    assert rbac.is_allowed("", "secrets", "get")
    for verb in ("list", "watch", "create", "patch", "delete"):
        assert not rbac.is_allowed("", "secrets", verb)
    assert not rbac.is_allowed("apps", "deployments", "update")  # no PUT anywhere
    pairs = [(r.api_group, r.resource) for r in rbac.REQUIRED_RULES]
    assert len(pairs) == len(set(pairs))
    for rule in rbac.REQUIRED_RULES:
        assert "*" not in rule.verbs
        assert rule.resource != "*"


def test_check_allowed_raises() -> None:
    with pytest.raises(rbac.ForbiddenCallError, match="secrets"):
        rbac.check_allowed("", "secrets", "list")


async def test_client_refuses_calls_outside_the_rules() -> None:
    async with KubeClient(Connection("http://127.0.0.1:9")) as client:
        with pytest.raises(rbac.ForbiddenCallError):
            await client.list(kube.SECRETS, "ns", {})
        with pytest.raises(rbac.ForbiddenCallError):
            await client.create(kube.FLEETS, "ns", {})


def test_main_prints_rbac_rules(capsys: pytest.CaptureFixture[str]) -> None:
    assert rbac.main() == 0
    rules = yaml.safe_load(capsys.readouterr().out)["rules"]
    assert rules == rbac.as_rbac_rules()
    assert {
        "apiGroups": ["policy"],
        "resources": ["poddisruptionbudgets"],
        "verbs": ["get", "list", "watch", "create", "patch"],
    } in rules
