"""The dashboard's kopf glue without a cluster (tests/cluster/test_dashboard.py runs it
against the real API server)."""

from __future__ import annotations

from wsfleet_operator.dashboard.app import DashboardSettings
from wsfleet_operator.dashboard.kopf import KopfDashboard


def test_event_handler_ignores_the_listing_marker() -> None:
    dashboard = KopfDashboard(DashboardSettings(enabled=False))
    body = {"metadata": {"name": "a", "namespace": "n"}}
    dashboard.on_event(None, body)
    assert dashboard.source.fleets() == []
    dashboard.on_event("ADDED", body)
    assert [f.name for f in dashboard.source.fleets()] == ["a"]
    dashboard.on_event("MODIFIED", {"metadata": {**body["metadata"], "deletionTimestamp": "x"}})
    assert dashboard.source.fleets() == []


async def test_disabled_dashboard_serves_nothing() -> None:
    dashboard = KopfDashboard(DashboardSettings(enabled=False))
    await dashboard.start()
    assert dashboard.server is None
    await dashboard.stop()
