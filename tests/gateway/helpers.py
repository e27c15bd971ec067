"""Helpers shared by the gateway tests."""

from __future__ import annotations

from typing import Any

from wsfleet_gateway.settings import GatewaySettings

API_KEY = "test-api-key"


def make_settings(**overrides: Any) -> GatewaySettings:
    """Settings for an in-process test gateway: free ports, a known API key."""
    values: dict[str, Any] = {
        "port": 0,
        "admin_port": 0,
        "node_name": "test-node",
        "api_key": API_KEY,
        "auth": "disabled",
    }
    values.update(overrides)
    return GatewaySettings(**values)
