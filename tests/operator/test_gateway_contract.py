"""What the operator hands a gateway pod is what the real gateway reads.

The container's args go through the real `wsfleet` argparse parser (so the image's default
CMD does not matter), and the ConfigMap env is loaded into the gateway's real pydantic
settings, field by field.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from wsfleet_gateway import cli as gateway_cli
from wsfleet_gateway import settings as gateway_settings
from wsfleet_operator import resources as r
from wsfleet_operator.spec import FleetSpec, parse_spec

from tests.operator.gateway_env import settings_from_env

EXAMPLE: dict[str, Any] = {
    "redis": {"url": "redis://redis:6379/0"},
    "gateway": {"port": 8443, "adminPort": 9443, "logLevel": "debug"},
    "limits": {
        "connectionsPerUserPerMinute": 17,
        "freeTierChannels": 4,
        "paidTierChannels": 25,
        "maxConnectionsPerPod": 4321,
        "maxMessageBytes": 2048,
        "heartbeatSeconds": 11,
        "idleTimeoutSeconds": 33,
        "bandwidthBytesPerSecond": 54321,
    },
    "drain": {"gracePeriodSeconds": 45, "reconnectPerSecond": 123},
    "features": {
        "presence": {"enabled": False, "ttlSeconds": 12.5, "eventsChannels": ["venue-*"]},
        "prefetch": {
            "enabled": False,
            "perConnection": 1,
            "maxChannelsPerPod": 77,
            "perSecond": 9,
            "holdSeconds": 21,
            "halfLifeSeconds": 3600,
        },
    },
}


def _container(spec: FleetSpec) -> dict[str, Any]:
    dep = r.build_deployment("chat", "ns", "uid", spec)
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_container_runs_wsfleet_gateway_with_explicit_args(monkeypatch: pytest.MonkeyPatch) -> None:
    from wsfleet.cli import build_parser

    spec = parse_spec(EXAMPLE)
    container = _container(spec)
    assert container["command"] == ["wsfleet"]
    args = build_parser().parse_args(container["args"])
    assert args.command == "gateway"
    assert args.func is gateway_cli.run
    # flags and the ConfigMap env together, as in the pod
    settings_from_env(monkeypatch, r.gateway_env(spec))
    settings = gateway_cli.settings_from_args(args)
    assert (settings.host, settings.port) == ("0.0.0.0", 8443)
    assert (settings.admin_host, settings.admin_port) == ("0.0.0.0", 9443)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"ws": settings.port, "admin": settings.admin_port}
    assert container["readinessProbe"]["httpGet"]["port"] == "admin"


def test_args_listen_on_every_interface_even_without_the_configmap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The gateway's own default is loopback: the flags alone make the pod reachable."""
    from wsfleet.cli import build_parser

    spec = parse_spec(EXAMPLE)
    args = build_parser().parse_args(_container(spec)["args"])
    settings_from_env(monkeypatch, {})
    settings = gateway_cli.settings_from_args(args)
    assert settings.host == "0.0.0.0"
    assert settings.admin_host == "0.0.0.0"
    assert settings.port == 8443


def test_spec_limits_arrive_in_the_gateway_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = parse_spec(EXAMPLE)
    s = settings_from_env(monkeypatch, r.gateway_env(spec))
    assert s.user_connects_per_min == 17
    assert s.tier_channels == {"free": 4, "paid": 25}
    assert s.max_connections == 4321
    assert s.max_message_bytes == 2048
    assert s.heartbeat_s == 11
    assert s.idle_timeout_s == 33
    assert s.bandwidth_bytes_per_s == 54321
    assert s.drain_grace_s == 45
    assert s.drain_reconnect_per_s == 123
    assert s.redis_url == "redis://redis:6379/0"
    assert s.log_level == "debug"
    assert s.log_json is True
    assert (s.port, s.admin_port) == (8443, 9443)


def test_spec_features_arrive_in_the_gateway_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings_from_env(monkeypatch, r.gateway_env(parse_spec(EXAMPLE)))
    assert (s.presence, s.presence_ttl_s, s.presence_events_channels) == (False, 12.5, ["venue-*"])
    assert s.prefetch is False
    assert (s.prefetch_per_connection, s.prefetch_max_channels) == (1, 77)
    assert (s.prefetch_per_s, s.prefetch_hold_s, s.prefetch_half_life_s) == (9, 21, 3600)
    defaults = settings_from_env(monkeypatch, r.gateway_env(FleetSpec()))
    assert defaults.presence is True
    assert defaults.prefetch is True
    assert defaults.presence_events_channels == []
    low = parse_spec(
        {
            "features": {
                "presence": {"ttlSeconds": 0.3},
                "prefetch": {"perConnection": 0, "perSecond": 1, "halfLifeSeconds": 60},
            }
        }
    )
    s = settings_from_env(monkeypatch, r.gateway_env(low))  # the CRD's bounds still load
    assert (s.presence_ttl_s, s.prefetch_per_connection) == (0.3, 0)
    with pytest.raises(ValueError, match="less than or equal to 5"):
        parse_spec({"features": {"prefetch": {"perConnection": 6}}})


def test_every_emitted_name_is_a_gateway_setting() -> None:
    """No variable the gateway would silently ignore (it has extra="ignore")."""
    fields = set(gateway_settings.GatewaySettings.model_fields)
    for spec in (FleetSpec(), parse_spec(EXAMPLE)):
        names = {k.removeprefix("WSFLEET_").lower() for k in r.gateway_env(spec)}
        assert names <= fields, sorted(names - fields)


def test_spec_defaults_are_accepted_by_the_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = FleetSpec()
    s = settings_from_env(monkeypatch, r.gateway_env(spec))
    assert s.max_connections == spec.limits.max_connections_per_pod
    assert json.loads(r.gateway_env(spec)["WSFLEET_TIER_CHANNELS"]) == s.tier_channels


def test_spec_bounds_match_the_gateway_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The smallest spec values the CRD allows still load (no pod crash loop)."""
    low = parse_spec(
        {"limits": {"maxMessageBytes": 256, "heartbeatSeconds": 1, "idleTimeoutSeconds": 2}}
    )
    s = settings_from_env(monkeypatch, r.gateway_env(low))
    assert s.max_message_bytes == 256
    with pytest.raises(ValueError, match=r"greater than or equal to 256"):
        parse_spec({"limits": {"maxMessageBytes": 255}})
    # idle <= heartbeat: rejected by the gateway, so reported by the operator instead
    same = parse_spec({"limits": {"heartbeatSeconds": 30, "idleTimeoutSeconds": 30}})
    assert any("idleTimeoutSeconds" in e for e in same.semantic_errors())
