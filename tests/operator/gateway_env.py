"""The gateway's settings as a pod would build them from the env the operator renders."""

from __future__ import annotations

import os
from typing import Any

import pytest


def settings_from_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Any:
    """`GatewaySettings()` with exactly `env` as its ``WSFLEET_*`` variables."""
    from wsfleet_gateway.settings import GatewaySettings

    for name in list(os.environ):
        if name.startswith("WSFLEET_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return GatewaySettings()
