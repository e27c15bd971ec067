"""`wsfleet operator`: flags and env (the process itself runs in tests/cluster)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from wsfleet_operator import cli

ROOT = Path(__file__).resolve().parents[2]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli.add_parser(sub)
    return parser.parse_args(["operator", *argv])


def test_flags_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    args = parse("-n", "a", "-n", "b", "--metrics-port", "0", "--peering", "ha", "--priority", "5")
    assert args.func is cli.run
    s = cli.settings_from_args(args)
    assert s.namespaces == ["a", "b"]
    kwargs = cli.operator_kwargs(s)
    assert kwargs["namespaces"] == ["a", "b"]
    assert kwargs["peering_name"] == "ha"
    assert kwargs["priority"] == 5
    assert kwargs["standalone"] is False
    assert kwargs["liveness_endpoint"] == "http://0.0.0.0:8080/healthz"

    monkeypatch.setenv("WSFLEET_OPERATOR_ALL_NAMESPACES", "true")
    monkeypatch.setenv("WSFLEET_OPERATOR_LIVENESS_PORT", "0")
    s = cli.settings_from_args(parse("--no-forecast", "--no-dashboard", "--log-level", "debug"))
    assert s.dashboard is False
    kwargs = cli.operator_kwargs(s)
    assert kwargs["clusterwide"] is True
    assert "liveness_endpoint" not in kwargs
    assert kwargs["standalone"] is True
    assert s.forecast is False
    assert s.log_level == "debug"

    with pytest.raises(SystemExit):
        parse("-n", "a", "-A")


def test_default_namespace_outside_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WSFLEET_OPERATOR_NAMESPACES", raising=False)
    assert cli.operator_kwargs(cli.OperatorSettings())["namespaces"] == ["default"]


def test_peering_priority_derived_from_the_pod_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """--peering without --priority: each replica gets its own, stable, from HOSTNAME."""
    monkeypatch.delenv("WSFLEET_OPERATOR_PRIORITY", raising=False)
    priorities = []
    for pod in ("wsfleet-operator-5d8c7-abcde", "wsfleet-operator-5d8c7-fghij"):
        monkeypatch.setenv("HOSTNAME", pod)
        kwargs = cli.operator_kwargs(cli.settings_from_args(parse("-A", "--peering", "ha")))
        assert kwargs["priority"] == cli.own_priority(pod)
        assert kwargs["priority"] == cli.own_priority(pod)  # stable across restarts
        priorities.append(kwargs["priority"])
    assert priorities[0] != priorities[1]
    assert all(0 <= p < cli.PRIORITY_RANGE for p in priorities)
    # an explicit priority (flag or env) wins; without peering there is none
    kwargs = cli.operator_kwargs(
        cli.settings_from_args(parse("--peering", "ha", "--priority", "0"))
    )
    assert kwargs["priority"] == 0
    monkeypatch.setenv("WSFLEET_OPERATOR_PRIORITY", "7")
    assert cli.operator_kwargs(cli.settings_from_args(parse("--peering", "ha")))["priority"] == 7
    assert "priority" not in cli.operator_kwargs(cli.settings_from_args(parse("-A")))


def test_own_priority_falls_back_to_the_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOSTNAME", raising=False)
    monkeypatch.setattr(cli.socket, "gethostname", lambda: "dev-laptop")
    assert cli.own_priority() == cli.own_priority("dev-laptop")


@pytest.mark.parametrize(
    ("argv", "scanning_off"),
    [
        (("-n", "weddings"), True),  # the chart's namespaced mode: a Role is enough
        (("-n", "a", "-n", "b"), True),
        ((), True),  # the pod's own namespace
        (("-n", "shop-*"), False),  # a pattern: kopf must list namespaces
        (("-n", "!kube-system"), False),
        (("-A",), False),  # cluster-wide: kopf watches CRDs, never lists namespaces
    ],
)
def test_kopf_scanning_only_where_needed(
    argv: tuple[str, ...], scanning_off: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WSFLEET_OPERATOR_ALL_NAMESPACES", raising=False)
    settings = cli.settings_from_args(parse(*argv))
    assert cli.kopf_settings(settings).scanning.disabled is scanning_off
