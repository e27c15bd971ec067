"""Spec model semantics and the pure builders of the owned objects."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pydantic
import pytest
import yaml
from wsfleet_operator import resources as r
from wsfleet_operator.spec import FleetSpec, ForecastSpec, parse_spec

ROOT = Path(__file__).resolve().parents[2]


def test_wire_names_are_camel_case_and_python_names_snake() -> None:
    spec = parse_spec({"costGuard": {"maxSurgePerWindow": 3}, "dryRun": True})
    assert spec.cost_guard.max_surge_per_window == 3
    assert spec.dry_run is True
    wire = spec.to_wire()
    assert wire["costGuard"]["maxSurgePerWindow"] == 3
    assert "cost_guard" not in wire


def test_defaults_follow_the_brief() -> None:
    spec = FleetSpec()
    assert (spec.replicas.min, spec.replicas.max) == (2, 10)
    assert spec.targets.target_utilization == 0.8
    assert spec.targets.scale_down_utilization == 0.4
    assert spec.targets.switch_latency_p95_ms == 500
    assert spec.behavior.tolerance == 0.1
    assert spec.behavior.scale_down.stabilization_window_seconds == 600
    f = spec.forecast
    assert [(p.month, p.multiplier) for p in f.season_priors] == [(6, 10), (9, 8), (10, 6)]
    assert [(p.start_hour, p.end_hour) for p in f.peak_hours] == [(18, 20)]
    assert (f.accuracy_threshold, f.headroom) == (0.85, 0.3)
    assert f.season_multiplier(6) == 10
    assert f.season_multiplier(1) == 1.0
    assert isinstance(f, ForecastSpec)


def test_unknown_and_out_of_range_fields_are_rejected() -> None:
    with pytest.raises(pydantic.ValidationError):
        parse_spec({"replicas": {"minimum": 2}})
    with pytest.raises(pydantic.ValidationError):
        parse_spec({"gateway": {"port": 9090, "adminPort": 9090}})
    with pytest.raises(pydantic.ValidationError):
        parse_spec({"behavior": {"tolerance": 1.0}})


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"replicas": {"min": 5, "max": 3}}, "replicas.min must not exceed replicas.max (5 > 3)"),
        ({"targets": {"scaleDownUtilization": 0.9}}, "scaleDownUtilization"),
        (
            {"redis": {"url": "redis://r:6379", "secretRef": {"name": "s"}}},
            "not both",
        ),
        ({"redis": {"url": "redis://:pw@r:6379"}}, "credentials"),
        ({"prometheus": {"fallback": "Replicas"}}, "fallbackReplicas"),
    ],
)
def test_semantic_errors(raw: dict[str, object], fragment: str) -> None:
    errors = parse_spec(raw).semantic_errors()
    assert any(fragment in e for e in errors), errors


def test_redis_url_resolution() -> None:
    assert FleetSpec().redis.effective_url() == "redis://redis:6379/0"
    assert parse_spec({"redis": {"url": "redis://x:1/2"}}).redis.effective_url() == "redis://x:1/2"
    assert parse_spec({"redis": {"secretRef": {"name": "s"}}}).redis.effective_url() is None


SECRET_SPEC = {
    "redis": {"secretRef": {"name": "wsfleet-redis", "key": "url"}},
    "drain": {"gracePeriodSeconds": 90, "reconnectPerSecond": 50},
    "limits": {"maxConnectionsPerPod": 1234},
    "gateway": {"extraEnv": {"WSFLEET_LINGER_S": "2"}},
}


def test_deployment_has_probes_drain_and_hardening() -> None:
    spec = parse_spec(SECRET_SPEC)
    dep = r.build_deployment("chat", "ns", "uid-1", spec)
    assert dep["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["lifecycle"]["preStop"] == {"sleep": {"seconds": r.PRE_STOP_SLEEP_S}}
    assert pod["terminationGracePeriodSeconds"] == r.PRE_STOP_SLEEP_S + 90 + 10
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert {p["containerPort"] for p in c["ports"]} == {8080, 9090}
    env = {e["name"]: e for e in c["env"]}
    assert env["WSFLEET_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "wsfleet-redis",
        "key": "url",
    }
    assert c["envFrom"] == [{"configMapRef": {"name": "chat-gateway-config"}}]
    # never a secret value inline anywhere
    for obj in r.build_all("chat", "ns", "uid-1", spec):
        assert "redis://" not in json.dumps(obj)


def test_configmap_carries_gateway_settings() -> None:
    spec = parse_spec(SECRET_SPEC)
    data = r.build_configmap("chat", "ns", "u", spec)["data"]
    assert data["WSFLEET_DRAIN_GRACE_S"] == "90"
    assert data["WSFLEET_DRAIN_RECONNECT_PER_S"] == "50"
    assert data["WSFLEET_MAX_CONNECTIONS"] == "1234"
    assert data["WSFLEET_ADMIN_PORT"] == "9090"
    assert data["WSFLEET_LINGER_S"] == "2"
    assert "WSFLEET_REDIS_URL" not in data
    inline = r.gateway_env(parse_spec({"redis": {"url": "redis://r:6379/0"}}))
    assert inline["WSFLEET_REDIS_URL"] == "redis://r:6379/0"


def test_gateway_env_names_are_gateway_settings() -> None:
    from wsfleet_gateway import settings

    fields = set(settings.GatewaySettings.model_fields)
    env = r.gateway_env(FleetSpec())
    known = {k.removeprefix("WSFLEET_").lower() for k in env} & fields
    # the ones the gateway reads today; the rest it ignores (extra="ignore")
    for name in ("port", "admin_port", "redis_url", "max_message_bytes", "drain_grace_s"):
        assert name in known


def test_config_change_rolls_pods() -> None:
    a = r.build_deployment("c", "n", "u", FleetSpec())
    b = r.build_deployment("c", "n", "u", parse_spec({"limits": {"maxMessageBytes": 1024}}))
    key = r.CONFIG_HASH_ANNOTATION
    ann_a = a["spec"]["template"]["metadata"]["annotations"][key]
    assert ann_a != b["spec"]["template"]["metadata"]["annotations"][key]


def test_service_and_pdb() -> None:
    spec = FleetSpec()
    svc = r.build_service("chat", "ns", "u", spec)
    assert svc["spec"]["selector"] == r.selector_labels("chat")
    assert {p["name"] for p in svc["spec"]["ports"]} == {"ws", "admin"}
    pdb = r.build_pdb("chat", "ns", "u", spec)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == r.selector_labels("chat")


def test_drift_patch_ignores_server_defaults_and_replicas() -> None:
    desired = r.build_deployment("chat", "ns", "u", FleetSpec())
    actual = json.loads(json.dumps(desired))
    actual["spec"]["replicas"] = 7  # the autoscaler's business
    actual["metadata"]["resourceVersion"] = "12"
    container = actual["spec"]["template"]["spec"]["containers"][0]
    container["terminationMessagePath"] = "/dev/termination-log"  # server default
    actual["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
    assert r.drift_patch(desired, actual) is None

    container["image"] = "evil:1"
    actual["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "someone"
    patch = r.drift_patch(desired, actual)
    assert patch is not None
    assert "replicas" not in patch.get("spec", {})
    assert (
        patch["spec"]["template"]["spec"]["containers"][0]["image"]
        == "ghcr.io/wsfleet/gateway:0.1.0"
    )
    assert patch["metadata"]["labels"]["app.kubernetes.io/managed-by"] == r.MANAGED_BY


def test_drift_patch_int_or_string_and_quantities() -> None:
    assert r._covers("500m", "0.5")
    assert r._covers("1024Mi", "1Gi")
    assert not r._covers("1Gi", "1G")
    assert not r._covers("ClusterIP", "NodePort")
    assert r.parse_quantity("2Gi") == 2 * 2**30
    assert r.parse_quantity("ws") is None
    assert r._covers("0", 0)
    assert not r._covers([1], [1, 2])
    assert not r._covers(None, {"a": 1})


@pytest.mark.skipif(
    not (ROOT / ".venv" / "bin" / "kubernetes-validate").exists(),
    reason="kubernetes-validate not installed in .venv",
)
def test_owned_objects_pass_kubernetes_validate(tmp_path: Path) -> None:
    docs = r.build_all(
        "chat", "ns", "1b4e28ba-2fa1-11d2-883f-0016d3cca427", parse_spec(SECRET_SPEC)
    )
    path = tmp_path / "owned.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    result = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "kubernetes-validate"), "--strict", str(path)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_validate_reports_schema_and_semantic_errors() -> None:
    from wsfleet_operator.reconcile import validate

    spec, errors = validate({"replicas": {"min": "many"}})
    assert spec is None
    assert errors
    assert errors[0].startswith("replicas.min")
    auth = {"disabled": True}
    spec, errors = validate({"replicas": {"min": 4, "max": 3}, "auth": auth})
    assert spec is not None
    assert errors == ["replicas.min must not exceed replicas.max (4 > 3)"]
    assert validate({"auth": auth}) == (FleetSpec.model_validate({"auth": auth}), [])
    # a cluster fleet must say how its gateways authenticate
    spec, errors = validate(None)
    assert spec == FleetSpec()
    assert errors == [
        "auth is required (set exactly one of jwtSecretRef, jwtPublicKeySecretRef, disabled: true)"
    ]
