"""`wsfleet operator`: flags and env, and the real process against kmock via KUBECONFIG."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from wsfleet_operator import cli, kube

from tests.operator.harness import fleet_manifest, kube_api, user_client
from tests.operator.test_kubectl_kmock import kubeconfig
from tests.support.waiting import wait_until
from wsfleet.services import free_port

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


@pytest.mark.asyncio
async def test_operator_process_against_kmock(tmp_path: Path) -> None:
    """The installed entry point runs kopf with KUBECONFIG, liveness and metrics."""
    async with kube_api(api_server_like=True) as (_api, url), user_client(url) as client:
        config = kubeconfig(tmp_path, url)
        live, metrics = free_port(), free_port()
        env = dict(
            os.environ,
            KUBECONFIG=str(config),
            HOME=str(tmp_path),
            WSFLEET_OPERATOR_LIVENESS_HOST="127.0.0.1",
            WSFLEET_DASHBOARD_PORT="0",
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "wsfleet",
            "operator",
            "--all-namespaces",
            "--liveness-port",
            str(live),
            "--metrics-port",
            str(metrics),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await wait_until(
                lambda: _http_ok(f"http://127.0.0.1:{live}/healthz"),
                timeout_s=60,
                message="kopf liveness",
            )
            await client.create(
                kube.FLEETS,
                "default",
                fleet_manifest("cli", {"prometheus": {"url": "http://127.0.0.1:1"}}),
            )
            await wait_until(
                lambda: client.get(kube.DEPLOYMENTS, "default", "cli-gateway"),
                timeout_s=60,
                message="deployment from the operator process",
            )
            body = await wait_until(
                lambda: _http_text(f"http://127.0.0.1:{metrics}/metrics", "decisions_total{"),
                timeout_s=60,
                message="operator metrics",
            )
            assert "wsfleet_operator_decisions_total{" in body
            assert "wsfleet_operator_prometheus_errors_total" in body
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), timeout=30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _http_ok(url: str) -> bool:
    return await asyncio.to_thread(_get, url) is not None


async def _http_text(url: str, needle: str) -> str | None:
    text = await asyncio.to_thread(_get, url)
    return text if text and needle in text else None


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.read().decode() if resp.status == 200 else None
    except OSError:
        return None


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
