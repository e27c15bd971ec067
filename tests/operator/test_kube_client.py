"""The small Kubernetes client: connection setup, errors, events; forecast and CLI glue."""

from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf
import pytest
from aiohttp import web
from wsfleet_operator import cli, handlers, kube
from wsfleet_operator.forecast import provider as provider_mod
from wsfleet_operator.kube import Connection, KubeClient, KubeError
from wsfleet_operator.spec import FleetSpec, parse_spec

from tests.operator.harness import fleet_manifest, kube_api
from tests.support.certs import write_certs


def self_signed(tmp: Path) -> tuple[Path, Path, str]:
    """A certificate, its key and the certificate's PEM text."""
    certs = write_certs(tmp)
    return certs.cert, certs.key, certs.cert.read_text()


async def test_connection_from_kopf_info(tmp_path: Path) -> None:
    cert, key, pem = self_signed(tmp_path)
    plain = Connection.from_kopf(kopf.ConnectionInfo(server="http://127.0.0.1:1/", token="t"))
    assert plain.server == "http://127.0.0.1:1"
    assert dict(plain.headers)["Authorization"] == "Bearer t"
    assert plain.ssl_context is None
    insecure = Connection.from_kopf(kopf.ConnectionInfo(server="https://k:6443", insecure=True))
    assert insecure.ssl_context is False
    by_path = Connection.from_kopf(
        kopf.ConnectionInfo(
            server="https://k:6443",
            ca_path=str(cert),
            certificate_path=str(cert),
            private_key_path=str(key),
        )
    )
    assert isinstance(by_path.ssl_context, ssl.SSLContext)
    by_data = Connection.from_kopf(
        kopf.ConnectionInfo(
            server="https://k:6443",
            ca_data=pem.encode(),
            certificate_data=pem,
            private_key_data=key.read_bytes(),
        )
    )
    assert isinstance(by_data.ssl_context, ssl.SSLContext)
    # a kubeconfig's *-data fields are base64 of the PEM (what kopf's kubeconfig login
    # passes on): the real control plane's admin kubeconfig failed here before
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    by_kubeconfig = Connection.from_kopf(
        kopf.ConnectionInfo(
            server="https://k:6443",
            ca_data=b64(pem.encode()),
            certificate_data=b64(pem.encode()),
            private_key_data=b64(key.read_bytes()),
        )
    )
    assert isinstance(by_kubeconfig.ssl_context, ssl.SSLContext)
    assert kube.PODS.api_version == "v1"
    assert kube.DEPLOYMENTS.api_version == "apps/v1"
    assert kube.Kind("x", "v1", "things", namespaced=False).path("ns", "a") == "/apis/x/v1/things/a"


@pytest.fixture
async def failing_api() -> AsyncIterator[str]:
    async def fail(request: web.Request) -> web.Response:
        return web.json_response({"kind": "Status", "code": 500}, status=500)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fail)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_errors_raise_and_events_are_best_effort(failing_api: str) -> None:
    async with KubeClient(Connection(failing_api)) as client:
        with pytest.raises(KubeError) as info:
            await client.get(kube.DEPLOYMENTS, "ns", "x")
        assert info.value.status == 500
        # an Event that cannot be posted is logged, never raised
        await client.create_event(fleet_manifest("f", {}), "Test", "message")


class FakeProvider:
    def __init__(self, fleet: FleetSpec) -> None:
        self.fleet = fleet
        self.refreshes = 0
        self.fail = False

    def update_spec(self, fleet: FleetSpec) -> None:
        self.fleet = fleet

    async def refresh(self, fetch: Any, now: float) -> None:
        self.refreshes += 1
        if self.fail:
            raise RuntimeError("no history")

    def floor(self, now: float) -> float | None:
        return 3 if self.refreshes else None

    def status(self, now: float) -> dict[str, Any]:
        return {"refreshes": self.refreshes}


async def test_refreshing_forecast() -> None:
    spec = FleetSpec()
    current = {"spec": spec}
    provider = FakeProvider(spec)
    adapter = provider_mod.RefreshingForecast(provider, None, lambda: current["spec"], 100.0)
    assert await adapter.floor(1000.0) == 3.0
    assert await adapter.floor(1050.0) == 3.0
    assert provider.refreshes == 1
    current["spec"] = parse_spec({"forecast": {"enabled": True}})
    provider.fail = True
    assert await adapter.floor(1100.0) == 3.0
    assert provider.refreshes == 2
    assert provider.fleet is current["spec"]
    assert adapter.status(1100.0) == {"refreshes": 2}


async def test_default_forecaster_factory_builds_the_seasonal_provider() -> None:
    from wsfleet_operator.prometheus import PrometheusClient

    spec = parse_spec({"forecast": {"enabled": True}})
    async with PrometheusClient("http://127.0.0.1:1", timeout_s=1) as prom:
        forecaster = provider_mod.default_forecaster_factory("ns", "chat", lambda: spec, prom)
        assert isinstance(forecaster, provider_mod.RefreshingForecast)
        # no history reachable: no floor, and no exception
        assert await forecaster.floor(1_800_000_000.0) is None
        assert isinstance(forecaster.status(1_800_000_000.0), dict)


async def test_placeholder_reports_only() -> None:
    scaler = handlers._placeholder("f", "ns")
    result = await scaler.tick(1.0)
    assert result.error is not None
    assert "no target" in result.error
    assert await scaler.target.pod_connections() == {}
    await scaler.target.set_deletion_costs({})
    with pytest.raises(RuntimeError):
        await scaler.target.set_replicas(1, "x")
    assert await scaler.metrics_source.pod_connections() == {}


def test_cli_run_and_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    async def fake_run_operator(settings: cli.OperatorSettings) -> None:
        seen["settings"] = settings

    monkeypatch.setattr(cli, "run_operator", fake_run_operator)
    import argparse

    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["operator", "-A", "--metrics-port", "0", "--log-level", "bogus"])
    assert args.func(args) == 0
    assert seen["settings"].all_namespaces is True

    async def interrupted(settings: cli.OperatorSettings) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_operator", interrupted)
    assert args.func(args) == 130


async def test_run_operator_stops_on_flag() -> None:
    import asyncio

    async with kube_api() as (_api, url):
        stop = asyncio.Event()
        settings = cli.OperatorSettings(all_namespaces=True, liveness_port=0, dashboard=False)
        config = handlers.OperatorConfig(connection_info=kopf.ConnectionInfo(server=url))
        task = asyncio.create_task(cli.run_operator(settings, config, stop_flag=stop))
        await asyncio.sleep(0)
        stop.set()
        await asyncio.wait_for(task, timeout=60)
